//! labctl: rebuild container-network data paths from real kernel objects.
//!
//! The program runs parse -> resolve -> plan -> apply -> observe: the
//! `labctl-topology` crate turns a YAML file into a validated [`Lab`]
//! model, [`plan`] turns the model into kernel actions, [`engine`] applies
//! them through the [`kernel::Kernel`] interface, [`observe`] reads the lab
//! back. [`state`] remembers what was made so `down` can always remove it.

pub use labctl_topology::Lab;

pub mod diff;
pub mod engine;
mod fault;
pub mod features;
pub mod golden;
pub mod graph;
pub mod html;
pub mod impair;
pub mod ipvs;
pub mod junit;
pub mod kernel;
pub mod lb;
pub mod netem;
pub mod observe;
pub mod owner;
pub mod plan;
pub mod release;
pub mod route;
pub mod scenario;
pub mod serve;
pub mod services;
pub mod state;
pub mod sys;
pub mod traffic;
pub mod vm;
mod wire;

/// The layout's one rule that a compiler does not check: no cycle among the
/// top-level modules (a module and its own submodules are one), so each
/// layer can be read, and tested, with only what is below it. Every
/// `crate::` mention counts, doc links and comments included: a link up to
/// a caller is a reader's cycle all the same.
#[cfg(test)]
mod layout {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The top-level modules `text` names as `crate::NAME` or inside
    /// `crate::{...}`, wherever it does: code, doc links, comments and
    /// tests all count, as a reader (or a review tool) follows them all.
    fn uses(code: &str) -> BTreeSet<String> {
        let ident = |s: &str| -> String {
            s.trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        };
        let mut found = BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // Each item of the group at depth 0: `a::b`, `c`, `d::{e}`.
                let mut depth = 0;
                let mut start = 0;
                for (j, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            found.insert(ident(&group[start..j]));
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            found.insert(ident(&group[start..j]));
                            start = j + 1;
                        }
                        _ => {}
                    }
                }
            } else {
                found.insert(ident(rest));
            }
        }
        found
    }

    /// Every edge `module -> used` among the top-level modules of `src`,
    /// with the files that make it.
    fn edges(src: &Path) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
        let mut all = Vec::new();
        files(src, &mut all);
        let top = |p: &Path| -> String {
            let rel = p.strip_prefix(src).expect("under src");
            let first = rel.components().next().expect("a component");
            let name = first.as_os_str().to_string_lossy();
            name.trim_end_matches(".rs").to_string()
        };
        let modules: BTreeSet<String> = all.iter().map(|p| top(p)).collect();
        let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        for path in &all {
            let m = top(path);
            if m == "lib" || m == "main" {
                continue;
            }
            let text = std::fs::read_to_string(path).expect("a source file");
            let file = path.strip_prefix(src).expect("under src");
            for used in uses(&text) {
                if used != m && modules.contains(&used) {
                    edges
                        .entry(m.clone())
                        .or_default()
                        .entry(used)
                        .or_default()
                        .insert(file.display().to_string());
                }
            }
        }
        edges
    }

    /// The cycles of `edges`, each as the set of modules that reach each
    /// other (a strongly connected component of more than one module).
    fn cycles(
        edges: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    ) -> Vec<BTreeSet<String>> {
        let reach = |from: &str| -> BTreeSet<String> {
            let mut seen = BTreeSet::new();
            let mut todo = vec![from.to_string()];
            while let Some(m) = todo.pop() {
                for next in edges.get(&m).into_iter().flat_map(|e| e.keys()) {
                    if seen.insert(next.clone()) {
                        todo.push(next.clone());
                    }
                }
            }
            seen
        };
        let reached: BTreeMap<&String, BTreeSet<String>> =
            edges.keys().map(|m| (m, reach(m))).collect();
        let mut out: Vec<BTreeSet<String>> = Vec::new();
        for (m, r) in &reached {
            if !r.contains(*m) || out.iter().any(|c| c.contains(*m)) {
                continue;
            }
            let component = r
                .iter()
                .filter(|n| reached.get(n).is_some_and(|back| back.contains(*m)))
                .cloned()
                .collect();
            out.push(component);
        }
        out
    }

    #[test]
    fn no_cycle_between_top_level_modules() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let edges = edges(&src);
        let found = cycles(&edges);
        let text: Vec<String> = found
            .iter()
            .map(|c| {
                let inner: Vec<String> = c
                    .iter()
                    .flat_map(|a| {
                        edges[a]
                            .iter()
                            .filter(|(b, _)| c.contains(*b))
                            .map(move |(b, files)| {
                                let files: Vec<&str> = files.iter().map(String::as_str).collect();
                                format!("{a} -> {b} ({})", files.join(", "))
                            })
                    })
                    .collect();
                format!("cycle among {c:?}:\n  {}", inner.join("\n  "))
            })
            .collect();
        assert!(found.is_empty(), "import cycles:\n{}", text.join("\n"));
        // The search sees the edges at all: plan uses the kernel layer.
        assert!(edges.get("plan").is_some_and(|e| e.contains_key("kernel")));
        // observe only reads: neither the executor nor the plan.
        let observe = &edges["observe"];
        for writer in ["engine", "plan"] {
            assert!(
                !observe.contains_key(writer),
                "observe uses {writer}: {:?}",
                observe[writer]
            );
        }
    }

    #[test]
    fn cycles_finds_each_component() {
        let edge = |pairs: &[(&str, &str)]| {
            let mut e: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
            for (a, b) in pairs {
                e.entry(a.to_string())
                    .or_default()
                    .insert(b.to_string(), BTreeSet::new());
            }
            e
        };
        let set = |s: &[&str]| s.iter().map(|m| m.to_string()).collect::<BTreeSet<_>>();
        let e = edge(&[
            ("a", "b"),
            ("b", "c"),
            ("c", "a"),
            ("c", "d"),
            ("d", "e"),
            ("e", "d"),
        ]);
        assert_eq!(cycles(&e), [set(&["a", "b", "c"]), set(&["d", "e"])]);
        assert!(cycles(&edge(&[("a", "b"), ("b", "c"), ("a", "c")])).is_empty());
    }

    #[test]
    fn uses_reads_paths_and_groups() {
        let text = "use crate::a::B;\nuse crate::{c, d::{E, F}, g::H};\n// crate::comment\nfn f() { crate::i::j(); }\n#[cfg(test)]\nmod tests { use crate::k; }\n//! [`X`]: crate::l::X\n/// see [`crate::m::Y`]\n";
        let got: Vec<String> = uses(text).into_iter().collect();
        assert_eq!(got, ["a", "c", "comment", "d", "g", "i", "k", "l", "m"]);
    }
}
