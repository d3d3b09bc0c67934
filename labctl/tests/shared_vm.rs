//! A shared VM (`labctl vm start`) from the host: two labs brought up at
//! once both go into it, no VM of their own (the agent serves both
//! requests side by side); `down` of one leaves the other and the VM up;
//! `labctl vm stop` stops it and leaves nothing: no QEMU, no directory,
//! no record of the lab that was still inside. Its agent has moved the
//! tools into guest memory meanwhile (`labctl::vm::warm`). A boot whose
//! kernel reports a stalled CPU (a report put in its console here as
//! soon as its QEMU shows) is stopped and booted once more.
//!
//! The trial keeps its shared VM and lab records in directories of its
//! own (`LABCTL_LIB_DIR`, `LABCTL_STATE_DIR`): the shared VM of `./lab
//! test`, which the other VM trials use, is not touched. Without root the
//! trial is ignored; without a VM kernel too, with the reason (a failure
//! under `LABCTL_REQUIRE_ALL=1`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ensure, ok, run, text};
use libtest_mimic::{Arguments, Failed, Trial};

mod common;

const POD: &str = "centos-znkl8";
const SCENARIO: &str = "t5-cluster-ip-same-eni";

fn topology() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/terway-ipvlan-ebpf.yaml")
}

fn kernel() -> Result<String, String> {
    labctl::vm::choose(std::env::var("LABCTL_KERNEL").ok().as_deref())
        .map(|k| k.release)
        .map_err(|e| format!("shared VMs need a VM kernel: {e}"))
}

/// The trial's own lib and state directories, removed (the VM stopped
/// first) however it ends.
struct Scratch {
    root: PathBuf,
    kernel: String,
}

impl Scratch {
    fn new(kernel: &str) -> Result<Scratch, Failed> {
        // Short: QEMU's socket paths under it must fit in sun_path.
        let root = PathBuf::from(format!("/tmp/lcsv{}", std::process::id()));
        std::fs::create_dir_all(root.join("lib"))?;
        std::fs::create_dir_all(root.join("state"))?;
        Ok(Scratch {
            root,
            kernel: kernel.into(),
        })
    }

    fn labctl(&self) -> Command {
        let mut c = common::labctl_here();
        c.env("LABCTL_LIB_DIR", self.root.join("lib"))
            .env("LABCTL_STATE_DIR", self.root.join("state"));
        c
    }

    fn shared_dir(&self) -> PathBuf {
        self.root.join("lib/vm-shared").join(&self.kernel)
    }

    /// `labctl vm status -o json`'s entry for our kernel.
    fn status(&self) -> Result<Option<serde_json::Value>, Failed> {
        let o = ok(self.labctl().args(["vm", "status", "-o", "json"]))?;
        let all: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        Ok(all
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["release"] == self.kernel.as_str())
            .cloned())
    }

    /// The QEMU processes started for our directory.
    fn qemus(&self) -> Vec<u32> {
        let want = self.root.to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c);
                    let argv0 = c.split('\0').next().unwrap_or_default();
                    Path::new(argv0)
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("qemu-system"))
                        && c.contains(&want)
                })
            })
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self
            .labctl()
            .args(["vm", "stop", "-q", "--kernel", &self.kernel])
            .output();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn two_labs_share_one_vm() -> Result<(), Failed> {
    let kernel = kernel()?;
    let s = Scratch::new(&kernel)?;
    let t = Instant::now();
    // The first boot's console gets an RCU stall report once its guest's
    // init is running, the line a guest stuck under emulation prints:
    // `vm start` stops that boot, boots once more, says so with the
    // console's last lines, and is up. QEMU writes the console at its
    // own offset (it opens the file itself, truncating it), so a line
    // put after its end can be written over: the report is put there
    // again every 50 ms for as long as that boot's QEMU runs.
    let mut start = s
        .labctl()
        .args(["vm", "start", "-q", "--kernel", &kernel])
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let console = s.shared_dir().join("console.log");
    let first = loop {
        let init =
            std::fs::read_to_string(&console).is_ok_and(|text| text.contains("virtme-ng-init: "));
        if let (true, Some(&pid)) = (init, s.qemus().first()) {
            break pid;
        }
        ensure(
            t.elapsed() < Duration::from_secs(120) && start.try_wait()?.is_none(),
            "no guest init on the console within two minutes of `vm start`",
        )?;
        std::thread::sleep(Duration::from_millis(20));
    };
    while s.qemus().contains(&first) && start.try_wait()?.is_none() {
        use std::io::Write;
        if let Ok(mut log) = std::fs::OpenOptions::new().append(true).open(&console) {
            let _ = log.write_all(
                b"[   23.394802] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n",
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = start.wait_with_output()?;
    let said = String::from_utf8_lossy(&o.stderr);
    ensure(
        o.status.success()
            && said.contains(
                "the VM's kernel reported a stalled CPU while it booted; booting it again\n  \
                 its console's last lines:",
            ),
        format!(
            "`vm start` with a stall in its first console: {}, said:\n{said}",
            o.status
        ),
    )?;
    ensure(
        s.qemus().len() == 1 && !s.qemus().contains(&first),
        format!("QEMUs after the second boot: {:?}", s.qemus()),
    )?;
    eprintln!(
        "shared VM with {kernel} up in {:.1?}, its first boot stopped for a stall",
        t.elapsed()
    );
    let st = s.status()?.ok_or("`vm status` does not list the VM")?;
    ensure(st["ready"] == true, format!("not ready: {st}"))?;
    ensure(s.qemus().len() == 1, format!("QEMUs: {:?}", s.qemus()))?;
    // The QEMU is labctl's own when it has one (`vm install-qemu`), else
    // the system's.
    let exe = std::fs::read_link(format!("/proc/{}/exe", s.qemus()[0]))?;
    match labctl::vm::qemu::binary() {
        Some(own) => ensure(exe == own, format!("QEMU {exe:?}, not labctl's {own:?}"))?,
        None => ensure(
            !exe.starts_with(labctl::vm::qemu::ROOT),
            format!("QEMU {exe:?} though labctl's is not to be used"),
        )?,
    }
    eprintln!("its QEMU: {}", exe.display());
    ensure(
        st["qemu"] == exe.to_string_lossy().as_ref(),
        format!("`vm status` says its QEMU is {}, not {exe:?}", st["qemu"]),
    )?;

    // Two labs at once: the agent takes both requests side by side.
    let (a, b) = (common::unique("sva"), common::unique("svb"));
    let t = Instant::now();
    // The first with `--timings`: its stages inside the VM come out.
    let ups: Vec<_> = [(&a, true), (&b, false)]
        .map(|(lab, timings)| {
            s.labctl()
                .args(["up", "-q", "--kernel", &kernel, "--name", lab])
                .args(timings.then_some("--timings"))
                .arg(topology())
                .stderr(std::process::Stdio::piped())
                .spawn()
        })
        .into_iter()
        .collect::<Result<_, _>>()?;
    let mut said = Vec::new();
    for up in ups {
        let o = up.wait_with_output()?;
        ensure(
            o.status.success(),
            format!(
                "`up` of a lab in the shared VM failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
        )?;
        said.push(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    let stages: Vec<&str> = said[0]
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    ensure(
        ["plan", "namespaces", "links", "settle", "record", "in all"]
            .iter()
            .all(|w| said[0].lines().any(|l| l.starts_with(w)))
            && !stages.contains(&"vm"),
        format!(
            "`up --timings` in the shared VM (no boot of its own) said:\n{}",
            said[0]
        ),
    )?;
    ensure(
        !said[1].contains("namespaces"),
        format!("`up` without `--timings` said: {}", said[1]),
    )?;
    eprintln!("two labs up in the shared VM in {:.1?}", t.elapsed());
    ensure(
        s.qemus().len() == 1,
        format!("a lab booted a VM of its own: QEMUs {:?}", s.qemus()),
    )?;
    let st = s.status()?.ok_or("the VM is gone")?;
    let labs = |st: &serde_json::Value| -> Vec<String> {
        st["labs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(String::from))
            .collect()
    };
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    ensure(labs(&st) == both, format!("labs in the VM: {st}"))?;
    let netns = || -> Result<String, Failed> {
        let o = ok(s.labctl().args([
            "vm", "exec", "--kernel", &kernel, "--", "ip", "netns", "list",
        ]))?;
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let before = netns()?;
    for lab in [&a, &b] {
        ensure(
            before.contains(&format!("{lab}-{POD}")),
            format!("{lab}'s pod is not in the VM: {before}"),
        )?;
    }

    // `down` of one leaves the other, and the VM, up.
    ok(s.labctl().args(["down", "-q", &a]))?;
    let st = s.status()?.ok_or("`down` of a lab stopped the shared VM")?;
    ensure(st["ready"] == true, format!("not ready after a down: {st}"))?;
    ensure(labs(&st) == [b.clone()], format!("labs after down: {st}"))?;
    let after = netns()?;
    ensure(
        !after.contains(&format!("{a}-")) && after.contains(&format!("{b}-{POD}")),
        format!("namespaces in the VM after `down {a}`:\n{after}"),
    )?;
    // The other lab still works there.
    let o = run(s
        .labctl()
        .args(["run", "--name", &b])
        .arg(topology())
        .arg(SCENARIO));
    ensure(
        o.status.success(),
        format!("run in the shared VM: {}", text(&o)),
    )?;
    ensure(s.qemus().len() == 1, "`run` booted a VM")?;

    // The agent moved the tools into guest memory (labctl::vm::warm) and
    // said how many files it copied: `ip`, its libraries, the loader and
    // the shells at least, unless the run asked for the cold VM.
    if std::env::var("LABCTL_VM_WARM").as_deref() != Ok("0") {
        let log = s.shared_dir().join("console.log");
        let deadline = Instant::now() + Duration::from_secs(120);
        let copied = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let n = text.lines().find_map(|l| {
                l.strip_prefix("labctl agent: ")?
                    .split_once(" files of the tools moved into guest memory")?
                    .0
                    .parse::<usize>()
                    .ok()
            });
            if n.is_some() || Instant::now() > deadline {
                break n;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        eprintln!("files moved into guest memory: {copied:?}");
        ensure(
            copied.is_some_and(|n| n >= 10),
            format!("the agent moved {copied:?} files into guest memory (see {log:?})"),
        )?;
    }

    // `vm stop` with a lab still inside: nothing is left.
    ok(s.labctl().args(["vm", "stop", "-q", "--kernel", &kernel]))?;
    ensure(
        s.qemus().is_empty(),
        format!("QEMU still runs: {:?}", s.qemus()),
    )?;
    ensure(
        !s.shared_dir().exists(),
        format!("{} is still there", s.shared_dir().display()),
    )?;
    ensure(s.status()?.is_none(), "`vm status` still lists it")?;
    let o = run(s.labctl().args(["status", &b]));
    ensure(
        o.status.code() == Some(3),
        format!("lab {b} outlived its VM: {}", text(&o)),
    )?;
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let kind = kernel().map_or("nowhere".into(), |k| format!("vm {k}"));
    let trial = Trial::ignorable_test("two_labs_share_one_vm", move || match kernel() {
        Err(why) if nix::unistd::geteuid().is_root() => common::ignored(why),
        _ => common::gate(two_labs_share_one_vm),
    })
    .with_kind(kind);
    libtest_mimic::run(&args, vec![trial]).exit();
}
