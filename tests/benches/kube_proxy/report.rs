//! Medians, spread and ratios; kube-proxy.json, the markdown table and the
//! chart drawn from it.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{Value, json};
use tests::kube_proxy::modes::Mode;

use crate::{Plan, Sample, chart};

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
}

/// Median and (min, max) of one figure over rounds.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    fn of(values: impl Iterator<Item = f64>) -> Self {
        let mut values: Vec<f64> = values.filter(|v| v.is_finite()).collect();
        values.sort_by(f64::total_cmp);
        if values.is_empty() {
            return Self {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        let mid = values.len() / 2;
        let median = if values.len().is_multiple_of(2) {
            (values[mid - 1] + values[mid]) / 2.0
        } else {
            values[mid]
        };
        Self {
            median,
            min: values[0],
            max: values[values.len() - 1],
        }
    }
}

/// One mode at one size, over rounds.
#[derive(Clone, Debug)]
pub struct Figures {
    pub conn_per_s: Spread,
    pub p50_ms: Spread,
    pub p99_ms: Spread,
    pub connect_p99_ms: Spread,
    pub program_all_ms: Spread,
    pub one_change_ms: Spread,
    pub failed: u64,
    pub peak_rss_kib: Option<u64>,
    pub kernel_bytes: Option<u64>,
    pub pod_conn_per_s: Spread,
    pub pod_p50_ms: Spread,
    pub pod_p99_ms: Spread,
    pub stream_gbit_per_s: Spread,
    pub conntrack_entries: Option<u64>,
}

impl Figures {
    fn of(samples: &[Sample]) -> Self {
        let spread = |pick: fn(&Sample) -> f64| Spread::of(samples.iter().map(pick));
        Self {
            conn_per_s: spread(|s| s.conn_per_s),
            p50_ms: spread(|s| s.p50_ms),
            p99_ms: spread(|s| s.p99_ms),
            connect_p99_ms: spread(|s| s.connect_p99_ms),
            program_all_ms: spread(|s| s.program_all_ms),
            one_change_ms: spread(|s| s.one_change_ms),
            failed: samples.iter().map(|s| s.failed).sum(),
            peak_rss_kib: samples.iter().filter_map(|s| s.peak_rss_kib).max(),
            kernel_bytes: samples.iter().filter_map(|s| s.kernel_bytes).max(),
            pod_conn_per_s: spread(|s| s.pod_conn_per_s),
            pod_p50_ms: spread(|s| s.pod_p50_ms),
            pod_p99_ms: spread(|s| s.pod_p99_ms),
            stream_gbit_per_s: spread(|s| s.stream_gbit_per_s),
            conntrack_entries: samples.iter().filter_map(|s| s.conntrack_entries).max(),
        }
    }

    fn json(&self, direct: Option<&Figures>) -> Value {
        let range = |s: Spread| json!([s.min, s.max]);
        let mut value = json!({
            "conn_per_s": self.conn_per_s.median,
            "p50_ms": self.p50_ms.median,
            "p99_ms": self.p99_ms.median,
            "connect_p99_ms": self.connect_p99_ms.median,
            "program_all_ms": self.program_all_ms.median,
            "one_change_ms": self.one_change_ms.median,
            "failed_requests": self.failed,
            "spread": {
                "conn_per_s": range(self.conn_per_s),
                "p99_ms": range(self.p99_ms),
                "program_all_ms": range(self.program_all_ms),
                "one_change_ms": range(self.one_change_ms),
                "pod_conn_per_s": range(self.pod_conn_per_s),
                "stream_gbit_per_s": range(self.stream_gbit_per_s),
            },
            "pod_to_cluster_ip": {
                "conn_per_s": self.pod_conn_per_s.median,
                "p50_ms": self.pod_p50_ms.median,
                "p99_ms": self.pod_p99_ms.median,
            },
            "stream_gbit_per_s": self.stream_gbit_per_s.median,
        });
        if let Some(direct) = direct {
            value["fraction_of_direct"] = json!(self.conn_per_s.median / direct.conn_per_s.median);
        }
        if let Some(rss) = self.peak_rss_kib {
            value["programmer_peak_rss_kib"] = json!(rss);
        }
        if let Some(entries) = self.conntrack_entries {
            value["node1_conntrack_entries_max"] = json!(entries);
        }
        if let Some(bytes) = self.kernel_bytes {
            value["kernel_memory_bytes"] = json!(bytes);
        }
        value
    }
}

pub struct Summary {
    pub quick: bool,
    pub publish: bool,
    pub rounds: usize,
    pub concurrency: usize,
    pub duration: Duration,
    pub pod_duration: Duration,
    pub stream_duration: Duration,
    pub all_node_ports: bool,
    pub elapsed: Duration,
    pub direct: Figures,
    pub by_size: BTreeMap<u16, BTreeMap<Mode, Figures>>,
    pub kernel: String,
    pub cores: usize,
    pub date: String,
}

pub const COMPARED: [Mode; 5] = [
    Mode::SvcLb,
    Mode::SvcLbDsr,
    Mode::Iptables,
    Mode::IptablesNft,
    Mode::Nftables,
];

impl Summary {
    pub fn new(
        plan: &Plan,
        samples: &BTreeMap<(Mode, u16), Vec<Sample>>,
        elapsed: Duration,
    ) -> Self {
        let direct = Figures::of(&samples[&(Mode::Direct, 0)]);
        let mut by_size: BTreeMap<u16, BTreeMap<Mode, Figures>> = BTreeMap::new();
        for ((mode, size), list) in samples {
            if *mode != Mode::Direct {
                by_size
                    .entry(*size)
                    .or_default()
                    .insert(*mode, Figures::of(list));
            }
        }
        let date = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        Self {
            quick: plan.quick,
            publish: plan.publish,
            rounds: plan.rounds,
            concurrency: plan.concurrency,
            duration: plan.duration,
            pod_duration: plan.pod_duration,
            stream_duration: plan.stream_duration,
            all_node_ports: plan.node_ports == tests::kube_proxy::NodePorts::All,
            elapsed,
            direct,
            by_size,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            date,
        }
    }

    fn json(&self) -> Value {
        let services: serde_json::Map<String, Value> = self
            .by_size
            .iter()
            .map(|(size, modes)| {
                let entry: serde_json::Map<String, Value> = modes
                    .iter()
                    .map(|(mode, f)| (mode.key().to_owned(), f.json(Some(&self.direct))))
                    .collect();
                (size.to_string(), Value::Object(entry))
            })
            .collect();
        json!({
            "services": services,
            "direct": self.direct.json(None),
            "machine": {"kernel": self.kernel, "cores": self.cores, "date": self.date},
            "quick": self.quick,
            "rounds": self.rounds,
            "method": format!(
                "fresh two-node lab per mode and size; 10 backend pods are the endpoints of every Service; every Service has a ClusterIP, {}; {} client threads, one HTTP request per connection to the NodePort of the last Service on node-1, {} s per round; pod_to_cluster_ip: the same load from a pod on node-1 to the last Service's ClusterIP, {} s; stream_gbit_per_s: one TCP connection client -> NodePort receiving zeros from the backend's lab server, {} s; kernel_memory_bytes: svc-lb = bytes_memlock of its pinned maps on node-1, iptables/nftables = kernel memory (cgroup memory accounting) the rule loader left charged to its own scratch memory cgroup after programming all Services on node-1; medians over {} rounds, spread = [min, max]; program_all = all Services from empty on node-1 (svc-lb: svc-agent's Translator from Service and EndpointSlice objects, then its Tables' first apply; iptables: iptables-restore of the whole rule set; nftables: nft -f); one_change = one endpoint removed (svc-lb: svc-agent's path from the new EndpointSlice in its store, through its Translator, to the maps, diffed against what its Tables hold; iptables: full resync with iptables-restore; nftables: kube-proxy's incremental transaction)",
                if self.all_node_ports { "every Service also a NodePort" } else { "only the last Service also a NodePort" },
                self.concurrency,
                self.duration.as_secs_f64(),
                self.pod_duration.as_secs_f64(),
                self.stream_duration.as_secs_f64(),
                self.rounds
            ),
        })
    }

    fn ratio(&self, size: u16, other: Mode, pick: fn(&Figures) -> f64) -> f64 {
        let modes = &self.by_size[&size];
        match (modes.get(&Mode::SvcLb), modes.get(&other)) {
            (Some(ours), Some(theirs)) => pick(ours) / pick(theirs),
            // A run limited to some modes (SVC_BENCH_MODES).
            _ => f64::NAN,
        }
    }

    fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# svc-lb vs kube-proxy{}\n\nProduced by `cargo xtask bench kube-proxy{}` ({} round(s), {:.0} s per measurement, {} concurrent client connections, run took {:.0} s).\n\nMachine: Linux {}, {} cores; {}.\n",
            if self.quick { " (quick mode)" } else { "" },
            if self.quick { " --quick" } else { "" },
            self.rounds,
            self.duration.as_secs_f64(),
            self.concurrency,
            self.elapsed.as_secs_f64(),
            self.kernel,
            self.cores,
            self.date
        );
        let node_ports = if self.all_node_ports {
            "every Service also a NodePort (SVC_BENCH_NODEPORTS=all: the worst case for kube-proxy's iptables rules)"
        } else {
            "only the last Service also a NodePort"
        };
        let _ = write!(
            out,
            "Method: a fresh two-node lab per mode and size (only one mode is ever active on the nodes); 10 backend pods (5 per node) are the 10 endpoints of every Service; each Service has a ClusterIP, {node_ports}; the external client opens one connection per HTTP request to the NodePort on node-1 of the *last* Service (the one kube-proxy's rules scan last). Latency is connect() to the last byte of the answer. Rule sets follow kube-proxy's iptables and nftables proxiers (kubernetes/kubernetes pkg/proxy/iptables/proxier.go, pkg/proxy/nftables/proxier.go) and each is checked to forward (curl) before and after the endpoint change. Direct: the client dials the pods themselves through node-1, no translation. Medians over rounds, min-max in brackets.\n\n"
        );
        let _ = writeln!(
            out,
            "Direct path: **{:.0} conn/s** [{:.0}-{:.0}], p50 {:.2} ms, p99 {:.2} ms.\n",
            self.direct.conn_per_s.median,
            self.direct.conn_per_s.min,
            self.direct.conn_per_s.max,
            self.direct.p50_ms.median,
            self.direct.p99_ms.median
        );
        out.push_str("| Services | mode | conn/s | of direct | p50 ms | p99 ms | connect p99 ms | program all ms | one change ms | programmer peak RSS | kernel memory |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (size, modes) in &self.by_size {
            for mode in COMPARED {
                let Some(f) = modes.get(&mode) else { continue };
                let _ = writeln!(
                    out,
                    "| {size} | {} | {:.0} [{:.0}-{:.0}] | {:.0}% | {:.2} | {:.2} [{:.2}-{:.2}] | {:.2} | {:.1} [{:.1}-{:.1}] | {:.1} [{:.1}-{:.1}] | {} | {} |",
                    mode.key(),
                    f.conn_per_s.median,
                    f.conn_per_s.min,
                    f.conn_per_s.max,
                    100.0 * f.conn_per_s.median / self.direct.conn_per_s.median,
                    f.p50_ms.median,
                    f.p99_ms.median,
                    f.p99_ms.min,
                    f.p99_ms.max,
                    f.connect_p99_ms.median,
                    f.program_all_ms.median,
                    f.program_all_ms.min,
                    f.program_all_ms.max,
                    f.one_change_ms.median,
                    f.one_change_ms.min,
                    f.one_change_ms.max,
                    f.peak_rss_kib
                        .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
                    mib(f.kernel_bytes),
                );
            }
        }
        let _ = writeln!(
            out,
            "\nFrom a pod on node-1 to the last Service's ClusterIP ({:.0} s per measurement; direct: the pod dials the backends, **{:.0} conn/s**, p99 {:.2} ms), and one TCP stream from the client to the NodePort ({:.0} s; direct: to one backend pod, **{:.2} Gbit/s**):\n\n| Services | mode | pod conn/s | of direct | pod p50 ms | pod p99 ms | stream Gbit/s |\n|---:|---|---:|---:|---:|---:|---:|",
            self.pod_duration.as_secs_f64(),
            self.direct.pod_conn_per_s.median,
            self.direct.pod_p99_ms.median,
            self.stream_duration.as_secs_f64(),
            self.direct.stream_gbit_per_s.median,
        );
        for (size, modes) in &self.by_size {
            for mode in COMPARED {
                let Some(f) = modes.get(&mode) else { continue };
                let _ = writeln!(
                    out,
                    "| {size} | {} | {:.0} [{:.0}-{:.0}] | {:.0}% | {:.2} | {:.2} | {:.2} [{:.2}-{:.2}] |",
                    mode.key(),
                    f.pod_conn_per_s.median,
                    f.pod_conn_per_s.min,
                    f.pod_conn_per_s.max,
                    100.0 * f.pod_conn_per_s.median / self.direct.pod_conn_per_s.median,
                    f.pod_p50_ms.median,
                    f.pod_p99_ms.median,
                    f.stream_gbit_per_s.median,
                    f.stream_gbit_per_s.min,
                    f.stream_gbit_per_s.max,
                );
            }
        }
        out.push_str("\nRatios ours / theirs (conn/s: higher is better for us; p99 and one change: lower is better for us):\n\n| Services | vs | conn/s | p99 | one change |\n|---:|---|---:|---:|---:|\n");
        for size in self.by_size.keys() {
            for other in [Mode::Iptables, Mode::IptablesNft, Mode::Nftables] {
                let _ = writeln!(
                    out,
                    "| {size} | {} | {:.2} | {:.2} | {:.4} |",
                    other.key(),
                    self.ratio(*size, other, |f| f.conn_per_s.median),
                    self.ratio(*size, other, |f| f.p99_ms.median),
                    self.ratio(*size, other, |f| f.one_change_ms.median),
                );
            }
        }
        out.push_str("\nWhy this harness first measured kube-proxy's iptables modes far below figures taken by hand (iptables legacy 1 862 conn/s at 10 000 Services against about 10 500): every one of the 10 000 Services had a NodePort, and the client dialled the last one. A new connection then walks all 10 000 ClusterIP rules of KUBE-SERVICES (cheap: each fails on its destination address before any match runs) and then all 10 000 rules of KUBE-NODEPORTS, which carry no destination address, so each calls two xt matches (comment, tcp) through retpolined indirect calls before failing on the port. perf on a run in that layout: ipt_do_table 27%, tcp_mt 8%, comment_mt 3% of all CPU samples, 69% of the benchmark process's. No real cluster has that layout (the default NodePort range holds 2 768 ports) and most Services are ClusterIP-only, so now only the measured Service has a NodePort; KUBE-SERVICES still holds every ClusterIP. Same machine, one round, nothing else running: iptables legacy at 10 000 Services went from 3 008 to 7 363 conn/s (direct 15 937 and 16 148); the same old-layout run beside a parallel Rust build measured 1 621 conn/s (the build took 46% of the CPU samples), so the earlier full run's 1 862 may also owe part of its gap to a build sharing the two cores; run the benchmark with nothing else on the machine. Conntrack was ruled out: nf_conntrack_max and the hash size are 262 144, and dmesg has no `table full`; the JSON's node1_conntrack_entries_max says how full node-1's table got. Every mode shares the 2 cores with the load generator and the lab servers, so all figures, the direct path's too, are CPU-bound rather than link-bound.\n");
        out.push_str("\nNotes: *programmer peak RSS* is the peak RSS of the process that wrote the rules (iptables-restore, nft) or, for svc-lb, of the benchmark process while it applied the tables (a stand-in for the agent, which does the same apply). The tools are started with a fork (to enter the node's namespace) before exec, so their figure cannot fall below this process's own RSS at the time (about 50 MiB): only values above that floor say something about the tool. *Kernel memory*: for svc-lb, bpftool's bytes_memlock summed over its pinned maps on node-1; for iptables and nftables, what the rule loader (iptables-restore, nft) left charged to a memory cgroup of its own after it programmed all Services on node-1 and exited (netfilter allocates x_tables blobs and nf_tables objects with GFP_KERNEL_ACCOUNT, charged to the allocating task's cgroup; the loader's own pages are uncharged when it exits). The pod -> ClusterIP load runs in a pod on node-1 that backs no Service. The stream reads zeros the backend's lab server sends (`GET /stream`) for the stated time after a warm-up; the lab turns checksum offload off on its veths, which caps every mode's figure. The iptables one-change figure is a full resync (iptables-restore of everything); kube-proxy since 1.28 usually syncs only changed chains with `--noflush`.\n\n");
        out.push_str(
            "![new connections/s and p99 latency by mode and number of Services](kube-proxy.svg)\n",
        );
        out
    }

    pub fn write(&self) {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = root.join("target/svc-bench");
        std::fs::create_dir_all(&target).unwrap();
        let json_path = target.join("kube-proxy.json");
        std::fs::write(
            &json_path,
            serde_json::to_string_pretty(&self.json()).unwrap(),
        )
        .unwrap();
        let markdown = self.markdown();
        let mut dirs = vec![target];
        if self.publish {
            dirs.push(root.join("docs/bench"));
        }
        for dir in dirs {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("kube-proxy.md"), &markdown).unwrap();
            write_chart(&dir, &markdown);
            println!("wrote {}", dir.join("kube-proxy.md").display());
        }
        println!("\n{markdown}");
        println!("wrote {}", json_path.display());
    }
}

/// Draws `dir`/kube-proxy.svg from `markdown` (that directory's
/// kube-proxy.md).
fn write_chart(dir: &Path, markdown: &str) {
    let svg = chart::Chart::from_markdown(markdown)
        .and_then(|chart| chart.svg())
        .unwrap();
    std::fs::write(dir.join("kube-proxy.svg"), svg).unwrap();
    println!("wrote {}", dir.join("kube-proxy.svg").display());
}

/// `--redraw`: docs/bench/kube-proxy.svg drawn again from the published
/// table beside it (docs/bench/kube-proxy.md), running nothing.
pub fn redraw() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/bench");
    let markdown = std::fs::read_to_string(dir.join("kube-proxy.md"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join("kube-proxy.md").display()));
    write_chart(&dir, &markdown);
}
