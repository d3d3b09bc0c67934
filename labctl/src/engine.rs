//! Bringing a lab up and down: lock, record, create, configure; and the
//! reverse. The executor runs a [`Plan`] phase by phase against any
//! [`Kernel`], so its ordering and error handling are tested with the
//! recording fake.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use labctl_topology::Lab;

use crate::fault::fault_point;
use crate::kernel::{Kernel, KernelError, Netlink};
use crate::plan::{Phase, Plan, Step, plan};
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
    #[error(
        "labctl needs root to create network namespaces; run it with sudo (or grant {})",
        sys::LAB_CAPS.map(|c| c.1).join(", ")
    )]
    NotRoot,
    #[error("prepare {dir}: {source}")]
    RunDir {
        dir: &'static str,
        source: std::io::Error,
    },
    #[error("VM runtime: {0}")]
    Vm(#[from] crate::vm::VmError),
    /// `labctl` in the VM failed: what it said, and its exit code, which
    /// the host's `labctl` exits with too.
    #[error("inside the {place}: {message}")]
    InVm {
        place: &'static str,
        code: i32,
        message: String,
    },
    #[error("services need kernel modules: {0}")]
    Modules(String),
    #[error("start the netlink runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{n} kernel action(s) failed; {1}:\n  {list}", n = .0.len(), list = join(.0))]
    Apply(Vec<KernelError>, Box<Rollback>),
    #[error("{0}; {1}")]
    Serve(ServeError, Box<Rollback>),
    #[error("eBPF load balancer: {0}")]
    Ebpf(#[source] crate::lb::LbError),
    #[error("{n} kernel action(s) failed:\n  {list}", n = .0.len(), list = join(.0))]
    Steps(Vec<KernelError>),
    #[error("removing the lab left {} error(s):\n  {}", .0.len(), join(.0))]
    Teardown(Vec<KernelError>),
    #[error("lab `{lab}` is down, but {source}")]
    NotReleased {
        lab: String,
        source: crate::release::WaitError,
    },
    #[error(
        "lab `{lab}` needs about {need} open files (one per namespace) but this process may open only {limit}; raise the hard limit (`ulimit -Hn`, LimitNOFILE= or /etc/security/limits.conf) or build a smaller lab"
    )]
    FileLimit { lab: String, need: u64, limit: u64 },
}

/// What undoing a failed `up` did: nothing left, or what was and why.
#[derive(Debug)]
pub struct Rollback {
    lab: String,
    teardown: Teardown,
    /// Whether the lab's record was kept (something of it survives).
    kept: bool,
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.teardown;
        if t.errors.is_empty() && t.left.is_empty() {
            return write!(f, "the lab was removed again");
        }
        write!(f, "removing the lab again")?;
        for e in &t.errors {
            write!(f, "\n  failed: {e}")?;
        }
        for l in &t.left {
            write!(f, "\n  {l}")?;
        }
        if self.kept {
            write!(
                f,
                "\n  the lab's record is kept: `labctl down {}` removes the rest",
                self.lab
            )?;
        }
        Ok(())
    }
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
    /// A stage begins (and the one before ends): `namespaces`, each
    /// phase of the plan with its steps, `settle`, then `record` (the
    /// lab's servers started, its state file written); `total` is its
    /// count of namespaces or steps.
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

/// What identifies the build of `lab`: a CRC-32 of its plan's commands
/// (`labctl plan -o script`) and of the ports it serves, as hex. Two files,
/// or one file under two `--var` values, that build the same lab have the
/// same digest.
pub fn plan_digest(lab: &Lab) -> String {
    digest_of(lab, &plan(lab))
}

fn digest_of(lab: &Lab, plan: &Plan) -> String {
    let mut h = crc32fast::Hasher::new();
    h.update(plan.to_commands().as_bytes());
    for served in serve::specs(lab, &plan.namespaces) {
        h.update(format!("{}{:?}", served.netns, served.ports).as_bytes());
    }
    format!("{:08x}", h.finalize())
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
    let limit = sys::raise_nofile_limit();
    // A netlink socket per namespace, and room for everything else (the
    // runtime, the workers' placeholder files, captures, the state file).
    let need = plan.namespaces.len() as u64 + 256;
    if need > limit {
        return Err(EngineError::FileLimit {
            lab: lab.name.clone(),
            need,
            limit,
        });
    }
    preflight(lab)?;
    let modules = plan.modules();
    if !modules.is_empty() {
        // IPVS and br_netfilter: the probe loads their modules (nothing
        // else would load br_netfilter) and sees them built in too.
        use crate::features::{missing_message, probe};
        let probes = probe(&modules).map_err(|e| EngineError::Modules(e.to_string()))?;
        let missing: Vec<_> = probes.iter().filter(|p| !p.present).collect();
        if !missing.is_empty() {
            return Err(EngineError::Modules(missing_message(&missing)));
        }
    }

    // Record first: from here on, whatever exists is listed for `down`.
    let mut record = LabState::new(&lab.name, file, plan.namespaces.clone());
    record.plan_digest = Some(digest_of(lab, &plan));
    state::save(&record)?;
    fault_point("recorded");

    let result = runtime()?.block_on(async {
        let mut kernel = Netlink::new(record.mark());
        execute(&plan, &mut kernel, progress).await
    });
    if let Err(errors) = result {
        return Err(EngineError::Apply(errors, rollback(&record)));
    }
    fault_point("configured");
    progress.stage("record", 0);
    let served = serve::specs(lab, &plan.namespaces);
    if !served.is_empty() {
        let pid = match serve::spawn(&lab.name, &served) {
            Ok(pid) => pid,
            Err(e) => return Err(EngineError::Serve(e, rollback(&record))),
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

/// What a lab needs of this build, checked before anything is made (and
/// before a VM is booted for it): the eBPF programs, for a lab with
/// `ebpf:`. Missing, it is the environment's fault (exit 4), not a failed
/// kernel action.
pub fn preflight(lab: &Lab) -> Result<(), EngineError> {
    let routes = lab
        .objects
        .tc
        .iter()
        .any(|t| matches!(t.action, labctl_topology::TcAction::Bpf { .. }))
        || !lab.objects.bpf_maps.is_empty();
    if lab.ebpf.is_some() || routes {
        crate::lb::check_built().map_err(EngineError::Ebpf)?;
    }
    Ok(())
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
        run_steps(kernel, steps, progress).await?;
        fault_point(phase_name(phase));
    }
    // Until the kernel has activated every link it was told to bring up.
    progress.stage("settle", 0);
    kernel.settle().await;
    Ok(())
}

/// Run independent steps concurrently; every failure is returned.
pub async fn run_steps<'a, K: Kernel>(
    kernel: &K,
    steps: impl IntoIterator<Item = &'a Step>,
    progress: &dyn Progress,
) -> Result<(), Vec<KernelError>> {
    let errors: Vec<KernelError> = futures::stream::iter(steps)
        .map(|step| kernel.run(step))
        .buffer_unordered(IN_FLIGHT)
        .filter_map(|r| async move {
            progress.advance(1);
            r.err()
        })
        .collect()
        .await;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Run independent steps on a lab that is up (a scenario's re-programming
/// of its services and eBPF maps) through the same [`Kernel`] as `up`:
/// sockets are opened only in the namespaces the steps name, each checked
/// to carry the lab's mark first.
pub fn apply_steps(record: &LabState, steps: &[Step]) -> Result<(), EngineError> {
    apply_in_turn(record, &[steps])
}

/// [`apply_steps`] for batches whose effects must follow one another (a
/// scenario's conntrack tables emptied once its services are programmed):
/// the steps of a batch run together, and a batch only once every step of
/// the one before it has succeeded. Each namespace is attached once, for
/// all of them.
pub fn apply_in_turn(record: &LabState, batches: &[&[Step]]) -> Result<(), EngineError> {
    let mut names: Vec<String> = batches
        .iter()
        .flat_map(|b| b.iter())
        .map(|s| s.netns.clone())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    names.dedup();
    runtime()?
        .block_on(async {
            let mut kernel = Netlink::new(record.mark());
            kernel.attach(&names).map_err(|e| vec![e])?;
            for batch in batches {
                run_steps(&kernel, batch.iter(), &Quiet).await?;
            }
            Ok(())
        })
        .map_err(EngineError::Steps)
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Devices => "devices",
        Phase::Links => "links",
        Phase::Stacked => "stacked links",
        Phase::Addresses => "addresses",
        Phase::Routes => "routes",
        Phase::Sysctls => "sysctls",
        Phase::Ebpf => "ebpf",
        Phase::Services => "services",
        Phase::Changes => "changes",
    }
}

/// What `down` did.
#[derive(Debug, Default)]
pub struct DownReport {
    /// Namespaces removed (0 for a lab in a VM: the VM took them).
    pub removed: usize,
    /// What was left alone, and why (not the lab's, or a VM that did not
    /// answer and was stopped by force).
    pub left: Vec<String>,
    /// With a wait: how long the kernel took to release the namespaces
    /// after they were let go.
    pub released: Option<Duration>,
}

/// How long `down` waits for `labctl down` inside a lab's VM.
const VM_DOWN_DEADLINE: Duration = Duration::from_secs(120);
/// How long a VM has to power off by itself before it is killed.
const VM_GRACE: Duration = Duration::from_secs(15);

/// Remove a lab: every process inside it and every namespace its state
/// lists that carries the lab's mark, then the state itself. With `wait`,
/// then wait up to that long until the kernel has released those
/// namespaces ([`crate::release`]), not only queued them; a lab in a VM
/// has none on the host to wait for.
pub fn down(lab: &str, wait: Option<Duration>) -> Result<DownReport, EngineError> {
    if !sys::is_root() {
        return Err(EngineError::NotRoot);
    }
    let _lock = state::lock(lab)?;
    // Taps of this process's scenarios still closing would keep the lab's
    // namespaces alive past their removal.
    sys::wait_closed();
    // Teardown holds every namespace of the lab open for a moment.
    sys::raise_nofile_limit();
    let Some(record) = state::load(lab)? else {
        // An `up` killed while writing its first record leaves only the
        // temp file: nothing was made yet, and that goes too.
        state::remove(lab)?;
        return Err(EngineError::NotUp(lab.to_string()));
    };
    let mut left = record.rejected.clone();
    if let Some(vm) = record.vm.as_ref().filter(|vm| vm.shared) {
        // The lab lives in a shared VM with others: take it down there and
        // leave the VM up. A VM that is gone took the lab with it.
        if vm.process_is_ours() {
            match vm.call(&["down".into(), "-q".into(), lab.into()], VM_DOWN_DEADLINE) {
                Ok(r) if r.code == 0 || r.code == NOT_UP => {}
                Ok(r) => left.push(format!(
                    "`labctl down` in the shared VM: {}",
                    String::from_utf8_lossy(&r.stderr).trim()
                )),
                Err(e) => left.push(format!("the shared VM: {e}")),
            }
        }
        state::remove(lab)?;
        return Ok(DownReport {
            removed: 0,
            left,
            released: None,
        });
    }
    if let Some(vm) = &record.vm {
        // The lab lives in the VM: take it down there (best effort, the VM
        // may be half booted), then stop the VM, which takes everything.
        let mut grace = VM_GRACE;
        if vm.process_is_ours()
            && let Err(e) = vm.call(&["down".into(), "-q".into(), lab.into()], VM_DOWN_DEADLINE)
        {
            left.push(format!("{e}: the VM was stopped by force"));
            grace = Duration::ZERO;
        }
        left.extend(vm.stop(&record.mark(), grace, false));
        state::remove(lab)?;
        return Ok(DownReport {
            removed: 0,
            left,
            released: None,
        });
    }
    let mut t = teardown(&record);
    // Ids for the namespaces while they are still held: after, a freed one
    // cannot be named.
    let watch = wait.map(|_| watch(&t.held));
    let let_go = Instant::now();
    // Last first: the kernel cleans the namespaces let go in a batch last
    // queued first, and each one's cleanup walks the watch's table of ids
    // (given in `held`'s order) until it finds its own; in this order it
    // is the first there, not the last.
    while let Some(ns) = t.held.pop() {
        drop(ns);
    }
    left.extend(t.left);
    if !t.errors.is_empty() {
        return Err(EngineError::Teardown(t.errors));
    }
    let _ = std::fs::remove_file(serve::log_path(lab));
    state::remove(lab)?;
    let released = match (watch, wait) {
        (Some(watch), Some(limit)) => {
            watch
                .and_then(|w| w.wait(limit))
                .map_err(|source| EngineError::NotReleased {
                    lab: lab.to_string(),
                    source,
                })?;
            Some(let_go.elapsed())
        }
        _ => None,
    };
    Ok(DownReport {
        removed: t.removed,
        left,
        released,
    })
}

/// A [`crate::release::Watch`] holding an id for each namespace in `held`.
fn watch(
    held: &[std::os::fd::OwnedFd],
) -> Result<crate::release::Watch, crate::release::WaitError> {
    let mut watch = crate::release::Watch::new()?;
    for ns in held {
        watch.add(ns)?;
    }
    Ok(watch)
}

/// Undo a failed `up`: tear down what is the lab's, and forget the lab
/// unless something of it survived.
fn rollback(record: &LabState) -> Box<Rollback> {
    let mut teardown = teardown(record);
    teardown.held.clear();
    let kept = !teardown.errors.is_empty();
    if !kept {
        let _ = std::fs::remove_file(serve::log_path(&record.lab));
        let _ = state::remove(&record.lab);
    }
    Box::new(Rollback {
        lab: record.lab.clone(),
        teardown,
        kept,
    })
}

/// What a teardown did.
#[derive(Debug, Default)]
pub struct Teardown {
    pub removed: usize,
    pub errors: Vec<KernelError>,
    /// Names the record lists that are not the lab's, and why.
    pub left: Vec<String>,
    /// A handle on each namespace removed, which keeps the kernel from
    /// freeing it: dropping them lets the kernel release the namespaces.
    pub held: Vec<std::os::fd::OwnedFd>,
}

/// Kill every process in the lab's namespaces (the built-in servers, a
/// forgotten `labctl exec` shell), then delete the namespaces in reverse
/// creation order, going on past failures and reporting all of them.
/// Deleting a namespace takes every interface, address and route in it
/// along; veth pairs die with either end. A process left inside would keep
/// the namespace alive, unnamed, after `ip netns delete`.
///
/// Only namespaces carrying the lab's mark are touched ([`crate::owner`]):
/// a name someone else took meanwhile is left, and said so.
fn teardown(record: &LabState) -> Teardown {
    use crate::owner::{Owner, netns_owners};
    let mark = record.mark();
    let mut out = Teardown::default();
    let mut ours = Vec::new();
    let names: Vec<&str> = record.namespaces.iter().map(|n| n.name.as_str()).collect();
    for (name, owner) in names.iter().zip(netns_owners(&names, &mark)) {
        match owner {
            Owner::Gone => {}
            Owner::Ours => ours.push(*name),
            Owner::Foreign(why) => out
                .left
                .push(format!("namespace `{name}` left alone: {why}")),
        }
    }
    // Identities outlive names: the sweep after the deletion finds a
    // process that opened a namespace just before it lost its name. We
    // hold each namespace open meanwhile, so none is freed and its inode
    // number given to a new namespace (someone else's) before the sweep.
    let held: Vec<_> = ours
        .iter()
        .filter_map(|name| sys::open_netns(name).ok())
        .collect();
    let ids = sys::ns_ids(&ours);
    out.errors = kill_processes(&ids);
    // The pins were made after the namespaces: removed before them. A lab
    // without eBPF has no pin directory, and this is one stat.
    if let Err(e) = crate::lb::teardown(&record.lab) {
        out.errors.push(KernelError::new(
            format!("rm -r {}", crate::lb::pin_dir(&record.lab).display()),
            e,
        ));
    }
    if let Err(e) = crate::route::teardown(&record.lab) {
        out.errors.push(KernelError::new(
            format!("rm -r {}", crate::route::lab_dir(&record.lab).display()),
            e,
        ));
    }
    for name in ours.iter().rev() {
        match sys::delete_netns(name) {
            Ok(()) => out.removed += 1,
            Err(e) => out
                .errors
                .push(KernelError::new(format!("ip netns delete {name}"), e)),
        }
    }
    out.errors.extend(kill_processes(&ids));
    out.held = held;
    out
}

/// SIGKILL every process in or holding one of the namespaces `ids` and
/// scan again, until a scan finds none; reports those still there after
/// [`KILL_WAIT`]. A process that enters between two scans (a shell
/// forking, the servers of an `up` killed while starting them) is found by
/// the next one.
fn kill_processes(ids: &std::collections::HashSet<sys::NsId>) -> Vec<KernelError> {
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let pids = sys::pids_holding(ids);
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

/// How long `labctl up` inside a VM may take (a 10,000-pod lab under
/// software emulation included).
const VM_UP_DEADLINE: Duration = Duration::from_secs(1800);

/// A lab brought up in a VM.
pub struct UpInVm {
    pub vm: crate::vm::Vm,
    /// How long its VM took to boot; `None` in the shared VM, up before.
    pub boot: Option<Duration>,
    /// What `labctl up` printed on stderr in the VM (`--timings`' lines).
    pub stderr: String,
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
) -> Result<UpInVm, EngineError> {
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
    if let Some(vm) = crate::vm::shared::find(&kernel.release) {
        record.vm = Some(vm.clone());
        state::save(&record)?;
        return up_in_shared(record, vm, args);
    }
    state::save(&record)?;
    let mark = record.mark();
    let booting = Instant::now();
    let vm = crate::vm::start(lab, kernel, &mark, &mut |vm| {
        record.vm = Some(vm.clone());
        state::save(&record).map_err(|e| crate::vm::VmError::Command {
            what: "record the VM".into(),
            detail: e.to_string(),
        })
    });
    let fail = |record: &LabState, e: EngineError| {
        if let Some(vm) = &record.vm {
            vm.stop(&record.mark(), VM_GRACE, true);
        }
        let _ = state::remove(lab);
        e
    };
    let vm = match vm {
        Ok(vm) => vm,
        Err(e) => return Err(fail(&record, e.into())),
    };
    let boot = booting.elapsed();
    fault_point("vm-booted");
    let reply = match vm.call(args, VM_UP_DEADLINE) {
        Ok(r) => r,
        Err(e) => return Err(fail(&record, e.into())),
    };
    if reply.code != 0 {
        return Err(fail(&record, in_vm("VM", &reply)));
    }
    record.complete = true;
    state::save(&record)?;
    Ok(UpInVm {
        vm,
        boot: Some(boot),
        stderr: String::from_utf8_lossy(&reply.stderr).into_owned(),
    })
}

/// The failure `labctl` in the VM (`place`) replied with.
fn in_vm(place: &'static str, reply: &crate::vm::Reply) -> EngineError {
    EngineError::InVm {
        place,
        code: reply.code,
        message: String::from_utf8_lossy(&reply.stderr).trim().to_string(),
    }
}

/// The exit code of `labctl down` for a lab that is not up, and of `up`
/// for one that is ([`EngineError::NotUp`], [`EngineError::AlreadyUp`]): the
/// CLI's state exit code.
const NOT_UP: i32 = 3;

/// [`up_in_vm`] in a shared VM ([`crate::vm::shared`]), the lab's record
/// naming it already. A lab of this name left inside by a `labctl` that
/// was killed (its host record gone) is taken down first; a failed `up`
/// is taken down inside, and the VM is left up either way.
fn up_in_shared(
    mut record: LabState,
    vm: crate::vm::Vm,
    args: &[String],
) -> Result<UpInVm, EngineError> {
    let lab = record.lab.clone();
    let down = || vm.call(&["down".into(), "-q".into(), lab.clone()], VM_DOWN_DEADLINE);
    let fail = |e: EngineError| {
        let _ = down();
        let _ = state::remove(&lab);
        e
    };
    let mut reply = vm.call(args, VM_UP_DEADLINE).map_err(|e| fail(e.into()))?;
    if reply.code == NOT_UP {
        // Already up inside: a leftover, since the host had no record.
        down().map_err(|e| fail(e.into()))?;
        reply = vm.call(args, VM_UP_DEADLINE).map_err(|e| fail(e.into()))?;
    }
    if reply.code != 0 {
        return Err(fail(in_vm("shared VM", &reply)));
    }
    record.complete = true;
    state::save(&record)?;
    Ok(UpInVm {
        vm,
        boot: None,
        stderr: String::from_utf8_lossy(&reply.stderr).into_owned(),
    })
}

/// Stop the shared VM of kernel `release` ([`crate::vm::shared::stop`])
/// and forget the labs that lived in it: they went with it. A lab whose
/// lock is held (a command on it still running) keeps its record, and
/// says so. Returns what was left alone and why.
pub fn stop_shared(release: &str) -> Result<Vec<String>, EngineError> {
    if !sys::is_root() {
        return Err(EngineError::NotRoot);
    }
    let mut left = crate::vm::shared::stop(release)?;
    let dir = crate::vm::shared::dir_for(release);
    for record in state::list()? {
        let inside = record
            .vm
            .as_ref()
            .is_some_and(|vm| vm.shared && Some(&vm.dir) == dir.as_ref());
        if !inside {
            continue;
        }
        match state::lock(&record.lab) {
            Ok(_lock) => state::remove(&record.lab)?,
            Err(e) => left.push(format!("lab `{}` keeps its record: {e}", record.lab)),
        }
    }
    Ok(left)
}

/// [`sys::runtime`], its failure an engine error.
pub fn runtime() -> Result<tokio::runtime::Runtime, EngineError> {
    sys::runtime().map_err(EngineError::Runtime)
}
