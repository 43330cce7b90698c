//! Crafted packets through the TC program with BPF_PROG_TEST_RUN: exact
//! bytes out, checksums verified independently, conntrack and counters read
//! back from the maps.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::Ipv4Addr;

use svc_agent::{dataplane::Datapath, model::Protocol};
use svc_common::{flow_flags, time_units};
use tests::*;

const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
const EMPTY_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);

/// A datapath (unpinned maps) with a TCP and a UDP ClusterIP in front of one
/// backend, and a TCP frontend without backends.
fn datapath() -> Datapath {
    let mut datapath = Datapath::load(None).expect("load the datapath (root, kernel >= 6.6)");
    datapath
        .tables()
        .apply(&[
            cluster_ip("web", CLUSTER_IP, 80, Protocol::TCP, &[(BACKEND, 8080)]),
            cluster_ip("dns", CLUSTER_IP, 53, Protocol::UDP, &[(BACKEND, 5353)]),
            cluster_ip("empty", EMPTY_IP, 80, Protocol::TCP, &[]),
        ])
        .unwrap();
    datapath
}

#[test]
fn checksum_helper_rejects_a_stale_checksum() {
    let good = tcp_frame((CLIENT, 40000), (CLUSTER_IP, 80), 1000, SYN, b"");
    assert_eq!(verify_checksums(&good), Ok(()));

    // Destination changed, both checksums left stale.
    let mut stale = good.clone();
    stale[offsets::IP_DADDR..offsets::IP_DADDR + 4].copy_from_slice(&BACKEND.octets());
    assert_eq!(verify_checksums(&stale), Err("IPv4 header checksum".into()));

    // IP checksum fixed by hand, TCP checksum (pseudo header) still stale.
    let mut ip_only = stale.clone();
    let fixed = rewritten(&good, true, BACKEND, 80);
    ip_only[offsets::IP_CSUM..offsets::IP_CSUM + 2]
        .copy_from_slice(&fixed[offsets::IP_CSUM..offsets::IP_CSUM + 2]);
    assert_eq!(verify_checksums(&ip_only), Err("TCP checksum".into()));
    assert_eq!(verify_checksums(&fixed), Ok(()));

    let udp = udp_frame((CLIENT, 40000), (CLUSTER_IP, 53), b"hello");
    let mut udp_stale = udp.clone();
    let last = udp_stale.len() - 1;
    udp_stale[last] ^= 0xff;
    assert_eq!(verify_checksums(&udp), Ok(()));
    assert_eq!(verify_checksums(&udp_stale), Err("UDP checksum".into()));
}

#[test]
fn syn_to_cluster_ip_is_dnated_with_conntrack_both_ways() {
    let mut datapath = datapath();
    let syn = tcp_frame((CLIENT, 40000), (CLUSTER_IP, 80), 1000, SYN, b"");
    let (verdict, out) = run_tc(datapath.from_pod_program().unwrap(), &syn);

    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, rewritten(&syn, true, BACKEND, 8080));
    assert_eq!(verify_checksums(&out), Ok(()));

    let flows = datapath.tables().flows().unwrap();
    assert_eq!(flows.len(), 2, "{flows:?}");
    let forward = flows
        .iter()
        .find(|(k, _)| k.saddr_be.to_ne_bytes() == CLIENT.octets())
        .expect("forward entry");
    assert_eq!(forward.0.daddr_be.to_ne_bytes(), CLUSTER_IP.octets());
    assert_eq!(u16::from_be(forward.0.dport_be), 80);
    assert_eq!(forward.1.flags & flow_flags::REPLY, 0);
    let reply = flows
        .iter()
        .find(|(k, _)| k.saddr_be.to_ne_bytes() == BACKEND.octets())
        .expect("reply entry");
    assert_eq!(u16::from_be(reply.0.sport_be), 8080);
    assert_eq!(reply.0.daddr_be.to_ne_bytes(), CLIENT.octets());
    assert_eq!(u16::from_be(reply.0.dport_be), 40000);
    assert_eq!(reply.1.flags & flow_flags::REPLY, flow_flags::REPLY);
    assert_eq!(reply.1.backend_id, forward.1.backend_id);

    let states = datapath.tables().read().unwrap();
    let web = states
        .iter()
        .find(|s| s.frontend.address == CLUSTER_IP && s.frontend.port == 80)
        .unwrap();
    assert_eq!((web.packets, web.bytes), (1, (syn.len() - 14) as u64));
}

/// CLOCK_MONOTONIC_COARSE, the clock conntrack timestamps are read from.
fn monotonic_coarse_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    assert_eq!(rc, 0, "clock_gettime");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Timestamps are monotonic-clock nanoseconds, also when a CPU takes them
/// from its cached reading (the second flow, usually made in the same tick
/// as the first).
#[test]
fn conntrack_timestamps_are_monotonic_clock_nanoseconds() {
    // A cached reading may lag the clock by one tick (HZ >= 100).
    const TICK_NS: u64 = 10_000_000;
    let mut datapath = datapath();
    let before = monotonic_coarse_ns();
    for port in [40100, 40101] {
        let syn = tcp_frame((CLIENT, port), (CLUSTER_IP, 80), 1000, SYN, b"");
        assert_eq!(
            run_tc(datapath.from_pod_program().unwrap(), &syn).0,
            TC_ACT_OK
        );
    }
    let after = monotonic_coarse_ns();

    let flows = datapath.tables().flows().unwrap();
    assert_eq!(flows.len(), 4, "{flows:?}");
    for (key, flow) in &flows {
        assert!(
            (before - TICK_NS..=after).contains(&flow.last_seen_ns),
            "{key:?} last seen at {} ns, not within [{before}, {after}]",
            flow.last_seen_ns
        );
        assert_eq!(time_units(flow.last_seen_ns), flow.created_units, "{key:?}");
    }
}

#[test]
fn reply_from_backend_is_reverse_translated_to_the_cluster_ip() {
    let mut datapath = datapath();
    let syn = tcp_frame((CLIENT, 40001), (CLUSTER_IP, 80), 1000, SYN, b"");
    run_tc(datapath.from_pod_program().unwrap(), &syn);

    let flags = TcpFlags {
        syn: true,
        ack: Some(1001),
        ..TcpFlags::default()
    };
    let syn_ack = tcp_frame((BACKEND, 8080), (CLIENT, 40001), 5000, flags, b"");
    let (verdict, out) = run_tc(datapath.from_pod_program().unwrap(), &syn_ack);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, rewritten(&syn_ack, false, CLUSTER_IP, 80));
    assert_eq!(verify_checksums(&out), Ok(()));

    // Data later in the flow keeps going to the same backend.
    let data_flags = TcpFlags {
        ack: Some(5001),
        psh: true,
        ..TcpFlags::default()
    };
    let data = tcp_frame(
        (CLIENT, 40001),
        (CLUSTER_IP, 80),
        1001,
        data_flags,
        b"GET / HTTP/1.1\r\n\r\n",
    );
    let (verdict, out) = run_tc(datapath.from_pod_program().unwrap(), &data);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, rewritten(&data, true, BACKEND, 8080));
}

#[test]
fn udp_to_cluster_ip_is_dnated() {
    let mut datapath = datapath();
    let datagram = udp_frame((CLIENT, 40000), (CLUSTER_IP, 53), b"query");
    let (verdict, out) = run_tc(datapath.from_pod_program().unwrap(), &datagram);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, rewritten(&datagram, true, BACKEND, 5353));
    assert_eq!(verify_checksums(&out), Ok(()));

    // A datagram without checksum keeps having none.
    let mut no_csum = udp_frame((CLIENT, 40002), (CLUSTER_IP, 53), b"query");
    let l4 = offsets::IP + 20;
    no_csum[l4 + 6] = 0;
    no_csum[l4 + 7] = 0;
    let (verdict, out) = run_tc(datapath.from_pod_program().unwrap(), &no_csum);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(&out[l4 + 6..l4 + 8], &[0, 0]);
    assert_eq!(out, rewritten(&no_csum, true, BACKEND, 5353));
}

#[test]
fn ip_options_are_skipped_by_the_ihl() {
    let mut datapath = datapath();
    let plain = tcp_frame((CLIENT, 40003), (CLUSTER_IP, 80), 1000, SYN, b"");
    // Insert one 4-byte option word (NOP NOP NOP EOL) and fix lengths.
    let mut frame = plain[..offsets::IP + 20].to_vec();
    frame.extend_from_slice(&[1, 1, 1, 0]);
    frame.extend_from_slice(&plain[offsets::IP + 20..]);
    frame[offsets::IP] = 0x46;
    let total = u16::from_be_bytes([frame[offsets::IP + 2], frame[offsets::IP + 3]]) + 4;
    frame[offsets::IP + 2..offsets::IP + 4].copy_from_slice(&total.to_be_bytes());
    fix_checksums(&mut frame);
    assert_eq!(verify_checksums(&frame), Ok(()));

    let (verdict, out) = run_tc(datapath.from_pod_program().unwrap(), &frame);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, rewritten(&frame, true, BACKEND, 8080));
}

#[test]
fn syn_to_frontend_without_backends_gets_a_reset() {
    let mut datapath = datapath();
    let syn = tcp_frame((CLIENT, 40000), (EMPTY_IP, 80), 1000, SYN, b"");
    let (verdict, out) = run_tc(datapath.from_pod_program().unwrap(), &syn);

    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "the reset goes back out of the pod's veth"
    );
    assert_eq!(out.len(), 54);
    assert_eq!(verify_checksums(&out), Ok(()));
    assert_eq!(&out[0..6], &POD_MAC, "back to the pod");
    assert_eq!(&out[6..12], &HOST_MAC);
    let ip = &out[14..34];
    assert_eq!(ip[0], 0x45);
    assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 40);
    assert_eq!(ip[9], 6);
    assert_eq!(&ip[12..16], &EMPTY_IP.octets(), "from the frontend");
    assert_eq!(&ip[16..20], &CLIENT.octets(), "to the client");
    let tcp = &out[34..54];
    assert_eq!(u16::from_be_bytes([tcp[0], tcp[1]]), 80);
    assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]), 40000);
    assert_eq!(
        u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        0,
        "seq"
    );
    assert_eq!(
        u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
        1001,
        "ack = seq + SYN"
    );
    assert_eq!(tcp[12] >> 4, 5, "data offset");
    assert_eq!(tcp[13], 0x14, "RST|ACK");
    assert_eq!(datapath_drops(&mut datapath, "no_backend_reset"), 1);
    assert!(datapath.tables().flows().unwrap().is_empty());
}

#[test]
fn segment_with_ack_to_empty_frontend_gets_a_bare_reset_at_its_ack() {
    let mut datapath = datapath();
    let flags = TcpFlags {
        ack: Some(777_777),
        psh: true,
        ..TcpFlags::default()
    };
    let segment = tcp_frame((CLIENT, 40000), (EMPTY_IP, 80), 1000, flags, b"hello");
    let (verdict, out) = run_tc(datapath.from_pod_program().unwrap(), &segment);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(verify_checksums(&out), Ok(()));
    let tcp = &out[34..54];
    assert_eq!(
        u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        777_777,
        "seq = their ack"
    );
    assert_eq!(tcp[13], 0x04, "RST only");
}

#[test]
fn reset_to_empty_frontend_is_dropped_not_answered() {
    let mut datapath = datapath();
    let flags = TcpFlags {
        rst: true,
        ..TcpFlags::default()
    };
    let rst = tcp_frame((CLIENT, 40000), (EMPTY_IP, 80), 1000, flags, b"");
    let (verdict, _) = run_tc(datapath.from_pod_program().unwrap(), &rst);
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(datapath_drops(&mut datapath, "no_backend_drop"), 1);
    assert_eq!(datapath_drops(&mut datapath, "no_backend_reset"), 0);
}

#[test]
fn traffic_to_other_addresses_passes_untouched() {
    let mut datapath = datapath();
    for frame in [
        tcp_frame((CLIENT, 40000), (BACKEND, 8080), 1, SYN, b""),
        tcp_frame((CLIENT, 40000), (CLUSTER_IP, 81), 1, SYN, b""),
        udp_frame((CLIENT, 40000), (CLUSTER_IP, 80), b"wrong protocol"),
    ] {
        let (verdict, out) = run_tc(datapath.from_pod_program().unwrap(), &frame);
        assert_eq!(verdict, TC_ACT_OK);
        assert_eq!(out, frame);
    }
    assert!(datapath.tables().flows().unwrap().is_empty());
}

#[test]
fn malformed_packets_to_a_frontend_are_dropped_and_counted() {
    let mut datapath = datapath();
    let syn = tcp_frame((CLIENT, 40000), (CLUSTER_IP, 80), 1000, SYN, b"");

    // Cut inside the TCP header, IP total length still claiming all of it.
    let truncated = syn[..offsets::IP + 20 + 10].to_vec();
    // IHL below the minimum.
    let mut short_ihl = syn.clone();
    short_ihl[offsets::IP] = 0x44;
    // TCP data offset beyond the segment.
    let mut long_doff = syn.clone();
    long_doff[offsets::IP + 20 + 12] = 0xf0;

    for (name, frame) in [
        ("truncated", truncated),
        ("ihl", short_ihl),
        ("doff", long_doff),
    ] {
        let (verdict, _) = run_tc(datapath.from_pod_program().unwrap(), &frame);
        assert_eq!(verdict, TC_ACT_SHOT, "{name}");
    }
    assert_eq!(datapath_drops(&mut datapath, "malformed"), 3);
    assert!(datapath.tables().flows().unwrap().is_empty());
}

/// IPv4 BIG TCP: a GSO packet over 64 KiB says 0 for its total length
/// and fills its buffer (a pod whose veth has `gso_ipv4_max_size` above
/// 64 KiB sends them). It is translated like any segment; without GSO, a
/// total length of 0 is malformed.
#[test]
fn a_big_tcp_packet_with_zero_total_length_is_translated() {
    let mut datapath = datapath();
    let client = (CLIENT, 40005);
    let syn = tcp_frame(client, (CLUSTER_IP, 80), 1000, SYN, b"");
    assert_eq!(
        run_tc(datapath.from_pod_program().unwrap(), &syn).0,
        TC_ACT_OK
    );
    let flags = TcpFlags {
        ack: Some(1),
        ..TcpFlags::default()
    };
    let data = tcp_frame(client, (CLUSTER_IP, 80), 1001, flags, &[7; 2896]);
    let big = with_zero_total_length(&data);

    let (verdict, out) = run_tc_gso(datapath.from_pod_program().unwrap(), &big, 1448);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(
        out,
        with_zero_total_length(&rewritten(&data, true, BACKEND, 8080))
    );

    let (verdict, _) = run_tc(datapath.from_pod_program().unwrap(), &big);
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(datapath_drops(&mut datapath, "malformed"), 1);
}

#[test]
fn fragments_pass_untranslated() {
    let mut datapath = datapath();
    let mut fragment = udp_frame((CLIENT, 40000), (CLUSTER_IP, 53), b"first fragment");
    fragment[offsets::IP + 6] = 0x20; // more fragments
    fix_checksums(&mut fragment);
    let (verdict, out) = run_tc(datapath.from_pod_program().unwrap(), &fragment);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, fragment);
}

#[test]
fn icmp_error_from_a_backend_is_translated_back_to_the_frontend() {
    let mut datapath = datapath();
    let datagram = udp_frame((CLIENT, 40000), (CLUSTER_IP, 53), b"query");
    let (_, dnated) = run_tc(datapath.from_pod_program().unwrap(), &datagram);
    assert_eq!(endpoints(&dnated).1, (BACKEND, 5353));

    // The backend's stack answers "port unreachable", quoting what it got.
    let quoted_as_received = &dnated[14..14 + 28];
    let error = icmp_error_frame(BACKEND, CLIENT, (3, 3), quoted_as_received);
    assert!(icmp_checksum_ok(&error));
    let (verdict, out) = run_tc(datapath.from_pod_program().unwrap(), &error);
    assert_eq!(verdict, TC_ACT_OK);

    // The client must get the error from the frontend, quoting the datagram
    // it sent (to the frontend). Only the quoted UDP checksum still is the
    // backend's: no stack checks it.
    let mut quoted_as_sent = datagram[14..14 + 28].to_vec();
    quoted_as_sent[26..28].copy_from_slice(&quoted_as_received[26..28]);
    let expected = icmp_error_frame(CLUSTER_IP, CLIENT, (3, 3), &quoted_as_sent);
    assert_eq!(out, expected);
    assert!(icmp_checksum_ok(&out));
}

#[test]
fn icmp_errors_about_other_flows_pass_untouched() {
    let mut datapath = datapath();
    let stranger = udp_frame((CLIENT, 40000), (BACKEND, 9999), b"x");
    let error = icmp_error_frame(BACKEND, CLIENT, (3, 3), &stranger[14..42]);
    let (verdict, out) = run_tc(datapath.from_pod_program().unwrap(), &error);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, error);
}
