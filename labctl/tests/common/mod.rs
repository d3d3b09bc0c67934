//! Shared by the privileged test binaries: run a trial as root, or report it
//! ignored with the reason. `LABCTL_REQUIRE_ALL=1` (set by `./lab test`, so
//! by CI) turns such an ignore into a failure.

#![allow(
    dead_code,
    reason = "each test binary includes this module and uses a different part of it"
)]

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use libtest_mimic::{Completion, Failed};

pub fn gate(f: impl FnOnce() -> Result<(), Failed>) -> Result<Completion, Failed> {
    if !nix::unistd::geteuid().is_root() {
        return ignored("needs root: creates network namespaces");
    }
    f().map(|()| Completion::Completed)
}

/// Report the trial ignored with `reason`, or fail it under
/// `LABCTL_REQUIRE_ALL=1`.
pub fn ignored(reason: impl Into<String>) -> Result<Completion, Failed> {
    let reason = reason.into();
    if std::env::var("LABCTL_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        return Err(format!("{reason}, and LABCTL_REQUIRE_ALL=1 forbids ignoring it").into());
    }
    Ok(Completion::ignored_with(reason))
}

/// Run a command to completion.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

/// A command's outcome, for failure messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run a command that must succeed.
pub fn ok(cmd: &mut Command) -> Result<Output, Failed> {
    let o = run(cmd);
    if o.status.success() {
        Ok(o)
    } else {
        Err(format!("{cmd:?} failed: {}", text(&o)).into())
    }
}

/// Fail the trial with `msg` unless `cond`.
pub fn ensure(cond: bool, msg: impl Into<String>) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(msg.into().into()) }
}

/// Fail the trial unless the command exited with `code` and its stderr
/// contains `needle`.
pub fn fails_with(o: &Output, code: i32, needle: &str) -> Result<(), Failed> {
    ensure(
        o.status.code() == Some(code) && String::from_utf8_lossy(&o.stderr).contains(needle),
        format!(
            "want exit code {code} and `{needle}` on stderr, got {}",
            text(o)
        ),
    )
}

/// Inside a VM of [`in_vm`]: the copy of labctl to run.
const LABCTL_ENV: &str = "LABCTL_TEST_LABCTL";

/// The labctl under test: the copy named in `LABCTL_TEST_LABCTL` inside a
/// VM of [`in_vm`], else the one cargo built. The environment is passed
/// through, `LABCTL_KERNEL` too (see [`labctl_here`]).
pub fn labctl() -> Command {
    let exe = std::env::var_os(LABCTL_ENV)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_labctl").into());
    Command::new(exe)
}

/// [`labctl`] on the kernel this process runs on, whatever `LABCTL_KERNEL`
/// says: for trials that decided where they run already, or that read a
/// lab's namespaces from here, so labctl must not boot a VM of its own.
pub fn labctl_here() -> Command {
    let mut c = labctl();
    c.env_remove("LABCTL_KERNEL");
    c
}

/// A name no other trial of this run uses, short enough for an interface
/// name or a lab name with a short `tag`: `tPID-TAG`.
pub fn unique(tag: &str) -> String {
    format!("t{}-{tag}", std::process::id() % 100_000)
}

/// A lab brought up for a trial and removed (`labctl down`) however the
/// trial ends.
pub struct Down(pub String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = labctl().args(["down", "-q", &self.0]).output();
    }
}

/// Run trial `name` of the calling test binary inside a VM booted from
/// `kernel`, after the shell commands `prelude`, with `LABCTL_IN_VM=1`;
/// its stdout when the trial passed there. The VM sees the host's files
/// read-only: it runs copies of the binary (and, with `with_labctl`, of
/// labctl, named in `LABCTL_TEST_LABCTL`) that a rebuild on the host cannot
/// replace under it. The VM is killed after ten minutes.
pub fn in_vm(kernel: &str, name: &str, prelude: &str, with_labctl: bool) -> Result<String, Failed> {
    let limit = std::time::Duration::from_secs(600);
    let args = format!("--exact {name}");
    let (passed, out) = in_vm_args(kernel, name, &args, prelude, with_labctl, limit)?;
    if passed && out.contains("1 passed") {
        Ok(out)
    } else {
        Err(format!("in the VM ({kernel}): {out}").into())
    }
}

/// Run the calling test binary with the libtest arguments `args` (a
/// filter, `--skip`s) inside one VM, as [`in_vm`] does for one trial:
/// whether the run passed and its output, for the caller to read each
/// trial's line from. `tag` names the copies. Several trials in one boot:
/// a boot is slow (software emulation). The VM is killed after `limit`.
pub fn in_vm_args(
    kernel: &str,
    tag: &str,
    args: &str,
    prelude: &str,
    with_labctl: bool,
    limit: std::time::Duration,
) -> Result<(bool, String), Failed> {
    struct Remove(Vec<std::path::PathBuf>);
    impl Drop for Remove {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    let dir = labctl::vm::lib_dir().join("vm");
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe()?;
    let stem = exe
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let copy = dir.join(format!("{stem}-{}-{tag}", std::process::id()));
    let labctl_copy = dir.join(format!("{stem}-{}-{tag}-labctl", std::process::id()));
    let _remove = Remove(vec![copy.clone(), labctl_copy.clone()]);
    std::fs::copy(&exe, &copy)?;
    let mut env = String::from("LABCTL_IN_VM=1");
    if with_labctl {
        std::fs::copy(env!("CARGO_BIN_EXE_labctl"), &labctl_copy)?;
        env.push_str(&format!(" {LABCTL_ENV}={}", labctl_copy.display()));
    }
    if shared_vm_ready(kernel) {
        // The shared VM of `./lab test` (`labctl vm start`), no boot. The
        // run gets a mount namespace of its own with empty /run/netns and
        // /run/labctl: the namespaces and labs it makes are named only
        // there, so what a killed run leaves cannot collide with a later
        // run's (a pid, and so `unique`, repeats) or anyone's labs, and
        // goes away with it. `exec`: the agent's kill reaches the binary.
        let script = format!(
            "{prelude} mkdir -p /run/netns /run/labctl && \
             mount -t tmpfs labctl-test /run/netns && \
             mount -t tmpfs labctl-test /run/labctl && \
             exec env {env} {} {args}",
            copy.display()
        );
        let mut cmd = labctl_here();
        cmd.args(["vm", "exec", "--kernel", kernel, "--timeout"])
            .arg(limit.as_secs().to_string())
            .args(["--", "unshare", "-m", "--propagation", "private"])
            .args(["sh", "-c", &script]);
        return run_bounded(&mut cmd, kernel, &copy, limit);
    }
    // As labctl boots its own VMs.
    let mut cmd = labctl::vm::vng(kernel);
    cmd.arg("--exec")
        .arg(format!("{prelude} {env} {} {args}", copy.display()));
    run_bounded(&mut cmd, kernel, &copy, limit)
}

/// Whether a shared VM with `kernel` is up and takes labs from this
/// labctl build (`labctl vm status`).
pub fn shared_vm_ready(kernel: &str) -> bool {
    let Ok(o) = labctl_here().args(["vm", "status", "-o", "json"]).output() else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .is_some_and(|vms| {
            vms.iter()
                .any(|v| v["release"] == kernel && v["ready"] == true)
        })
}

/// Run `cmd` (a VM run of a test binary copied to `copy`) in a process
/// group of its own, killed after `limit`: whether it passed and its
/// output.
fn run_bounded(
    cmd: &mut Command,
    kernel: &str,
    copy: &std::path::Path,
    limit: std::time::Duration,
) -> Result<(bool, String), Failed> {
    use std::time::Instant;
    struct Remove(Vec<std::path::PathBuf>);
    impl Drop for Remove {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    // Output to files: a pipe nobody reads while waiting could fill up.
    let out_path = copy.with_extension("out");
    let err_path = copy.with_extension("err");
    let _remove_out = Remove(vec![out_path.clone(), err_path.clone()]);
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .process_group(0)
        .spawn()?;
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if t.elapsed() > limit {
            labctl::vm::kill_group(child.id());
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok((true, out)),
        Some(s) => Ok((false, format!("{s}:\n{out}{err}"))),
        None => Err(format!(
            "in the VM ({kernel}): still running after {limit:?}; killed:\n{out}{err}"
        )
        .into()),
    }
}

/// Where a trial that needs a lab's kernel features runs.
#[derive(Clone)]
pub enum Place {
    /// On the kernel this process runs on.
    Here,
    /// In a VM with this installed kernel release.
    Vm(String),
    /// Cannot run here; the reason.
    Nowhere(String),
}

impl Place {
    /// The trial kind libtest-mimic prints: where it ran.
    pub fn kind(&self) -> String {
        match self {
            Place::Here => format!("here {}", labctl::features::kernel_release()),
            Place::Vm(k) => format!("vm {k}"),
            Place::Nowhere(_) => "nowhere".into(),
        }
    }
}

/// Where trials needing `lab`'s kernel features run: inside our own VM
/// (`LABCTL_IN_VM`) here; with `LABCTL_KERNEL` in a VM with that kernel;
/// without root here (the root gate reports them ignored); else here if
/// the host kernel has every feature, in a VM if one is installed, or
/// nowhere with the reason.
pub fn place_for(lab: &labctl::Lab) -> Place {
    use labctl::{features, vm};
    if std::env::var_os("LABCTL_IN_VM").is_some() {
        return Place::Here;
    }
    if let Ok(k) = std::env::var("LABCTL_KERNEL") {
        return match vm::choose(Some(&k)) {
            Ok(k) => Place::Vm(k.release),
            Err(e) => Place::Nowhere(e.to_string()),
        };
    }
    if !nix::unistd::geteuid().is_root() {
        return Place::Here;
    }
    let missing: Vec<String> = match features::probe(&features::required(lab)) {
        Ok(p) => p
            .into_iter()
            .filter(|p| !p.present)
            .map(|p| p.feature.to_string())
            .collect(),
        Err(e) => return Place::Nowhere(format!("probe kernel features: {e}")),
    };
    if missing.is_empty() {
        return Place::Here;
    }
    match vm::choose(None) {
        Ok(k) => Place::Vm(k.release),
        Err(e) => Place::Nowhere(format!(
            "the host kernel lacks {} and {e}",
            missing.join(", ")
        )),
    }
}

/// A trial on a topology's lab: run where [`place_for`] put the lab,
/// ignored with the reason where it cannot run. With `host_only`, a lab
/// that would run in a VM is ignored with that reason instead (trials that
/// read its namespaces from the host).
pub fn placed_trial(
    place: &Place,
    host_only: Option<&'static str>,
    name: &'static str,
    f: fn() -> Result<(), Failed>,
) -> libtest_mimic::Trial {
    let place = place.clone();
    let kind = place.kind();
    libtest_mimic::Trial::ignorable_test(name, move || match (place, host_only) {
        (Place::Nowhere(why), _) => ignored(why),
        (Place::Vm(_), Some(why)) => ignored(why),
        _ => gate(f),
    })
    .with_kind(kind)
}
