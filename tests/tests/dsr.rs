//! Direct server return in the kernel programs, node by node: the node a
//! client reaches sends its packet, untranslated, inside IPIP to the
//! backend's node (the backend's port in the outer header, a SYN's MSS
//! clamped to what fits); that node takes the header off and delivers the
//! packet to the pod with the client's address; the pod's replies leave
//! from the frontend. Exact headers, independently checked checksums.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::{Ipv4Addr, SocketAddrV4};

use etherparse::{PacketBuilder, TcpOptionElement};
use svc_agent::{
    dataplane::{Datapath, Lookup, Mode, Via},
    model::{BackendRef, Frontend, FrontendKind, LbMode, Protocol},
};
use tests::*;

const NODE_1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const NODE_2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 12);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// A pod of node-2 (its route in [`routed_namespace`] has MTU 1500).
const POD: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 10);
const LB_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 1);

const IPIP: u8 = 4;
const OUTER: usize = 20;

fn lb(protocol: Protocol, backends: &[BackendRef]) -> Frontend {
    frontend(
        FrontendKind::LoadBalancer,
        "web",
        (LB_IP, 80),
        protocol,
        backends,
    )
}

fn node_port(address: Ipv4Addr, backends: &[BackendRef]) -> Frontend {
    frontend(
        FrontendKind::NodePort,
        "web",
        (address, 30080),
        Protocol::TCP,
        backends,
    )
}

/// The pod on node-2, as node-1 (remote) and node-2 (local) know it.
fn pod(local: bool) -> BackendRef {
    ready(POD, 8080, local)
}

/// A client's SYN with an MSS option.
fn syn_with_mss(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), mss: u16) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(POD_MAC, HOST_MAC)
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .tcp(src.1, dst.1, 1, 64240)
        .syn()
        .options(&[
            TcpOptionElement::MaximumSegmentSize(mss),
            TcpOptionElement::SelectiveAcknowledgementPermitted,
        ])
        .unwrap();
    let mut frame = Vec::with_capacity(builder.size(0));
    builder.write(&mut frame, &[]).unwrap();
    frame
}

/// The MSS option's value of a frame's TCP SYN, wherever it is.
fn mss_of(frame: &[u8]) -> Option<u16> {
    let tcp = offsets::IP + ihl(frame);
    let end = tcp + usize::from(frame[tcp + 12] >> 4) * 4;
    let mut at = tcp + 20;
    while at < end {
        match frame[at] {
            0 => return None,
            1 => at += 1,
            2 => return Some(u16::from_be_bytes([frame[at + 2], frame[at + 3]])),
            _ => at += usize::from(frame[at + 1]).max(2),
        }
    }
    None
}

/// What the outer header of an encapsulated frame says.
#[derive(Debug, PartialEq, Eq)]
struct Outer {
    source: Ipv4Addr,
    destination: Ipv4Addr,
    /// The identification field: the backend's port.
    id: u16,
    dont_fragment: bool,
    protocol: u8,
    length: usize,
}

/// The outer header of `frame` (checked: version, length, checksum), and
/// the inner frame (the Ethernet header with the inner packet).
fn decapsulated(frame: &[u8]) -> (Outer, Vec<u8>) {
    let ip = &frame[offsets::IP..offsets::IP + OUTER];
    assert_eq!(ip[0], 0x45, "a plain IPv4 outer header");
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    assert_eq!(folded & 0xffff, 0xffff, "outer header checksum");
    let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    let outer = Outer {
        source: addr(12),
        destination: addr(16),
        id: u16::from_be_bytes([ip[4], ip[5]]),
        dont_fragment: ip[6] & 0x40 != 0,
        protocol: ip[9],
        length: usize::from(u16::from_be_bytes([ip[2], ip[3]])),
    };
    let inner = [&frame[..offsets::IP], &frame[offsets::IP + OUTER..]].concat();
    (outer, inner)
}

fn ttl(frame: &[u8]) -> u8 {
    frame[offsets::IP + 8]
}

fn ack(seq: u32, ack: u32, payload: &[u8], src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<u8> {
    let flags = TcpFlags {
        ack: Some(ack),
        ..TcpFlags::default()
    };
    tcp_frame(src, dst, seq, flags, payload)
}

/// What `svc-agent lookup` says of the client's TCP flow from `port` to
/// the LB IP.
fn looked_up(datapath: &mut Datapath, port: u16) -> Lookup {
    datapath
        .tables()
        .lookup(
            Protocol::TCP,
            SocketAddrV4::new(CLIENT, port),
            SocketAddrV4::new(LB_IP, 80),
        )
        .unwrap()
        .expect("the LB IP is a frontend")
}

/// A whole connection: node-1 tunnels the client's packets to node-2,
/// node-2 delivers them to the pod with the client's address, and the
/// pod's replies leave node-2 from the frontend, straight to the client.
#[test]
fn a_flow_goes_through_the_tunnel_and_its_replies_come_from_the_frontend() {
    let ns = routed_namespace("dsr", 1500);
    resolve_next_hop(&ns);
    ns.in_thread(|| {
        let mut node_1 = node_datapath(NODE_1, LbMode::Dsr, &[lb(Protocol::TCP, &[pod(false)])]);
        // node-2's own mode does not matter for what it takes delivery of.
        let mut node_2 = node_datapath(NODE_2, LbMode::Snat, &[lb(Protocol::TCP, &[pod(true)])]);
        let client = (CLIENT, 40000);

        let syn = syn_with_mss(client, (LB_IP, 80), 1460);
        let (verdict, sent) = run_xdp(node_1.from_world_program().unwrap(), &syn);
        assert_eq!(verdict, XDP_REDIRECT, "sent out of the route's interface");
        assert_eq!(&sent[..6], &NEXT_HOP_MAC, "to the next hop");
        let (outer, inner) = decapsulated(&sent);
        assert_eq!(
            outer,
            Outer {
                source: NODE_1,
                destination: POD,
                id: 8080,
                dont_fragment: true,
                protocol: IPIP,
                length: syn.len() - offsets::IP + OUTER,
            }
        );
        assert_eq!(endpoints(&inner), (client, (LB_IP, 80)), "untranslated");
        assert_eq!(ttl(&inner), 63, "forwarded: one hop less");
        // 1500 less the outer, inner IP and TCP headers.
        assert_eq!(mss_of(&inner), Some(1440), "clamped to fit the tunnel");
        assert_eq!(verify_checksums(&inner), Ok(()));

        let (verdict, delivered) = run_xdp(node_2.from_world_program().unwrap(), &sent);
        assert_eq!(verdict, XDP_PASS, "to the pod, through the stack");
        assert_eq!(endpoints(&delivered), (client, (POD, 8080)));
        assert_eq!(delivered.len(), inner.len());
        assert_eq!(verify_checksums(&delivered), Ok(()));

        let syn_ack = tcp_frame(
            (POD, 8080),
            client,
            9,
            TcpFlags {
                syn: true,
                ack: Some(2),
                ..TcpFlags::default()
            },
            b"",
        );
        let (verdict, reply) = run_tc(node_2.from_pod_program().unwrap(), &syn_ack);
        assert_eq!(verdict, TC_ACT_OK, "to the client through node-2's stack");
        assert_eq!(endpoints(&reply), ((LB_IP, 80), client));
        assert_eq!(verify_checksums(&reply), Ok(()));

        // The handshake's last ACK and data: tunnelled the same way, and
        // the flow is established on node-1 though no reply passed it.
        let data = ack(2, 10, b"GET / HTTP/1.1\r\n\r\n", client, (LB_IP, 80));
        let (verdict, sent) = run_xdp(node_1.from_world_program().unwrap(), &data);
        assert_eq!(verdict, XDP_REDIRECT);
        let (outer, inner) = decapsulated(&sent);
        assert_eq!((outer.destination, outer.id), (POD, 8080));
        assert_eq!(endpoints(&inner), (client, (LB_IP, 80)));
        let looked = looked_up(&mut node_1, 40000);
        assert_eq!(
            (looked.via, looked.backend, looked.mode),
            (
                Via::Conntrack,
                Some(SocketAddrV4::new(POD, 8080)),
                Some(Mode::Dsr)
            )
        );
        let established = node_1.tables().established_flows().unwrap();
        assert_eq!(established.len(), 2, "both entries moved: {established:?}");
        let (verdict, delivered) = run_xdp(node_2.from_world_program().unwrap(), &sent);
        assert_eq!(verdict, XDP_PASS);
        assert_eq!(endpoints(&delivered), (client, (POD, 8080)));
        assert_eq!(looked_up(&mut node_2, 40000).mode, Some(Mode::Dsr));
    })
    .unwrap();
}

/// The client's route moves to node-2 (an ECMP next hop failed): its
/// packets reach node-2 directly, and the entries made when the flow was
/// delivered keep it on its pod, though node-2 would pick another backend
/// for a new flow.
#[test]
fn a_delivered_flow_stays_on_its_pod_when_its_packets_arrive_directly() {
    let ns = routed_namespace("dsrmove", 1500);
    resolve_next_hop(&ns);
    ns.in_thread(|| {
        let mut node_1 = node_datapath(NODE_1, LbMode::Dsr, &[lb(Protocol::TCP, &[pod(false)])]);
        // Another ready pod on node-2 that node-1 does not know yet.
        let other = ready(Ipv4Addr::new(198, 18, 2, 11), 8080, true);
        let mut node_2 = node_datapath(
            NODE_2,
            LbMode::Dsr,
            &[lb(Protocol::TCP, &[pod(true), other])],
        );
        for port in 40000..40020 {
            let client = (CLIENT, port);
            let syn = syn_with_mss(client, (LB_IP, 80), 1460);
            let (_, sent) = run_xdp(node_1.from_world_program().unwrap(), &syn);
            let (verdict, delivered) = run_xdp(node_2.from_world_program().unwrap(), &sent);
            assert_eq!(verdict, XDP_PASS);
            assert_eq!(endpoints(&delivered).1, (POD, 8080));
            let direct = ack(2, 10, b"more", client, (LB_IP, 80));
            let (verdict, out) = run_xdp(node_2.from_world_program().unwrap(), &direct);
            assert_eq!(verdict, XDP_PASS);
            assert_eq!(endpoints(&out), (client, (POD, 8080)), "port {port}");
        }
    })
    .unwrap();
}

/// A NodePort reached on node-1's address: node-2 has the same port on
/// its own address, takes delivery, and the pod's replies leave from
/// node-1's address and port, which the client dialled.
#[test]
fn a_node_port_flow_is_answered_from_the_node_the_client_reached() {
    let ns = routed_namespace("dsrnp", 1500);
    resolve_next_hop(&ns);
    ns.in_thread(|| {
        let mut node_1 = node_datapath(NODE_1, LbMode::Hybrid, &[node_port(NODE_1, &[pod(false)])]);
        let mut node_2 = node_datapath(NODE_2, LbMode::Hybrid, &[node_port(NODE_2, &[pod(true)])]);
        let client = (CLIENT, 41000);
        let syn = syn_with_mss(client, (NODE_1, 30080), 1400);
        let (verdict, sent) = run_xdp(node_1.from_world_program().unwrap(), &syn);
        assert_eq!(verdict, XDP_REDIRECT);
        let (outer, inner) = decapsulated(&sent);
        assert_eq!((outer.source, outer.destination), (NODE_1, POD));
        assert_eq!(mss_of(&inner), Some(1400), "already fits: left alone");
        let (verdict, delivered) = run_xdp(node_2.from_world_program().unwrap(), &sent);
        assert_eq!(verdict, XDP_PASS);
        assert_eq!(endpoints(&delivered), (client, (POD, 8080)));
        let reply = ack(9, 2, b"", (POD, 8080), client);
        let (verdict, out) = run_tc(node_2.from_pod_program().unwrap(), &reply);
        assert_eq!(verdict, TC_ACT_OK);
        assert_eq!(endpoints(&out), ((NODE_1, 30080), client));
        assert_eq!(verify_checksums(&out), Ok(()));
    })
    .unwrap();
}

/// Hybrid mode: TCP goes by DSR, UDP by source NAT.
#[test]
fn hybrid_mode_tunnels_tcp_and_source_nats_udp() {
    let ns = routed_namespace("dsrhyb", 1500);
    resolve_next_hop(&ns);
    ns.in_thread(|| {
        let frontends = [
            lb(Protocol::TCP, &[pod(false)]),
            lb(Protocol::UDP, &[pod(false)]),
        ];
        let mut node_1 = node_datapath(NODE_1, LbMode::Hybrid, &frontends);
        let syn = syn_with_mss((CLIENT, 40000), (LB_IP, 80), 1460);
        let (_, sent) = run_xdp(node_1.from_world_program().unwrap(), &syn);
        assert_eq!(decapsulated(&sent).0.protocol, IPIP);
        let query = udp_frame((CLIENT, 40000), (LB_IP, 80), b"query");
        let (verdict, sent) = run_xdp(node_1.from_world_program().unwrap(), &query);
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!(sent.len(), query.len(), "no outer header");
        let ((source, _), destination) = endpoints(&sent);
        assert_eq!((source, destination), (NODE_1, (POD, 8080)));
    })
    .unwrap();
}

/// A packet that does not fit the route once encapsulated is answered
/// with fragmentation needed, quoting it as the client sent it, with the
/// MTU it must fit; one its sender lets be fragmented cannot go this way
/// (only the stack fragments) and is dropped, counted.
#[test]
fn too_big_for_the_tunnel_is_answered_with_the_mtu_less_the_outer_header() {
    let ns = routed_namespace("dsrpmtu", 1500);
    resolve_next_hop(&ns);
    ns.in_thread(|| {
        let mut node_1 = node_datapath(NODE_1, LbMode::Dsr, &[lb(Protocol::TCP, &[pod(false)])]);
        let client = (CLIENT, 40000);
        let syn = syn_with_mss(client, (LB_IP, 80), 1460);
        run_xdp(node_1.from_world_program().unwrap(), &syn);
        // 1460 bytes of payload: a 1500-byte packet, 1520 encapsulated.
        let full = dont_fragment(ack(2, 10, &[7; 1460], client, (LB_IP, 80)));
        let (verdict, answer) = run_xdp(node_1.from_world_program().unwrap(), &full);
        assert_eq!(verdict, XDP_TX, "back to the client");
        assert_eq!(answer, fragmentation_needed_answer(&full, 1480));
        // 1440 bytes fit exactly.
        let fits = dont_fragment(ack(2, 10, &[7; 1440], client, (LB_IP, 80)));
        let (verdict, sent) = run_xdp(node_1.from_world_program().unwrap(), &fits);
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!(decapsulated(&sent).0.length, 1500);
        let mut fragmentable = ack(2, 10, &[7; 1460], client, (LB_IP, 80));
        fragmentable[offsets::IP + 6] &= !0x40;
        fix_checksums(&mut fragmentable);
        let (verdict, _) = run_xdp(node_1.from_world_program().unwrap(), &fragmentable);
        assert_eq!(verdict, XDP_DROP);
        assert_eq!(datapath_drops(&mut node_1, "tunnel_unroutable"), 1);
    })
    .unwrap();
}

/// IPIP that is not direct server return goes on untouched: a tunnel to
/// the node's own address, and one whose inner packet is for no frontend
/// of this node.
#[test]
fn other_ipip_passes_untouched() {
    let ns = routed_namespace("dsrother", 1500);
    resolve_next_hop(&ns);
    ns.in_thread(|| {
        let mut node_1 = node_datapath(NODE_1, LbMode::Dsr, &[lb(Protocol::TCP, &[pod(false)])]);
        let mut node_2 = node_datapath(NODE_2, LbMode::Dsr, &[lb(Protocol::TCP, &[pod(true)])]);
        let syn = syn_with_mss((CLIENT, 40000), (LB_IP, 80), 1460);
        let (_, sent) = run_xdp(node_1.from_world_program().unwrap(), &syn);

        // The same packet with its outer destination made node-2's own
        // address (outer checksum mended).
        let mut to_node = sent.clone();
        let ip = offsets::IP;
        to_node[ip + 16..ip + 20].copy_from_slice(&NODE_2.octets());
        to_node[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
        let sum: u32 = to_node[ip..ip + OUTER]
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        let folded = ((sum & 0xffff) + (sum >> 16)) as u16;
        to_node[ip + 10..ip + 12].copy_from_slice(&(!folded).to_be_bytes());
        let (verdict, out) = run_xdp(node_2.from_world_program().unwrap(), &to_node);
        assert_eq!((verdict, out), (XDP_PASS, to_node));

        // Inner destination no frontend of node-2's.
        let mut node_3 = node_datapath(NODE_2, LbMode::Dsr, &[]);
        let (verdict, out) = run_xdp(node_3.from_world_program().unwrap(), &sent);
        assert_eq!((verdict, out), (XDP_PASS, sent));
    })
    .unwrap();
}

/// A client port in use towards a pod through one frontend, used again
/// for another frontend delivered to the same pod (the client may: its
/// destinations differ; the pod would see one tuple): the delivered flow
/// gets the hairpin source, as a local one does, and the live flow keeps
/// its tuple. Here the live flow came to node-2's own NodePort address and
/// the new one to node-1's, which node-2 serves as the same port: not the
/// same frontend for all that.
#[test]
fn a_delivered_flow_on_a_tuple_in_use_gets_the_hairpin_source() {
    let ns = routed_namespace("dsrclash", 1500);
    resolve_next_hop(&ns);
    ns.in_thread(|| {
        let mut node_1 = node_datapath(NODE_1, LbMode::Dsr, &[node_port(NODE_1, &[pod(false)])]);
        let mut node_2 = node_datapath(NODE_2, LbMode::Dsr, &[node_port(NODE_2, &[pod(true)])]);
        let client = (CLIENT, 42000);
        // Live: client -> node-2:30080, straight to the local pod.
        let direct = syn_with_mss(client, (NODE_2, 30080), 1460);
        let (verdict, out) = run_xdp(node_2.from_world_program().unwrap(), &direct);
        assert_eq!(verdict, XDP_PASS);
        assert_eq!(endpoints(&out), (client, (POD, 8080)));

        // The same client port to node-1:30080, delivered to node-2.
        let syn = syn_with_mss(client, (NODE_1, 30080), 1460);
        let (_, sent) = run_xdp(node_1.from_world_program().unwrap(), &syn);
        let (verdict, delivered) = run_xdp(node_2.from_world_program().unwrap(), &sent);
        assert_eq!(verdict, XDP_PASS);
        let ((source, port), destination) = endpoints(&delivered);
        assert_eq!(destination, (POD, 8080));
        assert_eq!(source, Ipv4Addr::new(198, 18, 3, 1), "the hairpin address");
        assert_ne!(port, 0);

        // Each flow's replies go back to its own frontend.
        let to_live = ack(9, 2, b"", (POD, 8080), client);
        let (_, out) = run_tc(node_2.from_pod_program().unwrap(), &to_live);
        assert_eq!(endpoints(&out), ((NODE_2, 30080), client));
        let to_delivered = ack(9, 2, b"", (POD, 8080), (Ipv4Addr::new(198, 18, 3, 1), port));
        let (_, out) = run_tc(node_2.from_pod_program().unwrap(), &to_delivered);
        assert_eq!(endpoints(&out), ((NODE_1, 30080), client));
        assert_eq!(verify_checksums(&out), Ok(()));
    })
    .unwrap();
}

/// `svc-agent lookup` says how a new flow will go once its backend is
/// known (Maglev): by DSR from the node the client reaches, directly on
/// the backend's node.
#[test]
fn lookup_names_the_mode_of_a_new_flow() {
    let maglev = |local| Frontend {
        lb_algorithm: svc_agent::model::LbAlgorithm::Maglev,
        ..lb(Protocol::TCP, &[pod(local)])
    };
    let mut node_1 = node_datapath(NODE_1, LbMode::Dsr, &[maglev(false)]);
    let mut node_2 = node_datapath(NODE_2, LbMode::Dsr, &[maglev(true)]);
    let on_1 = looked_up(&mut node_1, 43000);
    assert_eq!(
        (on_1.via, on_1.backend, on_1.mode),
        (
            Via::Maglev,
            Some(SocketAddrV4::new(POD, 8080)),
            Some(Mode::Dsr)
        )
    );
    assert_eq!(looked_up(&mut node_2, 43000).mode, Some(Mode::Direct));
    let mut snat = node_datapath(NODE_1, LbMode::Snat, &[maglev(false)]);
    assert_eq!(looked_up(&mut snat, 43000).mode, Some(Mode::Snat));
}
