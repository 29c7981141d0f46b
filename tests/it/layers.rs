//! The import rule of ARCHITECTURE.md ("may import"), checked by reading
//! the sources: a module names only the modules below it, so a change to
//! the write path or the error mapping lands in one place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::harness::files_with_extension;

/// Each top-level module of `src/` and the modules it may import. Keep in
/// step with the table in ARCHITECTURE.md.
const MAY_IMPORT: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("fail", &[]),
    ("clock", &[]),
    ("types", &["error"]),
    ("config", &["error"]),
    ("tls", &["error", "config"]),
    ("catalog", &["error", "fail", "clock", "types"]),
    ("storage", &["error", "fail", "config"]),
    ("log", &["error", "fail", "clock"]),
    ("sql", &["error", "types", "catalog"]),
    (
        "runtime",
        &[
            "error", "fail", "clock", "types", "config", "catalog", "log",
        ],
    ),
    (
        "ingest",
        &[
            "error", "fail", "clock", "types", "config", "catalog", "log", "sql", "runtime",
        ],
    ),
    (
        "cq",
        &[
            "error", "fail", "clock", "types", "config", "catalog", "log", "runtime",
        ],
    ),
    (
        "sink",
        &[
            "error", "fail", "clock", "types", "config", "catalog", "log", "storage", "runtime",
        ],
    ),
    (
        "query",
        &[
            "error", "fail", "clock", "types", "config", "catalog", "log", "storage", "sql",
            "runtime", "ingest", "cq", "sink",
        ],
    ),
    (
        "engine",
        &[
            "error", "fail", "clock", "types", "config", "catalog", "log", "storage", "sql",
            "runtime", "ingest", "cq", "sink", "query",
        ],
    ),
    (
        "pgwire",
        &[
            "error", "fail", "clock", "types", "config", "catalog", "log", "storage", "sql",
            "runtime", "ingest", "query", "engine", "tls",
        ],
    ),
    (
        "http",
        &[
            "error", "fail", "clock", "types", "config", "catalog", "log", "storage", "sql",
            "runtime", "ingest", "query", "engine", "tls",
        ],
    ),
    (
        "server",
        &["error", "config", "engine", "pgwire", "http", "tls"],
    ),
    ("main", &[]),
    ("lib", &[]),
];

/// The top-level modules a source text names through `crate::`, including
/// grouped imports (`use crate::{a, b::c};`).
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        // `sluice::crate::` cannot occur; skip identifiers ending in "crate".
        if text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.insert(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            names.insert(first_segment(&item));
        } else {
            names.insert(first_segment(rest));
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

fn first_segment(path: &str) -> String {
    path.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn no_module_imports_an_upper_one() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rules: BTreeMap<&str, &[&str]> = MAY_IMPORT.iter().copied().collect();
    let files = files_with_extension(&src, "rs");
    assert!(files.len() > 40, "found only {} source files", files.len());
    let mut violations = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let module = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|c| c.trim_end_matches(".rs").to_string())
            .expect("a module name");
        let Some(allowed) = rules.get(module.as_str()) else {
            violations.push(format!(
                "{module}: not in MAY_IMPORT (add it, with its layer)"
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read source");
        for name in named_modules(&text) {
            if name != module && !allowed.contains(&name.as_str()) {
                violations.push(format!("{}: imports {name}", relative.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against ARCHITECTURE.md's rule:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_scan_finds_grouped_and_nested_imports() {
    let text =
        "use crate::{http, pgwire::{a, b}};\nlet x = crate::engine::now();\nlet y = my_crate::z;";
    let found: Vec<String> = named_modules(text).into_iter().collect();
    assert_eq!(found, ["engine", "http", "pgwire"]);
}

/// The sibling modules a file of a folder names through `super::`
/// (`use super::a::b;`, `use super::{a, b::c};`, `super::a::f()`), outside
/// comments (a doc link is not an import).
fn sibling_modules(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let text = code.as_str();
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("super::") {
        if text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        {
            continue;
        }
        let rest = &text[at + "super::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                names.insert(first_segment(item));
            }
        } else {
            names.insert(first_segment(rest));
        }
    }
    names.retain(|n| !n.is_empty() && n != "super" && n != "self");
    names
}

/// A cycle in `graph`, if there is one, as the names along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            return Some(path[at..].to_vec());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// Inside a folder, files import one another one way: no circle of
/// `super::` imports among siblings (the folder's `mod.rs` is its face,
/// not a sibling).
#[test]
fn no_import_circle_inside_a_folder() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut folders: BTreeMap<std::path::PathBuf, BTreeMap<String, BTreeSet<String>>> =
        BTreeMap::new();
    for file in files_with_extension(&src, "rs") {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a file name")
            .to_string();
        if name == "mod" || name == "lib" || name == "main" || name == "tests" {
            continue;
        }
        let folder = file.parent().expect("a folder").to_path_buf();
        let text = std::fs::read_to_string(&file).expect("read source");
        folders
            .entry(folder)
            .or_default()
            .insert(name, sibling_modules(&text));
    }
    let mut circles = Vec::new();
    for (folder, mut graph) in folders {
        let siblings: BTreeSet<String> = graph.keys().cloned().collect();
        for imports in graph.values_mut() {
            imports.retain(|n| siblings.contains(n));
        }
        if let Some(cycle) = find_cycle(&graph) {
            circles.push(format!(
                "{}: {}",
                folder.strip_prefix(&src).unwrap_or(&folder).display(),
                cycle.join(" → ")
            ));
        }
    }
    assert!(
        circles.is_empty(),
        "import circles inside folders:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_sibling_scan_finds_grouped_imports_and_calls() {
    let text =
        "//! see [`super::e`]\nuse super::{a, b::c};\nuse super::super::x;\nlet v = super::d::f();";
    let found: Vec<String> = sibling_modules(text).into_iter().collect();
    assert_eq!(found, ["a", "b", "d"]);
}
