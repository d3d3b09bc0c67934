//! How long `labctl up` and `labctl down` take, for the Flannel lab and for
//! a generated lab of 1,000 pods on 10 nodes, each next to its baseline: the
//! same lab built by a bash script of `ip` commands (what `labctl plan -o
//! script` prints) and removed by `ip netns delete`. Machines here are shared
//! and noisy, so baseline and labctl run in the same process, alternately,
//! and the ratio is what to read. Needs root.
//!
//! Run: `cargo bench -p labctl --bench updown` (`-- --quick` skips the
//! baseline of the big lab, which takes about 40 s).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn topo(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../topologies")
        .join(name)
}

fn timed(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let o = cmd.output().expect("spawn");
    let d = t.elapsed();
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    d
}

fn labctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_labctl"))
}

struct Row {
    what: String,
    labctl_up: Duration,
    labctl_down: Duration,
    bash_up: Option<Duration>,
    bash_down: Option<Duration>,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn measure(what: &str, file: &Path, vars: &[&str], runs: usize, baseline: bool) -> Row {
    let name = "bench";
    let var_args: Vec<String> = vars
        .iter()
        .flat_map(|v| ["--var".into(), v.to_string()])
        .collect();
    let (mut up, mut down, mut bup, mut bdown) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        up.push(timed(
            labctl()
                .args(["up", "-q", "--name", name])
                .args(&var_args)
                .arg(file),
        ));
        down.push(timed(labctl().args(["down", "-q", name])));
        if baseline {
            let script = labctl()
                .args(["plan", "-o", "script", "--name", name])
                .args(&var_args)
                .arg(file)
                .output()
                .expect("plan");
            let path = std::env::temp_dir().join("labctl-bench-baseline.sh");
            std::fs::write(&path, &script.stdout).expect("write script");
            bup.push(timed(Command::new("bash").arg(&path)));
            let namespaces: Vec<String> = String::from_utf8_lossy(&script.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("ip netns add "))
                .map(String::from)
                .collect();
            let del: String = namespaces
                .iter()
                .map(|n| format!("ip netns delete {n}\n"))
                .collect();
            std::fs::write(&path, del).expect("write script");
            bdown.push(timed(Command::new("bash").arg(&path)));
        }
    }
    Row {
        what: what.to_string(),
        labctl_up: median(up),
        labctl_down: median(down),
        bash_up: baseline.then(|| median(bup)),
        bash_down: baseline.then(|| median(bdown)),
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("updown: needs root (it builds real labs); run it with sudo");
        std::process::exit(1);
    }
    // `cargo test --benches` passes nothing; `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("updown: benchmark only runs under `cargo bench`");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let rows = [
        measure(
            "flannel (10 namespaces)",
            &topo("flannel.yaml"),
            &[],
            5,
            true,
        ),
        measure(
            "scale: 10 nodes x 100 pods (1,012 namespaces)",
            &topo("scale.yaml"),
            &["nodes=10", "pods=100"],
            if quick { 1 } else { 3 },
            !quick,
        ),
    ];
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let ratio = |base: Option<Duration>, ours: Duration| {
        base.map(|b| format!("{:.1}x faster", b.as_secs_f64() / ours.as_secs_f64()))
            .unwrap_or_else(|| "-".into())
    };
    println!();
    println!(
        "{:<48} {:>10} {:>10} {:>14} | {:>10} {:>10} {:>14}",
        "lab", "up", "bash up", "", "down", "bash down", ""
    );
    for r in rows {
        println!(
            "{:<48} {:>10} {:>10} {:>14} | {:>10} {:>10} {:>14}",
            r.what,
            ms(r.labctl_up),
            r.bash_up.map(ms).unwrap_or_else(|| "-".into()),
            ratio(r.bash_up, r.labctl_up),
            ms(r.labctl_down),
            r.bash_down.map(ms).unwrap_or_else(|| "-".into()),
            ratio(r.bash_down, r.labctl_down),
        );
    }
    println!("targets: 1,000-pod lab up < 3 s, down < 1 s on a 2-core machine");
}
