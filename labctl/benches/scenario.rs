//! Where a host scenario's time goes: each scenario of the labs that run on
//! the host kernel, split into set-up, traffic, capture and teardown as
//! [`labctl::scenario::Timings`] measures them, and its fixed overhead
//! (everything but the traffic; issue 17's target is at most 60 ms). Then
//! the wall time of `labctl run topologies/flannel.yaml --var services=off`
//! (up, 4 scenarios, down; target at most 0.8 s), next to `labctl up` and
//! `labctl down` of the same lab in the same run: what the scenarios add.
//! The baseline, in the same run: one scenario (Flannel's F2 over HTTP)
//! done by hand with the usual tools, a `tcpdump` on every interface of
//! every namespace (started, each waited for until it listens), `curl`
//! from the client's namespace, every `tcpdump` stopped; beside labctl's
//! whole run of that scenario, and the ratio.
//! Figures are printed, never asserted: machines here are shared and noisy,
//! so each is the median of several runs, with the load average printed.
//! Needs root, and tcpdump and curl for the baseline.
//!
//! Run: `cargo bench -p labctl --bench scenario` (`-- --runs N`, default 5).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use labctl::scenario::{self, RunOptions, Timings};

fn topo(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../topologies")
        .join(name)
}

fn labctl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_labctl"));
    c.env_remove("LABCTL_KERNEL");
    c
}

fn timed(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let o = cmd.output().expect("spawn labctl");
    let d = t.elapsed();
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    d
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A lab name of this process's own, so benches never meet other labs.
fn lab_name(n: usize) -> String {
    format!("bsc{}-{n}", std::process::id() % 10_000)
}

/// Per scenario of `file` (built with `vars`), its timings in each of
/// `runs` runs on one lab, in the file's order.
fn split(file: &Path, vars: &[&str], runs: usize, n: usize) -> Vec<(String, Vec<Timings>)> {
    let name = lab_name(n);
    let var_args: Vec<&str> = vars.iter().flat_map(|v| ["--var", v]).collect();
    timed(
        labctl()
            .args(["up", "-q", "--name", &name])
            .args(&var_args)
            .arg(file),
    );
    let values = vars
        .iter()
        .filter_map(|v| v.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lab = labctl_topology::load(file, &values).expect("topology loads");
    let record = labctl::state::load(&name)
        .expect("lab state")
        .expect("lab is up");
    let mut out: Vec<(String, Vec<Timings>)> = lab
        .scenarios
        .iter()
        .map(|s| (s.name.clone(), Vec::new()))
        .collect();
    for _ in 0..runs {
        for (sc, (_, times)) in lab.scenarios.iter().zip(out.iter_mut()) {
            let report = scenario::run(&record, &lab, sc, &RunOptions::default())
                .unwrap_or_else(|e| panic!("{}: {e}", sc.name));
            assert!(report.passed, "{}", report.render());
            times.push(report.timings);
        }
    }
    timed(labctl().args(["down", "-q", &name]));
    out
}

/// The baseline: `tcpdump -i IF` in every namespace of the lab for every
/// interface, `curl` from `from` to `url` once all listen, then each
/// tcpdump stopped (SIGINT) and waited for.
fn by_hand(namespaces: &[String], from: &str, url: &str) -> (Duration, usize) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let t = Instant::now();
    let mut dumps = Vec::new();
    for ns in namespaces {
        let links = Command::new("ip")
            .args(["-n", ns, "-o", "link", "show"])
            .output()
            .expect("ip link");
        for line in String::from_utf8_lossy(&links.stdout).lines() {
            let Some(name) = line.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or(name);
            let mut child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns,
                    "tcpdump",
                    "-i",
                    name,
                    "-nn",
                    "-w",
                    "/dev/null",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("tcpdump");
            let err = child.stderr.take().expect("stderr");
            dumps.push((child, BufReader::new(err)));
        }
    }
    for (_, err) in &mut dumps {
        let mut line = String::new();
        while err.read_line(&mut line).unwrap_or(0) > 0 && !line.contains("listening on") {
            line.clear();
        }
    }
    let curl = Command::new("ip")
        .args(["netns", "exec", from, "curl", "-s", "-o", "/dev/null", url])
        .status()
        .expect("curl");
    assert!(curl.success(), "curl {url} from {from}");
    for (child, _) in &dumps {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
    }
    let count = dumps.len();
    for (mut child, _) in dumps {
        let _ = child.wait();
    }
    (t.elapsed(), count)
}

fn main() {
    // `cargo test --benches` passes nothing; `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("scenario: benchmark only runs under `cargo bench`");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("scenario: needs root (it builds real labs); run it with sudo");
        std::process::exit(1);
    }
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(5usize)
        .max(1);
    println!(
        "host kernel {}, load average {} at the start, median of {runs} runs",
        labctl::features::kernel_release(),
        load_average()
    );
    let labs: [(&str, &[&str]); 3] = [
        ("kata-peer-pods.yaml", &[]),
        ("cilium-host-routing.yaml", &[]),
        ("flannel.yaml", &["services=off"]),
    ];
    println!();
    println!(
        "{:<48} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "scenario (ms)", "set-up", "traffic", "capture", "teardown", "overhead"
    );
    let mut overheads = Vec::new();
    for (n, (file, vars)) in labs.iter().enumerate() {
        let stem = file.trim_end_matches(".yaml");
        for (name, times) in split(&topo(file), vars, runs, n) {
            let pick = |f: fn(&Timings) -> Duration| median(times.iter().map(f).collect());
            let overhead = pick(Timings::overhead);
            overheads.push(overhead);
            println!(
                "{:<48} {:>8} {:>8} {:>8} {:>9} {:>9}",
                format!("{stem}/{name}"),
                ms(pick(|t| t.set_up)),
                ms(pick(|t| t.traffic)),
                ms(pick(|t| t.capture)),
                ms(pick(|t| t.teardown)),
                ms(overhead),
            );
        }
    }
    overheads.sort();
    println!(
        "fixed overhead per host scenario: median {} ms, worst {} ms (target: at most 60 ms)",
        ms(median(overheads.clone())),
        ms(*overheads.last().expect("scenarios ran")),
    );

    // The baseline: F2 over HTTP by hand, and the same scenario by labctl.
    let file = topo("flannel.yaml");
    let name = lab_name(8);
    let vars = ["--var", "services=off"];
    timed(
        labctl()
            .args(["up", "-q", "--name", &name])
            .args(vars)
            .arg(&file),
    );
    let record = labctl::state::load(&name)
        .expect("lab state")
        .expect("lab is up");
    let values = [("services".to_string(), "off".to_string())].into();
    let lab = labctl_topology::load(&file, &values).expect("topology loads");
    let f2 = lab
        .scenarios
        .iter()
        .find(|s| s.name == "f2-pod-ip-other-node")
        .expect("flannel has F2");
    let namespaces: Vec<String> = record.namespaces.iter().map(|n| n.name.clone()).collect();
    let client = record.netns_of(&f2.from).expect("F2's client").name.clone();
    let url = format!("http://{}:{}/", f2.target, f2.port.unwrap_or(80));
    let (mut ours, mut theirs, mut dumps) = (Vec::new(), Vec::new(), 0);
    for _ in 0..runs {
        let t = Instant::now();
        let report = scenario::run(&record, &lab, f2, &RunOptions::default()).expect("F2 runs");
        labctl::observe::capture::wait_closed();
        ours.push(t.elapsed());
        assert!(report.passed, "{}", report.render());
        let (took, count) = by_hand(&namespaces, &client, &url);
        theirs.push(took);
        dumps = count;
    }
    timed(labctl().args(["down", "-q", &name]));
    let (ours, theirs) = (median(ours), median(theirs));
    println!(
        "F2 over HTTP by hand ({dumps} tcpdumps, curl): {} ms; by labctl (taps closed too): {} ms; {:.1}x faster",
        ms(theirs),
        ms(ours),
        theirs.as_secs_f64() / ours.as_secs_f64()
    );

    // The whole command, as a user waits for it; `up` and `down` alone
    // beside it show what the four scenarios add.
    let name = lab_name(9);
    let (mut run, mut up, mut down) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        run.push(timed(
            labctl()
                .args(["run", "-o", "json", "--name", &name])
                .args(vars)
                .arg(&file),
        ));
        up.push(timed(
            labctl()
                .args(["up", "-q", "--name", &name])
                .args(vars)
                .arg(&file),
        ));
        down.push(timed(labctl().args(["down", "-q", &name])));
    }
    let (run, up, down) = (median(run), median(up), median(down));
    let s = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    println!();
    println!(
        "labctl run flannel.yaml --var services=off: {} (target: at most 0.8 s); \
         up {} + down {} alone: {}, so 4 scenarios {}, {:.1}x up+down",
        s(run),
        s(up),
        s(down),
        s(up + down),
        s(run.saturating_sub(up + down)),
        run.as_secs_f64() / (up + down).as_secs_f64()
    );
    println!("load average {} at the end", load_average());
}
