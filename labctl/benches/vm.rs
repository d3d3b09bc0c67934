//! The VM runtime's cost, two ways. Needs root and an installed VM kernel
//! (`labctl kernel install debian`).
//!
//! - `overhead`: next to the host in the same run, how long a VM takes to
//!   boot with the Flannel lab inside (`labctl up --vm`), and how long one
//!   scenario takes on the host and in the VM.
//! - `shared`: the whole Flannel file (every scenario) in the VM, cold (a
//!   VM booted for the lab, as without `labctl vm start`) and warm (the
//!   shared VM of the kernel up already), split into boot, up, scenarios
//!   and down, with the ratio; and the one-command `labctl run --kernel`
//!   the scenario suite uses, cold and warm.
//! - `idle`: the host CPU an idle shared VM takes (QEMU and all, over 10
//!   s), next to a VM booted the same way that runs `sleep`: what the
//!   agent's waiting costs every test and lab running beside it.
//!
//! - `qemu`: the system's QEMU against labctl's own (`labctl vm
//!   install-qemu`), alternating run by run: a shared VM's boot, 20
//!   commands in it (`vm exec -- ip link show lo`: process start-up,
//!   most of a VM lab's work under emulation) and the Flannel file's
//!   up, scenarios and down in it.
//!
//! - `warm`: the guest's tools started from the host's files over 9p
//!   (`LABCTL_VM_WARM=0`) against moved into guest memory at boot
//!   (`labctl::vm::warm`, the default), alternating, the same rows.
//!
//! `qemu` and `warm` also time the Flannel lab built in the VM by the bash
//! script `labctl plan -o script` writes (a process per command).
//!
//! Run: `cargo bench -p labctl --bench vm [-- overhead|shared|idle|qemu|warm]` (all
//! without a name; `LABCTL_BENCH_RUNS=N` repeats each, median shown).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn labctl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_labctl"));
    c.env_remove("LABCTL_KERNEL");
    c
}

fn timed(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let o = cmd.output().expect("spawn");
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("vm: benchmark only runs under `cargo bench`");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("vm: needs root");
        std::process::exit(1);
    }
    let kernel = match labctl::vm::choose(None) {
        Ok(k) => k.release,
        Err(e) => {
            eprintln!("vm: {e}");
            std::process::exit(1);
        }
    };
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topologies/flannel.yaml");
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |what: &str| only.is_empty() || only.iter().any(|o| o == what);
    println!(
        "VM kernel {kernel} (TCG{}), host kernel {}, load average {}",
        if labctl::vm::kvm_usable() { "/KVM" } else { "" },
        labctl::features::kernel_release(),
        load()
    );
    if wants("overhead") {
        overhead(&kernel, &file);
    }
    if wants("shared") {
        shared(&kernel, &file);
    }
    if wants("idle") {
        idle(&kernel);
    }
    if wants("qemu") {
        qemu(&kernel, &file);
    }
    if wants("warm") {
        let times = alternate(&kernel, &file, [("LABCTL_VM_WARM", "0"), ("", "")]);
        println!();
        println!(
            "the guest's tools from the host's files (LABCTL_VM_WARM=0) against moved into \
             guest memory at boot, median of {}",
            runs()
        );
        print_rows(["from 9p", "warm", "9p/warm"], times);
    }
}

/// Per setting (an environment variable for `vm start`, none when
/// empty), alternating run by run: a shared VM's boot, 20 commands in it
/// right after, the Flannel file's up, run and down in it, and the same
/// lab made by its bash script.
fn alternate(
    kernel: &str,
    file: &std::path::Path,
    settings: [(&str, &str); 2],
) -> [[Vec<Duration>; 4]; 2] {
    let stop = || {
        let _ = labctl()
            .args(["vm", "stop", "-q", "--kernel", kernel])
            .output();
    };
    // The Flannel lab as a bash script of `ip` commands (hundreds of
    // processes, as the objects trials run in the VM), where the guest
    // reads it: the host's /tmp.
    let script = std::env::temp_dir().join(format!("labctl-bench-{}.sh", std::process::id()));
    let plan = labctl()
        .args(["plan", "-o", "script", "--name", "bscript"])
        .arg(file)
        .output()
        .expect("labctl plan");
    assert!(plan.status.success(), "labctl plan -o script failed");
    std::fs::write(&script, &plan.stdout).expect("write the script");
    let mut times: [[Vec<Duration>; 4]; 2] = Default::default();
    for _ in 0..runs() {
        for (i, (var, value)) in settings.into_iter().enumerate() {
            stop();
            // Chosen at boot; the rest goes into that VM.
            let mut start = labctl();
            start.args(["vm", "start", "-q", "--kernel", kernel]);
            if !var.is_empty() {
                start.env(var, value);
            }
            times[i][0].push(timed(&mut start));
            let t = Instant::now();
            for _ in 0..20 {
                timed(labctl().args([
                    "vm", "exec", "--kernel", kernel, "--", "ip", "link", "show", "lo",
                ]));
            }
            times[i][1].push(t.elapsed());
            let t = Instant::now();
            timed(
                labctl()
                    .args(["up", "-q", "--kernel", kernel, "--name", "bqemu"])
                    .arg(file),
            );
            timed(labctl().args(["run", "--name", "bqemu"]).arg(file));
            timed(labctl().args(["down", "-q", "bqemu"]));
            times[i][2].push(t.elapsed());
            let t = Instant::now();
            timed(
                labctl()
                    .args(["vm", "exec", "--kernel", kernel, "--", "bash"])
                    .arg(&script),
            );
            times[i][3].push(t.elapsed());
            // Only the script's namespaces are in this VM: a shared VM of
            // the bench's own, stopped next.
            stop();
        }
    }
    let _ = std::fs::remove_file(&script);
    times
}

/// `alternate`'s rows under `heads` (first, second, their ratio).
fn print_rows(heads: [&str; 3], times: [[Vec<Duration>; 4]; 2]) {
    let s = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    println!(
        "{:<36} {:>10} {:>10} {:>13}",
        "", heads[0], heads[1], heads[2]
    );
    let [a_times, b_times] = times;
    let what = [
        "shared VM boot (vm start)",
        "20 x vm exec -- ip link show lo",
        "flannel.yaml up, run, down",
        "flannel.yaml's plan -o script by bash",
    ];
    for (n, w) in what.iter().enumerate() {
        let (a, b) = (median(a_times[n].clone()), median(b_times[n].clone()));
        println!(
            "{w:<36} {:>10} {:>10} {:>12.2}x",
            s(a),
            s(b),
            a.as_secs_f64() / b.as_secs_f64()
        );
    }
}

/// The system's QEMU against labctl's, alternating.
fn qemu(kernel: &str, file: &std::path::Path) {
    let Some(own) = labctl::vm::qemu::binary() else {
        println!(
            "\nqemu: labctl has no QEMU of its own (`labctl vm install-qemu`); nothing to compare"
        );
        return;
    };
    let runs = runs();
    let times = alternate(kernel, file, [("LABCTL_QEMU", "system"), ("", "")]);
    let version = |q: Option<&std::path::Path>| {
        let bin = q.map_or_else(|| PathBuf::from("qemu-system-x86_64"), PathBuf::from);
        Command::new(bin)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|v| {
                v.lines()
                    .next()
                    .map(|l| l.replace("QEMU emulator version ", ""))
            })
            .unwrap_or_else(|| "?".into())
    };
    println!();
    println!(
        "QEMU in the VM runtime, median of {runs}: system {} against labctl's {}",
        version(None),
        version(Some(&own))
    );
    print_rows(["system", "labctl's", "system/own"], times);
}

/// Clock ticks (user and system) used so far by the processes of process
/// group `pgid`, from /proc/PID/stat.
fn group_ticks(pgid: u32) -> u64 {
    let mut ticks = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command's closing parenthesis: state, ppid, pgrp, ...,
        // utime (the 14th field) and stime (the 15th).
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 12 && f[2].parse::<u32>() == Ok(pgid) {
            ticks += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
        }
    }
    ticks
}

/// The share of one host core process group `pgid` uses over `span`.
fn group_cpu(pgid: u32, span: Duration) -> f64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let before = group_ticks(pgid);
    std::thread::sleep(span);
    (group_ticks(pgid) - before) as f64 / hz / span.as_secs_f64()
}

/// An idle shared VM's host CPU next to a VM that runs `sleep`.
fn idle(kernel: &str) {
    let settle = Duration::from_secs(5);
    let span = Duration::from_secs(10);
    let _ = labctl()
        .args(["vm", "stop", "-q", "--kernel", kernel])
        .output();
    timed(labctl().args(["vm", "start", "-q", "--kernel", kernel]));
    let status = labctl()
        .args(["vm", "status", "-o", "json"])
        .output()
        .expect("vm status");
    let vms: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let pid = vms
        .as_array()
        .and_then(|v| v.iter().find(|vm| vm["release"] == kernel))
        .and_then(|vm| vm["pid"].as_u64())
        .expect("the shared VM's pid") as u32;
    std::thread::sleep(settle);
    let shared = group_cpu(pid, span);
    let _ = labctl()
        .args(["vm", "stop", "-q", "--kernel", kernel])
        .output();
    // The same VM by hand, `sleep` instead of the agent; its own process
    // group, as labctl starts vng.
    use std::os::unix::process::CommandExt;
    let mut vng = labctl::vm::vng(kernel);
    // In labctl's own root-owned directory, not a name anyone can take
    // first in /tmp: the VM writes there as root.
    let dir = labctl::vm::lib_dir().join(format!("bench-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench directory");
    let ready = dir.join("ready");
    let mut child = vng
        .arg(format!("--rwdir={}", dir.display()))
        .args(["--exec", &format!("touch {} && sleep 120", ready.display())])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start vng");
    // Booted once the guest has touched the file; then the same settling.
    let t = Instant::now();
    while !ready.exists() && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ready.exists(), "the sleeping VM did not boot in 120 s");
    std::thread::sleep(settle);
    let sleeping = group_cpu(child.id(), span);
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!();
    println!(
        "idle VM, host CPU over {} s, in % of a core (ratio to a VM running `sleep`)",
        span.as_secs()
    );
    let row = |what: &str, cpu: f64| {
        println!(
            "{what:<40} {:>5.0} % {:>7.1}x",
            cpu * 100.0,
            cpu / sleeping.max(0.001)
        );
    };
    row("shared VM, 5 s after its start", shared);
    row("a VM running `sleep`", sleeping);
}

/// The 1-minute load average, as /proc/loadavg says.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}

fn runs() -> usize {
    std::env::var("LABCTL_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

/// Cold against warm: the Flannel file in a VM booted for it, and in the
/// shared VM.
fn shared(kernel: &str, file: &std::path::Path) {
    let runs = runs();
    let stop = || {
        let _ = labctl()
            .args(["vm", "stop", "-q", "--kernel", kernel])
            .output();
    };
    // Cold: nothing shared is up.
    stop();
    let mut cold = Split::default();
    let mut cold_run = vec![];
    for _ in 0..runs {
        // Boot alone, as `vm start` does it, then the same lab in a VM of
        // its own: `up` there is boot and up together.
        let boot = timed(labctl().args(["vm", "start", "-q", "--kernel", kernel]));
        stop();
        let up = timed(
            labctl()
                .args(["up", "-q", "--kernel", kernel, "--name", "bcold"])
                .arg(file),
        );
        cold.boot.push(boot);
        cold.up.push(up.saturating_sub(boot));
        cold.scenarios
            .push(timed(labctl().args(["run", "--name", "bcold"]).arg(file)));
        cold.down
            .push(timed(labctl().args(["down", "-q", "bcold"])));
        cold_run.push(timed(
            labctl()
                .args(["run", "--kernel", kernel, "--name", "bcold1"])
                .arg(file),
        ));
    }
    // Warm: one boot, then every run in the shared VM.
    let boot = timed(labctl().args(["vm", "start", "-q", "--kernel", kernel]));
    let mut warm = Split::default();
    let mut warm_run = vec![];
    for _ in 0..runs {
        warm.boot.push(Duration::ZERO);
        warm.up.push(timed(
            labctl()
                .args(["up", "-q", "--kernel", kernel, "--name", "bwarm"])
                .arg(file),
        ));
        warm.scenarios
            .push(timed(labctl().args(["run", "--name", "bwarm"]).arg(file)));
        warm.down
            .push(timed(labctl().args(["down", "-q", "bwarm"])));
        warm_run.push(timed(
            labctl()
                .args(["run", "--kernel", kernel, "--name", "bwarm1"])
                .arg(file),
        ));
    }
    stop();
    let s = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let (cold, warm) = (cold.median(), warm.median());
    println!();
    println!(
        "{} (every scenario) in the VM, median of {runs}; the shared VM's one boot took {}",
        file.file_name().unwrap_or_default().to_string_lossy(),
        s(boot)
    );
    println!(
        "{:<28} {:>10} {:>10} {:>11}",
        "", "cold VM", "shared VM", "cold/shared"
    );
    let row = |what: &str, c: Duration, w: Duration| {
        let ratio = if w.is_zero() {
            "-".to_string()
        } else {
            format!("{:.1}x", c.as_secs_f64() / w.as_secs_f64())
        };
        println!("{what:<28} {:>10} {:>10} {ratio:>11}", s(c), s(w));
    };
    row("boot", cold[0], warm[0]);
    row("up", cold[1], warm[1]);
    row("scenarios (labctl run)", cold[2], warm[2]);
    row("down", cold[3], warm[3]);
    row("total", cold.iter().sum(), warm.iter().sum::<Duration>());
    row(
        "labctl run --kernel (1 cmd)",
        median(cold_run),
        median(warm_run),
    );
}

/// Times of one way of running a file, per stage.
#[derive(Default)]
struct Split {
    boot: Vec<Duration>,
    up: Vec<Duration>,
    scenarios: Vec<Duration>,
    down: Vec<Duration>,
}

impl Split {
    fn median(self) -> [Duration; 4] {
        [
            median(self.boot),
            median(self.up),
            median(self.scenarios),
            median(self.down),
        ]
    }
}

fn overhead(kernel: &str, file: &std::path::Path) {
    let scenario = "f2-pod-ip-other-node";
    let runs = 3;
    let (mut host_up, mut vm_up, mut host_run, mut vm_run, mut host_down, mut vm_down) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        host_up.push(timed(
            labctl().args(["up", "-q", "--name", "bhost"]).arg(file),
        ));
        host_run.push(timed(
            labctl()
                .args(["run", "--name", "bhost"])
                .arg(file)
                .arg(scenario),
        ));
        host_down.push(timed(labctl().args(["down", "-q", "bhost"])));
        vm_up.push(timed(
            labctl()
                .args(["up", "-q", "--kernel", kernel, "--name", "bvm"])
                .arg(file),
        ));
        vm_run.push(timed(
            labctl()
                .args(["run", "--name", "bvm"])
                .arg(file)
                .arg(scenario),
        ));
        vm_down.push(timed(labctl().args(["down", "-q", "bvm"])));
    }
    let s = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    let row = |what: &str, h: Vec<Duration>, v: Vec<Duration>| {
        let (h, v) = (median(h), median(v));
        println!(
            "{what:<34} {:>10} {:>12} {:>10.1}x",
            s(h),
            s(v),
            v.as_secs_f64() / h.as_secs_f64()
        );
    };
    println!();
    println!("host against VM, median of {runs}");
    println!("{:<34} {:>10} {:>12} {:>11}", "", "host", "vm", "vm/host");
    row("up (vm: boot + up inside)", host_up, vm_up);
    row(&format!("run {scenario}"), host_run, vm_run);
    row("down (vm: down + power off)", host_down, vm_down);
}
