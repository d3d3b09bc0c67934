//! `labctl monitor` against a real run: the Terway IPVLAN + eBPF lab is
//! brought up, `labctl monitor` is started on it, T5 (pod -> ClusterIP
//! 192.168.27.242:80, translated by the eBPF tc program on the client pod's
//! eth0) is run with `labctl run`, and the monitor must have printed the
//! request's translation and its reply's, for the same client port;
//! `labctl show lb` must list the service with its backend.
//!
//! The lab needs ipvlan. Where the host kernel lacks it (this project's
//! build machines), the trial re-runs this very test binary inside a VM
//! booted from an installed distro kernel and passes or fails with it; the
//! trial's kind says where it ran (`LABCTL_KERNEL=RELEASE` always runs it in
//! a VM with that kernel, as in the scenario suite). Without root the trial
//! is reported ignored (a failure under `LABCTL_REQUIRE_ALL=1`); with root
//! but neither ipvlan nor a VM kernel it fails with the reason.
//!
//! Two cheap trials on the host kernel: `labctl monitor` on a lab that is
//! not up says so (anywhere, without root); `labctl monitor` and `labctl
//! show lb` on a lab that is up but has no `ebpf:` (the Flannel lab without
//! services, root) say that it has no eBPF load balancer. Both exit with the
//! "wrong state" code.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Down, Place, ensure, fails_with, labctl_here, ok, run, text, unique};
use libtest_mimic::{Arguments, Failed, Trial};

mod common;

const SCENARIO: &str = "t5-cluster-ip-same-eni";
const CLIENT_POD: &str = "centos-znkl8";
const CLIENT: &str = "10.0.3.5";
const SERVICE: &str = "192.168.27.242:80";
const BACKEND: &str = "10.0.3.38:80";

/// The trial that needs the lab (and so maybe the VM).
const LAB_TRIAL: &str = "monitor_shows_each_t5_translation";

fn topology() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/terway-ipvlan-ebpf.yaml")
}

/// A `labctl monitor` process, killed if the trial ends before it does;
/// its stderr lines arrive on `stderr`.
struct Monitor {
    child: Option<Child>,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Monitor {
    fn spawn(lab: &str) -> Result<Monitor, Failed> {
        let mut child = labctl_here()
            .args(["monitor", lab, "--count", "2", "--timeout", "60"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (tx, stderr) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Ok(Monitor {
            child: Some(child),
            stderr,
        })
    }

    /// Wait for the monitor's `listening on` line: it prints it once what
    /// earlier translations left in the ring buffer is drained, so from then
    /// on no event of the run is missed.
    fn wait_listening(&mut self, limit: Duration) -> Result<(), Failed> {
        let t = Instant::now();
        let mut said = Vec::new();
        while let Some(left) = limit.checked_sub(t.elapsed()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.starts_with("listening on") => return Ok(()),
                Ok(line) => said.push(line),
                Err(_) => break,
            }
        }
        Err(format!("monitor not listening after {limit:?}; it said: {said:?}").into())
    }

    /// Wait for the monitor to end by itself (`--count` or `--timeout`).
    fn finish(mut self, limit: Duration) -> Result<std::process::Output, Failed> {
        let mut child = self.child.take().expect("child");
        let t = Instant::now();
        while child.try_wait()?.is_none() {
            if t.elapsed() > limit {
                let _ = child.kill();
                return Err(format!("monitor still running after {limit:?}").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut o = child.wait_with_output()?;
        o.stderr = self
            .stderr
            .try_iter()
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes();
        Ok(o)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The real thing, on the kernel this process runs on.
fn monitor_shows_each_t5_translation() -> Result<(), Failed> {
    let file = topology();
    let lab = unique("mon");
    let _down = Down(lab.clone());
    ok(labctl_here().args(["up", "-q", "--name", &lab]).arg(&file))?;

    let mut monitor = Monitor::spawn(&lab)?;
    monitor.wait_listening(Duration::from_secs(30))?;
    let r = ok(labctl_here()
        .args(["run", "--name", &lab])
        .arg(&file)
        .arg(SCENARIO))?;
    print!("{}", String::from_utf8_lossy(&r.stdout));
    let o = monitor.finish(Duration::from_secs(90))?;
    ensure(o.status.success(), format!("monitor: {}", text(&o)))?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = out.lines().collect();
    for l in &lines {
        println!("monitor: {l}");
    }

    // The SYN out of the client, then the SYN-ACK into it. A monitor that
    // exited 0 under `--count 2` printed two events, so the pattern only
    // names them: what they say is the check.
    let [request, answer] = lines[..] else {
        return Err(format!("--count 2, but not two lines:\n{out}").into());
    };
    let port = request
        .strip_prefix(&format!("{CLIENT}:"))
        .and_then(|rest| rest.strip_suffix(&format!(" -> {SERVICE} translated to {BACKEND}")))
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or_else(|| {
            format!("first line is not {CLIENT}:PORT -> {SERVICE} translated to {BACKEND}:\n{out}")
        })?;
    let reply = format!("{BACKEND} -> {CLIENT}:{port} translated from {SERVICE}");
    ensure(
        answer == reply,
        format!("second line is not `{reply}`:\n{out}"),
    )?;

    let o = ok(labctl_here().args(["show", "lb", &lab, CLIENT_POD]))?;
    let shown = String::from_utf8_lossy(&o.stdout).into_owned();
    for l in shown.lines() {
        println!("show lb: {l}");
    }
    ensure(
        shown
            .lines()
            .any(|l| l.starts_with(&format!("{SERVICE}/TCP -> ")) && l.contains(BACKEND)),
        format!("show lb lists no {SERVICE}/TCP -> {BACKEND}:\n{shown}"),
    )
}

/// Runs anywhere, without root: no lab, no panic, a message that says so.
fn monitor_on_a_lab_that_is_not_up_says_so() -> Result<(), Failed> {
    let lab = unique("mon-none");
    let o = run(labctl_here().args(["monitor", &lab, "--count", "1", "--timeout", "1"]));
    let err = String::from_utf8_lossy(&o.stderr);
    println!("{}", err.trim_end());
    fails_with(&o, 3, &format!("lab `{lab}` is not up"))?;
    ensure(!err.contains("panicked"), format!("panicked: {}", text(&o)))?;
    ensure(o.stdout.is_empty(), format!("printed events: {}", text(&o)))
}

/// The eBPF commands on a lab that is up but has no `ebpf:` (so no maps
/// pinned): the Flannel lab without services, which the host kernel runs.
fn monitor_and_show_lb_on_a_lab_without_ebpf() -> Result<(), Failed> {
    let lab = unique("noebpf");
    let _down = Down(lab.clone());
    ok(labctl_here()
        .args(["up", "-q", "--name", &lab, "--var", "services=off"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/flannel.yaml")))?;
    let not_loaded = format!(
        "lab `{lab}` has no eBPF load balancer ({} is missing): \
         is it up, and does its topology have `ebpf:`?",
        labctl::lb::pin_dir(&lab).display()
    );
    for args in [
        &["monitor", &lab, "--count", "1", "--timeout", "1"][..],
        &["show", "lb", &lab],
    ] {
        let o = run(labctl_here().args(args));
        println!("{}", String::from_utf8_lossy(&o.stderr).trim_end());
        fails_with(&o, 3, &not_loaded)?;
        ensure(
            o.stdout.is_empty(),
            format!("{args:?} printed: {}", text(&o)),
        )?;
    }
    Ok(())
}

/// Where the lab trial runs.
fn place() -> Place {
    match labctl_topology::load(&topology(), &Default::default()) {
        Ok(lab) => common::place_for(&lab),
        Err(e) => Place::Nowhere(format!("{}: {e}", topology().display())),
    }
}

/// Run trial `name` of this binary inside a VM with `kernel`, and show
/// what the monitor and `show lb` printed in there.
fn in_vm(kernel: &str, name: &str) -> Result<(), Failed> {
    let out = common::in_vm(kernel, name, "", true)?;
    for l in out.lines().filter(|l| {
        l.starts_with("monitor: ") || l.starts_with("show lb: ") || l.starts_with("PASS ")
    }) {
        println!("{l}");
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let place = place();
    let kind = place.kind();
    let here = Place::Here.kind();
    let trials = vec![
        Trial::ignorable_test(LAB_TRIAL, move || {
            common::gate(|| match place {
                Place::Here => monitor_shows_each_t5_translation(),
                Place::Vm(k) => in_vm(&k, LAB_TRIAL),
                Place::Nowhere(why) => Err(why.into()),
            })
        })
        .with_kind(kind),
        Trial::test(
            "monitor_on_a_lab_that_is_not_up_says_so",
            monitor_on_a_lab_that_is_not_up_says_so,
        )
        .with_kind(here.clone()),
        Trial::ignorable_test("monitor_and_show_lb_on_a_lab_without_ebpf", || {
            common::gate(monitor_and_show_lb_on_a_lab_without_ebpf)
        })
        .with_kind(here),
    ];
    libtest_mimic::run(&args, trials).exit();
}
