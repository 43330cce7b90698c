//! The API server as a source: kube-rs reflectors on Services,
//! EndpointSlices (discovery.k8s.io/v1) and this node's Node.
//!
//! Each reflector keeps a store that kube-runtime's watcher fills: it lists,
//! then watches from the list's resourceVersion; when a watch ends it
//! resumes from the last version seen (bookmarks advance it), and when the
//! API server answers 410 Gone (that version was compacted) it lists again.
//! During such a relist the store keeps the old objects and swaps them for
//! the new list at once, so an outage or a 410 never empties the tables.
//! Errors are retried after [`WatchBackoff`]'s delays (a 410 relists at
//! once) and counted by kind.
//!
//! An update is published only once every store has had its initial list,
//! and after that on every change, naming the objects that changed (a
//! relist or a Node change: everything).
use std::{
    fmt::Debug,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt as _, future};
use k8s_openapi::{
    api::{core::v1::Node, core::v1::Service, discovery::v1::EndpointSlice},
    serde::de::DeserializeOwned,
};
use kube::{
    Api, Client, Resource,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, Store},
        utils::Backoff,
        watcher::{self, Event},
    },
};
use tokio::sync::mpsc;

use super::source::{Cluster, Stores, Update, UpdateSender};
use crate::{
    metrics::{self, Metrics},
    model::{Changed, ObjectName, object_name},
};

/// The kind of object a reflector watches (names it in logs and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Service,
    EndpointSlice,
    Node,
}

/// What a reflector tells the publisher.
#[derive(Clone, Debug)]
enum Change {
    /// The store holds a complete list (after the first list or a relist).
    Listed(Kind),
    /// One object changed (added, replaced or deleted).
    Object(Kind, ObjectName),
}

/// Watches the API server and publishes snapshots until `updates` has no
/// receiver left.
pub async fn watch_api(client: Client, node: String, updates: UpdateSender, metrics: Arc<Metrics>) {
    let (changes, mut changed) = mpsc::unbounded_channel();
    let services: Api<Service> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client);
    let this_node = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let (service_store, service_reflector) = reflect(
        Kind::Service,
        services,
        watcher::Config::default(),
        changes.clone(),
        metrics.clone(),
    );
    let (slice_store, slice_reflector) = reflect(
        Kind::EndpointSlice,
        slices,
        watcher::Config::default(),
        changes.clone(),
        metrics.clone(),
    );
    let (node_store, node_reflector) =
        reflect(Kind::Node, nodes, this_node, changes, metrics.clone());
    let reflectors = future::join3(service_reflector, slice_reflector, node_reflector);

    let cluster = Cluster::Stores(Stores {
        services: service_store,
        slices: slice_store,
        nodes: node_store,
    });
    let publisher = async {
        let mut listed = [false; 3];
        let mut first_unpublished: Option<Instant> = None;
        // Since the last update: everything before the first.
        let mut unpublished = Changed::Everything;
        while let Some(change) = changed.recv().await {
            first_unpublished.get_or_insert_with(Instant::now);
            let mut note = |change: Change| match change {
                Change::Listed(kind) => {
                    tracing::info!(?kind, "list complete");
                    listed[kind as usize] = true;
                    // A relist's deletions come as no event.
                    unpublished = Changed::Everything;
                }
                Change::Object(kind, name) => {
                    tracing::debug!(?kind, ?name, "changed");
                    match kind {
                        Kind::Service => unpublished.service(name),
                        Kind::EndpointSlice => unpublished.slice(name),
                        // Its addresses and zone change every frontend.
                        Kind::Node => unpublished = Changed::Everything,
                    }
                }
            };
            note(change);
            // Take every change already queued: one update for a burst.
            while let Ok(more) = changed.try_recv() {
                note(more);
            }
            if !listed.iter().all(|done| *done) {
                continue;
            }
            let seen_at = first_unpublished.take().unwrap_or_else(Instant::now);
            let changes = metrics.changes_seen();
            let update = Update {
                cluster: cluster.clone(),
                changed: std::mem::replace(&mut unpublished, Changed::nothing()),
                seen_at,
                changes,
            };
            if updates.send(update).is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = reflectors => {}
        () = publisher => {}
    }
}

/// A store for `api`'s objects and the future that keeps it filled.
fn reflect<K>(
    kind: Kind,
    api: Api<K>,
    config: watcher::Config,
    changes: mpsc::UnboundedSender<Change>,
    metrics: Arc<Metrics>,
) -> (Store<K>, impl Future<Output = ()>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = backing_off(watcher::watcher(api, config))
        .modify(trim)
        .reflect(writer);
    let run = stream.for_each(move |event| {
        match event {
            Ok(Event::InitDone) => {
                let _ = changes.send(Change::Listed(kind));
            }
            Ok(Event::Apply(object) | Event::Delete(object)) => {
                match kind {
                    Kind::Service => metrics.change_seen(metrics::Change::Service),
                    Kind::EndpointSlice => metrics.change_seen(metrics::Change::Endpoints),
                    Kind::Node => {}
                }
                let _ = changes.send(Change::Object(kind, object_name(object.meta())));
            }
            Ok(Event::Init | Event::InitApply(_)) => {}
            Err(error) => {
                metrics.error(error_kind(&error));
                if is_gone(&error) {
                    tracing::warn!(?kind, %error, "resourceVersion gone (410): listing again");
                } else {
                    tracing::warn!(?kind, %error, "watch failed; retrying with backoff, the last state stays programmed");
                }
            }
        }
        future::ready(())
    });
    (store, run)
}

/// What the agent never reads, dropped before an object enters its store:
/// managedFields and kubectl's last-applied copy of the object are often
/// larger than the rest of it, and a store holds every Service and slice.
fn trim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// The annotation `kubectl apply` keeps a copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `stream` (a watcher's), waiting [`WatchBackoff`]'s delay after each
/// error before it is polled again, except after a 410 Gone: the API
/// server answered, and the watcher lists again at its next poll. Waiting
/// there would add a second to every return of an API server that
/// compacted the agents' resourceVersions during its outage.
fn backing_off<S, T>(stream: S) -> impl futures::Stream<Item = Result<T, watcher::Error>> + Send
where
    S: futures::Stream<Item = Result<T, watcher::Error>> + Send,
    T: Send,
{
    let state = (Box::pin(stream), WatchBackoff::default(), None::<Duration>);
    futures::stream::unfold(state, |(mut stream, mut backoff, delay)| async move {
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let item = stream.next().await?;
        let delay = match &item {
            Ok(_) => {
                backoff.reset();
                None
            }
            Err(error) if is_gone(error) => None,
            Err(_) => backoff.next(),
        };
        Some((item, (stream, backoff, delay)))
    })
}

/// The metrics name of a watcher error: a 410 Gone (`watch_gone`) is worth
/// telling apart from an API server that cannot be reached.
pub fn error_kind(error: &watcher::Error) -> &'static str {
    match error {
        _ if is_gone(error) => "watch_gone",
        watcher::Error::WatchError(_) => "watch_error",
        watcher::Error::InitialListFailed(_) => "list_failed",
        watcher::Error::WatchStartFailed(_) => "watch_start_failed",
        watcher::Error::WatchFailed(_) => "watch_failed",
        watcher::Error::NoResourceVersion => "no_resource_version",
    }
}

/// A 410 Gone: the resourceVersion the watch resumed from was compacted;
/// the watcher lists again.
fn is_gone(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

/// Delays between attempts of a failing list or watch: 200 ms doubling up
/// to 1 s, back to 200 ms after a success, each cut by a random part of up
/// to half. Quicker than kube-runtime's default (client-go's 800 ms to
/// 30 s): an agent whose tables lag an API server that is back costs
/// traffic, so it is back within a second of the API server (and lists
/// again); it watches only three kinds. The random part spreads a fleet
/// of agents' retries over half a second instead of one instant.
#[derive(Clone, Copy, Debug)]
pub struct WatchBackoff {
    next: Duration,
    /// This backoff's own random bits, moved on at each delay.
    random: u64,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(1);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        use std::hash::{BuildHasher as _, Hasher as _};
        // The standard library's per-process random hash keys: a seed
        // without a dependency.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            next: Self::FIRST,
            random,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // xorshift64: enough to spread retries.
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        let cut = self.next.mul_f64((self.random % 1000) as f64 / 2000.0);
        let delay = self.next - cut;
        self.next = (self.next * 2).min(Self::MAX);
        Some(delay)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failing watch waits between attempts; a 410 is followed by the
    /// relist at once, and a success starts the delays over.
    #[tokio::test(start_paused = true)]
    async fn errors_wait_for_the_backoff_but_a_410_relists_at_once() {
        let gone = || {
            watcher::Error::WatchError(Box::new(kube::core::Status {
                code: 410,
                ..Default::default()
            }))
        };
        let failed = || watcher::Error::NoResourceVersion;
        let items = vec![
            Err(failed()),
            Err(failed()),
            Err(gone()),
            Ok(()),
            Err(failed()),
            Ok(()),
        ];
        let mut stream = std::pin::pin!(backing_off(futures::stream::iter(items)));
        let mut waited = Vec::new();
        let mut last = tokio::time::Instant::now();
        while let Some(item) = stream.next().await {
            let now = tokio::time::Instant::now();
            waited.push((item.is_ok(), (now - last).as_millis()));
            last = now;
        }
        // Before each item: the delay the previous one earned.
        let bounds = [(0, 0), (100, 200), (200, 400), (0, 0), (0, 0), (100, 200)];
        assert_eq!(waited.len(), bounds.len(), "{waited:?}");
        for ((_, waited_ms), (low, high)) in waited.iter().zip(bounds) {
            assert!(
                (low..=high).contains(waited_ms),
                "{waited:?} against {bounds:?}"
            );
        }
    }

    #[test]
    fn backoff_doubles_to_one_second_with_up_to_half_cut_and_resets() {
        let mut backoff = WatchBackoff::default();
        let delays: Vec<u128> = backoff.by_ref().take(6).map(|d| d.as_millis()).collect();
        let bounds = [200, 400, 800, 1000, 1000, 1000];
        for (delay, bound) in delays.iter().zip(bounds) {
            assert!(
                (bound / 2..=bound).contains(delay),
                "{delays:?} against {bounds:?}"
            );
        }
        backoff.reset();
        let first = backoff.next().unwrap().as_millis();
        assert!((100..=200).contains(&first), "{first}");
        // Two agents' sequences differ (1 in 500^6 to be equal by chance).
        let other: Vec<u128> = WatchBackoff::default()
            .take(6)
            .map(|d| d.as_millis())
            .collect();
        assert_ne!(delays, other);
    }
}
