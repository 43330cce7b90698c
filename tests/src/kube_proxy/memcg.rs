//! Kernel memory held by rules a loader wrote: the loader (iptables-restore,
//! nft) runs in a scratch memory cgroup. Netfilter allocates x_tables
//! blobs and nf_tables objects with `GFP_KERNEL_ACCOUNT`, which charges
//! them to the cgroup of the task that made them; once the loader has
//! exited, its user memory is uncharged and what stays is the rule set
//! (plus a few KiB of slab the tool's run touched for the first time).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use svc_lab::{LabError, cgroup};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A memory cgroup of our own, removed on drop.
pub struct ScratchMemcg {
    path: PathBuf,
    /// cgroup v1's memory controller (kmem counter) or v2's (memory.stat).
    v1: bool,
}

impl ScratchMemcg {
    /// A fresh cgroup under the memory controller, or `None` when this
    /// kernel has none we can use.
    pub fn create() -> Option<Self> {
        let name = format!(
            "svc-bench-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let (root, v1) = match v1_memory_root() {
            Some(root) => (root, true),
            None => (v2_memory_root()?, false),
        };
        let path = root.join(name);
        fs::create_dir(&path).ok()?;
        Some(Self { path, v1 })
    }

    /// Makes `command`'s process start in this cgroup.
    pub fn join_on_spawn(&self, command: &mut Command) -> Result<(), LabError> {
        cgroup::join_on_spawn(command, &self.path)
    }

    /// Kernel memory charged to the cgroup now, bytes.
    pub fn kernel_bytes(&self) -> Option<u64> {
        if self.v1 {
            return fs::read_to_string(self.path.join("memory.kmem.usage_in_bytes"))
                .ok()?
                .trim()
                .parse()
                .ok();
        }
        let stat = fs::read_to_string(self.path.join("memory.stat")).ok()?;
        stat.lines()
            .find_map(|line| line.strip_prefix("kernel "))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Drop for ScratchMemcg {
    fn drop(&mut self) {
        // Charges that stay (the rules) move to the parent; the directory
        // goes.
        let _ = fs::remove_dir(&self.path);
    }
}

/// Where a cgroup v1 hierarchy with the memory controller is mounted.
fn v1_memory_root() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let is_memory = fields.get(2) == Some(&"cgroup")
            && fields
                .get(3)
                .is_some_and(|o| o.split(',').any(|o| o == "memory"));
        is_memory.then(|| PathBuf::from(fields[1]))
    })
}

/// The cgroup v2 root when it hands the memory controller to children.
fn v2_memory_root() -> Option<PathBuf> {
    let root = cgroup::cgroup2_root().ok()?;
    let enabled = fs::read_to_string(root.join("cgroup.subtree_control")).ok()?;
    enabled
        .split_whitespace()
        .any(|c| c == "memory")
        .then_some(root)
        .filter(|r: &PathBuf| Path::new(r).is_dir())
}
