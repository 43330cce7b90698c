//! Network namespaces made by the lab, and running things inside them.
//!
//! Every name starts with [`PREFIX`] and the creating process's pid, so a
//! later run can tell leftovers of a killed run (pid gone) from namespaces of
//! a run still going, and sweep only the former.
use std::{
    fs,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
};

use crate::LabError;

/// Start of every namespace and pin directory name the lab creates.
pub const PREFIX: &str = "svl";
const NETNS_DIR: &str = "/run/netns";

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// Deleted on drop (false for namespaces another process made, or
    /// ones handed over with [`Netns::keep`]).
    owned: bool,
}

impl Netns {
    pub fn create(name: &str) -> Result<Self, LabError> {
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Self {
            name: name.to_owned(),
            owned: true,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// An existing namespace, left in place on drop.
    pub fn existing(name: &str) -> Result<Self, LabError> {
        let ns = Self {
            name: name.to_owned(),
            owned: false,
        };
        if !ns.path().exists() {
            return Err(LabError::Unknown {
                kind: "network namespace",
                name: name.to_owned(),
            });
        }
        Ok(ns)
    }

    /// Leaves the namespace in place when this handle drops (a lab that
    /// outlives the process that built it).
    pub fn keep(mut self) -> String {
        self.owned = false;
        self.name.clone()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<Output, LabError> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Sets a sysctl inside the namespace (/proc/sys is per network
    /// namespace for net.*).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let key = key.to_owned();
        let value = value.to_owned();
        self.in_thread(move || {
            fs::write(&path, &value).map_err(|source| LabError::Io {
                what: format!("setting {key}={value}"),
                source,
            })
        })?
    }

    /// A command that runs inside this namespace. It keeps the caller's mount
    /// namespace (unlike `ip netns exec`), so bpffs pins stay visible.
    pub fn command(&self, program: &str) -> Result<Command, LabError> {
        let file = fs::File::open(self.path()).map_err(|source| LabError::Io {
            what: format!("opening {}", self.path().display()),
            source,
        })?;
        let mut command = Command::new(program);
        // SAFETY: setns(2) is async-signal-safe; `file` moves into the
        // closure, so the descriptor is open when the child calls it.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(command)
    }

    /// Runs `f` on a new thread that has entered this namespace (setns is
    /// per thread), and waits for its result.
    pub fn in_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, LabError> {
        let path = self.path();
        thread::spawn(move || enter(&path).map(|()| f()))
            .join()
            .map_err(|_| LabError::ThreadPanicked {
                namespace: self.name.clone(),
            })?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.owned {
            delete(&self.name);
        }
    }
}

/// Deletes network namespace `name` (`ip netns del`), ignoring failure.
pub fn delete(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

/// Moves the calling thread into the namespace at `path`.
pub fn enter(path: &Path) -> Result<(), LabError> {
    let file = fs::File::open(path).map_err(|source| LabError::Io {
        what: format!("opening {}", path.display()),
        source,
    })?;
    // SAFETY: a valid descriptor of a network namespace file.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(LabError::Io {
            what: format!("entering {}", path.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Runs a command, turning a failure into an error that shows it.
pub fn run(command: &mut Command) -> Result<Output, LabError> {
    let rendered = format!("{command:?}");
    let output = command.output().map_err(|source| LabError::Io {
        what: format!("running {rendered}"),
        source,
    })?;
    if !output.status.success() {
        return Err(LabError::Command {
            command: rendered,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output)
}

/// The pid embedded in a lab name (`svl<pid>x<n>-...`).
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The process that owns lab name `name` is running.
pub fn owner_alive(name: &str) -> bool {
    owner_pid(name).is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// Names of lab namespaces present now (of any run).
pub fn lab_namespaces() -> Vec<String> {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| owner_pid(name).is_some())
        .collect()
}

/// Deletes namespaces and pin directories left by runs whose process is gone.
pub fn sweep_stale(pin_root: &Path) {
    for name in lab_namespaces() {
        if !owner_alive(&name) {
            delete(&name);
        }
    }
    if let Ok(entries) = fs::read_dir(pin_root) {
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if owner_pid(&name).is_some() && !owner_alive(&name) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_lab_names_only() {
        assert_eq!(owner_pid("svl4242x3-node-1"), Some(4242));
        assert_eq!(owner_pid("svl7x0-pod-web"), Some(7));
        assert_eq!(owner_pid("cni-1234"), None);
        assert_eq!(owner_pid("svlx1"), None);
    }
}
