//! What labctl remembers about a lab between commands: one JSON file per lab
//! under `/run/labctl` (tmpfs, like the namespaces themselves, so both vanish
//! together at reboot), and a lock file so two commands never work on the
//! same lab at once.
//!
//! The state is written before anything is created and lists every namespace
//! the lab is about to make. `down` deletes what it lists, so a lab whose
//! `up` was killed half-way is still removed completely.
//!
//! A record is data, not orders: lab names are checked before they become a
//! path (`[a-z0-9-]`, as `name:` in a topology), a record is read only from
//! the file of its own lab, entries that could not have been written by
//! `up` for that lab (a namespace not named `LAB-ENTITY`, a VM directory
//! other than labctl's own for that lab) are dropped and reported in
//! [`LabState::rejected`], and `down` deletes nothing that does not carry
//! the lab's mark ([`crate::owner`]).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::Flock;
use serde::{Deserialize, Serialize};

use crate::plan::NsSpec;
use crate::traffic::Proto;

/// Errors reading or writing lab state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("access lab state in {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("read lab state {path}: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("lab `{lab}` is busy: another labctl command holds {path}")]
    Busy { lab: String, path: PathBuf },
    #[error("invalid lab name: {0}")]
    BadName(String),
}

/// The ports the built-in servers serve in one namespace (see the serve
/// module); on the command line of `__serve` as
/// `NETNS=80/tcp,53/udp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    pub netns: String,
    pub ports: Vec<(u16, Proto)>,
}

impl Served {
    /// The ports as `80/tcp 53/udp`.
    pub fn ports_text(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|(port, proto)| format!("{port}/{proto}"))
            .collect()
    }
}

impl std::fmt::Display for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.netns, self.ports_text().join(","))
    }
}

impl FromStr for Served {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (netns, list) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not NETNS=PORT/PROTO,..."))?;
        let ports = list
            .split(',')
            .map(|p| {
                let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                let port = port.parse().map_err(|_| format!("bad port `{p}`"))?;
                let proto = match proto {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    _ => return Err(format!("bad protocol `{p}` (tcp or udp)")),
                };
                Ok((port, proto))
            })
            .collect::<Result<_, String>>()?;
        Ok(Served {
            netns: netns.to_string(),
            ports,
        })
    }
}

/// One lab's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub lab: String,
    /// Random per `up`; with the name it makes the lab's ownership mark
    /// (absent in records of older labctl versions: nothing matches then).
    #[serde(default)]
    pub id: String,
    /// The topology file it was brought up from.
    pub file: Option<PathBuf>,
    /// Seconds since the epoch when `up` started.
    pub started: u64,
    /// Process id of the `up` that made it.
    pub pid: u32,
    /// False until `up` has finished; a false here after `up` exited means it
    /// was interrupted.
    pub complete: bool,
    /// Where the lab runs: `host`, or `vm` (then [`LabState::vm`] says which).
    pub runtime: String,
    /// The VM the lab runs in, for `runtime: vm`; its namespaces are inside
    /// it, so `namespaces` is empty on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<crate::vm::Vm>,
    /// Every namespace the lab creates, in creation order.
    pub namespaces: Vec<NsSpec>,
    /// The built-in servers, once they listen (absent in older records and
    /// for labs whose pods declare no ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<ServeState>,
    /// A digest of what `up` built: the plan's commands and the ports it
    /// serves (the engine's `plan_digest`). `run` on a lab that is up
    /// refuses a file or `--var` whose plan differs, rather than checking
    /// one lab's scenarios against another build. Absent in older records
    /// and on the host for a lab in a VM (the VM's own record has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_digest: Option<String>,
    /// What [`load`] dropped from the file as not this lab's, in words.
    #[serde(skip)]
    pub rejected: Vec<String>,
}

/// The lab's `labctl __serve` process and what it serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeState {
    pub pid: u32,
    pub served: Vec<Served>,
}

impl LabState {
    pub fn new(lab: &str, file: Option<&Path>, namespaces: Vec<NsSpec>) -> Self {
        LabState {
            lab: lab.to_string(),
            id: crate::owner::new_id(),
            file: file.map(|f| fs::canonicalize(f).unwrap_or_else(|_| f.to_path_buf())),
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            pid: std::process::id(),
            complete: false,
            runtime: "host".into(),
            vm: None,
            namespaces,
            serve: None,
            plan_digest: None,
            rejected: Vec::new(),
        }
    }

    /// The mark every object of this lab carries ([`crate::owner::mark`]).
    pub fn mark(&self) -> String {
        crate::owner::mark(&self.lab, &self.id)
    }

    /// Drop what `up` of lab `lab` could not have written, saying why.
    fn confine(&mut self, lab: &str) {
        if self.lab != lab {
            self.rejected.push(format!(
                "the record names lab `{}`, not `{lab}`: it was ignored",
                self.lab.escape_debug()
            ));
            self.lab = lab.to_string();
            self.namespaces.clear();
            self.vm = None;
            self.serve = None;
            return;
        }
        if self.id.is_empty() {
            self.rejected.push(
                "the record has no lab id (written by a labctl before ownership marks, or by \
                 hand): nothing can be shown to be this lab's, so nothing is removed; delete \
                 what is left with `ip netns delete`"
                    .into(),
            );
        } else if !self.id.chars().all(|c| c.is_ascii_hexdigit()) || self.id.len() > 32 {
            self.rejected
                .push("the record's lab id is not an id: nothing of it can be ours".into());
            self.id.clear();
        }
        let prefix = format!("{lab}-");
        let rejected = &mut self.rejected;
        self.namespaces.retain(|ns| {
            let ok = ns.name == format!("{prefix}{}", ns.entity) && entity_name_ok(&ns.entity);
            if !ok {
                rejected.push(format!(
                    "namespace `{}` is not a name `up` gives lab `{lab}`: left alone",
                    ns.name.escape_debug()
                ));
            }
            ok
        });
        if let Some(vm) = &self.vm {
            // A lab's own VM, or the shared VM of the record's kernel.
            let dir = if vm.shared {
                crate::vm::shared::dir_for(&vm.kernel.release)
            } else {
                Some(crate::vm::dir_of(lab))
            };
            if dir.as_ref() != Some(&vm.dir) {
                self.rejected.push(format!(
                    "the VM directory `{}` is not labctl's own for this lab ({}): left alone",
                    vm.dir.display(),
                    dir.map_or("none".into(), |d| d.display().to_string())
                ));
                self.vm = None;
            }
        }
        if let Some(serve) = &mut self.serve {
            let names: std::collections::HashSet<&str> =
                self.namespaces.iter().map(|n| n.name.as_str()).collect();
            serve.served.retain(|s| names.contains(s.netns.as_str()));
        }
    }

    /// Namespace of an entity of this lab, if the lab has it.
    pub fn netns_of(&self, entity: &str) -> Option<&NsSpec> {
        self.namespaces.iter().find(|n| n.entity == entity)
    }
}

/// The directory holding lab state (`LABCTL_STATE_DIR` overrides `/run/labctl`).
pub fn state_dir() -> PathBuf {
    std::env::var_os("LABCTL_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/labctl"))
}

/// An entity name as the topology allows it (a-z, 0-9, '-', '.'), so that
/// `LAB-ENTITY` is one plain file name under /run/netns.
fn entity_name_ok(entity: &str) -> bool {
    !entity.is_empty()
        && entity.len() <= labctl_topology::ENTITY_NAME_MAX
        && entity
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// Check a lab name before it becomes part of a path.
fn checked(lab: &str) -> Result<(), StateError> {
    labctl_topology::check_lab_name(lab).map_err(StateError::BadName)
}

fn state_path(lab: &str) -> PathBuf {
    state_dir().join(format!("{lab}.json"))
}

fn tmp_path(lab: &str) -> PathBuf {
    state_dir().join(format!(".{lab}.json.tmp"))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Read a lab's state; `None` when the lab is not up.
/// What a record says is checked against the lab it is the file of:
/// entries `up` could not have written are dropped ([`LabState::rejected`]).
pub fn load(lab: &str) -> Result<Option<LabState>, StateError> {
    checked(lab)?;
    let path = state_path(lab);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<LabState>(&bytes)
            .map(|mut state| {
                state.confine(lab);
                Some(state)
            })
            .map_err(|source| StateError::Corrupt { path, source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Write a lab's state atomically (temp file, fsync, rename): a reader sees
/// the old record or the new one, never half of one, even after SIGKILL.
/// Callers hold the lab's [`lock`], so a temp file left by a killed writer
/// is simply written over.
pub fn save(state: &LabState) -> Result<(), StateError> {
    checked(&state.lab)?;
    let dir = state_dir();
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let path = state_path(&state.lab);
    let tmp = tmp_path(&state.lab);
    let json = serde_json::to_vec_pretty(state).expect("state serializes");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&json).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))
}

/// Forget a lab: its record and any temp file a killed writer left.
pub fn remove(lab: &str) -> Result<(), StateError> {
    checked(lab)?;
    let _ = fs::remove_file(tmp_path(lab));
    let path = state_path(lab);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
        _ => Ok(()),
    }
}

/// Every lab with a state file, by name.
pub fn list() -> Result<Vec<LabState>, StateError> {
    let dir = state_dir();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    let mut labs = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Files that are no lab's record (a name `up` cannot give) are
        // not read at all.
        if let Some(lab) = name.strip_suffix(".json").filter(|n| checked(n).is_ok())
            && let Some(state) = load(lab)?
        {
            labs.push(state);
        }
    }
    labs.sort_by(|a, b| a.lab.cmp(&b.lab));
    Ok(labs)
}

/// An exclusive lock on one lab, held until dropped. The lock file is
/// removed when the lock is released, so none pile up.
pub struct LabLock {
    file: Flock<File>,
    path: PathBuf,
}

impl Drop for LabLock {
    fn drop(&mut self) {
        // Still holding the lock: whoever opens the path from now on finds
        // another file (or none) and, taking its lock, checks that it is
        // the one at the path (see `lock`).
        if crate::sys::same_file(&self.file, &self.path) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// How long [`lock`] waits for a lab another process holds. A command that
/// really works on the lab holds it for seconds and more, so this is no
/// queue. It is for the holder that is already gone but for a moment: a
/// child that `up` forked to start the built-in servers shares the lock's
/// open file until its `exec` closes it (`O_CLOEXEC`), so when `up` is
/// killed just then, the lock outlives it by the few milliseconds that
/// `exec` takes, and a `down` right after was refused as busy.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(1500);

/// Take the lab's lock, waiting at most [`LOCK_GRACE`]: a second command on
/// the same lab is told it is busy instead of hanging.
pub fn lock(lab: &str) -> Result<LabLock, StateError> {
    checked(lab)?;
    let dir = state_dir();
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let path = dir.join(format!(".{lab}.lock"));
    // Each retry means another command released the lab meanwhile; a
    // file replaced this often is someone's doing, and the lab busy.
    for _ in 0..100 {
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err(&path))?;
        let file = crate::sys::lock_within(file, LOCK_GRACE).map_err(|_| StateError::Busy {
            lab: lab.to_string(),
            path: path.clone(),
        })?;
        // The holder before us may have removed the file between our open
        // and our lock: then the lock is on a file nobody else will see.
        if crate::sys::same_file(&file, &path) {
            return Ok(LabLock { file, path });
        }
    }
    Err(StateError::Busy {
        lab: lab.to_string(),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use labctl_topology::Role;

    fn ns(name: &str, entity: &str) -> NsSpec {
        NsSpec {
            name: name.into(),
            entity: entity.into(),
            role: Role::Pod,
        }
    }

    #[test]
    fn a_record_keeps_only_what_up_could_have_written() {
        let mut s = LabState::new(
            "lab",
            None,
            vec![
                ns("lab-pod", "pod"),
                ns("../../tmp/x", "x"),
                ns("other-pod", "pod"),
                ns("lab-a/b", "a/b"),
                ns("lab-..", ".."),
            ],
        );
        s.vm = Some(crate::vm::Vm {
            dir: "/tmp/elsewhere".into(),
            pid: 1,
            kernel: crate::vm::Kernel {
                release: "r".into(),
                vmlinuz: "/v".into(),
                modules: "/m".into(),
            },
            shared: false,
        });
        s.confine("lab");
        let names: Vec<&str> = s.namespaces.iter().map(|n| n.name.as_str()).collect();
        // `lab-..` is a plain file name under /run/netns, like any other.
        assert_eq!(names, ["lab-pod", "lab-.."]);
        assert!(s.vm.is_none());
        assert_eq!(s.rejected.len(), 4, "{:?}", s.rejected);
    }

    #[test]
    fn a_lab_in_a_shared_vm_names_that_vms_directory_and_no_other() {
        let release = "6.12.57+deb13-amd64";
        let vm = |dir: PathBuf, release: &str| crate::vm::Vm {
            dir,
            pid: 1,
            kernel: crate::vm::Kernel {
                release: release.into(),
                vmlinuz: "/v".into(),
                modules: "/m".into(),
            },
            shared: true,
        };
        let shared = crate::vm::shared::dir_for(release).unwrap();
        let mut s = LabState::new("lab", None, Vec::new());
        s.vm = Some(vm(shared.clone(), release));
        s.confine("lab");
        assert!(s.vm.is_some(), "{:?}", s.rejected);
        // Shared, but another directory: a lab's own, or elsewhere.
        for dir in [crate::vm::dir_of("lab"), "/tmp/x".into()] {
            let mut s = LabState::new("lab", None, Vec::new());
            s.vm = Some(vm(dir, release));
            s.confine("lab");
            assert!(s.vm.is_none());
        }
        // A release that is a path names no directory.
        let mut s = LabState::new("lab", None, Vec::new());
        s.vm = Some(vm(shared.join("../../x"), "../../x"));
        s.confine("lab");
        assert!(s.vm.is_none());
    }

    #[test]
    fn a_record_of_another_lab_is_emptied() {
        let mut s = LabState::new("other", None, vec![ns("other-pod", "pod")]);
        s.confine("lab");
        assert!(s.namespaces.is_empty());
        assert_eq!(s.lab, "lab");
        assert!(s.rejected[0].contains("names lab `other`"));
    }

    #[test]
    fn a_record_without_an_id_matches_nothing_and_says_why() {
        let mut s = LabState::new("lab", None, vec![ns("lab-pod", "pod")]);
        s.id.clear();
        s.confine("lab");
        assert!(s.rejected[0].contains("no lab id"));
    }

    #[test]
    fn lab_names_that_are_paths_are_refused() {
        for bad in ["/../../tmp/x/victim", "../x", "a/b", "", "UPPER", "x.y"] {
            assert!(
                matches!(load(bad), Err(StateError::BadName(_))),
                "{bad:?} accepted"
            );
            assert!(matches!(lock(bad), Err(StateError::BadName(_))));
        }
    }
}
