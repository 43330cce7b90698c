//! DESIGN.md's traffic table, row by row, on a two-node lab with an external
//! client: real curl and UDP through the XDP and TC programs, asserting which
//! pod answered, the source address it saw (SNAT or preserved) and the
//! address replies came from.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::{Ipv4Addr, SocketAddr};

use svc_agent::model::{BackendRef, Frontend, FrontendKind, OnEmpty, Protocol};
use svc_lab::{
    CLIENT_ADDRESS, HAIRPIN_ADDRESS, Lab, NAT_PORTS, NodeSpec, PodSpec, Topology, server::Answer,
};
use tests::{curl, frontend, ready, udp_request};

const NODE_1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const NODE_2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 12);
const WEB_1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const CURL: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
const WEB_2: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 10);
const REMOTE_ONLY: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 20);
const SELF_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 21);
const LB_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);
const DNS_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 22);

/// web-1 and curl on node-1, web-2 on node-2; every web pod serves HTTP on
/// 8080 and UDP echo on 5353.
fn lab() -> Lab {
    let web = |name: &str| PodSpec::new(name, &[8080], &[5353]);
    let lab = Lab::up(&Topology {
        nodes: vec![
            NodeSpec {
                name: "node-1".into(),
                pods: vec![web("web-1"), PodSpec::new("curl", &[], &[])],
            },
            NodeSpec {
                name: "node-2".into(),
                pods: vec![web("web-2")],
            },
        ],
    })
    .unwrap();
    assert_eq!(lab.pod("web-1").unwrap().address, WEB_1);
    assert_eq!(lab.pod("curl").unwrap().address, CURL);
    assert_eq!(lab.pod("web-2").unwrap().address, WEB_2);
    for (node, address) in [("node-1", NODE_1), ("node-2", NODE_2)] {
        assert_eq!(lab.node(node).unwrap().address, address);
        lab.load_datapath(node).unwrap();
        lab.tables(node)
            .unwrap()
            .apply(&frontends(node, address))
            .unwrap();
    }
    lab
}

/// What each node's agent would program: the same Services, seen from
/// that node (which backends are local, its own NodePort addresses).
fn frontends(node: &str, address: Ipv4Addr) -> Vec<Frontend> {
    let on_1 = node == "node-1";
    let web_1 = ready(WEB_1, 8080, on_1);
    let web_2 = ready(WEB_2, 8080, !on_1);
    let node_port = |name: &str, port: u16, backends: &[BackendRef]| {
        frontend(
            FrontendKind::NodePort,
            name,
            (address, port),
            Protocol::TCP,
            backends,
        )
    };
    let local_only: Vec<BackendRef> = if on_1 { vec![web_1] } else { Vec::new() };
    let mut etp_local = node_port("etp-local", 30081, &local_only);
    etp_local.on_empty = OnEmpty::Drop;
    let udp_backend = ready(WEB_2, 5353, !on_1);
    vec![
        frontend(
            FrontendKind::ClusterIP,
            "remote-only",
            (REMOTE_ONLY, 80),
            Protocol::TCP,
            &[web_2],
        ),
        frontend(
            FrontendKind::ClusterIP,
            "self",
            (SELF_IP, 80),
            Protocol::TCP,
            &[web_1],
        ),
        node_port("web-1-only", 30080, &[web_1]),
        etp_local,
        node_port("empty", 30082, &[]),
        frontend(
            FrontendKind::NodePort,
            "dns",
            (address, 30053),
            Protocol::UDP,
            &[udp_backend],
        ),
        frontend(
            FrontendKind::LoadBalancer,
            "lb",
            (LB_IP, 80),
            Protocol::TCP,
            &[web_1, web_2],
        ),
        frontend(
            FrontendKind::ClusterIP,
            "dns-cip",
            (DNS_IP, 53),
            Protocol::UDP,
            &[udp_backend],
        ),
    ]
}

fn answer(lab: &Lab, from: &svc_lab::netns::Netns, url: &str) -> Answer {
    let (code, stdout, stderr) = curl(from, url, 5);
    assert_eq!(code, Some(0), "curl {url}: {stderr}");
    let _ = lab;
    Answer::parse(&stdout).unwrap_or_else(|| panic!("no lab answer from {url}: {stdout}"))
}

#[test]
fn pod_to_cluster_ip_with_backend_on_another_node() {
    let lab = lab();
    let curl_pod = lab.pod("curl").unwrap().netns();
    let answer = answer(&lab, curl_pod, "http://198.19.0.20/");
    assert_eq!(
        (answer.pod.as_str(), answer.node.as_str()),
        ("web-2", "node-2")
    );
    assert_eq!(answer.client.ip(), CURL, "no SNAT between pods");
}

#[test]
fn pod_reaching_itself_through_its_service_is_hairpinned() {
    let lab = lab();
    let web_1 = lab.pod("web-1").unwrap().netns();
    let answer = answer(&lab, web_1, "http://198.19.0.21/");
    assert_eq!(answer.pod, "web-1");
    assert_eq!(answer.client.ip(), HAIRPIN_ADDRESS);
}

#[test]
fn client_to_node_port_with_local_backend_keeps_its_source() {
    let lab = lab();
    let answer = answer(&lab, lab.client().unwrap(), "http://198.18.0.11:30080/");
    assert_eq!(answer.pod, "web-1");
    assert_eq!(answer.client.ip(), CLIENT_ADDRESS);
}

/// The NIC's programs deliver a NodePort flow to its local backend
/// straight into the pod (bpf_redirect_peer) and send the pod's replies
/// out of the NIC themselves: nothing of it passes the node's forwarding
/// path. With a netfilter rule there that drops everything to the pod,
/// the connection still works; through the stack it could not.
#[test]
fn a_node_port_with_a_local_backend_goes_past_the_nodes_forwarding() {
    let lab = lab();
    let node = lab.node("node-1").unwrap();
    // nft reads its command line as it reads a file.
    let nft = |script: &str| {
        let output = node.command("nft").unwrap().arg(script).output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    nft("table ip bypass {
           chain forward { type filter hook forward priority 0; policy accept;
                           ip daddr 198.18.1.10 counter drop; }
         }");
    // The pod dialled directly is forwarded by the stack: dropped.
    let (code, _, _) = tests::curl(lab.client().unwrap(), "http://198.18.1.10:8080/", 2);
    assert_eq!(code, Some(28), "the rule drops what the stack forwards");
    for _ in 0..3 {
        let answer = answer(&lab, lab.client().unwrap(), "http://198.18.0.11:30080/");
        assert_eq!(answer.pod, "web-1");
        assert_eq!(answer.client.ip(), CLIENT_ADDRESS);
    }
    nft("delete table ip bypass");
}

#[test]
fn client_to_node_port_with_remote_backend_is_snated_to_the_node() {
    let lab = lab();
    let answer = answer(&lab, lab.client().unwrap(), "http://198.18.0.12:30080/");
    assert_eq!(
        (answer.pod.as_str(), answer.node.as_str()),
        ("web-1", "node-1")
    );
    assert_eq!(
        answer.client.ip(),
        NODE_2,
        "SNAT to the node the client dialled"
    );
    assert!((NAT_PORTS.0..=NAT_PORTS.1).contains(&answer.client.port()));
}

/// 60 000 SYNs from spoofed sources (ten times what once took every NAT
/// port of a node for good) to node-2's NodePort, whose backend is on
/// node-1: real clients are served while the flood runs and after it.
#[test]
fn a_spoofed_syn_flood_leaves_the_node_port_serving() {
    let lab = lab();
    let client = lab.client().unwrap();
    // Sources nobody in the lab has, so answers to them go nowhere.
    fn spoofed(n: u32) -> (Ipv4Addr, u16) {
        let mixed = n.wrapping_mul(2_654_435_761);
        let host = 0xC612_8000 | (mixed & 0x7FFF);
        (Ipv4Addr::from(host), 1024 + (mixed >> 17) as u16 % 60000)
    }
    let flooding = std::sync::atomic::AtomicBool::new(true);
    let served_during = std::thread::scope(|scope| {
        let flood = scope.spawn(|| {
            let sent = tests::spoofed_syns(client, (NODE_2, 30080), 60_000, spoofed);
            flooding.store(false, std::sync::atomic::Ordering::Release);
            sent
        });
        let mut served = 0;
        while flooding.load(std::sync::atomic::Ordering::Acquire) {
            let answer = answer(&lab, client, "http://198.18.0.12:30080/");
            assert_eq!(answer.client.ip(), NODE_2);
            served += 1;
        }
        assert_eq!(flood.join().unwrap().unwrap(), 60_000);
        served
    });
    assert!(served_during >= 1, "a request ran during the flood");
    for _ in 0..20 {
        let answer = answer(&lab, client, "http://198.18.0.12:30080/");
        assert_eq!(answer.pod, "web-1");
    }
    // Spoofed SYNs beyond the range are dropped while every port is held
    // by a flow too young to lose it; real clients' SYNs may be too, and
    // their retries get through (every request above was answered).
    eprintln!(
        "nat_ports_exhausted on node-2: {}",
        tests::lab_drops(&lab, "node-2", "nat_ports_exhausted")
    );
}

/// With the default NAT range (4 536 ports), 20 000 short connections
/// one after the other (100 000 with $SVC_SEQUENTIAL_CONNECTIONS=100000,
/// about 10 minutes) through node-2's NodePort to web-1 on node-1: each is
/// answered by web-1, seeing node-2's address. Closed connections give
/// their NAT ports back (each is taken again once its flow has been quiet
/// 5 s), so a range used up several times over never runs dry.
#[test]
fn connections_in_a_row_through_source_nat_outnumber_its_ports_and_all_succeed() {
    use std::io::{Read as _, Write as _};
    let connections: u32 = std::env::var("SVC_SEQUENTIAL_CONNECTIONS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(20_000);
    let lab = lab();
    let client = lab.client().unwrap();
    let retried = |counters: Vec<(String, u64)>| {
        counters
            .into_iter()
            .find(|(name, _)| name == "TcpExt:TCPSynRetrans")
            .map_or(0, |(_, value)| value)
    };
    let retried_before = retried(tests::chaos::trouble_counters(client));
    let started = std::time::Instant::now();
    let (answered, failures) = client
        .in_thread(move || {
            let target = SocketAddr::from((NODE_2, 30080));
            let once = || -> Result<Answer, String> {
                let timeout = std::time::Duration::from_secs(10);
                let mut stream = std::net::TcpStream::connect_timeout(&target, timeout)
                    .map_err(|error| format!("connect: {error}"))?;
                stream.set_read_timeout(Some(timeout)).unwrap();
                let mut text = String::new();
                stream
                    .write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
                    .and_then(|()| stream.read_to_string(&mut text))
                    .map_err(|error| format!("{error}"))?;
                Answer::parse(&text).ok_or(format!("no lab answer: {text}"))
            };
            let mut answered = 0u32;
            let mut failures = Vec::new();
            for n in 0..connections {
                match once() {
                    Ok(answer) if answer.pod == "web-1" && answer.client.ip() == NODE_2 => {
                        answered += 1;
                    }
                    Ok(answer) => failures.push(format!("{n}: {answer:?}")),
                    Err(error) => failures.push(format!("{n}: {error}")),
                }
            }
            (answered, failures)
        })
        .unwrap();
    eprintln!(
        "{answered} of {connections} answered in {:.1} s; SYNs retried: {}; \
         nat_ports_exhausted on node-2: {}",
        started.elapsed().as_secs_f64(),
        retried(tests::chaos::trouble_counters(client)) - retried_before,
        tests::lab_drops(&lab, "node-2", "nat_ports_exhausted")
    );
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert_eq!(answered, connections);
}

#[test]
fn local_traffic_policy_serves_local_backends_and_drops_elsewhere() {
    let lab = lab();
    let client = lab.client().unwrap();
    let answer = answer(&lab, client, "http://198.18.0.11:30081/");
    assert_eq!(answer.client.ip(), CLIENT_ADDRESS, "source preserved");

    let (code, _, _) = curl(client, "http://198.18.0.12:30081/", 1);
    assert_eq!(code, Some(28), "no answer at all: the SYN is dropped");
    assert!(tests::lab_drops(&lab, "node-2", "no_backend_drop") >= 1);
}

#[test]
fn client_to_load_balancer_ip_reaches_the_pods_through_the_nodes() {
    let lab = lab();
    let client = lab.client().unwrap();
    let mut pods = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let answer = answer(&lab, client, "http://198.19.255.1/");
        pods.insert(answer.pod);
    }
    assert!(
        pods.iter().all(|p| p == "web-1" || p == "web-2"),
        "{pods:?}"
    );
    let served: u64 = ["node-1", "node-2"]
        .iter()
        .map(|node| {
            let states = lab.tables(node).unwrap().read().unwrap();
            states
                .iter()
                .find(|s| s.frontend.service == "test/lb")
                .unwrap()
                .packets
        })
        .sum();
    assert!(
        served >= 12 * 3,
        "every request crossed a node's LB frontend: {served}"
    );
}

#[test]
fn client_to_node_port_without_endpoints_is_refused_at_once() {
    let lab = lab();
    let start = std::time::Instant::now();
    let (code, _, stderr) = curl(lab.client().unwrap(), "http://198.18.0.11:30082/", 5);
    assert_eq!(code, Some(7), "{stderr}");
    assert!(start.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(tests::lab_drops(&lab, "node-1", "no_backend_reset"), 1);
}

#[test]
fn udp_node_port_replies_come_from_the_node_port() {
    let lab = lab();
    let to = SocketAddr::from((NODE_1, 30053));
    let (reply, from) = udp_request(lab.client().unwrap(), to).unwrap();
    assert_eq!(from, to, "reply source");
    let answer = Answer::parse(&reply).unwrap();
    assert_eq!(answer.pod, "web-2");
    assert_eq!(answer.client.ip(), NODE_1, "SNAT towards the other node");
}

/// curl run as a process of the node (its netns and cgroup).
fn curl_on_node(lab: &Lab, node: &str, url: &str) -> Answer {
    let output = lab
        .node(node)
        .unwrap()
        .command("curl")
        .unwrap()
        .args(["-sS", "--max-time", "5", url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "curl {url} on {node}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Answer::parse(&stdout).unwrap_or_else(|| panic!("no lab answer from {url}: {stdout}"))
}

#[test]
fn node_processes_reach_cluster_ip_node_port_and_lb_ip() {
    let lab = lab();
    // No route to 198.19.x.x exists in the node's namespace: the socket
    // hook points connect() at a backend before routing.
    let answer = curl_on_node(&lab, "node-1", "http://198.19.0.20/");
    assert_eq!(answer.pod, "web-2");
    assert_eq!(answer.client.ip(), NODE_1);
    // The seed: curl NODE_IP:30080 on the node itself.
    assert_eq!(
        curl_on_node(&lab, "node-1", "http://198.18.0.11:30080/").pod,
        "web-1"
    );
    let lb = curl_on_node(&lab, "node-2", "http://198.19.255.1/");
    assert!(lb.pod == "web-1" || lb.pod == "web-2", "{lb:?}");
}

#[test]
fn node_process_sees_the_frontend_as_its_peer() {
    let lab = lab();
    // UDP: the reply's source (recvmsg) and, for TCP, getpeername() name
    // the frontend, not the backend the socket was pointed at.
    let script = "import socket\n\
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
u.settimeout(3)\n\
u.sendto(b'ping', ('198.19.0.22', 53))\n\
data, src = u.recvfrom(512)\n\
print('udp', src[0], src[1], data.decode().strip())\n\
t = socket.create_connection(('198.19.0.20', 80), timeout=3)\n\
print('tcp', *t.getpeername())\n";
    let python3 = lab.node("node-1").unwrap().command("python3").unwrap();
    let stdout = tests::python_output(python3, script);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("udp 198.19.0.22 53 pod=web-2"),
        "{stdout}"
    );
    assert_eq!(lines[1], "tcp 198.19.0.20 80");
}

#[test]
fn node_process_to_frontend_without_endpoints_is_refused() {
    let lab = lab();
    // A NodePort without endpoints, dialled on the node's own address.
    let output = lab
        .node("node-1")
        .unwrap()
        .command("curl")
        .unwrap()
        .args(["-sS", "--max-time", "5", "http://198.18.0.11:30082/"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("Couldn't connect"));
}

/// The path MTU node-1 uses towards node-2's pods in the MTU tests.
const SMALL_MTU: u16 = 1400;

/// Lowers node-1's route to node-2's pods to [`SMALL_MTU`] ("lock": the
/// route's own MTU, not the device's, decides, as a tunnel's would).
fn narrow_route_to_node_2(lab: &Lab) {
    let mtu = SMALL_MTU.to_string();
    lab.node("node-1")
        .unwrap()
        .netns()
        .ip(&[
            "route",
            "replace",
            "198.18.2.0/24",
            "via",
            &NODE_2.to_string(),
            "dev",
            "eth0",
            "mtu",
            "lock",
            &mtu,
        ])
        .unwrap();
}

/// What a UDP socket with Don't Fragment (IP_PMTUDISC_DO) connected to `to`
/// sees when it sends one datagram of `ip_len` bytes (IP and UDP headers
/// included): the answer, or the error the socket got; then the path MTU
/// the socket's route holds.
fn udp_dont_fragment(
    netns: &svc_lab::netns::Netns,
    to: SocketAddr,
    ip_len: usize,
) -> (std::io::Result<String>, u32) {
    use std::os::fd::AsRawFd;
    netns
        .in_thread(move || {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            socket.connect(to).unwrap();
            let fd = socket.as_raw_fd();
            let set = |option, value: libc::c_int| {
                // SAFETY: a valid socket and an int option value.
                let rc = unsafe {
                    libc::setsockopt(
                        fd,
                        libc::IPPROTO_IP,
                        option,
                        (&raw const value).cast(),
                        size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                assert_eq!(rc, 0, "setsockopt {option}");
            };
            set(libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO);
            socket
                .set_read_timeout(Some(std::time::Duration::from_secs(3)))
                .unwrap();
            socket.send(&vec![b'x'; ip_len - 28]).unwrap();
            let mut buffer = [0u8; 512];
            // An ICMP error about the datagram is reported by the next
            // socket call (sk_err): here, the receive that waits for the answer.
            let answer = socket
                .recv(&mut buffer)
                .map(|len| String::from_utf8_lossy(&buffer[..len]).into_owned());
            let mut mtu: libc::c_int = 0;
            let mut len = size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: a valid socket and an int-sized out value.
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::IPPROTO_IP,
                    libc::IP_MTU,
                    (&raw mut mtu).cast(),
                    &mut len,
                )
            };
            assert_eq!(rc, 0, "getsockopt IP_MTU");
            (answer, mtu as u32)
        })
        .unwrap()
}

/// Path MTU discovery through the translation, from the client to a
/// NodePort (SNATed, routed by the program) and from a pod to a ClusterIP
/// (forwarded by the stack): a datagram too big for node-1's route to the
/// backend on node-2 is answered with ICMP fragmentation needed about the
/// datagram as it was sent, so the sender's socket learns the MTU (left to
/// the stack, the answer would be about the translated datagram, which the
/// socket cannot match); one that fits gets through.
#[test]
fn too_big_for_the_route_to_the_backend_teaches_the_sender_the_path_mtu() {
    let lab = lab();
    narrow_route_to_node_2(&lab);
    let senders = [
        (
            "client",
            lab.client().unwrap(),
            SocketAddr::from((NODE_1, 30053)),
        ),
        (
            "pod",
            lab.pod("curl").unwrap().netns(),
            SocketAddr::from((DNS_IP, 53)),
        ),
    ];
    for (answered, (sender, netns, to)) in (1..).zip(senders) {
        let (answer, mtu) = udp_dont_fragment(netns, to, usize::from(SMALL_MTU) + 1);
        let error = answer.expect_err("a datagram too big for the path is not answered");
        assert_eq!(
            error.raw_os_error(),
            Some(libc::EMSGSIZE),
            "{sender}: {error}"
        );
        assert_eq!(mtu, u32::from(SMALL_MTU), "{sender}'s path MTU to {to}");
        assert_eq!(
            tests::lab_drops(&lab, "node-1", "fragmentation_needed"),
            answered
        );

        let (answer, _) = udp_dont_fragment(netns, to, usize::from(SMALL_MTU));
        let answer = Answer::parse(&answer.unwrap()).unwrap();
        assert_eq!(answer.pod, "web-2", "{sender}");
        assert_eq!(
            tests::lab_drops(&lab, "node-1", "fragmentation_needed"),
            answered
        );
    }
}
