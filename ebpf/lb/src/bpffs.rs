//! The bpffs labctl pins its maps in. Hosts without `/sys/fs/bpf` are
//! common (containers, minimal VMs), so labctl mounts its own at
//! [`DEFAULT_BPFFS`] and keeps one sub-directory per lab under it.

use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
};

use nix::{
    mount::{MntFlags, MsFlags},
    sys::statfs,
};

use crate::{Error, Result};

/// Where labctl mounts its bpffs when asked to.
pub const DEFAULT_BPFFS: &str = "/run/labctl/bpf";

/// Files the kernel puts at the root of every bpffs it mounts when built
/// with `CONFIG_BPF_PRELOAD` (iterators listing maps and programs); they do
/// not count as content and cannot be removed.
const PRELOADED: [&str; 2] = ["maps.debug", "progs.debug"];

fn preloaded(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| PRELOADED.contains(&n))
}

/// Whether `dir` lies on a bpffs (`statfs(2)` reports `BPF_FS_MAGIC`).
pub fn is_bpffs(dir: &Path) -> Result<bool> {
    let st = statfs::statfs(dir).map_err(|e| Error::Io {
        path: dir.to_owned(),
        action: "statfs",
        source: e.into(),
    })?;
    Ok(st.filesystem_type() == statfs::BPF_FS_MAGIC)
}

/// Makes `dir` a bpffs: creates it and, unless it already is on one, mounts
/// a bpffs there (like `mount -t bpf bpffs DIR`; mode 0700, nosuid, nodev,
/// noexec). Returns whether it mounted one. Needs `CAP_SYS_ADMIN` in the
/// initial mount namespace's owner.
pub fn ensure_bpffs(dir: &Path) -> Result<bool> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        action: "create",
        source,
    })?;
    if is_bpffs(dir)? {
        return Ok(false);
    }
    nix::mount::mount(
        Some("bpffs"),
        dir,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )
    .map_err(|source| Error::Mount {
        dir: dir.to_owned(),
        action: "mount",
        source,
    })?;
    Ok(true)
}

/// Removes the maps pinned in `pin_dir` and the directory itself (like
/// `rm -r PIN_DIR` on the bpffs); `pin_dir` is a per-lab directory under
/// the mount, not the mount itself. Keeps going past failures and reports them
/// all. A map stays in the kernel while a tc filter's program still uses it
/// (until the pod's interface or namespace is gone), but nothing is left in
/// the file system. Missing files are not an error: teardown may run twice.
pub fn remove_pins(pin_dir: &Path) -> Result<()> {
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(pin_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Io {
                path: pin_dir.to_owned(),
                action: "list",
                source,
            });
        }
    };
    // Everything in a pin directory is ours: our maps, and pins of older
    // builds whose map names changed.
    for entry in entries {
        let path: PathBuf = match entry {
            Ok(entry) => entry.path(),
            Err(source) => {
                errors.push(Error::Io {
                    path: pin_dir.to_owned(),
                    action: "list",
                    source,
                });
                continue;
            }
        };
        if preloaded(&path) {
            continue;
        }
        if let Err(source) = std::fs::remove_file(&path)
            && source.kind() != ErrorKind::NotFound
        {
            errors.push(Error::Io {
                path,
                action: "remove",
                source,
            });
        }
    }
    if let Err(source) = std::fs::remove_dir(pin_dir)
        && source.kind() != ErrorKind::NotFound
    {
        errors.push(Error::Io {
            path: pin_dir.to_owned(),
            action: "remove",
            source,
        });
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(Error::Teardown(errors)),
    }
}

/// Unmounts the bpffs at `dir` if it holds nothing any more (the last lab is
/// down) and removes the directory; like `umount DIR && rmdir DIR`. Returns
/// whether it unmounted. Leaves a non-empty or foreign mount alone.
pub fn unmount_bpffs(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            if entries.flatten().any(|e| !preloaded(&e.path())) {
                return Ok(false);
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(Error::Io {
                path: dir.to_owned(),
                action: "list",
                source,
            });
        }
    }
    if !is_bpffs(dir)? {
        return Ok(false);
    }
    nix::mount::umount2(dir, MntFlags::empty()).map_err(|source| Error::Mount {
        dir: dir.to_owned(),
        action: "unmount",
        source,
    })?;
    std::fs::remove_dir(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        action: "remove",
        source,
    })?;
    Ok(true)
}
