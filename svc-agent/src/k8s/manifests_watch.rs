//! `--manifests DIR` as a live source: the directory is reloaded whenever a
//! manifest in it changes.
//!
//! Changes are found by polling a fingerprint (name, size, mtime of every
//! entry) every [`POLL`], not with inotify: it needs no extra dependency,
//! works on every filesystem (also bind mounts and overlay, where inotify
//! misses writes made from another mount), and a directory of manifests is
//! small. A change is loaded once the fingerprint has stayed the same for
//! one more poll (debounce: an editor writing a file in several steps, or
//! `cp -r` of many files, costs one reload).
use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use super::{
    manifests,
    source::{Cluster, Update, UpdateSender},
};
use crate::{
    metrics::{ChangesSeen, Metrics},
    model::Changed,
};

/// How often the directory is looked at.
pub const POLL: Duration = Duration::from_millis(100);

/// Name, size and modification time of every entry.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(path: &Path) -> Fingerprint {
    let describe = |path: PathBuf| {
        let meta = fs::metadata(&path).ok();
        let size = meta.as_ref().map(fs::Metadata::len).unwrap_or_default();
        let mtime = meta.and_then(|meta| meta.modified().ok());
        (path, size, mtime)
    };
    let mut print = match fs::read_dir(path) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|entry| describe(entry.path()))
            .collect(),
        Err(_) => vec![describe(path.to_path_buf())],
    };
    print.sort();
    print
}

/// Publishes the directory's snapshot, then a new one after every change.
/// A directory that does not load is reported and skipped: the last good
/// snapshot stays programmed. Runs until the receiver is gone.
pub async fn watch_manifests(dir: PathBuf, updates: UpdateSender, metrics: Arc<Metrics>) {
    let metrics = metrics.as_ref();
    let mut loaded = fingerprint(&dir);
    publish(&dir, Instant::now(), &updates, metrics);
    let mut pending: Option<(Fingerprint, Instant)> = None;
    loop {
        tokio::time::sleep(POLL).await;
        if updates.is_closed() {
            return;
        }
        let now = fingerprint(&dir);
        pending = match pending.take() {
            Some((before, seen_at)) if before == now => {
                publish(&dir, seen_at, &updates, metrics);
                loaded = now;
                None
            }
            Some((_, seen_at)) => Some((now, seen_at)),
            None if now != loaded => Some((now, Instant::now())),
            None => None,
        };
    }
}

fn publish(dir: &Path, seen_at: Instant, updates: &UpdateSender, metrics: &Metrics) {
    match manifests::load(dir) {
        Ok(snapshot) => {
            tracing::info!(
                dir = %dir.display(),
                services = snapshot.services.len(),
                slices = snapshot.endpoint_slices.len(),
                "manifests loaded"
            );
            let _ = updates.send(Update {
                cluster: Cluster::Snapshot(Arc::new(snapshot)),
                changed: Changed::Everything,
                seen_at,
                changes: ChangesSeen::default(),
            });
        }
        Err(error) => {
            metrics.error("manifests");
            tracing::error!(
                dir = %dir.display(),
                error = %error,
                "manifests not loaded; the last good ones stay programmed"
            );
        }
    }
}
