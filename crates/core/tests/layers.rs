//! The core's import order: a module may use only the modules ARCHITECTURE.md lists below
//! it ("Import order inside the core"), so the core has no import cycle. Read from the
//! source text (`crate::` paths outside `#[cfg(test)]` modules and comments), so a new
//! `use` line that points up or sideways fails here, not in a review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const CORE: &str = env!("CARGO_MANIFEST_DIR");

/// Each core module and the other core modules its non-test code names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(CORE).join("src");
    let mut graph = BTreeMap::new();
    for entry in walk(&src) {
        let rel = entry
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let module = rel
            .trim_end_matches(".rs")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&entry).unwrap();
        let deps: &mut BTreeSet<String> = graph.entry(module.clone()).or_default();
        deps.extend(
            named_modules(&code_of(&text))
                .into_iter()
                .filter(|m| *m != module),
        );
    }
    graph
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The file without its test module and without comments.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of every `crate::` path, `crate::{a::X, b}` groups included.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for part in split_top_level(&group[..end]) {
                found.extend(ident_at(part.trim_start()));
            }
        } else {
            found.extend(ident_at(rest));
        }
    }
    found
}

fn ident_at(s: &str) -> Option<String> {
    let ident: String = s
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!ident.is_empty() && ident.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
        .then_some(ident)
}

fn matching_brace(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    s.len()
}

fn split_top_level(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// ARCHITECTURE.md's import order: one level a line, top level first.
fn documented_order() -> Vec<BTreeSet<String>> {
    let doc = std::fs::read_to_string(Path::new(CORE).join("../../ARCHITECTURE.md")).unwrap();
    let section = doc
        .split("## Import order inside the core")
        .nth(1)
        .expect("ARCHITECTURE.md has an \"Import order inside the core\" section");
    let block = section
        .split("```")
        .nth(1)
        .expect("the order is a fenced block");
    block
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn the_core_has_no_import_cycle() {
    let graph = imports();
    for start in graph.keys() {
        let mut path = vec![start.clone()];
        if let Some(cycle) = cycle_from(&graph, &mut path) {
            panic!("import cycle in the core: {}", cycle.join(" -> "));
        }
    }
}

fn cycle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    let last = path.last().unwrap().clone();
    for next in graph.get(&last).into_iter().flatten() {
        if *next == path[0] {
            let mut cycle = path.clone();
            cycle.push(next.clone());
            return Some(cycle);
        }
        if !path.contains(next) {
            path.push(next.clone());
            if let Some(cycle) = cycle_from(graph, path) {
                return Some(cycle);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn every_import_points_down_the_documented_order() {
    let levels = documented_order();
    let level_of = |m: &str| levels.iter().position(|level| level.contains(m));
    let graph = imports();
    let unlisted: Vec<_> = graph.keys().filter(|m| level_of(m).is_none()).collect();
    assert!(
        unlisted.is_empty(),
        "modules missing from ARCHITECTURE.md's import order: {unlisted:?}"
    );
    let mut wrong = Vec::new();
    for (module, deps) in &graph {
        for dep in deps {
            if level_of(dep) <= level_of(module) {
                wrong.push(format!("{module} uses {dep}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that do not point down the documented order: {wrong:?}"
    );
}
