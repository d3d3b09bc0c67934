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
//! Under each row, the median `up`'s own split by stage (`labctl up
//! --timings`: planning, the namespaces, each phase of the plan with its
//! count of kernel actions, the wait for the kernel to activate the links),
//! which says where a slower machine spends the difference.
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
//!   Hence a second form of the same script, `nsenter`: each `ip -n NS `
//!   made `nsenter --net=/run/netns/NS ip ` and each `ip netns exec NS
//!   sysctl ` made `nsenter --net=/run/netns/NS sysctl ` (no mount
//!   namespace; 2-4 ms per command with 10,000 alive). It builds the same
//!   lab (compared for 2 nodes x 3 pods: links with `-d`, addresses,
//!   routes, IPv6 addresses, `ip_forward`/`send_redirects` per namespace,
//!   alike but for random MACs, bridge timers and labctl's aliases); a
//!   script that `ip netns exec`s anything else, or names /sys (which
//!   `ip netns exec` remounts for the namespace), is refused for it.
//!   Measured against it (one run each, 2 cores shared): 10k up 12.89 s
//!   against 278.8 s (22x), down --wait 6.07 s against 17.6 s (2.9x),
//!   load 5.0; 5k up 4.19 s against 116.4 s (28x), down 2.58 s against
//!   8.05 s (3.1x), load 2.1-4.6, where the `ip` form took 577.8 s.
//! - `UPDOWN_RUNS=N` runs each row N times (default 3 for up to 1,000
//!   pods, 1 above).
//! - `UPDOWN_BASELINE=ip|nsenter|both|0` picks the baseline's form (`0`
//!   skips it); default `ip` up to 2,000 pods and `nsenter` above, where
//!   the `ip` form does not finish. Each row prints the form its ratio is
//!   against (`both`: the second on a line of its own).
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
    try_timed_err(program, args).map(|(cost, _)| cost)
}

/// [`try_timed`], and what the command printed on stderr.
fn try_timed_err(program: &Path, args: &[String]) -> Result<(Cost, String), String> {
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
    let cost = Cost {
        wall: Duration::from_secs_f64(f[0]),
        cpu: Duration::from_secs_f64(f[1]),
        max_rss: f[2] as u64,
    };
    Ok((cost, String::from_utf8_lossy(&out.stderr).into_owned()))
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
    // What it says on stderr (`up --timings`) goes up to the bench.
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
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

/// A form of the bash baseline: the plan script as printed (`ip -n NS`,
/// `ip netns exec NS`), or the same with each of those entering the
/// namespace by `nsenter --net=/run/netns/NS`, which unshares no mount
/// namespace and so does not copy every /run/netns mount per command.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Form {
    Ip,
    Nsenter,
}

impl Form {
    fn name(self) -> &'static str {
        match self {
            Form::Ip => "ip",
            Form::Nsenter => "nsenter",
        }
    }
}

/// The baseline forms for a row of `pods` (`UPDOWN_BASELINE`: `0`, `ip`,
/// `nsenter`, `both`; unset: `ip` up to 2,000 pods, `nsenter` above,
/// where the `ip` form takes too long to finish).
fn forms(pods: usize) -> Vec<Form> {
    match std::env::var("UPDOWN_BASELINE").as_deref() {
        Ok("0") => vec![],
        Ok("ip") => vec![Form::Ip],
        Ok("nsenter") => vec![Form::Nsenter],
        Ok("both") => vec![Form::Ip, Form::Nsenter],
        Ok(other) => panic!("UPDOWN_BASELINE: `{other}` is not 0, ip, nsenter or both"),
        Err(_) if pods <= 2000 => vec![Form::Ip],
        Err(_) => vec![Form::Nsenter],
    }
}

/// One shell word of `text` from its start: up to the first blank outside
/// quotes, the quotes kept as written (`'a b'`, `'it'\''s'`, `x\ y`).
fn shell_word(text: &str) -> &str {
    let (mut quote, mut escaped) = (None, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if let Some(q) = quote {
            if c == q {
                quote = None;
            }
        } else if c == '\\' {
            escaped = true;
        } else if c == '\'' || c == '"' {
            quote = Some(c);
        } else if c.is_whitespace() {
            return &text[..i];
        }
    }
    text
}

/// The plan script with each `ip -n NS ` made `nsenter --net=/run/netns/NS
/// ip ` and each `ip netns exec NS sysctl ` made `nsenter
/// --net=/run/netns/NS sysctl ` (a write under /proc/sys/net follows the
/// net namespace alone). Refused, rather than building another lab, for
/// any other `ip netns exec` or a line naming /sys: `ip netns exec` also
/// mounts the namespace's own /sys, which nsenter without a mount
/// namespace does not. The name is kept as quoted (`ip -n 'a b' ` ->
/// `nsenter --net=/run/netns/'a b' ip `). Only text outside single quotes
/// at the start of a word is a command.
fn nsenter_form(script: &str) -> Result<String, String> {
    let mut out = String::with_capacity(script.len() * 3 / 2);
    for (n, line) in script.lines().enumerate() {
        if line.contains("/sys/") {
            return Err(format!("line {}: reads /sys: {line}", n + 1));
        }
        let mut rest = line;
        let (mut quoted, mut escaped) = (false, false);
        let mut word_start = true;
        while let Some(c) = rest.chars().next() {
            if !quoted && !escaped && word_start {
                if let Some(after) = rest.strip_prefix("ip -n ") {
                    let name = shell_word(after);
                    out.push_str(&format!("nsenter --net=/run/netns/{name} ip"));
                    rest = &after[name.len()..];
                    word_start = false;
                    continue;
                }
                if let Some(after) = rest.strip_prefix("ip netns exec ") {
                    let name = shell_word(after);
                    let tail = &after[name.len()..];
                    if !tail.starts_with(" sysctl ") {
                        return Err(format!(
                            "line {}: `ip netns exec` of other than sysctl: {line}",
                            n + 1
                        ));
                    }
                    out.push_str(&format!("nsenter --net=/run/netns/{name}"));
                    rest = tail;
                    word_start = false;
                    continue;
                }
            }
            if escaped {
                escaped = false;
            } else if c == '\'' {
                quoted = !quoted;
            } else if c == '\\' && !quoted {
                escaped = true;
            }
            word_start = !quoted && (c.is_whitespace() || "(;&|`".contains(c));
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out.push('\n');
    }
    Ok(out)
}

/// The rewrite's cases, checked at startup (a bench has no test harness).
fn check_nsenter_form() {
    let cases = [
        (
            "ip -n a link set lo up && ip -n a -6 addr flush dev lo",
            "nsenter --net=/run/netns/a ip link set lo up && nsenter --net=/run/netns/a ip -6 addr flush dev lo",
        ),
        (
            "ip -n 'a b' addr add 10.0.0.1/16 brd + dev eth0",
            "nsenter --net=/run/netns/'a b' ip addr add 10.0.0.1/16 brd + dev eth0",
        ),
        (
            r"ip -n 'it'\''s' link set 'ip -n x' up",
            r"nsenter --net=/run/netns/'it'\''s' ip link set 'ip -n x' up",
        ),
        (
            "ip -n v link add e type veth peer name eth0 netns 'p q' index 2",
            "nsenter --net=/run/netns/v ip link add e type veth peer name eth0 netns 'p q' index 2",
        ),
        (
            "ip netns exec 'n;1' sysctl -qw net.ipv4.ip_forward=1",
            "nsenter --net=/run/netns/'n;1' sysctl -qw net.ipv4.ip_forward=1",
        ),
        ("ip netns add x", "ip netns add x"),
        ("vip -n x", "vip -n x"),
    ];
    for (from, to) in cases {
        assert_eq!(
            nsenter_form(from).as_deref(),
            Ok(&*format!("{to}\n")),
            "{from}"
        );
    }
    for refused in [
        "ip netns exec x sh -c 'ipvsadm -C'",
        "ip -n x neigh add 1.2.3.4 lladdr \"$(ip netns exec x cat /sys/class/net/a/address)\"",
    ] {
        assert!(nsenter_form(refused).is_err(), "{refused}");
    }
}

/// One baseline's figures: its form, up and down (with the release wait).
struct Baseline {
    form: Form,
    up: Duration,
    down: Duration,
}

struct Row {
    what: String,
    /// Pods in all, for a scale row.
    pods: Option<usize>,
    load: String,
    /// labctl's up and down, or why they failed.
    labctl: Result<(Cost, Cost), String>,
    /// The baselines run, or why a form could not be.
    baselines: Vec<Result<Baseline, String>>,
    /// Mininet's up and down, beside a scale row.
    mininet: Option<Result<(Duration, Duration), String>>,
    /// `labctl up --timings` of the median run: a line per stage.
    stages: String,
}

fn median<T>(mut v: Vec<T>, key: impl Fn(&T) -> Duration) -> T {
    v.sort_by_key(|c| key(c));
    v.swap_remove(v.len() / 2)
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
    forms: &[Form],
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
    let down_path = dir.join("down.sh");
    std::fs::write(&down_path, delete_script(&names)).expect("write the down script");
    // Each form's script, or why it cannot be had.
    let scripts: Vec<(Form, Result<PathBuf, String>)> = forms
        .iter()
        .map(|&form| {
            let text = match form {
                Form::Ip => Ok(script.clone()),
                Form::Nsenter => nsenter_form(&script),
            };
            let path = dir.join(format!("up-{}.sh", form.name()));
            (
                form,
                text.map(|t| {
                    std::fs::write(&path, t).expect("write the up script");
                    path
                }),
            )
        })
        .collect();
    let shell = PathBuf::from("bash");
    let load = load();
    let (mut up, mut down) = (vec![], vec![]);
    let mut bash: Vec<(Vec<Duration>, Vec<Duration>)> = vec![(vec![], vec![]); scripts.len()];
    let mut failed = None;
    for _ in 0..runs {
        let mut args: Vec<String> = vec!["up".into(), "-q".into()];
        if !other_build() {
            // Another build may predate it.
            args.push("--timings".into());
        }
        args.extend(common.iter().cloned());
        args.push(file.clone());
        match try_timed_err(&labctl(), &args) {
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
        for ((_, up_path), (bup, bdown)) in scripts.iter().zip(bash.iter_mut()) {
            let Ok(up_path) = up_path else { continue };
            // Written before the baseline makes anything, removed once it
            // is all gone: a killed run leaves it for the next.
            std::fs::write(stale_list(), names.join("\n")).expect("write the names list");
            let built = try_timed(&shell, &[up_path.to_string_lossy().to_string()]);
            let t = std::time::Instant::now();
            timed(&shell, &[down_path.to_string_lossy().to_string()]);
            labctl::release::wait_let_go(RELEASE_LIMIT)
                .expect("the baseline's namespaces released");
            bdown.push(t.elapsed());
            let _ = std::fs::remove_file(stale_list());
            // Failed, it is still removed first.
            bup.push(built.unwrap_or_else(|e| panic!("baseline: {e}")).wall);
        }
    }
    let baselines = scripts
        .into_iter()
        .zip(bash)
        .map(|((form, path), (bup, bdown))| {
            path.map(|_| Baseline {
                form,
                up: median(bup, |d| *d),
                down: median(bdown, |d| *d),
            })
            .map_err(|e| format!("{} form refused: {e}", form.name()))
        })
        .collect();
    let (labctl, stages) = match failed {
        Some(e) => (Err(e), String::new()),
        None => {
            let (up, stages) = median(up, |(c, _)| c.wall);
            (Ok((up, median(down, |c| c.wall))), stages)
        }
    };
    Row {
        what: what.to_string(),
        pods,
        load,
        labctl,
        baselines,
        mininet: None,
        stages,
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
    check_nsenter_form();
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
        &forms(10),
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
            &forms(per_node * 10),
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
        "{:<40} {:>14} | {:>8} {:>8} {:>7} {:>8} {:>6} | {:>11} {:>9} {:>6} | {:>9}",
        "lab",
        "load",
        "up",
        "(cpu)",
        "bash",
        "bash up",
        "ratio",
        "down --wait",
        "bash down",
        "ratio",
        "peak RSS"
    );
}

/// One row, as soon as it is measured: the first baseline form on it,
/// each further form on a line of its own.
fn print_row(r: &Row) {
    let ok: Vec<&Baseline> = r.baselines.iter().filter_map(|b| b.as_ref().ok()).collect();
    let first = ok.first();
    let form = first.map_or("-", |b| b.form.name());
    let opt = |d: Option<Duration>| d.map(secs).unwrap_or_else(|| "-".into());
    match &r.labctl {
        Err(e) => println!(
            "{:<40} {:>14} | labctl failed | {:>7} {:>8} | {:>9}\n  labctl failed: {e}",
            r.what,
            r.load,
            form,
            opt(first.map(|b| b.up)),
            opt(first.map(|b| b.down))
        ),
        Ok((up, down)) => {
            println!(
                "{:<40} {:>14} | {:>8} {:>8} {:>7} {:>8} {:>6} | {:>11} {:>9} {:>6} | {:>6} MB",
                r.what,
                r.load,
                secs(up.wall),
                secs(up.cpu),
                form,
                opt(first.map(|b| b.up)),
                ratio(first.map(|b| b.up), up.wall),
                secs(down.wall),
                opt(first.map(|b| b.down)),
                ratio(first.map(|b| b.down), down.wall),
                up.max_rss.max(down.max_rss) / 1024,
            );
            // `labctl up --timings`: "STAGE [COUNT] TIME" per line.
            let stages: Vec<String> = r
                .stages
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|l| !l.is_empty())
                .collect();
            if !stages.is_empty() {
                println!("  labctl up by stage: {}", stages.join(", "));
            }
            for b in ok.iter().skip(1) {
                println!(
                    "{:<55} | {:>8} {:>8} {:>7} {:>8} {:>6} | {:>11} {:>9} {:>6} |",
                    format!("  same script, {} form", b.form.name()),
                    "",
                    "",
                    b.form.name(),
                    secs(b.up),
                    ratio(Some(b.up), up.wall),
                    "",
                    secs(b.down),
                    ratio(Some(b.down), down.wall),
                );
            }
            match &r.mininet {
                Some(Ok((mup, mdown))) => println!(
                    "{:<55} | {:>8} {:>8} {:>7} {:>8} {:>6} | {:>11} {:>9} {:>6} |",
                    "  same shape in Mininet (lxbr, own netns)",
                    "",
                    "",
                    "mininet",
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
    for e in r.baselines.iter().filter_map(|b| b.as_ref().err()) {
        println!("  baseline {e}");
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
