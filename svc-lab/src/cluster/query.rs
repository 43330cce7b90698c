//! What `get` and `describe` are asked for, with kubectl's meanings:
//! `-n NAMESPACE` (default `default`) or `-A`, `-l SELECTOR`, and AGE as
//! kubectl prints it.
use std::collections::BTreeMap;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::{SignedDuration, Timestamp},
};
use svc_agent::k8s::namespace_of;

/// The namespaces a command looks in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Namespaces {
    One(String),
    All,
}

impl Namespaces {
    /// `-A` wins over `-n`; neither is `default`, as kubectl.
    pub fn from_flags(namespace: Option<String>, all: bool) -> Self {
        match (all, namespace) {
            (true, _) => Namespaces::All,
            (false, Some(namespace)) => Namespaces::One(namespace),
            (false, None) => Namespaces::One("default".into()),
        }
    }

    pub fn holds(&self, meta: &ObjectMeta) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::One(namespace) => namespace_of(meta) == namespace,
        }
    }

    /// kubectl's message when nothing matched (on stderr, exit 0).
    pub fn nothing_found(&self) -> String {
        match self {
            Namespaces::All => "No resources found".into(),
            Namespaces::One(namespace) => format!("No resources found in {namespace} namespace."),
        }
    }
}

/// What `get` lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub namespaces: Namespaces,
    pub selector: Selector,
    /// `-o wide`.
    pub wide: bool,
    /// One object by name (`get KIND NAME`).
    pub name: Option<String>,
}

impl Default for Query {
    fn default() -> Self {
        Self {
            namespaces: Namespaces::One("default".into()),
            selector: Selector::default(),
            wide: false,
            name: None,
        }
    }
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A label selector as `kubectl -l` takes it: `app=web,tier!=db`,
/// `env in (a,b)`, `env notin (a)`, `key`, `!key`. Empty selects all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_terms(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_term(term)?);
        }
        Ok(Selector(requirements))
    }

    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let get = |key: &str| labels.and_then(|labels| labels.get(key));
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(key, value) => get(key) == Some(value),
            Requirement::NotEquals(key, value) => get(key) != Some(value),
            Requirement::In(key, values) => get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => get(key).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(key) => get(key).is_some(),
            Requirement::NotExists(key) => get(key).is_none(),
        })
    }
}

/// The terms of a selector: split at commas outside parentheses.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (index, character) in text.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    let bad = || {
        format!(
            "unable to parse requirement: {term:?} (try app=web, app!=web, app in (a,b), app, !app)"
        )
    };
    let valid = |text: &str| {
        !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    };
    let value_ok = |text: &str| {
        text.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let set = |key: &str, rest: &str| -> Result<(String, Vec<String>), String> {
        let inner = rest
            .trim()
            .strip_prefix('(')
            .and_then(|rest| rest.strip_suffix(')'))
            .ok_or_else(bad)?;
        let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
        if !valid(key) || values.iter().any(|v| !value_ok(v)) {
            return Err(bad());
        }
        Ok((key.to_owned(), values))
    };
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        return valid(key)
            .then(|| Requirement::NotExists(key.to_owned()))
            .ok_or_else(bad);
    }
    if let Some((key, rest)) = term.split_once(" notin ") {
        let (key, values) = set(key.trim(), rest)?;
        return Ok(Requirement::NotIn(key, values));
    }
    if let Some((key, rest)) = term.split_once(" in ") {
        let (key, values) = set(key.trim(), rest)?;
        return Ok(Requirement::In(key, values));
    }
    for (operator, negated) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = term.split_once(operator) {
            let (key, value) = (key.trim(), value.trim());
            if !valid(key) || !value_ok(value) {
                return Err(bad());
            }
            return Ok(if negated {
                Requirement::NotEquals(key.to_owned(), value.to_owned())
            } else {
                Requirement::Equals(key.to_owned(), value.to_owned())
            });
        }
    }
    valid(term)
        .then(|| Requirement::Exists(term.to_owned()))
        .ok_or_else(bad)
}

/// AGE as kubectl prints it (k8s.io/apimachinery's HumanDuration of the
/// time since `since`); `<unknown>` without a time.
pub fn age(since: Option<&Time>, now: Timestamp) -> String {
    let Some(since) = since else {
        return "<unknown>".into();
    };
    human_duration(now.duration_since(since.0))
}

fn human_duration(duration: SignedDuration) -> String {
    let seconds = duration.as_secs();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let rest = seconds % 60;
        return if rest == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{rest}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let rest = minutes % 60;
        return if rest == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{rest}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let rest = hours % 24;
        return if rest == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{rest}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn selectors_select_as_kubectl_does() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db")]);
        let cases = [
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("app in (web, db)", true, true),
            ("app notin (web)", false, true),
            ("tier", true, false),
            ("!tier", false, true),
            ("app=web,tier=front", true, false),
            ("app in (web,db),!tier", false, true),
            ("", true, true),
        ];
        for (text, selects_web, selects_db) in cases {
            let selector = Selector::parse(text).unwrap();
            assert_eq!(selector.matches(Some(&web)), selects_web, "{text} on web");
            assert_eq!(selector.matches(Some(&db)), selects_db, "{text} on db");
        }
        assert!(!Selector::parse("app=web").unwrap().matches(None));
        assert!(Selector::parse("app in web").is_err());
        assert!(Selector::parse("a pp=web").is_err());
    }

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (181, "3m1s"),
            (599, "9m59s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60 * 25, "3h25m"),
            (47 * 3600, "47h"),
            (50 * 3600, "2d2h"),
            (9 * 86400, "9d"),
            (800 * 86400, "2y70d"),
        ];
        for (seconds, text) in cases {
            assert_eq!(
                human_duration(SignedDuration::from_secs(seconds)),
                text,
                "{seconds} s"
            );
        }
        assert_eq!(human_duration(SignedDuration::from_secs(-5)), "<invalid>");
    }
}
