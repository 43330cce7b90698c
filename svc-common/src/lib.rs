//! The contract between the kernel programs and the agent: every BPF map's
//! name, key and value layout.
//!
//! Every type is `#[repr(C)]` with explicit padding so both sides (and
//! `bpftool map dump`, through BTF) agree on each byte. Fields that hold
//! network byte order end in `_be`. A size assertion stands next to each type.
//! When a layout changes, the map's name gets a new version suffix so an agent
//! never adopts a pinned map of the old shape.
#![no_std]

pub mod flow_cache;
pub mod maglev;
pub mod maps;
pub mod stats;

pub use maps::*;
pub use stats::*;
