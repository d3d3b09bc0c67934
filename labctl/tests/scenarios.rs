//! The scenario suite: one trial per scenario of every file in
//! `topologies/`, each on its own lab (its own name, so trials run in
//! parallel), checked against the scenario's expectations and its golden
//! file in `golden/<topology>/<scenario>.snap` (insta: `cargo insta review`
//! accepts a changed one). Plus trials that prove the checks can fail and
//! that labctl's taps agree with tcpdump.
//!
//! Where a trial runs is decided per topology and shown as the trial's
//! kind, `[host RELEASE]` or `[vm RELEASE]`: on the host kernel when it has
//! every feature the topology needs, else in the VM runtime on the newest
//! installed VM kernel. `LABCTL_KERNEL=RELEASE` runs every scenario in a VM
//! with that kernel: the kernel matrix. Either way the golden files are the
//! same.
//!
//! With `LABCTL_JUNIT=DIR` (a relative DIR is taken from the workspace
//! root) the suite also writes a JUnit file per topology, `DIR/STEM.xml`:
//! for a file run in the VM `labctl run --junit` writes it, for one run
//! here this binary does, from the same reports through `labctl::junit`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{Place, gate, place_for};
use labctl::scenario::{self, RunOptions};
use labctl::state;
use libtest_mimic::{Arguments, Failed, Trial};

mod common;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn labctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_labctl"))
}

/// labctl on the host kernel, whatever `LABCTL_KERNEL` says: for the trials
/// that reach into the lab's namespaces from the host.
fn labctl_on_host() -> Command {
    let mut c = labctl();
    c.env_remove("LABCTL_KERNEL");
    c
}

/// A lab name of its own for each trial.
fn unique() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "s{}-{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A lab that is brought up for one trial and removed however it ends.
struct LabUp {
    name: String,
}

impl LabUp {
    fn new(file: &Path, vars: &[&str]) -> Result<LabUp, Failed> {
        let name = unique();
        let o = labctl_on_host()
            .args(["up", "-q", "--name", &name])
            .args(vars.iter().flat_map(|v| ["--var", v]))
            .arg(file)
            .output()?;
        if !o.status.success() {
            return Err(format!("up failed: {}", String::from_utf8_lossy(&o.stderr)).into());
        }
        Ok(LabUp { name })
    }
}

impl Drop for LabUp {
    fn drop(&mut self) {
        let _ = labctl().args(["down", "-q", &self.name]).output();
    }
}

fn load(file: &Path) -> labctl::Lab {
    load_with(file, &[])
}

fn load_with(file: &Path, vars: &[&str]) -> labctl::Lab {
    labctl_topology::load(file, &var_map(vars))
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Template variants run beside a file's default build, each with its own
/// golden directory (`golden/STEM/VAR=VALUE/`, as `labctl run --var`
/// uses): the Kata lab without OVN's ARP responder (P1 connects: the bug
/// has the article's cause), Ctrip's legacy layout (24 hops), Cilium's
/// host routing by `bpf_redirect_peer` (lxc22 sees nothing) and kube-proxy's
/// test cases under its IPVS mode (in the VM).
const VARIANTS: &[(&str, &[&str])] = &[
    ("kata-peer-pods", &["arp_responder=off"]),
    ("ctrip-vlan", &["legacy=true"]),
    ("cilium-host-routing", &["redirect=peer"]),
    ("flannel", &["proxy=nftables"]),
    ("flannel", &["kube_proxy=1.35"]),
    ("flannel", &["backend=vxlan"]),
    ("kube-proxy-nftables", &["proxy=ipvs"]),
];

fn var_map(vars: &[&str]) -> BTreeMap<String, String> {
    vars.iter()
        .filter_map(|v| v.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The host-only trials use the Flannel lab without services (IPVS).
const NO_SERVICES: &[&str] = &["services=off"];

/// The reports of every scenario of one file, run in one VM: `labctl run
/// --kernel` boots it, runs them all inside on one lab (each scenario
/// programs the services it needs afresh) and stops it. One VM per file
/// rather than per scenario: a boot is the expensive part. Under `./lab
/// test` the lab goes into the run's shared VM instead (`labctl vm
/// start`): no boot at all.
type VmReports = Result<Vec<serde_json::Value>, String>;

type VmRun = Arc<OnceLock<VmReports>>;

fn vm_reports(file: &Path, vars: &[&str], kernel: &str) -> VmRun {
    type Key = (PathBuf, Vec<String>, String);
    static RUNS: Mutex<BTreeMap<Key, VmRun>> = Mutex::new(BTreeMap::new());
    let vars = vars.iter().map(|v| v.to_string()).collect();
    RUNS.lock()
        .unwrap()
        .entry((file.to_path_buf(), vars, kernel.to_string()))
        .or_default()
        .clone()
}

fn run_file_in_vm(file: &Path, vars: &[&str], kernel: &str) -> VmReports {
    let lab = unique();
    let mut cmd = labctl();
    cmd.args(["run", "--kernel", kernel, "--name", &lab, "-o", "json"]);
    cmd.args(vars.iter().flat_map(|v| ["--var", v]));
    // JUnit files are per topology file: its default build's.
    if let Some(path) = junit_file(file).filter(|_| vars.is_empty()) {
        cmd.arg("--junit").arg(path);
    }
    let o = cmd.arg(file).output().map_err(|e| e.to_string())?;
    let reports: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| {
        format!(
            "no JSON report from the VM ({e}): {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })?;
    reports
        .as_array()
        .cloned()
        .ok_or_else(|| format!("not a list of reports: {reports}"))
}

/// One scenario's report from its file's VM run.
fn run_scenario_in_vm(file: &Path, vars: &[&str], name: &str, kernel: &str) -> Result<(), Failed> {
    let cell = vm_reports(file, vars, kernel);
    let reports = cell
        .get_or_init(|| run_file_in_vm(file, vars, kernel))
        .clone()?;
    let report = reports
        .iter()
        .find(|r| r["scenario"] == name)
        .ok_or_else(|| format!("no report for {name} from the VM"))?;
    // The verdict includes the golden check: compare through insta first,
    // so a differing golden leaves a `.snap.new` for `cargo insta review`.
    if let Some(text) = report["golden_text"].as_str() {
        assert_golden(file, vars, name, text);
    }
    if report["passed"] != true {
        return Err(format!("in the VM ({kernel}):\n{report:#}").into());
    }
    report["golden_text"].as_str().ok_or("no golden text")?;
    Ok(())
}

fn assert_golden(file: &Path, vars: &[&str], name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(labctl::golden::dir_for(file, &var_map(vars)));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_input_file(file);
    settings.set_omit_expression(true);
    settings.bind(|| insta::assert_snapshot!(name.to_string(), text));
}

/// `LABCTL_JUNIT`'s directory, made if missing.
fn junit_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("LABCTL_JUNIT").filter(|d| !d.is_empty())?);
    let dir = if dir.is_relative() {
        root().join(dir)
    } else {
        dir
    };
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("LABCTL_JUNIT: create {}: {e}", dir.display()));
    Some(dir)
}

/// The JUnit file of a topology under `LABCTL_JUNIT`: `DIR/STEM.xml`.
fn junit_file(file: &Path) -> Option<PathBuf> {
    let stem = file.file_stem()?.to_string_lossy().into_owned();
    Some(junit_dir()?.join(format!("{stem}.xml")))
}

/// JUnit cases of the scenarios run here, per topology file.
static CASES: Mutex<BTreeMap<PathBuf, Vec<labctl::junit::Case>>> = Mutex::new(BTreeMap::new());

/// Write `DIR/STEM.xml` for every topology whose scenarios ran here, the
/// cases in the files' scenario order.
fn write_junit() {
    let cases = std::mem::take(&mut *CASES.lock().unwrap());
    for (file, mut cases) in cases {
        let Some(path) = junit_file(&file) else {
            return;
        };
        let order: Vec<String> = load(&file).scenarios.into_iter().map(|s| s.name).collect();
        cases.sort_by_key(|c| order.iter().position(|n| *n == c.scenario));
        let mut suite = labctl::junit::Suite::new(&file, &BTreeMap::new());
        if std::env::var_os("LABCTL_IN_VM").is_some() {
            suite.runtime = labctl::junit::Runtime::Vm;
        }
        suite.cases = cases;
        labctl::junit::write(&path, &[suite])
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// Run one scenario of a topology file on a fresh lab, its JUnit case kept
/// for [`write_junit`].
fn run_scenario(file: &Path, vars: &[&str], name: &str) -> Result<(), Failed> {
    let started = std::time::Instant::now();
    // JUnit files are per topology file: its default build's.
    let mut kept = !vars.is_empty();
    let result = run_scenario_here(file, vars, name, &mut kept);
    if let Err(e) = &result
        && !kept
    {
        let why = e.message().unwrap_or("failed").to_string();
        keep_case(
            file,
            labctl::junit::Case::error(name, why, started.elapsed()),
        );
    }
    result
}

/// Keep a case for [`write_junit`] when `LABCTL_JUNIT` is set.
fn keep_case(file: &Path, case: labctl::junit::Case) {
    if junit_dir().is_some() {
        CASES
            .lock()
            .unwrap()
            .entry(file.to_path_buf())
            .or_default()
            .push(case);
    }
}

fn run_scenario_here(
    file: &Path,
    vars: &[&str],
    name: &str,
    kept: &mut bool,
) -> Result<(), Failed> {
    let started = std::time::Instant::now();
    let lab = load_with(file, vars);
    let sc = lab
        .scenarios
        .iter()
        .find(|s| s.name == name)
        .expect("scenario listed from this file");
    let up = LabUp::new(file, vars)?;
    let record = state::load(&up.name)?.ok_or("lab state missing")?;
    let report = scenario::run(&record, &lab, sc, &RunOptions::default())?;
    // The case judges the golden file as `labctl run` does; the trial
    // compares through insta below, so a change leaves a `.snap.new`.
    let mut judged = report.clone();
    let golden_dir = labctl::golden::dir_for(file, &var_map(vars));
    labctl::golden::check(&mut judged, &labctl::golden::file_for(&golden_dir, name));
    // Kept before the golden assertion, which panics on a difference.
    if !*kept {
        keep_case(file, labctl::junit::Case::of(&judged, started.elapsed()));
        *kept = true;
    }
    if !report.passed {
        return Err(report.render().into());
    }
    assert_golden(file, vars, name, &report.golden());
    Ok(())
}

/// Break the lab on purpose: without the VPC route to node-206's pod CIDR,
/// F2 must fail, and the golden diff must show the path ending in the VPC.
fn broken_vpc_route_fails_f2() -> Result<(), Failed> {
    let file = root().join("topologies/flannel.yaml");
    let up = LabUp::new(&file, NO_SERVICES)?;
    let o = Command::new("ip")
        .args([
            "-n",
            &format!("{}-vpc", up.name),
            "route",
            "del",
            "172.23.96.128/26",
        ])
        .output()?;
    if !o.status.success() {
        return Err(format!("route del: {}", String::from_utf8_lossy(&o.stderr)).into());
    }
    let o = labctl_on_host()
        .args(["run", "--name", &up.name, "--var", "services=off"])
        .arg(&file)
        .arg("f2-pod-ip-other-node-ping")
        .output()?;
    let out = String::from_utf8_lossy(&o.stdout);
    let expect = [
        "FAIL f2-pod-ip-other-node-ping",
        "[FAILED] result is connected (got: unreachable",
        "path (2 stacks): centos/eth0 -> node-180/vethee728869 -> node-180/cni0 -> node-180/eth0 -> vpc\n",
        "[FAILED] golden",
        "-path: centos/eth0 -> node-180/vethee728869 -> node-180/cni0 -> node-180/eth0 -> vpc -> node-206/eth0",
        "+path: centos/eth0 -> node-180/vethee728869 -> node-180/cni0 -> node-180/eth0 -> vpc\n",
    ];
    for e in expect {
        if !out.contains(e) {
            return Err(format!("report lacks {e:?}:\n{out}").into());
        }
    }
    if o.status.code() != Some(1) {
        return Err(format!("exit {:?}, want 1", o.status.code()).into());
    }
    Ok(())
}

/// The new observations can fail: the fixed Kata ping (k1) with the bug's
/// expectations and some that no run can meet. Each must be reported
/// FAILED with what the kernel showed.
fn observations_can_fail() -> Result<(), Failed> {
    let source = std::fs::read_to_string(root().join("topologies/vxlan-redirect.yaml"))?;
    let (lab, _) = source
        .split_once("scenarios:")
        .ok_or("vxlan-redirect.yaml has no scenarios")?;
    let topology = format!(
        "{lab}scenarios:
  - name: wrong
    from: worker
    to: 10.132.2.46
    protocol: icmp
    capture: {{arp: true}}
    expect:
      devices: 6
      seen_on:
        - {{address: 10.132.2.46, dst_mac: \"7e:e5:f7:e6:f5:1a\", interfaces: [podns/vxlan0]}}
        - {{vni: 4242, interfaces: [worker/ens3]}}
        - {{vlan: 100, interfaces: [worker/ens3]}}
      not_seen_on:
        - {{address: 10.132.2.2, dst_mac: \"ee:cb:ed:8e:f9:e0\", interfaces: [podns/vxlan0]}}
        - {{protocol: arp, interfaces: [worker/ens3]}}
      neighbours:
        - {{in: worker, address: 10.132.2.46, present: false}}
        - {{in: podvm, dev: ens2, address: 192.168.10.99}}
"
    );
    let dir = std::env::temp_dir().join(format!("labctl-observe-{}", unique()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("observe.yaml");
    std::fs::write(&file, topology)?;
    let o = labctl_on_host()
        .args(["run", "--name", &unique()])
        .arg(&file)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let o = o?;
    let out = String::from_utf8_lossy(&o.stdout);
    let expect = [
        "FAIL wrong",
        "[ok] result is connected",
        "[FAILED] crosses 6 devices (got: 7)",
        "[FAILED] 10.132.2.46 dst_mac 7e:e5:f7:e6:f5:1a seen on podns/vxlan0 (not seen on podns/vxlan0)",
        "[FAILED] vni 4242 seen on worker/ens3",
        "[FAILED] vlan 100 seen on worker/ens3",
        "[FAILED] 10.132.2.2 dst_mac ee:cb:ed:8e:f9:e0 not seen on podns/vxlan0 (seen on podns/vxlan0)",
        "[FAILED] arp not seen on worker/ens3 (seen on worker/ens3)",
        "[FAILED] neighbour on worker: 10.132.2.46 absent (entries: 10.132.2.46 dev br-int lladdr 0a:58:0a:84:02:2e PERMANENT)",
        "[FAILED] neighbour on podvm: 192.168.10.99 dev ens2 (no entry for 192.168.10.99)",
    ];
    for e in expect {
        if !out.contains(e) {
            return Err(format!("report lacks {e:?}:\n{out}").into());
        }
    }
    if o.status.code() != Some(1) {
        return Err(format!("exit {:?}, want 1", o.status.code()).into());
    }
    Ok(())
}

/// What labctl's taps saw on node-180's eth0 during F2 (ICMP) agrees with
/// tcpdump on the same interface at the same time.
fn capture_agrees_with_tcpdump() -> Result<(), Failed> {
    let file = root().join("topologies/flannel.yaml");
    let lab = load_with(&file, NO_SERVICES);
    let sc = lab
        .scenarios
        .iter()
        .find(|s| s.name == "f2-pod-ip-other-node-ping")
        .ok_or("f2 ping scenario missing")?;
    let up = LabUp::new(&file, NO_SERVICES)?;
    let mut tcpdump = Command::new("ip")
        .args(["netns", "exec", &format!("{}-node-180", up.name)])
        .args(["tcpdump", "-i", "eth0", "-nn", "-l", "-Q", "inout", "icmp"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // tcpdump says "listening on" once its socket is open.
    let mut err = BufReader::new(tcpdump.stderr.take().unwrap());
    let mut line = String::new();
    while err.read_line(&mut line)? > 0 && !line.contains("listening on") {
        line.clear();
    }
    let record = state::load(&up.name)?.ok_or("lab state missing")?;
    let report = scenario::run(&record, &lab, sc, &RunOptions::default())?;
    std::thread::sleep(Duration::from_millis(200));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tcpdump.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let out = tcpdump.wait_with_output()?;
    // "12:00:00.000 IP 172.23.96.23 > 172.23.96.163: ICMP echo request, id ..."
    let mut theirs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find(" IP ")? + 4..];
            let (addrs, what) = rest.split_once(": ICMP ")?;
            let what = what.split(',').next()?;
            Some(format!("{addrs} icmp {what}"))
        })
        .collect();
    let mut ours: Vec<String> = report
        .table
        .iter()
        .filter(|r| r.interface == "node-180/eth0")
        .flat_map(|r| std::iter::repeat_n(r.flow.clone(), r.packets as usize))
        .collect();
    theirs.sort();
    ours.sort();
    if theirs.is_empty() || theirs != ours {
        return Err(format!("tcpdump saw {theirs:?}\nlabctl saw {ours:?}").into());
    }
    Ok(())
}

/// Files whose services keep state that traffic changes: IPVS's
/// round-robin position and (kube-proxy's IPVS mode) persistence
/// templates, nftables mode's rule counters and affinity sets.
const IN_REVERSE: &[(&str, &[&str])] = &[
    ("flannel", &[]),
    ("kube-proxy-nftables", &[]),
    ("kube-proxy-nftables", &["proxy=ipvs"]),
];

/// Every scenario of a file on one lab, in reverse order, through `labctl
/// run` (which, between scenarios without service changes, resets only
/// what traffic changed): each report, golden file included, must be the
/// suite's, where a file runs in file order in a VM, or each scenario on
/// a lab of its own. So a scenario's result does not depend on which ran
/// before it.
fn in_reverse(file: &Path, vars: &[&str], kernel: Option<&str>) -> Result<(), Failed> {
    let lab = load_with(file, vars);
    let name = unique();
    let mut cmd = match kernel {
        Some(_) => labctl(),
        None => labctl_on_host(),
    };
    cmd.arg("run");
    if let Some(k) = kernel {
        cmd.args(["--kernel", k]);
    }
    cmd.args(["--name", &name, "-o", "json"])
        .args(vars.iter().flat_map(|v| ["--var", v]))
        .arg(file)
        .args(lab.scenarios.iter().rev().map(|s| s.name.as_str()));
    let _down = LabUp { name };
    let o = cmd.output()?;
    let reports: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| {
        format!(
            "no JSON report ({e}): {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })?;
    let reports = reports.as_array().ok_or("not a list of reports")?;
    let differ: Vec<String> = reports
        .iter()
        .filter(|r| r["passed"] != true || r["golden"] != "match")
        .map(|r| format!("{}: {:#}", r["scenario"], r))
        .collect();
    if reports.len() != lab.scenarios.len() || !differ.is_empty() {
        return Err(format!(
            "{} of {} reports, in reverse order these differ:\n{}",
            reports.len(),
            lab.scenarios.len(),
            differ.join("\n")
        )
        .into());
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("topologies"))
        .expect("topologies/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let host = Place::Here.kind();
    for file in files {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        let variants = std::iter::once(&[][..]).chain(
            VARIANTS
                .iter()
                .filter(|(s, _)| *s == stem)
                .map(|(_, vars)| *vars),
        );
        for vars in variants {
            let lab = load_with(&file, vars);
            let place = place_for(&lab);
            let label = if vars.is_empty() {
                stem.clone()
            } else {
                format!("{stem}[{}]", vars.join(","))
            };
            for sc in &lab.scenarios {
                let (file, name, place) = (file.clone(), sc.name.clone(), place.clone());
                let kind = place.kind();
                trials.push(
                    Trial::ignorable_test(format!("{label}::{name}"), move || match place {
                        Place::Here => gate(|| run_scenario(&file, vars, &name)),
                        Place::Vm(k) => gate(|| run_scenario_in_vm(&file, vars, &name, &k)),
                        Place::Nowhere(why) => gate(|| Err(why.into())),
                    })
                    .with_kind(kind),
                );
            }
        }
    }
    for (stem, vars) in IN_REVERSE {
        let file = root().join("topologies").join(format!("{stem}.yaml"));
        let place = place_for(&load_with(&file, vars));
        let label = if vars.is_empty() {
            stem.to_string()
        } else {
            format!("{stem}[{}]", vars.join(","))
        };
        let kind = place.kind();
        trials.push(
            Trial::ignorable_test(format!("in_reverse::{label}"), move || match place {
                Place::Here => gate(|| in_reverse(&file, vars, None)),
                Place::Vm(k) => gate(|| in_reverse(&file, vars, Some(&k))),
                Place::Nowhere(why) => gate(|| Err(why.into())),
            })
            .with_kind(kind),
        );
    }
    trials.push(
        Trial::ignorable_test("broken_vpc_route_fails_f2", || {
            gate(broken_vpc_route_fails_f2)
        })
        .with_kind(host.clone()),
    );
    trials.push(
        Trial::ignorable_test("observations_can_fail", || gate(observations_can_fail))
            .with_kind(host.clone()),
    );
    trials.push(
        Trial::ignorable_test("capture_agrees_with_tcpdump", || {
            gate(capture_agrees_with_tcpdump)
        })
        .with_kind(host),
    );
    let conclusion = libtest_mimic::run(&args, trials);
    write_junit();
    conclusion.exit();
}
