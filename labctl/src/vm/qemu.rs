//! A newer QEMU for software emulation, kept in labctl's own directory.
//!
//! Without KVM every VM instruction is translated by QEMU's TCG, and how
//! fast that is depends on QEMU's version far more than on anything labctl
//! does: on a 2-core host, the process start-ups that fill a VM lab's
//! work (an `ip`, a `labctl`, a shell) take about two thirds as long
//! under Debian 12's QEMU 10 from bookworm-backports as under its own
//! QEMU 7.2; a whole Flannel run inside one `labctl` gains less, 1.07x
//! (`cargo bench -p labctl --bench vm -- qemu` prints both). So where KVM
//! is not usable, the host is Debian, and its release's backports archive
//! has a newer QEMU than the one installed, [`install`] fetches that
//! QEMU's packages through apt (signed as any apt download, with a
//! sources list and package lists of labctl's own: the host's apt
//! configuration is not touched) and unpacks them under [`ROOT`], and
//! [`super::vng`] boots VMs with it. Nothing is installed into the
//! system's paths; `LABCTL_QEMU=system` boots with the system's QEMU
//! anyway.
//!
//! Written by hand: apt and dpkg do the fetching, verifying and
//! unpacking; this only decides and puts the pieces in place.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{VmError, io_err, kvm_usable, lib_dir, run};

/// Where the unpacked packages live (the QEMU binary is
/// `ROOT/usr/bin/qemu-system-x86_64`; it finds its firmware and modules
/// relative to itself). Not under [`lib_dir`]: it is a tool, like the
/// kernels in /boot, that labs with a directory of their own use too.
pub const ROOT: &str = "/usr/local/lib/labctl/qemu";

/// The packages unpacked: QEMU, its data and the firmware it boots.
const PACKAGES: [&str; 5] = [
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "seabios",
    "ipxe-qemu",
];

/// The Debian archive the packages come from.
const ARCHIVE: &str = "http://deb.debian.org/debian";

/// The QEMU binary VMs boot with: labctl's own when [`install`] put one
/// there (and `LABCTL_QEMU` is not `system`), else none (vng finds the
/// system's).
pub fn binary() -> Option<PathBuf> {
    if std::env::var("LABCTL_QEMU").is_ok_and(|v| v == "system") {
        return None;
    }
    installed()?;
    Some(Path::new(ROOT).join("usr/bin/qemu-system-x86_64"))
}

/// vng's `--qemu-opts` for labctl's QEMU. Its firmware first: the BIOS
/// and boot ROMs of its own release (the search path it was built with
/// names the system's directories, whose older SeaBIOS and linuxboot ROM
/// make it take half a minute to load the kernel). No sound card is asked
/// for, but without `-audio none` it still probes the audio back-ends,
/// as modules, and finds the system's, of another build.
pub fn options() -> String {
    let dirs = ["usr/share/qemu", "usr/share/seabios", "usr/lib/ipxe/qemu"];
    let mut o = String::from("--qemu-opts=-audio none");
    for d in dirs {
        o.push_str(&format!(" -L {ROOT}/{d}"));
    }
    o
}

/// Written last by [`install`]: the Debian version unpacked.
const VERSION_FILE: &str = "labctl-version";

/// The Debian version of labctl's QEMU, when it has one.
fn installed() -> Option<String> {
    let root = Path::new(ROOT);
    if !root.join("usr/bin/qemu-system-x86_64").is_file() {
        return None;
    }
    let v = fs::read_to_string(root.join(VERSION_FILE)).ok()?;
    Some(v.trim().to_string())
}

/// What [`install`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    /// VMs boot with the system's QEMU, and why.
    System(String),
    /// VMs boot with labctl's QEMU of this Debian version; `fetched` when
    /// this call fetched it.
    Own { version: String, fetched: bool },
}

/// Fetch the backports QEMU when it would make VMs faster (see the module
/// doc); idempotent. An error leaves any QEMU already in place as it was.
pub fn install(progress: &dyn Fn(&str)) -> Result<Choice, VmError> {
    if kvm_usable() {
        return Ok(Choice::System(
            "KVM is usable: QEMU's version hardly matters with it".into(),
        ));
    }
    let os = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let Some(codename) = debian_codename(&os) else {
        return Ok(Choice::System(
            "not a Debian host (no Debian backports to take a QEMU from)".into(),
        ));
    };
    let Ok(system) = run(
        "dpkg-query -W qemu-system-x86",
        Command::new("dpkg-query").args(["-W", "-f=${Version}", "qemu-system-x86"]),
    ) else {
        return Ok(Choice::System(
            "the system's QEMU is not Debian's package".into(),
        ));
    };
    let apt = Apt::new(&codename)?;
    if !apt.lists_fresh() {
        progress(&format!("reading {codename}-backports' package lists"));
        let updated = run(
            "apt-get update",
            &mut apt.command("apt-get", &["update", "-q"]),
        );
        // Offline, say: a QEMU fetched before stays in use.
        if let (Err(e), Some(version)) = (&updated, installed()) {
            progress(&format!("{e}; keeping QEMU {version}"));
            return Ok(Choice::Own {
                version,
                fetched: false,
            });
        }
        updated?;
        apt.lists_read();
    }
    let madison = run(
        "apt-cache madison qemu-system-x86",
        &mut apt.command("apt-cache", &["madison", "qemu-system-x86"]),
    )?;
    let Some(newer) = backports_version(&madison, &codename) else {
        return Ok(Choice::System(format!(
            "{codename}-backports has no QEMU (the system's {system} stays)"
        )));
    };
    if !dpkg_newer(&newer, &system)? {
        // The system caught up: a copy fetched before (it has our version
        // file) would be the older.
        if installed().is_some() {
            let _ = fs::remove_dir_all(ROOT);
        }
        return Ok(Choice::System(format!(
            "the system's QEMU {system} is as new as {codename}-backports' {newer}"
        )));
    }
    let root = Path::new(ROOT);
    if installed().is_some_and(|v| v == newer) {
        return Ok(Choice::Own {
            version: newer,
            fetched: false,
        });
    }
    // Only a tree labctl installed (it carries the version file) is ever
    // replaced or removed.
    if root.exists() && !root.join(VERSION_FILE).is_file() {
        return Err(VmError::Command {
            what: format!("install QEMU {newer} in {ROOT}"),
            detail: format!(
                "{ROOT} is there but is not labctl's (no {VERSION_FILE} in it); \
                 move it away, or set LABCTL_QEMU=system"
            ),
        });
    }
    progress(&format!(
        "downloading QEMU {newer} from {codename}-backports"
    ));
    let _ = fs::remove_dir_all(&apt.debs);
    fs::create_dir_all(&apt.debs).map_err(io_err(format!("create {}", apt.debs.display())))?;
    let target = format!("{codename}-backports");
    let mut args = vec!["download", "-q", "-t", &target];
    args.extend(PACKAGES);
    run(
        "apt-get download",
        apt.command("apt-get", &args).current_dir(&apt.debs),
    )?;
    let fresh = root.with_extension("new");
    let _ = fs::remove_dir_all(&fresh);
    fs::create_dir_all(&fresh).map_err(io_err(format!("create {}", fresh.display())))?;
    for entry in fs::read_dir(&apt.debs).map_err(io_err("read the downloaded packages"))? {
        let deb = entry
            .map_err(io_err("read the downloaded packages"))?
            .path();
        if deb.extension().is_some_and(|e| e == "deb") {
            progress(&format!("unpacking {}", deb.display()));
            run(
                "dpkg-deb -x",
                Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&fresh),
            )?;
        }
    }
    let bin = fresh.join("usr/bin/qemu-system-x86_64");
    let said = run(
        &format!("{} --version", bin.display()),
        Command::new(&bin).arg("--version"),
    )?;
    if !said.starts_with("QEMU emulator version") {
        return Err(VmError::Command {
            what: format!("{} --version", bin.display()),
            detail: format!("unexpected answer: {}", said.trim()),
        });
    }
    fs::write(fresh.join(VERSION_FILE), &newer)
        .map_err(io_err(format!("write {}", fresh.display())))?;
    let old = root.with_extension("old");
    let _ = fs::remove_dir_all(&old);
    if root.exists() {
        fs::rename(root, &old).map_err(io_err(format!("move {} aside", root.display())))?;
    }
    fs::rename(&fresh, root).map_err(io_err(format!("install {}", root.display())))?;
    let _ = fs::remove_dir_all(&old);
    let _ = fs::remove_dir_all(&apt.debs);
    Ok(Choice::Own {
        version: newer,
        fetched: true,
    })
}

/// Written in labctl's apt directory after each `apt-get update`.
const LISTS_READ: &str = "lists-read";

/// apt with a sources list, package lists and cache of labctl's own.
struct Apt {
    dir: PathBuf,
    debs: PathBuf,
}

impl Apt {
    fn new(codename: &str) -> Result<Apt, VmError> {
        let dir = lib_dir().join("qemu-apt");
        fs::create_dir_all(dir.join("lists/partial"))
            .map_err(io_err(format!("create {}", dir.display())))?;
        fs::create_dir_all(dir.join("cache/archives/partial"))
            .map_err(io_err(format!("create {}", dir.display())))?;
        fs::write(dir.join("sources.list"), sources(codename))
            .map_err(io_err(format!("write {}", dir.display())))?;
        let debs = dir.join("debs");
        Ok(Apt { dir, debs })
    }

    /// Whether the package lists were read within a day (`./lab` runs
    /// [`install`] every time; it need not ask the archive every time).
    /// Told by a stamp of labctl's own: apt gives the lists the archive's
    /// dates, which can be days old the moment they are read.
    fn lists_fresh(&self) -> bool {
        let day = std::time::Duration::from_secs(24 * 3600);
        fs::metadata(self.dir.join(LISTS_READ))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < day)
    }

    /// Stamp the lists as read now (best effort: without the stamp the next
    /// call reads them again).
    fn lists_read(&self) {
        let _ = fs::write(self.dir.join(LISTS_READ), b"");
    }

    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let mut c = super::apt_command(tool);
        c.arg("-o")
            .arg(format!("Dir::Etc::sourcelist={}", d("sources.list")))
            .args(["-o", "Dir::Etc::sourceparts=/dev/null"])
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", d("lists")))
            .arg("-o")
            .arg(format!("Dir::Cache={}", d("cache")))
            // The downloads land in labctl's root-owned directory, which
            // apt's unprivileged download user may not write.
            .args(["-o", "APT::Sandbox::User=root"])
            .args(args);
        c
    }
}

/// labctl's sources list: the release and its backports.
fn sources(codename: &str) -> String {
    format!("deb {ARCHIVE} {codename}-backports main\ndeb {ARCHIVE} {codename} main\n")
}

/// The Debian release's code name from os-release, when the host is
/// Debian and the name is plain lower-case letters (it goes into a
/// sources list).
fn debian_codename(os_release: &str) -> Option<String> {
    let field = |key: &str| {
        os_release.lines().find_map(|l| {
            let v = l.strip_prefix(key)?.strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_string())
        })
    };
    let codename = field("VERSION_CODENAME")?;
    (field("ID")? == "debian"
        && !codename.is_empty()
        && codename.bytes().all(|b| b.is_ascii_lowercase()))
    .then_some(codename)
}

/// The version `apt-cache madison` lists from `CODENAME-backports`.
fn backports_version(madison: &str, codename: &str) -> Option<String> {
    let suite = format!(" {codename}-backports/");
    madison.lines().find_map(|l| {
        let mut cols = l.split('|').map(str::trim);
        let (_, version, from) = (cols.next()?, cols.next()?, cols.next()?);
        format!(" {from}")
            .contains(&suite)
            .then(|| version.to_string())
    })
}

/// Whether Debian version `a` is newer than `b` (dpkg's own comparison).
fn dpkg_newer(a: &str, b: &str) -> Result<bool, VmError> {
    let status = Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .map_err(io_err("dpkg --compare-versions"))?;
    Ok(status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_debian_code_name_is_taken() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_CODENAME=bookworm\n";
        assert_eq!(debian_codename(debian).as_deref(), Some("bookworm"));
        let ubuntu = "ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n";
        assert_eq!(debian_codename(ubuntu), None);
        for hostile in ["bookworm main\ndeb http://x", "../x", "Bookworm", ""] {
            let os = format!("ID=debian\nVERSION_CODENAME={hostile}\n");
            assert_eq!(debian_codename(&os), None, "{hostile:?}");
        }
        assert_eq!(debian_codename("ID=debian\n"), None);
    }

    #[test]
    fn the_backports_line_of_madison_gives_the_version() {
        let madison = "qemu-system-x86 | 1:10.0.2+ds-2+deb13u1~bpo12+1 | http://deb.debian.org/debian bookworm-backports/main amd64 Packages\n\
                       qemu-system-x86 | 1:7.2+dfsg-7+deb12u18+b3 | http://deb.debian.org/debian bookworm/main amd64 Packages\n";
        assert_eq!(
            backports_version(madison, "bookworm").as_deref(),
            Some("1:10.0.2+ds-2+deb13u1~bpo12+1")
        );
        assert_eq!(backports_version(madison, "trixie"), None);
        let main_only =
            "qemu-system-x86 | 1:7.2 | http://deb.debian.org/debian bookworm/main amd64 Packages\n";
        assert_eq!(backports_version(main_only, "bookworm"), None);
    }

    #[test]
    fn the_firmware_comes_from_labctls_qemu() {
        // vng splits the options as a shell would: the root must need no
        // quoting.
        assert!(
            ROOT.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_".contains(&b))
        );
        let o = options();
        for d in ["share/qemu", "share/seabios", "lib/ipxe/qemu"] {
            assert!(o.contains(&format!(" -L {ROOT}/usr/{d}")), "{o}");
        }
        assert!(o.starts_with("--qemu-opts=-audio none "), "{o}");
    }

    #[test]
    fn the_sources_name_the_release_and_its_backports() {
        assert_eq!(
            sources("bookworm"),
            "deb http://deb.debian.org/debian bookworm-backports main\n\
             deb http://deb.debian.org/debian bookworm main\n"
        );
    }
}
