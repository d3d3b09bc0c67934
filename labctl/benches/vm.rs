//! The VM runtime's overhead, next to the host in the same run: how long a
//! VM takes to boot with the Flannel lab inside (`labctl up --vm`), and how
//! long one scenario takes on the host and in the VM. Needs root and an
//! installed VM kernel (`labctl kernel install debian`).
//!
//! Run: `cargo bench -p labctl --bench vm`.

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
    let scenario = "f2-pod-ip-other-node";
    let runs = 3;
    let (mut host_up, mut vm_up, mut host_run, mut vm_run, mut host_down, mut vm_down) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        host_up.push(timed(
            labctl().args(["up", "-q", "--name", "bhost"]).arg(&file),
        ));
        host_run.push(timed(
            labctl()
                .args(["run", "--name", "bhost"])
                .arg(&file)
                .arg(scenario),
        ));
        host_down.push(timed(labctl().args(["down", "-q", "bhost"])));
        vm_up.push(timed(
            labctl()
                .args(["up", "-q", "--kernel", &kernel, "--name", "bvm"])
                .arg(&file),
        ));
        vm_run.push(timed(
            labctl()
                .args(["run", "--name", "bvm"])
                .arg(&file)
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
    println!(
        "VM kernel {kernel} (TCG{}), host kernel {}, median of {runs}",
        if labctl::vm::kvm_usable() { "/KVM" } else { "" },
        labctl::features::kernel_release()
    );
    println!("{:<34} {:>10} {:>12} {:>11}", "", "host", "vm", "vm/host");
    row("up (vm: boot + up inside)", host_up, vm_up);
    row(&format!("run {scenario}"), host_run, vm_run);
    row("down (vm: down + power off)", host_down, vm_down);
}
