//! `svc-agent run` as a child process inside a lab node's network
//! namespace, killed when dropped.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use svc_lab::Lab;

/// The agent's /healthz and /metrics inside the node's namespace.
pub const LISTEN: &str = "127.0.0.1:10266";

/// The `svc-agent` binary cargo built next to the test binaries.
pub fn agent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SVC_AGENT_BIN") {
        return path.into();
    }
    // target/<profile>/deps/<test> → target/<profile>/svc-agent
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("svc-agent");
    assert!(
        binary.exists(),
        "{} is missing: `cargo build -p svc-agent` (or run the whole workspace's tests)",
        binary.display()
    );
    binary
}

pub struct Agent {
    child: Option<Child>,
    node: String,
    log: PathBuf,
    pub pin_dir: PathBuf,
}

impl Agent {
    /// Starts `svc-agent run --node NODE --pin-path <node's pin dir>
    /// --node-interfaces eth0 EXTRA...` in the node's namespace.
    pub fn spawn(lab: &Lab, node: &str, extra: &[&str]) -> Self {
        Self::start(lab, node, &["--node-interfaces", "eth0"], extra)
    }

    /// [`Self::spawn`] without `--node-interfaces`: the agent finds them.
    pub fn spawn_finding_node_interfaces(lab: &Lab, node: &str, extra: &[&str]) -> Self {
        Self::start(lab, node, &[], extra)
    }

    fn start(lab: &Lab, node: &str, node_interfaces: &[&str], extra: &[&str]) -> Self {
        let lab_node = lab.node(node).unwrap();
        static SPAWNED: AtomicU32 = AtomicU32::new(0);
        let log = std::env::temp_dir().join(format!(
            "{}-{node}-agent-{}.log",
            lab.id(),
            SPAWNED.fetch_add(1, Ordering::Relaxed)
        ));
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = lab_node
            .netns()
            .command(agent_binary().to_str().unwrap())
            .unwrap()
            .args(["run", "--node", node])
            .args(node_interfaces)
            .arg("--pin-path")
            .arg(&lab_node.pin_dir)
            .args(["--listen", LISTEN])
            .arg("--cgroup")
            .arg(&lab_node.cgroup)
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            node: node.to_owned(),
            log,
            pin_dir: lab_node.pin_dir.clone(),
        }
    }

    /// GET `path` on the agent's listen address: (status code, body);
    /// `None` while nothing answers.
    pub fn get(&self, lab: &Lab, path: &str) -> Option<(u16, String)> {
        http_get(lab, &self.node, &format!("http://{LISTEN}{path}"))
    }

    /// Waits until /healthz answers 200 (the initial sync is in the maps,
    /// and no change is stuck).
    pub fn wait_healthy(&mut self, lab: &Lab, within: Duration) -> Duration {
        self.wait_for_200(lab, "/healthz", within)
    }

    /// Waits until /readyz answers 200 (the initial sync is in the maps).
    pub fn wait_ready(&mut self, lab: &Lab, within: Duration) -> Duration {
        self.wait_for_200(lab, "/readyz", within)
    }

    fn wait_for_200(&mut self, lab: &Lab, path: &str, within: Duration) -> Duration {
        let started = Instant::now();
        let deadline = started + within;
        loop {
            if let Some((200, _)) = self.get(lab, path) {
                return started.elapsed();
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the agent exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the agent's {path} was not 200 within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the agent dies without a chance to clean anything up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the agent ignored SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// CPU time the agent has used so far (user and system).
    pub fn cpu_time(&self) -> Duration {
        let pid = self.child.as_ref().expect("a running agent").id();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("the agent's stat");
        // After the command name (in parentheses, which may hold spaces):
        // state is field 3, utime and stime fields 14 and 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("a stat line")
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / per_second)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- agent log ({}) ---\n{}", self.node, self.log());
        }
        let _ = fs::remove_file(&self.log);
    }
}

/// curl in node `node`'s namespace: (status code, body), `None` when the
/// connection failed.
pub fn http_get(lab: &Lab, node: &str, url: &str) -> Option<(u16, String)> {
    let output = lab
        .node(node)
        .unwrap()
        .netns()
        .command("curl")
        .unwrap()
        .args(["-s", "--max-time", "2", "-w", "\n%{http_code}", url])
        .output()
        .unwrap();
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_owned()))
}

/// Polls `check` until it returns `Some`, or panics naming `what` after
/// `within`.
pub fn wait_for<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
