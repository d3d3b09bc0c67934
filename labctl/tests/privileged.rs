//! Privileged end-to-end tests of the `labctl` binary: they build real labs
//! in fresh namespaces, each under its own lab name, and check that the host
//! is left exactly as it was.
//!
//! Without root every trial is reported as ignored with the reason. With
//! `LABCTL_REQUIRE_ALL=1` (set by CI) an ignored trial is a failure instead.

use std::path::PathBuf;
use std::process::Command;

use common::{Down, ensure, fails_with, gate, labctl, labctl_here, ok, run, text, unique};
use libtest_mimic::{Arguments, Failed, Trial};

mod common;

/// The Flannel lab without its services (which need IPVS): these trials
/// are about namespaces, links and teardown, on the host kernel.
fn flannel() -> [std::ffi::OsString; 3] {
    [
        "--var".into(),
        "services=off".into(),
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../topologies/flannel.yaml")
            .into(),
    ]
}

/// What the host's own namespace looks like: links, addresses, routes,
/// rules, the IPv4 sysctls labs could be tempted to touch, and the list of
/// named namespaces.
fn host_snapshot() -> String {
    let mut out = String::new();
    for args in [
        &["-o", "link", "show"][..],
        &["-o", "addr", "show"],
        &["route", "show", "table", "all"],
        &["rule", "show"],
        &["netns", "list"],
    ] {
        let o = run(Command::new("ip").args(args));
        // Lifetimes change by themselves; other trials' labs come and go.
        let others = unique("");
        let s = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.starts_with(&others))
            .map(|l| l.split(" valid_lft").next().unwrap_or(l).to_string())
            .collect::<Vec<_>>()
            .join("\n");
        out.push_str(&s);
        out.push('\n');
    }
    let o = run(Command::new("sysctl").args(["net.ipv4.ip_forward", "net.ipv4.conf"]));
    out.push_str(&String::from_utf8_lossy(&o.stdout));
    out
}

fn netns_of(lab: &str) -> Vec<String> {
    let o = run(Command::new("ip").args(["netns", "list"]));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{lab}-")))
        .map(String::from)
        .collect()
}

fn up(lab: &str) -> Result<Down, Failed> {
    ok(labctl().args(["up", "-q", "--name", lab]).args(flannel()))?;
    Ok(Down(lab.to_string()))
}

fn ping(lab: &str, from: &str, to: &str) -> Result<(), Failed> {
    ok(labctl().args(["exec", lab, from, "--", "ping", "-c1", "-W2", to])).map(|_| ())
}

/// The README tour: up, ping same node and across nodes (through `labctl
/// exec` and plain `ip netns exec`), status, down; the host is untouched.
fn flannel_up_ping_down() -> Result<(), Failed> {
    let before = host_snapshot();
    let lab = unique("tour");
    let guard = up(&lab)?;
    // Same node: centos -> nginx on node-180 (F1's path).
    ping(&lab, "centos", "172.23.96.24")?;
    // Different nodes: node-180 -> node-206 through the VPC route table (F2).
    ping(&lab, "centos", "172.23.96.163")?;
    ok(Command::new("ip").args([
        "netns",
        "exec",
        &format!("{lab}-centos"),
        "ping",
        "-c1",
        "-W2",
        "172.23.96.82",
    ]))?;
    // The external client reaches a pod through the VPC.
    ping(&lab, "client", "172.23.96.82")?;

    let o = ok(labctl().args(["status", &lab, "-o", "json"]))?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let names: Vec<&str> = v["namespaces"]
        .as_array()
        .ok_or("no namespaces")?
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    ensure(
        names.len() == 10,
        format!("expected 10 namespaces, got {names:?}"),
    )?;
    let centos = v["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["entity"] == "centos")
        .ok_or("centos missing")?;
    let eth0 = centos["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "eth0")
        .ok_or("centos has no eth0")?;
    ensure(
        eth0["kind"] == "veth",
        format!("eth0 kind {}", eth0["kind"]),
    )?;
    ensure(
        eth0["addresses"][0] == "172.23.96.23/26",
        format!("eth0 addresses {}", eth0["addresses"]),
    )?;
    let node = v["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["entity"] == "node-180")
        .ok_or("node-180 missing")?;
    let ports = node["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["master"] == "cni0" && i["name"].as_str().unwrap_or("").starts_with("veth"))
        .count();
    ensure(ports == 2, format!("node-180 cni0 has {ports} veth ports"))?;

    // A second `up` of the same lab says so.
    let again = run(labctl().args(["up", "--name", &lab]).args(flannel()));
    fails_with(&again, 3, &format!("lab `{lab}` is already up"))?;

    drop(guard);
    ensure(
        netns_of(&lab).is_empty(),
        format!("left: {:?}", netns_of(&lab)),
    )?;
    let after = host_snapshot();
    ensure(
        before == after,
        format!("host changed:\n--- before\n{before}\n--- after\n{after}"),
    )
}

/// `down --wait` returns once the kernel has released the lab's
/// namespaces, and says so; a namespace something else still holds (here
/// this process, which `down` does not kill: it is the caller) is not
/// released, and the wait fails saying how many are left.
fn down_wait_waits_for_the_kernel() -> Result<(), Failed> {
    // The Flannel lab under a name of its own, taken down however the
    // trial ends.
    let up = |prefix: &str| -> Result<(String, Down), Failed> {
        let lab = unique(prefix);
        let guard = Down(lab.clone());
        ok(labctl_here()
            .args(["up", "-q", "--name", &lab])
            .args(flannel()))?;
        Ok((lab, guard))
    };
    let (lab, _guard) = up("dw")?;
    let o = ok(labctl_here().args(["down", "--wait", &lab]))?;
    let said = String::from_utf8_lossy(&o.stdout);
    ensure(
        said.contains("10 namespaces removed and released by the kernel"),
        format!("`down --wait` said: {said}"),
    )?;
    ensure(
        netns_of(&lab).is_empty(),
        format!("left: {:?}", netns_of(&lab)),
    )?;

    let (lab, _guard) = up("dh")?;
    let held = std::fs::File::open(format!("/run/netns/{lab}-centos"))?;
    let r = labctl::engine::down(&lab, Some(std::time::Duration::from_secs(2)));
    drop(held);
    let err = match r {
        Ok(_) => return Err("`down` with a wait returned though a namespace is held".into()),
        Err(e) => e.to_string(),
    };
    ensure(
        err.contains("1 of its namespaces still not released"),
        format!("`down` with a wait said: {err}"),
    )?;
    ensure(
        netns_of(&lab).is_empty(),
        format!("left: {:?}", netns_of(&lab)),
    )
}

/// Live `labctl __serve` processes of a lab, found by their command line.
fn serve_pids(lab: &str) -> Vec<u32> {
    let want = format!("__serve\0{lab}\0");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&want))
                && labctl::sys::process_alive(pid)
        })
        .collect()
}

/// Pods with `ports:` are served from `up` to `down`: the external client
/// gets the HTTP answer of the pod it asked, which saw the client's own
/// address; `down` kills the servers and a shell left in a pod.
fn served_ports_up_to_down() -> Result<(), Failed> {
    use labctl::traffic::{Kind, Request, run_client};
    let lab = unique("serve");
    let guard = up(&lab)?;
    let o = ok(labctl().args(["status", &lab, "-o", "json"]))?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let pid = v["serve"]["pid"]
        .as_u64()
        .ok_or("status shows no serve pid")? as u32;
    ensure(
        v["serve"]["running"] == true && v["serve"]["served"].as_array().map(Vec::len) == Some(4),
        format!("status serve: {}", v["serve"]),
    )?;
    ensure(
        serve_pids(&lab) == vec![pid],
        format!("serve pid {pid}, running {:?}", serve_pids(&lab)),
    )?;

    let target = "172.23.96.82:80".parse()?;
    let out = run_client(
        &format!("{lab}-client"),
        &Request::new(Kind::HttpGet, target).with_attempts(3),
    );
    let got = out.result.map_err(|e| format!("GET {target}: {e}"))?;
    ensure(got.status == Some(200), format!("status {:?}", got.status))?;
    let body = got.body.unwrap_or_default();
    ensure(
        got.served_by.as_deref() == Some(&format!("{lab}-nginx1-s6z79")[..])
            && got.client_seen.map(|c| c.ip()) == Some("198.51.100.10".parse()?),
        format!("body {body:?}"),
    )?;

    // A process left in a pod (what a forgotten `labctl exec` shell is).
    let mut left = labctl()
        .args(["exec", &lab, "centos", "--", "sleep", "300"])
        .spawn()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !execd_sleep(left.id()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    drop(guard);
    ensure(
        !labctl::sys::process_alive(pid) && serve_pids(&lab).is_empty(),
        format!("serve process {pid} survived down"),
    )?;
    use std::os::unix::process::ExitStatusExt;
    let status = left.wait()?;
    ensure(
        status.signal() == Some(9),
        format!("exec'd sleep ended with {status:?}"),
    )?;
    ensure(
        netns_of(&lab).is_empty(),
        format!("left: {:?}", netns_of(&lab)),
    )
}

/// Whether `pid` has exec'd `sleep` (so `labctl exec` has put it in the lab).
fn execd_sleep(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
}

/// SIGKILL `up` at one point, then `down` must remove everything.
fn killed_up_then_down(n: usize, point: &'static str) -> Result<(), Failed> {
    let lab = unique(&format!("kill{n}"));
    let o = run(labctl()
        .args(["up", "-q", "--name", &lab])
        .args(flannel())
        .env("LABCTL_KILL_AT", point));
    use std::os::unix::process::ExitStatusExt;
    ensure(
        o.status.signal() == Some(9),
        format!("up was not killed at {point}: {}", text(&o)),
    )?;
    // The lab is known, and a new `up` refuses rather than half-building.
    let st = ok(labctl().args(["status"]))?;
    ensure(
        String::from_utf8_lossy(&st.stdout).contains(&lab),
        format!("status does not list {lab}: {}", text(&st)),
    )?;
    ok(labctl().args(["down", &lab]))?;
    ensure(
        serve_pids(&lab).is_empty(),
        format!("killed at {point}, servers left: {:?}", serve_pids(&lab)),
    )?;
    let left = netns_of(&lab);
    ensure(
        left.is_empty(),
        format!("killed at {point}, down left {left:?}"),
    )?;
    let files: Vec<_> = std::fs::read_dir("/run/netns")?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{lab}-"))
        })
        .collect();
    ensure(
        files.is_empty(),
        format!("left files in /run/netns: {files:?}"),
    )
}

/// Two labs from the same file, under different names, at the same time.
/// `run` on a lab that is up uses it only if it is the file's build: the
/// same file under another `--var` is refused (its scenarios would be
/// checked against a lab the file no longer describes), the lab untouched;
/// the file as it was built runs on it.
fn run_refuses_a_lab_built_otherwise() -> Result<(), Failed> {
    let lab = unique("digest");
    let _down = up(&lab)?;
    let [_, _, file] = flannel();
    let o = run(labctl()
        .args(["run", "--name", &lab, "--var", "services=on"])
        .arg(&file)
        .arg("f1-pod-ip-same-node"));
    fails_with(&o, 2, "is up, but not as")?;
    ensure(netns_of(&lab).len() == 10, format!("{:?}", netns_of(&lab)))?;
    ok(labctl()
        .args(["run", "--name", &lab])
        .args(flannel())
        .arg("f1-pod-ip-same-node"))?;
    Ok(())
}

fn two_labs_at_once() -> Result<(), Failed> {
    let (a, b) = (unique("two-a"), unique("two-b"));
    let _ga = up(&a)?;
    let _gb = up(&b)?;
    ping(&a, "centos", "172.23.96.163")?;
    ping(&b, "centos", "172.23.96.163")?;
    Ok(())
}

/// A VPC with `isolated_ports` behaves like a cloud vSwitch: no ENI port
/// reaches another, so a node's ARP for a neighbour is answered by the
/// router alone (proxy ARP) and the packet is routed, never bridged.
fn isolated_vpc_ports_route_through_the_router() -> Result<(), Failed> {
    let lab = unique("iso");
    let file = std::env::temp_dir().join(format!("{lab}.yaml"));
    std::fs::write(
        &file,
        "name: iso\n\
         vpc:\n  subnets: [{ name: vsw, cidr: 10.0.3.0/24, gateway: 10.0.3.253 }]\n  \
         isolated_ports: true\n\
         nodes:\n\
         - { name: node-a, interfaces: [{ name: eth0, subnet: vsw, address: 10.0.3.15 }] }\n\
         - { name: node-b, interfaces: [{ name: eth0, subnet: vsw, address: 10.0.3.93 }] }\n",
    )?;
    let up = ok(labctl().args(["up", "-q", "--name", &lab]).arg(&file));
    let _ = std::fs::remove_file(&file);
    up?;
    let _guard = Down(lab.clone());
    let o = ok(labctl().args([
        "exec",
        &lab,
        "node-a",
        "--",
        "ping",
        "-c1",
        "-W2",
        "10.0.3.93",
    ]))?;
    let out = String::from_utf8_lossy(&o.stdout);
    ensure(
        out.contains("ttl=63"),
        format!("not routed by the VPC: {out}"),
    )?;
    let mac_of = |name: &str, args: &[&str]| -> Result<String, Failed> {
        let o = ok(labctl().args(["exec", &lab, name, "--", "ip"]).args(args))?;
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        let mac = out
            .split_whitespace()
            .skip_while(|w| *w != "lladdr" && *w != "link/ether")
            .nth(1)
            .map(String::from);
        mac.ok_or_else(|| format!("no MAC in {out:?}").into())
    };
    let router = mac_of("vpc", &["link", "show", "vsw"])?;
    let neighbour = mac_of("node-a", &["neigh", "show", "10.0.3.93"])?;
    ensure(
        router == neighbour,
        format!("node-a reached 10.0.3.93 at {neighbour}, not the router's {router}"),
    )?;
    let o = ok(labctl().args(["exec", &lab, "vpc", "--", "bridge", "-d", "link", "show"]))?;
    let ports = String::from_utf8_lossy(&o.stdout);
    ensure(
        ports.matches("isolated on").count() == 2,
        format!("ENI ports not isolated:\n{ports}"),
    )
}

/// A namespace that is not the lab's is never adopted or deleted.
fn foreign_namespace_conflict() -> Result<(), Failed> {
    let lab = unique("conflict");
    let foreign = format!("{lab}-vpc");
    ok(Command::new("ip").args(["netns", "add", &foreign]))?;
    let o = run(labctl().args(["up", "--name", &lab]).args(flannel()));
    let still = netns_of(&lab);
    let _ = Command::new("ip")
        .args(["netns", "delete", &foreign])
        .output();
    fails_with(
        &o,
        3,
        &format!("network namespace `{foreign}` already exists and was not made by this lab"),
    )?;
    ensure(
        still == vec![foreign],
        format!("namespaces after refusal: {still:?}"),
    )
}

/// `up` without root fails with one clear message and exit code 4.
fn not_root() -> Result<(), Failed> {
    let o = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_labctl"))
        .arg("up")
        .args(flannel()));
    fails_with(&o, 4, "labctl needs root")
}

/// The kernel is asked, in a scratch namespace, for each feature: this
/// machine's kernel and every CI kernel have veth and bridge; whatever is
/// absent comes with the kernel's reason. The host is untouched.
fn feature_probe() -> Result<(), Failed> {
    use labctl::features::{Feature, probe};
    let before = host_snapshot();
    let all = Feature::ALL.into_iter().collect();
    let probes = probe(&all)?;
    ensure(probes.len() == Feature::ALL.len(), format!("{probes:?}"))?;
    for p in &probes {
        match p.feature {
            Feature::Veth | Feature::Bridge => {
                ensure(p.present, format!("{} missing: {:?}", p.feature, p.reason))?
            }
            _ => ensure(p.present || p.reason.is_some(), format!("{p:?}"))?,
        }
    }
    eprintln!("kernel {}: {probes:?}", labctl::features::kernel_release());
    ensure(before == host_snapshot(), "probing changed the host")
}

/// A VM kernel to run the VM trials on, or why there is none.
fn vm_kernel() -> Result<String, Failed> {
    labctl::vm::choose(std::env::var("LABCTL_KERNEL").ok().as_deref())
        .map(|k| k.release)
        .map_err(|e| format!("VM trials need a VM kernel: {e}").into())
}

/// The issue's tour in the VM runtime: `up --vm`, status and exec reach
/// into it, `down` stops the VM and leaves nothing on the host.
fn vm_lab_up_exec_down() -> Result<(), Failed> {
    let kernel = vm_kernel()?;
    let before = host_snapshot();
    let lab = unique("vm");
    let guard = Down(lab.clone());
    // A VM of the lab's own, whether `./lab test`'s shared VM is up or not.
    ok(labctl()
        .args(["up", "-q", "--kernel", &kernel, "--name", &lab])
        .env("LABCTL_SHARED_VM", "off")
        .args(flannel()))?;
    let st = ok(labctl().arg("status"))?;
    let listing = String::from_utf8_lossy(&st.stdout).to_string();
    ensure(
        listing.contains(&format!("vm {kernel}")),
        format!("status does not show the VM: {listing}"),
    )?;
    let o = ok(labctl().args(["exec", &lab, "centos", "--", "uname", "-r"]))?;
    ensure(
        String::from_utf8_lossy(&o.stdout).trim() == kernel,
        format!("exec ran on {}", String::from_utf8_lossy(&o.stdout)),
    )?;
    ping(&lab, "centos", "172.23.96.163")?;
    // A failing command's exit code comes back through the VM.
    let o = run(labctl().args([
        "exec",
        &lab,
        "centos",
        "--",
        "ping",
        "-c1",
        "-W1",
        "192.0.2.1",
    ]));
    ensure(
        o.status.code() == Some(1),
        format!("exit code through the VM: {}", text(&o)),
    )?;
    let record = labctl::state::load(&lab)?.ok_or("no state")?;
    let pid = record.vm.ok_or("no VM in the state")?.pid;
    drop(guard);
    ensure(
        !labctl::sys::process_alive(pid),
        format!("the VM (pid {pid}) still runs after down"),
    )?;
    ensure(before == host_snapshot(), "the VM lab changed the host")
}

/// SIGKILL `up --vm` once the VM has booted: `down` still stops the VM.
fn vm_killed_up_then_down() -> Result<(), Failed> {
    let kernel = vm_kernel()?;
    let lab = unique("vmkill");
    let o = run(labctl()
        .args(["up", "-q", "--kernel", &kernel, "--name", &lab])
        .args(flannel())
        .env("LABCTL_SHARED_VM", "off")
        .env("LABCTL_KILL_AT", "vm-booted"));
    use std::os::unix::process::ExitStatusExt;
    ensure(
        o.status.signal() == Some(9),
        format!("not killed: {}", text(&o)),
    )?;
    let record = labctl::state::load(&lab)?.ok_or("no state after the kill")?;
    let pid = record.vm.ok_or("VM not recorded before the kill")?.pid;
    ok(labctl().args(["down", &lab]))?;
    ensure(
        !labctl::sys::process_alive(pid),
        format!("the VM (pid {pid}) survived down"),
    )
}

const KILL_POINTS: [&str; 10] = [
    "recorded",
    "netns-file",
    "half-namespaces",
    "namespaces",
    "devices",
    "links",
    "addresses",
    "routes",
    "configured",
    "serving",
];

/// What libnftables does in-process (how labctl applies and reads rulesets
/// where the library is installed) is what the `nft` command does: a
/// ruleset applied through the library reads back the same through `nft
/// list ruleset` and `nft -j list ruleset` as through the library, in a
/// scratch namespace.
fn nft_in_process_is_nft() -> Result<(), Failed> {
    let ruleset = r#"table ip t {
    set affinity {
        type ipv4_addr
        flags dynamic,timeout
        timeout 3h
    }
    chain pre {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr 10.0.0.1 tcp dport 80 counter dnat to 10.1.0.1:8080
        ip saddr @affinity counter accept
    }
    chain post {
        type nat hook postrouting priority srcnat; policy accept;
        meta mark & 0x4000 != 0 masquerade
    }
}
"#;
    let read = labctl::sys::in_new_netns(|| {
        let applied = labctl::sys::nft_in_process(ruleset, false)
            .ok_or_else(|| std::io::Error::other("libnftables not installed"))?;
        let nft = |json: bool| {
            let mut c = Command::new("nft");
            if json {
                c.arg("-j");
            }
            c.args(["list", "ruleset"]).output()
        };
        Ok((
            applied,
            labctl::sys::nft_in_process("list ruleset", false),
            nft(false)?,
            labctl::sys::nft_in_process("list ruleset", true),
            nft(true)?,
            labctl::sys::nft_in_process("table ip t { chain c { nonsense } }", false),
        ))
    })?;
    let (applied, text, nft_text, json, nft_json, refused) = read;
    ensure(applied.is_ok(), format!("apply: {applied:?}"))?;
    let out = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    ensure(
        text == Some(Ok(out(&nft_text))),
        format!("list ruleset: {text:?}\nnft says:\n{}", out(&nft_text)),
    )?;
    ensure(
        out(&nft_text).contains("dnat to 10.1.0.1:8080"),
        out(&nft_text),
    )?;
    ensure(
        json == Some(Ok(out(&nft_json))),
        format!("-j list ruleset: {json:?}\nnft says:\n{}", out(&nft_json)),
    )?;
    ensure(
        matches!(&refused, Some(Err(e)) if e.contains("syntax error")),
        format!("a bad ruleset: {refused:?}"),
    )
}

/// The addresses of a namespace's IPv4 neighbour entries, in every state,
/// sorted.
fn neighbours(netns: &str) -> Result<Vec<String>, Failed> {
    let o = ok(Command::new("ip").args(["-n", netns, "-4", "neigh", "show", "nud", "all"]))?;
    let mut out: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    out.sort();
    Ok(out)
}

/// A scenario's neighbour reset in a namespace of its own, through the
/// netlink executor and as its iproute2 text run by bash: learned entries
/// (reachable, stale, delay, failed, incomplete, none) are deleted, the
/// permanent and noarp ones and the kept address stay, and both ways leave
/// the same table. The host is untouched.
fn forget_neighbours_leaves_only_what_was_not_learned() -> Result<(), Failed> {
    use labctl::kernel::Kernel;
    use labctl::kernel::neigh::ForgetNeighbours;
    use labctl::plan::{Action, NsSpec, Phase, Step};
    use std::net::Ipv4Addr;

    /// Deletes the namespace however the trial ends.
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.0])
                .output();
        }
    }

    let before = host_snapshot();
    let ns = unique("forget");
    labctl::sys::prepare_run_dir()?;
    let rt = labctl::engine::runtime()?;
    let mut kernel = labctl::kernel::Netlink::new(format!("{ns}-mark"));
    let spec = NsSpec {
        name: ns.clone(),
        entity: "forget".into(),
        role: labctl_topology::Role::Host,
    };
    rt.block_on(async { kernel.create_namespaces(std::slice::from_ref(&spec)) })
        .map_err(|e| format!("create {ns}: {e:?}"))?;
    let _gone = Gone(ns.clone());
    let ip = |args: &str| -> Result<(), Failed> {
        ok(Command::new("ip")
            .args(["-n", &ns])
            .args(args.split_whitespace()))
        .map(|_| ())
    };
    ip("link add d0 type veth peer name d1")?;
    ip("link set d0 up")?;
    ip("link set d1 up")?;
    ip("addr add 192.0.2.1/24 dev d0")?;
    let fill = || -> Result<(), Failed> {
        for (host, state) in [
            (2, "permanent"),
            (3, "noarp"),
            (4, "reachable"),
            (5, "stale"),
            (6, "reachable"),
            (7, "failed"),
            (8, "delay"),
            (10, "none"),
        ] {
            ip(&format!(
                "neigh replace 192.0.2.{host} lladdr 02:00:00:00:00:{host:02x} dev d0 nud {state}"
            ))?;
        }
        ip("neigh replace 192.0.2.9 dev d0 nud incomplete")
    };
    // What stays: the permanent and noarp entries, and the kept address
    // (in whatever state the kernel has aged it to meanwhile).
    let left = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for (keep, left) in [
        (
            vec![Ipv4Addr::new(192, 0, 2, 6)],
            left(&["192.0.2.2", "192.0.2.3", "192.0.2.6"]),
        ),
        (Vec::new(), left(&["192.0.2.2", "192.0.2.3"])),
    ] {
        let step = Step {
            phase: Phase::Changes,
            netns: ns.clone(),
            action: Action::ForgetNeighbours(ForgetNeighbours { keep }),
        };
        fill()?;
        ensure(
            neighbours(&ns)?.len() == 9,
            format!("{:?}", neighbours(&ns)?),
        )?;
        rt.block_on(kernel.run(&step))?;
        let by_netlink = neighbours(&ns)?;
        ensure(
            by_netlink == left,
            format!("{step}\nthrough netlink left {by_netlink:?}, not {left:?}"),
        )?;
        fill()?;
        ok(Command::new("bash").args(["-c", &step.to_string()]))?;
        let by_text = neighbours(&ns)?;
        ensure(
            by_text == left,
            format!("{step}\nrun by bash left {by_text:?}, not {left:?}"),
        )?;
    }
    drop(kernel);
    drop(rt);
    drop(_gone);
    ensure(before == host_snapshot(), "forgetting changed the host")
}

/// Two namespaces of a trial's own, `a` (192.0.2.1 on d0) and `b`
/// (192.0.2.2 on d1) joined by a veth pair whose ends are up and ready,
/// made through the netlink executor; deleted however the trial ends.
struct VethPair {
    a: String,
    b: String,
    kernel: labctl::kernel::Netlink,
    rt: tokio::runtime::Runtime,
}

impl VethPair {
    fn new(tag_a: &str, tag_b: &str) -> Result<VethPair, Failed> {
        use labctl::kernel::Kernel;
        use labctl::plan::NsSpec;
        let (a, b) = (unique(tag_a), unique(tag_b));
        labctl::sys::prepare_run_dir()?;
        let rt = labctl::engine::runtime()?;
        let mut kernel = labctl::kernel::Netlink::new(format!("{a}-mark"));
        let spec = |name: &str| NsSpec {
            name: name.to_string(),
            entity: name.to_string(),
            role: labctl_topology::Role::Host,
        };
        rt.block_on(async { kernel.create_namespaces(&[spec(&a), spec(&b)]) })
            .map_err(|e| format!("create {a}, {b}: {e:?}"))?;
        let pair = VethPair { a, b, kernel, rt };
        let ip = |ns: &str, args: &str| -> Result<(), Failed> {
            ok(Command::new("ip")
                .args(["-n", ns])
                .args(args.split_whitespace()))
            .map(|_| ())
        };
        let (a, b) = (&pair.a, &pair.b);
        ip(a, &format!("link add d0 type veth peer name d1 netns {b}"))?;
        ip(a, "addr add 192.0.2.1/24 dev d0")?;
        ip(b, "addr add 192.0.2.2/24 dev d1")?;
        ip(a, "link set d0 up")?;
        ip(b, "link set d1 up")?;
        for ns in [a, b] {
            let pending = labctl::kernel::wait_links_ready_in(ns, labctl::kernel::SETTLE_LIMIT)
                .map_err(|e| format!("{ns}: {e}"))?;
            ensure(
                pending.is_empty(),
                format!("{ns}: links not ready: {pending:?}"),
            )?;
        }
        Ok(pair)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "delete", ns]).output();
        }
    }
}

/// A scenario's conntrack flush in namespaces of its own: a ping from one
/// to the other over a veth pair between them leaves an ICMP entry in the
/// table of the one that tracks connections (an nftables rule using `ct`
/// registers the hooks there), and the step through the netlink executor
/// empties it. Where conntrack-tools is installed, the step's text run by
/// bash empties it too. The host is untouched.
fn flush_conntrack_empties_the_table() -> Result<(), Failed> {
    use labctl::kernel::Kernel;
    use labctl::kernel::conntrack::FlushConntrack;
    use labctl::observe::conntrack;
    use labctl::plan::{Action, Phase, Step};

    let before = host_snapshot();
    let pair = VethPair::new("cta", "ctb")?;
    let (a, b, rt) = (pair.a.clone(), pair.b.clone(), &pair.rt);
    labctl::kernel::nft::apply(
        &a,
        "table ip t {\n chain c {\n type filter hook prerouting priority 0;\n \
         ct state established accept\n }\n}\n",
        "nft -f -",
    )?;
    let fill = || -> Result<(), Failed> {
        ok(Command::new("ip").args([
            "netns",
            "exec",
            &b,
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "192.0.2.1",
        ]))?;
        let entries = conntrack::dump_in(&a)?;
        ensure(
            entries
                .iter()
                .any(|e| e.original.protocol == 1 && e.original.dst.to_string() == "192.0.2.1"),
            format!("no ICMP entry after the ping: {entries:#?}"),
        )
    };
    let step = Step {
        phase: Phase::Changes,
        netns: a.clone(),
        action: Action::FlushConntrack(FlushConntrack),
    };
    fill()?;
    rt.block_on(pair.kernel.run(&step))?;
    let left = conntrack::dump_in(&a)?;
    ensure(
        left.is_empty(),
        format!("{step}\nthrough netlink left {left:#?}"),
    )?;
    if run(Command::new("sh").args(["-c", "command -v conntrack"]))
        .status
        .success()
    {
        fill()?;
        ok(Command::new("bash").args(["-c", &step.to_string()]))?;
        let left = conntrack::dump_in(&a)?;
        ensure(
            left.is_empty(),
            format!("{step}\nrun by bash left {left:#?}"),
        )?;
    } else {
        eprintln!("flush_conntrack: no conntrack-tools here; its text not run");
    }
    drop(pair);
    ensure(before == host_snapshot(), "flushing changed the host")
}

/// A scenario's TIME_WAIT reset in namespaces of its own: a server in one
/// closes a connection from the other first, which leaves it in
/// TIME_WAIT; the step through the netlink executor closes it and
/// nothing else (the listener and an open connection stay). The step's
/// text (`ss -K`) run by bash does the same. The host is untouched.
fn forget_time_wait_closes_only_time_wait() -> Result<(), Failed> {
    use labctl::kernel::Kernel;
    use labctl::kernel::timewait::ForgetTimeWait;
    use labctl::plan::{Action, Phase, Step};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    let before = host_snapshot();
    let pair = VethPair::new("twa", "twb")?;
    let (a, b, rt) = (pair.a.clone(), pair.b.clone(), &pair.rt);
    // Sockets keep the namespace they were made in.
    let listener = labctl::sys::in_netns(&b, || TcpListener::bind("192.0.2.2:8080"))??;
    let connect = || -> Result<TcpStream, Failed> {
        Ok(labctl::sys::in_netns(&a, || {
            TcpStream::connect("192.0.2.2:8080")
        })??)
    };
    // The number of b's IPv4 TCP sockets in `state`, as ss counts them.
    let count = |state: &str| -> Result<usize, Failed> {
        let o = ok(Command::new("ip").args([
            "netns", "exec", &b, "ss", "-H", "-4", "-t", "-n", "state", state,
        ]))?;
        Ok(String::from_utf8_lossy(&o.stdout).lines().count())
    };
    // One connection open throughout; the listener stays too.
    let _open = (connect()?, listener.accept()?.0);
    let fill = || -> Result<(), Failed> {
        let mut client = connect()?;
        let (server, _) = listener.accept()?;
        // The server closes first; the client answers its FIN with its own.
        drop(server);
        client.read_to_end(&mut Vec::new())?;
        let _ = client.write_all(b"");
        drop(client);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while count("time-wait")? == 0 {
            ensure(
                std::time::Instant::now() < deadline,
                "the server's end never reached TIME_WAIT",
            )?;
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(())
    };
    let left = || -> Result<(usize, usize, usize), Failed> {
        Ok((
            count("time-wait")?,
            count("established")?,
            count("listening")?,
        ))
    };
    let step = Step {
        phase: Phase::Changes,
        netns: b.clone(),
        action: Action::ForgetTimeWait(ForgetTimeWait),
    };
    fill()?;
    ensure(left()? == (1, 1, 1), format!("before: {:?}", left()?))?;
    rt.block_on(pair.kernel.run(&step))?;
    ensure(
        left()? == (0, 1, 1),
        format!(
            "{step}\nthrough netlink left {:?} (time-wait, established, listening)",
            left()?
        ),
    )?;
    fill()?;
    ok(Command::new("bash").args(["-c", &step.to_string()]))?;
    ensure(
        left()? == (0, 1, 1),
        format!(
            "{step}\nrun by bash left {:?} (time-wait, established, listening)",
            left()?
        ),
    )?;
    drop(pair);
    ensure(before == host_snapshot(), "closing changed the host")
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = vec![
        Trial::ignorable_test("flannel_up_ping_down", || gate(flannel_up_ping_down)),
        Trial::ignorable_test("served_ports_up_to_down", || gate(served_ports_up_to_down)),
        Trial::ignorable_test("two_labs_at_once", || gate(two_labs_at_once)),
        Trial::ignorable_test("down_wait_waits_for_the_kernel", || {
            gate(down_wait_waits_for_the_kernel)
        }),
        Trial::ignorable_test("run_refuses_a_lab_built_otherwise", || {
            gate(run_refuses_a_lab_built_otherwise)
        }),
        Trial::ignorable_test("foreign_namespace_conflict", || {
            gate(foreign_namespace_conflict)
        }),
        Trial::ignorable_test("isolated_vpc_ports_route_through_the_router", || {
            gate(isolated_vpc_ports_route_through_the_router)
        }),
        Trial::ignorable_test("not_root", || gate(not_root)),
        Trial::ignorable_test("feature_probe", || gate(feature_probe)),
        Trial::ignorable_test("nft_in_process_is_nft", || gate(nft_in_process_is_nft)),
        Trial::ignorable_test("forget_neighbours_leaves_only_what_was_not_learned", || {
            gate(forget_neighbours_leaves_only_what_was_not_learned)
        }),
        Trial::ignorable_test("flush_conntrack_empties_the_table", || {
            gate(flush_conntrack_empties_the_table)
        }),
        Trial::ignorable_test("forget_time_wait_closes_only_time_wait", || {
            gate(forget_time_wait_closes_only_time_wait)
        }),
        Trial::ignorable_test("vm_lab_up_exec_down", || gate(vm_lab_up_exec_down)),
        Trial::ignorable_test("vm_killed_up_then_down", || gate(vm_killed_up_then_down)),
    ];
    for (n, point) in KILL_POINTS.into_iter().enumerate() {
        trials.push(Trial::ignorable_test(
            format!("sigkill_at_{point}"),
            move || gate(|| killed_up_then_down(n, point)),
        ));
    }
    libtest_mimic::run(&args, trials).exit();
}
