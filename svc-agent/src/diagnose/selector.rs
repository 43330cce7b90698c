//! Selectors as text, and the pods that come closest when none matches
//! (matching itself is the EndpointSlice rule, `pod_endpoints::selects`).
use std::{collections::BTreeMap, fmt};

use k8s_openapi::api::core::v1::Pod;

pub use crate::k8s::pod_endpoints::selects;

/// `app=web,tier=front`.
pub fn text(selector: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join(",")
}

/// A selector label a Pod does not match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelDifference {
    pub key: String,
    pub wanted: String,
    /// The Pod's value, `None` when it lacks the label.
    pub found: Option<String>,
}

impl fmt::Display for LabelDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.found {
            Some(found) => write!(
                f,
                "has {}={found}, selector wants {}={}",
                self.key, self.key, self.wanted
            ),
            None => write!(f, "lacks label {}={}", self.key, self.wanted),
        }
    }
}

/// A pod among those closest to matching, and how it differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closest {
    pub pod: String,
    pub differences: Vec<LabelDifference>,
}

/// The pods that match the most selector labels (at most 5), with the
/// labels they differ in; a differing value counts closer than a missing
/// label.
pub fn closest_pods(selector: &BTreeMap<String, String>, pods: &[&Pod]) -> Vec<Closest> {
    let mut scored: Vec<(usize, usize, Closest)> = pods
        .iter()
        .map(|pod| {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            let differences: Vec<LabelDifference> = selector
                .iter()
                .filter(|(key, value)| labels.get(*key) != Some(*value))
                .map(|(key, value)| LabelDifference {
                    key: key.clone(),
                    wanted: value.clone(),
                    found: labels.get(key).cloned(),
                })
                .collect();
            let missing = differences.iter().filter(|d| d.found.is_none()).count();
            (
                differences.len(),
                missing,
                Closest {
                    pod: pod.metadata.name.clone().unwrap_or_default(),
                    differences,
                },
            )
        })
        .collect();
    scored.sort_by(|a, b| (a.0, a.1, &a.2.pod).cmp(&(b.0, b.1, &b.2.pod)));
    let best = scored.first().map(|s| (s.0, s.1));
    scored
        .into_iter()
        .filter(|s| Some((s.0, s.1)) == best)
        .take(5)
        .map(|s| s.2)
        .collect()
}
