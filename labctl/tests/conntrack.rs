//! The conntrack dump against a real kernel, and `labctl show` end to end.
//!
//! The kernel trials build fresh namespaces of their own (removed however
//! the trial ends); without root they are reported ignored with the reason
//! (a failure under `LABCTL_REQUIRE_ALL=1`). Decoding and formatting are
//! unit-tested without root in `src/observe/conntrack.rs`.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use common::{Down, ensure, fails_with, gate, labctl_here, ok, run, text, unique};
use labctl::observe::conntrack::{self, ConntrackError, Entry, Tuple};
use labctl::traffic::{Kind, Proto, Request, Servers, run_client};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

mod common;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

fn ip(args: &[&str]) -> Result<(), Failed> {
    ok(Command::new("ip").args(args)).map(|_| ())
}

/// Named namespaces removed on drop, even when the trial fails half way.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.0.iter().rev() {
            let _ = run(Command::new("ip").args(["netns", "delete", ns]));
        }
    }
}

/// Client and server namespaces joined by a veth pair, CLIENT and SERVER on
/// its ends.
fn two_namespaces() -> Result<(Namespaces, String, String), Failed> {
    let (client, server) = (unique("c"), unique("s"));
    let guard = Namespaces(vec![client.clone(), server.clone()]);
    ip(&["netns", "add", &client])?;
    ip(&["netns", "add", &server])?;
    ip(&[
        "link", "add", &client, "netns", &client, "type", "veth", "peer", "name", &server, "netns",
        &server,
    ])?;
    for (ns, addr) in [(&client, CLIENT), (&server, SERVER)] {
        let cidr = format!("{addr}/24");
        ip(&["-n", ns, "addr", "add", &cidr, "dev", ns])?;
        ip(&["-n", ns, "link", "set", ns, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    for ns in [&client, &server] {
        let pending = labctl::kernel::wait_links_ready_in(ns, labctl::kernel::SETTLE_LIMIT)
            .map_err(|e| format!("{ns}: {e}"))?;
        if !pending.is_empty() {
            return Err(format!("{ns}: links not activated: {pending:?}").into());
        }
    }
    Ok((guard, client, server))
}

/// Make `ns` track connections: a rule with a `ct` expression registers
/// the conntrack hooks in its namespace (`nft_ct_get_init` ->
/// `nf_ct_netns_get`), which happens per namespace and on demand. Loaded
/// with `nft -f` as labctl's services load their rules.
fn track_connections(ns: &str) -> Result<(), Failed> {
    let ruleset = "table ip t {
        chain c {
            type filter hook prerouting priority 0;
            ct state established accept
        }
    }
    ";
    labctl::kernel::nft::apply(ns, ruleset, "nft -f -")
        .map_err(|e| format!("track connections in {ns}: {e}").into())
}

/// A real TCP connection in the dump, decoded and formatted; the kernel
/// kind's `flush_in` (what a scenario's `FlushConntrack` step runs) then
/// empties the table.
fn dump_sees_a_tcp_connection() -> Result<(), Failed> {
    let (_guard, client, server) = two_namespaces()?;
    track_connections(&server)?;
    let before = conntrack::dump_in(&server)?;
    ensure(before.is_empty(), format!("fresh table: {before:?}"))?;

    let servers = Servers::start(&server, &[(80, Proto::Tcp)])?;
    let req = Request::new(Kind::TcpConnect, SocketAddr::new(SERVER.into(), 80)).with_attempts(3);
    let outcome = run_client(&client, &req);
    servers.stop();
    let success = outcome
        .result
        .map_err(|e| format!("TCP connect {client} -> {SERVER}:80: {e}"))?;
    let local = success.local.ok_or("client port unknown")?;
    let sport = local.port();
    ensure(
        conntrack::EPHEMERAL_PORTS.contains(&sport),
        format!("client port {sport} outside the ephemeral range"),
    )?;

    let entries = conntrack::dump_in(&server)?;
    let tuple = |src, dst, sport, dport| Tuple {
        src,
        dst,
        protocol: 6,
        sport: Some(sport),
        dport: Some(dport),
    };
    let want_original = tuple(CLIENT, SERVER, sport, 80);
    let found: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.original == want_original)
        .collect();
    let [entry] = found[..] else {
        return Err(format!("no single entry for {want_original:?} in {entries:#?}").into());
    };
    ensure(
        entry.reply == tuple(SERVER, CLIENT, 80, sport),
        format!("reply tuple: {entry:?}"),
    )?;
    ensure(
        entry.status.iter().any(|s| s == "SEEN_REPLY"),
        format!("status: {entry:?}"),
    )?;
    ensure(
        entry.tcp_state.is_some(),
        format!("no TCP state: {entry:?}"),
    )?;
    ensure(
        conntrack::involving(&entries, CLIENT).contains(&entry),
        "involving(CLIENT) misses the entry",
    )?;

    let lines = conntrack::format(&entries, true);
    let want = "tcp 6 src=10.99.0.1 dst=10.99.0.2 sport=* dport=80 \
                src=10.99.0.2 dst=10.99.0.1 sport=80 dport=*";
    ensure(
        lines.iter().any(|l| l == want),
        format!("redacted lines {lines:#?} lack {want}"),
    )?;
    let plain = conntrack::format(&entries, false).join("\n");
    ensure(
        plain.contains(&format!("sport={sport} dport=80")),
        format!("unredacted lines lack the client port: {plain}"),
    )?;

    // What every scenario does first: the table empties, this connection
    // (the only one it held) included.
    labctl::kernel::conntrack::flush_in(&server)?;
    let after = conntrack::dump_in(&server)?;
    ensure(
        after.is_empty(),
        format!("after flush_in, {want_original:?} was in {after:#?}"),
    )
}

/// No root needed: the namespace file is missing before anything else.
fn missing_namespace_is_an_error() -> Result<(), Failed> {
    let name = unique("missing");
    match conntrack::dump_in(&name) {
        Err(e @ ConntrackError::Netns { .. }) => ensure(
            e.to_string() == format!("enter network namespace {name}"),
            e.to_string(),
        ),
        other => Err(format!("{other:?}").into()),
    }
}

fn topology(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../topologies")
        .join(name)
}

/// No root needed: a lab that is not up is the state's fault (exit 3).
fn show_lab_not_up() -> Result<(), Failed> {
    let lab = unique("nolab");
    for what in ["conntrack", "ipvs"] {
        let o = run(labctl_here().args(["show", what, &lab, "centos"]));
        fails_with(&o, 3, &format!("lab `{lab}` is not up"))?;
    }
    Ok(())
}

/// `show` on a host lab: unknown entity (exit 2, known ones listed),
/// conntrack as JSON, and `show ipvs` as the host kernel decides: where it
/// has IPVS the table (empty: the lab has no services), else the IPVS
/// module's error (exit 4; this project's build machines).
fn show_on_a_host_lab() -> Result<(), Failed> {
    let lab = unique("fl");
    let _down = Down(lab.clone());
    ok(labctl_here()
        .args(["up", "-q", "--name", &lab, "--var", "services=off"])
        .arg(topology("flannel.yaml")))?;

    let o = run(labctl_here().args(["show", "conntrack", &lab, "nosuch"]));
    fails_with(&o, 2, "has no node, pod or client `nosuch`; it has: ")?;
    ensure(
        String::from_utf8_lossy(&o.stderr).contains("centos"),
        format!("known entities not listed: {}", text(&o)),
    )?;

    let o = ok(labctl_here().args(["show", "conntrack", &lab, "centos", "--all", "-o", "json"]))?;
    let json: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    ensure(json.is_array(), text(&o))?;
    ok(labctl_here().args(["show", "conntrack", &lab, "vpc"]))?;

    // Whether the kernel has IPVS, asked without `labctl::ipvs` (modprobe
    // ip_vs, then /proc/net/ip_vs), as `place_for` asks.
    use labctl::features::{Feature, probe};
    let ipvs_here = probe(&[Feature::Ipvs].into())?
        .iter()
        .any(|p| p.feature == Feature::Ipvs && p.present);
    let o = run(labctl_here().args(["show", "ipvs", &lab, "node-180"]));
    if ipvs_here {
        ensure(
            o.status.success() && o.stdout == labctl::ipvs::format_table(&[]).as_bytes(),
            format!("the kernel has IPVS: want an empty table, got {}", text(&o)),
        )
    } else {
        fails_with(
            &o,
            4,
            &format!("IPVS in {lab}-node-180: kernel has no IPVS (module ip_vs)"),
        )
    }
}

/// `show ipvs` and `show conntrack` on the IPVS lab, which runs in a VM
/// where the host kernel lacks IPVS: the commands are forwarded to it.
/// Ignored (a failure under `LABCTL_REQUIRE_ALL=1`) where neither the host
/// kernel nor a VM kernel can run it.
fn show_on_the_ipvs_lab() -> Result<Completion, Failed> {
    let lab = unique("iv");
    let _down = Down(lab.clone());
    let o = run(labctl_here()
        .args(["up", "-q", "--name", &lab])
        .arg(topology("ipvs-ipvlan.yaml")));
    if o.status.code() == Some(4) {
        return common::ignored(format!(
            "neither the host kernel nor a VM kernel can run IPVS: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    ensure(o.status.success(), format!("up: {}", text(&o)))?;

    let o = ok(labctl_here().args(["show", "ipvs", &lab, "node-15"]))?;
    let table = String::from_utf8_lossy(&o.stdout);
    ensure(
        table.contains("TCP  192.168.27.242:80 rr") && table.contains("-> 10.0.3.38:80"),
        format!("ipvs table:\n{table}"),
    )?;
    let o = ok(labctl_here().args(["show", "ipvs", &lab, "node-15", "-o", "json"]))?;
    let json: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    ensure(
        json[0]["service"]["addr"] == "192.168.27.242"
            && json[0]["destinations"][0]["dest"]["addr"] == "10.0.3.38",
        format!("ipvs json: {json}"),
    )?;

    // Conntrack through the VM: node-15's table in there must hold the
    // run's flow as IPVS translated it, centos -> the ClusterIP answered by
    // nginx (kube-proxy's nat chains register the conntrack hooks in
    // node-15, and `net.ipv4.vs.conntrack=1` keeps IPVS flows in conntrack;
    // the run empties the table first, and this flow's entry outlives it).
    ok(labctl_here()
        .args(["run", "--name", &lab])
        .arg(topology("ipvs-ipvlan.yaml"))
        .arg("clusterip-to-ipvlan-pod"))?;
    let o = ok(labctl_here().args(["show", "conntrack", &lab, "node-15", "-o", "json"]))?;
    let json: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let entries = json.as_array().ok_or_else(|| text(&o))?;
    let flow = entries.iter().find(|e| {
        let (orig, reply) = (&e["original"], &e["reply"]);
        orig["protocol"] == 6
            && orig["src"] == "172.16.0.10"
            && orig["dst"] == "192.168.27.242"
            && orig["dport"] == 80
            && reply["src"] == "10.0.3.38"
            && reply["dst"] == "172.16.0.10"
            && reply["sport"] == 80
            && reply["dport"] == orig["sport"]
    });
    let sport = flow
        .and_then(|e| e["original"]["sport"].as_u64())
        .ok_or_else(|| {
            format!(
                "no entry 172.16.0.10 -> 192.168.27.242:80 answered by 10.0.3.38:80 in node-15: {}",
                text(&o)
            )
        })?;
    // The same entry in the table form, with conntrack -L's summary.
    let o = ok(labctl_here().args(["show", "conntrack", &lab, "node-15", "--all"]))?;
    let table = String::from_utf8_lossy(&o.stdout);
    let want = [
        format!("src=172.16.0.10 dst=192.168.27.242 sport={sport} dport=80"),
        format!("src=10.0.3.38 dst=172.16.0.10 sport=80 dport={sport}"),
    ];
    ensure(
        table
            .lines()
            .any(|l| l.starts_with("tcp 6 ") && want.iter().all(|w| l.contains(w.as_str()))),
        format!("table lacks the flow {want:?}: {}", text(&o)),
    )?;
    let summary = format!("{} flow entries in {lab}-node-15", table.lines().count());
    ensure(
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .any(|l| l == summary),
        format!("no summary `{summary}`: {}", text(&o)),
    )?;
    let o = run(labctl_here().args(["show", "ipvs", &lab, "nosuch"]));
    fails_with(&o, 2, "has no node, pod or client `nosuch`; it has: ")?;
    Ok(Completion::Completed)
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        Trial::ignorable_test("dump_sees_a_tcp_connection", || {
            gate(dump_sees_a_tcp_connection)
        }),
        Trial::test(
            "missing_namespace_is_an_error",
            missing_namespace_is_an_error,
        ),
        Trial::test("show_lab_not_up", show_lab_not_up),
        Trial::ignorable_test("show_on_a_host_lab", || gate(show_on_a_host_lab)),
        Trial::ignorable_test("show_on_the_ipvs_lab", || {
            let mut done = Completion::Completed;
            gate(|| {
                done = show_on_the_ipvs_lab()?;
                Ok(())
            })
            .map(|c| match c {
                Completion::Completed => done,
                ignored => ignored,
            })
        }),
    ];
    libtest_mimic::run(&args, trials).exit();
}
