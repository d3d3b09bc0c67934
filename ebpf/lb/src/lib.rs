//! labctl's socket-less service load balancer, as Terway and Cilium run it on
//! a pod's eth0: ClusterIP -> backend on tc egress before a packet leaves the
//! pod, backend -> ClusterIP on tc ingress for the reply, so the service
//! address appears on no interface (scenarios T5-T7 of SCENARIOS.md).
//!
//! What is hand-written and why:
//! - the tc programs (`ebpf/programs`, aya-ebpf) and the shared map types
//!   (`labctl-ebpf-common`): the data path itself, the point of the lab;
//! - [`Lb`]: loads the object with aya, pins the maps under a per-lab
//!   directory on a bpffs and attaches with *netlink* tc (clsact +
//!   `TcAttachOptions::Netlink`), never TCX. A netlink tc filter holds its
//!   own reference to the program, so it outlives this process on Linux 6.1
//!   and 6.18 alike; a TCX link would be detached when its fd closes unless
//!   pinned, and does not exist before 6.6;
//! - [`LbMaps`]: the userspace view of the pinned maps (services, backend
//!   pinning, flows, events), usable from any later labctl process, like
//!   `cilium bpf lb list`;
//! - [`Router`] / [`RouteMaps`]: the same for the overlay router, Cilium's
//!   VXLAN data path (SCENARIOS.md section 4), a second object so the load
//!   balancer's programs and maps stay as they are; loaded once per node;
//! - [`ensure_bpffs`] / [`remove_pins`]: the host may have no
//!   `/sys/fs/bpf`, so labctl mounts its own bpffs and removes what it pinned.
//!
//! aya 0.14 provides `BPF_PROG_TEST_RUN` (`aya::programs::TestRun`), so
//! [`Lb::test_run`] needs no raw syscall, and this crate has no `unsafe`
//! (the `aya::Pod` impls live in the common crate).

mod bpffs;
mod error;
mod maps;
mod route;

use std::{
    fmt,
    net::Ipv4Addr,
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        ProgramError, SchedClassifier, TcAttachType, TestRun as _, TestRunOptions,
        tc::{self, NlOptions, TcAttachOptions},
    },
};

pub use bpffs::{DEFAULT_BPFFS, ensure_bpffs, is_bpffs, remove_pins, unmount_bpffs};
pub use error::{Error, Result};
/// The router's config map, the slot `labctl plan -o script` annotates.
pub use labctl_ebpf_common::MAP_ROUTE_CONFIG;
pub use maps::{Direction, FlowEntry, LbEvent, LbMaps, MapUpdate, ServiceEntry, service_updates};
pub use route::{
    EndpointEntry, ROUTE_OBJECT_PATH, RedirectMode, RouteMaps, RouteProgram, RouteTables, Router,
    TunnelEntry,
};

/// The BPF object built by build.rs (empty when the toolchain was missing).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/labctl-lb"));

/// Where build.rs left the object this build embeds (an empty file when it
/// was not built): what `bpftool prog loadall` is given in the script
/// `labctl plan -o script` writes, so the script loads the same programs.
pub const OBJECT_PATH: &str = concat!(env!("OUT_DIR"), "/labctl-lb");

/// Why build.rs did not build the object, or empty.
const SKIP_REASON: &str = env!("LABCTL_LB_SKIP_REASON");

/// Whether this build carries the BPF object (see ebpf/setup.sh).
pub fn programs_built() -> bool {
    !OBJECT.is_empty()
}

/// Why build.rs did not build the object (empty when it did).
pub const fn skip_reason() -> &'static str {
    SKIP_REASON
}

/// A transport protocol the load balancer translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => labctl_ebpf_common::PROTO_TCP,
            Self::Udp => labctl_ebpf_common::PROTO_UDP,
        }
    }

    /// The protocol with this IP protocol number, if translated.
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            labctl_ebpf_common::PROTO_TCP => Some(Self::Tcp),
            labctl_ebpf_common::PROTO_UDP => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        })
    }
}

/// A service frontend, `vip:port/proto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Service {
    /// The virtual IP.
    pub vip: Ipv4Addr,
    /// The service port.
    pub port: u16,
    /// The protocol.
    pub proto: Proto,
}

impl Service {
    /// `vip:port/proto`.
    pub const fn new(vip: Ipv4Addr, port: u16, proto: Proto) -> Self {
        Self { vip, port, proto }
    }

    fn key(self) -> labctl_ebpf_common::ServiceKey {
        labctl_ebpf_common::ServiceKey {
            addr: labctl_ebpf_common::addr_be(self.vip.octets()),
            port: labctl_ebpf_common::port_be(self.port),
            proto: self.proto.number(),
            pad: 0,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.vip, self.port, self.proto)
    }
}

/// One of the two tc programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Program {
    /// `lb_egress`: service -> backend on the pod's egress.
    Egress,
    /// `lb_ingress`: backend -> service on the pod's ingress.
    Ingress,
}

impl Program {
    /// Both programs.
    pub const ALL: [Self; 2] = [Self::Egress, Self::Ingress];

    /// The program's (and its tc filter's) name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Egress => "lb_egress",
            Self::Ingress => "lb_ingress",
        }
    }

    /// Where [`Lb::pin_programs`] pins it: `pin_dir/NAME`, as `bpftool prog
    /// loadall OBJ PIN_DIR` names its pins.
    pub fn pin_path(self, pin_dir: &Path) -> PathBuf {
        pin_dir.join(self.name())
    }

    /// The program of this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    const fn attach_type(self) -> TcAttachType {
        match self {
            Self::Egress => TcAttachType::Egress,
            Self::Ingress => TcAttachType::Ingress,
        }
    }
}

/// What a program did to a test frame ([`Lb::test_run`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The tc verdict: `TC_ACT_OK` = 0, `TC_ACT_SHOT` = 2, or
    /// `TC_ACT_REDIRECT` = 7 (a translated request, sent on by
    /// `bpf_redirect_neigh`).
    pub action: u32,
    /// The frame after the program ran.
    pub frame: Vec<u8>,
}

/// The loaded programs, their maps pinned in a directory on a bpffs.
pub struct Lb {
    ebpf: Ebpf,
    pin_dir: PathBuf,
}

impl fmt::Debug for Lb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lb")
            .field("pin_dir", &self.pin_dir)
            .finish_non_exhaustive()
    }
}

impl Lb {
    /// Loads both programs. Their maps are created and pinned as
    /// `pin_dir/LB_*`, or, when already pinned there (another pod of the same
    /// lab, an earlier run), reused: every pod of a lab shares one service
    /// table. `pin_dir` is created if missing and must be on a bpffs (see
    /// [`ensure_bpffs`]). Like `bpftool prog loadall ... pinmaps pin_dir`.
    pub fn load_pinned(pin_dir: &Path) -> Result<Self> {
        let names = Program::ALL.map(Program::name);
        Ok(Self {
            ebpf: load_object(OBJECT, pin_dir, &names, &labctl_ebpf_common::PINNED_MAPS)?,
            pin_dir: pin_dir.to_owned(),
        })
    }

    /// Pins both programs as [`Program::pin_path`] in the pin directory,
    /// replacing pins of an earlier load; like the program half of
    /// `bpftool prog loadall OBJ PIN_DIR`. A pinned program stays loaded
    /// after this process exits, so a later step (or `tc filter add ... bpf
    /// da object-pinned PIN`) attaches it by path ([`pinned_program`]).
    pub fn pin_programs(&mut self) -> Result<()> {
        pin_programs(
            &mut self.ebpf,
            &self.pin_dir,
            &Program::ALL.map(Program::name),
        )
    }

    /// Attaches `lb_egress` and `lb_ingress` to `ifname` with netlink tc,
    /// replacing filters of the same name left by an earlier attach; like
    /// `tc qdisc add dev IF clsact` and
    /// `tc filter add dev IF egress bpf da obj ... sec classifier/lb_egress`
    /// (and ingress). The filters stay after this process exits.
    ///
    /// Interfaces are looked up in the calling thread's network namespace:
    /// run this on a thread that has `setns()`'d into the pod's namespace
    /// (never on a shared async worker). One `Lb` can attach to several pods
    /// in turn from such threads.
    pub fn attach(&mut self, ifname: &str) -> Result<()> {
        if let Err(source) = tc::qdisc_add_clsact(ifname) {
            // aya 0.14 reports an existing qdisc only as netlink's EEXIST.
            let exists = matches!(
                &source,
                tc::TcError::NetlinkError(e) if e.raw_os_error() == Some(nix::libc::EEXIST)
            );
            if !exists {
                return Err(Error::Tc {
                    ifname: ifname.to_owned(),
                    action: "add the clsact qdisc",
                    source: Box::new(source),
                });
            }
        }
        detach_filters(ifname)?;
        for program in Program::ALL {
            let prog = classifier(&mut self.ebpf, program.name())?;
            let id = prog
                .attach_with_options(
                    ifname,
                    program.attach_type(),
                    TcAttachOptions::Netlink(NlOptions::default()),
                )
                .map_err(|e| program_error(program.name(), format!("attach to {ifname}"), e))?;
            let link = prog.take_link(id).map_err(|e| {
                program_error(program.name(), format!("take the link on {ifname}"), e)
            })?;
            // Dropping the link would delete the filter; a netlink link is
            // plain data (ifindex, priority, handle), so forgetting it leaks
            // nothing and leaves the filter in place.
            std::mem::forget(link);
        }
        Ok(())
    }

    /// Runs a program once on `frame` (an Ethernet frame) with
    /// `BPF_PROG_TEST_RUN`, like `bpftool prog run`; maps are used and
    /// updated as for a real packet.
    pub fn test_run(&self, program: Program, frame: &[u8]) -> Result<TestRunOutput> {
        test_run(&self.ebpf, program.name(), frame)
    }
}

/// A file descriptor of `program` pinned at `path` (`BPF_OBJ_GET`; see
/// [`Lb::pin_programs`]), for a netlink tc filter's `TCA_BPF_FD`: what
/// `tc filter add ... bpf da object-pinned PIN` sends. The filter holds its
/// own reference, so the descriptor may be closed once it is attached.
pub fn pinned_program(path: &Path, program: &'static str) -> Result<OwnedFd> {
    let path = path.to_owned();
    let pin_err = |source: Box<dyn std::error::Error + Send + Sync>| Error::Pin {
        program,
        action: "open the pinned",
        path: path.clone(),
        source,
    };
    let prog = SchedClassifier::from_pin(&path).map_err(|e| pin_err(Box::new(e)))?;
    let fd = prog.fd().map_err(|e| pin_err(Box::new(e)))?;
    fd.as_fd()
        .try_clone_to_owned()
        .map_err(|e| pin_err(Box::new(e)))
}

/// Removes the load balancer's tc filters from `ifname` (in the calling
/// thread's network namespace), like `tc filter del dev IF egress` for
/// filters named `lb_egress` and `lb_ingress`. The clsact qdisc stays.
fn detach_filters(ifname: &str) -> Result<()> {
    for program in Program::ALL {
        match tc::qdisc_detach_program(ifname, program.attach_type(), program.name()) {
            Ok(()) => {}
            Err(tc::TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Tc {
                    ifname: ifname.to_owned(),
                    action: "remove an earlier filter",
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(())
}

/// Loads `object` (one of the embedded objects) with its maps pinned in
/// `pin_dir` (reused when already pinned there), and its classifiers
/// `programs` into the kernel. `pin_dir` is created if missing and must be
/// on a bpffs.
/// Load `object` with its maps pinned in `pin_dir`: `btf_maps` (BTF map
/// definitions, which carry no pinning attribute: each pinned by its name,
/// as `bpftool prog loadall ... pinmaps` does) and legacy maps declared
/// pinned by name; then load `programs`.
fn load_object(
    object: &[u8],
    pin_dir: &Path,
    programs: &[&'static str],
    btf_maps: &[&str],
) -> Result<Ebpf> {
    if object.is_empty() {
        return Err(Error::NotBuilt {
            reason: SKIP_REASON.to_owned(),
        });
    }
    std::fs::create_dir_all(pin_dir).map_err(|source| Error::Io {
        path: pin_dir.to_owned(),
        action: "create",
        source,
    })?;
    if !is_bpffs(pin_dir)? {
        return Err(Error::NotBpffs {
            dir: pin_dir.to_owned(),
        });
    }
    let paths: Vec<(&str, std::path::PathBuf)> = btf_maps
        .iter()
        .map(|name| (*name, pin_dir.join(name)))
        .collect();
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(pin_dir);
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(object).map_err(|source| Error::Load {
        pin_dir: pin_dir.to_owned(),
        source: Box::new(source),
    })?;
    for &program in programs {
        classifier(&mut ebpf, program)?
            .load()
            .map_err(|e| load_error(program, e))?;
    }
    Ok(ebpf)
}

/// Pins each of `programs` as `pin_dir/NAME`, replacing older pins.
fn pin_programs(ebpf: &mut Ebpf, pin_dir: &Path, programs: &[&'static str]) -> Result<()> {
    for &program in programs {
        let path = pin_dir.join(program);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    path,
                    action: "remove",
                    source,
                });
            }
        }
        classifier(ebpf, program)?
            .pin(&path)
            .map_err(|e| Error::Pin {
                program,
                action: "pin",
                path: path.clone(),
                source: Box::new(e),
            })?;
    }
    Ok(())
}

fn classifier<'a>(ebpf: &'a mut Ebpf, program: &'static str) -> Result<&'a mut SchedClassifier> {
    ebpf.program_mut(program)
        .ok_or_else(|| missing(program))?
        .try_into()
        .map_err(|e| program_error(program, "find".to_owned(), e))
}

/// Runs the classifier `program` of `ebpf` once on `frame` with
/// `BPF_PROG_TEST_RUN`.
fn test_run(ebpf: &Ebpf, program: &'static str, frame: &[u8]) -> Result<TestRunOutput> {
    let prog: &SchedClassifier = ebpf
        .program(program)
        .ok_or_else(|| missing(program))?
        .try_into()
        .map_err(|e| program_error(program, "find".to_owned(), e))?;
    // The programs never grow a packet.
    let mut out = vec![0; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    let result = prog
        .test_run(opts)
        .map_err(|e| program_error(program, "test-run".to_owned(), e))?;
    out.truncate(result.data_size_out as usize);
    Ok(TestRunOutput {
        action: result.return_value,
        frame: out,
    })
}

fn missing(program: &'static str) -> Error {
    Error::NoProgram { program }
}

fn program_error(program: &'static str, action: String, source: ProgramError) -> Error {
    Error::Program {
        program,
        action,
        source: Box::new(source),
    }
}

/// Keeps the verifier's conclusion: the end of its log says why.
fn load_error(program: &'static str, e: ProgramError) -> Error {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            Error::Verifier {
                program,
                error: io_error,
                log_tail: tail,
            }
        }
        e => program_error(program, "load".to_owned(), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_key_is_network_order() {
        let key = Service::new(Ipv4Addr::new(192, 168, 27, 242), 80, Proto::Tcp).key();
        assert_eq!(key.addr.to_ne_bytes(), [192, 168, 27, 242]);
        assert_eq!(key.port.to_ne_bytes(), [0, 80]);
        assert_eq!(key.proto, 6);
    }

    #[test]
    fn service_display() {
        let s = Service::new(Ipv4Addr::new(192, 168, 27, 242), 80, Proto::Udp);
        assert_eq!(s.to_string(), "192.168.27.242:80/UDP");
    }
}
