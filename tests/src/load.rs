//! A fixed-concurrency HTTP load generator: each worker opens a connection,
//! sends one request with `Connection: close`, reads the answer to the end,
//! and starts over. connect() is timed separately (wrk's latency starts after
//! the handshake, where NAT decides).
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use svc_lab::{LabError, netns::Netns};

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub completed: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// Whole request (connect to last byte), microseconds, sorted.
    pub latency_us: Vec<u32>,
    /// connect() alone, microseconds, sorted.
    pub connect_us: Vec<u32>,
}

impl LoadReport {
    pub fn conn_per_s(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Quantile `q` (0..1) of the request latency, ms.
    pub fn latency_ms(&self, q: f64) -> f64 {
        quantile(&self.latency_us, q) / 1000.0
    }

    pub fn connect_ms(&self, q: f64) -> f64 {
        quantile(&self.connect_us, q) / 1000.0
    }
}

fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[index.min(sorted.len() - 1)])
}

/// Runs `concurrency` workers inside `netns` for `duration` (after
/// `warmup`, not counted), spreading connections over `targets` in turn.
/// The workers are threads of this process: they keep its cgroup, so a
/// node's socket hooks do not see them (see [`run_as`] for a pod's load).
pub fn run(
    netns: &Netns,
    targets: Vec<SocketAddr>,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<LoadReport, LabError> {
    netns.in_thread(move || run_here(&targets, concurrency, warmup, duration))
}

/// [`run`] in the calling thread's network namespace.
fn run_here(
    targets: &[SocketAddr],
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> LoadReport {
    // Threads spawned here inherit this thread's network namespace.
    let start = Instant::now() + warmup;
    let end = start + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let targets = targets.to_vec();
            std::thread::spawn(move || worker(&targets, w, start, end))
        })
        .collect();
    let mut report = LoadReport {
        elapsed: duration,
        ..LoadReport::default()
    };
    for worker in workers {
        if let Ok(part) = worker.join() {
            report.completed += part.completed;
            report.failed += part.failed;
            report.latency_us.extend(part.latency_us);
            report.connect_us.extend(part.connect_us);
        } else {
            report.failed += 1;
        }
    }
    report.latency_us.sort_unstable();
    report.connect_us.sort_unstable();
    report
}

/// Set, in a child [`run_as`] started, to the load it is to run.
const CHILD_ENV: &str = "SVC_LOAD_CHILD";

/// A load, as [`run_as`] hands it to its child and gets it back.
#[derive(serde::Serialize, serde::Deserialize)]
struct ChildLoad {
    targets: Vec<SocketAddr>,
    concurrency: usize,
    warmup_ms: u64,
    duration_ms: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ChildReport {
    completed: u64,
    failed: u64,
    latency_us: Vec<u32>,
    connect_us: Vec<u32>,
}

/// [`run`] by a process of its own: `command` runs this same executable
/// where the load belongs (a pod's network namespace and its node's
/// cgroup, from `LabPod::command`), which must call [`serve_as_child`]
/// first thing in main. So the load's sockets are a pod's, which its
/// node's socket hooks see.
pub fn run_as(
    mut command: std::process::Command,
    targets: Vec<SocketAddr>,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> std::io::Result<LoadReport> {
    let load = ChildLoad {
        targets,
        concurrency,
        warmup_ms: u64::try_from(warmup.as_millis()).unwrap_or(u64::MAX),
        duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
    };
    let output = command
        .env(CHILD_ENV, serde_json::to_string(&load)?)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(std::io::Error::other(format!(
            "the load process failed: {}",
            output.status
        )));
    }
    let report: ChildReport = serde_json::from_slice(&output.stdout)?;
    Ok(LoadReport {
        completed: report.completed,
        failed: report.failed,
        elapsed: duration,
        latency_us: report.latency_us,
        connect_us: report.connect_us,
    })
}

/// In a process [`run_as`] started: runs its load, prints the report and
/// exits. Returns at once in any other process.
pub fn serve_as_child() {
    let Ok(load) = std::env::var(CHILD_ENV) else {
        return;
    };
    let load: ChildLoad = serde_json::from_str(&load).expect("a load from run_as");
    let report = run_here(
        &load.targets,
        load.concurrency,
        Duration::from_millis(load.warmup_ms),
        Duration::from_millis(load.duration_ms),
    );
    let report = ChildReport {
        completed: report.completed,
        failed: report.failed,
        latency_us: report.latency_us,
        connect_us: report.connect_us,
    };
    println!(
        "{}",
        serde_json::to_string(&report).expect("a report serializes")
    );
    std::process::exit(0);
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
const TIMEOUT: Duration = Duration::from_secs(2);

fn worker(targets: &[SocketAddr], index: usize, start: Instant, end: Instant) -> LoadReport {
    let mut report = LoadReport::default();
    let mut next = index;
    let mut buffer = [0u8; 1024];
    loop {
        let began = Instant::now();
        if began >= end || targets.is_empty() {
            return report;
        }
        let target = targets[next % targets.len()];
        next += 1;
        let counted = began >= start;
        match one_request(target, &mut buffer) {
            Ok(connected) => {
                let done = began.elapsed();
                // Requests that end after the window are not counted.
                if counted && Instant::now() <= end {
                    report.completed += 1;
                    report.latency_us.push(micros(done));
                    report.connect_us.push(micros(connected));
                }
            }
            Err(error) if counted => {
                // What failed, for whoever reads the run's output (the
                // first few of each worker).
                if report.failed < 3 {
                    eprintln!(
                        "load: {target}: {error} after {} ms",
                        began.elapsed().as_millis()
                    );
                }
                report.failed += 1;
            }
            Err(_) => {}
        }
    }
}

/// One request on a new connection; the time connect() took.
fn one_request(target: SocketAddr, buffer: &mut [u8]) -> std::io::Result<Duration> {
    let began = Instant::now();
    let mut stream = TcpStream::connect_timeout(&target, TIMEOUT)?;
    let connected = began.elapsed();
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_nodelay(true)?;
    stream.write_all(REQUEST)?;
    let mut first = true;
    loop {
        let n = stream.read(buffer)?;
        if n == 0 {
            break;
        }
        if first && !buffer[..n].starts_with(b"HTTP/1.1 200") {
            return Err(std::io::Error::other("not a 200 answer"));
        }
        first = false;
    }
    if first {
        return Err(std::io::Error::other("no answer"));
    }
    Ok(connected)
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// What one bulk stream measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamReport {
    /// Bytes received inside the measured window.
    pub bytes: u64,
    pub elapsed: Duration,
}

impl StreamReport {
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / 1e9 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

const STREAM_REQUEST: &[u8] = b"GET /stream HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";

/// One TCP connection from `netns` to `target` receiving the lab server's
/// `GET /stream` for `warmup` (not counted) plus `duration`.
pub fn stream(
    netns: &Netns,
    target: SocketAddr,
    warmup: Duration,
    duration: Duration,
) -> Result<std::io::Result<StreamReport>, LabError> {
    netns.in_thread(move || {
        let mut stream = TcpStream::connect_timeout(&target, TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.write_all(STREAM_REQUEST)?;
        let mut buffer = vec![0u8; 256 * 1024];
        let start = Instant::now() + warmup;
        let end = start + duration;
        let mut bytes = 0u64;
        loop {
            let n = stream.read(&mut buffer)?;
            if n == 0 {
                return Err(std::io::Error::other("the stream ended early"));
            }
            let now = Instant::now();
            if now >= end {
                break;
            }
            if now >= start {
                bytes += n as u64;
            }
        }
        Ok(StreamReport {
            bytes,
            elapsed: duration,
        })
    })
}
