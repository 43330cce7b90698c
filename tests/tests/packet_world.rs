//! Crafted packets through the NIC program (XDP) and the pod program (TC)
//! for the north-south paths: NodePort/LoadBalancer to local and remote
//! backends, source NAT and its replies, externalTrafficPolicy=Local,
//! loadBalancerSourceRanges, sessionAffinity, terminating fallback, hairpin
//! and ICMP port unreachable. Exact bytes, independently checked checksums.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{collections::BTreeSet, net::Ipv4Addr};

use svc_agent::{
    dataplane::{Datapath, NodeSettings},
    model::{Frontend, FrontendKind, OnEmpty, Protocol},
};
use tests::*;

const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const HAIRPIN: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const LOCAL_POD: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const REMOTE_POD: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 10);
const LB_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 1);
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
const NAT_MIN: u16 = 32768;
const NAT_MAX: u16 = 60999;

fn load_with(frontends: &[Frontend]) -> Datapath {
    let mut datapath = Datapath::load(None).expect("load the datapath (root, kernel >= 6.6)");
    let tables = datapath.tables();
    tables
        .set_node(&NodeSettings {
            node_address: NODE,
            hairpin_address: HAIRPIN,
            nat_ports: (NAT_MIN, NAT_MAX),
            service_cidrs: Vec::new(),
            lb_mode: svc_agent::model::LbMode::Snat,
        })
        .unwrap();
    tables.apply(frontends).unwrap();
    datapath
}

fn node_port(backends: &[svc_agent::model::BackendRef]) -> Frontend {
    frontend(
        FrontendKind::NodePort,
        "web",
        (NODE, 30080),
        Protocol::TCP,
        backends,
    )
}

fn world(datapath: &mut Datapath, frame: &[u8]) -> (u32, Vec<u8>) {
    run_xdp(datapath.from_world_program().unwrap(), frame)
}

#[test]
fn node_port_to_a_local_backend_keeps_the_client_source() {
    let mut datapath = load_with(&[node_port(&[ready(LOCAL_POD, 8080, true)])]);
    let syn = tcp_frame((CLIENT, 40000), (NODE, 30080), 1, SYN, b"");
    let (verdict, out) = world(&mut datapath, &syn);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, rewritten(&syn, true, LOCAL_POD, 8080));
    assert_eq!(verify_checksums(&out), Ok(()));

    // The backend's reply leaves through its veth (TC) as the NodePort.
    let flags = TcpFlags {
        syn: true,
        ack: Some(2),
        ..TcpFlags::default()
    };
    let syn_ack = tcp_frame((LOCAL_POD, 8080), (CLIENT, 40000), 9, flags, b"");
    let (verdict, out) = run_tc(datapath.from_pod_program().unwrap(), &syn_ack);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, rewritten(&syn_ack, false, NODE, 30080));
}

#[test]
fn node_port_to_a_remote_backend_is_snated_and_replies_come_back() {
    let mut datapath = load_with(&[node_port(&[ready(REMOTE_POD, 8080, false)])]);
    let syn = tcp_frame((CLIENT, 40000), (NODE, 30080), 1, SYN, b"");
    let (verdict, out) = world(&mut datapath, &syn);
    assert_eq!(verdict, XDP_PASS);
    // The client's own port is free, so it is kept.
    let expected = rewritten(&rewritten(&syn, true, REMOTE_POD, 8080), false, NODE, 40000);
    assert_eq!(out, expected);
    assert_eq!(verify_checksums(&out), Ok(()));

    // The reply comes back to the node address and leaves as the NodePort,
    // towards the client.
    let flags = TcpFlags {
        syn: true,
        ack: Some(2),
        ..TcpFlags::default()
    };
    let syn_ack = tcp_frame((REMOTE_POD, 8080), (NODE, 40000), 9, flags, b"");
    let (verdict, out) = world(&mut datapath, &syn_ack);
    assert_eq!(verdict, XDP_PASS);
    let expected = rewritten(
        &rewritten(&syn_ack, false, NODE, 30080),
        true,
        CLIENT,
        40000,
    );
    assert_eq!(out, expected);
    assert_eq!(verify_checksums(&out), Ok(()));
}

#[test]
fn snat_ports_never_collide_between_flows() {
    let mut datapath = load_with(&[node_port(&[ready(REMOTE_POD, 8080, false)])]);
    // Eight clients, all from source port 40000, to the same backend.
    let mut ports = BTreeSet::new();
    for host in 100..108u8 {
        let client = Ipv4Addr::new(198, 18, 0, host);
        let syn = tcp_frame((client, 40000), (NODE, 30080), 1, SYN, b"");
        let (verdict, out) = world(&mut datapath, &syn);
        assert_eq!(verdict, XDP_PASS);
        let ((source, port), (destination, _)) = endpoints(&out);
        assert_eq!((source, destination), (NODE, REMOTE_POD));
        assert!(
            port == 40000 || (NAT_MIN..=NAT_MAX).contains(&port),
            "{port}"
        );
        assert!(ports.insert(port), "port {port} handed out twice");

        // Each reply finds its own client.
        let reply = tcp_frame(
            (REMOTE_POD, 8080),
            (NODE, port),
            9,
            TcpFlags {
                ack: Some(2),
                ..TcpFlags::default()
            },
            b"",
        );
        let (verdict, out) = world(&mut datapath, &reply);
        assert_eq!(verdict, XDP_PASS);
        assert_eq!(endpoints(&out), ((NODE, 30080), (client, 40000)));
    }
    assert_eq!(ports.len(), 8);
}

#[test]
fn local_policy_without_local_backend_drops_external_traffic() {
    let mut empty = node_port(&[]);
    empty.on_empty = OnEmpty::Drop;
    let mut datapath = load_with(&[empty]);
    let syn = tcp_frame((CLIENT, 40000), (NODE, 30080), 1, SYN, b"");
    let (verdict, _) = world(&mut datapath, &syn);
    assert_eq!(verdict, XDP_DROP);
    assert_eq!(datapath_drops(&mut datapath, "no_backend_drop"), 1);
    assert_eq!(datapath_drops(&mut datapath, "no_backend_reset"), 0);
}

#[test]
fn tcp_to_an_empty_node_port_is_reset_from_the_nic() {
    let mut datapath = load_with(&[node_port(&[])]);
    let syn = tcp_frame((CLIENT, 40000), (NODE, 30080), 1000, SYN, b"");
    let (verdict, out) = world(&mut datapath, &syn);
    assert_eq!(verdict, XDP_TX);
    assert_eq!(verify_checksums(&out), Ok(()));
    assert_eq!(endpoints(&out), ((NODE, 30080), (CLIENT, 40000)));
    assert_eq!(out[14 + 20 + 13], 0x14, "RST|ACK");
    assert_eq!(datapath_drops(&mut datapath, "no_backend_reset"), 1);
}

#[test]
fn udp_to_an_empty_frontend_gets_icmp_port_unreachable() {
    let empty = frontend(
        FrontendKind::NodePort,
        "dns",
        (NODE, 30053),
        Protocol::UDP,
        &[],
    );
    let mut datapath = load_with(&[empty]);
    let datagram = udp_frame((CLIENT, 40000), (NODE, 30053), b"query");
    let (verdict, out) = world(&mut datapath, &datagram);
    assert_eq!(verdict, XDP_TX);
    assert_eq!(out.len(), 14 + 20 + 8 + 28);
    assert_eq!(&out[0..6], &POD_MAC, "back to the sender");
    let ip = &out[14..34];
    assert_eq!(ip[9], 1, "ICMP");
    assert_eq!(&ip[12..16], &NODE.octets());
    assert_eq!(&ip[16..20], &CLIENT.octets());
    let icmp = &out[34..];
    assert_eq!((icmp[0], icmp[1]), (3, 3), "destination unreachable, port");
    assert_eq!(
        &icmp[8..36],
        &datagram[14..42],
        "original header and 8 bytes ride along"
    );
    // IP header and ICMP checksums, computed here.
    let mut sum = 0u32;
    for pair in icmp.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    assert_eq!(sum, 0xffff, "ICMP checksum");
    assert_eq!(datapath_drops(&mut datapath, "no_backend_unreachable"), 1);
}

#[test]
fn source_ranges_admit_only_listed_clients() {
    let mut lb = frontend(
        FrontendKind::LoadBalancer,
        "web",
        (LB_IP, 80),
        Protocol::TCP,
        &[ready(LOCAL_POD, 8080, true)],
    );
    lb.source_ranges = vec!["198.18.0.0/25".parse().unwrap()];
    let mut datapath = load_with(&[lb]);

    let inside = tcp_frame((CLIENT, 40000), (LB_IP, 80), 1, SYN, b"");
    let (verdict, out) = world(&mut datapath, &inside);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, rewritten(&inside, true, LOCAL_POD, 8080));

    let outsider = Ipv4Addr::new(198, 18, 0, 200);
    let outside = tcp_frame((outsider, 40000), (LB_IP, 80), 1, SYN, b"");
    let (verdict, _) = world(&mut datapath, &outside);
    assert_eq!(verdict, XDP_DROP);
    assert_eq!(datapath_drops(&mut datapath, "source_range_denied"), 1);

    let states = datapath.tables().read().unwrap();
    assert_eq!(
        states[0].frontend.source_ranges,
        vec!["198.18.0.0/25".parse().unwrap()]
    );
}

fn backends_chosen(datapath: &mut Datapath, client: Ipv4Addr, flows: u16) -> BTreeSet<Ipv4Addr> {
    (0..flows)
        .map(|i| {
            let syn = tcp_frame((client, 20000 + i), (CLUSTER_IP, 80), 1, SYN, b"");
            let (verdict, out) = run_tc(datapath.from_pod_program().unwrap(), &syn);
            assert_eq!(verdict, TC_ACT_OK);
            endpoints(&out).1.0
        })
        .collect()
}

#[test]
fn session_affinity_keeps_a_client_on_one_backend() {
    let two = [
        ready(LOCAL_POD, 8080, true),
        ready(Ipv4Addr::new(198, 18, 1, 11), 8080, true),
    ];
    let mut sticky = frontend(
        FrontendKind::ClusterIP,
        "web",
        (CLUSTER_IP, 80),
        Protocol::TCP,
        &two,
    );
    sticky.affinity_timeout_seconds = Some(60);
    let mut datapath = load_with(&[sticky.clone()]);
    let client = Ipv4Addr::new(198, 18, 1, 20);
    assert_eq!(backends_chosen(&mut datapath, client, 40).len(), 1);

    // Without affinity, 40 flows use both backends (all on one: 2^-39).
    sticky.affinity_timeout_seconds = None;
    let mut datapath = load_with(&[sticky]);
    assert_eq!(backends_chosen(&mut datapath, client, 40).len(), 2);
}

#[test]
fn terminating_backends_serve_only_when_none_is_ready() {
    let old = Ipv4Addr::new(198, 18, 1, 11);
    let mixed = [ready(LOCAL_POD, 8080, true), terminating(old, 8080, true)];
    let mut datapath = load_with(&[frontend(
        FrontendKind::ClusterIP,
        "web",
        (CLUSTER_IP, 80),
        Protocol::TCP,
        &mixed,
    )]);
    let client = Ipv4Addr::new(198, 18, 1, 20);
    assert_eq!(
        backends_chosen(&mut datapath, client, 30),
        BTreeSet::from([LOCAL_POD])
    );

    let only_terminating = [terminating(old, 8080, true)];
    let mut datapath = load_with(&[frontend(
        FrontendKind::ClusterIP,
        "web",
        (CLUSTER_IP, 80),
        Protocol::TCP,
        &only_terminating,
    )]);
    assert_eq!(
        backends_chosen(&mut datapath, client, 5),
        BTreeSet::from([old])
    );
}

#[test]
fn a_pod_reaching_itself_is_hairpinned_through_the_node() {
    let mut datapath = load_with(&[cluster_ip(
        "web",
        CLUSTER_IP,
        80,
        Protocol::TCP,
        &[(LOCAL_POD, 8080)],
    )]);
    let syn = tcp_frame((LOCAL_POD, 40000), (CLUSTER_IP, 80), 1, SYN, b"");
    let (verdict, out) = run_tc(datapath.from_pod_program().unwrap(), &syn);
    assert_eq!(verdict, TC_ACT_OK);
    let expected = rewritten(
        &rewritten(&syn, true, LOCAL_POD, 8080),
        false,
        HAIRPIN,
        40000,
    );
    assert_eq!(out, expected);

    let flags = TcpFlags {
        syn: true,
        ack: Some(2),
        ..TcpFlags::default()
    };
    let syn_ack = tcp_frame((LOCAL_POD, 8080), (HAIRPIN, 40000), 9, flags, b"");
    let (verdict, out) = run_tc(datapath.from_pod_program().unwrap(), &syn_ack);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(endpoints(&out), ((CLUSTER_IP, 80), (LOCAL_POD, 40000)));
    assert_eq!(verify_checksums(&out), Ok(()));
}

#[test]
fn snat_without_node_config_is_refused_and_counted() {
    let mut datapath = Datapath::load(None).unwrap();
    datapath
        .tables()
        .apply(&[node_port(&[ready(REMOTE_POD, 8080, false)])])
        .unwrap();
    let syn = tcp_frame((CLIENT, 40000), (NODE, 30080), 1, SYN, b"");
    let (verdict, _) = world(&mut datapath, &syn);
    assert_eq!(verdict, XDP_DROP);
    assert_eq!(datapath_drops(&mut datapath, "node_config_missing"), 1);
}

/// The NIC program sends a packet out of an interface itself only where
/// the kernel says the driver transmits XDP frames (XDP_TARGETS_V1, which
/// the agent fills): a veth does while its peer has an XDP program.
/// Redirected elsewhere, the kernel would drop the packet after the
/// program, uncounted; so it goes on untouched to the TC program behind,
/// which sends it. Before the list is first filled, nothing is held back.
#[test]
fn xdp_sends_only_out_of_interfaces_that_take_xdp_frames() {
    let ns = routed_namespace("xdpt", 1400);
    resolve_next_hop(&ns);
    let dns = remote_dns();
    let query = udp_frame((CLIENT, 40000), (NODE, 30053), b"query");
    let input = query.clone();
    let (unknown, held_back, by_tc, listed) = ns
        .in_thread(move || {
            let mut datapath = load_with(&[dns]);
            let unknown = world(&mut datapath, &input).0;
            datapath.refresh_xdp_targets().unwrap();
            let held_back = world(&mut datapath, &input);
            let tc = datapath.packet_programs().unwrap().from_world_tc;
            let by_tc = run_tc_in_namespace(tc, &input);
            datapath.attach_xdp_pass("v1").unwrap();
            datapath.refresh_xdp_targets().unwrap();
            let listed = world(&mut datapath, &input).0;
            (unknown, held_back, by_tc, listed)
        })
        .unwrap();
    assert_eq!(unknown, XDP_REDIRECT, "no list yet");
    assert_eq!(held_back, (XDP_PASS, query), "v0 takes no XDP frames yet");
    assert_eq!(by_tc.0, TC_ACT_REDIRECT);
    assert_eq!(endpoints(&by_tc.1), ((NODE, 40000), (REMOTE_POD, 5353)));
    assert_eq!(listed, XDP_REDIRECT, "v1 has an XDP program now");
}

/// `svc-agent lookup` reads what the programs do: a new flow's
/// candidates (picked at random), then the tracked flow's backend and
/// source NAT from its conntrack entry; with sessionAffinity, a client's
/// next flow goes to its remembered backend.
#[test]
fn lookup_names_the_backend_the_tables_choose() {
    use std::net::SocketAddrV4;
    use svc_agent::dataplane::{Mode, Via};
    let other = Ipv4Addr::new(198, 18, 2, 11);
    let backends = [ready(REMOTE_POD, 8080, false), ready(other, 8080, false)];
    let mut sticky = frontend(
        FrontendKind::NodePort,
        "sticky",
        (NODE, 30081),
        Protocol::TCP,
        &backends,
    );
    sticky.affinity_timeout_seconds = Some(60);
    let mut datapath = load_with(&[node_port(&backends), sticky]);
    let client = |port| SocketAddrV4::new(CLIENT, port);
    let web = SocketAddrV4::new(NODE, 30080);

    let fresh = datapath.tables().lookup(Protocol::TCP, client(40000), web);
    let fresh = fresh.unwrap().expect("a frontend");
    assert_eq!(
        (fresh.via, fresh.backend, fresh.mode),
        (Via::Random, None, None)
    );
    let both = [
        SocketAddrV4::new(REMOTE_POD, 8080),
        SocketAddrV4::new(other, 8080),
    ];
    assert_eq!(fresh.candidates, both);

    let (_, out) = world(
        &mut datapath,
        &tcp_frame((CLIENT, 40000), (NODE, 30080), 1, SYN, b""),
    );
    let chosen = SocketAddrV4::new(endpoints(&out).1.0, endpoints(&out).1.1);
    let tracked = datapath.tables().lookup(Protocol::TCP, client(40000), web);
    let tracked = tracked.unwrap().unwrap();
    assert_eq!(tracked.via, Via::Conntrack);
    assert_eq!(tracked.backend, Some(chosen));
    assert_eq!(tracked.mode, Some(Mode::Snat));
    assert_eq!(tracked.frontend, fresh.frontend);

    let (_, out) = world(
        &mut datapath,
        &tcp_frame((CLIENT, 40001), (NODE, 30081), 1, SYN, b""),
    );
    let remembered = SocketAddrV4::new(endpoints(&out).1.0, endpoints(&out).1.1);
    let sticky = SocketAddrV4::new(NODE, 30081);
    let next = datapath
        .tables()
        .lookup(Protocol::TCP, client(40002), sticky);
    let next = next.unwrap().unwrap();
    assert_eq!((next.via, next.backend), (Via::Affinity, Some(remembered)));

    let nothing = SocketAddrV4::new(NODE, 30099);
    let answer = datapath
        .tables()
        .lookup(Protocol::TCP, client(40000), nothing);
    assert_eq!(answer.unwrap(), None);
    let udp = datapath.tables().lookup(Protocol::UDP, client(40000), web);
    assert_eq!(udp.unwrap(), None, "the NodePort is TCP");
}

/// UDP NodePort 30053 in front of a pod on another node.
fn remote_dns() -> Frontend {
    frontend(
        FrontendKind::NodePort,
        "dns",
        (NODE, 30053),
        Protocol::UDP,
        &[ready(REMOTE_POD, 5353, false)],
    )
}

/// TCP ClusterIP:80 in front of a pod on another node.
fn remote_web() -> Frontend {
    frontend(
        FrontendKind::ClusterIP,
        "web",
        (CLUSTER_IP, 80),
        Protocol::TCP,
        &[ready(REMOTE_POD, 8080, false)],
    )
}

/// Path MTU discovery: a datagram that may not be fragmented and does not
/// fit the route to its (SNATed) backend is answered with ICMP
/// fragmentation needed and the route's MTU, from the NodePort, quoting the
/// datagram as the client sent it; one that fits is not answered.
#[test]
fn too_big_for_the_route_is_answered_with_fragmentation_needed() {
    let ns = routed_namespace("pmtu", 1400);
    let dns = remote_dns();
    let datagram = |payload: usize| {
        dont_fragment(udp_frame(
            (CLIENT, 40000),
            (NODE, 30053),
            &vec![7u8; payload],
        ))
    };
    let too_big = datagram(1400 - 28 + 1);
    let fits = datagram(1400 - 28);
    let (input_too_big, input_fits) = (too_big.clone(), fits.clone());
    let (answer, passed, fragmentation_needed) = ns
        .in_thread(move || {
            let mut datapath = load_with(&[dns]);
            let answer = world(&mut datapath, &input_too_big);
            let passed = world(&mut datapath, &input_fits);
            (
                answer,
                passed,
                datapath_drops(&mut datapath, "fragmentation_needed"),
            )
        })
        .unwrap();

    let (verdict, out) = answer;
    assert_eq!(verdict, XDP_TX);
    assert_eq!(out, fragmentation_needed_answer(&too_big, 1400));
    assert!(icmp_checksum_ok(&out));
    assert_eq!(fragmentation_needed, 1);
    // The next hop is not resolved in this namespace: XDP leaves the
    // datagram that fits untouched, to the TC program.
    assert_eq!(passed, (XDP_PASS, fits));
}

/// A GSO packet (TSO from a pod, or merged by GRO) leaves as segments: it
/// is checked against the route's MTU by its segment size, not by its
/// total length, so one whose segments fit goes through and one whose
/// segments do not is answered with the MTU.
#[test]
fn gso_packets_are_checked_against_the_path_mtu_by_segment() {
    let ns = routed_namespace("gso", 1400);
    let web = remote_web();
    // 2 000 bytes of IP packet, Don't Fragment: bigger than the MTU whole.
    let frame = dont_fragment(tcp_frame(
        (LOCAL_POD, 40000),
        (CLUSTER_IP, 80),
        1,
        SYN,
        &[7u8; 1960],
    ));
    let input = frame.clone();
    let (fits, too_big) = ns
        .in_thread(move || {
            let mut datapath = load_with(&[web]);
            let program = datapath.from_pod_program().unwrap();
            // 20 + 20 + 1 360 = 1 400 bytes per segment: fits.
            let fits = run_tc_gso(program, &input, 1360);
            // 1 401 bytes per segment: does not.
            let too_big = run_tc_gso(program, &input, 1361);
            (fits, too_big)
        })
        .unwrap();
    assert_eq!(fits.0, TC_ACT_OK);
    assert_eq!(fits.1, rewritten(&frame, true, REMOTE_POD, 8080));
    assert_eq!(too_big.0, TC_ACT_REDIRECT, "bounced to the pod");
    assert_eq!(too_big.1, fragmentation_needed_answer(&frame, 1400));
}

/// Traceroute through a Service: a packet arriving with TTL 1 that the
/// node would forward after translating it is answered with ICMP time
/// exceeded from the address it was sent to, quoting it as its sender sent
/// it, whether the program routes it (a NodePort to another node's pod,
/// XDP) or the stack would (a pod to a ClusterIP, TC). With TTL 2 it goes.
#[test]
fn an_expiring_ttl_is_answered_with_time_exceeded() {
    let ns = routed_namespace("ttl", 1400);
    // The next hop resolved, so XDP routes the NodePort's packets itself.
    resolve_next_hop(&ns);
    let dns = remote_dns();
    let web = remote_web();
    let query = |ttl| with_ttl(udp_frame((CLIENT, 40000), (NODE, 30053), b"query"), ttl);
    let syn = with_ttl(
        tcp_frame((LOCAL_POD, 40000), (CLUSTER_IP, 80), 1, SYN, b""),
        1,
    );
    let (expiring, lasting, from_pod) = (query(1), query(2), syn.clone());
    let (world_expiring, world_lasting, pod_expiring, time_exceeded, flows) = ns
        .in_thread(move || {
            let mut datapath = load_with(&[dns, web]);
            let world_expiring = world(&mut datapath, &expiring);
            let flows = datapath.tables().flows().unwrap().len();
            let world_lasting = world(&mut datapath, &lasting);
            let pod_expiring = run_tc_in_namespace(datapath.from_pod_program().unwrap(), &from_pod);
            let time_exceeded = datapath_drops(&mut datapath, "time_exceeded");
            (
                world_expiring,
                world_lasting,
                pod_expiring,
                time_exceeded,
                flows,
            )
        })
        .unwrap();

    assert_eq!(world_expiring, (XDP_TX, time_exceeded_answer(&query(1))));
    assert!(icmp_checksum_ok(&world_expiring.1));
    assert_eq!(flows, 0, "answered before any state is made");
    let (verdict, out) = world_lasting;
    assert_eq!(verdict, XDP_REDIRECT, "routed by the program");
    assert_eq!(out[offsets::IP + 8], 1, "TTL decremented");
    assert_eq!(
        endpoints(&out).1,
        (REMOTE_POD, 5353),
        "the lasting packet is translated"
    );
    assert_eq!(pod_expiring, (TC_ACT_REDIRECT, time_exceeded_answer(&syn)));
    assert_eq!(time_exceeded, 2);
}
