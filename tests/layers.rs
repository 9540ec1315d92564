//! The library's layering, checked on its sources: every `crate::` path
//! from one top-level module points to a module of a lower layer (modules
//! of the API layer may use each other). docs/architecture.md draws the
//! same layers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

/// Top-level modules of `src/`, by layer, lowest first.
const LAYERS: &[&[&str]] = &[
    // System calls and memory copies (`sys::copy`, which the frame codec's
    // payload copy uses).
    &["sys"],
    // Leaves: shared names, errors, knobs, the frame codec.
    &["ids", "error", "config", "wire"],
    // The sans-IO protocol engine, and the transports.
    &["engine", "transport"],
    // Wire-up (the launcher's environment and service protocol, PMI).
    &["bootstrap"],
    // The driver.
    &["progress"],
    // The API.
    &["status", "group", "request", "comm", "coll", "universe"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// `crate::name` paths in `text`, outside `#[cfg(test)]` modules at the end.
fn uses(text: &str) -> BTreeSet<String> {
    // Only an inline `mod tests { .. }`: a `mod tests;` declaration may sit
    // anywhere in the file, before code that counts.
    let text = text
        .split("#[cfg(test)]\nmod tests {")
        .next()
        .unwrap_or(text);
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

fn visit(dir: &Path, top: Option<&str>, edges: &mut Vec<(String, String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let top = top.map_or(name.clone(), str::to_string);
        if path.is_dir() {
            visit(&path, Some(&top), edges);
        } else if path.extension().is_some_and(|e| e == "rs") && top != "lib" {
            let text = std::fs::read_to_string(&path).unwrap();
            for used in uses(&text) {
                if used != top {
                    edges.push((top.clone(), used, path.display().to_string()));
                }
            }
        }
    }
}

#[test]
fn every_import_points_down_the_stack() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges = Vec::new();
    visit(&src, None, &mut edges);
    assert!(edges.len() > 20, "found only {} edges", edges.len());
    let api = LAYERS.len() - 1;
    let mut wrong = Vec::new();
    for (from, to, file) in &edges {
        let (Some(a), Some(b)) = (layer(from), layer(to)) else {
            // Items re-exported at the crate root (`crate::scope`, ...).
            if layer(from).is_none() {
                wrong.push(format!("{file}: module {from} is in no layer"));
            }
            continue;
        };
        if !(b < a || (a == api && b == api)) {
            wrong.push(format!("{file}: {from} (layer {a}) uses {to} (layer {b})"));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up or across:\n{}",
        wrong.join("\n")
    );
}
