use std::collections::HashMap;

use openmetrics_parser::{
    MetricFamily, MetricsExposition, OpenMetricsType, OpenMetricsValue,
    openmetrics::parse_openmetrics,
};

use super::*;
use crate::model::LeftOutReason;

type Family = MetricFamily<OpenMetricsType, OpenMetricsValue>;

/// /metrics as a strict OpenMetrics parser reads it.
fn parsed(metrics: &Metrics) -> HashMap<String, Family> {
    let text = metrics.render();
    let exposition: MetricsExposition<OpenMetricsType, OpenMetricsValue> =
        parse_openmetrics(&text).unwrap_or_else(|error| panic!("{error:?} in:\n{text}"));
    exposition.families
}

fn family<'a>(families: &'a HashMap<String, Family>, name: &str) -> &'a Family {
    families
        .get(name)
        .unwrap_or_else(|| panic!("no family {name}; have {:?}", families.keys()))
}

/// The one value of `name` with these label values.
fn value(families: &HashMap<String, Family>, name: &str, labels: &[&str]) -> f64 {
    let labels: Vec<String> = labels.iter().map(ToString::to_string).collect();
    let sample = family(families, name)
        .get_sample_by_label_values(&labels)
        .unwrap_or_else(|| panic!("{name} has no sample {labels:?}"));
    match &sample.value {
        OpenMetricsValue::Gauge(number) => number.as_f64(),
        OpenMetricsValue::Counter(counter) => counter.value.as_f64(),
        other => panic!("{name} is {other:?}"),
    }
}

fn histogram(families: &HashMap<String, Family>, name: &str) -> (Vec<f64>, Vec<f64>, u64) {
    let family = family(families, name);
    assert_eq!(family.family_type, OpenMetricsType::Histogram, "{name}");
    let sample = family
        .get_sample_by_label_values(&[])
        .unwrap_or_else(|| panic!("{name} has no sample"));
    let OpenMetricsValue::Histogram(histogram) = &sample.value else {
        panic!("{name}: {:?}", sample.value);
    };
    let bounds = histogram.buckets.iter().map(|b| b.upper_bound).collect();
    let counts = histogram.buckets.iter().map(|b| b.count.as_f64()).collect();
    (bounds, counts, histogram.count.unwrap_or_default())
}

fn sync(took_ms: u64, since_ms: u64, changes: ChangesSeen) -> AppliedSync {
    AppliedSync {
        took: Duration::from_millis(took_ms),
        since_change: Duration::from_millis(since_ms),
        changes,
        frontends: 4,
        backends: 7,
        no_local_endpoints: NoLocalEndpoints {
            internal: 1,
            external: 2,
        },
    }
}

#[test]
fn kube_proxy_metrics_have_kube_proxy_names_types_and_buckets() {
    let metrics = Metrics::default();
    metrics.applied(&sync(3, 700, ChangesSeen::default()));
    let families = parsed(&metrics);

    let (bounds, counts, count) =
        histogram(&families, "kubeproxy_sync_proxy_rules_duration_seconds");
    let expected: Vec<f64> = (0..15)
        .map(|i| 0.001 * 2f64.powi(i))
        .chain([f64::INFINITY])
        .collect();
    assert_eq!(bounds, expected);
    // 3 ms: above the 1 ms and 2 ms buckets, in the 4 ms one.
    assert_eq!(&counts[..3], &[0.0, 0.0, 1.0]);
    assert_eq!(count, 1);

    let (bounds, counts, _) =
        histogram(&families, "kubeproxy_network_programming_duration_seconds");
    assert_eq!(bounds.len(), 3 + 59 + 12 + 7 + 1);
    assert_eq!(&bounds[..5], &[0.0, 0.25, 0.5, 1.0, 2.0]);
    assert_eq!(bounds[61], 59.0);
    assert_eq!(bounds[62], 60.0);
    assert_eq!(bounds[73], 115.0);
    assert_eq!(bounds[74], 120.0);
    assert_eq!(bounds[80], 300.0);
    // 700 ms lands in the 1 s bucket.
    assert_eq!(&counts[..4], &[0.0, 0.0, 0.0, 1.0]);

    for (name, kind) in [
        (
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            OpenMetricsType::Gauge,
        ),
        (
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            OpenMetricsType::Counter,
        ),
        (
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            OpenMetricsType::Gauge,
        ),
        (
            "kubeproxy_sync_proxy_rules_service_changes",
            OpenMetricsType::Counter,
        ),
        (
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            OpenMetricsType::Gauge,
        ),
        (
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            OpenMetricsType::Gauge,
        ),
    ] {
        assert_eq!(family(&families, name).family_type, kind, "{name}");
    }
    let last_sync = value(
        &families,
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        &[],
    );
    assert!(last_sync > 1.7e9, "a Unix time, not {last_sync}");
    let no_local = "kubeproxy_sync_proxy_rules_no_local_endpoints_total";
    assert_eq!(
        family(&families, no_local).get_label_names(),
        &["traffic_policy".to_owned()]
    );
    assert_eq!(value(&families, no_local, &["internal"]), 1.0);
    assert_eq!(value(&families, no_local, &["external"]), 2.0);
}

#[test]
fn changes_stay_pending_until_a_snapshot_that_holds_them_is_synced() {
    let metrics = Metrics::default();
    metrics.change_seen(Change::Endpoints);
    metrics.change_seen(Change::Service);
    let in_snapshot = metrics.changes_seen();
    // Seen after the snapshot was made: still pending after its sync.
    metrics.change_seen(Change::Endpoints);
    metrics.applied(&sync(1, 1, in_snapshot));
    let families = parsed(&metrics);
    let endpoints = "kubeproxy_sync_proxy_rules_endpoint_changes";
    assert_eq!(value(&families, endpoints, &[]), 2.0);
    assert_eq!(value(&families, &format!("{endpoints}_pending"), &[]), 1.0);
    let services = "kubeproxy_sync_proxy_rules_service_changes";
    assert_eq!(value(&families, services, &[]), 1.0);
    assert_eq!(value(&families, &format!("{services}_pending"), &[]), 0.0);
    let queued = value(
        &families,
        "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
        &[],
    );
    assert!(queued > 1.7e9, "{queued}");
}

#[test]
fn health_answers_are_counted_by_code() {
    let metrics = Metrics::default();
    metrics.healthz_answered(200);
    metrics.healthz_answered(503);
    metrics.healthz_answered(503);
    metrics.livez_answered(200);
    let families = parsed(&metrics);
    assert_eq!(value(&families, "kubeproxy_proxy_healthz", &["503"]), 2.0);
    assert_eq!(value(&families, "kubeproxy_proxy_healthz", &["200"]), 1.0);
    assert_eq!(value(&families, "kubeproxy_proxy_livez", &["200"]), 1.0);
    assert_eq!(
        family(&families, "kubeproxy_proxy_healthz").family_type,
        OpenMetricsType::Counter
    );
}

#[test]
fn readings_from_the_kernel_and_the_last_sync_are_written_out() {
    let metrics = Metrics::default();
    metrics.applied(&sync(1, 1, ChangesSeen::default()));
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
    metrics.left_out(&[LeftOut {
        service: "default/b".into(),
        frontend: "ClusterIP 198.19.0.1:80/TCP".into(),
        reason: LeftOutReason::ExternalIpNotAllowed,
    }]);
    let families = parsed(&metrics);
    let drops = "svc_agent_datapath_drops";
    assert_eq!(
        family(&families, drops).family_type,
        OpenMetricsType::Counter
    );
    assert_eq!(value(&families, drops, &["reject_rate_limited"]), 12.0);
    assert_eq!(value(&families, "svc_agent_conntrack_collected", &[]), 10.0);
    // The last census counts, not a sum.
    assert_eq!(
        value(&families, "svc_agent_conntrack_entries", &["new"]),
        0.0
    );
    assert_eq!(value(&families, "svc_agent_nat_ports_in_use", &[]), 0.0);
    assert_eq!(value(&families, "svc_agent_resyncs", &[]), 2.0);
    assert_eq!(value(&families, "svc_agent_repaired_frontends", &[]), 2.0);
    assert_eq!(value(&families, "svc_agent_frontends", &[]), 4.0);
    assert_eq!(value(&families, "svc_agent_backends", &[]), 7.0);
    assert_eq!(value(&families, "svc_agent_errors", &["map_full"]), 1.0);
    assert_eq!(metrics.errors("map_full"), 1);
    let fill = value(&families, "svc_agent_map_fill_ratio", &["backends"]);
    assert!(
        (fill - 7.0 / f64::from(MAX_BACKENDS)).abs() < 1e-12,
        "{fill}"
    );
    // The parser sorts label names.
    let left_out = family(&families, "svc_agent_left_out");
    assert_eq!(
        left_out.get_label_names(),
        &[
            "frontend".to_owned(),
            "reason".to_owned(),
            "service".to_owned()
        ]
    );
    assert_eq!(
        value(
            &families,
            "svc_agent_left_out",
            &[
                "ClusterIP 198.19.0.1:80/TCP",
                "external_ip_not_allowed",
                "default/b"
            ]
        ),
        1.0
    );
}
