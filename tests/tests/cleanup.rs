//! A lab removes everything it made: when dropped, while a failing test
//! unwinds, and (for runs that were killed) when the next lab comes up.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{net::Ipv4Addr, path::Path, process::Command};

use svc_agent::model::Protocol;
use svc_lab::netns::{self, PREFIX};
use tests::{cluster_ip, one_node_lab};

fn namespaces_of(lab_id: &str) -> Vec<String> {
    netns::lab_namespaces()
        .into_iter()
        .filter(|name| name.starts_with(&format!("{lab_id}-")))
        .collect()
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    let web = Ipv4Addr::new(198, 18, 1, 10);
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(move || {
        let lab = one_node_lab(&[cluster_ip(
            "web",
            Ipv4Addr::new(198, 19, 0, 10),
            80,
            Protocol::TCP,
            &[(web, 8080)],
        )]);
        let pin_dir = lab.pin_dir().to_path_buf();
        tx.send((lab.id().to_owned(), pin_dir.clone())).unwrap();
        assert!(pin_dir.join("node-1/links").exists());
        assert_eq!(
            namespaces_of(lab.id()).len(),
            5,
            "fabric, node, two pods, client"
        );
        panic!("a test failing while its lab is up");
    });
    assert!(result.is_err());
    let (id, pin_dir) = rx.recv().unwrap();
    assert_eq!(namespaces_of(&id), Vec::<String>::new());
    assert!(!pin_dir.exists(), "{} is left", pin_dir.display());
}

#[test]
fn leftovers_of_a_killed_run_are_swept() {
    // A pid no process has: beyond the kernel's pid_max.
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let dead = pid_max + 1;
    let name = format!("{PREFIX}{dead}x0-node-ghost");
    // A ghost of an earlier, interrupted run of this very test may be there.
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
    let status = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap();
    assert!(status.success());
    svc_lab::ensure_bpffs().unwrap();
    let pin_dir = svc_lab::pin_root().join(format!("{PREFIX}{dead}x0"));
    std::fs::create_dir_all(pin_dir.join("node-1")).unwrap();

    netns::sweep_stale(&svc_lab::pin_root());

    assert!(
        !Path::new("/run/netns").join(&name).exists(),
        "{name} was not swept"
    );
    assert!(!pin_dir.exists(), "{} was not swept", pin_dir.display());
}

#[test]
fn maps_an_earlier_version_pinned_are_unpinned_when_the_datapath_loads() {
    let lab = one_node_lab(&[]);
    let node_pins = lab.pin_dir().join("node-1");
    let retired = node_pins.join(svc_common::names::RETIRED[0]);
    // Any map will do as the earlier version's, pinned under its name.
    aya::maps::MapData::from_pin(node_pins.join(svc_common::names::DROP_STATS))
        .unwrap()
        .pin(&retired)
        .unwrap();
    assert!(retired.exists());
    lab.load_datapath("node-1").unwrap();
    assert!(!retired.exists());
    assert!(node_pins.join(svc_common::names::DROP_STATS).exists());
}
