//! Conntrack's lifecycle through BPF_PROG_TEST_RUN (svc-ebpf's ct.rs): new
//! flows in a table of their own, established ones kept from floods, NAT
//! ports given back when flows close or expire, both entries of a flow
//! living and dying together, and the agent's collector. Time passing is
//! played by moving entries' last-seen stamps back (the programs and the
//! collector compare them with the kernel's clock), so no test sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{net::Ipv4Addr, time::Instant};

use svc_agent::{
    dataplane::{Conntrack, NodeSettings, coarse_now_ns},
    model::{Frontend, FrontendKind, Protocol},
};
use svc_common::{CollectMark, FlowKey, flow_flags, flow_timeouts};
use tests::{
    pinned::{Pinned, Table},
    *,
};

const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 10);
const OTHER_BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 11);
const SECOND: u64 = 1_000_000_000;

fn config(nat_ports: (u16, u16)) -> NodeSettings {
    NodeSettings {
        node_address: NODE,
        hairpin_address: Ipv4Addr::new(198, 18, 1, 1),
        nat_ports,
        service_cidrs: Vec::new(),
        lb_mode: svc_agent::model::LbMode::Snat,
    }
}

/// NodePort 30080 (TCP) or 30053 (UDP) with remote backends: every flow
/// from the network is source-NATed to the node.
fn node_port(protocol: Protocol, backends: &[Ipv4Addr]) -> Frontend {
    let port = if protocol == Protocol::TCP {
        30080
    } else {
        30053
    };
    let backends: Vec<_> = backends.iter().map(|b| ready(*b, 8080, false)).collect();
    frontend(
        FrontendKind::NodePort,
        "web",
        (NODE, port),
        protocol,
        &backends,
    )
}

fn load(nat_ports: (u16, u16), frontends: &[Frontend]) -> Pinned {
    Pinned::load("conntrack", frontends, Some(config(nat_ports)))
}

fn ack(ack: u32) -> TcpFlags {
    TcpFlags {
        ack: Some(ack),
        ..TcpFlags::default()
    }
}

/// A client's TCP connection through the NodePort, as the backend sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Connection {
    client: (Ipv4Addr, u16),
    backend: Ipv4Addr,
    nat_port: u16,
}

/// A SYN from `client`: the connection it became, or the verdict of a
/// packet that was not translated.
fn connect(pinned: &mut Pinned, client: (Ipv4Addr, u16)) -> Result<Connection, u32> {
    let syn = tcp_frame(client, (NODE, 30080), 1, SYN, b"");
    let (verdict, out) = pinned.world_verdict(&syn);
    if verdict != XDP_PASS {
        return Err(verdict);
    }
    let ((source, nat_port), (backend, backend_port)) = endpoints(&out);
    assert_eq!((source, backend_port), (NODE, 8080));
    Ok(Connection {
        client,
        backend,
        nat_port,
    })
}

/// The backend's segment to the connection's NAT port must reach the
/// client from the NodePort.
fn reply(pinned: &mut Pinned, connection: &Connection, flags: TcpFlags) {
    let segment = tcp_frame(
        (connection.backend, 8080),
        (NODE, connection.nat_port),
        9,
        flags,
        b"",
    );
    let out = pinned.world(&segment);
    assert_eq!(
        endpoints(&out),
        ((NODE, 30080), connection.client),
        "a reply to NAT port {} went astray",
        connection.nat_port
    );
}

/// The client's segment must reach the connection's backend from its NAT
/// port.
fn send(pinned: &mut Pinned, connection: &Connection, flags: TcpFlags) {
    let segment = tcp_frame(connection.client, (NODE, 30080), 2, flags, b"");
    let out = pinned.world(&segment);
    assert_eq!(
        endpoints(&out),
        ((NODE, connection.nat_port), (connection.backend, 8080)),
        "{connection:?} lost its backend or NAT port"
    );
}

/// SYN, SYN-ACK, ACK.
fn establish(pinned: &mut Pinned, client: (Ipv4Addr, u16)) -> Connection {
    let connection = connect(pinned, client).unwrap();
    reply(
        pinned,
        &connection,
        TcpFlags {
            syn: true,
            ..ack(2)
        },
    );
    send(pinned, &connection, ack(10));
    connection
}

/// FIN both ways, and the last ACK.
fn close(pinned: &mut Pinned, connection: &Connection) {
    let fin = TcpFlags {
        fin: true,
        ..ack(10)
    };
    send(pinned, connection, fin);
    reply(pinned, connection, fin);
    send(pinned, connection, ack(11));
}

fn drops(pinned: &mut Pinned, reason: &str) -> u64 {
    let counters = pinned.datapath.tables().drop_counters().unwrap();
    counters
        .iter()
        .find(|c| c.reason == reason)
        .unwrap()
        .packets
}

/// A SYN from `client` finds every NAT port held: it is dropped and
/// counted as `nat_ports_exhausted`.
fn refused_for_want_of_a_port(pinned: &mut Pinned, client: (Ipv4Addr, u16), why: &str) {
    let exhausted = drops(pinned, "nat_ports_exhausted");
    assert_eq!(connect(pinned, client), Err(XDP_DROP), "{why}");
    assert_eq!(drops(pinned, "nat_ports_exhausted"), exhausted + 1, "{why}");
}

/// A source for the `n`th spoofed packet: addresses all over 198.18/15.
fn spoofed(n: u32) -> (Ipv4Addr, u16) {
    let mixed = n.wrapping_mul(2_654_435_761);
    let host = 0xC612_0000 | (mixed & 0x0001_FFFF);
    (Ipv4Addr::from(host), 1024 + (mixed >> 17) as u16 % 60000)
}

#[test]
fn a_flow_is_new_until_its_handshake_completes_then_established() {
    let mut pinned = load((61000, 61031), &[node_port(Protocol::TCP, &[BACKEND])]);
    let connection = connect(&mut pinned, (CLIENT, 40000)).unwrap();
    assert_eq!(pinned.entries(Table::New).len(), 2);
    assert!(pinned.entries(Table::Established).is_empty());

    reply(
        &mut pinned,
        &connection,
        TcpFlags {
            syn: true,
            ..ack(2)
        },
    );
    let answered = pinned.entries(Table::New);
    assert_eq!(answered.len(), 2, "a SYN-ACK alone establishes nothing");
    assert!(
        answered
            .iter()
            .all(|(_, flow)| flow.flags & flow_flags::SEEN_REPLY != 0),
        "both entries know the flow was answered: {answered:?}"
    );

    send(&mut pinned, &connection, ack(10));
    assert!(pinned.entries(Table::New).is_empty());
    let established = pinned.entries(Table::Established);
    assert_eq!(established.len(), 2);
    assert!(
        established
            .iter()
            .all(|(_, flow)| flow.nat_port_be == connection.nat_port.to_be()
                || flow.nat_addr_be == u32::from_ne_bytes(CLIENT.octets()))
    );
}

/// 32 NAT ports; each round opens and closes 32 connections and finds
/// every port held at once (a 33rd connection is refused). 11 s later
/// (within the closing timeout after FINs, 65 s), the next round's 32 all
/// get ports: with the range full, each takes the port of a closing flow
/// quiet for 5 s or more.
#[test]
fn closed_connections_give_their_nat_ports_to_new_ones_within_15_s() {
    let mut pinned = load((61000, 61031), &[node_port(Protocol::TCP, &[BACKEND])]);
    let mut client_port = 40000;
    for round in 0..5 {
        let mut ports = std::collections::BTreeSet::new();
        for _ in 0..32 {
            client_port += 1;
            let connection = establish(&mut pinned, (CLIENT, client_port));
            assert!(
                (61000..=61031).contains(&connection.nat_port),
                "{connection:?}"
            );
            assert!(
                ports.insert(connection.nat_port),
                "round {round}: {connection:?}"
            );
            close(&mut pinned, &connection);
        }
        refused_for_want_of_a_port(
            &mut pinned,
            (CLIENT, 39999),
            &format!("round {round}: a port of a closing flow was handed out again"),
        );
        // The round's flows (the earlier rounds' forward entries, whose
        // ports were taken, linger until their next packet or timeout).
        let now = coarse_now_ns();
        let closing = pinned.age(
            Table::Established,
            flow_timeouts::TCP_RESET_NS + SECOND,
            |_, flow| {
                flow.flags & flow_flags::CLOSING != 0
                    && now.saturating_sub(flow.last_seen_ns) < SECOND
            },
        );
        assert_eq!(closing, 64, "round {round}: both entries of 32 flows close");
    }
}

/// A flow ended by a RST gives its NAT port back after 10 s; one ended by
/// FINs holds it until the backend's TIME_WAIT (60 s) is over, or a new
/// flow meeting it there would be answered with an ACK for the old one.
/// When every port is held, a closing flow's is taken rather than none.
#[test]
fn a_port_closed_by_fins_outlives_time_wait_one_closed_by_a_reset_does_not() {
    let mut pinned = load((61000, 61001), &[node_port(Protocol::TCP, &[BACKEND])]);
    let by_fin = establish(&mut pinned, (CLIENT, 40000));
    close(&mut pinned, &by_fin);
    let by_reset = establish(&mut pinned, (CLIENT, 40001));
    send(
        &mut pinned,
        &by_reset,
        TcpFlags {
            rst: true,
            ..TcpFlags::default()
        },
    );
    refused_for_want_of_a_port(
        &mut pinned,
        (CLIENT, 40002),
        "a port of a flow closed this instant was handed out",
    );
    // 11 s on: only the reset flow's port is free again.
    pinned.age(
        Table::Established,
        flow_timeouts::TCP_RESET_NS + SECOND,
        |_, _| true,
    );
    let after_reset = establish(&mut pinned, (CLIENT, 40003));
    assert_eq!(after_reset.nat_port, by_reset.nat_port);
    // The FIN-closed flow still holds its port: the next connection takes
    // it only because the range is full, and the FIN-closed flow's late
    // segments are no longer translated with it.
    let taken = establish(&mut pinned, (CLIENT, 40004));
    assert_eq!(taken.nat_port, by_fin.nat_port);
    let late_ack = tcp_frame(by_fin.client, (NODE, 30080), 3, ack(11), b"");
    let (_, out) = pinned.world_verdict(&late_ack);
    assert_ne!(
        endpoints(&out).0,
        (NODE, by_fin.nat_port),
        "the closed flow sent with a port another flow holds"
    );
    // Both new flows keep their ports and backends.
    send(&mut pinned, &after_reset, ack(20));
    reply(&mut pinned, &taken, ack(30));
}

/// A client opening its port again towards the NodePort while its old,
/// closing flow's NAT port serves another connection: the old flow goes,
/// and the other connection's reply entry, which has the key the old
/// flow's had, stays.
#[test]
fn a_reopened_tuple_leaves_the_reply_entry_of_the_flow_that_took_its_port() {
    let mut pinned = load((61000, 61000), &[node_port(Protocol::TCP, &[BACKEND])]);
    let closed = establish(&mut pinned, (CLIENT, 40000));
    close(&mut pinned, &closed);
    // Quiet for 6 s: its port, the only one, goes to a new connection.
    pinned.age(Table::Established, 6 * SECOND, |_, _| true);
    let taker = establish(&mut pinned, (CLIENT, 40001));
    assert_eq!(taker.nat_port, closed.nat_port);
    refused_for_want_of_a_port(
        &mut pinned,
        (CLIENT, 40000),
        "the reopened flow took the port of a live connection",
    );
    reply(&mut pinned, &taker, ack(30));
    send(&mut pinned, &taker, ack(31));
}

/// A connection the backend has half closed may still be sending (the
/// rest of a request, a retransmission after a loss under a flood): its
/// NAT port is not taken while its packets pass, however old the
/// connection is, only once it has been quiet a few seconds.
#[test]
fn a_closing_connection_still_talking_keeps_its_nat_port() {
    let mut pinned = load((61000, 61000), &[node_port(Protocol::TCP, &[BACKEND])]);
    let talking = establish(&mut pinned, (CLIENT, 40000));
    // A connection that took a while (its SYN was retried)...
    pinned.age(Table::Established, 2 * SECOND, |_, _| true);
    // ...and the backend's FIN.
    reply(
        &mut pinned,
        &talking,
        TcpFlags {
            fin: true,
            ..ack(10)
        },
    );
    refused_for_want_of_a_port(
        &mut pinned,
        (CLIENT, 40001),
        "the port of a connection closing this instant was taken",
    );
    send(&mut pinned, &talking, ack(11));
    // Quiet for 6 s: now its port goes to a new connection.
    pinned.age(Table::Established, 6 * SECOND, |_, _| true);
    let next = establish(&mut pinned, (CLIENT, 40002));
    assert_eq!(next.nat_port, talking.nat_port);
}

/// An external client may use one source port towards two addresses of a
/// Service (its NodePort and its LB IP): with a local backend and no
/// source NAT, both would reach the pod on one tuple, and the second would
/// take the first's replies. The second gets the hairpin source instead;
/// each keeps its own replies.
#[test]
fn an_external_clients_port_in_use_towards_a_pod_gets_the_hairpin_source() {
    const LB: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 1);
    const HAIRPIN: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
    let local = [ready(BACKEND, 8080, true)];
    let mut pinned = load(
        (61000, 61031),
        &[
            frontend(
                FrontendKind::NodePort,
                "web",
                (NODE, 30080),
                Protocol::TCP,
                &local,
            ),
            frontend(
                FrontendKind::LoadBalancer,
                "web",
                (LB, 80),
                Protocol::TCP,
                &local,
            ),
        ],
    );
    let client = (CLIENT, 40000);
    let to_node_port = pinned.world(&tcp_frame(client, (NODE, 30080), 1, SYN, b""));
    assert_eq!(endpoints(&to_node_port), (client, (BACKEND, 8080)));
    let to_lb = pinned.world(&tcp_frame(client, (LB, 80), 1, SYN, b""));
    let ((source, nat_port), backend) = endpoints(&to_lb);
    assert_eq!((source, backend), (HAIRPIN, (BACKEND, 8080)), "{to_lb:?}");
    let syn_ack = TcpFlags {
        syn: true,
        ..ack(2)
    };
    let first = pinned.pod(&tcp_frame((BACKEND, 8080), client, 9, syn_ack, b""));
    assert_eq!(endpoints(&first), ((NODE, 30080), client));
    let second = pinned.pod(&tcp_frame(
        (BACKEND, 8080),
        (HAIRPIN, nat_port),
        9,
        syn_ack,
        b"",
    ));
    assert_eq!(endpoints(&second), ((LB, 80), client));
    // The handshake's last ACK and what follows keep their translation.
    for seq in [2, 3] {
        let (verdict, out) = pinned.world_verdict(&tcp_frame(client, (LB, 80), seq, ack(10), b""));
        assert_eq!(
            (verdict, endpoints(&out)),
            (XDP_PASS, ((HAIRPIN, nat_port), (BACKEND, 8080)))
        );
    }
}

/// A pod using one source port towards two ClusterIPs of one backend gets
/// the second dropped (`tuple_clash`), as netfilter drops a clash; the
/// first keeps its replies.
#[test]
fn a_pods_port_in_use_towards_a_backend_is_a_clash() {
    const POD: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 20);
    let (first_ip, second_ip) = (Ipv4Addr::new(198, 19, 0, 1), Ipv4Addr::new(198, 19, 0, 2));
    let backend = [ready(BACKEND, 8080, false)];
    let mut pinned = load(
        (61000, 61031),
        &[
            frontend(
                FrontendKind::ClusterIP,
                "a",
                (first_ip, 80),
                Protocol::TCP,
                &backend,
            ),
            frontend(
                FrontendKind::ClusterIP,
                "b",
                (second_ip, 80),
                Protocol::TCP,
                &backend,
            ),
        ],
    );
    let pod = (POD, 40000);
    let first = pinned.pod(&tcp_frame(pod, (first_ip, 80), 1, SYN, b""));
    assert_eq!(endpoints(&first), (pod, (BACKEND, 8080)));
    let (verdict, _) = pinned.pod_verdict(&tcp_frame(pod, (second_ip, 80), 1, SYN, b""));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(drops(&mut pinned, "tuple_clash"), 1);
    let syn_ack = TcpFlags {
        syn: true,
        ..ack(2)
    };
    let reply = pinned.world(&tcp_frame((BACKEND, 8080), pod, 9, syn_ack, b""));
    assert_eq!(endpoints(&reply), ((first_ip, 80), pod));
}

/// A client port used again within the closing timeout opens a new flow:
/// not one that stays closing, to be forgotten 10 s into its first idle
/// spell.
#[test]
fn a_connection_opened_again_on_a_closing_tuple_is_a_new_flow() {
    let mut pinned = load((61000, 61031), &[node_port(Protocol::TCP, &[BACKEND])]);
    let first = establish(&mut pinned, (CLIENT, 40000));
    close(&mut pinned, &first);
    let closing = |pinned: &Pinned| {
        pinned
            .entries(Table::Established)
            .iter()
            .filter(|(_, flow)| flow.flags & flow_flags::CLOSING != 0)
            .count()
    };
    assert_eq!(closing(&pinned), 2);
    let again = establish(&mut pinned, (CLIENT, 40000));
    assert_eq!(closing(&pinned), 0, "the new connection is not closing");
    send(&mut pinned, &again, ack(20));
    reply(&mut pinned, &again, ack(30));
}

/// Spoofed SYNs take ports from each other, never from an established
/// flow nor from a handshake under way, and leave real clients a port
/// even when they outnumber the range.
#[test]
fn a_spoofed_syn_flood_leaves_nat_ports_for_real_clients() {
    let mut pinned = load((61000, 61031), &[node_port(Protocol::TCP, &[BACKEND])]);
    let before = establish(&mut pinned, (CLIENT, 40000));
    let flood = |pinned: &mut Pinned, range: std::ops::Range<u32>| {
        for n in range {
            let connected = connect(pinned, spoofed(n));
            assert!(matches!(connected, Ok(_) | Err(XDP_DROP)), "{connected:?}");
        }
    };
    flood(&mut pinned, 0..60_000);
    assert!(
        drops(&mut pinned, "nat_ports_exhausted") > 50_000,
        "ports held by flows under 250 ms old are not taken"
    );
    // Established before the flood: still on its backend and port.
    send(&mut pinned, &before, ack(20));
    reply(&mut pinned, &before, ack(30));
    // A real client's SYN now finds every port just taken: dropped, its
    // client retries; a second on, it takes the oldest spoofed flow's.
    assert_eq!(connect(&mut pinned, (CLIENT, 40001)), Err(XDP_DROP));
    pinned.age(Table::New, SECOND, |_, _| true);
    let during = connect(&mut pinned, (CLIENT, 40001)).unwrap();
    assert_ne!(during.nat_port, before.nat_port);
    // Spoofed SYNs while its handshake is under way (a few: the test's
    // own clock must not pass 250 ms meanwhile) take the other old ports,
    // not its young one.
    let exhausted = drops(&mut pinned, "nat_ports_exhausted");
    flood(&mut pinned, 60_000..60_200);
    assert!(drops(&mut pinned, "nat_ports_exhausted") > exhausted + 100);
    reply(
        &mut pinned,
        &during,
        TcpFlags {
            syn: true,
            ..ack(2)
        },
    );
    send(&mut pinned, &during, ack(10));
    // Established, both stay through the next flood.
    flood(&mut pinned, 60_200..120_000);
    for connection in [before, during] {
        send(&mut pinned, &connection, ack(40));
        reply(&mut pinned, &connection, ack(50));
    }
}

/// A handshake slower than a port's hold (a flood keeping the CPUs busy
/// delays the client's last ACK) may see its port go to a spoofed SYN: the
/// ACK, proof of a live client the backend answered on that port, takes
/// it back and establishes the flow there. The backend's answer to the
/// SYN that had taken it (lost on a real network) now reaches the client,
/// as would anything the backend says on that port, while a flow that
/// shows no client (another SYN, a RST) gets no port back.
#[test]
fn a_handshake_slower_than_the_ports_hold_gets_its_port_back_with_its_ack() {
    let mut pinned = load((61000, 61000), &[node_port(Protocol::TCP, &[BACKEND])]);
    let slow = connect(&mut pinned, (CLIENT, 40001)).unwrap();
    let syn_ack = TcpFlags {
        syn: true,
        ..ack(2)
    };
    reply(&mut pinned, &slow, syn_ack);
    pinned.age(Table::New, SECOND, |_, _| true);
    let taker = connect(&mut pinned, spoofed(1)).unwrap();
    assert_eq!(taker.nat_port, slow.nat_port, "the one port, taken");
    // A second slow handshake's SYN retried on the taken port: no port back.
    pinned.age(Table::New, SECOND, |_, _| true);
    let second = connect(&mut pinned, spoofed(2)).unwrap();
    assert_eq!(second.nat_port, slow.nat_port);
    let retried = tcp_frame(spoofed(1), (NODE, 30080), 1, SYN, b"");
    let (verdict, _) = pinned.world_verdict(&retried);
    assert_eq!(verdict, XDP_DROP, "the SYN's port is held by a younger one");

    send(&mut pinned, &slow, ack(10));
    reply(&mut pinned, &slow, ack(20));
    let established = pinned.entries(Table::Established);
    assert_eq!(established.len(), 2, "{established:?}");
    // The flows that had the port find it gone at their next packet: a
    // new flow, with no port left to give.
    let late_ack = tcp_frame(spoofed(2), (NODE, 30080), 2, ack(3), b"");
    let (verdict, _) = pinned.world_verdict(&late_ack);
    assert_eq!(verdict, XDP_DROP, "an established flow's port is not taken");
    send(&mut pinned, &slow, ack(30));
    reply(&mut pinned, &slow, ack(40));
}

/// Whether `table` has an entry whose key `which` picks.
fn holds(pinned: &Pinned, table: Table, which: impl Fn(&FlowKey) -> bool) -> bool {
    pinned.entries(table).iter().any(|(key, _)| which(key))
}

/// The collector takes an expired entry out in one step and puts it back
/// if a packet changed it meanwhile (a new flow on the tuple). Between the
/// two, a segment of that flow finds no entry: it is held back (dropped,
/// counted) while the collector's mark on the key is fresh, and carries on
/// to its own backend once the entry is back; balanced anew, it could
/// have gone to the other backend, which would reset the connection. A
/// mark older than its hold time is ignored. The collector marks the TCP
/// keys it takes.
#[test]
fn a_segment_meeting_the_collector_mid_put_back_waits_for_its_entry() {
    let backends = [BACKEND, OTHER_BACKEND];
    let mut pinned = load((32768, 60999), &[node_port(Protocol::TCP, &backends)]);
    let client = (CLIENT, 40001);
    let connection = connect(&mut pinned, client).unwrap();
    let syn_ack = TcpFlags {
        syn: true,
        ..ack(2)
    };
    reply(&mut pinned, &connection, syn_ack);
    let is_forward = |key: &FlowKey| {
        (
            Ipv4Addr::from(u32::from_be(key.saddr_be)),
            u16::from_be(key.sport_be),
        ) == client
    };
    // The collector's take, as it would happen between its read and its
    // put-back: marked first, then out.
    let mut new_flows = pinned.table(Table::New);
    let (key, entry) = pinned
        .entries(Table::New)
        .into_iter()
        .find(|(key, _)| is_forward(key))
        .expect("the forward entry");
    let now = coarse_now_ns();
    pinned
        .marks()
        .insert(key, CollectMark { marked_ns: now }, 0)
        .unwrap();
    new_flows.remove(&key).unwrap();

    let held = drops(&mut pinned, "ct_being_collected");
    let handshake_ack = tcp_frame(client, (NODE, 30080), 2, ack(10), b"");
    let (verdict, _) = pinned.world_verdict(&handshake_ack);
    assert_eq!(verdict, XDP_DROP, "held back while the entry is out");
    assert_eq!(drops(&mut pinned, "ct_being_collected"), held + 1);
    assert!(
        !holds(&pinned, Table::New, is_forward),
        "no new flow made in its place"
    );
    // The put-back: the segment sent again reaches its own backend, from
    // its own NAT port.
    new_flows.insert(key, entry, 0).unwrap();
    send(&mut pinned, &connection, ack(10));

    // Out again with a mark past its hold time: nothing holds the segment
    // back, it is balanced as a new flow.
    let mut established = pinned.table(Table::Established);
    pinned
        .marks()
        .insert(
            key,
            CollectMark {
                marked_ns: now - 2 * SECOND,
            },
            0,
        )
        .unwrap();
    established.remove(&key).expect("established by its ACK");
    let (verdict, _) = pinned.world_verdict(&tcp_frame(client, (NODE, 30080), 3, ack(10), b""));
    assert_eq!(verdict, XDP_PASS, "an old mark holds nothing back");
    assert_eq!(drops(&mut pinned, "ct_being_collected"), held + 1);

    // The collector marks what it takes.
    let closed = establish(&mut pinned, (CLIENT, 40002));
    close(&mut pinned, &closed);
    let closed_forward = |key: &FlowKey| u16::from_be(key.sport_be) == 40002;
    pinned.age(Table::Established, 100 * SECOND, |key, _| {
        closed_forward(key)
    });
    let before = coarse_now_ns();
    let mut conntrack = Conntrack::open_pinned(&pinned.dir.0).unwrap();
    conntrack.collect(coarse_now_ns()).unwrap();
    assert!(
        !holds(&pinned, Table::Established, closed_forward),
        "the expired flow was collected"
    );
    let marks = pinned.marks();
    let closed_key = marks
        .keys()
        .map(Result::unwrap)
        .find(closed_forward)
        .expect("the collected flow's key marked");
    let mark = marks.get(&closed_key, 0).unwrap();
    assert!(mark.marked_ns >= before, "{mark:?}");
}

/// A flood of new flows many times the size of CT_NEW_V2 (1 000 000
/// spoofed SYNs and ACKs, about 25 s) while 100 established flows idle:
/// all 100 keep their backend and NAT port; the flood's entries are gone
/// once their timeout has run and the collector has passed.
#[test]
fn a_flood_of_new_flows_cannot_evict_established_ones() {
    let backends = [BACKEND, OTHER_BACKEND];
    let mut pinned = load((32768, 60999), &[node_port(Protocol::TCP, &backends)]);
    let established: Vec<Connection> = (0..100)
        .map(|n| establish(&mut pinned, (CLIENT, 20000 + n)))
        .collect();
    for n in 0..1_000_000 {
        let flags = if n % 2 == 0 { SYN } else { ack(1) };
        let segment = tcp_frame(spoofed(n), (NODE, 30080), 1, flags, b"");
        let (verdict, _) = pinned.world_verdict(&segment);
        // Dropped once every NAT port is held by a flow too young to lose it.
        assert!(verdict == XDP_PASS || verdict == XDP_DROP, "{verdict}");
    }
    assert!(
        pinned.entries(Table::New).len() > 1000,
        "the flood made new flows"
    );
    for connection in &established {
        send(&mut pinned, connection, ack(20));
        reply(&mut pinned, connection, ack(30));
    }

    let mut conntrack = Conntrack::open_pinned(&pinned.dir.0).unwrap();
    let census = conntrack.collect(coarse_now_ns()).unwrap();
    assert_eq!(census.established, 200);
    assert_eq!(census.collected, 0, "nothing expired yet");
    let new_entries = census.new;
    assert!(new_entries > 1000, "{census:?}");
    // Rewriting entries of a full LRU table evicts some: not all the
    // entries counted before are there to be collected.
    pinned.age(Table::New, flow_timeouts::NEW_NS + SECOND, |_, _| true);
    let census = conntrack.collect(coarse_now_ns()).unwrap();
    assert!(
        census.collected > new_entries / 2 && census.collected <= new_entries,
        "{census:?}"
    );
    assert_eq!((census.new, census.established), (0, 200));
    assert_eq!(
        census.nat_ports, 100,
        "one reply entry per established flow"
    );
    assert!(pinned.entries(Table::New).is_empty());
}

/// With one NAT port: a UDP flow whose reply entry expired on its own gives
/// the port up, and its next datagram must not leave with the port the
/// next client holds now (whose answers would reach the first client).
#[test]
fn a_udp_flow_whose_reply_entry_expired_does_not_use_a_port_another_holds() {
    let mut pinned = load((61000, 61000), &[node_port(Protocol::UDP, &[BACKEND])]);
    let datagram = |client: (Ipv4Addr, u16)| udp_frame(client, (NODE, 30053), b"query");
    let answer = |pinned: &mut Pinned, to: (Ipv4Addr, u16)| {
        let out = pinned.world(&udp_frame((BACKEND, 8080), (NODE, 61000), b"answer"));
        assert_eq!(endpoints(&out), ((NODE, 30053), to));
    };
    let first = (CLIENT, 5000);
    let second = (Ipv4Addr::new(198, 18, 0, 101), 5000);

    let out = pinned.world(&datagram(first));
    assert_eq!(endpoints(&out), ((NODE, 61000), (BACKEND, 8080)));
    answer(&mut pinned, first);
    let aged = pinned.age(
        Table::Established,
        flow_timeouts::UDP_NS + SECOND,
        |_, flow| flow.flags & flow_flags::REPLY != 0,
    );
    assert_eq!(aged, 1);

    let out = pinned.world(&datagram(second));
    assert_eq!(endpoints(&out), ((NODE, 61000), (BACKEND, 8080)));
    answer(&mut pinned, second);

    let (verdict, _) = pinned.world_verdict(&datagram(first));
    assert_eq!(verdict, XDP_DROP, "the only port is the second client's");
    assert_eq!(drops(&mut pinned, "nat_ports_exhausted"), 1);
    answer(&mut pinned, second);
}

/// A packet of one direction keeps the other direction's entry alive too.
#[test]
fn one_direction_keeps_both_entries_of_a_flow_alive() {
    let mut pinned = load((61000, 61031), &[node_port(Protocol::TCP, &[BACKEND])]);
    let connection = establish(&mut pinned, (CLIENT, 40000));
    pinned.age(Table::Established, 100 * SECOND, |_, _| true);
    let now = coarse_now_ns();
    send(&mut pinned, &connection, ack(20));
    let entries = pinned.entries(Table::Established);
    assert_eq!(entries.len(), 2);
    for (key, flow) in entries {
        assert!(
            flow.last_seen_ns + SECOND >= now,
            "{key:?} was not touched: {} s old",
            now.saturating_sub(flow.last_seen_ns) / SECOND
        );
    }
}

/// Resets (and ICMP errors) come from a per-CPU token bucket: 50 at once,
/// then 1 000 a second per CPU; the rest are dropped and counted.
#[test]
fn answers_to_a_flood_are_rate_limited() {
    let mut pinned = load((61000, 61031), &[node_port(Protocol::TCP, &[])]);
    let started = Instant::now();
    let mut resets = 0u64;
    for n in 0..2_000 {
        let (verdict, _) = pinned.world_verdict(&tcp_frame(spoofed(n), (NODE, 30080), 1, SYN, b""));
        if verdict == XDP_TX {
            resets += 1;
        } else {
            assert_eq!(verdict, XDP_DROP);
        }
    }
    let elapsed_ms = started.elapsed().as_millis() as u64 + 1;
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    assert!(resets >= 50, "the burst is answered: {resets}");
    assert!(
        resets <= cpus * (50 + elapsed_ms),
        "{resets} resets in {elapsed_ms} ms"
    );
    assert_eq!(drops(&mut pinned, "reject_rate_limited"), 2_000 - resets);
    assert_eq!(drops(&mut pinned, "no_backend_reset"), resets);
}

/// The CLOSING flags of an established flow's two entries (forward,
/// reply).
fn closing(pinned: &Pinned) -> Vec<bool> {
    let entries = pinned.entries(Table::Established);
    assert_eq!(entries.len(), 2, "{entries:?}");
    let mut flags: Vec<(u16, bool)> = entries
        .iter()
        .map(|(_, flow)| {
            (
                flow.flags & flow_flags::REPLY,
                flow.flags & flow_flags::CLOSING != 0,
            )
        })
        .collect();
    flags.sort();
    flags.into_iter().map(|(_, closing)| closing).collect()
}

/// A RST whose sequence number is far from the one its direction sends
/// next (a blind spoof, from either side) is forwarded but leaves the
/// established flow's state alone: not cut to the closing timeout. The
/// flow's own RST, at the sequence number its data reached, closes it.
#[test]
fn a_reset_with_a_wrong_sequence_number_leaves_the_flow_alone() {
    let mut pinned = load((61000, 61100), &[node_port(Protocol::TCP, &[BACKEND])]);
    let connection = establish(&mut pinned, (CLIENT, 40000));
    // 1000 bytes from the client (seq 2..1002), 500 back (seq 10..510).
    let data = TcpFlags {
        psh: true,
        ..ack(10)
    };
    let out = pinned.world(&tcp_frame(
        connection.client,
        (NODE, 30080),
        2,
        data,
        &[7; 1000],
    ));
    assert_eq!(endpoints(&out).1, (BACKEND, 8080));
    pinned.world(&tcp_frame(
        (BACKEND, 8080),
        (NODE, connection.nat_port),
        10,
        TcpFlags {
            psh: true,
            ..ack(1002)
        },
        &[8; 500],
    ));
    assert_eq!(closing(&pinned), [false, false]);

    let rst = TcpFlags {
        rst: true,
        ..TcpFlags::default()
    };
    for (from_client, seq) in [
        (true, 1002 + (1 << 30)),
        (false, 510u32.wrapping_sub(1 << 20)),
    ] {
        let frame = if from_client {
            tcp_frame(connection.client, (NODE, 30080), seq, rst, b"")
        } else {
            tcp_frame((BACKEND, 8080), (NODE, connection.nat_port), seq, rst, b"")
        };
        let (verdict, _) = pinned.world_verdict(&frame);
        assert_eq!(verdict, XDP_PASS, "forwarded: the endpoint decides");
        assert_eq!(
            closing(&pinned),
            [false, false],
            "spoofed from the client: {from_client}"
        );
    }
    send(&mut pinned, &connection, ack(510));

    // The client's own RST: at the sequence number its data reached.
    let frame = tcp_frame(connection.client, (NODE, 30080), 1002, rst, b"");
    pinned.world(&frame);
    assert_eq!(closing(&pinned), [true, true]);
}

/// UDP as netfilter times it: one exchange (a query and its answer) is
/// collected once idle past 30 s, giving its NAT port back; a flow still
/// active 2 s after it began is a stream, kept for 120 s.
#[test]
fn a_one_shot_udp_exchange_is_kept_30_s_and_a_stream_120_s() {
    let mut pinned = load((61000, 61100), &[node_port(Protocol::UDP, &[BACKEND])]);
    let exchange = |pinned: &mut Pinned, client: (Ipv4Addr, u16)| -> u16 {
        let out = pinned.world(&udp_frame(client, (NODE, 30053), b"query"));
        let ((_, nat_port), _) = endpoints(&out);
        let answer = pinned.world(&udp_frame((BACKEND, 8080), (NODE, nat_port), b"answer"));
        assert_eq!(endpoints(&answer), ((NODE, 30053), client));
        nat_port
    };
    let one_shot = (CLIENT, 5000);
    let stream = (CLIENT, 5001);
    exchange(&mut pinned, one_shot);
    let stream_port = exchange(&mut pinned, stream);
    // The stream's flow began 3 s ago and is still talking.
    let began = pinned.age(Table::Established, 3 * SECOND, |key, _| {
        key.sport_be == stream.1.to_be() || key.dport_be == stream_port.to_be()
    });
    assert_eq!(began, 2);
    assert_eq!(exchange(&mut pinned, stream), stream_port);
    let streams = pinned
        .entries(Table::Established)
        .iter()
        .filter(|(_, flow)| flow.flags & flow_flags::STREAM != 0)
        .count();
    assert_eq!(
        streams, 2,
        "both entries of the stream, none of the exchange"
    );

    // Idle past 30 s: the exchange goes, the stream stays.
    pinned.age(
        Table::Established,
        flow_timeouts::UDP_NS + SECOND,
        |_, _| true,
    );
    let mut conntrack = Conntrack::open_pinned(&pinned.dir.0).unwrap();
    let census = conntrack.collect(coarse_now_ns()).unwrap();
    assert_eq!((census.collected, census.established), (2, 2), "{census:?}");
    // Idle past 120 s: the stream goes too.
    pinned.age(
        Table::Established,
        flow_timeouts::UDP_STREAM_NS - flow_timeouts::UDP_NS,
        |_, _| true,
    );
    let census = conntrack.collect(coarse_now_ns()).unwrap();
    assert_eq!((census.collected, census.established), (2, 0), "{census:?}");
}
