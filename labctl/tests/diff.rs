//! `labctl diff` on real labs: the Kata peer-pods lab with and without
//! OVN's ARP responder, each side a whole `labctl run` of its own lab. P1
//! times out under the article's bug and connects without the responder,
//! and the diff must say so in both output formats, exit 0, and leave no
//! namespace of either side behind. Runs where the lab's kernel features
//! are (the host, or labctl's VM, as `run` decides), as root; ignored with
//! the reason elsewhere (a failure under `LABCTL_REQUIRE_ALL=1`).

use std::path::{Path, PathBuf};

use common::{Down, Place, ensure, labctl, ok, unique};
use libtest_mimic::{Arguments, Failed};

mod common;

fn kata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/kata-peer-pods.yaml")
}

const P1: &str = "p1-worker-pings-pod";

/// `labctl diff` of the two variants, P1 only, in `format`.
fn diff(prefix: &str, format: &str) -> Result<String, Failed> {
    let _a = Down(format!("{prefix}-a"));
    let _b = Down(format!("{prefix}-b"));
    let o = ok(labctl()
        .args(["diff", "--name", prefix, "-o", format])
        .args(["--var", "arp_responder=on", "--var", "arp_responder=off"])
        .arg(kata())
        .arg(P1))?;
    left_behind(prefix)?;
    Ok(String::from_utf8(o.stdout)?)
}

/// Fail if a namespace of either side is still there: each side's run
/// takes its own lab down.
fn left_behind(prefix: &str) -> Result<(), Failed> {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return Ok(());
    };
    let left: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect();
    ensure(left.is_empty(), format!("namespaces left behind: {left:?}"))
}

fn p1_differs_in_result_in_json() -> Result<(), Failed> {
    let out = diff(&unique("dj"), "json")?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let scenarios = v["scenarios"].as_array().ok_or("no scenarios")?;
    ensure(
        scenarios.len() == 1,
        format!("one scenario asked for:\n{out}"),
    )?;
    let p1 = &scenarios[0];
    ensure(
        p1["scenario"] == P1 && p1["status"] == "differs",
        format!("P1 should differ:\n{out}"),
    )?;
    let result = p1["differences"]
        .as_array()
        .and_then(|d| d.iter().find(|x| x["aspect"] == "result"))
        .ok_or_else(|| format!("no result difference:\n{out}"))?;
    ensure(
        result["a"] == serde_json::json!(["timeout"])
            && result["b"] == serde_json::json!(["connected"]),
        format!("P1: timeout under the bug, connected without the responder:\n{out}"),
    )?;
    // Both sides ran their P1, under their own variables.
    ensure(
        v["a"]["vars"]["arp_responder"] == "on"
            && v["b"]["vars"]["arp_responder"] == "off"
            && v["a"]["ran"] == 1
            && v["b"]["ran"] == 1,
        format!("sides:\n{out}"),
    )
}

fn p1_differs_in_result_in_text() -> Result<(), Failed> {
    let out = diff(&unique("dt"), "text")?;
    println!("{out}");
    let line = |start: &str| out.lines().find(|l| l.trim_start().starts_with(start));
    ensure(
        line(P1).is_some_and(|l| l.contains("differs")),
        format!("P1 should differ:\n{out}"),
    )?;
    ensure(
        line("result").is_some_and(|l| l.ends_with("A: timeout")) && line("B: connected").is_some(),
        format!("P1's result, A over B:\n{out}"),
    )?;
    ensure(
        out.contains("1 scenario(s): 1 differ, 0 same"),
        format!("the count:\n{out}"),
    )
}

fn main() {
    let args = Arguments::from_args();
    let place = match labctl_topology::load(&kata(), &Default::default()) {
        Ok(lab) => common::place_for(&lab),
        Err(e) => Place::Nowhere(format!("{}: {e}", kata().display())),
    };
    let trials = vec![
        common::placed_trial(
            &place,
            None,
            "p1_differs_in_result_in_json",
            p1_differs_in_result_in_json,
        ),
        common::placed_trial(
            &place,
            None,
            "p1_differs_in_result_in_text",
            p1_differs_in_result_in_text,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
