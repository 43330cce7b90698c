//! What `Tables::apply` does with a Service the maps cannot take: the
//! error names it, nothing of it stays half-written, and the other
//! Services are still written.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::Ipv4Addr;

use svc_agent::{
    dataplane::{Datapath, DataplaneError},
    model::{Frontend, FrontendKind, Protocol},
};
use svc_common::{MAX_SOURCE_RANGES, names};
use tests::*;

const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);

/// A LoadBalancer frontend on 198.19.1.`host` allowing `ranges` clients
/// (one /32 each).
fn guarded(name: &str, host: u8, ranges: u32) -> Frontend {
    let mut frontend = frontend(
        FrontendKind::LoadBalancer,
        name,
        (Ipv4Addr::new(198, 19, 1, host), 80),
        Protocol::TCP,
        &[ready(BACKEND, 8080, true)],
    );
    frontend.source_ranges = (0..ranges)
        .map(|i| {
            format!("198.18.{}.{}/32", i / 250, i % 250 + 1)
                .parse()
                .unwrap()
        })
        .collect();
    frontend
}

#[test]
fn source_ranges_overflowing_their_map_leave_that_service_out_and_nothing_behind() {
    let mut datapath = Datapath::load(None).expect("load the datapath (root, kernel >= 6.6)");
    let plain = cluster_ip(
        "plain",
        Ipv4Addr::new(198, 19, 0, 10),
        80,
        Protocol::TCP,
        &[(BACKEND, 8080)],
    );
    let too_many = guarded("too-many", 1, MAX_SOURCE_RANGES + 600);
    let error = datapath
        .tables()
        .apply(&[plain.clone(), too_many])
        .unwrap_err();
    assert_eq!(error.service(), Some("test/too-many"), "{error}");
    assert!(
        matches!(error, DataplaneError::Full { map, .. } if map == names::SOURCE_RANGES),
        "{error}"
    );

    // Its ranges were taken back: another Service's nearly full set fits.
    let nearly_full = guarded("nearly-full", 2, MAX_SOURCE_RANGES - 10);
    datapath
        .tables()
        .apply(&[plain, nearly_full])
        .expect("the map had room again");
    let mut held: Vec<String> = datapath
        .tables()
        .read()
        .unwrap()
        .into_iter()
        .map(|state| state.frontend.service)
        .collect();
    held.sort();
    assert_eq!(held, ["test/nearly-full", "test/plain"]);
}
