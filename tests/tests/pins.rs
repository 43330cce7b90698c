//! Adopting pinned maps (root): a map pinned under this build's name with
//! another layout is refused and left as it was; one of another size is
//! migrated, entries and all; a second agent on the same pins is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
use std::{net::Ipv4Addr, path::Path};

use aya::maps::{HashMap, Map, MapData, MapInfo};
use svc_agent::dataplane::{Datapath, DataplaneError, NodeSettings};
use svc_common::{Flow, FlowKey, FlowV1, flow_flags, names};
use tests::pinned::PinDir;

/// BPF_MAP_TYPE_LRU_HASH.
const LRU_HASH: u32 = 9;

/// The layout this build gives CT_V2: from a datapath of its own.
fn this_builds_conntrack() -> MapInfo {
    let dir = PinDir::new("pins-reference");
    let _datapath = Datapath::load(Some(&dir.0)).expect("load the datapath (root)");
    MapInfo::from_pin(dir.0.join(names::CT)).unwrap()
}

/// A map made by hand where an agent pins CT_V2.
fn pin_conntrack(dir: &Path, value_size: u32, max_entries: u32) -> MapData {
    std::fs::create_dir_all(dir).unwrap();
    let reference = this_builds_conntrack();
    let object = aya_obj::Map::new_from_params(
        LRU_HASH,
        size_of::<FlowKey>() as u32,
        value_size,
        max_entries,
        reference.map_flags(),
    );
    let map = MapData::create(object, names::CT, None).unwrap();
    map.pin(dir.join(names::CT)).unwrap();
    map
}

fn key(n: u32) -> FlowKey {
    FlowKey {
        saddr_be: n.to_be(),
        daddr_be: 0xc613_0001_u32.to_be(),
        sport_be: 1000,
        dport_be: 80,
        proto: 6,
        _pad: [0; 3],
    }
}

fn flow(n: u32) -> Flow {
    Flow {
        backend_id: n,
        rev_nat_id: n + 1,
        last_seen_ns: u64::from(n) * 11,
        created_units: n * 7,
        next_seq: n * 13,
        backend_addr_be: n.rotate_left(8),
        nat_addr_be: !n,
        backend_port_be: n as u16,
        nat_port_be: (n as u16).wrapping_mul(3),
        flags: (n % 16) as u16,
        _pad: 0,
    }
}

fn conntrack(data: MapData) -> HashMap<MapData, FlowKey, Flow> {
    HashMap::try_from(Map::from_map_data(data).unwrap()).unwrap()
}

#[test]
fn a_pinned_map_of_another_value_size_is_refused_and_left_as_it_was() {
    let dir = PinDir::new("pins-value-size");
    let value_size = size_of::<Flow>() as u32 + 8;
    let map = pin_conntrack(&dir.0, value_size, 1024);
    let mut raw: HashMap<MapData, FlowKey, [u8; size_of::<Flow>() + 8]> =
        HashMap::try_from(Map::from_map_data(map).unwrap()).unwrap();
    raw.insert(key(1), [0x5a; size_of::<Flow>() + 8], 0)
        .unwrap();

    let error = Datapath::load(Some(&dir.0))
        .err()
        .expect("a CT_V2 of another value size must be refused");
    let DataplaneError::PinnedLayout {
        name,
        pinned,
        expected,
        ..
    } = &error
    else {
        panic!("{error}");
    };
    assert_eq!(*name, names::CT);
    assert_eq!(pinned.value_size, value_size);
    assert_eq!(expected.value_size, size_of::<Flow>() as u32);
    let message = error.to_string();
    assert!(
        message.contains(&format!("value {value_size} B"))
            && message.contains(&format!("value {} B", size_of::<Flow>())),
        "{message}"
    );

    let info = MapInfo::from_pin(dir.0.join(names::CT)).unwrap();
    assert_eq!((info.value_size(), info.max_entries()), (value_size, 1024));
    assert_eq!(raw.get(&key(1), 0).unwrap(), [0x5a; size_of::<Flow>() + 8]);
    assert!(
        !dir.0.join(names::SERVICES).exists(),
        "nothing was loaded beside the refused map"
    );
}

#[test]
fn a_pinned_map_of_another_size_is_migrated_with_its_entries() {
    let dir = PinDir::new("pins-resize");
    let map = pin_conntrack(&dir.0, size_of::<Flow>() as u32, 1024);
    let mut old = conntrack(map);
    for n in 0..100 {
        old.insert(key(n), flow(n), 0).unwrap();
    }

    let mut datapath = Datapath::load(Some(&dir.0)).expect("a resized CT_V2 is migrated");
    let wanted = this_builds_conntrack().max_entries();
    assert_ne!(wanted, 1024);
    let info = MapInfo::from_pin(dir.0.join(names::CT)).unwrap();
    assert_eq!(info.max_entries(), wanted);
    assert_eq!(info.value_size(), size_of::<Flow>() as u32);
    // The old programs keep using the old map until this agent's are
    // attached: what they add meanwhile comes over too.
    old.insert(key(500), flow(500), 0).unwrap();
    assert!(dir.0.join(format!("{}_RESIZED", names::CT)).exists());
    datapath.finish_migrations().unwrap();
    assert!(!dir.0.join(format!("{}_RESIZED", names::CT)).exists());

    let new = conntrack(MapData::from_pin(dir.0.join(names::CT)).unwrap());
    for n in (0..100).chain([500]) {
        let got = new.get(&key(n), 0).unwrap();
        assert_eq!(got.backend_id, n);
        assert_eq!(got.last_seen_ns, u64::from(n) * 11);
        assert_eq!(got.nat_addr_be, !n);
        assert_eq!(got.flags, (n % 16) as u16);
    }
    assert_eq!(new.keys().count(), 101);
    drop(datapath);

    // Adopted again as it is now.
    let mut again = Datapath::load(Some(&dir.0)).unwrap();
    again.finish_migrations().unwrap();
    let new = conntrack(MapData::from_pin(dir.0.join(names::CT)).unwrap());
    assert_eq!(new.keys().count(), 101);
}

#[test]
fn a_second_agent_on_the_same_pins_is_refused() {
    let dir = PinDir::new("pins-lock");
    let mut first = Datapath::load(Some(&dir.0)).unwrap();
    let error = Datapath::load(Some(&dir.0))
        .err()
        .expect("a second datapath on the same pins must be refused");
    assert!(
        matches!(&error, DataplaneError::PinPathBusy { path } if *path == dir.0),
        "{error}"
    );
    // The first keeps working.
    let node = NodeSettings {
        node_address: Ipv4Addr::new(198, 18, 0, 1),
        hairpin_address: Ipv4Addr::new(198, 18, 255, 254),
        nat_ports: (61000, 61100),
        service_cidrs: Vec::new(),
        lb_mode: svc_agent::model::LbMode::Snat,
    };
    first.tables().set_node(&node).unwrap();
    drop(first);
    Datapath::load(Some(&dir.0)).expect("the pins are free once the first is gone");
}

/// An agent of the version before CT_V2 left CT_V1 and CT_NEW_V1 pinned:
/// their entries are carried over, converted, into CT_V2 and CT_NEW_V2
/// (no connection forgotten by the upgrade), and the old maps unpinned.
#[test]
fn conntrack_of_the_previous_layout_is_carried_over() {
    let dir = PinDir::new("pins-convert");
    std::fs::create_dir_all(&dir.0).unwrap();
    let flags = this_builds_conntrack().map_flags();
    let mut old = Vec::new();
    for (name, entries) in [("CT_V1", 0..50), ("CT_NEW_V1", 50..60)] {
        let object = aya_obj::Map::new_from_params(
            LRU_HASH,
            size_of::<FlowKey>() as u32,
            size_of::<FlowV1>() as u32,
            4096,
            flags,
        );
        let map = MapData::create(object, name, None).unwrap();
        map.pin(dir.0.join(name)).unwrap();
        let mut map: HashMap<MapData, FlowKey, FlowV1> =
            HashMap::try_from(Map::from_map_data(map).unwrap()).unwrap();
        for n in entries {
            let v1 = FlowV1 {
                backend_id: n,
                rev_nat_id: n + 1,
                created_ns: u64::from(n) << 30,
                last_seen_ns: u64::from(n) * 11,
                backend_addr_be: n.rotate_left(8),
                backend_port_be: n as u16,
                _pad: 0,
                nat_addr_be: !n,
                nat_port_be: (n as u16).wrapping_mul(3),
                flags: flow_flags::SEEN_REPLY | (n % 4) as u16,
            };
            map.insert(key(n), v1, 0).unwrap();
        }
        old.push(map);
    }

    let mut datapath = Datapath::load(Some(&dir.0)).expect("CT_V1 is carried over");
    // What the old programs add before the swap comes over too.
    old[0]
        .insert(
            key(99),
            FlowV1 {
                backend_id: 99,
                ..FlowV1::default()
            },
            0,
        )
        .unwrap();
    datapath.finish_migrations().unwrap();
    assert!(!dir.0.join("CT_V1").exists() && !dir.0.join("CT_NEW_V1").exists());

    for (table, entries) in [(names::CT, 0..50), (names::CT_NEW, 50..60)] {
        let map = conntrack(MapData::from_pin(dir.0.join(table)).unwrap());
        for n in entries {
            let got = map.get(&key(n), 0).unwrap();
            assert_eq!(
                (got.backend_id, got.rev_nat_id, got.last_seen_ns),
                (n, n + 1, u64::from(n) * 11),
                "{table} {n}"
            );
            assert_eq!(
                got.created_units,
                svc_common::time_units(u64::from(n) << 30)
            );
            assert_eq!(
                (got.backend_addr_be, got.backend_port_be),
                (n.rotate_left(8), n as u16)
            );
            assert_eq!(
                (got.nat_addr_be, got.nat_port_be),
                (!n, (n as u16).wrapping_mul(3))
            );
            assert_eq!(got.flags, flow_flags::SEEN_REPLY | (n % 4) as u16);
            assert_eq!(got.flags & flow_flags::SEQ_KNOWN, 0);
        }
    }
    let established = conntrack(MapData::from_pin(dir.0.join(names::CT)).unwrap());
    assert_eq!(established.get(&key(99), 0).unwrap().backend_id, 99);
    assert_eq!(established.keys().count(), 51);
}

/// The frontends `tables` hold.
fn held(tables: &svc_agent::dataplane::Tables) -> Vec<svc_agent::model::Frontend> {
    tables
        .read()
        .unwrap()
        .into_iter()
        .map(|state| state.frontend)
        .collect()
}

/// The pins of an agent from before the IPv6 maps (none of SERVICES6,
/// BACKENDS6, REV_NAT6, SVC_CIDRS6 pinned), as a newer `dump` or lab reads
/// them during an upgrade: the IPv4 frontends and the node settings read
/// back, IPv4 writes work, and an IPv6 write is refused, naming the map.
#[test]
fn the_pins_of_an_agent_from_before_the_ipv6_maps_read_and_take_ipv4() {
    let dir = PinDir::new("pins-before-ipv6");
    let datapath = Datapath::load(Some(&dir.0)).unwrap();
    let web = tests::cluster_ip(
        "web",
        Ipv4Addr::new(198, 19, 0, 10),
        80,
        svc_agent::model::Protocol::TCP,
        &[(Ipv4Addr::new(198, 18, 1, 10), 8080)],
    );
    let mut tables = svc_agent::dataplane::Tables::open_pinned(&dir.0).unwrap();
    tables.apply(std::slice::from_ref(&web)).unwrap();
    drop(datapath);
    for name in [
        names::SERVICES6,
        names::BACKENDS6,
        names::REV_NAT6,
        names::SERVICE_CIDRS6,
    ] {
        std::fs::remove_file(dir.0.join(name)).unwrap();
    }
    let mut older = svc_agent::dataplane::Tables::open_pinned(&dir.0).unwrap();
    assert_eq!(held(&older), std::slice::from_ref(&web));
    let node = older.node().unwrap();
    assert!(node.service_cidrs.is_empty());
    older.set_node(&node).unwrap();
    let web6 = tests::cluster_ip(
        "web6",
        "fd00:198:19::10".parse::<std::net::Ipv6Addr>().unwrap(),
        80,
        svc_agent::model::Protocol::TCP,
        &[("fd00:198:18:1::10".parse().unwrap(), 8080)],
    );
    let error = older.apply(&[web.clone(), web6]).unwrap_err().to_string();
    assert!(error.contains(names::REV_NAT6), "{error}");
    let moved = svc_agent::model::Frontend { port: 81, ..web };
    older.apply(std::slice::from_ref(&moved)).unwrap();
    assert_eq!(held(&older), [moved]);
}
