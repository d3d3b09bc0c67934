//! Golden files: the expected [`crate::scenario::Report::golden`] text of each
//! scenario, one file per scenario under `golden/<topology>/<scenario>.snap`.
//! They are insta snapshots, written by the suite (`cargo insta review`
//! accepts a new one); `labctl run` reads them too, so a user sees the same
//! diff outside the test suite.

use std::path::{Path, PathBuf};

/// The golden directory of a topology file: `golden/<stem>` beside the
/// file's `topologies/` folder.
pub fn dir_for(topology: &Path) -> PathBuf {
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
            dir_for(Path::new("topologies/flannel.yaml")),
            Path::new("topologies/../golden/flannel")
        );
    }

    #[test]
    fn diff_shows_changed_lines() {
        let d = diff("path: a -> b -> c\n", "path: a -> b\n");
        assert!(d.contains("-path: a -> b -> c"), "{d}");
        assert!(d.contains("+path: a -> b"), "{d}");
    }
}
