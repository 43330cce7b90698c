//! The agent's small HTTP surface: `/healthz`, `/metrics` and `/left-out`
//! (JSON: what the last sync left out, and why) on `--listen`,
//! and kube-proxy's healthCheckNodePort answers; GET (and HEAD) only: what
//! Prometheus, kubelet probes and cloud load balancers send.
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response,
    body::{Bytes, Incoming},
    http,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// What the agent reports about itself, with kube-proxy's meanings:
/// - `/livez`: the agent is running (a probe that restarts it only when it
///   hangs, not when the API server or a map is the trouble);
/// - `/readyz`: the initial sync is in the maps;
/// - `/healthz`: ready, the node is not being deleted (a deletion time,
///   or the cluster autoscaler's ToBeDeletedByClusterAutoscaler taint, so
///   load balancers drain it first), and no change has waited longer than
///   `unhealthy_after` to reach the maps (one that cannot be written, a
///   Service left out, keeps the node unhealthy until it can);
/// - a healthCheckNodePort's `serviceProxyHealthy` is `/healthz`'s answer.
#[derive(Debug, Default)]
pub struct AgentStatus {
    /// The initial snapshot is in the maps.
    pub synced: AtomicBool,
    pub metrics: Arc<Metrics>,
    /// Since when the maps have been behind the source, if they are.
    behind_since: Mutex<Option<Instant>>,
    /// Why the node is going away, if it is.
    node_deleting: Mutex<Option<String>>,
    unhealthy_after: Duration,
}

impl AgentStatus {
    pub fn new(unhealthy_after: Duration) -> Self {
        Self {
            unhealthy_after,
            ..Self::default()
        }
    }

    /// A change is waiting to reach the maps (kept from the first one on).
    pub fn behind(&self) {
        self.behind_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(Instant::now);
    }

    /// The maps hold everything the source asks for.
    pub fn converged(&self) {
        *self
            .behind_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The node is being deleted (`why`), or no longer (`None`).
    pub fn node_deleting(&self, why: Option<String>) {
        *self
            .node_deleting
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = why;
    }

    /// `/healthz`: None when healthy, else why not.
    pub fn unhealthy(&self) -> Option<String> {
        if !self.synced.load(Ordering::Acquire) {
            return Some("initial sync not in the maps yet".into());
        }
        if let Some(why) = self
            .node_deleting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Some(why);
        }
        let since = *self
            .behind_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        since
            .map(|since| since.elapsed())
            .filter(|behind| *behind > self.unhealthy_after)
            .map(|behind| {
                format!(
                    "the maps have been behind the cluster for {} s (see the log and svc_agent_errors_total)",
                    behind.as_secs()
                )
            })
    }
}

/// A response: status code, content type and body.
pub struct Reply {
    pub code: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// Serves `/healthz` and `/metrics` on `listener` until the task is dropped.
pub async fn serve_status(listener: TcpListener, status: Arc<AgentStatus>) {
    serve(listener, move |path| {
        let status = status.clone();
        match path {
            "/livez" => {
                status.metrics.livez_answered(200);
                text(200, "ok\n")
            }
            "/readyz" => {
                if status.synced.load(Ordering::Acquire) {
                    text(200, "ok\n")
                } else {
                    text(503, "initial sync not in the maps yet\n")
                }
            }
            "/healthz" => {
                let reply = match status.unhealthy() {
                    None => text(200, "ok\n"),
                    Some(why) => text(503, &format!("{why}\n")),
                };
                status.metrics.healthz_answered(reply.code);
                reply
            }
            "/metrics" => Reply {
                code: 200,
                content_type: crate::metrics::CONTENT_TYPE,
                body: status.metrics.render(),
            },
            "/left-out" => Reply {
                code: 200,
                content_type: "application/json",
                body: serde_json::to_string(&status.metrics.left_out_now())
                    .unwrap_or_else(|_| "[]".into()),
            },
            _ => text(
                404,
                "not found: try /healthz, /livez, /readyz, /metrics or /left-out\n",
            ),
        }
    })
    .await;
}

pub fn text(code: u16, body: &str) -> Reply {
    Reply {
        code,
        content_type: "text/plain",
        body: body.to_owned(),
    }
}

/// Accepts connections on `listener` and answers each request with
/// `answer(path)` (HTTP/1.1 by hyper; keep-alive as the client asks).
pub async fn serve<F>(listener: TcpListener, answer: F)
where
    F: Fn(&str) -> Reply + Clone + Send + 'static,
{
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let answer = answer.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let reply = if matches!(*request.method(), Method::GET | Method::HEAD) {
                answer(request.uri().path())
            } else {
                text(405, "GET only\n")
            };
            std::future::ready(response(reply))
        });
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                // A client that sends no request head is let go.
                .header_read_timeout(Duration::from_secs(5))
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
        });
    }
}

fn response(reply: Reply) -> Result<Response<Full<Bytes>>, http::Error> {
    Response::builder()
        .status(reply.code)
        .header(http::header::CONTENT_TYPE, reply.content_type)
        .body(Full::new(Bytes::from(reply.body)))
}

/// Binds `address`, naming it in the error.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, super::RunError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| super::RunError::Listen { address, source })
}

/// What the agent listening on `agent` left out at its last sync (its
/// `/left-out`), for `dump` and `diagnose`. A plain blocking request: the
/// commands have no runtime, and one small answer needs none.
pub fn fetch_left_out(agent: SocketAddr) -> std::io::Result<Vec<crate::model::LeftOut>> {
    use std::io::{Read as _, Write as _};
    const TIMEOUT: Duration = Duration::from_secs(2);
    let mut stream = std::net::TcpStream::connect_timeout(&agent, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.write_all(b"GET /left-out HTTP/1.0\r\nHost: agent\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP response"))?;
    let code = head.lines().next().and_then(|line| line.split(' ').nth(1));
    if code != Some("200") {
        let status = head.lines().next().unwrap_or_default().to_owned();
        return Err(std::io::Error::other(format!(
            "/left-out answered {status:?} (an agent older than this command?)"
        )));
    }
    serde_json::from_str(body).map_err(std::io::Error::other)
}
