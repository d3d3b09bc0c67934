//! The tools a VM starts most, moved into the guest's memory once.
//!
//! The guest sees the host's root over 9p without a cache: each time a
//! program starts, the loader's opens and the pages of the program and of
//! every library it links are read from the host again, through QEMU. Under
//! software emulation that is most of a process's start: `ip link show lo`
//! took 75 ms, `/bin/true` 26 ms (QEMU 10, TCG). virtme-ng lays a tmpfs
//! overlay over `/usr`, `/lib` and `/etc`, so a file the guest changes is
//! copied into guest memory and read from its page cache from then on.
//! [`warm`] makes overlayfs copy the files of the tools labs and tests run
//! (`ip`, `tc`, `bridge`, the shells, ...) and the libraries `ldd` names
//! for them, by setting each file's times to what they already are: the
//! same `ip` then took 45 ms and `/bin/true` 16 ms.
//!
//! Only files on an overlay are touched (the host's files stay as they
//! were: the overlay's upper layer is guest memory); a copy is the guest's
//! until the VM stops, so a tool the host upgrades meanwhile is still the
//! old one inside. Written by hand: a PATH lookup, an `ldd` read and a
//! `utimensat`, nothing a crate would add to.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::statfs::{FsType, statfs};
use nix::sys::time::TimeSpec;

/// The programs labs, scenarios and test binaries start in a VM.
const TOOLS: &[&str] = &[
    "ip", "bridge", "tc", "nft", "ipvsadm", "sysctl", "ss", "bash", "sh", "true", "sleep",
    "setpriv", "tcpdump", "modprobe", "bpftool", "cat", "ldd",
];

/// Read by every dynamically linked program's loader.
const ALSO: &[&str] = &["/etc/ld.so.cache"];

/// `OVERLAYFS_SUPER_MAGIC` (linux/magic.h).
const OVERLAYFS_MAGIC: u32 = 0x794c_7630;

/// Copy the tools' files into the guest's overlays; returns how many were.
pub fn warm() -> usize {
    let bins: Vec<PathBuf> = TOOLS.iter().filter_map(|t| super::find_tool(t)).collect();
    let mut files: BTreeSet<PathBuf> = bins.iter().cloned().collect();
    files.extend(ALSO.iter().map(PathBuf::from));
    if let Ok(o) = Command::new("ldd").args(&bins).output() {
        files.extend(ldd_paths(&String::from_utf8_lossy(&o.stdout)));
    }
    files.iter().filter(|f| copy_up(f)).count()
}

/// The absolute paths in `ldd`'s output: each library's (`NAME => PATH
/// (ADDR)`) and the loader's (`PATH (ADDR)`); not the `PROGRAM:` headers.
fn ldd_paths(output: &str) -> Vec<PathBuf> {
    output
        .lines()
        .flat_map(str::split_whitespace)
        .filter(|t| t.starts_with('/') && !t.ends_with(':'))
        .map(PathBuf::from)
        .collect()
}

/// Make overlayfs copy `path`'s file up by setting its times to what they
/// are. False when it is not a file on an overlay, or the kernel said no.
fn copy_up(path: &Path) -> bool {
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    let on_overlay =
        statfs(&real).is_ok_and(|s| s.filesystem_type() == FsType(OVERLAYFS_MAGIC as _));
    let Ok(m) = std::fs::metadata(&real) else {
        return false;
    };
    if !on_overlay || !m.is_file() {
        return false;
    }
    let atime = TimeSpec::new(m.atime(), m.atime_nsec());
    let mtime = TimeSpec::new(m.mtime(), m.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        &real,
        &atime,
        &mtime,
        UtimensatFlags::FollowSymlink,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_libraries_and_the_loader() {
        let out = "/usr/bin/ip:\n\
            \tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibbpf.so.1 => /lib/x86_64-linux-gnu/libbpf.so.1 (0x00007f1)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n\
            /usr/bin/true:\n\
            \tnot a dynamic executable\n";
        assert_eq!(
            ldd_paths(out),
            [
                "/lib/x86_64-linux-gnu/libbpf.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_file_off_any_overlay_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("labctl-warm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("tool");
        std::fs::write(&f, b"x").unwrap();
        let before = std::fs::metadata(&f).unwrap().modified().unwrap();
        // The test host's /tmp is no overlay (else this proves nothing).
        if statfs(&f).is_ok_and(|s| s.filesystem_type() != FsType(OVERLAYFS_MAGIC as _)) {
            assert!(!copy_up(&f));
        }
        assert_eq!(std::fs::metadata(&f).unwrap().modified().unwrap(), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
