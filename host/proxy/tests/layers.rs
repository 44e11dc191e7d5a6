//! The proxy's modules import each other one way: no module reaches,
//! through its `crate::…` paths, a module that reaches it back (Rust allows
//! such cycles; this test does not). Read from `src/*.rs`; doc comments
//! and `#[cfg(test)]` modules do not count.

use std::collections::{BTreeMap, BTreeSet};

/// Module -> the crate modules its code names (`crate::x`, `crate::{x, y}`).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = if path.is_dir() {
            // Each file's own tests cut off before joining.
            let files = sources(&path).iter().map(|f| std::fs::read_to_string(f).unwrap()).collect::<Vec<_>>();
            files.iter().map(|t| t.split("#[cfg(test)]\nmod tests").next().unwrap().to_string()).collect::<Vec<_>>().join("\n")
        } else if path.extension().is_none_or(|e| e != "rs") || name == "lib" {
            continue;
        } else {
            std::fs::read_to_string(&path).unwrap()
        };
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let mut deps = BTreeSet::new();
        for line in code.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => group.split('}').next().unwrap().split(',').collect(),
                    None => vec![rest],
                };
                for n in names {
                    let n: String = n.trim().chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
                    if !n.is_empty() && n != name {
                        deps.insert(n);
                    }
                }
            }
        }
        graph.insert(name, deps);
    }
    graph
}

/// Every `.rs` file under `dir`.
fn sources(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
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

#[test]
fn module_imports_have_no_cycle() {
    let graph = imports();
    assert!(graph.len() >= 20, "only {} modules read", graph.len());
    assert!(graph["keys"].contains("replication"), "the scan finds imports: {:?}", graph["keys"]);
    assert!(graph["resp"].contains("keys") && graph["server"].contains("resp"), "directory modules count: {:?}", graph["resp"]);
    for start in graph.keys() {
        // Depth-first from `start`; reaching `start` again is a cycle.
        let mut stack: Vec<Vec<&str>> = vec![vec![start.as_str()]];
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let last = *path.last().unwrap();
            for next in graph.get(last).into_iter().flatten() {
                assert!(next != start, "import cycle: {} -> {next}", path.join(" -> "));
                if seen.insert(next.as_str()) {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push(longer);
                }
            }
        }
    }
}
