//! JUnit XML for CI systems: one `<testsuite>` per topology file and
//! variant (named as its golden directory is: `flannel`, `flannel
//! services=off`), one `<testcase>` per scenario with its time. A failed
//! scenario's `<failure>` message names the checks that failed (the golden
//! comparison among them), its text is the scenario's text report; a
//! scenario that could not be run at all is an `<error>`. The suite's
//! properties say where it ran: the kernel release, the runtime (`host` or
//! `vm`) and the template variables (`var.KEY`).
//!
//! Written with quick-junit, the nextest project's serializer. [`Suite`] and
//! [`Case`] are plain serde values as well, so a run inside the VM hands its
//! results to the host, which writes the file (the VM sees the host
//! read-only).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, TestCase, TestCaseStatus, TestSuite};
use serde::{Deserialize, Serialize};

use crate::scenario::Report;

/// Where a suite ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Host,
    Vm,
}

impl Runtime {
    pub fn word(self) -> &'static str {
        match self {
            Runtime::Host => "host",
            Runtime::Vm => "vm",
        }
    }
}

/// One scenario's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub scenario: String,
    /// How long the scenario took, in seconds.
    pub seconds: f64,
    pub outcome: Outcome,
}

/// A scenario passed, failed (with the checks that failed), or could not
/// be run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed {
        /// The text report.
        text: String,
    },
    Failed {
        /// The `what` of every failed check, in order.
        checks: Vec<String>,
        text: String,
    },
    Error {
        message: String,
    },
}

impl Case {
    /// The case of a finished scenario: its report after every check (the
    /// golden one included) and the time it took.
    pub fn of(report: &Report, time: Duration) -> Case {
        let text = report.render();
        let outcome = if report.passed {
            Outcome::Passed { text }
        } else {
            Outcome::Failed {
                checks: report
                    .checks
                    .iter()
                    .filter(|c| !c.ok)
                    .map(|c| c.what.clone())
                    .collect(),
                text,
            }
        };
        Case {
            scenario: report.scenario.clone(),
            seconds: time.as_secs_f64(),
            outcome,
        }
    }

    /// The case of a scenario that could not be run: why.
    pub fn error(scenario: &str, message: impl std::fmt::Display, time: Duration) -> Case {
        Case {
            scenario: scenario.to_string(),
            seconds: time.as_secs_f64(),
            outcome: Outcome::Error {
                message: message.to_string(),
            },
        }
    }
}

/// The scenarios of one topology file and variant, run on one kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suite {
    /// [`suite_name`].
    pub name: String,
    /// The topology file as it was given.
    pub topology: String,
    pub kernel: String,
    pub runtime: Runtime,
    pub vars: BTreeMap<String, String>,
    pub cases: Vec<Case>,
}

impl Suite {
    /// An empty suite of `topology` run with `vars` on this kernel, here.
    pub fn new(topology: &Path, vars: &BTreeMap<String, String>) -> Suite {
        Suite {
            name: suite_name(topology, vars),
            topology: topology.display().to_string(),
            kernel: crate::features::kernel_release(),
            runtime: Runtime::Host,
            vars: vars.clone(),
            cases: Vec::new(),
        }
    }
}

/// The file's stem, and after a space the variant's name when the
/// variables make another lab ([`crate::golden::variant`]): `flannel`,
/// `flannel services=off`.
pub fn suite_name(topology: &Path, vars: &BTreeMap<String, String>) -> String {
    let stem = topology
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match crate::golden::variant(topology, vars) {
        Some(v) => format!("{stem} {v}"),
        None => stem,
    }
}

/// The failure message of a failed scenario: the checks that failed.
pub fn failure_message(checks: &[String]) -> String {
    format!("failed: {}", checks.join("; "))
}

/// The JUnit document of `suites`, `<testsuites name="labctl">`.
pub fn to_xml(suites: &[Suite]) -> String {
    let mut report = quick_junit::Report::new("labctl");
    let mut all = Duration::ZERO;
    for s in suites {
        let mut suite = TestSuite::new(s.name.as_str());
        suite.add_property(Property::new("topology", s.topology.as_str()));
        suite.add_property(Property::new("kernel", s.kernel.as_str()));
        suite.add_property(Property::new("runtime", s.runtime.word()));
        for (k, v) in &s.vars {
            suite.add_property(Property::new(format!("var.{k}"), v.as_str()));
        }
        let mut total = Duration::ZERO;
        for c in &s.cases {
            let time = Duration::try_from_secs_f64(c.seconds).unwrap_or_default();
            total += time;
            let status = match &c.outcome {
                Outcome::Passed { .. } => TestCaseStatus::success(),
                Outcome::Failed { checks, text } => {
                    let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    st.set_message(failure_message(checks));
                    st.set_description(text.as_str());
                    st
                }
                Outcome::Error { message } => {
                    let mut st = TestCaseStatus::non_success(NonSuccessKind::Error);
                    st.set_message(message.as_str());
                    st
                }
            };
            let mut case = TestCase::new(c.scenario.as_str(), status);
            case.set_classname(s.name.as_str());
            case.set_time(time);
            if let Outcome::Passed { text } = &c.outcome {
                case.set_system_out(text.as_str());
            }
            suite.add_test_case(case);
        }
        suite.set_time(total);
        all += total;
        report.add_test_suite(suite);
    }
    report.set_time(all);
    report
        .to_string()
        .expect("JUnit of plain strings serializes")
}

/// Write [`to_xml`] to `path`.
pub fn write(path: &Path, suites: &[Suite]) -> std::io::Result<()> {
    std::fs::write(path, to_xml(suites))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suites() -> Vec<Suite> {
        vec![Suite {
            name: "flannel services=off".into(),
            topology: "topologies/flannel.yaml".into(),
            kernel: "6.1.0-test".into(),
            runtime: Runtime::Vm,
            vars: [("services".to_string(), "off".to_string())].into(),
            cases: vec![
                Case {
                    scenario: "f1".into(),
                    seconds: 0.25,
                    outcome: Outcome::Passed {
                        text: "PASS f1\n".into(),
                    },
                },
                Case {
                    scenario: "f2".into(),
                    seconds: 1.5,
                    outcome: Outcome::Failed {
                        checks: vec![
                            "result is connected".into(),
                            "golden golden/flannel/f2.snap".into(),
                        ],
                        text:
                            "FAIL f2\n  [FAILED] result is connected (got: <unreachable> & more)\n"
                                .into(),
                    },
                },
                Case {
                    scenario: "f3".into(),
                    seconds: 0.0,
                    outcome: Outcome::Error {
                        message: "scenario `f3`: sender is not a namespace of the lab".into(),
                    },
                },
            ],
        }]
    }

    #[test]
    fn junit_snapshot() {
        insta::assert_snapshot!(to_xml(&suites()));
    }

    #[test]
    fn junit_parses_back() {
        let xml = to_xml(&suites());
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let suite = doc
            .descendants()
            .find(|n| n.has_tag_name("testsuite"))
            .unwrap();
        assert_eq!(suite.attribute("name"), Some("flannel services=off"));
        assert_eq!(suite.attribute("tests"), Some("3"));
        assert_eq!(suite.attribute("failures"), Some("1"));
        assert_eq!(suite.attribute("errors"), Some("1"));
        let props: Vec<(&str, &str)> = suite
            .descendants()
            .filter(|n| n.has_tag_name("property"))
            .map(|n| (n.attribute("name").unwrap(), n.attribute("value").unwrap()))
            .collect();
        assert!(props.contains(&("kernel", "6.1.0-test")), "{props:?}");
        assert!(props.contains(&("runtime", "vm")), "{props:?}");
        assert!(props.contains(&("var.services", "off")), "{props:?}");
        let failure = suite
            .descendants()
            .find(|n| n.has_tag_name("failure"))
            .unwrap();
        assert_eq!(
            failure.attribute("message"),
            Some("failed: result is connected; golden golden/flannel/f2.snap")
        );
        assert_eq!(
            failure.text(),
            Some("FAIL f2\n  [FAILED] result is connected (got: <unreachable> & more)\n")
        );
        let f2 = failure.parent().unwrap();
        assert_eq!(f2.attribute("name"), Some("f2"));
        assert_eq!(f2.attribute("time"), Some("1.500"));
    }

    #[test]
    fn suite_round_trips_as_json() {
        let s = suites();
        let back: Vec<Suite> = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
