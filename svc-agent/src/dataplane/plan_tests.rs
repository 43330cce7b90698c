//! Plan and apply against the in-memory maps (fake.rs): expected map
//! contents per scenario (golden/*.maps; `SVC_BLESS=1` rewrites them), the
//! make-before-break order checked after every single operation, and a
//! failure at each operation of each update in turn (each frontend is then
//! as it was or as it is wanted, and a retry converges).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::PathBuf,
    sync::Arc,
};

use svc_common::{FrontendMeta, ServiceSlot, frontend_flags, names};

use super::{
    DataplaneError, apply,
    entries::{BackendEntry as Backend, RevNatEntry as RevNat, SlotKey as FrontendKey},
    fake::FakeMaps,
    held::Held,
    maps::{Contents, RangeEntry, ServiceMaps as _},
    plan,
};
use crate::model::{
    BackendRef, BackendState, Cidr, Frontend, FrontendKind, LbAlgorithm, OnEmpty, Protocol,
};

/// Maglev tables here are of the smallest size taken, to keep the golden
/// files short.
const MAGLEV_SIZE: u16 = svc_common::maglev::MIN_TABLE_SIZE;

fn backend(last: u8, state: BackendState) -> BackendRef {
    BackendRef {
        address: Ipv4Addr::new(198, 18, 1, last).into(),
        port: 8080,
        state,
        local: last.is_multiple_of(2),
    }
}

fn ready(lasts: &[u8]) -> Vec<BackendRef> {
    lasts
        .iter()
        .map(|last| backend(*last, BackendState::Ready))
        .collect()
}

fn frontend(service: &str, kind: FrontendKind, address: [u8; 4], port: u16) -> Frontend {
    Frontend {
        service: service.into(),
        port_name: "http".into(),
        kind,
        address: Ipv4Addr::from(address).into(),
        port,
        protocol: Protocol::TCP,
        backends: ready(&[1, 2]),
        affinity_timeout_seconds: None,
        on_empty: OnEmpty::Reject,
        source_ranges: Vec::new(),
        health_check_node_port: None,
        lb_algorithm: Default::default(),
    }
}

fn web() -> Frontend {
    frontend("default/web", FrontendKind::ClusterIP, [198, 19, 0, 10], 80)
}

fn web_node_port() -> Frontend {
    frontend(
        "default/web",
        FrontendKind::NodePort,
        [198, 18, 0, 1],
        30080,
    )
}

fn api() -> Frontend {
    Frontend {
        backends: ready(&[2, 7]),
        ..frontend(
            "default/api",
            FrontendKind::ClusterIP,
            [198, 19, 0, 20],
            443,
        )
    }
}

fn lb(ranges: &[&str]) -> Frontend {
    Frontend {
        source_ranges: ranges.iter().map(|r| r.parse().unwrap()).collect(),
        ..frontend(
            "default/web-lb",
            FrontendKind::LoadBalancer,
            [198, 18, 100, 1],
            80,
        )
    }
}

fn maglev(frontend: Frontend) -> Frontend {
    Frontend {
        lb_algorithm: LbAlgorithm::Maglev,
        ..frontend
    }
}

/// One update: the frontends wanted, and whether a new agent (nothing in
/// memory, the maps read back) makes it.
struct Stage {
    what: &'static str,
    desired: Vec<Frontend>,
    new_agent: bool,
}

fn stage(what: &'static str, desired: Vec<Frontend>) -> Stage {
    Stage {
        what,
        desired,
        new_agent: false,
    }
}

struct Scenario {
    name: &'static str,
    stages: Vec<Stage>,
    /// sessionAffinity entries packets made, by stage index: (rev_nat_id,
    /// client last octet, backend id), added before that stage's update.
    affinities: Vec<(usize, u32, u8, u32)>,
}

fn scenarios() -> Vec<Scenario> {
    let with_affinity = |mut f: Frontend| {
        f.affinity_timeout_seconds = Some(10_800);
        f
    };
    vec![
        Scenario {
            name: "create",
            stages: vec![stage(
                "a ClusterIP, its NodePort and an LB with a source range",
                vec![web(), web_node_port(), lb(&["198.18.50.0/24"])],
            )],
            affinities: vec![],
        },
        Scenario {
            name: "change",
            stages: vec![
                stage(
                    "three backends",
                    vec![Frontend {
                        backends: ready(&[1, 2, 3]),
                        ..web()
                    }],
                ),
                stage(
                    "two replaced: one ready, one terminating; a trailing slot goes",
                    vec![Frontend {
                        backends: vec![
                            backend(4, BackendState::Ready),
                            backend(2, BackendState::Terminating),
                        ],
                        ..web()
                    }],
                ),
                stage(
                    "none ready or terminating: reject stays, drop when eTP Local",
                    vec![
                        Frontend {
                            backends: vec![],
                            ..web()
                        },
                        Frontend {
                            backends: vec![],
                            on_empty: OnEmpty::Drop,
                            ..web_node_port()
                        },
                    ],
                ),
            ],
            affinities: vec![],
        },
        Scenario {
            name: "remove",
            stages: vec![
                stage("two Services sharing backend .2", vec![web(), api()]),
                stage("web removed: .1 goes, .2 stays for api", vec![api()]),
                stage("everything removed", vec![]),
            ],
            affinities: vec![],
        },
        Scenario {
            name: "id-reuse",
            stages: vec![
                stage("web and api", vec![web(), api()]),
                stage("web removed", vec![api()]),
                Stage {
                    what: "a new agent adopts the maps; web comes back with a fresh id",
                    desired: vec![api(), web()],
                    new_agent: true,
                },
            ],
            affinities: vec![],
        },
        Scenario {
            name: "affinity",
            stages: vec![
                stage("sessionAffinity ClientIP", vec![with_affinity(web())]),
                stage(
                    "backend .2 goes: its clients are forgotten",
                    vec![with_affinity(Frontend {
                        backends: ready(&[1, 3]),
                        ..web()
                    })],
                ),
                stage("the Service goes: every client forgotten", vec![]),
            ],
            // rev_nat_id 1; backend ids 1 (.1) and 2 (.2).
            affinities: vec![(1, 1, 31, 1), (1, 1, 32, 2), (2, 1, 33, 3)],
        },
        Scenario {
            name: "maglev",
            stages: vec![
                stage(
                    "a ClusterIP and its NodePort with Maglev: a table each",
                    vec![maglev(web()), maglev(web_node_port())],
                ),
                stage(
                    "a third backend: new tables elsewhere, then the headers",
                    vec![
                        maglev(Frontend {
                            backends: ready(&[1, 2, 3]),
                            ..web()
                        }),
                        maglev(Frontend {
                            backends: ready(&[1, 2, 3]),
                            ..web_node_port()
                        }),
                    ],
                ),
                stage(
                    "only the NodePort's affinity changes: its table stays",
                    vec![
                        maglev(Frontend {
                            backends: ready(&[1, 2, 3]),
                            ..web()
                        }),
                        maglev(with_affinity(Frontend {
                            backends: ready(&[1, 2, 3]),
                            ..web_node_port()
                        })),
                    ],
                ),
                stage(
                    "none ready: the terminating one fills the table",
                    vec![maglev(Frontend {
                        backends: vec![backend(5, BackendState::Terminating)],
                        ..web()
                    })],
                ),
                stage("back to random: no table", vec![web()]),
            ],
            affinities: vec![],
        },
        Scenario {
            name: "source-ranges",
            stages: vec![
                stage(
                    "two ranges (host bits cleared)",
                    vec![lb(&["198.18.50.7/24", "198.18.60.0/25"])],
                ),
                stage(
                    "one kept, one replaced",
                    vec![lb(&["198.18.60.0/25", "198.18.70.1/32"])],
                ),
                stage("no range: open to all", vec![lb(&[])]),
            ],
            affinities: vec![],
        },
        Scenario {
            name: "dual-stack",
            stages: vec![
                stage(
                    "a ClusterIP of each family; the IPv6 one's backends share ids' space",
                    vec![web(), web6(&[1, 2])],
                ),
                stage(
                    "an IPv6 backend replaced, the IPv4 frontend alone unchanged",
                    vec![web(), web6(&[2, 3])],
                ),
                Stage {
                    new_agent: true,
                    ..stage(
                        "a new agent reads both families back and replaces an IPv6 backend",
                        vec![web(), web6(&[3, 4])],
                    )
                },
                stage(
                    "the IPv4 frontend goes, the IPv6 one stays",
                    vec![web6(&[3, 4])],
                ),
                stage("the IPv6 one goes too", vec![]),
            ],
            affinities: vec![],
        },
    ]
}

/// web's IPv6 ClusterIP [fd00:198:19::10]:80, backends
/// [fd00:198:18:1::`last`]:8080.
fn web6(lasts: &[u8]) -> Frontend {
    Frontend {
        address: "fd00:198:19::10".parse().unwrap(),
        backends: lasts
            .iter()
            .map(|last| BackendRef {
                address: format!("fd00:198:18:1::{last}").parse().unwrap(),
                ..backend(*last, BackendState::Ready)
            })
            .collect(),
        ..web()
    }
}

fn add_affinities(maps: &mut FakeMaps, scenario: &Scenario, stage: usize) {
    for (at, rev_nat_id, client, backend_id) in &scenario.affinities {
        if *at == stage {
            let client = u32::from_ne_bytes([198, 18, 9, *client]);
            maps.affinities.insert((*rev_nat_id, client), *backend_id);
        }
    }
}

/// Runs `scenario` on fresh maps; for each stage, the maps before and
/// after it, and the golden text.
fn run_scenario(scenario: &Scenario) -> (Vec<(FakeMaps, FakeMaps)>, String) {
    let mut maps = FakeMaps::default();
    let mut held: Option<Held> = None;
    let mut transitions = Vec::new();
    let mut text = String::new();
    for (index, stage) in scenario.stages.iter().enumerate() {
        if stage.new_agent {
            held = None;
        }
        add_affinities(&mut maps, scenario, index);
        let before = maps.clone();
        let report = apply::apply(&mut maps, &mut held, &stage.desired, MAGLEV_SIZE)
            .unwrap_or_else(|e| {
                panic!("{} stage {index}: {e}", scenario.name);
            });
        text.push_str(&format!(
            "# {}: {} ({} written, {} removed, {} backends removed)\n",
            index + 1,
            stage.what,
            report.frontends_written,
            report.frontends_removed,
            report.backends_removed
        ));
        text.push_str(&maps.render());
        transitions.push((before, maps.clone()));
    }
    (transitions, text)
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/dataplane/golden")
        .join(format!("{name}.maps"))
}

#[test]
fn each_scenario_leaves_the_maps_its_golden_file_holds() {
    let bless = std::env::var_os("SVC_BLESS").is_some();
    for scenario in scenarios() {
        let (_, text) = run_scenario(&scenario);
        let path = golden_path(scenario.name);
        if bless {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (SVC_BLESS=1 writes it)", path.display()));
        assert_eq!(
            text,
            expected,
            "{} differs from {} (SVC_BLESS=1 rewrites it)",
            scenario.name,
            path.display()
        );
    }
}

/// Per frontend header: the header and the backends (by value) its slots
/// may name.
type Views = BTreeMap<FrontendKey, (ServiceSlot, BTreeSet<Backend>)>;

fn views(contents: &Contents) -> Views {
    contents
        .slots
        .keys()
        .filter(|key| key.slot == 0)
        .filter_map(|key| {
            let (header, backends, ..) = whole(contents, key)?;
            Some((*key, (header, backends.into_iter().flatten().collect())))
        })
        .collect()
}

/// What a packet can see of `now` is whole, and each frontend is the old
/// or the new one: its header is one of the two, every slot up to its
/// count is there and names a backend that is there and is one of the old
/// or new backends, its reverse translation and metadata are there, and
/// with the source-range flag its ranges are.
fn assert_whole(now: &Contents, old: &Views, new: &Views, context: &str) {
    for (key, header) in now.slots.iter().filter(|(key, _)| key.slot == 0) {
        let (old, new) = (old.get(key), new.get(key));
        assert!(
            old.is_some_and(|(h, _)| h == header) || new.is_some_and(|(h, _)| h == header),
            "{context}: header {key:?} is {header:?}, neither old {old:?} nor new {new:?}"
        );
        for slot in 1..=header.count + header.terminating_count {
            let entry = now.slots.get(&key.with_slot(slot));
            let backend = entry.and_then(|entry| now.backends.get(&entry.backend_id));
            let Some(backend) = backend else {
                panic!("{context}: slot {slot} of {key:?} names nothing ({entry:?})");
            };
            assert!(
                old.into_iter()
                    .chain(new)
                    .any(|(_, backends)| backends.contains(backend)),
                "{context}: slot {slot} of {key:?} names {backend:?}, not an old or new backend"
            );
        }
        assert!(
            now.rev_nats.contains_key(&header.rev_nat_id),
            "{context}: no reverse translation for {key:?}"
        );
        assert!(
            now.metas.contains_key(&header.rev_nat_id),
            "{context}: no metadata for {key:?}"
        );
        if header.flags & frontend_flags::SOURCE_RANGES != 0 {
            assert!(
                now.ranges.iter().any(|r| r.rev_nat_id == header.rev_nat_id),
                "{context}: {key:?} allows only source ranges, and has none"
            );
        }
    }
}

#[test]
fn every_state_between_two_operations_is_whole() {
    for scenario in scenarios() {
        let (transitions, _) = run_scenario(&scenario);
        for (index, (before, after)) in transitions.iter().enumerate() {
            let stage = &scenario.stages[index];
            let (old, new) = (views(&before.contents), views(&after.contents));
            let mut maps = before.clone();
            let mut held = Held::new(maps.contents().unwrap(), MAGLEV_SIZE);
            let plan = plan::plan(&mut held, &stage.desired).unwrap();
            assert!(!plan.ops.is_empty(), "{} stage {index}", scenario.name);
            for (n, op) in plan.ops.iter().enumerate() {
                apply::execute(&mut maps, op).unwrap();
                let context = format!("{} stage {index} after {n}: {op}", scenario.name);
                assert_whole(&maps.contents, &old, &new, &context);
                assert_tables_whole(&maps, &[&before.contents, &after.contents], &context);
            }
            assert_eq!(maps.contents, after.contents, "{}", scenario.name);
        }
    }
}

/// Every Maglev table a header names is whole: each of its entries names
/// a backend BACKENDS holds that the frontend has in one of `states` (the
/// maps before and after an update: slots are rewritten in place, so a
/// table may name a backend the frontend is leaving while its header
/// stands).
fn assert_tables_whole(maps: &FakeMaps, states: &[&Contents], context: &str) {
    let now = &maps.contents;
    for (key, header) in now.slots.iter().filter(|(key, _)| key.slot == 0) {
        if header.maglev_size == 0 {
            continue;
        }
        let allowed: BTreeSet<Backend> = states
            .iter()
            .filter_map(|contents| whole(contents, key))
            .flat_map(|(_, backends, ..)| backends.into_iter().flatten())
            .collect();
        let start = header.maglev_start();
        for index in start..start + u32::from(header.maglev_size) {
            let entry = maps.maglev.get(&index);
            let backend = entry.and_then(|id| now.backends.get(id));
            assert!(
                backend.is_some_and(|backend| allowed.contains(backend)),
                "{context}: entry {index} of {key:?}'s table is {entry:?} ({backend:?}), \
                 not one of {allowed:?}"
            );
        }
    }
}

/// `contents` with every Maglev header's table start cleared: where a
/// table lands depends on which room was free, which a failed update
/// changes; that it is whole is checked apart.
fn without_table_starts(contents: &Contents) -> Contents {
    let mut contents = contents.clone();
    for (key, slot) in contents.slots.iter_mut() {
        if key.slot == 0 && slot.maglev_size != 0 {
            slot.backend_id = 0;
        }
    }
    contents
}

/// Everything the maps hold of the frontend with header `key`: header,
/// backends in slot order, reverse translation, metadata, source ranges.
type Whole = (
    ServiceSlot,
    Vec<Option<Backend>>,
    Option<RevNat>,
    Option<FrontendMeta>,
    Vec<RangeEntry>,
);

fn whole(contents: &Contents, key: &FrontendKey) -> Option<Whole> {
    let header = *contents.slots.get(key)?;
    let id = header.rev_nat_id;
    let backends = (1..=header.count + header.terminating_count)
        .map(|slot| {
            let entry = contents.slots.get(&key.with_slot(slot))?;
            contents.backends.get(&entry.backend_id).copied()
        })
        .collect();
    let ranges = contents
        .ranges
        .iter()
        .filter(|range| range.rev_nat_id == id)
        .copied()
        .collect();
    Some((
        header,
        backends,
        contents.rev_nats.get(&id).copied(),
        contents.metas.get(&id).copied(),
        ranges,
    ))
}

/// Each frontend in `now` is whole as in `old` or as in `new` (absent
/// counts), and nothing is held that neither has: no stray slot, backend,
/// reverse translation, metadata or range.
fn assert_old_or_new(now: &Contents, old: &Contents, new: &Contents, context: &str) {
    let headers: BTreeSet<FrontendKey> = [old, new, now]
        .iter()
        .flat_map(|c| c.slots.keys().filter(|key| key.slot == 0).copied())
        .collect();
    for key in &headers {
        let is = whole(now, key);
        assert!(
            is == whole(old, key) || is == whole(new, key),
            "{context}: {key:?} is {is:?}, neither old {:?} nor new {:?}",
            whole(old, key),
            whole(new, key)
        );
    }
    let stray_slot = now
        .slots
        .iter()
        .find(|(key, _)| !old.slots.contains_key(key) && !new.slots.contains_key(key));
    assert_eq!(stray_slot, None, "{context}: a slot neither old nor new");
    for (id, backend) in &now.backends {
        assert!(
            old.backends.get(id) == Some(backend) || new.backends.get(id) == Some(backend),
            "{context}: backend {id} {backend:?} neither old nor new"
        );
    }
    for id in now.rev_nats.keys().chain(now.metas.keys()) {
        assert!(
            old.rev_nats.contains_key(id) || new.rev_nats.contains_key(id),
            "{context}: rev_nat id {id} neither old nor new"
        );
    }
    for range in &now.ranges {
        assert!(
            old.ranges.contains(range) || new.ranges.contains(range),
            "{context}: range {range:?} neither old nor new"
        );
    }
}

#[test]
fn a_failure_at_any_operation_leaves_each_frontend_old_or_new_and_a_retry_converges() {
    let mut cases = 0;
    for scenario in scenarios() {
        let (transitions, _) = run_scenario(&scenario);
        for (index, (before, after)) in transitions.iter().enumerate() {
            let desired = &scenario.stages[index].desired;
            let steps = plan::plan(
                &mut Held::new(before.contents().unwrap(), MAGLEV_SIZE),
                desired,
            )
            .unwrap()
            .ops
            .len();
            for failing in 0..steps {
                let context = format!("{} stage {index}, operation {failing} fails", scenario.name);
                let mut maps = FakeMaps {
                    fail_at: Some((before.ops + failing, libc::EIO)),
                    ..before.clone()
                };
                let mut held = None;
                let error =
                    apply::apply(&mut maps, &mut held, desired, MAGLEV_SIZE).expect_err(&context);
                assert!(
                    matches!(error, DataplaneError::Map { .. }),
                    "{context}: {error}"
                );
                assert!(
                    held.is_none(),
                    "{context}: kept a memory of a failed update"
                );
                assert_old_or_new(&maps.contents, &before.contents, &after.contents, &context);
                assert!(
                    maps.generation > before.generation,
                    "{context}: caches not told"
                );

                apply::apply(&mut maps, &mut held, desired, MAGLEV_SIZE).expect(&context);
                assert_tables_whole(&maps, &[&after.contents], &context);
                assert_eq!(
                    without_table_starts(&maps.contents),
                    without_table_starts(&after.contents),
                    "{context}: retry did not converge"
                );
                cases += 1;
            }
        }
    }
    assert!(cases > 100, "only {cases} failure cases");
}

#[test]
fn a_full_map_names_the_service_that_did_not_fit_and_changes_nothing() {
    let mut maps = FakeMaps::default();
    let mut held = None;
    apply::apply(&mut maps, &mut held, &[api()], MAGLEV_SIZE).unwrap();
    let before = maps.contents.clone();
    // web's first write after its counters and metadata: a new backend.
    maps.fail_at = Some((maps.ops + 3, libc::E2BIG));
    let error = apply::apply(&mut maps, &mut held, &[api(), web()], MAGLEV_SIZE).unwrap_err();
    assert_eq!(error.service(), Some("default/web"), "{error}");
    assert!(
        matches!(error, DataplaneError::Full { map, .. } if map == names::BACKENDS),
        "{error}"
    );
    assert_eq!(maps.contents, before);
}

#[test]
fn a_bad_source_range_fails_the_plan_before_any_write() {
    let mut maps = FakeMaps::default();
    let mut held = None;
    apply::apply(&mut maps, &mut held, &[web()], MAGLEV_SIZE).unwrap();
    let ops = maps.ops;
    let mut bad = lb(&[]);
    bad.source_ranges = vec![Cidr {
        address: Ipv4Addr::new(198, 18, 0, 0).into(),
        prefix: 33,
    }];
    let error = apply::apply(&mut maps, &mut held, &[web(), bad], MAGLEV_SIZE).unwrap_err();
    assert_eq!(error.service(), Some("default/web-lb"), "{error}");
    assert_eq!(maps.ops, ops, "something was written");
}

/// Each scenario once more with every stage after the first applied as a
/// change (`apply_delta`: the frontends that differ written, those gone
/// removed): the maps hold the same after every stage as when each stage
/// is applied whole.
#[test]
fn a_change_applied_alone_leaves_the_maps_as_applying_everything_does() {
    for scenario in scenarios() {
        let (transitions, _) = run_scenario(&scenario);
        let mut maps = FakeMaps::default();
        let mut held: Option<Held> = None;
        let mut last: Vec<Arc<Frontend>> = Vec::new();
        for (index, stage) in scenario.stages.iter().enumerate() {
            add_affinities(&mut maps, &scenario, index);
            let desired: Vec<Arc<Frontend>> = stage.desired.iter().cloned().map(Arc::new).collect();
            let key = |f: &Frontend| (f.address, f.port, f.protocol);
            if held.is_none() || stage.new_agent {
                held = None;
                apply::apply(&mut maps, &mut held, &desired, MAGLEV_SIZE).unwrap();
            } else {
                let written: Vec<Arc<Frontend>> = desired
                    .iter()
                    .filter(|f| !last.iter().any(|old| old == *f))
                    .cloned()
                    .collect();
                let removed: Vec<Arc<Frontend>> = last
                    .iter()
                    .filter(|old| !desired.iter().any(|f| key(f) == key(old)))
                    .cloned()
                    .collect();
                apply::apply_delta(&mut maps, &mut held, &written, &removed).unwrap();
            }
            assert_eq!(
                maps.render(),
                transitions[index].1.render(),
                "{} stage {index}: {}",
                scenario.name,
                stage.what
            );
            last = desired;
        }
    }
}

#[test]
fn a_change_needs_the_maps_contents_known_first() {
    let mut maps = FakeMaps::default();
    let mut held = None;
    let error = apply::apply_delta(&mut maps, &mut held, &[Arc::new(web())], &[]).unwrap_err();
    assert!(matches!(error, DataplaneError::NothingHeld), "{error}");
    assert_eq!(maps.ops, 0, "nothing written");
}

#[test]
fn an_unchanged_update_writes_nothing() {
    let mut maps = FakeMaps::default();
    let mut held = None;
    let desired = [web(), maglev(api()), lb(&["198.18.50.0/24"])];
    apply::apply(&mut maps, &mut held, &desired, MAGLEV_SIZE).unwrap();
    let (ops, generation) = (maps.ops, maps.generation);
    assert_eq!(
        apply::apply(&mut maps, &mut held, &desired, MAGLEV_SIZE).unwrap(),
        plan::ApplyReport::default()
    );
    // A new agent reads the maps and finds nothing to do either.
    let mut held = None;
    apply::apply(&mut maps, &mut held, &desired, MAGLEV_SIZE).unwrap();
    assert_eq!((maps.ops, maps.generation), (ops, generation));
}

#[test]
fn a_new_table_size_rebuilds_every_table_and_frees_the_old_ones_after() {
    let mut maps = FakeMaps::default();
    let mut held = None;
    let desired = [maglev(web()), maglev(api())];
    apply::apply(&mut maps, &mut held, &desired, MAGLEV_SIZE).unwrap();
    let starts = |maps: &FakeMaps| -> BTreeSet<(u32, u16)> {
        maps.contents
            .slots
            .iter()
            .filter(|(key, _)| key.slot == 0)
            .map(|(_, header)| (header.maglev_start(), header.maglev_size))
            .collect()
    };
    let before = starts(&maps);
    assert_eq!(before, BTreeSet::from([(0, 251), (251, 251)]));

    // A restarted agent told another size: new tables beside the old ones
    // (still named until each header moves), no entry overwritten.
    let mut held = None;
    apply::apply(&mut maps, &mut held, &desired, 257).unwrap();
    assert_eq!(starts(&maps), BTreeSet::from([(502, 257), (759, 257)]));
    assert_tables_whole(&maps, &[&maps.contents], "after the new size");

    // The next update may reuse the old room.
    let third = maglev(lb(&[]));
    let desired = [maglev(web()), maglev(api()), third];
    apply::apply(&mut maps, &mut held, &desired, 257).unwrap();
    assert!(
        starts(&maps).contains(&(0, 257)),
        "the first old table's room is free again: {:?}",
        starts(&maps)
    );
    assert_tables_whole(&maps, &[&maps.contents], "after a third frontend");
}

#[test]
fn tables_lost_under_their_headers_are_written_again_by_a_new_agent() {
    let mut maps = FakeMaps::default();
    let mut held = None;
    let desired = [maglev(web()), maglev(api())];
    apply::apply(&mut maps, &mut held, &desired, MAGLEV_SIZE).unwrap();
    // MAGLEV_V1 made anew (an upgrade that replaced the map): the headers
    // still name tables, which hold nothing now.
    maps.maglev.clear();
    let mut held = None;
    let report = apply::apply(&mut maps, &mut held, &desired, MAGLEV_SIZE).unwrap();
    assert_eq!(report.frontends_written, 2, "both tables written again");
    assert_tables_whole(&maps, &[&maps.contents], "after the new agent");
    // And kept from then on.
    let mut held = None;
    let report = apply::apply(&mut maps, &mut held, &desired, MAGLEV_SIZE).unwrap();
    assert_eq!(report, plan::ApplyReport::default());
}
