//! Text renderings of the tables for people (JSON goes through serde).
use std::fmt::Write as _;

use crate::{
    dataplane::{DropCounter, FrontendState, Lookup, Mode, Via},
    model::{Frontend, LeftOut, Plan},
};

/// One line per frontend: `plan`'s view (no counters).
pub fn plan_table(frontends: &[Frontend]) -> String {
    let rows: Vec<Row> = frontends.iter().map(|f| Row::new(f, None)).collect();
    render(&rows, false)
}

/// `plan -o json`: `{"node": ..., "frontends": [...]}`, pretty-printed.
pub fn plan_json(plan: &Plan) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(plan)
}

/// `lookup`'s answer, for people.
pub fn lookup_table(lookup: &Lookup) -> String {
    let mut out = format!("frontend  {}\n", lookup.frontend);
    let backend = lookup
        .backend
        .map_or_else(|| "-".to_owned(), |backend| backend.to_string());
    let _ = writeln!(out, "backend   {backend}");
    let via = match lookup.via {
        Via::Conntrack => "conntrack (the flow's entry)",
        Via::Affinity => "affinity (sessionAffinity remembers this client)",
        Via::Random => "random (a new flow gets one of the candidates)",
        Via::Maglev => "maglev (the flow's entry in the frontend's table, as on every node)",
        Via::NoBackend => "no backend (refused or dropped)",
    };
    let _ = writeln!(out, "via       {via}");
    let mode = match lookup.mode {
        Some(Mode::Snat) => "snat (the backend sees the node)",
        Some(Mode::Direct) => "direct (the backend sees the client)",
        Some(Mode::Dsr) => "dsr (the backend sees the client and answers it directly)",
        None => "as the backend picked and the way in decide",
    };
    let _ = writeln!(out, "mode      {mode}");
    if !lookup.candidates.is_empty() {
        let candidates: Vec<String> = lookup.candidates.iter().map(|c| c.to_string()).collect();
        let _ = writeln!(out, "candidates {}", candidates.join(" "));
    }
    out
}

/// One line per frontend with its counters: `dump`'s view of the kernel.
pub fn dump_table(states: &[FrontendState], drops: &[DropCounter]) -> String {
    let rows: Vec<Row> = states
        .iter()
        .map(|s| Row::new(&s.frontend, Some((s.packets, s.bytes))))
        .collect();
    let mut out = render(&rows, true);
    let nonzero: Vec<String> = drops
        .iter()
        .filter(|d| d.packets > 0)
        .map(|d| format!("{}={}", d.reason, d.packets))
        .collect();
    if !nonzero.is_empty() {
        let _ = writeln!(out, "not forwarded: {}", nonzero.join(" "));
    }
    out
}

/// One line per frontend (or Service) left out, and why.
pub fn left_out_lines(left_out: &[LeftOut]) -> String {
    left_out
        .iter()
        .map(|left| format!("left out: {left}\n"))
        .collect()
}

struct Row {
    cells: Vec<String>,
}

impl Row {
    fn new(frontend: &Frontend, counters: Option<(u64, u64)>) -> Self {
        let service = if frontend.port_name.is_empty() {
            frontend.service.clone()
        } else {
            format!("{}:{}", frontend.service, frontend.port_name)
        };
        let backends = if frontend.backends.is_empty() {
            format!("<none: {}>", on_empty_word(frontend))
        } else {
            frontend
                .backends
                .iter()
                .map(|b| format!("{}:{} ({})", b.address, b.port, b.state))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // The kind, and Maglev selection where a frontend has it.
        let kind = match frontend.lb_algorithm {
            crate::model::LbAlgorithm::Maglev => format!("{} (maglev)", frontend.kind),
            crate::model::LbAlgorithm::Random => frontend.kind.to_string(),
        };
        let mut cells = vec![
            service,
            kind,
            format!(
                "{}:{}/{}",
                frontend.address, frontend.port, frontend.protocol
            ),
            backends,
        ];
        if let Some((packets, bytes)) = counters {
            cells.push(packets.to_string());
            cells.push(bytes.to_string());
        }
        Self { cells }
    }
}

fn on_empty_word(frontend: &Frontend) -> &'static str {
    match frontend.on_empty {
        crate::model::OnEmpty::Reject => "reject",
        crate::model::OnEmpty::Drop => "drop",
    }
}

fn render(rows: &[Row], with_counters: bool) -> String {
    let mut header = vec!["SERVICE", "KIND", "FRONTEND", "BACKENDS"];
    if with_counters {
        header.extend(["PACKETS", "BYTES"]);
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(&row.cells) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |cells: &[&str], out: &mut String| {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                let _ = writeln!(out, "{cell}");
            } else {
                let _ = write!(out, "{cell:<width$}  ", width = widths[i]);
            }
        }
    };
    line(&header, &mut out);
    for row in rows {
        let cells: Vec<&str> = row.cells.iter().map(String::as_str).collect();
        line(&cells, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::{BackendRef, BackendState, FrontendKind, OnEmpty, Protocol};

    fn frontend(backends: Vec<BackendRef>) -> Frontend {
        Frontend {
            service: "demo/web".into(),
            port_name: "http".into(),
            kind: FrontendKind::ClusterIP,
            address: Ipv4Addr::new(198, 19, 0, 10).into(),
            port: 80,
            protocol: Protocol::TCP,
            backends,
            affinity_timeout_seconds: None,
            on_empty: OnEmpty::Reject,
            source_ranges: Vec::new(),
            health_check_node_port: None,
            lb_algorithm: Default::default(),
        }
    }

    #[test]
    fn plan_table_lists_backends_with_state() {
        let table = plan_table(&[frontend(vec![
            BackendRef {
                address: Ipv4Addr::new(198, 18, 1, 11).into(),
                port: 8080,
                state: BackendState::Ready,
                local: true,
            },
            BackendRef {
                address: Ipv4Addr::new(198, 18, 1, 12).into(),
                port: 8080,
                state: BackendState::Terminating,
                local: true,
            },
        ])]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("SERVICE"));
        assert!(lines[1].starts_with("demo/web:http  ClusterIP  198.19.0.10:80/TCP"));
        assert!(
            lines[1].ends_with("198.18.1.11:8080 (ready), 198.18.1.12:8080 (terminating)"),
            "{table}"
        );
    }

    #[test]
    fn a_maglev_frontend_says_so_beside_its_kind() {
        let maglev = Frontend {
            lb_algorithm: crate::model::LbAlgorithm::Maglev,
            ..frontend(Vec::new())
        };
        let table = plan_table(&[maglev, frontend(Vec::new())]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].contains("  ClusterIP (maglev)  "), "{table}");
        assert!(lines[2].contains("  ClusterIP  "), "{table}");
    }

    #[test]
    fn empty_frontend_says_what_it_does() {
        let table = plan_table(&[frontend(Vec::new())]);
        assert!(
            table
                .lines()
                .nth(1)
                .is_some_and(|l| l.ends_with("<none: reject>")),
            "{table}"
        );
    }

    #[test]
    fn dump_table_shows_counters_and_nonzero_drops() {
        let state = FrontendState {
            frontend: frontend(Vec::new()),
            rev_nat_id: 1,
            packets: 7,
            bytes: 420,
        };
        let drops = [
            DropCounter {
                reason: "malformed",
                packets: 0,
            },
            DropCounter {
                reason: "no_backend_reset",
                packets: 3,
            },
        ];
        let table = dump_table(&[state], &drops);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[1].ends_with("<none: reject>  7        420"),
            "{table}"
        );
        assert_eq!(lines[2], "not forwarded: no_backend_reset=3");
    }
}
