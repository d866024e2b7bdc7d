//! The modules depend on each other one way: no circle through `use crate::…` between top-level
//! modules, so each layer can be read, tested and replaced without the ones above it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Top-level module → the top-level modules it names as `crate::name`, in paths or in
/// `use crate::{a, b::c}` groups.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let module_of = |p: &Path| {
        let rel = p.strip_prefix(src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        first.trim_end_matches(".rs").to_string()
    };
    let files: Vec<PathBuf> =
        sources(src).into_iter().filter(|p| !["lib", "main"].contains(&module_of(p).as_str())).collect();
    let modules: BTreeSet<String> = files.iter().map(|p| module_of(p)).filter(|m| m != "cmds").collect();
    let path = regex::Regex::new(r"crate::(\w+)").unwrap();
    let group = regex::Regex::new(r"crate::\{([^}]*)\}").unwrap();
    let word = regex::Regex::new(r"(?:^|[,{\s])(\w+)").unwrap();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(file);
        let text = std::fs::read_to_string(file).unwrap();
        let named = path.captures_iter(&text).map(|c| c[1].to_string()).chain(
            group
                .captures_iter(&text)
                .flat_map(|g| word.captures_iter(&g[1]).map(|w| w[1].to_string()).collect::<Vec<_>>()),
        );
        for to in named {
            if to != from && modules.contains(&to) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    edges
}

/// A circle in `edges`, if there is one.
fn circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_import_one_way() {
    let edges = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for (from, to) in &edges {
        println!("{from} -> {}", to.iter().cloned().collect::<Vec<_>>().join(" "));
    }
    assert!(edges.len() > 10, "the graph was not read: {edges:?}");
    if let Some(c) = circle(&edges) {
        panic!("import circle: {}", c.join(" -> "));
    }
}

#[test]
fn the_circle_finder_finds_circles() {
    let edges: BTreeMap<String, BTreeSet<String>> =
        [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")].iter().fold(BTreeMap::new(), |mut m, (f, t)| {
            m.entry(f.to_string()).or_insert_with(BTreeSet::new).insert(t.to_string());
            m
        });
    assert_eq!(circle(&edges).unwrap().len(), 4);
    let mut one_way = edges.clone();
    one_way.get_mut("c").unwrap().clear();
    assert_eq!(circle(&one_way), None);
}
