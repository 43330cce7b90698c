//! IPv6 Services through the socket hooks, in a dual-stack lab: a pod's
//! and the node's connect() and sendmsg() to an IPv6 ClusterIP go to the
//! backend pod over IPv6, getpeername() and recvmsg() show the ClusterIP,
//! an IPv4-mapped address on a dual-stack socket is balanced as the IPv4
//! Service it names, and a frontend without backends refuses.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use svc_agent::model::Protocol;
use svc_lab::server::Answer;
use tests::{cluster_ip, frontend_packets as packets, one_node_lab, python_in_pod};

const CLUSTER_IP: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x19, 0, 0, 0, 0, 0x10);
const EMPTY_IP: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x19, 0, 0, 0, 0, 0x11);
const CLUSTER_IP4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);

fn lab() -> svc_lab::Lab {
    // Pod addresses are fixed by position: web is 198.18.1.10 and
    // fd00:198:18:1::10.
    let web6: Ipv6Addr = "fd00:198:18:1::10".parse().unwrap();
    let web4 = Ipv4Addr::new(198, 18, 1, 10);
    one_node_lab(&[
        cluster_ip("web6", CLUSTER_IP, 80, Protocol::TCP, &[(web6, 8080)]),
        cluster_ip("dns6", CLUSTER_IP, 53, Protocol::UDP, &[(web6, 5353)]),
        cluster_ip("empty6", EMPTY_IP, 80, Protocol::TCP, &[]),
        cluster_ip("web4", CLUSTER_IP4, 80, Protocol::TCP, &[(web4, 8080)]),
    ])
}

/// The lab server's answer `curl` (a pod's or a node's) gets from `url`.
fn curl_answer(mut curl: std::process::Command, url: &str) -> Answer {
    let output = curl
        .args(["-sS", "-g", "--max-time", "5", url])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "curl {url} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Answer::parse(&String::from_utf8_lossy(&output.stdout)).unwrap()
}

#[test]
fn curl_from_a_pod_and_from_the_node_reaches_the_backend_over_ipv6() {
    let lab = lab();
    let curl = lab.pod("curl").unwrap();
    assert_eq!(
        lab.pod("web").unwrap().address6,
        "fd00:198:18:1::10".parse::<Ipv6Addr>().unwrap()
    );
    let url = format!("http://[{CLUSTER_IP}]/");
    let answer = curl_answer(curl.command("curl").unwrap(), &url);
    assert_eq!(answer.pod, "web");
    assert_eq!(answer.client.ip(), IpAddr::from(curl.address6));
    assert_eq!(
        packets(&lab, "test/web6"),
        1,
        "one connect(), balanced once"
    );

    let node = lab.node("node-1").unwrap();
    let answer = curl_answer(node.command("curl").unwrap(), &url);
    assert_eq!(answer.pod, "web");
    // The node's own address on the pod's veth, as the kernel picks a
    // source for that route: the pod network's gateway.
    assert_eq!(
        answer.client.ip(),
        "fd00:198:18:1::1".parse::<IpAddr>().unwrap()
    );
    assert_eq!(packets(&lab, "test/web6"), 2);
}

/// A python script that GETs / from `address` port 80 over an IPv6
/// socket and prints the peer getpeername() gives, then the answer.
fn http_request(address: &str) -> String {
    format!(
        r#"
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(("{address}", 80))
peer = s.getpeername()
s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
body = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    body += chunk
print(peer[0], peer[1], body.decode().split("\r\n\r\n", 1)[1].strip())
"#
    )
}

#[test]
fn a_socket_sees_the_address_it_dialled_and_udp_replies_come_from_it() {
    let lab = lab();
    let curl = lab.pod("curl").unwrap();
    // TCP: getpeername() is the ClusterIP; the backend sees the pod.
    let tcp = http_request(&CLUSTER_IP.to_string());
    let printed = python_in_pod(&lab, &tcp);
    let (peer, answer) = printed.split_at(printed.find(" pod=").unwrap());
    assert_eq!(peer, format!("{CLUSTER_IP} 80"));
    let answer = Answer::parse(answer).unwrap();
    assert_eq!(
        (answer.pod.as_str(), answer.client.ip()),
        ("web", IpAddr::from(curl.address6))
    );

    // UDP: sendto() the ClusterIP, the reply comes from it.
    let udp = format!(
        r#"
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(b"ping", ("{CLUSTER_IP}", 53))
data, source = s.recvfrom(512)
print(source[0], source[1], data.decode().strip())
"#
    );
    let printed = python_in_pod(&lab, &udp);
    let (source, answer) = printed.split_at(printed.find(" pod=").unwrap());
    assert_eq!(source, format!("{CLUSTER_IP} 53"));
    assert_eq!(Answer::parse(answer).unwrap().pod, "web");

    // A dual-stack socket dialling an IPv4 Service by its IPv4-mapped
    // address: balanced as that Service, and shown as dialled.
    let mapped = http_request(&format!("::ffff:{CLUSTER_IP4}"));
    let printed = python_in_pod(&lab, &mapped);
    let (peer, answer) = printed.split_at(printed.find(" pod=").unwrap());
    assert_eq!(peer, format!("::ffff:{CLUSTER_IP4} 80"));
    let answer = Answer::parse(answer).unwrap();
    assert_eq!(
        (answer.pod.as_str(), answer.client.ip()),
        ("web", IpAddr::from(curl.address))
    );
    assert_eq!(packets(&lab, "test/web4"), 1, "balanced by the IPv4 tables");
}

#[test]
fn an_ipv6_frontend_without_backends_refuses_at_once() {
    let lab = lab();
    let script = format!(
        r#"
import socket
try:
    socket.create_connection(("{EMPTY_IP}", 80), timeout=5)
    print("connected")
except ConnectionRefusedError:
    print("refused")
except OSError as error:
    print(type(error).__name__, error)
"#
    );
    assert_eq!(python_in_pod(&lab, &script), "refused");
}

/// Once the node knows the IPv6 service CIDR, connect() to an address of
/// it that no Service holds, or to a port a ClusterIP does not serve, is
/// refused at once; before, it goes out (here: no route beyond the node).
#[test]
fn unserved_addresses_and_ports_of_the_ipv6_service_cidr_are_refused() {
    let lab = lab();
    let script = |address: Ipv6Addr, port: u16| {
        format!(
            r#"
import socket
try:
    socket.create_connection(("{address}", {port}), timeout=5)
    print("connected")
except ConnectionRefusedError:
    print("refused")
except OSError as error:
    print(type(error).__name__)
"#
        )
    };
    let unused: Ipv6Addr = "fd00:198:19::99".parse().unwrap();
    assert_ne!(python_in_pod(&lab, &script(unused, 80)), "refused");

    let mut tables = lab.tables("node-1").unwrap();
    let mut node = tables.node().unwrap();
    node.service_cidrs = vec![
        svc_lab::SERVICE_CIDR.parse().unwrap(),
        svc_lab::SERVICE_CIDR6.parse().unwrap(),
    ];
    tables.set_node(&node).unwrap();
    assert_eq!(tables.node().unwrap(), node, "both families read back");
    assert_eq!(python_in_pod(&lab, &script(unused, 80)), "refused");
    assert_eq!(python_in_pod(&lab, &script(CLUSTER_IP, 82)), "refused");
    // Outside the CIDR: not ours, routed as before.
    let outside: Ipv6Addr = "fd00:198:19:1::99".parse().unwrap();
    assert_ne!(python_in_pod(&lab, &script(outside, 80)), "refused");
    // Served frontends are not touched.
    assert_eq!(python_in_pod(&lab, &script(CLUSTER_IP, 80)), "connected");
}
