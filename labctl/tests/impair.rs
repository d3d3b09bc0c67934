//! Impairments on a live lab (`topologies/impair.yaml`): a scenario's
//! netem delay is what makes its `rtt_ms` expectation pass (without it the
//! check fails), a whole run's changes leave the lab as it was, and
//! `labctl netem` puts what it says on an interface, as `tc qdisc show`
//! reads it back; and with a client's link delayed by hand, each
//! scenario's connection still closes inside that scenario (Flannel's
//! file). Where the host kernel lacks netem the labs run in the VM
//! (labctl decides, as for any lab); without root or a VM kernel the trials
//! are ignored with the reason.

use std::path::PathBuf;

use common::{Down, ensure, fails_with, labctl, ok, place_for, text};
use libtest_mimic::{Arguments, Failed};

mod common;

fn file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topologies/impair.yaml")
}

/// The JSON reports of `labctl run` of the impair file.
fn run_json(name: &str, extra: &[&str]) -> Result<Vec<serde_json::Value>, Failed> {
    let o = common::run(
        labctl()
            .args(["run", "--name", name, "-o", "json"])
            .arg(file())
            .args(extra),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .map_err(|e| format!("no JSON from labctl run ({e}): {}", text(&o)))?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// Without its delay, i2's `rtt_ms: {min: 100}` fails, and says what it got.
fn rtt_check_fails_without_the_delay() -> Result<(), Failed> {
    let name = common::unique("nodelay");
    let _down = Down(name.clone());
    let reports = run_json(&name, &["--var", "delay=none", "i2-ping-delayed"])?;
    let r = reports
        .iter()
        .find(|r| r["scenario"] == "i2-ping-delayed")
        .ok_or("no i2 report")?;
    ensure(
        r["passed"] == false,
        format!("i2 passed without its delay: {r:#}"),
    )?;
    let checks = r["checks"].as_array().ok_or("no checks")?;
    let rtt = checks
        .iter()
        .find(|c| c["what"] == "round trip at least 100 ms")
        .ok_or_else(|| format!("no rtt check: {r:#}"))?;
    ensure(rtt["ok"] == false, format!("{rtt:#}"))?;
    let got = r["rtt_ms"].as_f64().ok_or("no rtt_ms")?;
    ensure(got < 100.0, format!("rtt {got} ms without a delay"))?;
    ensure(
        rtt["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("got: ")),
        format!("{rtt:#}"),
    )?;
    Ok(())
}

/// What the kernel has in every namespace of the lab that a link change
/// could alter: links (state, MTU, qdisc; not `-d`, whose bridge timers
/// tick), addresses, routes, permanent
/// neighbours, qdiscs.
fn lab_state(name: &str) -> Result<String, Failed> {
    let mut out = String::new();
    for entity in ["vpc", "node1", "node2", "web", "api", "client"] {
        let o = ok(labctl().args([
            "exec",
            name,
            entity,
            "--",
            "sh",
            "-c",
            "ip -o link; ip -o addr; ip route; ip neigh show nud permanent; tc qdisc show",
        ]))?;
        // The operational state word (`state UNKNOWN`, `state UP`) is
        // left out: a bridge's goes from UNKNOWN to UP when the kernel's
        // link watcher gets to it, up to a second after `up`. The flags
        // (UP, LOWER_UP, NO-CARRIER) stay.
        let text = String::from_utf8_lossy(&o.stdout);
        let text: Vec<String> = text
            .lines()
            .map(|l| match l.find(" state ") {
                Some(i) => {
                    let rest = &l[i + " state ".len()..];
                    let end = rest.find(' ').unwrap_or(rest.len());
                    format!("{}{}", &l[..i], &rest[end..])
                }
                None => l.to_string(),
            })
            .collect();
        out.push_str(&format!("## {entity}\n{}\n", text.join("\n")));
    }
    Ok(out)
}

fn qdisc(name: &str) -> Result<String, Failed> {
    let o = ok(labctl().args([
        "exec", name, "node1", "--", "tc", "qdisc", "show", "dev", "eth0",
    ]))?;
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A run of every scenario (netem, a link down, an MTU, a deleted route, a
/// pod moved to another node with routes added and sysctls set) leaves the
/// lab as `up` made it, ifindexes and MACs included; then `labctl netem` by
/// hand, read back with tc.
fn changes_are_undone_and_netem_by_hand() -> Result<(), Failed> {
    let name = common::unique("undo");
    let _down = Down(name.clone());
    ok(labctl().args(["up", "-q", "--name", &name]).arg(file()))?;
    let before = lab_state(&name)?;
    ensure(before.contains("mtu 1500"), before.clone())?;
    let reports = run_json(&name, &[])?;
    ensure(reports.len() == 7, format!("{reports:#?}"))?;
    for r in &reports {
        ensure(r["passed"] == true, format!("{r:#}"))?;
    }
    let i2 = &reports[1];
    let rtt = i2["rtt_ms"].as_f64().ok_or("no rtt")?;
    ensure(
        rtt >= 100.0,
        format!("i2's rtt {rtt} ms with 50 ms each way"),
    )?;
    let after = lab_state(&name)?;
    if before != after {
        let diff = similar::TextDiff::from_lines(&before, &after)
            .unified_diff()
            .to_string();
        return Err(format!("the lab changed:\n{diff}").into());
    }

    let out = ok(labctl().args([
        "netem",
        &name,
        "node1/eth0",
        "--delay",
        "20ms",
        "--jitter",
        "5ms",
        "--loss",
        "1%",
        "--rate",
        "10mbit",
        "--reorder",
        "25%",
    ]))?;
    let said = String::from_utf8_lossy(&out.stdout);
    ensure(
        said.contains(
            "qdisc replace dev eth0 root netem delay 20ms 5ms loss 1% rate 10mbit reorder 25%",
        ),
        said.to_string(),
    )?;
    // What the kernel made of the hand-built payload, in tc's words.
    let q = qdisc(&name)?;
    for want in [
        "netem",
        "delay 20ms  5ms",
        "loss 1%",
        "reorder 25%",
        "gap 1",
        "rate 10Mbit",
    ] {
        ensure(q.contains(want), format!("no `{want}` in: {q}"))?;
    }
    ok(labctl().args(["netem", &name, "node1/eth0", "--clear"]))?;
    let q = qdisc(&name)?;
    ensure(!q.contains("netem"), q.clone())?;
    let again = ok(labctl().args(["netem", &name, "node1/eth0", "--clear"]))?;
    ensure(
        String::from_utf8_lossy(&again.stdout).contains("nothing to clear"),
        text(&again),
    )?;

    // Wrong names are usage errors that list the valid ones.
    fails_with(
        &common::run(labctl().args(["netem", &name, "node9/eth0", "--delay", "1ms"])),
        2,
        "has no node, pod or client `node9`; it has: vpc, node1, node2, web, api, client",
    )?;
    fails_with(
        &common::run(labctl().args(["netem", &name, "node1/eth9", "--delay", "1ms"])),
        2,
        "`node1` has no interface `eth9`; it has: eth0",
    )?;
    fails_with(
        &common::run(labctl().args(["netem", &name, "node1/eth0", "--delay", "5"])),
        2,
        "--delay: `5` has no unit",
    )?;
    fails_with(
        &common::run(labctl().args(["netem", "../etc", "node1/eth0", "--delay", "1ms"])),
        2,
        "is not a lab name",
    )?;
    Ok(())
}

fn flannel() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topologies/flannel.yaml")
}

/// A scenario ends only once its connection has finished closing. With
/// the client's link delayed by hand (150 ms a packet; the scenarios do
/// not know of it, so their quiet window stays 30 ms), every scenario of
/// the Flannel file still passes: the last ACK of each connection is
/// waited for. Without that wait 3 of 15 failed here, each with the
/// previous scenario's connection in its taps or conntrack (its last ACK
/// cut off by the next scenario's resets, the server's FIN sent again).
fn a_late_last_ack_stays_in_its_scenario() -> Result<(), Failed> {
    let name = common::unique("lateack");
    let _down = Down(name.clone());
    let vxlan = ["--var", "backend=vxlan"];
    ok(labctl()
        .args(["up", "-q", "--name", &name])
        .args(vxlan)
        .arg(flannel()))?;
    ok(labctl().args([
        "exec", &name, "centos", "--", "tc", "qdisc", "add", "dev", "eth0", "root", "netem",
        "delay", "150ms",
    ]))?;
    let o = common::run(
        labctl()
            .args(["run", "--name", &name, "-o", "json"])
            .args(vxlan)
            .arg(flannel()),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .map_err(|e| format!("no JSON from labctl run ({e}): {}", text(&o)))?;
    let reports = v.as_array().cloned().unwrap_or_default();
    ensure(reports.len() == 15, format!("{} reports", reports.len()))?;
    let failed: Vec<_> = reports
        .iter()
        .filter(|r| r["passed"] != true)
        .map(|r| format!("{r:#}"))
        .collect();
    ensure(failed.is_empty(), failed.join("\n"))
}

fn main() {
    let args = Arguments::from_args();
    let lab = labctl_topology::load(&file(), &Default::default()).expect("impair.yaml loads");
    let place = place_for(&lab);
    let trial = |name, f| common::placed_trial(&place, None, name, f);
    let vars = [("backend".to_string(), "vxlan".to_string())].into();
    let flannel_place =
        place_for(&labctl_topology::load(&flannel(), &vars).expect("flannel.yaml loads"));
    let trials = vec![
        common::placed_trial(
            &flannel_place,
            None,
            "a_late_last_ack_stays_in_its_scenario",
            a_late_last_ack_stays_in_its_scenario,
        ),
        trial(
            "rtt_check_fails_without_the_delay",
            rtt_check_fails_without_the_delay,
        ),
        trial(
            "changes_are_undone_and_netem_by_hand",
            changes_are_undone_and_netem_by_hand,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
