//! Helpers for the integration tests: frames built and checked independently
//! of the code under test.
//!
//! Checksums are verified here from first principles (RFC 1071 over the
//! header, the pseudo header for L4), not with the datapath's helpers nor the
//! library that builds the frames, so a bug in either cannot hide itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers panic on misuse"
)]

pub mod agent;
pub mod apiserver;
pub mod chaos;
pub mod churn_load;
pub mod fuzz;
pub mod kube_proxy;
pub mod load;
pub mod network_programming;
pub mod pinned;
pub mod stores;

use std::{net::Ipv4Addr, path::PathBuf};

use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions, Xdp};
use etherparse::PacketBuilder;

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub const POD_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
pub const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

pub mod offsets {
    pub const IP: usize = 14;
    pub const IP_CSUM: usize = IP + 10;
    pub const IP_SADDR: usize = IP + 12;
    pub const IP_DADDR: usize = IP + 16;
}

/// A TCP segment from a pod (source MAC = pod, destination = host side).
pub fn tcp_frame(
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    seq: u32,
    flags: TcpFlags,
    payload: &[u8],
) -> Vec<u8> {
    let mut builder = PacketBuilder::ethernet2(POD_MAC, HOST_MAC)
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .tcp(src.1, dst.1, seq, 64240);
    if flags.syn {
        builder = builder.syn();
    }
    if let Some(ack) = flags.ack {
        builder = builder.ack(ack);
    }
    if flags.rst {
        builder = builder.rst();
    }
    if flags.psh {
        builder = builder.psh();
    }
    if flags.fin {
        builder = builder.fin();
    }
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).unwrap();
    frame
}

#[derive(Clone, Copy, Debug, Default)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: Option<u32>,
    pub rst: bool,
    pub psh: bool,
    pub fin: bool,
}

pub const SYN: TcpFlags = TcpFlags {
    syn: true,
    ack: None,
    rst: false,
    psh: false,
    fin: false,
};

pub fn udp_frame(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(POD_MAC, HOST_MAC)
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .udp(src.1, dst.1);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).unwrap();
    frame
}

/// Runs the TC program once on `frame`: (return code, bytes out).
pub fn run_tc(program: &SchedClassifier, frame: &[u8]) -> (u32, Vec<u8>) {
    run_once(frame, None, |opts| program.test_run(opts))
}

/// struct __sk_buff (include/uapi/linux/bpf.h) up to gso_size; test runs
/// may set only some of its fields, these among them.
const SKB_INGRESS_IFINDEX: usize = 36;
const SKB_GSO_SEGS: usize = 164;
const SKB_GSO_SIZE: usize = 176;

/// An __sk_buff for a packet that came in on interface 1: the loopback of
/// the calling thread's namespace, where the program's route lookups then
/// happen.
pub fn skb_from_loopback() -> [u8; SKB_GSO_SIZE + 4] {
    let mut ctx = [0u8; SKB_GSO_SIZE + 4];
    ctx[SKB_INGRESS_IFINDEX..SKB_INGRESS_IFINDEX + 4].copy_from_slice(&1u32.to_ne_bytes());
    ctx
}

/// Runs the TC program once on `frame` as if it came in on the loopback
/// of the calling thread's namespace (see [`skb_from_loopback`]).
pub fn run_tc_in_namespace(program: &SchedClassifier, frame: &[u8]) -> (u32, Vec<u8>) {
    run_once(frame, Some(&skb_from_loopback()), |opts| {
        program.test_run(opts)
    })
}

/// Runs the TC program once on `frame` as a GSO packet of `gso_size`-byte
/// segments that came in on the loopback (see [`skb_from_loopback`]).
pub fn run_tc_gso(program: &SchedClassifier, frame: &[u8], gso_size: u32) -> (u32, Vec<u8>) {
    let mut ctx = skb_from_loopback();
    let segments = (frame.len() as u32).div_ceil(gso_size);
    ctx[SKB_GSO_SEGS..SKB_GSO_SEGS + 4].copy_from_slice(&segments.to_ne_bytes());
    ctx[SKB_GSO_SIZE..SKB_GSO_SIZE + 4].copy_from_slice(&gso_size.to_ne_bytes());
    run_once(frame, Some(&ctx), |opts| program.test_run(opts))
}

/// Runs the XDP program once on `frame`: (verdict, bytes out).
pub fn run_xdp(program: &Xdp, frame: &[u8]) -> (u32, Vec<u8>) {
    let (_, verdict, out) = run_xdp_repeated(program, frame, 1);
    (verdict, out)
}

/// The room the kernel leaves in front of an XDP frame (XDP_PACKET_HEADROOM).
const XDP_PACKET_HEADROOM: usize = 256;

/// struct xdp_md (include/uapi/linux/bpf.h): data, data_end, data_meta,
/// ingress_ifindex, rx_queue_index, egress_ifindex.
const XDP_MD_LEN: usize = 24;

/// Runs the XDP program `repeat` times on one buffer (the kernel does not
/// reset it between runs): (the run's total duration, the last verdict,
/// the frame as the last run left it). A test run copies out the metadata
/// the program put in front of the frame too (Packet::mark_translated in
/// the datapath); the context written back says how long it is, and it is
/// cut off here.
pub fn run_xdp_repeated(
    program: &Xdp,
    frame: &[u8],
    repeat: u32,
) -> (std::time::Duration, u32, Vec<u8>) {
    let mut ctx_in = [0u8; XDP_MD_LEN];
    // No metadata in: data at 0, data_end at the frame's end.
    ctx_in[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    let mut ctx_out = [0u8; XDP_MD_LEN];
    // Room for the metadata too: a repeated run starts from the last
    // run's buffer, metadata and all, so the mark each translation puts
    // in front (4 bytes) piles up, as far as the headroom goes.
    let mut out = vec![0u8; frame.len().max(128) + 64 + XDP_PACKET_HEADROOM];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            repeat,
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(result.data_size_out as usize);
    // ctx_out's data: where the frame starts, after the metadata.
    let meta = u32::from_ne_bytes(ctx_out[0..4].try_into().unwrap()) as usize;
    out.drain(..meta.min(out.len()));
    (result.duration, result.return_value, out)
}

/// One BPF_PROG_TEST_RUN of `frame` through `test_run`: (return value,
/// bytes out).
fn run_once(
    frame: &[u8],
    ctx_in: Option<&[u8]>,
    test_run: impl FnOnce(
        TestRunOptions<'_>,
    ) -> Result<aya::programs::TestRunResult, aya::programs::ProgramError>,
) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len().max(128) + 64];
    let result = test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in,
        ..TestRunOptions::default()
    })
    .expect("BPF_PROG_TEST_RUN");
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

/// (source, destination) addresses and ports of a frame's IPv4 TCP/UDP
/// packet.
pub fn endpoints(frame: &[u8]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
    let ip = offsets::IP;
    let l4 = ip + ihl(frame);
    let addr = |at: usize| Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3]);
    let port = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    (
        (addr(offsets::IP_SADDR), port(l4)),
        (addr(offsets::IP_DADDR), port(l4 + 2)),
    )
}

fn ones_complement_sum(bytes: &[u8], mut sum: u32) -> u32 {
    for chunk in bytes.chunks(2) {
        let word = if chunk.len() == 2 {
            u32::from(chunk[0]) << 8 | u32::from(chunk[1])
        } else {
            u32::from(chunk[0]) << 8
        };
        sum += word;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// The IPv4 header length of the frame's packet.
pub fn ihl(frame: &[u8]) -> usize {
    usize::from(frame[offsets::IP] & 0x0f) * 4
}

/// Checks the IPv4 header checksum and the TCP/UDP checksum of an Ethernet
/// frame. Err names the first checksum that does not hold.
pub fn verify_checksums(frame: &[u8]) -> Result<(), String> {
    let ip = &frame[offsets::IP..];
    let ihl = ihl(frame);
    if ones_complement_sum(&ip[..ihl], 0) != 0xffff {
        return Err("IPv4 header checksum".into());
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let l4 = &ip[ihl..total];
    let proto = ip[9];
    if proto == 17 && l4[6] == 0 && l4[7] == 0 {
        return Ok(()); // UDP without checksum
    }
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    if ones_complement_sum(l4, ones_complement_sum(&pseudo, 0)) != 0xffff {
        return Err(if proto == 6 {
            "TCP checksum"
        } else {
            "UDP checksum"
        }
        .into());
    }
    Ok(())
}

/// Recomputes both checksums of a frame (to build expected frames).
pub fn fix_checksums(frame: &mut [u8]) {
    let ihl = ihl(frame);
    let ip_start = offsets::IP;
    frame[offsets::IP_CSUM] = 0;
    frame[offsets::IP_CSUM + 1] = 0;
    let sum = !(ones_complement_sum(&frame[ip_start..ip_start + ihl], 0) as u16);
    frame[offsets::IP_CSUM..offsets::IP_CSUM + 2].copy_from_slice(&sum.to_be_bytes());
    let total = usize::from(u16::from_be_bytes([
        frame[ip_start + 2],
        frame[ip_start + 3],
    ]));
    let proto = frame[ip_start + 9];
    let l4_start = ip_start + ihl;
    let csum_off = l4_start + if proto == 6 { 16 } else { 6 };
    if proto == 17 && frame[csum_off] == 0 && frame[csum_off + 1] == 0 {
        return;
    }
    frame[csum_off] = 0;
    frame[csum_off + 1] = 0;
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&frame[ip_start + 12..ip_start + 20]);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&((total - ihl) as u16).to_be_bytes());
    let l4 = &frame[l4_start..ip_start + total];
    let mut sum = !(ones_complement_sum(l4, ones_complement_sum(&pseudo, 0)) as u16);
    if proto == 17 && sum == 0 {
        sum = 0xffff;
    }
    frame[csum_off..csum_off + 2].copy_from_slice(&sum.to_be_bytes());
}

/// `frame` as IPv4 BIG TCP carries a GSO packet over 64 KiB: `tot_len` 0
/// (the IP header checksum updated); the TCP checksum stays, its pseudo
/// header counting the real length.
pub fn with_zero_total_length(frame: &[u8]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[offsets::IP + 2..offsets::IP + 4].copy_from_slice(&[0, 0]);
    out[offsets::IP_CSUM..offsets::IP_CSUM + 2].copy_from_slice(&[0, 0]);
    let header = &out[offsets::IP..offsets::IP + ihl(frame)];
    let sum = !(ones_complement_sum(header, 0) as u16);
    out[offsets::IP_CSUM..offsets::IP_CSUM + 2].copy_from_slice(&sum.to_be_bytes());
    out
}

/// `frame` with the destination (or source) address and port replaced and
/// checksums recomputed here: what a correct NAT must produce, byte for byte.
pub fn rewritten(frame: &[u8], destination: bool, addr: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut out = frame.to_vec();
    let l4 = offsets::IP + ihl(frame);
    let (addr_off, port_off) = if destination {
        (offsets::IP_DADDR, l4 + 2)
    } else {
        (offsets::IP_SADDR, l4)
    };
    out[addr_off..addr_off + 4].copy_from_slice(&addr.octets());
    out[port_off..port_off + 2].copy_from_slice(&port.to_be_bytes());
    fix_checksums(&mut out);
    out
}

/// One lab node `node-1` with pods `web` (TCP 8080, UDP 5353) and `curl`,
/// svc-lb loaded, and the given frontends applied.
/// Packets a datapath counted under drop reason `reason` (its name).
pub fn datapath_drops(datapath: &mut svc_agent::dataplane::Datapath, reason: &str) -> u64 {
    datapath
        .tables()
        .drop_counters()
        .unwrap()
        .iter()
        .find(|c| c.reason == reason)
        .unwrap_or_else(|| panic!("no drop reason {reason:?}"))
        .packets
}

/// The datapath of a node at `address` (its programs loaded, not
/// attached), in `lb_mode`, holding `frontends`.
pub fn node_datapath(
    address: Ipv4Addr,
    lb_mode: svc_agent::model::LbMode,
    frontends: &[svc_agent::model::Frontend],
) -> svc_agent::dataplane::Datapath {
    let mut datapath = svc_agent::dataplane::Datapath::load(None)
        .expect("load the datapath (root, kernel >= 6.6)");
    let tables = datapath.tables();
    tables
        .set_node(&svc_agent::dataplane::NodeSettings {
            node_address: address,
            hairpin_address: Ipv4Addr::new(198, 18, 3, 1),
            nat_ports: (32768, 60999),
            service_cidrs: Vec::new(),
            lb_mode,
        })
        .unwrap();
    tables.apply(frontends).unwrap();
    datapath
}

/// A namespace (named after `name`) whose route to 198.18.2.0/24 leaves
/// out of a veth towards 198.18.3.2 with MTU `mtu`, forwarding on: route
/// lookups in BPF_PROG_TEST_RUN happen in the caller's namespace, so a
/// test runs the programs in it (`in_thread`) to give them that route.
pub fn routed_namespace(name: &str, mtu: u16) -> svc_lab::netns::Netns {
    let ns =
        svc_lab::netns::Netns::create(&format!("svl{}x900-{name}", std::process::id())).unwrap();
    ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
    let mtu = mtu.to_string();
    for args in [
        &["link", "add", "v0", "type", "veth", "peer", "name", "v1"][..],
        &["link", "set", "v0", "up"],
        &["link", "set", "v1", "up"],
        &["addr", "add", "198.18.3.1/24", "dev", "v0"],
        &[
            "route",
            "add",
            "198.18.2.0/24",
            "via",
            "198.18.3.2",
            "mtu",
            "lock",
            &mtu,
        ],
    ] {
        ns.ip(args).unwrap();
    }
    ns
}

/// The MAC address [`resolve_next_hop`] gives the next hop.
pub const NEXT_HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Makes the next hop of [`routed_namespace`]'s route known, so that XDP,
/// which cannot resolve one, routes packets itself.
pub fn resolve_next_hop(ns: &svc_lab::netns::Netns) {
    let mac = NEXT_HOP_MAC.map(|b| format!("{b:02x}")).join(":");
    ns.ip(&[
        "neigh",
        "add",
        "198.18.3.2",
        "lladdr",
        &mac,
        "dev",
        "v0",
        "nud",
        "permanent",
    ])
    .unwrap();
}

pub fn one_node_lab(frontends: &[svc_agent::model::Frontend]) -> svc_lab::Lab {
    use svc_lab::{Lab, NodeSpec, PodSpec, Topology};
    let lab = Lab::up(&Topology {
        nodes: vec![NodeSpec {
            name: "node-1".into(),
            pods: vec![
                PodSpec::new("web", &[8080], &[5353]),
                PodSpec::new("curl", &[], &[]),
            ],
        }],
    })
    .expect("lab up (root)");
    lab.load_datapath("node-1").expect("datapath");
    lab.tables("node-1").unwrap().apply(frontends).unwrap();
    lab
}

/// A ClusterIP frontend `test/NAME` with ready, local backends, of either
/// family.
pub fn cluster_ip<A: Into<std::net::IpAddr> + Copy>(
    name: &str,
    address: A,
    port: u16,
    protocol: svc_agent::model::Protocol,
    backends: &[(A, u16)],
) -> svc_agent::model::Frontend {
    let backends: Vec<_> = backends
        .iter()
        .map(|(address, port)| ready(*address, *port, true))
        .collect();
    frontend(
        svc_agent::model::FrontendKind::ClusterIP,
        name,
        (address, port),
        protocol,
        &backends,
    )
}

/// The IPv4 address of a frontend or backend these tests made IPv4.
pub fn ipv4(address: std::net::IpAddr) -> Ipv4Addr {
    match address {
        std::net::IpAddr::V4(address) => address,
        std::net::IpAddr::V6(address) => panic!("{address}: these tests make IPv4 frontends"),
    }
}

/// A frontend `test/NAME` of any kind, rejecting when empty.
pub fn frontend(
    kind: svc_agent::model::FrontendKind,
    name: &str,
    (address, port): (impl Into<std::net::IpAddr>, u16),
    protocol: svc_agent::model::Protocol,
    backends: &[svc_agent::model::BackendRef],
) -> svc_agent::model::Frontend {
    svc_agent::model::Frontend {
        service: format!("test/{name}"),
        port_name: String::new(),
        kind,
        address: address.into(),
        port,
        protocol,
        backends: backends.to_vec(),
        affinity_timeout_seconds: None,
        on_empty: svc_agent::model::OnEmpty::Reject,
        source_ranges: Vec::new(),
        health_check_node_port: None,
        lb_algorithm: Default::default(),
    }
}

pub fn ready(
    address: impl Into<std::net::IpAddr>,
    port: u16,
    local: bool,
) -> svc_agent::model::BackendRef {
    svc_agent::model::BackendRef {
        address: address.into(),
        port,
        state: svc_agent::model::BackendState::Ready,
        local,
    }
}

pub fn terminating(address: Ipv4Addr, port: u16, local: bool) -> svc_agent::model::BackendRef {
    svc_agent::model::BackendRef {
        state: svc_agent::model::BackendState::Terminating,
        ..ready(address, port, local)
    }
}

/// curl from inside a namespace: (exit code, stdout, stderr). `--max-time`
/// bounds every call.
pub fn curl(
    netns: &svc_lab::netns::Netns,
    url: &str,
    max_time_s: u32,
) -> (Option<i32>, String, String) {
    let output = netns
        .command("curl")
        .unwrap()
        .args(["-sS", "--max-time", &max_time_s.to_string(), url])
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What `script` prints, run by python3 as a process of pod curl of a
/// one-node lab (in its node's cgroup, so the socket hooks see it).
pub fn python_in_pod(lab: &svc_lab::Lab, script: &str) -> String {
    let python3 = lab.pod("curl").unwrap().command("python3").unwrap();
    python_output(python3, script).trim().to_owned()
}

/// Packets (and socket-hook connects) node-1's tables counted for
/// `service`'s frontend.
pub fn frontend_packets(lab: &svc_lab::Lab, service: &str) -> u64 {
    let states = lab.tables("node-1").unwrap().read().unwrap();
    states
        .iter()
        .find(|s| s.frontend.service == service)
        .unwrap_or_else(|| panic!("{service} is in the maps"))
        .packets
}

/// What `script` prints on stdout, run as `python3 -c script` by
/// `python3` (a command for python3 where it is to run: a node, a pod);
/// it must succeed.
pub fn python_output(mut python3: std::process::Command, script: &str) -> String {
    let output = python3.args(["-c", script]).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A UDP request from inside a namespace: (reply, source of the reply).
pub fn udp_request(
    netns: &svc_lab::netns::Netns,
    to: std::net::SocketAddr,
) -> std::io::Result<(String, std::net::SocketAddr)> {
    netns
        .in_thread(move || {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
            socket.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
            socket.send_to(b"ping", to)?;
            let mut buffer = [0u8; 512];
            let (len, from) = socket.recv_from(&mut buffer)?;
            Ok((String::from_utf8_lossy(&buffer[..len]).into_owned(), from))
        })
        .unwrap()
}

/// An ICMP error (type, code) from `src` to `dst` quoting `quoted` (an IP
/// header and at least 8 bytes of what followed it), checksums computed
/// here.
pub fn icmp_error_frame(src: Ipv4Addr, dst: Ipv4Addr, kind: (u8, u8), quoted: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + quoted.len();
    let mut frame = Vec::with_capacity(14 + total);
    frame.extend_from_slice(&HOST_MAC);
    frame.extend_from_slice(&POD_MAC);
    frame.extend_from_slice(&[0x08, 0x00]);
    let len = (total as u16).to_be_bytes();
    frame.extend_from_slice(&[0x45, 0, len[0], len[1], 0, 0, 0, 0, 64, 1, 0, 0]);
    frame.extend_from_slice(&src.octets());
    frame.extend_from_slice(&dst.octets());
    let ip_sum = !(ones_complement_sum(&frame[14..34], 0) as u16);
    frame[24..26].copy_from_slice(&ip_sum.to_be_bytes());
    frame.extend_from_slice(&[kind.0, kind.1, 0, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(quoted);
    let icmp_sum = !(ones_complement_sum(&frame[34..], 0) as u16);
    frame[36..38].copy_from_slice(&icmp_sum.to_be_bytes());
    frame
}

/// The ICMP error svc-lb answers `frame` with: back to the frame's sender,
/// from the address the frame was sent to (Don't Fragment, TTL 64),
/// `kind` = (type, code), `rest` = the four header bytes after the
/// checksum, quoting the frame's IP header and the 8 bytes after it.
/// Checksums computed here.
pub fn icmp_answer_to(frame: &[u8], kind: (u8, u8), rest: [u8; 4]) -> Vec<u8> {
    let ip = &frame[offsets::IP..];
    let mut answer = Vec::with_capacity(14 + 56);
    answer.extend_from_slice(&frame[6..12]);
    answer.extend_from_slice(&frame[0..6]);
    answer.extend_from_slice(&[0x08, 0x00]);
    answer.extend_from_slice(&[0x45, 0, 0, 56, 0, 0, 0x40, 0, 64, 1, 0, 0]);
    answer.extend_from_slice(&ip[16..20]);
    answer.extend_from_slice(&ip[12..16]);
    let ip_sum = !(ones_complement_sum(&answer[14..34], 0) as u16);
    answer[24..26].copy_from_slice(&ip_sum.to_be_bytes());
    answer.extend_from_slice(&[kind.0, kind.1, 0, 0]);
    answer.extend_from_slice(&rest);
    answer.extend_from_slice(&ip[..28]);
    let icmp_sum = !(ones_complement_sum(&answer[34..], 0) as u16);
    answer[36..38].copy_from_slice(&icmp_sum.to_be_bytes());
    answer
}

/// `frame` with Don't Fragment set, checksums recomputed.
pub fn dont_fragment(mut frame: Vec<u8>) -> Vec<u8> {
    frame[offsets::IP + 6] |= 0x40;
    fix_checksums(&mut frame);
    frame
}

/// The ICMP fragmentation needed svc-lb answers `frame` with, for a route
/// of `mtu` (see [`icmp_answer_to`]).
pub fn fragmentation_needed_answer(frame: &[u8], mtu: u16) -> Vec<u8> {
    let mtu = mtu.to_be_bytes();
    icmp_answer_to(frame, (3, 4), [0, 0, mtu[0], mtu[1]])
}

/// `frame` with its TTL set to `ttl`, checksums recomputed.
pub fn with_ttl(mut frame: Vec<u8>, ttl: u8) -> Vec<u8> {
    frame[offsets::IP + 8] = ttl;
    fix_checksums(&mut frame);
    frame
}

/// The ICMP time exceeded (TTL) svc-lb answers `frame` with (see
/// [`icmp_answer_to`]).
pub fn time_exceeded_answer(frame: &[u8]) -> Vec<u8> {
    icmp_answer_to(frame, (11, 0), [0; 4])
}

/// Whether the ICMP message of a frame has a valid checksum.
pub fn icmp_checksum_ok(frame: &[u8]) -> bool {
    let start = offsets::IP + ihl(frame);
    ones_complement_sum(&frame[start..], 0) == 0xffff
}

/// Sends `count` TCP SYNs to `to` from inside `netns` through a raw socket,
/// the `n`th from `source(n)` (spoofed: any address, no socket of ours),
/// as fast as the socket takes them. Returns how many were sent.
pub fn spoofed_syns(
    netns: &svc_lab::netns::Netns,
    to: (Ipv4Addr, u16),
    count: u32,
    source: fn(u32) -> (Ipv4Addr, u16),
) -> std::io::Result<u32> {
    netns
        .in_thread(move || {
            // SAFETY: plain socket(2); the descriptor is closed below.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let address = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(to.0.octets()),
                },
                sin_zero: [0; 8],
            };
            let mut sent = 0;
            for n in 0..count {
                let frame = tcp_frame(source(n), to, n, SYN, b"");
                let packet = &frame[offsets::IP..];
                // SAFETY: the buffer and the address outlive the call.
                let written = unsafe {
                    libc::sendto(
                        fd,
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&raw const address).cast(),
                        size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                };
                if written == packet.len() as isize {
                    sent += 1;
                }
            }
            // SAFETY: our own descriptor, closed once.
            unsafe { libc::close(fd) };
            Ok(sent)
        })
        .unwrap()
}

/// Lets `interface` in `netns` send and merge IPv4 BIG TCP packets (GSO
/// and GRO up to `bytes`, over 64 KiB) with checksum offload on, as a
/// node's NIC has it (lab veths start with it off). iproute2 before 6.3
/// cannot set these, so it is one RTM_NEWLINK here.
pub fn allow_big_tcp(netns: &svc_lab::netns::Netns, interface: &str, bytes: u32) {
    // include/uapi/linux/if_link.h (Linux 6.3).
    const IFLA_GSO_IPV4_MAX_SIZE: u16 = 63;
    const IFLA_GRO_IPV4_MAX_SIZE: u16 = 64;
    svc_lab::netns::run(
        netns
            .command("ethtool")
            .unwrap()
            .args(["-K", interface, "tx", "on", "sg", "on", "tso", "on"]),
    )
    .unwrap();
    let name = std::ffi::CString::new(interface).unwrap();
    let errno = netns
        .in_thread(move || {
            // SAFETY: a NUL-terminated name.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert_ne!(index, 0, "no interface {name:?}");
            let mut message = Vec::new();
            // struct nlmsghdr: length (below), RTM_NEWLINK, request + ack, seq, pid.
            message.extend_from_slice(&0u32.to_ne_bytes());
            message.extend_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
            let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
            message.extend_from_slice(&flags.to_ne_bytes());
            message.extend_from_slice(&[0; 8]);
            // struct ifinfomsg: family, pad, type, index, flags, change.
            message.extend_from_slice(&[0; 4]);
            message.extend_from_slice(&(index as i32).to_ne_bytes());
            message.extend_from_slice(&[0; 8]);
            for kind in [IFLA_GSO_IPV4_MAX_SIZE, IFLA_GRO_IPV4_MAX_SIZE] {
                message.extend_from_slice(&8u16.to_ne_bytes());
                message.extend_from_slice(&kind.to_ne_bytes());
                message.extend_from_slice(&bytes.to_ne_bytes());
            }
            let length = message.len() as u32;
            message[..4].copy_from_slice(&length.to_ne_bytes());
            // SAFETY: plain socket(2); closed below.
            let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE) };
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            let mut answer = [0u8; 1024];
            // SAFETY: both buffers outlive the calls; the kernel is the peer.
            let received = unsafe {
                libc::send(fd, message.as_ptr().cast(), message.len(), 0);
                libc::recv(fd, answer.as_mut_ptr().cast(), answer.len(), 0)
            };
            // SAFETY: our own descriptor, closed once.
            unsafe { libc::close(fd) };
            assert!(received >= 20, "no netlink answer");
            // NLMSG_ERROR's error field follows the 16-byte header.
            i32::from_ne_bytes(answer[16..20].try_into().unwrap())
        })
        .unwrap();
    assert_eq!(errno, 0, "setting BIG TCP on {interface}");
}

/// Runs `during` while counting the IPv4 BIG TCP packets (total length
/// 0: GSO packets over 64 KiB) that `interface` of `netns` sends, as a
/// packet socket sees them (before any program of ours).
pub fn count_big_tcp_sent<T>(
    netns: &svc_lab::netns::Netns,
    interface: &str,
    during: impl FnOnce() -> T,
) -> (T, u64) {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (path, name) = (netns.path(), std::ffi::CString::new(interface).unwrap());
    let watcher = std::thread::spawn({
        let stop = stop.clone();
        move || {
            svc_lab::netns::enter(&path).unwrap();
            let protocol = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2); closed below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol)) };
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            // SAFETY: sockaddr_ll is plain data; zero is a valid start.
            let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            address.sll_family = libc::AF_PACKET as u16;
            address.sll_protocol = protocol;
            // SAFETY: a NUL-terminated name.
            address.sll_ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
            let timeout = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: valid structures of the sizes given, for our socket.
            unsafe {
                let bound = libc::bind(
                    fd,
                    (&raw const address).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(bound, 0, "{}", std::io::Error::last_os_error());
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const timeout).cast(),
                    size_of::<libc::timeval>() as u32,
                );
            }
            ready_tx.send(()).unwrap();
            let mut big = 0;
            let mut head = [0u8; 64];
            while !stop.load(Ordering::Acquire) {
                // SAFETY: the buffer outlives the call (a longer frame is cut).
                let got = unsafe { libc::recv(fd, head.as_mut_ptr().cast(), head.len(), 0) };
                let ipv4 = got >= 34 && head[12..14] == [0x08, 0x00];
                if ipv4 && head[offsets::IP + 2..offsets::IP + 4] == [0, 0] {
                    big += 1;
                }
            }
            // SAFETY: our own descriptor, closed once.
            unsafe { libc::close(fd) };
            big
        }
    });
    ready_rx.recv().expect("the packet socket is ready");
    let result = during();
    stop.store(true, Ordering::Release);
    (result, watcher.join().unwrap())
}

/// How many packets lab node `node`'s datapath counted under drop reason
/// `reason` (a name of DropReason::name).
pub fn lab_drops(lab: &svc_lab::Lab, node: &str, reason: &str) -> u64 {
    let counters = lab.tables(node).unwrap().drop_counters().unwrap();
    counters
        .iter()
        .find(|c| c.reason == reason)
        .unwrap()
        .packets
}

/// Writes a benchmark's figures, pretty JSON, to target/svc-bench/NAME,
/// and says where.
pub fn write_bench_report(name: &str, report: &serde_json::Value) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/svc-bench");
    std::fs::create_dir_all(&dir).expect("target/svc-bench");
    let path = dir.join(name);
    std::fs::write(
        &path,
        serde_json::to_string_pretty(report).expect("json") + "\n",
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    println!("wrote {}", path.display());
    path
}
