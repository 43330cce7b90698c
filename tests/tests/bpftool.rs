//! Every map is typed through BTF: `bpftool map dump` shows field names.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{net::Ipv4Addr, process::Command};

use serde_json::Value;
use svc_agent::model::Protocol;
use svc_common::{DropReason, names};
use tests::{cluster_ip, one_node_lab};

fn dump(path: &std::path::Path) -> Vec<Value> {
    let output = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(path)
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&output.stdout).unwrap()
}

/// The field names of the "formatted" key or value of an entry.
fn fields(entry: &Value, part: &str) -> Vec<String> {
    entry["formatted"][part]
        .as_object()
        .unwrap_or_else(|| panic!("no formatted {part} in {entry}"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn bpftool_dump_shows_field_names() {
    let web = Ipv4Addr::new(198, 18, 1, 10);
    // A sticky frontend (AFFINITY) and one with source ranges (SRC_RANGES),
    // so every map has an entry to show.
    let mut sticky = cluster_ip(
        "web",
        Ipv4Addr::new(198, 19, 0, 10),
        80,
        Protocol::TCP,
        &[(web, 8080)],
    );
    sticky.affinity_timeout_seconds = Some(60);
    let mut ranged = cluster_ip(
        "ranged",
        Ipv4Addr::new(198, 19, 0, 11),
        80,
        Protocol::TCP,
        &[(web, 8080)],
    );
    ranged.source_ranges = vec!["198.18.0.0/16".parse().unwrap()];
    let lab = one_node_lab(&[sticky, ranged]);
    // A process of the node dials the Service: SOCK_RNAT gets an entry.
    let node_curl = lab
        .node("node-1")
        .unwrap()
        .command("curl")
        .unwrap()
        .args(["-sS", "--max-time", "5", "http://198.19.0.10/"])
        .output()
        .unwrap();
    assert!(node_curl.status.success());
    // One flow, so the conntrack map has an entry to show.
    let output = lab
        .pod("curl")
        .unwrap()
        .command("curl")
        .unwrap()
        .args(["-sS", "--max-time", "5", "http://198.19.0.10/"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let pin_dir = &lab.node("node-1").unwrap().pin_dir;

    let services = dump(&pin_dir.join(names::SERVICES));
    assert_eq!(services.len(), 4, "two frontends, header and one slot each");
    for expected in ["addr_be", "port_be", "proto", "scope", "slot"] {
        assert!(
            fields(&services[0], "key").contains(&expected.to_owned()),
            "{expected}"
        );
    }
    let header = services
        .iter()
        .find(|e| e["formatted"]["key"]["slot"] == 0)
        .unwrap();
    assert_eq!(header["formatted"]["value"]["count"], 1);
    assert!(fields(header, "value").contains(&"rev_nat_id".to_owned()));

    for (map, part, field) in [
        (names::BACKENDS, "value", "addr_be"),
        (names::REV_NAT, "value", "port_be"),
        (names::FRONTEND_META, "value", "service"),
        (names::CT, "key", "saddr_be"),
        (names::CT, "value", "backend_id"),
        (names::AFFINITY, "key", "client_addr_be"),
        (names::AFFINITY, "value", "last_used_ns"),
        (names::SOURCE_RANGES, "key", "prefix_len"),
        (names::CONFIG, "value", "node_addr_be"),
        (names::SOCK_REV_NAT, "key", "cookie"),
        (names::SOCK_REV_NAT, "value", "addr_be"),
    ] {
        let entries = dump(&pin_dir.join(map));
        assert!(!entries.is_empty(), "{map} is empty");
        assert!(
            fields(&entries[0], part).contains(&field.to_owned()),
            "{map} {part} lacks {field}"
        );
    }
    let stats = dump(&pin_dir.join(names::FRONTEND_STATS));
    let counters = &stats[0]["formatted"]["values"][0]["value"];
    assert!(counters.get("packets").is_some(), "{counters}");
    // One slot per possible drop reason, each a struct with a packets field.
    let drops = dump(&pin_dir.join(names::DROP_STATS));
    assert_eq!(drops.len(), DropReason::SLOTS as usize);
    let counters = &drops[0]["formatted"]["values"][0]["value"];
    assert!(counters["packets"].is_u64(), "{counters}");
}
