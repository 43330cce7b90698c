//! One cgroup (v2) per lab node: the node's socket hooks (svc-lb's
//! socket-level load balancing) attach to it, and every process run "on the
//! node" joins it, so several nodes share one kernel without sharing hooks.
use std::{
    fs,
    io::Write as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{LabError, netns};

/// Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup on unified
/// systems, /sys/fs/cgroup/unified on hybrid ones).
pub fn cgroup2_root() -> Result<PathBuf, LabError> {
    let mounts = fs::read_to_string("/proc/self/mounts").map_err(|source| LabError::Io {
        what: "reading /proc/self/mounts".into(),
        source,
    })?;
    mounts
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.get(2) == Some(&"cgroup2"))
        .and_then(|fields| fields.get(1).map(PathBuf::from))
        .ok_or_else(|| LabError::Topology("no cgroup v2 hierarchy is mounted".into()))
}

/// The directory holding every lab's cgroups.
pub fn lab_root() -> Result<PathBuf, LabError> {
    Ok(cgroup2_root()?.join("svc-lab"))
}

/// The cgroup of lab `lab_id`'s node `node`: `<lab root>/<lab id>/<node>`.
pub fn node_path(lab_id: &str, node: &str) -> Result<PathBuf, LabError> {
    Ok(lab_root()?.join(lab_id).join(node))
}

/// Creates [`node_path`].
pub fn create(lab_id: &str, node: &str) -> Result<PathBuf, LabError> {
    let path = node_path(lab_id, node)?;
    fs::create_dir_all(&path).map_err(|source| LabError::Io {
        what: format!("creating cgroup {}", path.display()),
        source,
    })?;
    Ok(path)
}

/// Makes `command`'s process join `cgroup` before it execs.
pub fn join_on_spawn(command: &mut Command, cgroup: &Path) -> Result<(), LabError> {
    let procs = cgroup.join("cgroup.procs");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .map_err(|source| LabError::Io {
            what: format!("opening {}", procs.display()),
            source,
        })?;
    // SAFETY: one write(2) on a descriptor opened before fork; "0" means
    // the writing process itself.
    unsafe {
        command.pre_exec(move || file.write_all(b"0"));
    }
    Ok(())
}

/// Removes a lab's cgroups (their processes must be gone).
pub fn remove_lab(lab_id: &str) {
    let Ok(root) = lab_root() else { return };
    remove_tree(&root.join(lab_id));
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    // cgroupfs directories go with rmdir (their files are not removable).
    let _ = fs::remove_dir(dir);
}

/// Removes cgroups of labs whose process is gone.
pub fn sweep_stale() {
    let Ok(root) = lab_root() else { return };
    let Ok(entries) = fs::read_dir(&root) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let alive =
            netns::owner_pid(&name).is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if netns::owner_pid(&name).is_some() && !alive {
            remove_tree(&entry.path());
        }
    }
}
