//! Bringing a lab up and down: lock, record, create, configure; and the
//! reverse. The executor runs a [`Plan`] phase by phase against any
//! [`Kernel`], so its ordering and error handling are tested with the
//! recording fake.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use labctl_topology::Lab;

use crate::kernel::{Kernel, KernelError, Netlink};
use crate::plan::{Phase, Plan, plan};
use crate::serve::{self, ServeError};
use crate::state::{self, LabState, ServeState, StateError};
use crate::sys;

/// How many kernel requests are in flight at once.
const IN_FLIGHT: usize = 512;
/// How long `down` waits for killed processes to leave the lab's namespaces.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Why `up` or `down` failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    State(#[from] StateError),
    #[error(
        "lab `{lab}` is already up{partly}; run `labctl down {lab}` first (or pick another `name:`)"
    )]
    AlreadyUp { lab: String, partly: &'static str },
    #[error("lab `{0}` is not up (`labctl status` lists the labs that are)")]
    NotUp(String),
    #[error(
        "network namespace `{0}` already exists and was not made by this lab; remove it (`ip netns delete {0}`) or rename the lab"
    )]
    Conflict(String),
    #[error("labctl needs root to create network namespaces; run it with sudo")]
    NotRoot,
    #[error("prepare {dir}: {source}")]
    RunDir {
        dir: &'static str,
        source: std::io::Error,
    },
    #[error("VM runtime: {0}")]
    Vm(String),
    #[error("services need kernel modules: {0}")]
    Modules(String),
    #[error("start the netlink runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{} kernel action(s) failed (the lab was removed again):\n  {}", .0.len(), join(.0))]
    Apply(Vec<KernelError>),
    #[error("{0} (the lab was removed again)")]
    Serve(ServeError),
    #[error("eBPF load balancer: {0} (the lab was removed again)")]
    Ebpf(String),
    #[error("removing the lab left {} error(s):\n  {}", .0.len(), join(.0))]
    Teardown(Vec<KernelError>),
}

fn join(errors: &[KernelError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// Progress reporting for `up`; the CLI draws it, tests ignore it.
pub trait Progress {
    fn stage(&self, _what: &str, _total: usize) {}
    fn advance(&self, _n: usize) {}
}

/// No progress display.
pub struct Quiet;
impl Progress for Quiet {}

/// Timings of one `up`.
#[derive(Debug, Clone, Default)]
pub struct UpReport {
    pub namespaces: usize,
    pub actions: usize,
    pub elapsed: Duration,
}

/// Bring a lab up on the host kernel.
pub fn up(
    lab: &Lab,
    file: Option<&Path>,
    progress: &dyn Progress,
) -> Result<UpReport, EngineError> {
    if !sys::is_root() {
        return Err(EngineError::NotRoot);
    }
    let start = Instant::now();
    let plan = plan(lab);
    let _lock = state::lock(&lab.name)?;
    if let Some(existing) = state::load(&lab.name)? {
        return Err(EngineError::AlreadyUp {
            lab: lab.name.clone(),
            partly: if existing.complete {
                ""
            } else {
                " (partly: an earlier `up` did not finish)"
            },
        });
    }
    if let Some(ns) = plan
        .namespaces
        .iter()
        .find(|ns| sys::netns_path(&ns.name).exists())
    {
        return Err(EngineError::Conflict(ns.name.clone()));
    }
    sys::prepare_run_dir().map_err(|source| EngineError::RunDir {
        dir: sys::NETNS_RUN_DIR,
        source,
    })?;
    sys::raise_nofile_limit();
    if !lab.services.is_empty() {
        // IPVS and br_netfilter: the probe loads their modules (nothing
        // else would load br_netfilter) and sees them built in too.
        use crate::features::{Feature, missing_message, probe};
        let modules = [Feature::Ipvs, Feature::BrNetfilter].into_iter().collect();
        let probes = probe(&modules).map_err(|e| EngineError::Modules(e.to_string()))?;
        let missing: Vec<_> = probes.iter().filter(|p| !p.present).collect();
        if !missing.is_empty() {
            return Err(EngineError::Modules(missing_message(&missing)));
        }
    }

    // Record first: from here on, whatever exists is listed for `down`.
    let mut record = LabState::new(&lab.name, file, plan.namespaces.clone());
    state::save(&record)?;
    fault_point("recorded");

    let result = runtime()?.block_on(async {
        let mut kernel = Netlink::new();
        execute(&plan, &mut kernel, progress).await
    });
    if let Err(errors) = result {
        let _ = teardown(&record);
        let _ = state::remove(&lab.name);
        return Err(EngineError::Apply(errors));
    }
    fault_point("configured");
    if lab.ebpf.is_some()
        && let Err(e) = crate::lb::setup(lab)
    {
        let _ = teardown(&record);
        let _ = state::remove(&lab.name);
        return Err(EngineError::Ebpf(e.to_string()));
    }
    let served = serve::specs(lab, &plan.namespaces);
    if !served.is_empty() {
        let pid = match serve::spawn(&lab.name, &served) {
            Ok(pid) => pid,
            Err(e) => {
                let _ = teardown(&record);
                let _ = state::remove(&lab.name);
                return Err(EngineError::Serve(e));
            }
        };
        // Killed here, the servers run unrecorded; `down` still finds them
        // in the lab's namespaces.
        fault_point("serving");
        record.serve = Some(ServeState { pid, served });
    }
    record.complete = true;
    state::save(&record)?;
    Ok(UpReport {
        namespaces: plan.namespaces.len(),
        actions: plan.steps.len(),
        elapsed: start.elapsed(),
    })
}

/// Run a plan: namespaces first, then each phase with its steps concurrent.
/// Stops after the first phase with failures and returns all of them.
pub async fn execute<K: Kernel>(
    plan: &Plan,
    kernel: &mut K,
    progress: &dyn Progress,
) -> Result<(), Vec<KernelError>> {
    progress.stage("namespaces", plan.namespaces.len());
    kernel.create_namespaces(&plan.namespaces)?;
    progress.advance(plan.namespaces.len());
    fault_point("namespaces");
    let kernel = &*kernel;
    for phase in Phase::ALL {
        let steps: Vec<_> = plan.phase(phase).collect();
        progress.stage(phase_name(phase), steps.len());
        let errors: Vec<KernelError> = futures::stream::iter(steps)
            .map(|step| kernel.run(step))
            .buffer_unordered(IN_FLIGHT)
            .filter_map(|r| async move {
                progress.advance(1);
                r.err()
            })
            .collect()
            .await;
        if !errors.is_empty() {
            return Err(errors);
        }
        fault_point(phase_name(phase));
    }
    Ok(())
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Devices => "devices",
        Phase::Links => "links",
        Phase::Stacked => "stacked links",
        Phase::Addresses => "addresses",
        Phase::Routes => "routes",
        Phase::Sysctls => "sysctls",
        Phase::Services => "services",
    }
}

/// Remove a lab: every process inside it and every namespace its state
/// lists, then the state itself.
pub fn down(lab: &str) -> Result<usize, EngineError> {
    if !sys::is_root() {
        return Err(EngineError::NotRoot);
    }
    let _lock = state::lock(lab)?;
    let record = state::load(lab)?.ok_or_else(|| EngineError::NotUp(lab.to_string()))?;
    if let Some(vm) = &record.vm {
        // The lab lives in the VM: take it down there (best effort, the VM
        // may be half booted), then stop the VM, which takes everything.
        let _ = vm.call(&["down".into(), "-q".into(), lab.into()]);
        vm.stop(false);
        state::remove(lab)?;
        return Ok(0);
    }
    teardown(&record).map_err(EngineError::Teardown)?;
    let _ = std::fs::remove_file(serve::log_path(lab));
    state::remove(lab)?;
    Ok(record.namespaces.len())
}

/// Kill every process in the lab's namespaces (the built-in servers, a
/// forgotten `labctl exec` shell), then delete the namespaces in reverse
/// creation order, going on past failures and reporting all of them.
/// Deleting a namespace takes every interface, address and route in it
/// along; veth pairs die with either end. A process left inside would keep
/// the namespace alive, unnamed, after `ip netns delete`.
fn teardown(record: &LabState) -> Result<(), Vec<KernelError>> {
    let mut errors = kill_processes(record);
    // The pins were made after the namespaces: removed before them. A lab
    // without eBPF has no pin directory, and this is one stat.
    if let Err(e) = crate::lb::teardown(&record.lab) {
        errors.push(KernelError::new(
            format!("rm -r {}", crate::lb::pin_dir(&record.lab).display()),
            e,
        ));
    }
    errors.extend(record.namespaces.iter().rev().filter_map(|ns| {
        sys::delete_netns(&ns.name)
            .err()
            .map(|e| KernelError::new(format!("ip netns delete {}", ns.name), e))
    }));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// SIGKILL every process with a thread in one of the lab's namespaces and
/// wait until none is left; again for any that appeared meanwhile (a shell
/// forking). Reports those still there after [`KILL_WAIT`].
fn kill_processes(record: &LabState) -> Vec<KernelError> {
    let names: Vec<&str> = record.namespaces.iter().map(|n| n.name.as_str()).collect();
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let pids = sys::pids_in_netns(&names);
        if pids.is_empty() {
            return Vec::new();
        }
        if Instant::now() >= deadline {
            return pids
                .into_iter()
                .map(|pid| {
                    KernelError::new(
                        format!("kill -9 {pid}"),
                        format!("still inside the lab after {KILL_WAIT:?}"),
                    )
                })
                .collect();
        }
        for pid in pids {
            // Gone meanwhile is fine; any other failure shows up as the
            // process still being there at the deadline.
            let _ = sys::kill_process(pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Bring a lab up inside a VM booted from `kernel`: record the lab, boot
/// the VM (its pid recorded at once, so `down` can always stop it), then run
/// `labctl up` inside with the same file and options. `args` are the `up`
/// arguments after `up` (the file path absolute: the VM sees the host's
/// root filesystem).
pub fn up_in_vm(
    lab: &str,
    file: &Path,
    args: &[String],
    kernel: &crate::vm::Kernel,
) -> Result<crate::vm::Vm, EngineError> {
    if !sys::is_root() {
        return Err(EngineError::NotRoot);
    }
    let _lock = state::lock(lab)?;
    if let Some(existing) = state::load(lab)? {
        return Err(EngineError::AlreadyUp {
            lab: lab.to_string(),
            partly: if existing.complete {
                ""
            } else {
                " (partly: an earlier `up` did not finish)"
            },
        });
    }
    let mut record = LabState::new(lab, Some(file), Vec::new());
    record.runtime = "vm".into();
    state::save(&record)?;
    let vm = crate::vm::start(lab, kernel, &mut |vm| {
        record.vm = Some(vm.clone());
        state::save(&record).map_err(|e| crate::vm::VmError::Command {
            what: "record the VM".into(),
            detail: e.to_string(),
        })
    });
    let fail = |record: &LabState, e: String| {
        if let Some(vm) = &record.vm {
            vm.stop(true);
        }
        let _ = state::remove(lab);
        EngineError::Vm(e)
    };
    let vm = match vm {
        Ok(vm) => vm,
        Err(e) => return Err(fail(&record, e.to_string())),
    };
    fault_point("vm-booted");
    let reply = match vm.call(args) {
        Ok(r) => r,
        Err(e) => return Err(fail(&record, e.to_string())),
    };
    if reply.code != 0 {
        let msg = String::from_utf8_lossy(&reply.stderr).trim().to_string();
        return Err(fail(&record, format!("inside the VM: {msg}")));
    }
    record.complete = true;
    state::save(&record)?;
    Ok(vm)
}

/// A single-threaded runtime: every netlink socket lives on it, and the
/// namespace work happens on threads of our own.
pub fn runtime() -> Result<tokio::runtime::Runtime, EngineError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(EngineError::Runtime)
}

/// Test hook for the crash-safety tests: when `LABCTL_KILL_AT` names this
/// point, the process sends itself SIGKILL, exactly as a user's `kill -9`
/// at that moment would.
pub(crate) fn fault_point(point: &str) {
    if std::env::var("LABCTL_KILL_AT").is_ok_and(|p| p == point) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
