//! A small HTTP load generator for churn tests: short connections (one
//! request each) and long keep-alive connections, run from inside a
//! network namespace, every outcome recorded with its start time and the
//! pod that answered.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers panic on misuse"
)]

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use svc_lab::{netns::Netns, server::Answer};

/// One request's outcome.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// When the connection (short) or the request (long) started.
    pub started: Instant,
    /// The connection it went over: short connections get their own id,
    /// long ones keep theirs.
    pub connection: usize,
    pub long: bool,
    pub result: Result<String, String>,
}

#[derive(Default)]
pub struct Record {
    pub outcomes: Mutex<Vec<Outcome>>,
}

impl Record {
    pub fn snapshot(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap().clone()
    }

    fn push(&self, outcome: Outcome) {
        self.outcomes.lock().unwrap().push(outcome);
    }
}

/// Running load; stops and joins on `stop()` or drop.
pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    pub record: Arc<Record>,
    /// Between two short connections of a worker (none: back to back).
    pause: Duration,
}

impl Load {
    pub fn new() -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            workers: Vec::new(),
            record: Arc::new(Record::default()),
            pause: Duration::ZERO,
        }
    }

    /// Short connections `pause` apart (a client's pace, not a flood).
    pub fn with_pause(pause: Duration) -> Self {
        let mut load = Self::new();
        load.pause = pause;
        load
    }

    /// `count` workers opening one connection per request, back to back.
    pub fn short(&mut self, netns: &Netns, target: SocketAddr, count: usize) {
        for _ in 0..count {
            // Numbered across every call, so ids never repeat.
            let worker = self.workers.len();
            let (stop, record, path) = (self.stop.clone(), self.record.clone(), netns.path());
            let pause = self.pause;
            self.workers.push(std::thread::spawn(move || {
                svc_lab::netns::enter(&path).unwrap();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let result = one_request(target);
                    record.push(Outcome {
                        started,
                        connection: 1_000_000 + worker * 100_000 + n,
                        long: false,
                        result,
                    });
                    n += 1;
                    std::thread::sleep(pause);
                }
            }));
        }
    }

    /// One keep-alive connection per entry of `ids`, requests back to back;
    /// returns once each has its first answer. A failed request ends that
    /// connection (it is not reopened: a broken connection must show).
    pub fn long(&mut self, netns: &Netns, target: SocketAddr, ids: std::ops::Range<usize>) {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let count = ids.len();
        for id in ids {
            let (stop, record, path) = (self.stop.clone(), self.record.clone(), netns.path());
            let ready = ready_tx.clone();
            self.workers.push(std::thread::spawn(move || {
                svc_lab::netns::enter(&path).unwrap();
                let mut stream = match TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
                    Ok(stream) => stream,
                    Err(e) => {
                        record.push(Outcome {
                            started: Instant::now(),
                            connection: id,
                            long: true,
                            result: Err(format!("connect: {e}")),
                        });
                        let _ = ready.send(());
                        return;
                    }
                };
                stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                let mut first = true;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let result = request(&mut stream, false);
                    let failed = result.is_err();
                    // The server said it closes (it drains): as an HTTP
                    // client does, the next request goes on a new
                    // connection; failing that counts as a failure.
                    let reopen = matches!(result, Ok((_, true)));
                    record.push(Outcome {
                        started,
                        connection: id,
                        long: true,
                        result: result.map(|(pod, _)| pod),
                    });
                    if first {
                        let _ = ready.send(());
                        first = false;
                    }
                    if failed {
                        return;
                    }
                    if reopen {
                        match TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
                            Ok(reopened) => {
                                let _ = reopened.set_read_timeout(Some(Duration::from_secs(2)));
                                stream = reopened;
                            }
                            Err(e) => {
                                record.push(Outcome {
                                    started: Instant::now(),
                                    connection: id,
                                    long: true,
                                    result: Err(format!("reconnect after Connection: close: {e}")),
                                });
                                return;
                            }
                        }
                    }
                }
            }));
        }
        for _ in 0..count {
            ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl Default for Load {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

fn one_request(target: SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    request(&mut stream, true)
        .map(|(pod, _)| pod)
        .map_err(|e| format!("{e} (from {local})"))
}

/// Sends one GET and reads one response; returns the answering pod and
/// whether the server closes the connection after it (`Connection:
/// close`, as a draining server answers).
fn request(stream: &mut TcpStream, close: bool) -> Result<(String, bool), String> {
    let connection = if close { "close" } else { "keep-alive" };
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: svc\r\nConnection: {connection}\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or("no content-length")?;
            if buffer.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]);
                let pod = Answer::parse(&body)
                    .map(|a| a.pod)
                    .ok_or_else(|| format!("not a lab answer: {body}"))?;
                let server_closes = head.lines().any(|l| l.trim() == "connection: close");
                return Ok((pod, server_closes));
            }
        }
        let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed by peer".into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}
