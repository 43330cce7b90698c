//! `cargo xtask lint`'s layering check: no two modules of a crate use each
//! other, directly or through others.
//!
//! The module tree is walked from each crate root through its `mod NAME;`
//! declarations (test-only ones left out). A path a module names
//! (`crate::a::b`, `super::x`, `self::y`, also inside `use` groups; a bare
//! `child::` at the crate root) is resolved to the deepest module it
//! reaches. A use between two modules counts between the two siblings that
//! hold them (so `dataplane::plan` using `model::topology` is
//! `dataplane -> model`); a module using its own parent or child is not a
//! cycle. Comments, string literals and `#[cfg(test)]` items are ignored.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

/// A module, as the path of names from the crate root (empty: the root).
type Module = Vec<String>;

/// The crates' source roots, relative to the workspace.
pub const CRATE_ROOTS: &[&str] = &[
    "svc-agent/src/lib.rs",
    "svc-agent/src/main.rs",
    "svc-common/src/lib.rs",
    "svc-ebpf/src/main.rs",
    "svc-lab/src/lib.rs",
    "svc-lab/src/main.rs",
    "tests/src/lib.rs",
    "xtask/src/main.rs",
];

/// A cycle: the modules on it, sorted, and for each use between two of
/// them one example (`a -> b: a::x names crate::b::y`).
#[derive(Debug, PartialEq, Eq)]
pub struct Cycle {
    pub modules: Vec<String>,
    pub uses: Vec<String>,
}

/// Every cycle among the modules under `root_file`; empty when there is
/// none.
pub fn cycles(root_file: &Path) -> anyhow::Result<Vec<Cycle>> {
    let tree = read_tree(root_file)?;
    let known: BTreeSet<&Module> = tree.keys().collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    let mut examples: BTreeMap<(Module, Module), String> = BTreeMap::new();
    for (module, source) in &tree {
        for path in referenced_paths(source) {
            let Some(target) = resolve(module, &path, &known) else {
                continue;
            };
            if let Some((from, to)) = siblings(module, &target) {
                edges.entry(from.clone()).or_default().insert(to.clone());
                examples
                    .entry((from, to))
                    .or_insert_with(|| format!("{} names {}", module.join("::"), path.join("::")));
            }
        }
    }
    Ok(strongly_connected(&edges)
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|component| Cycle {
            modules: component.iter().map(|m| m.join("::")).collect(),
            uses: examples
                .iter()
                .filter(|((from, to), _)| component.contains(from) && component.contains(to))
                .map(|((from, to), example)| {
                    format!("{} -> {}: {example}", from.join("::"), to.join("::"))
                })
                .collect(),
        })
        .collect())
}

/// The source of every module reachable from `root_file`, comments and
/// test-only code taken out.
fn read_tree(root_file: &Path) -> anyhow::Result<BTreeMap<Module, String>> {
    let mut tree = BTreeMap::new();
    let mut pending = vec![(Module::new(), root_file.to_path_buf())];
    while let Some((module, file)) = pending.pop() {
        let text =
            fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let source = without_test_items(&without_comments_and_strings(&text));
        let dir = children_dir(&file, module.is_empty());
        for child in declared_modules(&source) {
            let candidates = [
                dir.join(format!("{child}.rs")),
                dir.join(&child).join("mod.rs"),
            ];
            let Some(child_file) = candidates.into_iter().find(|f| f.exists()) else {
                // An inline module: its text is part of this one.
                continue;
            };
            let mut child_module = module.clone();
            child_module.push(child);
            pending.push((child_module, child_file));
        }
        tree.insert(module, source);
    }
    Ok(tree)
}

/// Where the files of `file`'s child modules are.
fn children_dir(file: &Path, root: bool) -> PathBuf {
    let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if root || stem == "mod" {
        dir
    } else {
        dir.join(stem)
    }
}

/// The text with comments and the contents of string and char literals
/// blanked (so a doc link or a message naming `crate::x` is not a use).
fn without_comments_and_strings(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').map_or(text.len(), |n| i + n);
            i = end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(text.len(), |n| i + n + 2);
            out.push(' ');
            i = end;
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") {
            let open = rest.find('"').unwrap_or(0);
            let hashes = &rest[1..open];
            let close = format!("\"{hashes}");
            let end = rest[open + 1..]
                .find(&close)
                .map_or(text.len(), |n| i + open + 1 + n + close.len());
            out.push_str("\"\"");
            i = end;
        } else if bytes[i] == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i = j + 1;
        } else if bytes[i] == b'\''
            && let Some(len) = char_literal_len(rest)
        {
            out.push_str("' '");
            i += len;
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The length of the char literal `text` starts with (not a lifetime).
fn char_literal_len(text: &str) -> Option<usize> {
    let body = &text[1..];
    if let Some(escaped) = body.strip_prefix('\\') {
        return escaped.find('\'').map(|n| n + 3);
    }
    let c = body.chars().next()?;
    body[c.len_utf8()..]
        .starts_with('\'')
        .then_some(c.len_utf8() + 2)
}

/// The text with every `#[cfg(test)]` item taken out: up to the first `;`
/// or the `}` closing the first `{`, whichever ends the item.
fn without_test_items(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (n, c) in item.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = n + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = n + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// Names of `mod NAME;` declarations (files of their own).
fn declared_modules(source: &str) -> Vec<String> {
    let words: Vec<&str> = source
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ';'))
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .filter(|pair| pair[0] == "mod" && pair[1].ends_with(';'))
        .map(|pair| pair[1].trim_end_matches(';').to_owned())
        .collect()
}

/// Every path the source names, `use` groups expanded.
fn referenced_paths(source: &str) -> Vec<Vec<String>> {
    let mut paths = path_tokens(source);
    let mut uses = source;
    while let Some(at) = find_word(uses, "use") {
        let after = &uses[at + 3..];
        let end = after.find(';').unwrap_or(after.len());
        expand_use(&after[..end], &mut Vec::new(), &mut paths);
        uses = &after[end..];
    }
    paths
}

fn find_word(text: &str, word: &str) -> Option<usize> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(n) = text[from..].find(word) {
        let at = from + n;
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// Expands a `use` tree (`a::{b::c, d}`) into full paths.
fn expand_use(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = split_path(&tree[..open]);
        let close = tree.rfind('}').unwrap_or(tree.len());
        let base = prefix.len();
        prefix.extend(head);
        for part in split_top_level(&tree[open + 1..close]) {
            expand_use(part, prefix, out);
        }
        prefix.truncate(base);
    } else {
        let tail = tree.split(" as ").next().unwrap_or("");
        let mut path = prefix.clone();
        path.extend(split_path(tail));
        if !path.is_empty() {
            out.push(path);
        }
    }
}

fn split_path(text: &str) -> Vec<String> {
    text.split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "*")
        .map(str::to_owned)
        .collect()
}

/// Splits at the commas not nested in braces.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (n, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..n]);
                start = n + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Every run of two or more identifiers joined by `::` in the text.
fn path_tokens(source: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut after_separator = false;
    let mut flush = |current: &mut Vec<String>| {
        if current.len() > 1 {
            paths.push(std::mem::take(current));
        }
        current.clear();
    };
    let mut i = 0;
    while i < source.len() {
        let rest = &source[i..];
        let c = rest.chars().next().unwrap_or(' ');
        if c.is_alphanumeric() || c == '_' {
            let len = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if !after_separator {
                flush(&mut current);
            }
            current.push(rest[..len].to_owned());
            after_separator = false;
            i += len;
        } else if rest.starts_with("::") {
            after_separator = true;
            i += 2;
        } else {
            if !c.is_whitespace() {
                flush(&mut current);
                after_separator = false;
            }
            i += c.len_utf8();
        }
    }
    flush(&mut current);
    paths
}

/// The deepest known module `path` reaches from `from`; `None` for a
/// path into another crate.
fn resolve(from: &Module, path: &[String], known: &BTreeSet<&Module>) -> Option<Module> {
    let (mut module, rest): (Module, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (from.clone(), &path[1..]),
        Some("super") => {
            let mut module = from.clone();
            let mut rest = path;
            while rest.first().map(String::as_str) == Some("super") {
                module.pop();
                rest = &rest[1..];
            }
            (module, rest)
        }
        Some(first) => {
            let mut child = from.clone();
            child.push(first.to_owned());
            if !known.contains(&child) {
                return None;
            }
            (from.clone(), path)
        }
        None => return None,
    };
    for name in rest {
        let mut deeper = module.clone();
        deeper.push(name.clone());
        if !known.contains(&deeper) {
            break;
        }
        module = deeper;
    }
    Some(module)
}

/// The two siblings that hold `from` and `to`, when neither holds the other.
fn siblings(from: &Module, to: &Module) -> Option<(Module, Module)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    if common == from.len() || common == to.len() {
        return None;
    }
    Some((from[..=common].to_vec(), to[..=common].to_vec()))
}

/// Tarjan's strongly connected components.
fn strongly_connected(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, (usize, usize)>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        next: usize,
        components: Vec<Vec<Module>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a Module) {
        state.index.insert(node, (state.next, state.next));
        state.next += 1;
        state.stack.push(node);
        state.on_stack.insert(node);
        for next in state.edges.get(node).into_iter().flatten() {
            if !state.index.contains_key(next) {
                visit(state, next);
                let low = state.index[next].1;
                let entry = state.index.get_mut(node).map(|e| &mut e.1);
                if let Some(own) = entry {
                    *own = (*own).min(low);
                }
            } else if state.on_stack.contains(next) {
                let their = state.index[next].0;
                if let Some(own) = state.index.get_mut(node).map(|e| &mut e.1) {
                    *own = (*own).min(their);
                }
            }
        }
        let (index, low) = state.index[node];
        if index == low {
            let mut component = Vec::new();
            while let Some(top) = state.stack.pop() {
                state.on_stack.remove(top);
                component.push(top.clone());
                if top == node {
                    break;
                }
            }
            component.sort();
            state.components.push(component);
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        components: Vec::new(),
    };
    let nodes: BTreeSet<&Module> = edges
        .iter()
        .flat_map(|(from, to)| std::iter::once(from).chain(to))
        .collect();
    for node in nodes {
        if !state.index.contains_key(node) {
            visit(&mut state, node);
        }
    }
    state.components
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crate from (file, text) pairs in a fresh directory; its root file.
    fn crate_of(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-modules-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for (file, text) in files {
            let path = dir.join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        dir.join("lib.rs")
    }

    #[test]
    fn a_cycle_through_use_groups_and_nested_modules_is_found() {
        let root = crate_of(
            "cycle",
            &[
                ("lib.rs", "mod model;\nmod k8s;\nmod metrics;\n"),
                ("model/mod.rs", "mod translate;\n"),
                (
                    "model/translate.rs",
                    "use crate::{FastMap, k8s::{Snapshot, watch}};\n",
                ),
                ("k8s.rs", "fn f() { crate::metrics::count(); }\n"),
                (
                    "metrics.rs",
                    "use super::model::translate::Frontend as F;\n",
                ),
            ],
        );
        let found = cycles(&root).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].modules, ["k8s", "metrics", "model"]);
        assert_eq!(
            found[0].uses,
            [
                "k8s -> metrics: k8s names crate::metrics::count",
                "metrics -> model: metrics names super::model::translate::Frontend",
                "model -> k8s: model::translate names crate::k8s::Snapshot",
            ]
        );
    }

    #[test]
    fn comments_strings_tests_parents_and_children_are_not_cycles() {
        let root = crate_of(
            "none",
            &[
                ("lib.rs", "mod a;\nmod b;\n#[cfg(test)]\nmod a_tests;\n"),
                (
                    "a/mod.rs",
                    "//! See [`b`](crate::b).\nmod inner;\npub struct T;\nfn f() { inner::g(); \
                     let s = \"crate::b::x\"; let c = '{'; }\n#[cfg(test)]\nmod tests { use \
                     crate::b::X; }\n",
                ),
                ("a/inner.rs", "use super::T;\nuse crate::b::B;\n"),
                ("b.rs", "/* crate::a */ pub struct B;\n"),
                ("a_tests.rs", "use crate::a::T;\n"),
            ],
        );
        assert_eq!(cycles(&root).unwrap(), []);
    }
}
