//! Shared VMs: one warm VM per kernel release, started by `labctl vm
//! start` and up until `labctl vm stop`, that every lab needing that
//! kernel lives in, each in its own namespaces as on the host, instead of
//! booting a VM of its own (15-20 s under software emulation, where the
//! lab inside takes a few).
//!
//! A shared VM lives in `LIB/vm-shared/RELEASE` ([`dir_for`]: labctl's own
//! directory, RELEASE an installed kernel's checked to be one plain file
//! name), marked as a lab's VM directory is, with [`RECORD`] holding the
//! `vng` pid, the kernel and the labctl build the VM runs. A lab is put
//! in it only when it is [`Health::Ready`]: the record's own directory
//! and mark, its `vng` alive and ours, the agent ready, and the same
//! labctl build as the caller (host and agent pass argv of one version).
//! Otherwise labs boot their own VM, as without a shared one.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Kernel, Vm, VmError, alive, dir_is_ours, io_err, lib_dir};

/// The record of a shared VM, in its directory.
pub const RECORD: &str = "shared.json";

/// How long a shared VM has to power off by itself before it is killed.
const GRACE: Duration = Duration::from_secs(15);

/// The directory holding labctl's shared VMs.
pub fn root() -> PathBuf {
    lib_dir().join("vm-shared")
}

/// Whether `release` can name a shared VM's directory: one plain file
/// name of the characters kernel releases use.
pub fn release_ok(release: &str) -> bool {
    !release.is_empty()
        && release.len() <= 64
        && !release.starts_with('.')
        && release
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
}

/// The directory of the shared VM with kernel `release`.
pub fn dir_for(release: &str) -> Option<PathBuf> {
    release_ok(release).then(|| root().join(release))
}

/// Which labctl build a VM runs: its binary's size and modification time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    pub len: u64,
    pub mtime_ns: i128,
}

impl Build {
    /// The build of the binary at `path`.
    pub fn of(path: &Path) -> Option<Build> {
        let m = fs::metadata(path).ok()?;
        Some(Build {
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }

    /// The build of the running labctl.
    pub fn current() -> Option<Build> {
        Build::of(&std::env::current_exe().ok()?)
    }
}

/// A shared VM as its record describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shared {
    pub vm: Vm,
    /// Random per start; with the release it makes the VM's mark.
    pub id: String,
    pub build: Build,
    /// Seconds since the epoch when it was started.
    pub started: u64,
}

impl Shared {
    /// The mark in the shared VM's directory.
    pub fn mark(&self) -> String {
        mark(&self.vm.kernel.release, &self.id)
    }
}

fn mark(release: &str, id: &str) -> String {
    format!("labctl:vm-shared:{release}:{id}")
}

/// What can be seen of a shared VM from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its directory carries the record's mark.
    pub marked: bool,
    /// Its `vng` runs and is the one started for the directory.
    pub process_ours: bool,
    /// The agent wrote `ready`.
    pub ready: bool,
    /// The caller's labctl build.
    pub build: Option<Build>,
}

/// Whether a shared VM can take labs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ready,
    /// Up, the agent not ready yet.
    Booting,
    /// Its process is gone (or is not ours).
    Gone,
    /// It runs another labctl build than the caller.
    OtherBuild,
    /// The record is not one `vm start` wrote for this release: why.
    Foreign(String),
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Health::Ready => f.write_str("ready"),
            Health::Booting => f.write_str("booting"),
            Health::Gone => f.write_str("gone (its QEMU is not running)"),
            Health::OtherBuild => f.write_str("runs another labctl build (restart it)"),
            Health::Foreign(why) => write!(f, "not usable: {why}"),
        }
    }
}

/// Judge a shared VM of kernel `release` from its record and what is seen
/// of it (no I/O: [`look`] gathers `seen`).
pub fn judge(rec: &Shared, release: &str, seen: &Seen) -> Health {
    if rec.vm.kernel.release != release || dir_for(release).as_ref() != Some(&rec.vm.dir) {
        return Health::Foreign(format!(
            "the record names {} (kernel {}), not the shared VM of {release}",
            rec.vm.dir.display(),
            rec.vm.kernel.release
        ));
    }
    if !seen.marked {
        return Health::Foreign("its directory does not carry the record's mark".into());
    }
    if !seen.process_ours {
        return Health::Gone;
    }
    if !seen.ready {
        return Health::Booting;
    }
    if seen.build.as_ref() != Some(&rec.build) {
        return Health::OtherBuild;
    }
    Health::Ready
}

/// The record in `dir`, when it is a plain file that parses.
fn read_record(dir: &Path) -> Option<Shared> {
    // A regular file only, never through a link (see `read_in_vm_dir`).
    serde_json::from_slice(&super::read_in_vm_dir(&dir.join(RECORD), super::SMALL_FILE).ok()?).ok()
}

/// The shared VM of kernel `release` and its health, when it has a record.
pub fn look(release: &str) -> Option<(Shared, Health)> {
    let dir = dir_for(release)?;
    let rec = read_record(&dir)?;
    let seen = Seen {
        marked: dir_is_ours(&dir, Some(&rec.mark())),
        process_ours: rec.vm.dir == dir && rec.vm.process_is_ours() && alive(rec.vm.pid),
        ready: fs::symlink_metadata(dir.join("ready")).is_ok_and(|m| m.is_file()),
        build: Build::current(),
    };
    let health = judge(&rec, release, &seen);
    Some((rec, health))
}

/// The shared VM to put a lab needing kernel `release` in: one that is
/// [`Health::Ready`], else `None` (the lab boots a VM of its own, as it
/// always does with `LABCTL_SHARED_VM=off`).
pub fn find(release: &str) -> Option<Vm> {
    if std::env::var("LABCTL_SHARED_VM").is_ok_and(|v| v == "off") {
        return None;
    }
    match look(release)? {
        (rec, Health::Ready) => Some(rec.vm),
        _ => None,
    }
}

/// Every shared VM with a directory, by release, with its health (`None`:
/// a directory without a record, a start interrupted early).
pub fn list() -> Vec<(String, Option<(Shared, Health)>)> {
    let mut out: Vec<_> = fs::read_dir(root())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            release_ok(&name).then(|| {
                let seen = look(&name);
                (name, seen)
            })
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// How long [`lock`] waits for another `vm start` or `vm stop` of the
/// same release: longer than a boot may take (180 s) and its grace.
const LOCK_WAIT: Duration = Duration::from_secs(240);

/// One release's lock, held while its shared VM starts or stops; a second
/// `vm start` waits for the first (at most [`LOCK_WAIT`]) and then finds
/// its VM up.
fn lock(release: &str) -> Result<nix::fcntl::Flock<fs::File>, VmError> {
    use std::os::unix::fs::OpenOptionsExt;
    let root = root();
    let path = lock_path(release);
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        // A `stop` removes the directory when it empties it.
        fs::create_dir_all(&root).map_err(io_err(format!("create {}", root.display())))?;
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err(format!("open {}", path.display())))?;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let file = crate::sys::lock_within(file, left).map_err(|e| VmError::Io {
            what: format!(
                "lock {} (another `labctl vm start` or `vm stop` held it for {} s)",
                path.display(),
                LOCK_WAIT.as_secs()
            ),
            source: e.into(),
        })?;
        // A `stop` before us removed the file between our open and our
        // lock: then the lock is on a file nobody else sees; again.
        if crate::sys::same_file(&file, &path) {
            return Ok(file);
        }
    }
}

fn lock_path(release: &str) -> PathBuf {
    root().join(format!(".{release}.lock"))
}

fn bad_release(release: &str) -> VmError {
    VmError::UnknownKernel(release.escape_debug().to_string())
}

/// Start the shared VM of `kernel` and wait for its agent; one that is up
/// and ready already is kept. Returns it and whether it was started now.
/// A leftover of ours that cannot serve (stopped, booted by another
/// labctl build, a start interrupted) is stopped first.
pub fn start(kernel: &Kernel) -> Result<(Shared, bool), VmError> {
    let release = &kernel.release;
    let dir = dir_for(release).ok_or_else(|| bad_release(release))?;
    let _lock = lock(release)?;
    if let Some((rec, Health::Ready)) = look(release) {
        return Ok((rec, false));
    }
    let left = stop_locked(release);
    if fs::symlink_metadata(&dir).is_ok() {
        return Err(VmError::Command {
            what: format!("prepare {}", dir.display()),
            detail: left.join("; "),
        });
    }
    let id = crate::owner::new_id();
    let mark = mark(release, &id);
    let build = Build::current().ok_or_else(|| VmError::Command {
        what: "find the labctl binary".into(),
        detail: "no metadata for /proc/self/exe".into(),
    })?;
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut rec = None;
    let kept = root().join(format!("{release}.console.log"));
    let booted = super::start_in(&dir, kernel, &mark, &kept, &mut |vm| {
        let mut vm = vm.clone();
        vm.shared = true;
        let r = Shared {
            vm,
            id: id.clone(),
            build: build.clone(),
            started,
        };
        write_record(&dir, &r)?;
        rec = Some(r);
        Ok(())
    });
    match (booted, rec) {
        (Ok(_), Some(rec)) => Ok((rec, true)),
        (Ok(vm), None) => Err(VmError::Command {
            what: format!("start the shared VM in {}", vm.dir.display()),
            detail: "no record was written".into(),
        }),
        (Err(e), rec) => {
            if let Some(rec) = rec {
                rec.vm.stop(&mark, Duration::ZERO, true);
            }
            Err(e)
        }
    }
}

/// Write the record atomically (temp file, rename).
fn write_record(dir: &Path, rec: &Shared) -> Result<(), VmError> {
    let tmp = dir.join(format!(".{RECORD}.tmp"));
    let json = serde_json::to_vec_pretty(rec).expect("record is JSON");
    fs::write(&tmp, json).map_err(io_err("write the shared VM's record"))?;
    fs::rename(&tmp, dir.join(RECORD)).map_err(io_err("write the shared VM's record"))
}

/// Stop the shared VM of kernel `release`: ask its agent to end, kill its
/// processes after a grace period, remove its directory. Only what is ours
/// is touched; returns what was left alone and why. The labs that lived in
/// it are gone with it (their host records are the caller's to forget).
pub fn stop(release: &str) -> Result<Vec<String>, VmError> {
    if !release_ok(release) {
        return Err(bad_release(release));
    }
    let _lock = lock(release)?;
    let left = stop_locked(release);
    // Held still: nothing of this release is left, the lock file neither.
    let _ = fs::remove_file(lock_path(release));
    let _ = fs::remove_dir(root());
    Ok(left)
}

fn stop_locked(release: &str) -> Vec<String> {
    let Some(dir) = dir_for(release) else {
        return vec![format!("`{}` is no kernel release", release.escape_debug())];
    };
    if fs::symlink_metadata(&dir).is_err() {
        return Vec::new();
    }
    match read_record(&dir) {
        Some(rec) if rec.vm.dir == dir && rec.vm.kernel.release == release => {
            rec.vm.stop(&rec.mark(), GRACE, false)
        }
        _ if dir_is_ours(&dir, None) => {
            // A start interrupted before its record: its `vng`, if any,
            // is found by the directory on its command line.
            if let Some(pid) = vng_of(&dir) {
                super::kill_group(pid);
            }
            let _ = fs::remove_dir_all(&dir);
            Vec::new()
        }
        _ => vec![format!(
            "{} was not made by labctl: left alone",
            dir.display()
        )],
    }
}

/// The `vng` process started for directory `dir`, if one runs.
fn vng_of(dir: &Path) -> Option<u32> {
    crate::sys::pids().find(|&pid| {
        Vm {
            dir: dir.to_path_buf(),
            pid,
            kernel: Kernel {
                release: String::new(),
                vmlinuz: PathBuf::new(),
                modules: PathBuf::new(),
            },
            shared: true,
        }
        .process_is_ours()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(release: &str) -> Shared {
        Shared {
            vm: Vm {
                dir: dir_for(release).unwrap(),
                pid: 42,
                kernel: Kernel {
                    release: release.into(),
                    vmlinuz: format!("/boot/vmlinuz-{release}").into(),
                    modules: format!("/lib/modules/{release}").into(),
                },
                shared: true,
            },
            id: "00aa".into(),
            build: Build {
                len: 7,
                mtime_ns: 9,
            },
            started: 0,
        }
    }

    fn seen() -> Seen {
        Seen {
            marked: true,
            process_ours: true,
            ready: true,
            build: Some(Build {
                len: 7,
                mtime_ns: 9,
            }),
        }
    }

    const R: &str = "6.12.57+deb13-amd64";

    #[test]
    fn a_shared_vm_takes_labs_only_when_everything_checks_out() {
        assert_eq!(judge(&rec(R), R, &seen()), Health::Ready);
        let s = Seen {
            ready: false,
            ..seen()
        };
        assert_eq!(judge(&rec(R), R, &s), Health::Booting);
        let s = Seen {
            process_ours: false,
            ..seen()
        };
        assert_eq!(judge(&rec(R), R, &s), Health::Gone);
        let s = Seen {
            build: Some(Build {
                len: 7,
                mtime_ns: 10,
            }),
            ..seen()
        };
        assert_eq!(judge(&rec(R), R, &s), Health::OtherBuild);
        let s = Seen {
            build: None,
            ..seen()
        };
        assert_eq!(judge(&rec(R), R, &s), Health::OtherBuild);
        let s = Seen {
            marked: false,
            ..seen()
        };
        assert!(matches!(judge(&rec(R), R, &s), Health::Foreign(_)));
    }

    #[test]
    fn a_record_for_another_kernel_or_directory_is_foreign() {
        // Asked for another release than the record's.
        assert!(matches!(
            judge(&rec(R), "6.1.0-1-amd64", &seen()),
            Health::Foreign(_)
        ));
        // A record pointing at a directory of someone else's.
        let mut r = rec(R);
        r.vm.dir = "/tmp/x".into();
        assert!(matches!(judge(&r, R, &seen()), Health::Foreign(_)));
        // Or at a lab's own VM directory.
        r.vm.dir = super::super::dir_of("lab");
        assert!(matches!(judge(&r, R, &seen()), Health::Foreign(_)));
    }

    #[test]
    fn only_plain_release_names_make_a_directory() {
        assert!(dir_for(R).is_some_and(|d| d.parent() == Some(root().as_path())));
        for bad in [
            "", ".", "..", "../x", "a/b", ".hidden", "a b", "a\nb", "x;rm",
        ] {
            assert!(dir_for(bad).is_none(), "{bad:?}");
        }
        assert!(dir_for(&"9".repeat(65)).is_none());
    }

    #[test]
    fn the_mark_names_the_release_and_the_start() {
        let r = rec(R);
        assert_eq!(r.mark(), format!("labctl:vm-shared:{R}:00aa"));
        // What `dir_is_ours(_, None)` accepts as any labctl mark.
        assert!(r.mark().starts_with("labctl:"));
    }

    #[test]
    fn a_record_round_trips_and_a_lab_record_keeps_the_flag() {
        let r = rec(R);
        let back: Shared = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert!(back.vm.shared);
        assert_eq!(back.build, r.build);
        // A per-lab VM's record (older labctl too) has no flag: not shared.
        let vm: Vm = serde_json::from_str(
            r#"{"dir":"/var/lib/labctl/vm/x","pid":1,"kernel":{"release":"r","vmlinuz":"/v","modules":"/m"}}"#,
        )
        .unwrap();
        assert!(!vm.shared);
    }

    #[test]
    fn nothing_is_found_without_a_record() {
        let tmp = std::env::temp_dir().join(format!("labctl-shared-{}", std::process::id()));
        fs::create_dir_all(&tmp).unwrap();
        assert!(read_record(&tmp).is_none());
        // A link in place of the record is not followed.
        std::os::unix::fs::symlink("/etc/hostname", tmp.join(RECORD)).unwrap();
        assert!(read_record(&tmp).is_none());
        fs::remove_dir_all(&tmp).unwrap();
    }
}
