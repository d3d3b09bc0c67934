//! Errors of the load balancer: what failed, on which object, and what the
//! user can do about it. Messages are lowercase fragments that read after
//! "failed to", except where the hint is the point.

use std::path::PathBuf;

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong loading, attaching or using the load
/// balancer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The crate was compiled without the BPF object.
    #[error(
        "eBPF programs were not built ({reason}): install the BPF toolchain with ebpf/setup.sh, then rebuild"
    )]
    NotBuilt {
        /// Why build.rs skipped the programs.
        reason: String,
    },
    /// The object could not be parsed, or its maps created or pinned.
    #[error("load the eBPF object (maps pinned under {pin_dir}): {source}")]
    Load {
        /// The pin directory.
        pin_dir: PathBuf,
        /// aya's error.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// The verifier rejected a program.
    #[error("load {program}: kernel refused the program: {error}; verifier log tail:\n{log_tail}")]
    Verifier {
        /// `lb_egress` or `lb_ingress`.
        program: &'static str,
        /// The `BPF_PROG_LOAD` error.
        error: std::io::Error,
        /// The last lines of the verifier log.
        log_tail: String,
    },
    /// The embedded object lacks a program.
    #[error("find {program} in the eBPF object: the object is not ours; rebuild labctl-lb")]
    NoProgram {
        /// `lb_egress` or `lb_ingress`.
        program: &'static str,
    },
    /// A program operation other than loading failed.
    #[error("{action} {program}: {source}")]
    Program {
        /// `lb_egress` or `lb_ingress`.
        program: &'static str,
        /// What was attempted ("attach to eth0 egress", "test-run", ...).
        action: String,
        /// aya's error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// Adding the clsact qdisc or removing a filter failed.
    #[error("{action} on {ifname} (is the thread in the pod's network namespace?): {source}")]
    Tc {
        /// The interface.
        ifname: String,
        /// What was attempted.
        action: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::programs::tc::TcError>,
    },
    /// A pinned map is missing or not what we expect.
    #[error("open pinned map {path} (is the load balancer loaded?): {source}")]
    OpenMap {
        /// The pin file.
        path: PathBuf,
        /// aya's error.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// A map read or write failed.
    #[error("{action} in map {map}: {source}")]
    Map {
        /// The map name.
        map: &'static str,
        /// What was attempted.
        action: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// The pin directory is not on a bpffs, so pinning would fail.
    #[error("use {dir} as the pin directory: it is not on a bpffs (mount one with ensure_bpffs)")]
    NotBpffs {
        /// The directory.
        dir: PathBuf,
    },
    /// Mounting or unmounting a bpffs failed.
    #[error("{action} a bpffs at {dir}: {source}")]
    Mount {
        /// The directory.
        dir: PathBuf,
        /// "mount" or "unmount".
        action: &'static str,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// A file-system operation on the pin directory failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What was attempted.
        action: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for events failed.
    #[error("wait for load-balancer events: {0}")]
    Poll(#[source] nix::Error),
    /// The service does not exist.
    #[error("find service {service}: no such service")]
    NoService {
        /// `vip:port/proto`.
        service: String,
    },
    /// A backend slot outside the service's backend list.
    #[error("pin backend {index} of {service}: the service has {count} backends (0..{count})")]
    NoBackend {
        /// `vip:port/proto`.
        service: String,
        /// The requested slot.
        index: u32,
        /// The number of backends.
        count: u32,
    },
    /// Too many backends for one service.
    #[error("set service {service}: {count} backends is more than the {max} the map holds")]
    TooManyBackends {
        /// `vip:port/proto`.
        service: String,
        /// Requested.
        count: usize,
        /// The limit.
        max: u32,
    },
    /// A program could not be pinned, or its pin opened.
    #[error("{action} {program} at {path}: {source}")]
    Pin {
        /// The program's name.
        program: &'static str,
        /// `pin` or `open the pinned`.
        action: &'static str,
        /// The pin.
        path: PathBuf,
        /// aya's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Several teardown steps failed; all are reported.
    #[error("tear down: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Teardown(Vec<Error>),
}
