//! What a source hands the sync loop: a complete snapshot and when the
//! change that produced it was seen.
//!
//! Sources publish through a `tokio::sync::watch` channel: the sync loop
//! always takes the newest snapshot, so a burst of events costs one apply.
use std::time::Instant;

use tokio::sync::watch;

use super::Snapshot;
use crate::metrics::ChangesSeen;

/// A complete snapshot, published only once every store of the source has
/// its initial list (no partial programming on restart).
#[derive(Clone, Debug)]
pub struct Update {
    pub snapshot: Snapshot,
    /// When the source saw the (first not yet published) change.
    pub seen_at: Instant,
    /// The changes the source had counted when it made the snapshot.
    pub changes: ChangesSeen,
}

pub type UpdateSender = watch::Sender<Option<Update>>;
pub type UpdateReceiver = watch::Receiver<Option<Update>>;

/// A channel with no snapshot in it yet.
pub fn channel() -> (UpdateSender, UpdateReceiver) {
    watch::channel(None)
}
