//! Load arbitrary text as a topology file, as `labctl validate` would, with
//! the variables the shipped topologies use, and render the error the way
//! the CLI shows it. Loading may fail, but never panic, hang or take
//! unbounded memory: templates run on fuel and a bounded output, YAML
//! within serde-saphyr's budget, and every problem points into the text.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|source: &str| {
    let vars: BTreeMap<String, String> = [
        ("nodes", "2"),
        ("pods", "3"),
        ("services", "off"),
        ("terway", "1.1.0"),
        ("name", "fuzz"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Err(e) = labctl_topology::load_str("fuzz.yaml", source, &vars) {
        let _ = e.to_string();
        let mut out = String::new();
        let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::none());
        let _ = handler.render_report(&mut out, &e);
        for p in e.problems() {
            assert!(p.line >= 1 && p.column >= 1, "{p}");
        }
    }
});
