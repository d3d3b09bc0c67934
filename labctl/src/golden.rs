//! Golden files: the expected [`crate::scenario::Report::golden`] text of each
//! scenario, one file per scenario under `golden/<topology>/<scenario>.snap`.
//! They are insta snapshots, written by the suite (`cargo insta review`
//! accepts a new one); `labctl run` reads them too, so a user sees the same
//! diff outside the test suite.
//!
//! A run with template variables that make a different lab (`--var
//! services=off` leaves Flannel's services out, so its reports carry no
//! conntrack or IPVS sections) has golden files of its own, in a
//! subdirectory named after the variables: `golden/flannel/services=off/`.
//! Variables that change nothing in the rendered file (`services=on`, the
//! default) use the topology's own golden files. The comparison is a check
//! of the report like any other, so the verdict covers it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::scenario::{Check, Report};

/// The golden directory of a topology file run with template variables
/// `vars`: `golden/<stem>` beside the file's `topologies/` folder, or its
/// [`variant`] subdirectory.
pub fn dir_for(topology: &Path, vars: &BTreeMap<String, String>) -> PathBuf {
    let base = base_dir(topology);
    match variant(topology, vars) {
        Some(v) => base.join(v),
        None => base,
    }
}

/// `golden/<stem>` beside the file's `topologies/` folder.
fn base_dir(topology: &Path) -> PathBuf {
    let stem = topology
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = topology.parent().unwrap_or(Path::new("."));
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    parent.join("..").join("golden").join(stem)
}

/// The variant's directory name for `vars` ([`variant_name`]), or `None`
/// when the file rendered with them is the file rendered without any: the
/// same lab, the same golden files.
pub fn variant(topology: &Path, vars: &BTreeMap<String, String>) -> Option<String> {
    if vars.is_empty() {
        return None;
    }
    let with = labctl_topology::render(topology, vars);
    let without = labctl_topology::render(topology, &BTreeMap::new());
    match (with, without) {
        (Ok(a), Ok(b)) if a == b => None,
        _ => Some(variant_name(vars)),
    }
}

/// `KEY=VALUE` pairs in key order joined by `,`, every byte outside
/// `A-Za-z0-9_.+-` written `%XX`: one path component (no `/`, never `.`
/// or `..`), the same for the same variables, and readable for the usual
/// ones (`services=off`, `nodes=4,pods=50`).
pub fn variant_name(vars: &BTreeMap<String, String>) -> String {
    let escape = |s: &str| {
        let mut out = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"_.+-".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    vars.iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The golden file of one scenario.
pub fn file_for(dir: &Path, scenario: &str) -> PathBuf {
    dir.join(format!("{scenario}.snap"))
}

/// The expected text of a golden file, without insta's header; `None` when
/// there is no such file.
pub fn read(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(strip_header(&text))
}

/// insta's files start with a `---`-fenced header of metadata.
fn strip_header(text: &str) -> String {
    let mut rest = text;
    if let Some(after) = rest.strip_prefix("---\n")
        && let Some(end) = after.find("\n---\n")
    {
        rest = &after[end + 5..];
    }
    rest.trim_end_matches('\n').to_string() + "\n"
}

/// A unified diff from the golden text to what this run saw.
pub fn diff(golden: &str, actual: &str) -> String {
    similar::TextDiff::from_lines(golden, actual)
        .unified_diff()
        .context_radius(3)
        .header("golden", "this run")
        .to_string()
}

/// How a report compared with its golden file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Golden {
    Match,
    /// The unified diff from the file to this run.
    Differs(String),
    /// No golden file: nothing to compare, not a failure.
    Missing,
}

impl Golden {
    /// `match`, `differs` or `missing`.
    pub fn word(&self) -> &'static str {
        match self {
            Golden::Match => "match",
            Golden::Differs(_) => "differs",
            Golden::Missing => "missing",
        }
    }

    pub fn diff(&self) -> Option<&str> {
        match self {
            Golden::Differs(d) => Some(d),
            _ => None,
        }
    }
}

/// Compare the report's golden text with the golden file at `path` and add
/// the comparison to its checks (so [`Report::passed`] is the verdict over
/// it too); a missing file adds no check.
pub fn check(report: &mut Report, path: &Path) -> Golden {
    let actual = report.golden();
    let golden = match read(path) {
        None => Golden::Missing,
        Some(g) if g == actual => Golden::Match,
        Some(g) => Golden::Differs(diff(&g, &actual)),
    };
    let what = format!("golden {}", path.display());
    match &golden {
        Golden::Missing => {}
        Golden::Match => report.add_check(Check {
            what,
            ok: true,
            detail: None,
        }),
        Golden::Differs(d) => report.add_check(Check {
            what,
            ok: false,
            detail: Some(format!(
                "differs:\n{d}(if the change is right: `./lab test`, then `cargo insta review` to accept it)"
            )),
        }),
    }
    golden
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_stripped() {
        let t = "---\nsource: x\nexpression: y\n---\nscenario: a\npath: b\n";
        assert_eq!(strip_header(t), "scenario: a\npath: b\n");
    }

    #[test]
    fn golden_dir_is_beside_topologies() {
        assert_eq!(
            dir_for(Path::new("topologies/flannel.yaml"), &BTreeMap::new()),
            Path::new("topologies/../golden/flannel")
        );
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn flannel() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/flannel.yaml")
    }

    /// `--var services=off` is another lab: golden files of its own.
    /// `services=on` is the default, and a variable the file never reads
    /// changes nothing: the topology's own.
    #[test]
    fn a_variant_that_changes_the_lab_has_its_own_golden_dir() {
        let base = base_dir(&flannel());
        assert_eq!(
            dir_for(&flannel(), &vars(&[("services", "off")])),
            base.join("services=off")
        );
        assert_eq!(dir_for(&flannel(), &vars(&[("services", "on")])), base);
        assert_eq!(dir_for(&flannel(), &vars(&[("unused", "1")])), base);
    }

    #[test]
    fn variant_names_are_one_path_component() {
        assert_eq!(
            variant_name(&vars(&[("pods", "50"), ("nodes", "4")])),
            "nodes=4,pods=50"
        );
        assert_eq!(
            variant_name(&vars(&[("a", "../x/y"), ("b=c", "d,e f")])),
            "a=..%2Fx%2Fy,b%3Dc=d%2Ce%20f"
        );
    }

    #[test]
    fn diff_shows_changed_lines() {
        let d = diff("path: a -> b -> c\n", "path: a -> b\n");
        assert!(d.contains("-path: a -> b -> c"), "{d}");
        assert!(d.contains("+path: a -> b"), "{d}");
    }

    /// A report whose expectations all held.
    fn passing_report() -> Report {
        Report {
            scenario: "s1".into(),
            description: None,
            from: "centos".into(),
            source: None,
            to: "172.23.96.24".into(),
            traffic: labctl_topology::Traffic::Icmp,
            result: Some(labctl_topology::ResultKind::Connected),
            detail: "connected in 0.10 ms".into(),
            served_by: None,
            server_saw_client: None,
            path: vec!["centos/eth0".into(), "nginx/eth0".into()],
            stacks: 2,
            devices: 2,
            hops: Vec::new(),
            table: Vec::new(),
            conntrack: Vec::new(),
            ipvs: Vec::new(),
            nft: Vec::new(),
            translations: Vec::new(),
            changes: Vec::new(),
            rtt_ms: Some(0.1),
            retransmits: None,
            checks: vec![Check {
                what: "result is connected".into(),
                ok: true,
                detail: None,
            }],
            passed: true,
            timings: Default::default(),
        }
    }

    struct TempFile(PathBuf);
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn golden_file(tag: &str, text: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("labctl-golden-{}-{tag}.snap", std::process::id()));
        std::fs::write(&path, format!("---\nsource: test\n---\n{text}")).unwrap();
        TempFile(path)
    }

    /// The verdict covers the golden file: every expectation held, the
    /// golden text differs, so the report fails, and says so on its first
    /// line, above the diff.
    #[test]
    fn a_differing_golden_makes_the_verdict_fail() {
        let mut r = passing_report();
        let other = r.golden().replace("stacks: 2", "stacks: 3");
        let file = golden_file("differs", &other);
        let g = check(&mut r, &file.0);
        assert_eq!(g.word(), "differs");
        assert!(!r.passed);
        let text = r.render();
        assert!(text.starts_with("FAIL s1\n"), "{text}");
        assert!(!text.contains("PASS"), "{text}");
        let at = text.find("[FAILED] golden ").expect(&text);
        assert!(text[at..].contains("differs:\n    --- golden\n"), "{text}");
        assert!(
            text[at..].contains("    -stacks: 3\n    +stacks: 2\n"),
            "{text}"
        );
    }

    #[test]
    fn a_matching_golden_keeps_the_verdict_and_a_missing_one_adds_nothing() {
        let mut r = passing_report();
        let file = golden_file("match", &r.golden());
        assert_eq!(check(&mut r, &file.0), Golden::Match);
        assert!(r.passed);
        assert!(r.render().starts_with("PASS s1\n"));
        assert_eq!(r.checks.len(), 2);

        let mut r = passing_report();
        let missing = std::env::temp_dir().join("labctl-golden-none/nothing.snap");
        assert_eq!(check(&mut r, &missing), Golden::Missing);
        assert!(r.passed);
        assert_eq!(r.checks.len(), 1);
    }

    /// A chosen source address shows beside the sender, in the golden
    /// text and the report; without one both read as they always did.
    #[test]
    fn the_sender_shows_its_source_address_only_when_chosen() {
        let mut r = passing_report();
        assert!(
            r.golden().contains("\nfrom: centos\nto: "),
            "{}",
            r.golden()
        );
        assert!(r.render().contains("\n  centos -> 172.23.96.24 (icmp)"));
        r.source = Some(std::net::Ipv4Addr::new(172, 23, 96, 1));
        assert!(
            r.golden().contains("\nfrom: centos (172.23.96.1)\nto: "),
            "{}",
            r.golden()
        );
        assert!(
            r.render()
                .contains("\n  centos (172.23.96.1) -> 172.23.96.24 (icmp)"),
            "{}",
            r.render()
        );
    }

    /// A failed expectation stays failed whatever the golden file says.
    #[test]
    fn a_matching_golden_does_not_make_a_failed_report_pass() {
        let mut r = passing_report();
        r.add_check(Check {
            what: "crosses 3 network stacks".into(),
            ok: false,
            detail: Some("got: 2".into()),
        });
        let file = golden_file("failed", &r.golden());
        assert_eq!(check(&mut r, &file.0), Golden::Match);
        assert!(!r.passed);
        assert!(r.render().starts_with("FAIL s1\n"));
    }
}
