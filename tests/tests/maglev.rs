//! Maglev selection in the kernel programs: the same flow gets the same
//! backend from two datapaths that hold the same backends (two nodes
//! behind one ECMP route), `lookup` names that backend before the first
//! packet, conntrack keeps an established flow where it is when the table
//! changes, and sessionAffinity and the terminating fallback keep their
//! meaning.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4},
};

use svc_agent::{
    dataplane::{Datapath, Via},
    model::{BackendRef, Frontend, FrontendKind, LbAlgorithm, Protocol},
};
use tests::*;

const LB_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 1);
const UNRELATED_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 2);

fn backend(host: u8) -> BackendRef {
    ready(Ipv4Addr::new(198, 18, 1, host), 8080, true)
}

fn maglev_lb(backends: &[BackendRef]) -> Frontend {
    Frontend {
        lb_algorithm: LbAlgorithm::Maglev,
        ..frontend(
            FrontendKind::LoadBalancer,
            "web",
            (LB_IP, 80),
            Protocol::TCP,
            backends,
        )
    }
}

/// A node's datapath holding `frontends`.
fn node(address: Ipv4Addr, frontends: &[Frontend]) -> Datapath {
    node_datapath(address, svc_agent::model::LbMode::Snat, frontends)
}

/// Client tuples spread over addresses and ports (a fixed LCG: the same
/// tuples every run).
fn clients(count: usize) -> Vec<SocketAddrV4> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let bits = (state >> 24) as u32;
            SocketAddrV4::new(
                Ipv4Addr::new(198, 18, 64 + (bits >> 24) as u8 % 64, (bits >> 16) as u8),
                1024 + (bits as u16 % 60000),
            )
        })
        .collect()
}

/// The backend a SYN from `client` to the LB IP is sent to.
fn sent_to(datapath: &mut Datapath, client: SocketAddrV4) -> Ipv4Addr {
    let syn = tcp_frame((*client.ip(), client.port()), (LB_IP, 80), 1, SYN, b"");
    let (verdict, out) = run_xdp(datapath.from_world_program().unwrap(), &syn);
    assert_eq!(verdict, XDP_PASS, "SYN from {client}");
    endpoints(&out).1.0
}

/// What `lookup` says a new flow from `client` gets.
fn looked_up(datapath: &mut Datapath, client: SocketAddrV4) -> (Via, Option<SocketAddrV4>) {
    let lookup = datapath
        .tables()
        .lookup(Protocol::TCP, client, SocketAddrV4::new(LB_IP, 80))
        .unwrap()
        .expect("the LB IP is a frontend");
    (lookup.via, lookup.backend)
}

#[test]
fn two_nodes_send_every_flow_to_the_same_backend_that_lookup_names() {
    let backends: Vec<BackendRef> = (1..=10).map(backend).collect();
    let mut node_1 = node(Ipv4Addr::new(198, 18, 0, 11), &[maglev_lb(&backends)]);
    // node-2 learnt an unrelated Service first: its backend ids differ.
    let unrelated = frontend(
        FrontendKind::ClusterIP,
        "other",
        (UNRELATED_IP, 80),
        Protocol::TCP,
        &[backend(200), backend(201), backend(202)],
    );
    let mut node_2 = node(Ipv4Addr::new(198, 18, 0, 12), &[unrelated]);
    node_2.tables().apply(&[maglev_lb(&backends)]).unwrap();

    let mut used = BTreeSet::new();
    for client in clients(500) {
        let (via, named) = looked_up(&mut node_1, client);
        assert_eq!(via, Via::Maglev, "{client}");
        assert_eq!(looked_up(&mut node_2, client), (via, named), "{client}");
        let on_1 = sent_to(&mut node_1, client);
        let on_2 = sent_to(&mut node_2, client);
        assert_eq!(on_1, on_2, "{client}: node-1 and node-2 disagree");
        assert_eq!(
            Some(on_1),
            named.map(|b| *b.ip()),
            "{client}: lookup named another"
        );
        used.insert(on_1);
    }
    // 500 flows over 10 backends: every one is used (a miss: 10 * 0.9^500).
    assert_eq!(used.len(), 10, "{used:?}");
}

#[test]
fn removing_a_backend_moves_its_flows_and_few_others() {
    let backends: Vec<BackendRef> = (1..=10).map(backend).collect();
    let mut datapath = node(Ipv4Addr::new(198, 18, 0, 11), &[maglev_lb(&backends)]);
    let tuples = clients(1000);
    let before: Vec<_> = tuples
        .iter()
        .map(|client| looked_up(&mut datapath, *client).1.unwrap())
        .collect();
    let removed = before[0];
    let rest: Vec<BackendRef> = backends
        .iter()
        .copied()
        .filter(|b| std::net::SocketAddr::new(b.address, b.port) != removed.into())
        .collect();
    datapath.tables().apply(&[maglev_lb(&rest)]).unwrap();
    let mut moved = 0;
    for (client, old) in tuples.iter().zip(&before) {
        let (via, new) = looked_up(&mut datapath, *client);
        assert_eq!(via, Via::Maglev);
        let new = new.unwrap();
        assert_ne!(new, removed, "{client} still goes to the removed backend");
        if new != *old {
            moved += 1;
            // A flow of another backend moved: allowed, but rare.
        }
        if *old == removed {
            assert_ne!(new, *old);
        }
    }
    let bound = tuples.len() / 10 + tuples.len() * 2 / 100;
    println!(
        "{moved} of {} flows moved with 1 of 10 backends removed",
        tuples.len()
    );
    assert!(
        moved <= bound,
        "{moved} flows moved, over 1/N + 2% ({bound})"
    );
    assert!(
        moved >= 50,
        "only {moved} moved: the removed backend had about 100"
    );
}

#[test]
fn an_established_flow_keeps_its_backend_when_the_table_changes() {
    let mut backends: Vec<BackendRef> = (1..=4).map(backend).collect();
    let mut datapath = node(Ipv4Addr::new(198, 18, 0, 11), &[maglev_lb(&backends)]);
    let tuples = clients(200);
    let first: Vec<Ipv4Addr> = tuples
        .iter()
        .map(|client| sent_to(&mut datapath, *client))
        .collect();
    backends.extend((5..=8).map(backend));
    datapath.tables().apply(&[maglev_lb(&backends)]).unwrap();
    // Flows the new table sends elsewhere: their next packet still goes
    // where the first went.
    let mut moved_by_table = 0;
    for (client, first) in tuples.iter().zip(&first) {
        let (via, now) = looked_up(&mut datapath, *client);
        assert_eq!(via, Via::Conntrack, "{client}");
        assert_eq!(now.map(|b| *b.ip()), Some(*first));
        assert_eq!(sent_to(&mut datapath, *client), *first, "{client} moved");
        let fresh = SocketAddrV4::new(*client.ip(), client.port().wrapping_add(1));
        if looked_up(&mut datapath, fresh).1.map(|b| *b.ip()) != Some(*first) {
            moved_by_table += 1;
        }
    }
    assert!(
        moved_by_table > 0,
        "the new table changed no flow's backend"
    );
}

#[test]
fn affinity_and_the_terminating_fallback_keep_their_meaning() {
    // sessionAffinity: a client's flows stay on its first backend,
    // whatever their ports hash to.
    let backends: Vec<BackendRef> = (1..=10).map(backend).collect();
    let sticky = Frontend {
        affinity_timeout_seconds: Some(60),
        ..maglev_lb(&backends)
    };
    let mut datapath = node(Ipv4Addr::new(198, 18, 0, 11), &[sticky]);
    let client = Ipv4Addr::new(198, 18, 70, 7);
    let chosen: BTreeSet<Ipv4Addr> = (0..30)
        .map(|port| sent_to(&mut datapath, SocketAddrV4::new(client, 20000 + port)))
        .collect();
    assert_eq!(chosen.len(), 1, "{chosen:?}");

    // None ready: the terminating ones serve, by the table too.
    let old = [
        terminating(Ipv4Addr::new(198, 18, 1, 50), 8080, true),
        terminating(Ipv4Addr::new(198, 18, 1, 51), 8080, true),
    ];
    let mut datapath = node(Ipv4Addr::new(198, 18, 0, 11), &[maglev_lb(&old)]);
    let mut used = BTreeSet::new();
    for client in clients(40) {
        let (via, named) = looked_up(&mut datapath, client);
        assert_eq!(via, Via::Maglev);
        let sent = sent_to(&mut datapath, client);
        assert_eq!(Some(sent), named.map(|b| *b.ip()));
        used.insert(sent);
    }
    assert_eq!(
        used,
        BTreeSet::from([Ipv4Addr::new(198, 18, 1, 50), Ipv4Addr::new(198, 18, 1, 51)])
    );
}
