//! A datapath whose maps are pinned in a bpffs directory of the test's
//! own, so a test can reach the conntrack tables behind the programs' back:
//! forget flows, or age them as if time had passed.
use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::maps::{HashMap, Map, MapData};
use svc_agent::{
    dataplane::{self, Datapath, NodeSettings},
    model::Frontend,
};
use svc_common::{CollectMark, Flow, FlowKey, names, time_units};

use crate::{TC_ACT_OK, XDP_PASS, run_tc, run_xdp};

/// A bpffs directory of a test's own, removed when dropped (also on panic).
pub struct PinDir(pub PathBuf);

impl PinDir {
    /// Mounts bpffs on /sys/fs/bpf first if nothing is mounted there (a
    /// machine without systemd): a test run alone must not depend on a lab
    /// test having mounted it before.
    pub fn new(what: &str) -> Self {
        svc_lab::ensure_bpffs().expect("mount bpffs on /sys/fs/bpf");
        static NEXT: AtomicU32 = AtomicU32::new(0);
        Self(PathBuf::from(format!(
            "/sys/fs/bpf/svc-test-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = dataplane::remove_pins(&self.0) {
            eprintln!("could not remove {}: {e}", self.0.display());
        }
    }
}

/// Which conntrack table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// CT_V2.
    Established,
    /// CT_NEW_V2.
    New,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Established => names::CT,
            Table::New => names::CT_NEW,
        }
    }
}

pub struct Pinned {
    pub datapath: Datapath,
    // Declared last: dropped after the datapath.
    pub dir: PinDir,
}

impl Pinned {
    pub fn load(what: &str, frontends: &[Frontend], node: Option<NodeSettings>) -> Self {
        let dir = PinDir::new(what);
        let mut datapath =
            Datapath::load(Some(&dir.0)).expect("load the datapath (root, kernel >= 6.6)");
        if let Some(node) = node {
            datapath.tables().set_node(&node).unwrap();
        }
        datapath.tables().apply(frontends).unwrap();
        Self { datapath, dir }
    }

    pub fn table(&self, table: Table) -> HashMap<MapData, FlowKey, Flow> {
        let map = MapData::from_pin(self.dir.0.join(table.name())).unwrap();
        HashMap::try_from(Map::from_map_data(map).unwrap()).unwrap()
    }

    /// CT_COLLECT_V1: the conntrack keys the collector marked.
    pub fn marks(&self) -> HashMap<MapData, FlowKey, CollectMark> {
        let map = MapData::from_pin(self.dir.0.join(names::CT_COLLECTING)).unwrap();
        HashMap::try_from(Map::from_map_data(map).unwrap()).unwrap()
    }

    /// Every entry of one table.
    pub fn entries(&self, table: Table) -> Vec<(FlowKey, Flow)> {
        self.table(table).iter().map(Result::unwrap).collect()
    }

    /// Removes every conntrack entry of both tables, without the tables
    /// generation changing: what only the flow cache still knows of a flow.
    pub fn forget_flows_behind_its_back(&self) {
        let mut removed = 0;
        for table in [Table::Established, Table::New] {
            let mut map = self.table(table);
            let keys: Vec<FlowKey> = map.keys().map(Result::unwrap).collect();
            for key in keys {
                map.remove(&key).unwrap();
                removed += 1;
            }
        }
        assert!(removed > 0, "no flow to forget");
    }

    /// Moves the creation and last-seen times of the entries of `table`
    /// that `which` picks back by `ns`, as if that much time had passed.
    pub fn age(&self, table: Table, ns: u64, which: impl Fn(&FlowKey, &Flow) -> bool) -> usize {
        let mut map = self.table(table);
        let entries: Vec<(FlowKey, Flow)> = map.iter().map(Result::unwrap).collect();
        let mut aged = 0;
        for (key, mut entry) in entries {
            if which(&key, &entry) {
                entry.created_units = entry.created_units.wrapping_sub(time_units(ns));
                entry.last_seen_ns = entry.last_seen_ns.saturating_sub(ns);
                map.insert(key, entry, 0).unwrap();
                aged += 1;
            }
        }
        aged
    }

    /// Entries in both tables.
    pub fn flows(&mut self) -> usize {
        self.datapath.tables().flows().unwrap().len()
    }

    /// `frame` through the pod program; it must be passed on.
    pub fn pod(&mut self, frame: &[u8]) -> Vec<u8> {
        let (verdict, out) = self.pod_verdict(frame);
        assert_eq!(verdict, TC_ACT_OK);
        out
    }

    /// `frame` through the pod program, whatever it decides.
    pub fn pod_verdict(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        run_tc(self.datapath.from_pod_program().unwrap(), frame)
    }

    /// `frame` through the NIC program; it must be passed on.
    pub fn world(&mut self, frame: &[u8]) -> Vec<u8> {
        let (verdict, out) = self.world_verdict(frame);
        assert_eq!(verdict, XDP_PASS);
        out
    }

    /// `frame` through the NIC program, whatever it decides.
    pub fn world_verdict(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        run_xdp(self.datapath.from_world_program().unwrap(), frame)
    }
}
