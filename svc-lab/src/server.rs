//! The server every lab pod runs: HTTP on its TCP ports, echo on its UDP
//! ports. Every answer says who answered and which client address it saw,
//! so tests can tell the backend and check NAT from the reply alone.
//! `GET /stream` instead sends zeros until the client closes: a bulk
//! source for throughput measurements.
use std::{io, net::SocketAddr};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::watch,
};

/// Who is answering.
#[derive(Clone, Debug)]
pub struct Identity {
    pub pod: String,
    pub node: String,
}

impl Identity {
    /// The answer body: `pod=NAME node=NAME client=IP:PORT`. An IPv4
    /// client of the dual-stack listener is written as IPv4.
    pub fn answer(&self, client: SocketAddr) -> String {
        let client = SocketAddr::new(client.ip().to_canonical(), client.port());
        format!("pod={} node={} client={}\n", self.pod, self.node, client)
    }
}

/// What a lab server answered, parsed back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub pod: String,
    pub node: String,
    pub client: SocketAddr,
}

impl Answer {
    /// Parses an answer body (the last line that holds one).
    pub fn parse(text: &str) -> Option<Self> {
        text.lines().rev().find_map(|line| {
            let mut pod = None;
            let mut node = None;
            let mut client = None;
            for field in line.split_whitespace() {
                match field.split_once('=') {
                    Some(("pod", v)) => pod = Some(v.to_owned()),
                    Some(("node", v)) => node = Some(v.to_owned()),
                    Some(("client", v)) => client = v.parse().ok(),
                    _ => {}
                }
            }
            Some(Self {
                pod: pod?,
                node: node?,
                client: client?,
            })
        })
    }
}

/// Binds every port now (so the caller knows the server is up when this
/// returns) and serves until `stop` turns true.
pub async fn bind(
    identity: Identity,
    tcp_ports: &[u16],
    udp_ports: &[u16],
) -> io::Result<Vec<Listener>> {
    let mut listeners = Vec::new();
    for port in tcp_ports {
        listeners.push(Listener::Tcp(
            // Dual-stack: IPv4 clients arrive as IPv4-mapped addresses.
            TcpListener::bind(("::", *port)).await?,
            identity.clone(),
        ));
    }
    for port in udp_ports {
        listeners.push(Listener::Udp(
            UdpSocket::bind(("::", *port)).await?,
            identity.clone(),
        ));
    }
    Ok(listeners)
}

pub enum Listener {
    Tcp(TcpListener, Identity),
    Udp(UdpSocket, Identity),
}

/// How long a draining server waits for the next request of an idle
/// keep-alive connection before it closes it (a request already on its
/// way is still answered, with `Connection: close`).
const DRAIN_IDLE: std::time::Duration = std::time::Duration::from_millis(500);

/// Serves all listeners until `stop` turns true, then drains as a web
/// server does on SIGTERM: no new connection is accepted, every request in
/// flight is answered (with `Connection: close`), idle keep-alive
/// connections are closed, and this returns once all are done.
pub async fn serve(listeners: Vec<Listener>, stop: watch::Receiver<bool>) {
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        match listener {
            Listener::Tcp(listener, identity) => {
                tasks.spawn(accept_loop(listener, identity, stop.clone()));
            }
            Listener::Udp(socket, identity) => {
                tasks.spawn(echo_loop(socket, identity, stop.clone()));
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn accept_loop(listener: TcpListener, identity: Identity, stop: watch::Receiver<bool>) {
    let mut connections = tokio::task::JoinSet::new();
    let mut stopped = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(http_connection(stream, peer, identity.clone(), stop.clone()));
                }
                Err(error) => tracing::warn!(%error, "accept failed"),
            },
            _ = stopped.wait_for(|stopped| *stopped) => break,
        }
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    // No new connection from here on; those open finish what they have
    // (bounded: a client that keeps a stream open is cut). Connections the
    // kernel completed before the stop but nobody accepted yet are taken
    // and answered (with `Connection: close`): closing the listener with
    // them in its queue would reset them.
    while let Ok(Ok((stream, peer))) =
        tokio::time::timeout(std::time::Duration::ZERO, listener.accept()).await
    {
        connections.spawn(http_connection(
            stream,
            peer,
            identity.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    let finish = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(DRAIN_LIMIT, finish).await;
}

/// The longest a draining server waits for its connections.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Minimal HTTP/1.1: answers every request on the connection (keep-alive)
/// until the client closes or asks to, or the server drains.
async fn http_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    identity: Identity,
    stop: watch::Receiver<bool>,
) {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let end = loop {
            if let Some(end) = find_header_end(&buffer) {
                break end;
            }
            let read = if *stop.borrow() && buffer.is_empty() {
                // Draining and idle: a request on its way is answered,
                // else the connection closes.
                match tokio::time::timeout(DRAIN_IDLE, stream.read(&mut chunk)).await {
                    Ok(read) => read,
                    Err(_) => {
                        linger_close(stream).await;
                        return;
                    }
                }
            } else {
                let mut stop = stop.clone();
                tokio::select! {
                    read = stream.read(&mut chunk) => read,
                    _ = stop.wait_for(|stopped| *stopped), if buffer.is_empty() => continue,
                }
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
            if buffer.len() > 64 * 1024 {
                return;
            }
        };
        let request = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
        if request.starts_with(STREAM_REQUEST) {
            let mut stop = stop.clone();
            tokio::select! {
                () = stream_zeros(&mut stream) => {}
                _ = stop.wait_for(|stopped| *stopped) => {}
            }
            return;
        }
        let close = request.contains("connection: close") || *stop.borrow();
        buffer.drain(..end);
        let body = identity.answer(peer);
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" },
            body
        );
        if stream.write_all(response.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// Closes an idle connection as web servers do (nginx's lingering close):
/// FIN first, then whatever the client still sends is read and dropped
/// until it closes too (at most a second). Closing a socket with unread
/// data would reset the connection: a request that crossed the close on
/// the wire would be answered with a reset instead of the end of the
/// connection, which a client may retry.
async fn linger_close(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    let drain = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}

/// The request line that asks for a bulk stream (lowercased).
const STREAM_REQUEST: &str = "get /stream ";

/// Answers with a body of zeros, without length, until the client closes.
async fn stream_zeros(stream: &mut TcpStream) {
    let head =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n";
    if stream.write_all(head).await.is_err() {
        return;
    }
    let chunk = vec![0u8; 256 * 1024];
    while stream.write_all(&chunk).await.is_ok() {}
}

fn find_header_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

async fn echo_loop(socket: UdpSocket, identity: Identity, mut stop: watch::Receiver<bool>) {
    let mut buffer = [0u8; 2048];
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buffer) => received,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let Ok((_, peer)) = received else {
            continue;
        };
        let _ = socket.send_to(identity.answer(peer).as_bytes(), peer).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_round_trips() {
        let identity = Identity {
            pod: "web-1".into(),
            node: "node-1".into(),
        };
        let client: SocketAddr = "198.18.1.12:40000"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let parsed = Answer::parse(&identity.answer(client));
        assert_eq!(
            parsed,
            Some(Answer {
                pod: "web-1".into(),
                node: "node-1".into(),
                client
            })
        );
    }

    #[test]
    fn answer_parse_rejects_other_text() {
        assert_eq!(Answer::parse("curl: (7) Failed to connect"), None);
    }

    #[test]
    fn header_end_is_found_after_blank_line() {
        assert_eq!(
            find_header_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest"),
            Some(27)
        );
        assert_eq!(find_header_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
