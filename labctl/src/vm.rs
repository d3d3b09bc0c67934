//! The VM runtime: labs that need kernel features the host lacks run inside
//! a QEMU virtual machine booted from a distro kernel (Debian's, say) with
//! virtme-ng, which shares the host's root filesystem read-only so the same
//! `labctl` binary runs inside.
//!
//! The VM stays up in the background for as long as the lab is up. Inside
//! it `labctl __agent DIR` serves two ways in. Sessions ([`Vm::session`]:
//! `exec`, `monitor`, `status`) go over virtio-serial ports
//! ([`channel`]): stdin, a terminal, output as it comes, signals and
//! the exit code, live. Requests ([`Vm::call`]: `up`, `run`, `down`) keep
//! the file protocol in DIR, a host directory the VM may write
//! (virtme-ng's `--rwdir`): the host drops `ID.req` (a JSON argv), the
//! agent runs `labctl ARGV...` inside the VM and leaves `ID.out`, `ID.err`
//! and finally `ID.rc`. It needs nothing from QEMU, survives either side
//! restarting, is easy to look at when something goes wrong, and serves a
//! VM booted by a labctl without the ports (sessions fall back to it, not
//! interactive then). `ready` in DIR says the agent serves both.
//!
//! Kernels are Debian packages unpacked the way virtme-ng finds them:
//! `/boot/vmlinuz-RELEASE` and `/lib/modules/RELEASE`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub mod channel;
pub mod qemu;
pub mod shared;
pub mod warm;

/// Why the VM runtime could not do something.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("no VM kernel is installed; install one with `labctl kernel install debian`")]
    NoKernel,
    #[error("no installed kernel matches `{0}`; `labctl kernel list` shows them")]
    UnknownKernel(String),
    #[error("the VM runtime needs `{tool}` ({package}); `./lab` installs it, or: {install}")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
        install: &'static str,
    },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("the VM did not come up within {secs} s; its console is in {log}{last}")]
    BootTimeout {
        secs: u64,
        log: PathBuf,
        /// The console's last lines ([`console_tail`]), or empty.
        last: String,
    },
    #[error("the VM's kernel reported a stalled CPU while it booted (console: {log}){last}")]
    Stalled {
        log: PathBuf,
        /// The console's last lines ([`console_tail`]), or empty.
        last: String,
    },
    #[error("the VM stopped (console: {log}){last}")]
    Gone {
        log: PathBuf,
        /// The console's last lines ([`console_tail`]), or empty.
        last: String,
    },
    #[error(
        "the VM's agent did not take the request within {secs} s (the VM is hung or still booting; console: {log})"
    )]
    AgentSilent { secs: u64, log: PathBuf },
    #[error("`labctl {what}` in the VM did not finish within {secs} s")]
    Deadline { what: String, secs: u64 },
    #[error(
        "all {ports} session ports of the VM stayed busy for {secs} s; end another `labctl exec` or `labctl monitor` of this lab"
    )]
    Busy { ports: usize, secs: u64 },
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

/// An installed VM kernel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Kernel {
    pub release: String,
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
}

/// Where labctl keeps VM working directories and downloaded packages.
pub fn lib_dir() -> PathBuf {
    std::env::var_os("LABCTL_LIB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/labctl"))
}

/// labctl's own directory for the VM of lab `lab` (a checked lab name):
/// the only VM directory it ever writes to or removes.
pub fn dir_of(lab: &str) -> PathBuf {
    lib_dir().join("vm").join(lab)
}

/// How long a request may wait for the agent to pick it up: it does so
/// within milliseconds when it runs (`LABCTL_VM_AGENT_WAIT` seconds
/// overrides, for tests).
fn agent_wait() -> Duration {
    std::env::var("LABCTL_VM_AGENT_WAIT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(30))
}

/// Installed kernels: `/boot/vmlinuz-R` with `/lib/modules/R/modules.dep`,
/// the host's own running kernel excluded (a VM with it would add nothing).
pub fn kernels() -> Vec<Kernel> {
    let running = crate::features::kernel_release();
    let mut out: Vec<Kernel> = fs::read_dir("/boot")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            let modules = Path::new("/lib/modules").join(&release);
            (release != running && modules.join("modules.dep").exists()).then(|| Kernel {
                vmlinuz: e.path(),
                modules,
                release,
            })
        })
        .collect();
    out.sort_by(|a, b| b.release.cmp(&a.release));
    out
}

/// Pick a kernel: by release (or a unique prefix of one), else the newest.
pub fn choose(want: Option<&str>) -> Result<Kernel, VmError> {
    let all = kernels();
    match want {
        None => all.into_iter().next().ok_or(VmError::NoKernel),
        Some(w) => {
            let w = w.strip_prefix("/boot/vmlinuz-").unwrap_or(w);
            all.into_iter()
                .find(|k| k.release == w || k.release.starts_with(w))
                .ok_or_else(|| VmError::UnknownKernel(w.to_string()))
        }
    }
}

pub(crate) fn run(what: &str, cmd: &mut Command) -> Result<String, VmError> {
    let o = cmd.output().map_err(io_err(what))?;
    if !o.status.success() {
        return Err(VmError::Command {
            what: what.to_string(),
            detail: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Fetch Debian's current kernel through apt (the package that
/// `linux-image-amd64` depends on) and unpack it where virtme-ng looks.
/// Does nothing when that release is already installed.
pub fn install_debian(progress: &dyn Fn(&str)) -> Result<Kernel, VmError> {
    let deps = run(
        "apt-cache depends linux-image-amd64",
        Command::new("apt-cache").args(["depends", "linux-image-amd64"]),
    )?;
    let package = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .ok_or_else(|| VmError::Command {
            what: "apt-cache depends linux-image-amd64".into(),
            detail: "no linux-image-* dependency (is Debian's main archive configured?)".into(),
        })?
        .to_string();
    let release = package.trim_start_matches("linux-image-").to_string();
    if let Ok(k) = choose(Some(&release))
        && k.release == release
    {
        progress(&format!("kernel {release} is already installed"));
        return Ok(k);
    }
    if release == crate::features::kernel_release() {
        return Err(VmError::Command {
            what: format!("install kernel {release}"),
            detail: "the host runs this kernel already: labs need no VM for it".into(),
        });
    }
    let vmlinuz = Path::new("/boot").join(format!("vmlinuz-{release}"));
    let modules = Path::new("/lib/modules").join(&release);
    // Only what this install makes is replaced: a kernel or modules of that
    // release put there by the system's packages are the system's.
    if vmlinuz.exists() || modules.exists() {
        return Err(VmError::Command {
            what: format!("install kernel {release}"),
            detail: format!(
                "{} or {} is there already but not both with modules.dep; \
                 install the package with `apt-get install {package}` instead",
                vmlinuz.display(),
                modules.display()
            ),
        });
    }
    let cache = lib_dir().join("packages");
    fs::create_dir_all(&cache).map_err(io_err(format!("create {}", cache.display())))?;
    progress(&format!("downloading {package}"));
    run(
        &format!("apt-get download {package}"),
        apt_command("apt-get")
            .args(["download", "-q", &package])
            .current_dir(&cache),
    )?;
    let deb = fs::read_dir(&cache)
        .map_err(io_err("read package cache"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .ok_or_else(|| VmError::Command {
            what: format!("apt-get download {package}"),
            detail: "no .deb appeared".into(),
        })?;
    let unpack = lib_dir().join("kernels").join(&release);
    let _ = fs::remove_dir_all(&unpack);
    // dpkg-deb makes the target folder but not its parents.
    fs::create_dir_all(&unpack).map_err(io_err(format!("create {}", unpack.display())))?;
    fs::create_dir_all("/boot").map_err(io_err("create /boot"))?;
    progress(&format!("unpacking {}", deb.display()));
    run(
        "dpkg-deb -x",
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpack),
    )?;
    fs::create_dir_all("/lib/modules").map_err(io_err("create /lib/modules"))?;
    run(
        "copy modules",
        Command::new("cp")
            .arg("-a")
            .arg(unpack.join("lib/modules").join(&release))
            .arg(&modules),
    )?;
    progress("running depmod");
    run("depmod", Command::new("depmod").args(["-a", &release]))?;
    // Last: `kernels` lists a release once its vmlinuz is there.
    fs::copy(
        unpack.join("boot").join(format!("vmlinuz-{release}")),
        &vmlinuz,
    )
    .map_err(io_err(format!("install {}", vmlinuz.display())))?;
    choose(Some(&release))
}

/// `apt-get` or `apt-cache` as labctl runs them: no questions, and a
/// mirror that stops answering fails the call within about a minute
/// instead of holding `./lab` for apt's default two.
pub(crate) fn apt_command(tool: &str) -> Command {
    let mut c = Command::new(tool);
    c.args(["-o", "Acquire::http::Timeout=30"])
        .args(["-o", "Acquire::https::Timeout=30"])
        .args(["-o", "Acquire::Retries=1"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    c
}

/// The host programs the VM runtime needs, with how to get them.
pub fn check_tools() -> Result<(), VmError> {
    let tools: [(&str, &str, &str); 5] = [
        (
            "qemu-system-x86_64",
            "qemu-system-x86",
            "apt-get install qemu-system-x86",
        ),
        ("vng", "virtme-ng", "pip install virtme-ng"),
        (
            "busybox",
            "busybox-static",
            "apt-get install busybox-static",
        ),
        ("depmod", "kmod", "apt-get install kmod"),
        ("udevadm", "udev", "apt-get install udev"),
    ];
    for (tool, package, install) in tools {
        if !in_path(tool) {
            return Err(VmError::MissingTool {
                tool,
                package,
                install,
            });
        }
    }
    Ok(())
}

fn in_path(tool: &str) -> bool {
    find_tool(tool).is_some()
}

/// `tool` in PATH's directories or the sbin and bin ones, as a root shell
/// finds it.
pub(crate) fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Whether to ask QEMU for KVM. `LABCTL_KVM=0` never and `LABCTL_KVM=1`
/// whenever /dev/kvm opens; by default when /dev/kvm opens and the host's
/// KVM is the hardware one (`kvm_intel` or `kvm_amd` loaded). Some hosts
/// offer another behind /dev/kvm: this project's build machines run
/// `kvm_pvm`, which runs only guests built for it (Debian's kernel hangs
/// right after the boot loader, with `-cpu host` QEMU aborts on an MSR).
/// Those, and hosts without KVM, get software emulation (TCG, about 15 s
/// to boot).
pub fn kvm_usable() -> bool {
    kvm_choice(
        std::env::var("LABCTL_KVM").ok().as_deref(),
        || {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok()
        },
        || {
            ["kvm_intel", "kvm_amd"]
                .iter()
                .any(|m| Path::new("/sys/module").join(m).exists())
        },
    )
}

/// Drivers udev would load at every boot for what QEMU's q35 machine and
/// CPU model offer, none of which a lab uses: the AHCI controller and its
/// CD-ROM, the ICH9 chipset's watchdog, SMBus and LPC bridge, the PS/2
/// mouse and PC speaker, KVM for nested guests (about 4 s of the boot on
/// its own under emulation) and the CPU's SIMD crypto and CRC code.
/// virtme-ng waits for udev to settle before it starts the agent; under
/// TCG these loads were 8-12 s of a 24-29 s boot, and kept off with
/// kmod's `modprobe.blacklist=` on the guest's command line the boot took
/// 18-20 s (three alternating boots each, `labctl vm start`). The
/// blacklist covers loads by alias (what udev asks for); the modules labs
/// need (veth, bridge, ip_vs, nf_tables, ...) are not in it.
const UNUSED_DRIVERS: &[&str] = &[
    "ahci",
    "libahci",
    "libata",
    "sr_mod",
    "cdrom",
    "sg",
    "iTCO_wdt",
    "iTCO_vendor_support",
    "intel_pmc_bxt",
    "i2c_i801",
    "lpc_ich",
    "psmouse",
    "serio_raw",
    "pcspkr",
    "kvm",
    "kvm_amd",
    "kvm_intel",
    "ccp",
    "irqbypass",
    "aesni_intel",
    "ghash_clmulni_intel",
    "sha1_ssse3",
    "sha256_ssse3",
    "sha512_ssse3",
    "crct10dif_pclmul",
    "crc32_pclmul",
];

/// virtme-ng booting kernel `release` as every labctl VM boots: the
/// host's root read-only over 9p, 1 GiB, two CPUs, KVM when
/// [`kvm_usable`], labctl's own QEMU when it has one ([`qemu`]), the
/// drivers no lab uses kept from loading ([`UNUSED_DRIVERS`]). The
/// caller adds what the VM runs.
pub fn vng(release: &str) -> Command {
    let mut cmd = Command::new("vng");
    cmd.args(["--run", release, "--force-9p", "--memory", "1G"])
        .args(["--cpus", "2"]);
    cmd.arg("--append")
        .arg(format!("modprobe.blacklist={}", UNUSED_DRIVERS.join(",")));
    if !kvm_usable() {
        cmd.arg("--disable-kvm");
    }
    if let Some(bin) = qemu::binary() {
        cmd.arg("--qemu").arg(bin).arg(qemu::options());
    }
    cmd
}

/// [`kvm_usable`]'s rule: `setting` is `LABCTL_KVM`, `opens` whether
/// /dev/kvm opens, `hardware` whether the hardware KVM module is loaded.
fn kvm_choice(
    setting: Option<&str>,
    opens: impl Fn() -> bool,
    hardware: impl Fn() -> bool,
) -> bool {
    match setting {
        Some("0") => false,
        Some("1") => opens(),
        _ => opens() && hardware(),
    }
}

/// A running VM with its agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vm {
    /// The shared request directory.
    pub dir: PathBuf,
    /// Process id of `vng` (its QEMU is its child).
    pub pid: u32,
    pub kernel: Kernel,
    /// A shared VM ([`shared`]) that other labs live in too: `down` of a
    /// lab takes the lab down inside and leaves the VM up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

/// Boot a VM for `name` and wait for its agent. The caller records `pid`
/// (`on_spawn`) before the wait, so an interrupted boot is still cleaned up.
/// `mark` ([`crate::owner`]) is written into the directory, so `down` and
/// `stop` remove only a directory of ours.
pub fn start(
    name: &str,
    kernel: &Kernel,
    mark: &str,
    on_spawn: &mut dyn FnMut(&Vm) -> Result<(), VmError>,
) -> Result<Vm, VmError> {
    let dir = dir_of(name);
    // Where the console is kept if this boot fails (see `Vm::stop`).
    let log = lib_dir().join("vm").join(format!("{name}.console.log"));
    start_in(&dir, kernel, mark, &log, on_spawn)
}

/// [`start`] in directory `dir` (labctl's own: a lab's [`dir_of`] or a
/// shared VM's [`shared::dir_for`]), the console kept at `log` on failure.
fn start_in(
    dir: &Path,
    kernel: &Kernel,
    mark: &str,
    kept_log: &Path,
    on_spawn: &mut dyn FnMut(&Vm) -> Result<(), VmError>,
) -> Result<Vm, VmError> {
    check_tools()?;
    let dir = dir.to_path_buf();
    // A leftover of this name is ours only if it says so; the caller's
    // lock is held, so no VM of ours is using it.
    if fs::symlink_metadata(&dir).is_ok() {
        if !dir_is_ours(&dir, None) {
            return Err(VmError::Command {
                what: format!("prepare {}", dir.display()),
                detail: "it exists and was not made by labctl; remove it by hand".into(),
            });
        }
        let _ = fs::remove_dir_all(&dir);
    }
    fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
    fs::write(dir.join(OWNER_FILE), mark).map_err(io_err("mark the VM directory"))?;
    // The VM runs its own copy of labctl: a rebuild on the host replaces
    // the file under the VM's 9p mount and would crash what runs inside.
    let exe = dir.join("labctl");
    fs::copy(
        std::env::current_exe().map_err(io_err("find the labctl binary"))?,
        &exe,
    )
    .map_err(io_err("copy labctl for the VM"))?;
    // A boot that fails before its agent is up (its QEMU died, its kernel
    // reported a stalled CPU, or it did not come up in time) is tried once
    // more, said on stderr with the console's last lines: a QEMU or guest
    // that fails now and then under emulation costs a user one more boot,
    // not the run. The last attempt's failure is the error.
    let mut attempt = 1;
    loop {
        let vm = spawn(&dir, kernel, &exe)?;
        on_spawn(&vm)?;
        let last_attempt = attempt == BOOT_ATTEMPTS;
        let err = match wait_ready(&vm, kept_log, !last_attempt) {
            Ok(()) => return Ok(vm),
            Err(e) => e,
        };
        match retry_said(&err).filter(|_| !last_attempt) {
            Some((why, last)) => {
                eprintln!("labctl: {why}; booting it again{last}");
                // Its QEMU too, should `vng` have gone without it.
                kill_group(vm.pid);
                attempt += 1;
            }
            None => return Err(err),
        }
    }
}

/// How many times [`start_in`] boots a VM whose boot failed.
const BOOT_ATTEMPTS: u32 = 2;

/// What [`start_in`] says when a failed boot is worth another, and the
/// console's last lines; `None` for a failure another boot would meet too.
fn retry_said(e: &VmError) -> Option<(String, &str)> {
    match e {
        VmError::Gone { last, .. } => Some(("the VM stopped while it booted".into(), last)),
        VmError::Stalled { last, .. } => Some((
            "the VM's kernel reported a stalled CPU while it booted".into(),
            last,
        )),
        VmError::BootTimeout { secs, last, .. } => {
            Some((format!("the VM did not come up within {secs} s"), last))
        }
        _ => None,
    }
}

/// What the guest kernel prints on its console when a CPU stops making
/// progress: an RCU stall (`rcu: INFO: rcu_preempt detected stalls on
/// CPUs/tasks`, `self-detected stall on CPU`) or a soft lockup. Seen
/// under TCG (QEMU 10.0, kernel 6.1): a boot stuck at the 9p root mount,
/// one virtual CPU halted with its timer never firing (`rcu_preempt
/// kthread timer wakeup didn't happen`), which never recovers; the boot
/// would otherwise sit until [`BOOT_LIMIT`]. One of these before the
/// agent is up ends that boot for another (on a heavily loaded host the
/// report can be a false alarm: the last boot waits it out instead).
const BOOT_STALLS: &[&str] = &["detected stall", "BUG: soft lockup"];

/// How long one boot may take before its agent is up.
const BOOT_LIMIT: Duration = Duration::from_secs(180);

/// Start `vng` for the VM in `dir` (labctl's copy at `exe`), its console
/// to `dir/console.log`: made anew, never through a link a guest of an
/// earlier boot left there. (QEMU opens it again by its own path,
/// `/proc/self/fd/2`, truncating it and writing at its own offset.)
fn spawn(dir: &Path, kernel: &Kernel, exe: &Path) -> Result<Vm, VmError> {
    let log = dir.join("console.log");
    let _ = fs::remove_file(&log);
    let console = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&log)
        .map_err(io_err("create the console log"))?;
    let mut cmd = vng(&kernel.release);
    // The guest kernel's console (all of it while the VM boots, see
    // [`BOOT_STALLS`]; the agent keeps only errors once it is up,
    // [`quiet_console`]) goes where vng's output goes: the console log.
    // Without it the log of a boot that hung was empty. About 420 lines
    // of boot and no slower: three alternating boots each way under TCG,
    // 19.4-24.3 s quiet, 20.0-22.0 s with the console.
    cmd.arg("--verbose");
    // `down` recognises its VM by this argument before it signals the pid.
    cmd.arg(format!("--rwdir={}", dir.display()));
    if let Some(ports) = channel::qemu_args(dir) {
        cmd.arg(format!("--qemu-opts={ports}"));
    }
    // `LABCTL_VM_WARM=0`: the guest starts every tool from the host's
    // files (see [`warm`]), for a benchmark's baseline.
    let cold = if std::env::var("LABCTL_VM_WARM").as_deref() == Ok("0") {
        " --cold"
    } else {
        ""
    };
    cmd.arg("--exec")
        .arg(format!("{} __agent {}{cold}", exe.display(), dir.display()));
    cmd.stdin(Stdio::null())
        .stdout(console.try_clone().map_err(io_err("console log"))?)
        .stderr(console);
    // A session of its own: the VM outlives the `labctl up` that started it
    // and takes no signals from its terminal.
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let child = cmd.spawn().map_err(io_err("start vng"))?;
    let vm = Vm {
        dir: dir.to_path_buf(),
        pid: child.id(),
        kernel: kernel.clone(),
        shared: false,
    };
    // The child is reaped by whoever waits for the pid later (`stop`).
    std::mem::forget(child);
    Ok(vm)
}

/// Wait for `vm`'s agent to say it is ready; the errors name `kept_log`,
/// where the caller keeps the console when it stops the VM. With
/// `stalls`, a stall the kernel reports ([`BOOT_STALLS`]) ends the wait.
fn wait_ready(vm: &Vm, kept_log: &Path, stalls: bool) -> Result<(), VmError> {
    let ready = vm.dir.join("ready");
    let log = kept_log.to_path_buf();
    let limit = BOOT_LIMIT;
    let t = Instant::now();
    let mut scan = ConsoleScan::default();
    while !ready.exists() {
        // The console is still in the directory: the caller moves it to
        // `log` when it stops the VM.
        let console = vm.dir.join("console.log");
        let last = || console_tail(&console);
        if !alive(vm.pid) {
            return Err(VmError::Gone { log, last: last() });
        }
        if stalls && scan.finds(&console, BOOT_STALLS) {
            return Err(VmError::Stalled { log, last: last() });
        }
        if t.elapsed() > limit {
            return Err(VmError::BootTimeout {
                secs: limit.as_secs(),
                log,
                last: last(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Reads a growing console log a piece at a time, for text the guest
/// printed since the last look.
#[derive(Default)]
struct ConsoleScan {
    /// How much of the log was looked at.
    seen: u64,
}

impl ConsoleScan {
    /// How much is read in one look at most, and how much of what was
    /// seen is read again (so a mark cut by the end of a look is found by
    /// the next).
    const STEP: u64 = 64 << 10;
    const OVERLAP: u64 = 256;

    /// Whether the console at `path` shows any of `marks` in what it
    /// gained since the last call (at most [`Self::STEP`] of it a call).
    fn finds(&mut self, path: &Path, marks: &[&str]) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = open_in_vm_dir(path, false) else {
            return false;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.seen {
            // A new file (a next boot's): read from its start.
            self.seen = 0;
        }
        if len == self.seen {
            return false;
        }
        let from = self.seen.saturating_sub(Self::OVERLAP);
        if f.seek(SeekFrom::Start(from)).is_err() {
            return false;
        }
        let mut buf = Vec::new();
        let _ = f.take(Self::STEP).read_to_end(&mut buf);
        // Only a mark that ends in the new part: one wholly in the
        // overlap was found (or not) already.
        let new_from = (self.seen - from) as usize;
        self.seen = from + buf.len() as u64;
        marks.iter().any(|m| {
            let m = m.as_bytes();
            buf.windows(m.len())
                .enumerate()
                .any(|(at, w)| w == m && at + m.len() > new_from)
        })
    }
}

/// How many of the console's last lines a VM error quotes.
const TAIL_LINES: usize = 12;

/// The last [`TAIL_LINES`] lines of the console log at `path`, each on a
/// line of its own after a heading, for an error that says the VM stopped
/// or hung: a boot that fails in CI says why in the one message the user
/// sees, before the directory with the log is gone. Empty when the log is
/// missing or empty. At most the last 4 KiB are read; control characters
/// (the guest's terminal escapes) are shown escaped. The guest can write
/// the VM's directory: a symlink there is not followed (nor read).
pub fn console_tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = open_in_vm_dir(path, false) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(4096)));
    let mut buf = Vec::new();
    let _ = f.take(4096).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.chars()
                .flat_map(|c| match c {
                    '\t' => vec![' '],
                    c if c.is_control() => c.escape_default().collect(),
                    c => vec![c],
                })
                .collect()
        })
        .collect();
    // A first line cut by the 4 KiB window is dropped, unless it is all.
    let skip = usize::from(len > 4096 && lines.len() > 1);
    let keep = &lines[skip..];
    let keep = &keep[keep.len().saturating_sub(TAIL_LINES)..];
    if keep.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n  its console's last lines:");
    for l in keep {
        out.push_str("\n    ");
        out.push_str(l);
    }
    out
}

/// Open a file in a VM's directory, which the guest writes too: never
/// through a symlink (a link the guest left would aim the host's root at
/// a host file), never waiting on a FIFO, and only a regular file.
/// `write` creates or truncates it.
fn open_in_vm_dir(path: &Path, write: bool) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = fs::OpenOptions::new();
    if write {
        o.write(true).create(true).truncate(true).mode(0o644);
    } else {
        o.read(true);
    }
    let f = o
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(f)
}

/// [`fs::write`] into a VM's directory ([`open_in_vm_dir`]).
fn write_in_vm_dir(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    open_in_vm_dir(path, true)?.write_all(bytes)
}

/// [`fs::read`] from a VM's directory ([`open_in_vm_dir`]), at most
/// `limit` bytes: the guest decides how big a file there is, so a file
/// over it is an error, not memory the host hands out on the guest's say.
pub(crate) fn read_in_vm_dir(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    open_in_vm_dir(path, false)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is over {limit} bytes", path.display()),
        ));
    }
    Ok(out)
}

/// The most [`read_in_vm_dir`] takes of a file of labctl's own making in a
/// VM's directory (the owner mark, `ready`, a shared VM's record, a
/// reply's exit code): each a line or a small JSON object.
pub(crate) const SMALL_FILE: u64 = 64 << 10;

/// The most [`Vm::call`] takes of a command's standard output or error
/// in the VM: 256 MiB, about twenty times the largest output labctl
/// makes for the largest lab it builds (`plan -o json` of 10,000 pods on
/// 10 nodes is 13 MB, its text 7 MB), and still memory a host can hold.
pub(crate) const REPLY_LIMIT: u64 = 256 << 20;

fn alive(pid: u32) -> bool {
    // Reap it if it ended (it is our child when we started it).
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(pid as i32),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
    crate::sys::process_alive(pid)
}

/// One command's result inside the VM.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Reply {
    /// A reply with no output.
    pub fn code(code: i32) -> Reply {
        Reply {
            code,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }
}

pub use channel::Mode;

#[derive(Serialize, Deserialize)]
struct Request {
    argv: Vec<String>,
}

impl Vm {
    /// Run `labctl ARGV...` inside the VM as a session over its ports,
    /// streams wired as `mode` says, at most `deadline` (`None`: as long as
    /// it runs, for an interactive shell or a monitor). A VM without ports
    /// gets the request through [`Vm::call`] instead: no stdin, output at
    /// the end.
    pub fn session(
        &self,
        argv: &[String],
        mode: Mode,
        deadline: Option<Duration>,
    ) -> Result<Reply, VmError> {
        let log = self.dir.join("console.log");
        // The ports' lock files are written there: only into a directory
        // of ours (the record's path is checked against `dir_of` already).
        if !dir_is_ours(&self.dir, None) {
            return Err(VmError::Command {
                what: format!("reach the VM through {}", self.dir.display()),
                detail: "the directory does not carry labctl's mark; `labctl down` the lab".into(),
            });
        }
        match channel::connect(&self.dir, agent_wait())? {
            Some(port) => channel::run(port, argv, mode, deadline, agent_wait(), &log),
            None => {
                let reply = self.call(argv, deadline.unwrap_or(Duration::from_secs(86_400)))?;
                if mode == Mode::Capture {
                    return Ok(reply);
                }
                use std::io::Write;
                let _ = io::stdout().write_all(&reply.stdout);
                let _ = io::stdout().flush();
                let _ = io::stderr().write_all(&reply.stderr);
                Ok(Reply::code(reply.code))
            }
        }
    }

    /// Run `labctl ARGV...` inside the VM and wait for it, at most
    /// `deadline` (and at most [`agent_wait`] for the agent to take it).
    pub fn call(&self, argv: &[String], deadline: Duration) -> Result<Reply, VmError> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let tmp = self.dir.join(format!(".{id}.tmp"));
        let req = serde_json::to_vec(&Request {
            argv: argv.to_vec(),
        })
        .expect("request is JSON");
        write_in_vm_dir(&tmp, &req).map_err(io_err("write a VM request"))?;
        let posted = self.dir.join(format!("{id}.req"));
        fs::rename(&tmp, &posted).map_err(io_err("post a VM request"))?;
        // The ports' lock files go there: only into a directory of ours.
        if dir_is_ours(&self.dir, None) {
            channel::poke(&self.dir);
        }
        let rc = self.dir.join(format!("{id}.rc"));
        let t = Instant::now();
        let pickup = agent_wait();
        while !rc.exists() {
            if !alive(self.pid) {
                let log = self.dir.join("console.log");
                return Err(VmError::Gone {
                    last: console_tail(&log),
                    log,
                });
            }
            if posted.exists() && t.elapsed() > pickup {
                // Withdrawn, so a late agent does not run it after all.
                let _ = fs::remove_file(&posted);
                return Err(VmError::AgentSilent {
                    secs: pickup.as_secs(),
                    log: self.dir.join("console.log"),
                });
            }
            if t.elapsed() > deadline {
                return Err(VmError::Deadline {
                    what: argv.first().cloned().unwrap_or_default(),
                    secs: deadline.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // A missing file is no output; one over its limit is an error
        // (see [`REPLY_LIMIT`]).
        let read = |ext: &str, limit: u64| match read_in_vm_dir(
            &self.dir.join(format!("{id}.{ext}")),
            limit,
        ) {
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(VmError::Io {
                what: format!("read the reply to `labctl {}`", argv.join(" ")),
                source: e,
            }),
            r => Ok(r.unwrap_or_default()),
        };
        let reply = (|| {
            let code = String::from_utf8_lossy(&read("rc", SMALL_FILE)?)
                .trim()
                .parse()
                .unwrap_or(1);
            Ok(Reply {
                code,
                stdout: read("out", REPLY_LIMIT)?,
                stderr: read("err", REPLY_LIMIT)?,
            })
        })();
        for ext in ["out", "err", "rc"] {
            let _ = fs::remove_file(self.dir.join(format!("{id}.{ext}")));
        }
        reply
    }

    /// The kernel release the agent reported.
    pub fn release(&self) -> String {
        read_in_vm_dir(&self.dir.join("ready"), SMALL_FILE)
            .map(|s| String::from_utf8_lossy(&s).trim().to_string())
            .unwrap_or_else(|_| self.kernel.release.clone())
    }

    /// Ask the agent to end (the VM powers off when it does), then make
    /// sure: SIGKILL the whole process group after `grace`. Only what is
    /// ours is touched: the directory when it carries `mark`, the process
    /// when it is the `vng` that `start` made for that directory (its own
    /// process group leader, `--rwdir=DIR` on its command line). The
    /// console log is kept beside the directory only when `keep_console`
    /// (a VM that failed), for post-mortems. Returns what was left alone
    /// and why.
    pub fn stop(&self, mark: &str, grace: Duration, keep_console: bool) -> Vec<String> {
        let mut left = Vec::new();
        let dir_ours = dir_is_ours(&self.dir, Some(mark));
        let proc_ours = self.process_is_ours();
        if dir_ours {
            let _ = write_in_vm_dir(&self.dir.join("shutdown"), b"");
        }
        if proc_ours {
            let t = Instant::now();
            while alive(self.pid) && t.elapsed() < grace {
                std::thread::sleep(Duration::from_millis(50));
            }
            kill_group(self.pid);
        } else if crate::sys::process_alive(self.pid) {
            left.push(format!(
                "process {} is not the VM labctl started for {}: left alone",
                self.pid,
                self.dir.display()
            ));
        }
        if !dir_ours {
            if fs::symlink_metadata(&self.dir).is_ok() {
                left.push(format!(
                    "{} does not carry the lab's mark: left alone",
                    self.dir.display()
                ));
            }
            return left;
        }
        if let Some(parent) = self.dir.parent().filter(|_| keep_console) {
            let name = self.dir.file_name().unwrap_or_default().to_string_lossy();
            let _ = fs::rename(
                self.dir.join("console.log"),
                parent.join(format!("{name}.console.log")),
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
        left
    }

    /// Whether `pid` is the `vng` that [`start`] spawned for this VM's
    /// directory: a process group leader whose command line carries
    /// `--rwdir=DIR`. A recycled pid or a pid from a forged record is not.
    pub fn process_is_ours(&self) -> bool {
        let Ok(cmdline) = fs::read(format!("/proc/{}/cmdline", self.pid)) else {
            return false;
        };
        let want = format!("--rwdir={}", self.dir.display());
        let named = cmdline.split(|b| *b == 0).any(|arg| arg == want.as_bytes());
        let leader = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(self.pid as i32)))
            .is_ok_and(|pgid| pgid.as_raw() as u32 == self.pid);
        named && leader && self.pid > 1
    }

    /// The program the VM's QEMU runs (`/proc/PID/exe` of the
    /// `qemu-system-*` process in its `vng`'s process group), once it
    /// runs: labctl's own (see [`qemu`]) or the system's.
    pub fn qemu_exe(&self) -> Option<PathBuf> {
        if !self.process_is_ours() {
            return None;
        }
        crate::sys::pids()
            .filter(|&pid| {
                nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32)))
                    .is_ok_and(|g| g.as_raw() as u32 == self.pid)
            })
            .filter_map(|pid| fs::read_link(format!("/proc/{pid}/exe")).ok())
            .find(|exe| {
                exe.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("qemu-system"))
            })
    }
}

/// The file in a VM directory holding the lab's mark.
const OWNER_FILE: &str = "owner";

/// Whether `dir` is a real directory (not a link) holding labctl's mark:
/// `mark` itself, or with `None` any labctl mark.
fn dir_is_ours(dir: &Path, mark: Option<&str>) -> bool {
    if !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return false;
    }
    // The guest can write the directory: a regular file, read without
    // following a link or waiting on a FIFO swapped in meanwhile.
    read_in_vm_dir(&dir.join(OWNER_FILE), SMALL_FILE).is_ok_and(|text| match mark {
        Some(mark) => text == mark.as_bytes(),
        None => text.starts_with(b"labctl:"),
    })
}

/// SIGKILL vng and its QEMU (they share the process group `start` made).
pub fn kill_group(pid: u32) {
    let pgid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pgid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
}

/// The agent inside the VM: serve requests in `dir` until `dir/shutdown`
/// appears. Each request runs as its own `labctl` process, so requests run
/// side by side. With `warm`, the tools labs run are first moved into the
/// guest's memory ([`warm`]).
pub fn agent(dir: &Path, warm: bool) -> io::Result<()> {
    let exe = std::env::current_exe()?;
    // Beside the first requests: what starts before it is done reads the
    // host's files as before.
    if warm {
        std::thread::spawn(|| {
            let t = Instant::now();
            let n = warm::warm();
            // To the console log.
            eprintln!(
                "labctl agent: {n} files of the tools moved into guest memory in {:.2?}",
                t.elapsed()
            );
        });
    }
    let wake = std::sync::Arc::new(channel::Wake::default());
    for port in channel::guest_ports() {
        let (exe, wake) = (exe.clone(), wake.clone());
        std::thread::spawn(move || {
            if let Err(e) = channel::serve(&port, &exe, &wake) {
                eprintln!("labctl agent: {}: {e}", port.display());
            }
        });
    }
    quiet_console();
    fs::write(dir.join("ready"), crate::features::kernel_release())?;
    let mut last_request = Instant::now();
    loop {
        if dir.join("shutdown").exists() {
            return Ok(());
        }
        for entry in fs::read_dir(dir)?.flatten() {
            let path = entry.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".req"))
                .map(String::from)
            else {
                continue;
            };
            let taken = dir.join(format!("{id}.taken"));
            if fs::rename(&path, &taken).is_err() {
                continue;
            }
            last_request = Instant::now();
            let (exe, dir) = (exe.clone(), dir.to_path_buf());
            std::thread::spawn(move || serve_one(&exe, &dir, &id, &taken));
        }
        wake.wait(agent_pause(last_request.elapsed()));
    }
}

/// The guest kernel's console from now on: errors and worse only (a
/// stall, a lockup, a panic), not the lines a lab makes by the thousand
/// (a bridge port's every state change), each of which the emulated
/// serial port would carry. Only in a virtme-ng guest (its PID 1 is
/// `virtme-ng-init`): `__agent` run anywhere else changes nothing.
fn quiet_console() {
    quiet_console_at(
        Path::new("/proc/1/comm"),
        Path::new("/proc/sys/kernel/printk"),
    );
}

/// [`quiet_console`] with PID 1's name read from `init` and the console
/// level written to `printk`.
fn quiet_console_at(init: &Path, printk: &Path) {
    let init = fs::read_to_string(init).unwrap_or_default();
    if init.trim() != "virtme-ng-init" {
        return;
    }
    // The first of the four numbers is the console's level; writing one
    // number sets that alone.
    if let Err(e) = fs::write(printk, "4") {
        eprintln!("labctl agent: the console stays verbose: {e}");
    }
}

/// How long the agent waits before it looks for requests again, `since`
/// the last one came, unless a [`channel::Kind::Wake`] comes first: 20 ms
/// while requests come (a run's `up`, its scenarios, its `down`), a
/// second once none has for two seconds. The host posts a request as a
/// file over 9p, which tells the VM nothing, and then wakes the agent
/// through a free port ([`channel::poke`]); the look is for a request
/// posted while every port is taken. Under emulation each look costs
/// about 16 ms of a host core (QEMU's 9p server and the emulated guest:
/// the idle shared VM used 33 % of a core looking every 20 ms, 14-17 %
/// every 100 ms; `cargo bench --bench vm -- idle`).
fn agent_pause(since: Duration) -> Duration {
    if since < Duration::from_secs(2) {
        Duration::from_millis(20)
    } else {
        Duration::from_secs(1)
    }
}

fn serve_one(exe: &Path, dir: &Path, id: &str, taken: &Path) {
    let code = (|| -> io::Result<i32> {
        let req: Request = serde_json::from_slice(&fs::read(taken)?)?;
        let out = fs::File::create(dir.join(format!("{id}.out")))?;
        let err = fs::File::create(dir.join(format!("{id}.err")))?;
        let status = Command::new(exe)
            .args(&req.argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()?;
        Ok(status.code().unwrap_or(128 + 9))
    })()
    .unwrap_or_else(|e| {
        let _ = fs::write(
            dir.join(format!("{id}.err")),
            format!("labctl agent: {e}\n"),
        );
        1
    });
    let _ = fs::remove_file(taken);
    let tmp = dir.join(format!(".{id}.rc.tmp"));
    if fs::write(&tmp, code.to_string()).is_ok() {
        let _ = fs::rename(&tmp, dir.join(format!("{id}.rc")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new directory of this test process's own under the temporary
    /// directory, for test `name`'s files.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("labctl-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A stall report is found in what the console gained since the last
    /// look, also when a look's end cuts it in two; text already seen is
    /// not found again, and a log begun anew (the next boot) is read from
    /// its start.
    #[test]
    fn a_stall_on_the_console_is_seen_once_as_it_is_printed() {
        use std::io::Write;
        let dir = scratch("scan");
        let log = dir.join("console.log");
        let mut scan = ConsoleScan::default();
        assert!(!scan.finds(&log, BOOT_STALLS), "no log yet");
        let mut f = fs::File::create(&log).unwrap();
        f.write_all(b"[    5.16] virtme initramfs: mounting hostfs...\n")
            .unwrap();
        assert!(!scan.finds(&log, BOOT_STALLS));
        f.write_all(b"[   23.39] rcu: INFO: rcu_preempt detec")
            .unwrap();
        assert!(!scan.finds(&log, BOOT_STALLS), "half a line");
        f.write_all(b"ted stalls on CPUs/tasks:\n").unwrap();
        assert!(scan.finds(&log, BOOT_STALLS), "the other half");
        assert!(!scan.finds(&log, BOOT_STALLS), "seen already");
        // More than a look takes, then a soft lockup: found a look later.
        f.write_all(&vec![b'.'; 2 * ConsoleScan::STEP as usize])
            .unwrap();
        f.write_all(b"\nwatchdog: BUG: soft lockup - CPU#0 stuck for 22s!\n")
            .unwrap();
        let found: Vec<bool> = (0..3).map(|_| scan.finds(&log, BOOT_STALLS)).collect();
        assert_eq!(found, [false, false, true]);
        // The next boot's log starts empty.
        let mut f = fs::File::create(&log).unwrap();
        f.write_all(b"rcu: INFO: rcu_preempt self-detected stall on CPU\n")
            .unwrap();
        assert!(scan.finds(&log, BOOT_STALLS), "a new log is read anew");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A boot that died, stalled or timed out is booted again, saying why
    /// with the console's lines; other errors are not.
    #[test]
    fn only_a_failed_boot_is_tried_again() {
        let (log, last) = (
            PathBuf::from("c.log"),
            "\n  its console's last lines:\n    x",
        );
        let said = |e: VmError| retry_said(&e).map(|(why, l)| format!("{why}; {l}"));
        let gone = VmError::Gone {
            log: log.clone(),
            last: last.into(),
        };
        assert_eq!(
            said(gone).as_deref(),
            Some("the VM stopped while it booted; \n  its console's last lines:\n    x")
        );
        let stalled = VmError::Stalled {
            log: log.clone(),
            last: last.into(),
        };
        assert_eq!(
            said(stalled).as_deref(),
            Some(
                "the VM's kernel reported a stalled CPU while it booted; \n  its console's last lines:\n    x"
            )
        );
        let timeout = VmError::BootTimeout {
            secs: 180,
            log,
            last: last.into(),
        };
        assert_eq!(
            said(timeout).as_deref(),
            Some("the VM did not come up within 180 s; \n  its console's last lines:\n    x")
        );
        assert_eq!(said(VmError::UnknownKernel("9.9".into())), None);
        let other = VmError::Command {
            what: "start".into(),
            detail: "no".into(),
        };
        assert_eq!(said(other), None);
    }

    /// The agent's console setting is the guest's: where PID 1 is not
    /// virtme-ng's init (the host running these tests: its own
    /// /proc/1/comm) nothing is written; in a guest the level becomes 4.
    #[test]
    fn the_console_level_is_set_only_in_a_guest() {
        let dir = scratch("printk");
        let printk = dir.join("printk");
        fs::write(&printk, "7\t4\t1\t7\n").unwrap();
        let host_init = Path::new("/proc/1/comm");
        assert_ne!(
            fs::read_to_string(host_init).unwrap().trim(),
            "virtme-ng-init",
            "the unit tests run on a host"
        );
        quiet_console_at(host_init, &printk);
        assert_eq!(fs::read_to_string(&printk).unwrap(), "7\t4\t1\t7\n");
        let guest_init = dir.join("comm");
        fs::write(&guest_init, "virtme-ng-init\n").unwrap();
        quiet_console_at(&guest_init, &printk);
        assert_eq!(fs::read_to_string(&printk).unwrap(), "4");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stopped_vm_quotes_its_consoles_last_lines() {
        let dir = scratch("tail");
        let log = dir.join("console.log");
        assert_eq!(console_tail(&log), "", "no log, no quote");
        fs::write(&log, "\n\n").unwrap();
        assert_eq!(console_tail(&log), "", "blank lines are not quoted");
        let mut text = String::new();
        for n in 0..400 {
            text.push_str(&format!("[ {n}.000000] line {n}\r\n"));
        }
        text.push_str("Kernel panic - \x1b[1mnot syncing\x1b[0m\n");
        fs::write(&log, &text).unwrap();
        let tail = console_tail(&log);
        let lines: Vec<&str> = tail.strip_prefix('\n').expect("own line").lines().collect();
        assert_eq!(lines[0], "  its console's last lines:");
        assert_eq!(lines.len(), 1 + TAIL_LINES, "{tail}");
        assert_eq!(lines[1], "    [ 389.000000] line 389");
        assert_eq!(
            lines[TAIL_LINES], "    Kernel panic - \\u{1b}[1mnot syncing\\u{1b}[0m",
            "the terminal's escapes are shown, not sent"
        );
        let e = VmError::Gone {
            log: log.clone(),
            last: tail,
        };
        assert!(e.to_string().starts_with(&format!(
            "the VM stopped (console: {})\n  its console's last lines:",
            log.display()
        )));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The guest writes the VM's directory too: what it leaves there (a
    /// symlink to a host file, a FIFO) is never read, written through or
    /// waited on by the host.
    #[test]
    fn the_vm_directory_is_used_only_through_regular_files() {
        let dir = scratch("vmdir");
        let log = dir.join("console.log");
        fs::write(&log, "a line\n").unwrap();
        let link = dir.join("link.log");
        std::os::unix::fs::symlink(&log, &link).unwrap();
        assert_eq!(console_tail(&link), "");
        let fifo = dir.join("fifo.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(console_tail(&fifo), "");
        // Nor is one written through: the host file behind it is intact.
        let target = dir.join("host-file");
        fs::write(&target, "keep").unwrap();
        let planted = dir.join("shutdown");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        assert!(write_in_vm_dir(&planted, b"").is_err());
        assert!(read_in_vm_dir(&planted, SMALL_FILE).is_err());
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert!(
            write_in_vm_dir(&fifo, b"x").is_err(),
            "no reader: not waited for"
        );
        assert!(read_in_vm_dir(&fifo, SMALL_FILE).is_err());
        let plain = dir.join("x.rc");
        write_in_vm_dir(&plain, b"0").unwrap();
        assert_eq!(read_in_vm_dir(&plain, SMALL_FILE).unwrap(), b"0");
        // A file over its limit is an error, one at it is read whole.
        write_in_vm_dir(&plain, b"0123").unwrap();
        assert_eq!(read_in_vm_dir(&plain, 4).unwrap(), b"0123");
        let e = read_in_vm_dir(&plain, 3).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(e.to_string().contains("is over 3 bytes"), "{e}");
        // The mark that says the directory is labctl's: a link to a file
        // that says so is not it.
        let marked = dir.join("marked");
        fs::create_dir_all(&marked).unwrap();
        fs::write(dir.join("mark"), "labctl:x").unwrap();
        std::os::unix::fs::symlink(dir.join("mark"), marked.join(OWNER_FILE)).unwrap();
        assert!(!dir_is_ours(&marked, None));
        fs::remove_file(marked.join(OWNER_FILE)).unwrap();
        fs::write(marked.join(OWNER_FILE), "labctl:x").unwrap();
        assert!(dir_is_ours(&marked, Some("labctl:x")) && !dir_is_ours(&marked, Some("labctl:y")));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_vm_keeps_unused_drivers_and_only_those_from_loading() {
        let cmd = vng("6.1.0-57-amd64");
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = args.iter().position(|a| a == "--append").expect("--append");
        let listed = args[at + 1]
            .strip_prefix("modprobe.blacklist=")
            .expect("a blacklist");
        let listed: Vec<&str> = listed.split(',').collect();
        assert_eq!(listed, UNUSED_DRIVERS);
        // No module a lab feature needs, nor what they pull in.
        let needed = crate::features::Feature::ALL.iter().map(|f| f.module().1);
        let deps = [
            "nf_conntrack",
            "nf_tables",
            "nf_nat",
            "llc",
            "stp",
            "libcrc32c",
        ];
        for m in needed.chain(deps) {
            assert!(!UNUSED_DRIVERS.contains(&m), "{m} is blacklisted");
        }
    }

    #[test]
    fn kvm_only_where_it_is_the_hardware_ones_or_asked_for() {
        let (yes, no) = (|| true, || false);
        // By default: /dev/kvm opens and kvm_intel/kvm_amd is loaded.
        assert!(kvm_choice(None, yes, yes));
        assert!(!kvm_choice(None, yes, no), "kvm_pvm and the like");
        assert!(!kvm_choice(None, no, yes));
        assert!(
            !kvm_choice(Some("yes"), yes, no),
            "only 0 and 1 mean something"
        );
        // Asked for: whenever it opens; refused: never.
        assert!(kvm_choice(Some("1"), yes, no));
        assert!(!kvm_choice(Some("1"), no, yes));
        assert!(!kvm_choice(Some("0"), yes, yes));
    }
}
