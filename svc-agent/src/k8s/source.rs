//! What a source hands the sync loop: the cluster's objects, what changed
//! in them since the last update, and when the change was seen.
//!
//! Updates queue in a channel; the sync loop takes every queued one at
//! once, merged ([`UpdateReceiver::next`]), so a burst of events costs one
//! apply and no change is lost on the way.
use std::{sync::Arc, time::Instant};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;

use super::Snapshot;
use crate::{
    metrics::ChangesSeen,
    model::{Changed, ObjectName, Objects},
};

/// The objects, published only once every store of the source has its
/// initial list (no partial programming on restart).
#[derive(Clone, Debug)]
pub struct Update {
    pub cluster: Cluster,
    /// What changed since the source's previous update.
    pub changed: Changed,
    /// When the source saw the (first not yet published) change.
    pub seen_at: Instant,
    /// The changes the source had counted when it made the update.
    pub changes: ChangesSeen,
}

impl Update {
    /// `self`, then `later`: the later objects, every change of both.
    pub fn merge(&mut self, later: Update) {
        self.cluster = later.cluster;
        self.changed.merge(later.changed);
        self.changes = later.changes;
    }
}

/// The cluster's objects as a source holds them.
#[derive(Clone, Debug)]
pub enum Cluster {
    /// A complete snapshot (a manifests directory).
    Snapshot(Arc<Snapshot>),
    /// The API server's objects in the watch stores, read as needed: one
    /// changed object is looked up by name, with no copy of the rest.
    Stores(Stores),
}

#[derive(Clone, Debug)]
pub struct Stores {
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    /// This node's Node only.
    pub nodes: Store<Node>,
}

impl Cluster {
    /// Every object, as a [`Snapshot`] (from the stores, a copy of their
    /// `Arc`s).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self {
            Cluster::Snapshot(snapshot) => snapshot.clone(),
            Cluster::Stores(stores) => Arc::new(Snapshot {
                services: stores.services.state(),
                endpoint_slices: stores.slices.state(),
                nodes: self.nodes(),
                ..Snapshot::default()
            }),
        }
    }

    /// The Node objects.
    pub fn nodes(&self) -> Vec<Node> {
        match self {
            Cluster::Snapshot(snapshot) => snapshot.nodes.clone(),
            Cluster::Stores(stores) => stores
                .nodes
                .state()
                .iter()
                .map(|node| (**node).clone())
                .collect(),
        }
    }
}

impl Objects for Cluster {
    fn service(&self, name: &ObjectName) -> Option<Arc<Service>> {
        match self {
            Cluster::Snapshot(snapshot) => snapshot.service(name),
            Cluster::Stores(stores) => stores
                .services
                .get(&ObjectRef::new(&name.1).within(&name.0)),
        }
    }

    fn slice(&self, name: &ObjectName) -> Option<Arc<EndpointSlice>> {
        match self {
            Cluster::Snapshot(snapshot) => snapshot.slice(name),
            Cluster::Stores(stores) => stores.slices.get(&ObjectRef::new(&name.1).within(&name.0)),
        }
    }
}

/// The source's end of the channel.
#[derive(Clone, Debug)]
pub struct UpdateSender(mpsc::UnboundedSender<Update>);

/// The sync loop's end.
#[derive(Debug)]
pub struct UpdateReceiver(mpsc::UnboundedReceiver<Update>);

/// The receiver is gone.
#[derive(Debug)]
pub struct Closed;

impl UpdateSender {
    pub fn send(&self, update: Update) -> Result<(), Closed> {
        self.0.send(update).map_err(|_| Closed)
    }

    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl UpdateReceiver {
    /// The next update merged with every other one already queued; None
    /// once the source stopped.
    pub async fn next(&mut self) -> Option<Update> {
        let mut update = self.0.recv().await?;
        while let Ok(later) = self.0.try_recv() {
            update.merge(later);
        }
        Some(update)
    }
}

/// A channel with no update in it yet.
pub fn channel() -> (UpdateSender, UpdateReceiver) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (UpdateSender(sender), UpdateReceiver(receiver))
}
