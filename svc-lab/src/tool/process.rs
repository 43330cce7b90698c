//! The lab's long-running processes: started in their own session (so a
//! terminal closing does not end them), output to a log file, stopped by
//! pid.
use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::ToolError;

/// Starts `command` detached, stdout and stderr appended to `log`.
pub fn spawn(command: &mut Command, log: &Path) -> Result<u32, ToolError> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| ToolError::Io {
            what: format!("opening {}", log.display()),
            source,
        })?;
    let err = file.try_clone().map_err(|source| ToolError::Io {
        what: format!("opening {}", log.display()),
        source,
    })?;
    detach(command);
    let child = command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|source| ToolError::Io {
            what: format!("starting {command:?}"),
            source,
        })?;
    Ok(child.id())
}

/// Puts the child in a session of its own.
pub fn detach(command: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

/// The process runs (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The process is one of ours (svc-lab or svc-agent), not a process that
/// got a recycled pid.
fn ours(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        let program = String::from_utf8_lossy(program);
        program.ends_with("svc-lab") || program.ends_with("svc-agent")
    })
}

/// Sends `signal` to `pid` if it is one of ours and alive; false if not.
fn send(pid: u32, signal: i32) -> bool {
    if !alive(pid) || !ours(pid) {
        return false;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with a pid we started.
    unsafe { libc::kill(raw, signal) };
    true
}

/// Waits up to `within` for `pid` to be gone; whether it is.
fn gone_within(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    !alive(pid)
}

/// Sends SIGTERM (a pod's container asked to stop).
pub fn signal_term(pid: u32) {
    send(pid, libc::SIGTERM);
}

/// Waits up to `within` for `pid` to exit, then SIGKILLs it (a grace
/// period over).
pub fn wait_or_kill(pid: u32, within: Duration) {
    if !gone_within(pid, within) && send(pid, libc::SIGKILL) {
        gone_within(pid, Duration::from_secs(2));
    }
}

/// Sends SIGTERM, waits up to 5 s, then SIGKILL.
pub fn stop(pid: u32) {
    if send(pid, libc::SIGTERM) && !gone_within(pid, Duration::from_secs(5)) {
        send(pid, libc::SIGKILL);
        gone_within(pid, Duration::from_secs(2));
    }
}

/// Sends SIGKILL (an agent killed, as by the OOM killer or a node
/// problem) and waits until the process is gone.
pub fn kill(pid: u32) {
    if send(pid, libc::SIGKILL) {
        gone_within(pid, Duration::from_secs(5));
    }
}
