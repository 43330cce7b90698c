//! What the running agent reports on `/metrics`, in Prometheus' text format.
//!
//! A handful of gauges, counters and two histograms do not need a metrics
//! library: they are kept behind one mutex and rendered by hand.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use svc_common::{MAX_BACKENDS, MAX_FRONTENDS};

use crate::{
    dataplane::{Census, DropCounter},
    model::LeftOut,
};

/// Upper bounds (seconds) of the latency histograms' buckets: a change is
/// expected to land in milliseconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Clone, Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, value: Duration) {
        let seconds = value.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter()) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

#[derive(Debug, Default)]
struct State {
    initial_sync: Option<Duration>,
    apply_duration: Histogram,
    event_to_programmed: Histogram,
    frontends: usize,
    backends: usize,
    errors: BTreeMap<&'static str, u64>,
    resyncs: u64,
    /// Frontends a resync found changed behind the agent's back.
    repaired: u64,
    /// The conntrack collector's last count, and its removals so far.
    conntrack: Option<Census>,
    conntrack_collected: u64,
    /// The datapath's per-reason drop counters, as last read.
    drops: Vec<DropCounter>,
    /// What the last sync left out.
    left_out: Vec<LeftOut>,
}

/// The agent's metrics; shared between the sync loop, the sources and the
/// HTTP endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic elsewhere never makes the numbers unreadable.
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Start of the agent until the initial snapshot was in the maps.
    pub fn initial_sync(&self, took: Duration) {
        self.with(|state| state.initial_sync = Some(took));
    }

    /// One apply: how long the map writes took, how long since the event
    /// that caused it, and what the maps now hold.
    pub fn applied(
        &self,
        took: Duration,
        since_event: Duration,
        frontends: usize,
        backends: usize,
    ) {
        self.with(|state| {
            state.apply_duration.observe(took);
            state.event_to_programmed.observe(since_event);
            state.frontends = frontends;
            state.backends = backends;
        });
    }

    /// One periodic resync, which rewrote `repaired` frontends.
    pub fn resynced(&self, repaired: usize) {
        self.with(|state| {
            state.resyncs += 1;
            state.repaired += repaired as u64;
        });
    }

    /// One pass of the conntrack collector.
    pub fn conntrack(&self, census: Census) {
        self.with(|state| {
            state.conntrack_collected += census.collected;
            state.conntrack = Some(census);
        });
    }

    /// The kernel's drop counters, summed over CPUs.
    pub fn drops(&self, drops: &[DropCounter]) {
        self.with(|state| state.drops = drops.to_vec());
    }

    /// What the last sync left out, and why.
    pub fn left_out(&self, left_out: &[LeftOut]) {
        self.with(|state| state.left_out = left_out.to_vec());
    }

    /// What the last sync left out (`/left-out`).
    pub fn left_out_now(&self) -> Vec<LeftOut> {
        self.with(|state| state.left_out.clone())
    }

    /// Counts an error of `kind` (e.g. `watch_gone`, `map_full`).
    pub fn error(&self, kind: &'static str) {
        self.with(|state| *state.errors.entry(kind).or_default() += 1);
    }

    /// How many errors of `kind` were counted.
    pub fn errors(&self, kind: &str) -> u64 {
        self.with(|state| state.errors.get(kind).copied().unwrap_or_default())
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.with(|state| {
            let mut out = String::new();
            let gauge = |out: &mut String, name: &str, help: &str, value: f64| {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
                );
            };
            if let Some(took) = state.initial_sync {
                gauge(
                    &mut out,
                    "svc_agent_initial_sync_seconds",
                    "Time from start until the initial snapshot was in the maps.",
                    took.as_secs_f64(),
                );
            }
            state.apply_duration.render(
                &mut out,
                "svc_agent_sync_duration_seconds",
                "Time one sync (diff and map writes) took.",
            );
            state.event_to_programmed.render(
                &mut out,
                "svc_agent_event_to_programmed_seconds",
                "Time from a change seen by the source to its map writes done.",
            );
            gauge(
                &mut out,
                "svc_agent_frontends",
                "Frontends in the maps.",
                state.frontends as f64,
            );
            gauge(
                &mut out,
                "svc_agent_backends",
                "Backend references (slots) in the maps.",
                state.backends as f64,
            );
            let _ = writeln!(
                out,
                "# HELP svc_agent_map_fill_ratio Entries in use over capacity.\n\
                 # TYPE svc_agent_map_fill_ratio gauge\n\
                 svc_agent_map_fill_ratio{{map=\"frontends\"}} {}\n\
                 svc_agent_map_fill_ratio{{map=\"backends\"}} {}",
                state.frontends as f64 / f64::from(MAX_FRONTENDS),
                state.backends as f64 / f64::from(MAX_BACKENDS),
            );
            let _ = writeln!(
                out,
                "# HELP svc_agent_resyncs_total Periodic resyncs (maps read back from the kernel).\n\
                 # TYPE svc_agent_resyncs_total counter\n\
                 svc_agent_resyncs_total {}\n\
                 # HELP svc_agent_repaired_frontends_total Frontends a resync found changed behind the agent's back and rewrote.\n\
                 # TYPE svc_agent_repaired_frontends_total counter\n\
                 svc_agent_repaired_frontends_total {}",
                state.resyncs, state.repaired,
            );
            if let Some(census) = state.conntrack {
                let _ = writeln!(
                    out,
                    "# HELP svc_agent_conntrack_entries Conntrack entries (one per direction of a flow) by state, at the collector's last pass.\n\
                     # TYPE svc_agent_conntrack_entries gauge\n\
                     svc_agent_conntrack_entries{{state=\"new\"}} {}\n\
                     svc_agent_conntrack_entries{{state=\"established\"}} {}\n\
                     svc_agent_conntrack_entries{{state=\"closing\"}} {}\n\
                     # HELP svc_agent_nat_ports_in_use Source NAT ports held by flows.\n\
                     # TYPE svc_agent_nat_ports_in_use gauge\n\
                     svc_agent_nat_ports_in_use {}\n\
                     # HELP svc_agent_conntrack_collected_total Expired conntrack entries removed by the collector.\n\
                     # TYPE svc_agent_conntrack_collected_total counter\n\
                     svc_agent_conntrack_collected_total {}",
                    census.new,
                    census.established,
                    census.closing,
                    census.nat_ports,
                    state.conntrack_collected,
                );
            }
            let _ = writeln!(
                out,
                "# HELP svc_agent_left_out Frontends (frontend=\"\" for a whole Service) the node does not program, by Service and reason.\n\
                 # TYPE svc_agent_left_out gauge"
            );
            for left in &state.left_out {
                let _ = writeln!(
                    out,
                    "svc_agent_left_out{{service=\"{}\",frontend=\"{}\",reason=\"{}\"}} 1",
                    left.service,
                    left.frontend,
                    left.reason.label()
                );
            }
            if !state.drops.is_empty() {
                let _ = writeln!(
                    out,
                    "# HELP svc_agent_datapath_drops_total Packets the datapath did not forward as they came, by reason (answered with a reset or ICMP error, or dropped).\n\
                     # TYPE svc_agent_datapath_drops_total counter"
                );
                for drop in &state.drops {
                    let _ = writeln!(
                        out,
                        "svc_agent_datapath_drops_total{{reason=\"{}\"}} {}",
                        drop.reason, drop.packets
                    );
                }
            }
            let _ = writeln!(
                out,
                "# HELP svc_agent_errors_total Errors by kind.\n# TYPE svc_agent_errors_total counter"
            );
            for (kind, count) in &state.errors {
                let _ = writeln!(out, "svc_agent_errors_total{{kind=\"{kind}\"}} {count}");
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        metrics.applied(Duration::from_micros(300), Duration::from_millis(3), 4, 7);
        metrics.error("map_full");
        metrics.resynced(2);
        metrics.resynced(0);
        metrics.conntrack(Census {
            new: 3,
            established: 2,
            closing: 1,
            nat_ports: 5,
            collected: 6,
        });
        metrics.conntrack(Census {
            collected: 4,
            ..Census::default()
        });
        metrics.drops(&[DropCounter {
            reason: "reject_rate_limited",
            packets: 12,
        }]);
        let text = metrics.render();
        assert!(text.contains("svc_agent_datapath_drops_total{reason=\"reject_rate_limited\"} 12"));
        assert!(text.contains("svc_agent_conntrack_collected_total 10"));
        assert!(text.contains("svc_agent_conntrack_entries{state=\"new\"} 0"));
        assert!(text.contains("svc_agent_resyncs_total 2"));
        assert!(text.contains("svc_agent_repaired_frontends_total 2"));
        assert!(text.contains("svc_agent_sync_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("svc_agent_event_to_programmed_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.contains("svc_agent_event_to_programmed_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("svc_agent_frontends 4"));
        assert!(text.contains("svc_agent_backends 7"));
        assert!(text.contains("svc_agent_errors_total{kind=\"map_full\"} 1"));
    }
}
