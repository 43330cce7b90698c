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

/// What could match a selector: a pod, or a workload's pod template
/// standing for the pods it will make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The pod's name, or the workload's `NAMESPACE/NAME`.
    pub name: String,
    /// For a workload: its kind and how many pods it makes (None: one per
    /// node, or as many as a Job runs).
    pub workload: Option<(String, Option<i32>)>,
    pub labels: BTreeMap<String, String>,
}

impl Candidate {
    pub fn pod(pod: &Pod) -> Self {
        Self {
            name: pod.metadata.name.clone().unwrap_or_default(),
            workload: None,
            labels: pod.metadata.labels.clone().unwrap_or_default(),
        }
    }

    pub fn workload(workload: &crate::k8s::Workload) -> Self {
        Self {
            name: format!("{}/{}", workload.namespace, workload.name),
            workload: Some((workload.kind.clone(), workload.replicas)),
            labels: workload.labels.clone(),
        }
    }
}

/// A candidate among those closest to matching, and how it differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closest {
    /// The pod's name, or the workload's `NAMESPACE/NAME`.
    pub pod: String,
    pub workload: Option<(String, Option<i32>)>,
    /// Its labels, `key=value,...`.
    pub labels: String,
    pub differences: Vec<LabelDifference>,
}

impl fmt::Display for Closest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.workload {
            None => write!(f, "pod {}", self.pod)?,
            Some((kind, replicas)) => {
                let count = match replicas {
                    Some(1) => "1 pod".to_owned(),
                    Some(n) => format!("{n} pods"),
                    None => "pods".to_owned(),
                };
                write!(
                    f,
                    "{kind} {} would make {count} labelled {}",
                    self.pod, self.labels
                )?;
            }
        }
        for difference in &self.differences {
            write!(f, "  {difference}")?;
        }
        Ok(())
    }
}

/// The candidates that match the most selector labels (at most 5), with
/// the labels they differ in; a differing value counts closer than a
/// missing label, and among equals workloads (what a user edits) come
/// before pods.
pub fn closest_pods(selector: &BTreeMap<String, String>, candidates: &[Candidate]) -> Vec<Closest> {
    let mut scored: Vec<(usize, usize, bool, Closest)> = candidates
        .iter()
        .map(|candidate| {
            let labels = &candidate.labels;
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
                candidate.workload.is_none(),
                Closest {
                    pod: candidate.name.clone(),
                    workload: candidate.workload.clone(),
                    labels: text(labels),
                    differences,
                },
            )
        })
        .collect();
    scored.sort_by(|a, b| (a.0, a.1, a.2, &a.3.pod).cmp(&(b.0, b.1, b.2, &b.3.pod)));
    let best = scored.first().map(|s| (s.0, s.1));
    scored
        .into_iter()
        .filter(|s| Some((s.0, s.1)) == best)
        .take(5)
        .map(|s| s.3)
        .collect()
}
