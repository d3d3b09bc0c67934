//! labctl: rebuild container-network data paths from real kernel objects.
//!
//! The program runs parse -> resolve -> plan -> apply -> observe: the
//! `labctl-topology` crate turns a YAML file into a validated [`Lab`]
//! model, [`plan`] turns the model into kernel actions, [`engine`] applies
//! them through the [`kernel::Kernel`] interface, [`observe`] reads the lab
//! back. [`state`] remembers what was made so `down` can always remove it.

pub use labctl_topology::Lab;

pub mod capture;
pub mod conntrack;
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
/// layer can be read, and tested, with only what is below it.
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
    /// `crate::{...}`, outside comments and the tests at its end.
    fn uses(text: &str) -> BTreeSet<String> {
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or("")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
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

    #[test]
    fn no_cycle_between_top_level_modules() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        let top = |p: &Path| -> String {
            let rel = p.strip_prefix(&src).expect("under src");
            let first = rel.components().next().expect("a component");
            let name = first.as_os_str().to_string_lossy();
            name.trim_end_matches(".rs").to_string()
        };
        let modules: BTreeSet<String> = all.iter().map(|p| top(p)).collect();
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for path in &all {
            let m = top(path);
            if m == "lib" || m == "main" {
                continue;
            }
            let text = std::fs::read_to_string(path).expect("a source file");
            for used in uses(&text) {
                if used != m && modules.contains(&used) {
                    edges.entry(m.clone()).or_default().insert(used);
                }
            }
        }
        // Depth-first search; a module met again while on the stack closes
        // a cycle, which the message spells out.
        fn visit(
            m: &str,
            edges: &BTreeMap<String, BTreeSet<String>>,
            stack: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(at) = stack.iter().position(|s| s == m) {
                let mut cycle = stack[at..].to_vec();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            if done.contains(m) {
                return None;
            }
            stack.push(m.to_string());
            for next in edges.get(m).into_iter().flatten() {
                if let Some(cycle) = visit(next, edges, stack, done) {
                    return Some(cycle);
                }
            }
            stack.pop();
            done.insert(m.to_string());
            None
        }
        let mut done = BTreeSet::new();
        for m in edges.keys() {
            if let Some(cycle) = visit(m, &edges, &mut Vec::new(), &mut done) {
                panic!("import cycle: {}", cycle.join(" -> "));
            }
        }
        // The search sees the edges at all: plan uses the kernel layer.
        assert!(edges.get("plan").is_some_and(|e| e.contains("kernel")));
    }

    #[test]
    fn uses_reads_paths_and_groups() {
        let text = "use crate::a::B;\nuse crate::{c, d::{E, F}, g::H};\n// crate::comment\nfn f() { crate::i::j(); }\n#[cfg(test)]\nmod tests { use crate::k; }\n";
        let got: Vec<String> = uses(text).into_iter().collect();
        assert_eq!(got, ["a", "c", "d", "g", "i"]);
    }
}
