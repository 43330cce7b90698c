//! The per-CPU flow cache in front of conntrack (svc-ebpf's cache.rs),
//! through BPF_PROG_TEST_RUN. A test run executes on the calling thread's
//! CPU, so the packets of one test share a cache.
//!
//! Whether a packet took the cache is seen by removing the flow's
//! conntrack entries behind the programs' back (no change of the tables
//! generation): the conntrack path would treat the next packet as a new
//! flow and write two entries again, the cache rewrites it and writes none.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::Ipv4Addr;

use svc_agent::model::{Frontend, FrontendKind, Protocol};
use tests::{pinned::Pinned, *};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const POD: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const OTHER_BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 12);
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
const LB_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 1);
const ACK: TcpFlags = TcpFlags {
    syn: false,
    ack: Some(1),
    rst: false,
    psh: false,
    fin: false,
};

fn web() -> Frontend {
    cluster_ip("web", CLUSTER_IP, 80, Protocol::TCP, &[(BACKEND, 8080)])
}

/// A pod's connection from `port` to web's ClusterIP, through its
/// handshake: only an established flow is cached, and its last ACK is the
/// first packet that fills the cache.
fn open(pinned: &mut Pinned, port: u16) {
    let syn = tcp_frame((POD, port), (CLUSTER_IP, 80), 1, SYN, b"");
    assert_eq!(pinned.pod(&syn), rewritten(&syn, true, BACKEND, 8080));
    let syn_ack_flags = TcpFlags { syn: true, ..ACK };
    let syn_ack = tcp_frame((BACKEND, 8080), (POD, port), 9, syn_ack_flags, b"");
    assert_eq!(
        pinned.pod(&syn_ack),
        rewritten(&syn_ack, false, CLUSTER_IP, 80)
    );
    let ack = tcp_frame((POD, port), (CLUSTER_IP, 80), 2, ACK, b"");
    assert_eq!(pinned.pod(&ack), rewritten(&ack, true, BACKEND, 8080));
    assert_eq!(pinned.flows(), 2);
}

#[test]
fn established_tcp_from_a_pod_is_rewritten_from_the_cache() {
    let mut pinned = Pinned::load("flow-cache", &[web()], None);
    open(&mut pinned, 40000);
    pinned.forget_flows_behind_its_back();

    let data = tcp_frame(
        (POD, 40000),
        (CLUSTER_IP, 80),
        2,
        ACK,
        b"GET / HTTP/1.1\r\n\r\n",
    );
    let out = pinned.pod(&data);
    assert_eq!(out, rewritten(&data, true, BACKEND, 8080));
    assert_eq!(verify_checksums(&out), Ok(()));
    assert_eq!(
        pinned.flows(),
        0,
        "a cached packet makes no conntrack entry"
    );
    let web = pinned.datapath.tables().read().unwrap();
    // SYN and ACK by the conntrack path, the data from the cache.
    assert_eq!(web[0].packets, 3, "cached packets are counted too");

    // A SYN may open the flow anew: it takes the conntrack path.
    let syn = tcp_frame((POD, 40000), (CLUSTER_IP, 80), 1, SYN, b"");
    let out = pinned.pod(&syn);
    assert_eq!(out, rewritten(&syn, true, BACKEND, 8080));
    assert_eq!(pinned.flows(), 2, "a SYN is not served from the cache");
}

/// Opens a flow from `port` (its last ACK fills the cache), removes its
/// conntrack entries behind the programs' back and sends `packet` of that
/// flow: translated all the same, but by the conntrack path, which makes
/// the entries again (`why` says why it must not take the cache).
fn assert_takes_the_conntrack_path(port: u16, packet: &[u8], why: &str) {
    let mut pinned = Pinned::load("flow-cache", &[web()], None);
    open(&mut pinned, port);
    pinned.forget_flows_behind_its_back();
    assert_eq!(pinned.pod(packet), rewritten(packet, true, BACKEND, 8080));
    assert_eq!(pinned.flows(), 2, "{why}");
}

#[test]
fn a_reset_takes_the_conntrack_path() {
    let flags = TcpFlags { rst: true, ..ACK };
    let rst = tcp_frame((POD, 40001), (CLUSTER_IP, 80), 2, flags, b"");
    assert_takes_the_conntrack_path(
        40001,
        &rst,
        "a reset changes the flow's state: the cache must not take it",
    );
}

#[test]
fn a_packet_at_its_last_hop_takes_the_conntrack_path() {
    // TTL 1: the conntrack path decides whether it is answered with time
    // exceeded (here no route forwards it, so it is translated and passed).
    let last_hop = with_ttl(tcp_frame((POD, 40003), (CLUSTER_IP, 80), 2, ACK, b""), 1);
    assert_takes_the_conntrack_path(
        40003,
        &last_hop,
        "a packet that may need an ICMP answer must not be served from the cache",
    );
}

/// A client port used again at once opens a connection that may go to
/// another backend: the earlier connection's cached slot must not take its
/// packets there (its handshake's last ACK would reach a backend that
/// never saw its SYN, and be answered with a reset).
#[test]
fn a_connection_opened_again_on_a_tuple_does_not_take_the_earlier_ones_slot() {
    let two = cluster_ip(
        "web",
        CLUSTER_IP,
        80,
        Protocol::TCP,
        &[(BACKEND, 8080), (OTHER_BACKEND, 8080)],
    );
    let mut pinned = Pinned::load("flow-cache", &[two], None);
    let client = (POD, 40005);
    // SYN, SYN-ACK, ACK (which fills the slot): the backend chosen.
    let handshake = |pinned: &mut Pinned| -> Ipv4Addr {
        let syn = tcp_frame(client, (CLUSTER_IP, 80), 1, SYN, b"");
        let backend = endpoints(&pinned.pod(&syn)).1.0;
        let syn_ack_flags = TcpFlags { syn: true, ..ACK };
        pinned.pod(&tcp_frame((backend, 8080), client, 9, syn_ack_flags, b""));
        let ack = tcp_frame(client, (CLUSTER_IP, 80), 2, ACK, b"");
        assert_eq!(
            endpoints(&pinned.pod(&ack)).1,
            (backend, 8080),
            "the handshake's last ACK went to another backend than its SYN"
        );
        backend
    };
    let first = handshake(&mut pinned);
    // Closed and opened again until a new connection picks the other
    // backend (one in two does).
    let fin_flags = TcpFlags { fin: true, ..ACK };
    let switched = (0..64).any(|_| {
        pinned.pod(&tcp_frame(client, (CLUSTER_IP, 80), 2, fin_flags, b""));
        handshake(&mut pinned) != first
    });
    assert!(switched, "64 connections all went to {first}");
}

#[test]
fn replies_are_reverse_translated_from_the_cache() {
    let mut pinned = Pinned::load("flow-cache", &[web()], None);
    open(&mut pinned, 40002);
    let reply = |seq| tcp_frame((BACKEND, 8080), (POD, 40002), seq, ACK, b"HTTP/1.1 200 OK");
    let first = reply(10);
    assert_eq!(pinned.pod(&first), rewritten(&first, false, CLUSTER_IP, 80));
    pinned.forget_flows_behind_its_back();

    let second = reply(25);
    let out = pinned.pod(&second);
    assert_eq!(out, rewritten(&second, false, CLUSTER_IP, 80));
    assert_eq!(verify_checksums(&out), Ok(()));
    assert_eq!(pinned.flows(), 0);
}

#[test]
fn established_udp_from_the_network_is_rewritten_from_the_cache() {
    let dns = frontend(
        FrontendKind::LoadBalancer,
        "dns",
        (LB_IP, 53),
        Protocol::UDP,
        &[ready(BACKEND, 5353, true)],
    );
    let mut pinned = Pinned::load("flow-cache", &[dns], None);
    let query = |payload: &[u8]| udp_frame((CLIENT, 5000), (LB_IP, 53), payload);
    let first = query(b"first");
    assert_eq!(pinned.world(&first), rewritten(&first, true, BACKEND, 5353));
    // The answer establishes the flow; the next query fills the cache.
    let answer = udp_frame((BACKEND, 5353), (CLIENT, 5000), b"answer");
    assert_eq!(pinned.pod(&answer), rewritten(&answer, false, LB_IP, 53));
    assert_eq!(pinned.world(&first), rewritten(&first, true, BACKEND, 5353));
    pinned.forget_flows_behind_its_back();

    let second = query(b"second");
    let out = pinned.world(&second);
    assert_eq!(out, rewritten(&second, true, BACKEND, 5353));
    assert_eq!(verify_checksums(&out), Ok(()));
    assert_eq!(
        pinned.flows(),
        0,
        "a cached packet makes no conntrack entry"
    );

    // No checksum (zero) stays none.
    let mut unchecked = query(b"third");
    let csum = offsets::IP + ihl(&unchecked) + 6;
    unchecked[csum..csum + 2].fill(0);
    let mut expected = rewritten(&unchecked, true, BACKEND, 5353);
    expected[csum..csum + 2].fill(0);
    assert_eq!(pinned.world(&unchecked), expected);
    assert_eq!(pinned.flows(), 0);
}

/// The agent raises the tables generation after a change, which retires
/// every cached flow: a datagram flow whose backend left picks a live one.
#[test]
fn a_change_to_the_tables_retires_cached_flows() {
    let dns = |backend| cluster_ip("dns", CLUSTER_IP, 53, Protocol::UDP, &[(backend, 5353)]);
    let mut pinned = Pinned::load("flow-cache", &[dns(BACKEND)], None);
    let query = udp_frame((POD, 5000), (CLUSTER_IP, 53), b"query");
    assert_eq!(pinned.pod(&query), rewritten(&query, true, BACKEND, 5353));
    let answer = udp_frame((BACKEND, 5353), (POD, 5000), b"answer");
    assert_eq!(
        pinned.pod(&answer),
        rewritten(&answer, false, CLUSTER_IP, 53)
    );
    // Established: this one fills the cache.
    assert_eq!(pinned.pod(&query), rewritten(&query, true, BACKEND, 5353));

    pinned
        .datapath
        .tables()
        .apply(&[dns(OTHER_BACKEND)])
        .unwrap();
    assert_eq!(
        pinned.pod(&query),
        rewritten(&query, true, OTHER_BACKEND, 5353),
        "a flow cached before the change still went to the removed backend"
    );
}
