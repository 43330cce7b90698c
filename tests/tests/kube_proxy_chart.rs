//! The kube-proxy benchmark's chart (tests/benches/kube_proxy/chart.rs):
//! drawn from the right columns of the table, it names what it shows in
//! SVG text, and the published chart is the one the published table draws.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

#[path = "../benches/kube_proxy/chart.rs"]
mod chart;

use std::collections::BTreeMap;

use chart::{Bar, Chart};
use tests::kube_proxy::modes::Mode;

const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/bench");

/// The shape report.rs writes, every column of a distinct value.
const TABLE: &str = "# svc-lb vs kube-proxy (quick mode)

Produced by `cargo xtask bench kube-proxy --quick` (2 round(s), 3 s per measurement, 32 concurrent client connections, run took 200 s).

Direct path: **13049 conn/s** [11197-14901], p50 2.22 ms, p99 8.04 ms.

| Services | mode | conn/s | of direct | p50 ms | p99 ms | connect p99 ms | program all ms | one change ms | programmer peak RSS | kernel memory |
|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| 1 | svclb | 8749 [8001-9496] | 67% | 2.75 | 13.73 [12.01-15.46] | 2.40 | 1.7 [1.3-1.7] | 1.5 [1.4-1.7] | 52.6 MiB | 79.0 MiB |
| 1000 | iptables_nft | 7166 [7000-7332] | 55% | 3.01 | 14.30 [13.50-15.10] | 2.90 | 787.5 [783.2-824.1] | 921.3 [875.1-937.9] | 73.3 MiB | 32.9 MiB |

From a pod on node-1 to the last Service's ClusterIP:

| Services | mode | pod conn/s | of direct | pod p50 ms | pod p99 ms | stream Gbit/s |
|---:|---|---:|---:|---:|---:|---:|
| 1 | svclb | 17305 [16252-18078] | 86% | 1.50 | 6.98 | 2.90 [2.23-2.91] |
";

#[test]
fn the_chart_takes_the_median_conn_per_s_and_p99_of_the_first_table() {
    let chart = Chart::from_markdown(TABLE).unwrap();
    let bar = |conn_per_s, p99_ms| Bar { conn_per_s, p99_ms };
    assert_eq!(
        chart,
        Chart {
            rounds: 2,
            quick: true,
            direct_conn_per_s: 13049.0,
            bars: BTreeMap::from([
                (1, BTreeMap::from([(Mode::SvcLb, bar(8749.0, 13.73))])),
                (
                    1000,
                    BTreeMap::from([(Mode::IptablesNft, bar(7166.0, 14.30))])
                ),
            ]),
        }
    );
}

#[test]
fn a_table_without_the_direct_path_is_refused() {
    let text = TABLE.replace("Direct path: **13049 conn/s**", "Direct path: 13049");
    let error = Chart::from_markdown(&text).unwrap_err().to_string();
    assert!(error.contains("Direct path"), "{error}");
}

/// Every <text> of an SVG document, trimmed.
fn texts(svg: &str) -> Vec<&str> {
    svg.split("</text>")
        .filter_map(|part| part.rsplit_once('>').map(|(_, text)| text.trim()))
        .filter(|text| !text.is_empty())
        .collect()
}

#[test]
fn the_published_chart_names_its_axes_modes_and_the_direct_path() {
    let markdown = std::fs::read_to_string(format!("{DOCS}/kube-proxy.md")).unwrap();
    assert!(
        markdown.contains("](kube-proxy.svg)"),
        "kube-proxy.md shows the SVG"
    );
    let chart = Chart::from_markdown(&markdown).unwrap();
    let svg = chart.svg().unwrap();
    let texts = texts(&svg);
    let has = |wanted: &str| {
        assert!(
            texts.contains(&wanted),
            "no <text>{wanted}</text> among {texts:?}"
        );
    };
    has(&format!(
        "svc-lb vs kube-proxy: external client to a NodePort, one HTTP request per connection (medians of {} rounds)",
        chart.rounds
    ));
    has("new connections/s");
    has("p99 latency (ms)");
    has("number of Services");
    for size in ["1", "1 000", "10 000"] {
        has(size);
    }
    for mode in [
        Mode::SvcLb,
        Mode::Iptables,
        Mode::IptablesNft,
        Mode::Nftables,
    ] {
        has(mode.label());
    }
    assert!(
        texts.iter().any(|text| text
            .strip_prefix("direct path (no translation): ")
            .is_some_and(|rest| rest.ends_with(" conn/s"))),
        "the direct path's line is not labelled: {texts:?}"
    );
    // Tick labels: three Service counts and at least three values on each
    // panel's y axis.
    let numbers = texts
        .iter()
        .filter(|text| text.replace(' ', "").parse::<f64>().is_ok())
        .count();
    assert!(numbers >= 12, "{numbers} tick labels: {texts:?}");
    let published = std::fs::read_to_string(format!("{DOCS}/kube-proxy.svg")).unwrap();
    assert!(
        published == svg,
        "docs/bench/kube-proxy.svg is not what docs/bench/kube-proxy.md draws: \
         cargo xtask bench kube-proxy --redraw"
    );
}
