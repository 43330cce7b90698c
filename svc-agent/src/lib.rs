//! svc-lb's node agent as a library: the binary in main.rs is a thin shell.
//!
//! Data moves one way: source → snapshot → translate → diff → apply.
//! [`k8s`] holds the snapshot and its sources, [`model`] the desired tables
//! and the pure `translate`, [`dataplane`] is the only code that
//! touches BPF programs and maps, [`render`] turns tables into text.
pub mod cli;
pub mod dataplane;
pub mod diagnose;
pub mod k8s;
pub mod metrics;
pub mod model;
pub mod render;
pub mod run;

/// Hash maps and sets keyed by the agent's own values (addresses, map keys,
/// object addresses), walked on every change: a fast non-cryptographic
/// hash, as no key comes from an attacker-chosen set large enough to
/// matter.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
