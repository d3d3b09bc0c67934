//! How long `labctl up` and `labctl down --wait` take, each next to its
//! baseline in the same run: the same lab built by the bash script of `ip`
//! commands that `labctl plan -o script` prints (IPv6 kept off as `up`
//! keeps it: `addrgenmode none` on each link made, `lo`'s `::1` flushed),
//! and removed by `ip netns delete` for each of its namespaces, then
//! waited for as `--wait` does (until the kernel has released the
//! namespaces, not only queued them: [`labctl::release`]). The ratio is
//! baseline / labctl.
//!
//! Rows: the Flannel pod network on the host kernel (`--var services=off`;
//! with its services the file asks for a VM), and generated labs of 10
//! nodes (`topologies/scale.yaml`) with 1,000 pods by default. Peak memory
//! is labctl's maximum resident set (`getrusage` of the child; this binary
//! re-runs itself as the parent of each timed command), CPU is its user +
//! system time, which the machine's other load disturbs less than the wall
//! time. The load average is printed before each row: machines here are
//! shared, so labctl and the baseline alternate and medians are shown.
//!
//! Run: `cargo bench -p labctl --bench updown`. Environment:
//! - `UPDOWN_PODS=1k,5k,10k` picks the scale rows (pods in all, 10 nodes;
//!   `k` is 1,000); default `1k`. The bash baseline grows as the square of
//!   the pods: a process per command (about 120,000 at 10k), and each
//!   `ip -n`, like `ip netns exec`, unshares a mount namespace, which
//!   copies every namespace's mount under /run/netns (`perf`: 86 % of its
//!   time in `copy_mnt_ns` with 10,000 alive). One `ip -n` took 2.4 ms
//!   here with one namespace alive, 4.2 ms with 1,000, 11 ms with 5,000
//!   and 18-31 ms with 10,000, so the baseline of 10k takes about an hour.
//! - `UPDOWN_RUNS=N` runs each row N times (default 3 for up to 1,000
//!   pods, 1 above).
//! - `UPDOWN_BASELINE=0` skips the bash baseline.
//! - `UPDOWN_LABCTL=PATH` times another build of labctl (an older one, for
//!   figures before a change); its `down` is timed with the same wait for
//!   the kernel as the baseline's, since it may have no `--wait`.
//! - Mininet, when Debian's package is installed (`/usr/bin/python3` can
//!   import `mininet`), builds the same shape beside each scale row of at
//!   most `UPDOWN_MININET_MAX` pods (default 1,000; `UPDOWN_MININET=0`
//!   skips it): 10 Linux bridges (`--switch lxbr`'s `LinuxBridge`, no
//!   controller) of that many hosts each, through its Python API in a
//!   namespace of the bench's own (`updown-mn`), so none of its links is
//!   in the host's. `Mininet.init()` is skipped: it raises host-wide
//!   sysctls (`fixLimits`), which a benchmark must not touch. Its up is
//!   `build()` + `start()`, its down `stop()` and the same wait for the
//!   kernel as the baseline's; the ratio is Mininet / labctl.
//!
//! Rows are printed as each finishes. A run killed during the baseline
//! leaves its namespaces (named `updown-*`, unmarked); the next run
//! removes those its killed predecessor listed (in the bench's scratch
//! directory under target/, never /tmp) before anything else.
//!
//! Needs root. Targets (issue 17), printed at the end: 1,000 pods up in at
//! most 1.2 s; 10,000 pods up in at most 15 s and down --wait in at most
//! 5 s.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The lab name every row runs under.
const LAB: &str = "updown";
/// How long a baseline's namespaces may take to be released.
const RELEASE_LIMIT: Duration = Duration::from_secs(120);

fn topo(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../topologies")
        .join(name)
}

/// One command's cost, as the wrapper ([`wrapper`]) measured it.
#[derive(Clone, Copy, Default)]
struct Cost {
    wall: Duration,
    cpu: Duration,
    /// Peak resident set, KiB.
    max_rss: u64,
}

/// Run `program args` under this binary as wrapper and read its cost;
/// the command's output when it fails.
fn try_timed(program: &Path, args: &[String]) -> Result<Cost, String> {
    let me = std::env::current_exe().expect("own path");
    let out = Command::new(me)
        .arg("--wrap")
        .arg(program)
        .args(args)
        .output()
        .expect("spawn the wrapper");
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{} {}: {}{}",
            program.display(),
            args.join(" "),
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let line = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("COST "))
        .expect("the wrapper's COST line");
    let f: Vec<f64> = line
        .split_whitespace()
        .map(|v| v.parse().expect("a number"))
        .collect();
    Ok(Cost {
        wall: Duration::from_secs_f64(f[0]),
        cpu: Duration::from_secs_f64(f[1]),
        max_rss: f[2] as u64,
    })
}

fn timed(program: &Path, args: &[String]) -> Cost {
    try_timed(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// The wrapper: run the command after `--wrap`, then print `COST wall cpu
/// max_rss` from its own rusage of children (only that one child). On
/// failure, the child's output and its exit code.
fn wrapper(cmd: &[String]) -> ! {
    use nix::sys::resource::{UsageWho, getrusage};
    let t = std::time::Instant::now();
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .output()
        .expect("spawn the timed command");
    let wall = t.elapsed();
    if !out.status.success() {
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        std::process::exit(out.status.code().unwrap_or(1));
    }
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    println!(
        "COST {} {} {}",
        wall.as_secs_f64(),
        secs(u.user_time()) + secs(u.system_time()),
        u.max_rss()
    );
    std::process::exit(0)
}

/// The labctl timed: this build's, or `UPDOWN_LABCTL`.
fn labctl() -> PathBuf {
    std::env::var_os("UPDOWN_LABCTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_labctl")))
}

/// Whether the labctl timed is another build, whose `down` may not wait.
fn other_build() -> bool {
    std::env::var_os("UPDOWN_LABCTL").is_some()
}

/// The namespaces a plan script makes.
fn namespaces(script: &str) -> Vec<String> {
    script
        .lines()
        .filter_map(|l| l.strip_prefix("ip netns add "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// Delete namespaces by name, like the baseline's down, ignoring those
/// that are not there (after a failed run).
fn delete_script(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("ip netns delete {n} 2>/dev/null || true\n"))
        .collect()
}

struct Row {
    what: String,
    /// Pods in all, for a scale row.
    pods: Option<usize>,
    load: String,
    /// labctl's up and down, or why they failed.
    labctl: Result<(Cost, Cost), String>,
    bash_up: Option<Duration>,
    bash_down: Option<Duration>,
    /// Mininet's up and down, beside a scale row.
    mininet: Option<Result<(Duration, Duration), String>>,
}

fn median<T: Copy>(mut v: Vec<T>, key: impl Fn(&T) -> Duration) -> T {
    v.sort_by_key(|c| key(c));
    v[v.len() / 2]
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn measure(
    what: &str,
    pods: Option<usize>,
    file: &Path,
    vars: &[String],
    runs: usize,
    baseline: bool,
) -> Row {
    let mut common: Vec<String> = vec!["--name".into(), LAB.into()];
    for v in vars {
        common.push("--var".into());
        common.push(v.clone());
    }
    let file = file.to_string_lossy().to_string();
    let script = Command::new(labctl())
        .args(["plan", "-o", "script"])
        .args(&common)
        .arg(&file)
        .output()
        .expect("labctl plan");
    assert!(script.status.success(), "labctl plan failed");
    let script = String::from_utf8_lossy(&script.stdout).to_string();
    let names = namespaces(&script);
    let dir = work_dir();
    let up_path = dir.join("up.sh");
    let down_path = dir.join("down.sh");
    std::fs::write(&up_path, &script).expect("write the up script");
    std::fs::write(&down_path, delete_script(&names)).expect("write the down script");
    let bash = PathBuf::from("bash");
    let load = load();
    let (mut up, mut down, mut bup, mut bdown) = (vec![], vec![], vec![], vec![]);
    let mut failed = None;
    for _ in 0..runs {
        let mut args: Vec<String> = vec!["up".into(), "-q".into()];
        args.extend(common.iter().cloned());
        args.push(file.clone());
        match try_timed(&labctl(), &args) {
            Ok(cost) => {
                up.push(cost);
                down.push(labctl_down());
            }
            Err(e) => {
                // What a failed up left, if anything.
                let _ = Command::new(labctl()).args(["down", "-q", LAB]).output();
                failed = Some(e.lines().last().unwrap_or_default().to_string());
            }
        }
        if baseline {
            // Written before the baseline makes anything, removed once it
            // is all gone: a killed run leaves it for the next.
            std::fs::write(stale_list(), names.join("\n")).expect("write the names list");
            let built = try_timed(&bash, &[up_path.to_string_lossy().to_string()]);
            let t = std::time::Instant::now();
            timed(&bash, &[down_path.to_string_lossy().to_string()]);
            labctl::release::wait_let_go(RELEASE_LIMIT)
                .expect("the baseline's namespaces released");
            bdown.push(t.elapsed());
            let _ = std::fs::remove_file(stale_list());
            // Failed, it is still removed first.
            bup.push(built.unwrap_or_else(|e| panic!("baseline: {e}")).wall);
        }
    }
    Row {
        what: what.to_string(),
        pods,
        load,
        labctl: match failed {
            Some(e) => Err(e),
            None => Ok((median(up, |c| c.wall), median(down, |c| c.wall))),
        },
        bash_up: baseline.then(|| median(bup, |d| *d)),
        bash_down: baseline.then(|| median(bdown, |d| *d)),
        mininet: None,
    }
}

/// `labctl down --wait`, or for another build `labctl down` and the wait
/// the baseline gets.
fn labctl_down() -> Cost {
    if !other_build() {
        return timed(
            &labctl(),
            &["down".into(), "-q".into(), "--wait".into(), LAB.into()],
        );
    }
    let t = std::time::Instant::now();
    let mut cost = timed(&labctl(), &["down".into(), "-q".into(), LAB.into()]);
    labctl::release::wait_let_go(RELEASE_LIMIT).expect("the lab's namespaces released");
    cost.wall = t.elapsed();
    cost
}

/// `1k` -> 1000, `2500` -> 2500.
fn pods(word: &str) -> usize {
    let word = word.trim();
    match word.strip_suffix('k') {
        Some(k) => k.parse::<usize>().map(|k| k * 1000),
        None => word.parse(),
    }
    .unwrap_or_else(|_| panic!("UPDOWN_PODS: `{word}` is not a pod count (1k, 5k, 2500)"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--wrap") {
        wrapper(&args[i + 1..]);
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("updown: needs root (it builds real labs); run it with sudo");
        std::process::exit(1);
    }
    // `cargo test --benches` passes nothing; `cargo bench` passes --bench.
    if !args.iter().any(|a| a == "--bench") {
        println!("updown: benchmark only runs under `cargo bench`");
        return;
    }
    let sizes: Vec<usize> = std::env::var("UPDOWN_PODS")
        .unwrap_or_else(|_| "1k".into())
        .split(',')
        .filter(|w| !w.trim().is_empty())
        .map(pods)
        .collect();
    let runs_for = |pods: usize| {
        std::env::var("UPDOWN_RUNS")
            .ok()
            .and_then(|r| r.parse::<usize>().ok())
            .unwrap_or(if pods <= 1000 { 3 } else { 1 })
            .max(1)
    };
    let baseline = std::env::var("UPDOWN_BASELINE").map_or(true, |v| v != "0");
    let mininet_max = match std::env::var("UPDOWN_MININET").as_deref() {
        Ok("0") => 0,
        _ if !mininet::installed() => 0,
        _ => std::env::var("UPDOWN_MININET_MAX")
            .ok()
            .map_or(1000, |m| pods(&m)),
    };
    // A run killed half-way leaves its lab, and during a baseline the
    // baseline's namespaces: start clean.
    let _ = Command::new(labctl()).args(["down", "-q", LAB]).output();
    remove_stale_baseline();
    mininet::remove_stale();
    header();
    let mut rows = vec![measure(
        "flannel, host (10 namespaces)",
        None,
        &topo("flannel.yaml"),
        &["services=off".into()],
        runs_for(10),
        baseline,
    )];
    print_row(&rows[0]);
    for &n in &sizes {
        let per_node = n.div_ceil(10);
        let mut row = measure(
            &format!("scale: 10 nodes x {per_node} pods"),
            Some(per_node * 10),
            &topo("scale.yaml"),
            &["nodes=10".into(), format!("pods={per_node}")],
            runs_for(per_node * 10),
            baseline,
        );
        if per_node * 10 <= mininet_max {
            row.mininet = Some(mininet::measure(10, per_node));
        }
        print_row(&row);
        rows.push(row);
    }
    targets(&rows);
}

/// Mininet side by side (see the module doc).
mod mininet {
    use std::process::Command;
    use std::time::{Duration, Instant};

    /// The namespace Mininet's root side lives in.
    const NS: &str = "updown-mn";
    const PYTHON: &str = "/usr/bin/python3";

    /// Builds `switches` Linux bridges of `hosts` hosts each, stops them
    /// and prints `MININET up down` in seconds.
    const SCRIPT: &str = r#"
import sys, time
from mininet.net import Mininet
from mininet.topo import Topo
from mininet.nodelib import LinuxBridge
from mininet.log import setLogLevel
switches, hosts = int(sys.argv[1]), int(sys.argv[2])
Mininet.inited = True  # no fixLimits(): it writes host-wide sysctls
class T(Topo):
    def build(self):
        for s in range(switches):
            sw = self.addSwitch('s%d' % s, cls=LinuxBridge)
            for h in range(hosts):
                self.addLink(self.addHost('h%dp%d' % (s, h)), sw)
setLogLevel('error')
t = time.monotonic()
net = Mininet(topo=T(), switch=LinuxBridge, controller=None, build=False)
net.build()
net.start()
up = time.monotonic() - t
t = time.monotonic()
net.stop()
print('MININET %f %f' % (up, time.monotonic() - t))
"#;

    pub fn installed() -> bool {
        Command::new(PYTHON)
            .args(["-c", "import mininet.net, mininet.nodelib"])
            .output()
            .is_ok_and(|o| o.status.success())
            && Command::new("brctl").arg("--version").output().is_ok()
    }

    /// A namespace of ours a killed run left (with whatever Mininet had
    /// in it; its hosts' processes die with their shells' namespace
    /// holder gone only when killed, so they are killed by the
    /// namespace's own pids).
    pub fn remove_stale() {
        if std::path::Path::new("/run/netns").join(NS).exists() {
            let _ = Command::new("ip")
                .args(["netns", "pids", NS])
                .output()
                .map(|o| {
                    for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                        let _ = Command::new("kill").args(["-9", pid]).output();
                    }
                });
            let _ = Command::new("ip").args(["netns", "delete", NS]).output();
        }
    }

    /// Mininet's up and down (with the kernel's release), or why it
    /// failed.
    pub fn measure(switches: usize, hosts: usize) -> Result<(Duration, Duration), String> {
        let made = Command::new("ip").args(["netns", "add", NS]).output();
        if !made.is_ok_and(|o| o.status.success()) {
            return Err(format!("ip netns add {NS} failed"));
        }
        let out = Command::new("ip")
            .args(["netns", "exec", NS, PYTHON, "-c", SCRIPT])
            .args([switches.to_string(), hosts.to_string()])
            .output();
        let t = Instant::now();
        let _ = Command::new("ip").args(["netns", "delete", NS]).output();
        let released = labctl::release::wait_let_go(super::RELEASE_LIMIT);
        let wait = t.elapsed();
        let out = out.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(line) = text.lines().find_map(|l| l.strip_prefix("MININET ")) else {
            return Err(format!(
                "no figures: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            ));
        };
        released.map_err(|e| e.to_string())?;
        let f: Vec<f64> = line
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let [up, down] = f[..] else {
            return Err(format!("figures: {line}"));
        };
        Ok((
            Duration::from_secs_f64(up),
            Duration::from_secs_f64(down) + wait,
        ))
    }
}

/// The bench's own scratch directory, under the build's target directory
/// (not the shared, world-writable /tmp: this runs as root and executes
/// the scripts it writes there).
fn work_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("updown");
    std::fs::create_dir_all(&dir).expect("the bench's scratch directory");
    dir
}

/// The baseline's namespace names, kept while they exist: a killed run
/// leaves the list, and the next one deletes them first.
fn stale_list() -> PathBuf {
    work_dir().join("baseline-namespaces")
}

/// Delete what a killed baseline left: only names of the bench's own
/// lab (`updown-*`), each by `ip netns delete` with the name as one
/// argument; the list is read, never run.
fn remove_stale_baseline() {
    let path = stale_list();
    let Ok(list) = std::fs::read_to_string(&path) else {
        return;
    };
    let prefix = format!("{LAB}-");
    for name in list
        .lines()
        .filter(|n| n.starts_with(&prefix) && !n.contains('/'))
    {
        if std::path::Path::new("/run/netns").join(name).exists() {
            let _ = Command::new("ip").args(["netns", "delete", name]).output();
        }
    }
    let _ = labctl::release::wait_let_go(RELEASE_LIMIT);
    let _ = std::fs::remove_file(&path);
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ratio(base: Option<Duration>, ours: Duration) -> String {
    base.map(|b| format!("{:.1}x", b.as_secs_f64() / ours.as_secs_f64()))
        .unwrap_or_else(|| "-".into())
}

fn header() {
    println!();
    println!(
        "{:<40} {:>14} | {:>8} {:>8} {:>8} {:>6} | {:>11} {:>9} {:>6} | {:>9}",
        "lab",
        "load",
        "up",
        "(cpu)",
        "bash up",
        "ratio",
        "down --wait",
        "bash down",
        "ratio",
        "peak RSS"
    );
}

/// One row, as soon as it is measured.
fn print_row(r: &Row) {
    let opt = |d: Option<Duration>| d.map(secs).unwrap_or_else(|| "-".into());
    match &r.labctl {
        Err(e) => println!(
            "{:<40} {:>14} | labctl failed | {:>8} | {:>9}\n  labctl failed: {e}",
            r.what,
            r.load,
            opt(r.bash_up),
            opt(r.bash_down)
        ),
        Ok((up, down)) => {
            println!(
                "{:<40} {:>14} | {:>8} {:>8} {:>8} {:>6} | {:>11} {:>9} {:>6} | {:>6} MB",
                r.what,
                r.load,
                secs(up.wall),
                secs(up.cpu),
                opt(r.bash_up),
                ratio(r.bash_up, up.wall),
                secs(down.wall),
                opt(r.bash_down),
                ratio(r.bash_down, down.wall),
                up.max_rss.max(down.max_rss) / 1024,
            );
            match &r.mininet {
                Some(Ok((mup, mdown))) => println!(
                    "{:<55} | {:>8} {:>8} {:>8} {:>6} | {:>11} {:>9} {:>6} |",
                    "  same shape in Mininet (lxbr, own netns)",
                    "",
                    "",
                    secs(*mup),
                    ratio(Some(*mup), up.wall),
                    "",
                    secs(*mdown),
                    ratio(Some(*mdown), down.wall),
                ),
                Some(Err(e)) => println!("  Mininet failed: {e}"),
                None => {}
            }
        }
    }
}

fn targets(rows: &[Row]) {
    println!();
    let mut targets = Vec::new();
    for r in rows {
        let Ok((up, down)) = &r.labctl else { continue };
        match r.pods {
            Some(1000) => targets.push(("1,000 pods up", up.wall, 1.2)),
            Some(10000) => {
                targets.push(("10,000 pods up", up.wall, 15.0));
                targets.push(("10,000 pods down --wait", down.wall, 5.0));
            }
            _ => {}
        }
    }
    for (what, took, limit) in targets {
        let verdict = if took.as_secs_f64() <= limit {
            "met"
        } else {
            "MISSED"
        };
        println!("target: {what} <= {limit} s: {} ({verdict})", secs(took));
    }
    println!("load now: {}", load());
}
