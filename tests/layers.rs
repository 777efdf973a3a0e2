//! The engine's layers, enforced: every module of `src/` may import only
//! from modules of lower layers (or from itself).
//!
//! [`LAYERS`] is the one place the order is written; README.md quotes it
//! (the test checks that the quote matches), so the picture a reader gets
//! is the one the code keeps.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, bottom first. Modules within one layer do not import each
/// other; a module imports only from layers below its own. `lib.rs` (the
/// crate root, which wires the modules together) stands above them all.
const LAYERS: &[&[&str]] = &[
    &["sys"],
    &["fatal", "thread"],
    &["os", "keys"],
    &["sync", "size_class", "purge"],
    &["segment"],
    &["segmap"],
    &["store"],
    &["huge"],
    &["heap"],
    &["instance"],
    &["harden"],
    &["check", "stats"],
    &["api"],
    &["c", "allocator", "global"],
    &["macros"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable src/") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/heap/remote.rs`
/// → `heap`; `src/sys_miri.rs` is the Miri twin of `sys`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("file below src/");
    let first = rel.components().next().expect("non-empty path");
    let name = first.as_os_str().to_string_lossy();
    let name = name.trim_end_matches(".rs");
    match name {
        "sys_miri" => "sys".to_string(),
        other => other.to_string(),
    }
}

/// The modules named by `crate::NAME` in the code of `text` (comments,
/// including doc comments, are skipped: a doc link is not a dependency).
fn imports(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            // `$crate::` is the macro's path to the public API, not an import.
            let before = &rest[..i];
            rest = &rest[i + "crate::".len()..];
            if before.ends_with('$') {
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push((n + 1, name));
            }
        }
        // `use crate::{a, b::c}` groups.
        if let Some(i) = code.find("crate::{") {
            let group = &code[i + "crate::{".len()..];
            for part in group.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push((n + 1, name));
                }
            }
        }
    }
    out
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn every_module_has_a_layer() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut missing = Vec::new();
    for f in &files {
        let m = module_of(&src, f);
        if m != "lib" && m != "tests" && layer_of(&m).is_none() {
            missing.push(m);
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "modules without a layer in LAYERS: {missing:?}"
    );
}

#[test]
fn imports_only_go_down() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut bad: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in &files {
        let from = module_of(&src, f);
        // The root wires everything; the unit tests may reach anything.
        if from == "lib" || from == "tests" {
            continue;
        }
        let Some(from_layer) = layer_of(&from) else {
            continue; // reported by `every_module_has_a_layer`
        };
        let text = fs::read_to_string(f).expect("readable source");
        let in_tests = text.find("#[cfg(test)]").unwrap_or(usize::MAX);
        let test_line = text[..in_tests.min(text.len())].lines().count() + 1;
        for (line, to) in imports(&text) {
            if to == from || line >= test_line {
                continue;
            }
            // Root-level items (`crate::Instance`, `crate::InstanceExt`, …)
            // are re-exports of the modules' items; check the module.
            let to_layer = match layer_of(&to) {
                Some(l) => l,
                None if to.chars().next().is_some_and(|c| c.is_uppercase()) => continue,
                None => {
                    bad.entry(from.clone()).or_default().push(format!(
                        "{}:{line} imports `{to}`, which has no layer",
                        f.strip_prefix(&src).unwrap().display()
                    ));
                    continue;
                }
            };
            if to_layer >= from_layer {
                bad.entry(from.clone()).or_default().push(format!(
                    "{}:{line} imports `{to}` (layer {to_layer}, not below {from_layer})",
                    f.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    let report: Vec<String> = bad.values().flatten().cloned().collect();
    assert!(
        report.is_empty(),
        "imports against the layer order:\n{}",
        report.join("\n")
    );
}

#[test]
fn the_readme_quotes_the_layers() {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    // The README lists the layers top first, one line each, module names
    // separated by ", ", inside the block that follows this marker.
    let marker = "<!-- layers: tests/layers.rs -->";
    let start = readme
        .find(marker)
        .expect("README.md has the layer block marker");
    let block: Vec<&str> = readme[start + marker.len()..]
        .lines()
        .skip_while(|l| !l.starts_with("```"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect();
    let quoted: Vec<String> = block
        .iter()
        .map(|l| l.split("  ").next().unwrap_or("").trim().to_string())
        .collect();
    let expected: Vec<String> = LAYERS.iter().rev().map(|l| l.join(", ")).collect();
    assert_eq!(quoted, expected, "README's layer block differs from LAYERS");
}
