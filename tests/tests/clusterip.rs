//! Real packets through a network-namespace lab: curl from a pod to a
//! ClusterIP, UDP replies checked for their source, and refused connections.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use svc_agent::model::Protocol;
use svc_lab::server::Answer;
use tests::{cluster_ip, one_node_lab, python_in_pod};

const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
const EMPTY_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);

fn lab() -> svc_lab::Lab {
    // Pod addresses are fixed by position: web is 198.18.1.10.
    let web = Ipv4Addr::new(198, 18, 1, 10);
    let mut sticky = cluster_ip("sticky", CLUSTER_IP, 81, Protocol::TCP, &[(web, 8080)]);
    sticky.affinity_timeout_seconds = Some(60);
    one_node_lab(&[
        sticky,
        cluster_ip("web", CLUSTER_IP, 80, Protocol::TCP, &[(web, 8080)]),
        cluster_ip("dns", CLUSTER_IP, 53, Protocol::UDP, &[(web, 5353)]),
        // The test's own listener in the web pod.
        cluster_ip("bulk", CLUSTER_IP, 9000, Protocol::TCP, &[(web, 9000)]),
        cluster_ip("empty", EMPTY_IP, 80, Protocol::TCP, &[]),
        // Nothing listens on 5354 in the web pod.
        cluster_ip("closed", EMPTY_IP, 54, Protocol::UDP, &[(web, 5354)]),
        cluster_ip("dns-empty", EMPTY_IP, 53, Protocol::UDP, &[]),
    ])
}

#[test]
fn curl_from_pod_to_cluster_ip_reaches_the_backend_pod() {
    let lab = lab();
    let curl = lab.pod("curl").unwrap();
    assert_eq!(
        lab.pod("web").unwrap().address,
        Ipv4Addr::new(198, 18, 1, 10)
    );
    let output = curl
        .command("curl")
        .unwrap()
        .args(["-sS", "--max-time", "5", "http://198.19.0.10/"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer = Answer::parse(&stdout).expect("a lab server answer");
    assert_eq!(answer.pod, "web");
    assert_eq!(answer.node, "node-1");
    // No SNAT on this path: the backend sees the client pod itself.
    assert_eq!(answer.client.ip(), curl.address);

    // curl is a process of the pod, in its node's cgroup: the socket hook
    // pointed its connect() at the backend, counted once, and no packet
    // of the connection met the per-packet path.
    assert_eq!(web_packets(&lab), 1, "one connect(), no packet translated");

    // A thread of this test in the pod's namespace stays in the test's
    // cgroup, out of the hooks' reach: its connection is translated
    // packet by packet, and the backend still sees the pod.
    let answer = lab
        .pod("curl")
        .unwrap()
        .netns()
        .in_thread(|| {
            let mut stream = TcpStream::connect((CLUSTER_IP, 80)).unwrap();
            let peer = stream.peer_addr().unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            (peer, answer)
        })
        .unwrap();
    assert_eq!(answer.0, SocketAddr::from((CLUSTER_IP, 80)));
    let body = answer.1.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert_eq!(Answer::parse(body).unwrap().client.ip(), curl.address);
    // The connect() counted before, then SYN, ACK, request at least.
    let counted = web_packets(&lab);
    assert!(counted >= 4, "{counted}");
}

/// Packets (and socket-hook connects) counted for test/web on node-1.
fn web_packets(lab: &svc_lab::Lab) -> u64 {
    packets(lab, "test/web")
}

fn packets(lab: &svc_lab::Lab, service: &str) -> u64 {
    tests::frontend_packets(lab, service)
}

/// What a pod's socket hooks leave to the per-packet path: UDP (a
/// connected UDP socket would keep a backend that went away) and
/// frontends with sessionAffinity (keyed by the pod's address, which a
/// socket has no before connect()). Each socket's own kernel table still
/// names the ClusterIP: no hook rewrote it.
#[test]
fn a_pods_udp_and_sticky_connections_stay_on_the_per_packet_path() {
    let lab = lab();
    let script = "import socket\n\
                  t = socket.create_connection(('198.19.0.10', 81), timeout=5)\n\
                  t.sendall(b'GET / HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n')\n\
                  assert b'200' in t.recv(100)\n\
                  u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  u.settimeout(5)\n\
                  u.connect(('198.19.0.10', 53))\n\
                  u.send(b'hello')\n\
                  assert u.recv(2000)\n\
                  def remote(table, s):\n\
                  \x20   port = ':%04X' % s.getsockname()[1]\n\
                  \x20   return [l.split()[2] for l in open('/proc/self/net/' + table)\n\
                  \x20           if l.split()[1].endswith(port)][0]\n\
                  print(remote('tcp', t), remote('udp', u))\n";
    // 198.19.0.10 (0A0013C6) port 81 (0051) and 53 (0035).
    assert_eq!(python_in_pod(&lab, script), "0A0013C6:0051 0A0013C6:0035");
    assert!(packets(&lab, "test/sticky") >= 3, "SYN, ACK, request");
    // The pod's address keys its affinity, as kube-proxy's does.
    let pin_dir = lab.node("node-1").unwrap().pin_dir.clone();
    let affinity: aya::maps::HashMap<_, svc_common::AffinityKey, svc_common::Affinity> =
        aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(
            aya::maps::MapData::from_pin(pin_dir.join(svc_common::names::AFFINITY)).unwrap(),
        ))
        .unwrap();
    let clients: Vec<Ipv4Addr> = affinity
        .keys()
        .map(|key| Ipv4Addr::from(u32::from_be(key.unwrap().client_addr_be)))
        .collect();
    assert_eq!(clients, [lab.pod("curl").unwrap().address]);
}

/// A pod's process dials the ClusterIP through the socket hook: the
/// connection goes to the backend pod itself, yet getpeername() shows the
/// ClusterIP it dialled.
#[test]
fn a_pods_connect_goes_to_the_backend_and_getpeername_shows_the_cluster_ip() {
    let lab = lab();
    // What the process's socket shows, and where its own kernel's table
    // says the connection goes (/proc/net/tcp: address and port in hex,
    // the address as the u32 the kernel holds).
    let script = "import socket\n\
                  s = socket.create_connection(('198.19.0.10', 80), timeout=5)\n\
                  port = ':%04X' % s.getsockname()[1]\n\
                  remote = [l.split()[2] for l in open('/proc/self/net/tcp')\n\
                            if l.split()[1].endswith(port)]\n\
                  print(s.getpeername()[0], s.getpeername()[1], *remote)\n";
    // web is 198.18.1.10 (0A0112C6), its port 8080 (1F90).
    assert_eq!(python_in_pod(&lab, script), "198.19.0.10 80 0A0112C6:1F90");
    assert_eq!(
        web_packets(&lab),
        1,
        "balanced in connect(), not per packet"
    );
}

/// A pod whose veth sends IPv4 BIG TCP (GSO packets over 64 KiB, whose
/// IPv4 total length says 0) uploads 64 MiB through a ClusterIP: it sent
/// such packets, every byte arrives, and none was dropped as malformed
/// (they were, before: the upload then crawls through retransmits).
#[test]
fn a_pod_sending_big_tcp_packets_reaches_the_cluster_ip() {
    use std::io::{Read as _, Write as _};
    const SENT: u64 = 64 << 20;
    let lab = lab();
    let (curl, web) = (lab.pod("curl").unwrap(), lab.pod("web").unwrap());
    tests::allow_big_tcp(curl.netns(), "eth0", 185_000);
    let listener = web
        .netns()
        .in_thread(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 9000)))
        .unwrap()
        .unwrap();
    let receiver = std::thread::spawn(move || -> io::Result<u64> {
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let received = io::copy(&mut stream, &mut io::sink())?;
        stream.write_all(&received.to_be_bytes())?;
        Ok(received)
    });
    let upload = || {
        curl.netns()
            .in_thread(|| -> io::Result<u64> {
                let to = SocketAddr::from((CLUSTER_IP, 9000));
                let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
                stream.set_write_timeout(Some(Duration::from_secs(10)))?;
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                stream.write_all(&vec![0x5a; SENT as usize])?;
                stream.shutdown(std::net::Shutdown::Write)?;
                let mut count = [0; 8];
                stream.read_exact(&mut count)?;
                Ok(u64::from_be_bytes(count))
            })
            .unwrap()
    };
    let (counted, big_packets) = tests::count_big_tcp_sent(curl.netns(), "eth0", upload);
    assert_eq!(counted.expect("the upload"), SENT);
    assert_eq!(receiver.join().unwrap().unwrap(), SENT);
    assert!(big_packets > 0, "the pod sent no BIG TCP packet");
    assert_eq!(
        drops(&lab, "malformed"),
        0,
        "{big_packets} BIG TCP packets sent"
    );
}

#[test]
fn udp_replies_come_from_the_cluster_ip() {
    let lab = lab();
    let curl = lab.pod("curl").unwrap();
    let (reply, from) = curl
        .netns()
        .in_thread(|| -> io::Result<(String, SocketAddr)> {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.set_read_timeout(Some(Duration::from_secs(3)))?;
            socket.send_to(b"ping", (CLUSTER_IP, 53))?;
            let mut buffer = [0u8; 512];
            let (len, from) = socket.recv_from(&mut buffer)?;
            Ok((String::from_utf8_lossy(&buffer[..len]).into_owned(), from))
        })
        .unwrap()
        .unwrap();
    assert_eq!(from, SocketAddr::from((CLUSTER_IP, 53)), "reply source");
    let answer = Answer::parse(&reply).unwrap();
    assert_eq!(answer.pod, "web");
    assert_eq!(answer.client.ip(), curl.address);
}

/// A TCP connection from the curl pod: how it failed, and how soon.
fn connect_error(lab: &svc_lab::Lab, to: SocketAddr) -> (Option<io::ErrorKind>, Duration) {
    lab.pod("curl")
        .unwrap()
        .netns()
        .in_thread(move || {
            let start = Instant::now();
            let result = TcpStream::connect_timeout(&to, Duration::from_secs(3));
            (result.err().map(|e| e.kind()), start.elapsed())
        })
        .unwrap()
}

fn drops(lab: &svc_lab::Lab, reason: &str) -> u64 {
    tests::lab_drops(lab, "node-1", reason)
}

#[test]
fn frontend_without_backends_refuses_at_once() {
    let lab = lab();
    let curl = lab.pod("curl").unwrap();
    let (kind, elapsed) = connect_error(&lab, SocketAddr::from((EMPTY_IP, 80)));
    assert_eq!(kind, Some(io::ErrorKind::ConnectionRefused));
    assert!(
        elapsed < Duration::from_millis(100),
        "refused after {elapsed:?}"
    );

    // curl says what users see: exit code 7, "Couldn't connect".
    let output = curl
        .command("curl")
        .unwrap()
        .args(["-sS", "--max-time", "5", "http://198.19.0.11/"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(7));
    // Only the test thread's SYN met the per-packet path (and its reset);
    // curl's connect() was refused by the socket hook: nothing was sent.
    assert_eq!(drops(&lab, "no_backend_reset"), 1);
}

/// Once the node knows the service CIDR (`--service-cidr`), TCP to an
/// address of it that no Service holds, or to a port its ClusterIP does
/// not serve, is reset at once, and UDP refused, each counted; before,
/// the node routes them out (here: no route, so unreachable).
#[test]
fn unserved_addresses_and_ports_of_the_service_cidr_are_refused() {
    let lab = lab();
    let unused = SocketAddr::from((Ipv4Addr::new(198, 19, 0, 99), 80));
    let unserved_port = SocketAddr::from((CLUSTER_IP, 82));
    let (before, _) = connect_error(&lab, unused);
    assert_ne!(before, Some(io::ErrorKind::ConnectionRefused));

    let mut tables = lab.tables("node-1").unwrap();
    let mut node = tables.node().unwrap();
    node.service_cidrs = vec![svc_lab::SERVICE_CIDR.parse().unwrap()];
    tables.set_node(&node).unwrap();
    assert_eq!(tables.node().unwrap(), node);
    for to in [unused, unserved_port] {
        let (kind, elapsed) = connect_error(&lab, to);
        assert_eq!(kind, Some(io::ErrorKind::ConnectionRefused), "{to}");
        assert!(elapsed < Duration::from_millis(100), "{to}: {elapsed:?}");
        eprintln!("{to} refused after {elapsed:?}");
    }
    let udp_unused = SocketAddr::from((Ipv4Addr::new(198, 19, 0, 99), 53));
    assert_eq!(
        udp_error(&lab, udp_unused),
        Some(io::ErrorKind::ConnectionRefused)
    );
    assert_eq!(drops(&lab, "service_cidr_reset"), 2);
    assert_eq!(drops(&lab, "service_cidr_unreachable"), 1);
    // Served frontends are not touched.
    let web = connect_error(&lab, SocketAddr::from((CLUSTER_IP, 80)));
    assert_eq!(web.0, None);
}

/// A connected UDP socket's error after one datagram: refused, or timed out.
fn udp_error(lab: &svc_lab::Lab, to: SocketAddr) -> Option<io::ErrorKind> {
    let curl = lab.pod("curl").unwrap();
    curl.netns()
        .in_thread(move || {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            socket.connect(to).unwrap();
            socket.send(b"ping").unwrap();
            let mut buffer = [0u8; 64];
            socket.recv(&mut buffer).err().map(|e| e.kind())
        })
        .unwrap()
}

#[test]
fn backend_port_unreachable_reaches_the_client_as_refused() {
    let lab = lab();
    // The backend's ICMP error quotes the backend's address; translated
    // back, the client's connected socket recognises it.
    let kind = udp_error(&lab, SocketAddr::from((EMPTY_IP, 54)));
    assert_eq!(kind, Some(io::ErrorKind::ConnectionRefused));
}

#[test]
fn udp_to_frontend_without_backends_is_refused_at_once() {
    let lab = lab();
    let kind = udp_error(&lab, SocketAddr::from((EMPTY_IP, 53)));
    assert_eq!(kind, Some(io::ErrorKind::ConnectionRefused));
    let dropped = lab.tables("node-1").unwrap().drop_counters().unwrap();
    let unreachable = dropped
        .iter()
        .find(|c| c.reason == "no_backend_unreachable")
        .unwrap();
    assert_eq!(unreachable.packets, 1);
}
