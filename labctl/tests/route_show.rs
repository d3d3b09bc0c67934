//! `labctl show route` against the Cilium VXLAN lab that is up: each
//! node's endpoint and tunnel maps read back as the topology's `bpf_maps`
//! give them, with the ifindexes the plan fixed (like `cilium bpf endpoint
//! list` / `cilium bpf tunnel list`), in both output formats; and a
//! namespace without the router is said to have none, with the "wrong
//! state" exit code; and the host-routing lab's local delivery mode as
//! `--var redirect=` set it. Runs on the host kernel (vxlan, cls_bpf, BPF), as
//! root; ignored with the reason elsewhere (a failure under
//! `LABCTL_REQUIRE_ALL=1`).

use std::path::{Path, PathBuf};

use common::{Down, Place, ensure, fails_with, labctl_here, ok, run, text, unique};
use libtest_mimic::{Arguments, Failed};

mod common;

fn topology() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/cilium-vxlan.yaml")
}

fn host_routing() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/cilium-host-routing.yaml")
}

/// `--var redirect=peer` reaches the kernel's config slot: the maps read
/// back say `bpf_redirect_peer`, with both pods and no tunnel device.
fn show_route_reads_the_delivery_mode() -> Result<(), Failed> {
    let lab = unique("k4route");
    let _down = Down(lab.clone());
    ok(labctl_here()
        .args(["up", "-q", "--name", &lab, "--var", "redirect=peer"])
        .arg(host_routing()))?;
    let node = text(&ok(labctl_here().args(["show", "route", &lab, "node"]))?);
    println!("show route node:\n{node}");
    for want in [
        "10.244.1.11 ",
        "10.244.1.22 ",
        "tunnel device: none",
        "local delivery: peer (bpf_redirect_peer)",
    ] {
        ensure(node.contains(want), format!("no `{want}` in:\n{node}"))?;
    }
    let json = ok(labctl_here().args(["show", "route", &lab, "node", "-o", "json"]))?;
    let v: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    ensure(v["redirect"] == "peer", format!("node's maps: {v}"))
}

fn show_route_lists_each_nodes_maps() -> Result<(), Failed> {
    let lab = unique("cvroute");
    let _down = Down(lab.clone());
    ok(labctl_here()
        .args(["up", "-q", "--name", &lab])
        .arg(topology()))?;

    let node01 = text(&ok(labctl_here().args(["show", "route", &lab, "node01"]))?);
    println!("show route node01:\n{node01}");
    // lxc8b528e748ff4 is ifindex 6 and cilium_vxlan 5 in the plan.
    for want in [
        "10.244.1.154     ifindex 6     identity 48312     mac 0a:58:0a:f4:01:9a  lxc mac 0e:1b:52:8e:74:8f",
        "10.244.6.0/24       -> 192.168.66.221",
        "tunnel device: ifindex 5",
        "local delivery: egress (bpf_redirect)",
    ] {
        ensure(node01.contains(want), format!("no `{want}` in:\n{node01}"))?;
    }
    ensure(
        !node01.contains("10.244.6.11 "),
        format!("node02's endpoint in node01's maps:\n{node01}"),
    )?;

    let json = ok(labctl_here().args(["show", "route", &lab, "node02", "-o", "json"]))?;
    let v: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    ensure(
        v["endpoints"][0]["address"] == "10.244.6.11"
            && v["endpoints"][0]["identity"] == 28611
            && v["endpoints"][0]["lxc_mac"] == "0e:1b:52:b0:a6:c5"
            && v["tunnels"][0]["prefix"] == "10.244.1.0/24"
            && v["tunnels"][0]["remote"] == "192.168.66.226"
            && v["tunnel_ifindex"] == 5
            && v["redirect"] == "egress",
        format!("node02's maps: {v}"),
    )?;

    let o = run(labctl_here().args(["show", "route", &lab, "ca"]));
    fails_with(&o, 3, "`ca` of lab")?;
    fails_with(&o, 3, "runs no eBPF router")
}

fn main() {
    let args = Arguments::from_args();
    let place = match labctl_topology::load(&topology(), &Default::default()) {
        Ok(lab) => common::place_for(&lab),
        Err(e) => Place::Nowhere(format!("{}: {e}", topology().display())),
    };
    let trials = vec![
        common::placed_trial(
            &place,
            Some("reads the pinned maps from the host"),
            "show_route_lists_each_nodes_maps",
            show_route_lists_each_nodes_maps,
        ),
        // The same kernel features as the VXLAN lab's, less the vxlan.
        common::placed_trial(
            &place,
            Some("reads the pinned maps from the host"),
            "show_route_reads_the_delivery_mode",
            show_route_reads_the_delivery_mode,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
