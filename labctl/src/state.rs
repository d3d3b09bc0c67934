//! What labctl remembers about a lab between commands: one JSON file per lab
//! under `/run/labctl` (tmpfs, like the namespaces themselves, so both vanish
//! together at reboot), and a lock file so two commands never work on the
//! same lab at once.
//!
//! The state is written before anything is created and lists every namespace
//! the lab is about to make. `down` deletes what it lists, so a lab whose
//! `up` was killed half-way is still removed completely.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::plan::NsSpec;
use crate::serve::Served;

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
}

/// One lab's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub lab: String,
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

fn state_path(lab: &str) -> PathBuf {
    state_dir().join(format!("{lab}.json"))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Read a lab's state; `None` when the lab is not up.
pub fn load(lab: &str) -> Result<Option<LabState>, StateError> {
    let path = state_path(lab);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StateError::Corrupt { path, source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Write a lab's state atomically (temp file, fsync, rename): a reader sees
/// the old record or the new one, never half of one, even after SIGKILL.
pub fn save(state: &LabState) -> Result<(), StateError> {
    let dir = state_dir();
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let path = state_path(&state.lab);
    let tmp = dir.join(format!(".{}.json.tmp", state.lab));
    let json = serde_json::to_vec_pretty(state).expect("state serializes");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&json).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))
}

/// Forget a lab.
pub fn remove(lab: &str) -> Result<(), StateError> {
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
        if let Some(lab) = name.strip_suffix(".json").filter(|n| !n.starts_with('.'))
            && let Some(state) = load(lab)?
        {
            labs.push(state);
        }
    }
    labs.sort_by(|a, b| a.lab.cmp(&b.lab));
    Ok(labs)
}

/// An exclusive lock on one lab, held until dropped.
pub struct LabLock(#[expect(dead_code, reason = "held for its Drop")] Flock<File>);

/// Take the lab's lock without waiting: a second command on the same lab is
/// told at once instead of hanging.
pub fn lock(lab: &str) -> Result<LabLock, StateError> {
    let dir = state_dir();
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let path = dir.join(format!(".{lab}.lock"));
    let file = File::create(&path).map_err(io_err(&path))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map(LabLock)
        .map_err(|_| StateError::Busy {
            lab: lab.to_string(),
            path,
        })
}
