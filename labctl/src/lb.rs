//! The eBPF service load balancer of labs with `ebpf:` (Terway's IPVLAN +
//! eBPF, Cilium's socket-less load balancing): the tc programs of the
//! `labctl-lb` crate on every pod's eth0 translate `service:port` to an
//! endpoint on egress and back on ingress, so the service address is seen
//! on no interface.
//!
//! Every write is a step of the lab's plan, run by the one executor
//! through the `Kernel` seam (see `plan/ebpf.rs`):
//! `BpfLoad` loads the programs once per lab and pins them and their maps
//! under [`pin_dir`] (every pod shares one service table; [`load`]),
//! `BpfAttach` puts a pinned program on a pod's eth0 with a netlink tc
//! filter (clsact + `tc filter ... bpf da object-pinned`), and `BpfMaps`
//! writes the services from the topology, or a scenario's overrides
//! ([`wanted`], [`program_maps`]). The filters outlive labctl and go away
//! with the pods' namespaces; `down` removes the pins ([`teardown`]).
//! `labctl show lb` and `labctl monitor` open the pinned maps from later
//! processes. This module holds the appliers and readers, never a plan.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use labctl_lb::{DEFAULT_BPFFS, FlowEntry, Lb, LbEvent, LbMaps, Proto, ServiceEntry};
use labctl_topology::{Lab, Protocol};

use crate::services::Overrides;
use nix::fcntl::{Flock, FlockArg};

/// The directory under the bpffs holding every lab's pin directory.
const LABS_DIR: &str = "labctl";

/// Where a lab's maps are pinned: `/run/labctl/bpf/labctl/LAB`, on the
/// bpffs labctl mounts at [`DEFAULT_BPFFS`] when the host has none there.
pub fn pin_dir(lab: &str) -> PathBuf {
    Path::new(DEFAULT_BPFFS).join(LABS_DIR).join(lab)
}

/// Why the load balancer could not be set up, programmed or read.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// labctl was built without the BPF toolchain.
    #[error("eBPF programs not built: run ebpf/setup.sh, then rebuild labctl ({reason})")]
    NotBuilt {
        /// Why the build skipped them.
        reason: String,
    },
    /// No maps are pinned for the lab.
    #[error(
        "lab `{lab}` has no eBPF load balancer ({} is missing): is it up, and does its topology have `ebpf:`?",
        .pin_dir.display()
    )]
    NotLoaded {
        /// The lab.
        lab: String,
        /// Where its maps would be pinned.
        pin_dir: PathBuf,
    },
    /// No router maps are pinned for the namespace.
    #[error(
        "`{entity}` of lab `{lab}` runs no eBPF router ({} is missing): is the lab up, and does its topology give `{entity}` a `tc: ... bpf:` program or `bpf_maps`?",
        .pin_dir.display()
    )]
    NoRouter {
        /// The lab.
        lab: String,
        /// The node asked about.
        entity: String,
        /// Where its maps would be pinned.
        pin_dir: PathBuf,
    },
    /// Another load-balancer step failed.
    #[error("{action}: {source}")]
    Lb {
        /// What was attempted.
        action: String,
        /// The loader's error (the verifier's log tail for a refused
        /// program).
        #[source]
        source: labctl_lb::Error,
    },
    /// The bpffs lock could not be taken.
    #[error("lock {}: {source}", .path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Wraps a loader error with what was attempted, lifting "not built".
fn lb_err(action: impl Into<String>) -> impl FnOnce(labctl_lb::Error) -> LbError {
    move |source| match source {
        labctl_lb::Error::NotBuilt { reason } => LbError::NotBuilt { reason },
        source => LbError::Lb {
            action: action.into(),
            source,
        },
    }
}

/// Serialises mounting the bpffs and creating a pin directory (in
/// [`load`]) with unmounting it once empty (in [`teardown`]), so one
/// lab's `down` never unmounts the bpffs under another lab's `up`.
pub(crate) fn bpffs_lock() -> Result<Flock<File>, LbError> {
    let mount = Path::new(DEFAULT_BPFFS);
    let path = mount.parent().unwrap_or(mount).join(".bpf.lock");
    let lock_err = |source| LbError::Lock {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(lock_err)?;
    }
    let file = File::create(&path).map_err(lock_err)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| lock_err(e.into()))
}

/// Loads the programs with their maps and the programs themselves pinned
/// in `pin_dir` (the applier of `Action::BpfLoad`): mounts
/// labctl's bpffs if the host has none there, removes pins a crashed lab of
/// the same name left (its services, or an older map layout), then like
/// `bpftool prog loadall OBJ PIN_DIR type classifier pinmaps PIN_DIR`.
/// Blocking; nothing here depends on the calling thread's namespace.
pub fn load(pin_dir: &Path) -> Result<(), LbError> {
    // Why it cannot, before touching the file system.
    check_built()?;
    let mut lb = {
        let _lock = bpffs_lock()?;
        labctl_lb::ensure_bpffs(Path::new(DEFAULT_BPFFS))
            .map_err(lb_err(format!("mount a bpffs at {DEFAULT_BPFFS}")))?;
        labctl_lb::remove_pins(pin_dir).map_err(lb_err(format!(
            "remove stale pins in {}",
            pin_dir.display()
        )))?;
        Lb::load_pinned(pin_dir).map_err(lb_err("load the eBPF programs"))?
    };
    lb.pin_programs().map_err(lb_err("pin the eBPF programs"))
}

/// Whether this build can load the programs; the reason when it cannot,
/// checked by `up` before it makes anything.
pub fn check_built() -> Result<(), LbError> {
    if labctl_lb::programs_built() {
        Ok(())
    } else {
        Err(LbError::NotBuilt {
            reason: labctl_lb::skip_reason().to_owned(),
        })
    }
}

/// Opens the lab's pinned maps.
pub fn open(lab: &str) -> Result<LbMaps, LbError> {
    let dir = pin_dir(lab);
    if !dir.is_dir() {
        return Err(LbError::NotLoaded {
            lab: lab.to_owned(),
            pin_dir: dir,
        });
    }
    LbMaps::open(&dir).map_err(lb_err(format!("open the maps of lab `{lab}`")))
}

/// One frontend as the maps hold it (the payload of `Action::BpfMaps`): its
/// backends in slot order, and the
/// slot every new flow must take.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BpfService {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub backends: Vec<SocketAddrV4>,
    pub pinned: Option<u32>,
}

impl BpfService {
    /// The frontend, `vip:port/proto`.
    pub fn frontend(&self) -> labctl_lb::Service {
        let proto = match self.protocol {
            Protocol::Tcp => Proto::Tcp,
            Protocol::Udp => Proto::Udp,
        };
        labctl_lb::Service::new(self.vip, self.port, proto)
    }
}

/// What the maps should hold for `lab` under `o`: every service's
/// ClusterIP (and, with in-cluster external access, its external and
/// load-balancer addresses) per port, to its endpoints' `address:targetPort`.
pub fn wanted(lab: &Lab, o: &Overrides) -> Vec<BpfService> {
    let in_cluster_external = o
        .in_cluster_external
        .or(lab.ebpf.map(|e| e.in_cluster_external))
        .unwrap_or(false);
    let mut out: Vec<BpfService> = Vec::new();
    for svc in crate::services::effective(lab, &o.changes) {
        let pods: Vec<_> = svc.endpoints.iter().filter_map(|e| lab.pod(e)).collect();
        let pinned = o
            .backend
            .as_deref()
            .and_then(|b| pods.iter().position(|p| p.name == b))
            .and_then(|i| u32::try_from(i).ok());
        let mut vips = vec![svc.cluster_ip];
        if in_cluster_external {
            vips.extend(svc.external_ips.iter().copied());
            vips.extend(svc.load_balancer_ip);
        }
        for port in &svc.ports {
            let backends: Vec<SocketAddrV4> = pods
                .iter()
                .map(|p| SocketAddrV4::new(p.address.addr(), port.target_port))
                .collect();
            for vip in &vips {
                let s = BpfService {
                    vip: *vip,
                    port: port.port,
                    protocol: port.protocol,
                    backends: backends.clone(),
                    pinned,
                };
                // A frontend declared twice: the later service wins.
                out.retain(|w| w.frontend() != s.frontend());
                out.push(s);
            }
        }
    }
    out
}

/// Makes the maps pinned in `pin_dir` hold exactly `wanted` (the applier
/// of `Action::BpfMaps`; like `cilium service update` per
/// frontend and `cilium service delete` for the rest), and flushes the
/// remembered flows so the next packets choose afresh.
pub fn program_maps(pin_dir: &Path, wanted: &[BpfService]) -> Result<(), LbError> {
    let mut maps =
        LbMaps::open(pin_dir).map_err(lb_err(format!("open the maps in {}", pin_dir.display())))?;
    let existing = maps
        .services()
        .map_err(lb_err("list the programmed services"))?;
    for entry in existing {
        if !wanted.iter().any(|w| w.frontend() == entry.service) {
            maps.remove_service(entry.service)
                .map_err(lb_err(format!("remove service {}", entry.service)))?;
        }
    }
    for w in wanted {
        let frontend = w.frontend();
        maps.set_service(frontend, &w.backends, w.pinned)
            .map_err(lb_err(format!("program service {frontend}")))?;
    }
    maps.flush_flows().map_err(lb_err("flush remembered flows"))
}

/// The programmed services with their backends and the remembered
/// translations, both sorted, read through one opening of the maps; what
/// `labctl show lb` prints (like `cilium bpf lb list`).
pub fn services_and_flows(lab_name: &str) -> Result<(Vec<ServiceEntry>, Vec<FlowEntry>), LbError> {
    let maps = open(lab_name)?;
    let services = maps
        .services()
        .map_err(lb_err("list the programmed services"))?;
    let flows = maps.flows().map_err(lb_err("list remembered flows"))?;
    Ok((services, flows))
}

/// The remembered translations, sorted.
pub fn flows(lab_name: &str) -> Result<Vec<FlowEntry>, LbError> {
    open(lab_name)?
        .flows()
        .map_err(lb_err("list remembered flows"))
}

/// The next translation event of the lab, waiting up to `timeout` (`None`:
/// forever); for `labctl monitor`.
pub fn next_event(
    maps: &mut LbMaps,
    timeout: Option<Duration>,
) -> Result<Option<LbEvent>, LbError> {
    maps.poll_event(timeout)
        .map_err(lb_err("read load-balancer events"))
}

/// Removes the lab's pins (like `rm -r PIN_DIR`) and unmounts labctl's
/// bpffs once no lab uses it. Ok when there is nothing to remove, so it
/// runs after a crash or twice; costs one `stat` for a lab without eBPF.
/// The programs and maps themselves go with the pods' namespaces.
pub fn teardown(lab_name: &str) -> Result<(), LbError> {
    if !pin_dir(lab_name).exists() {
        return Ok(());
    }
    release(lab_name)
}

/// Removes the lab's pins, then the bpffs mount if no other lab has pins.
fn release(lab_name: &str) -> Result<(), LbError> {
    let dir = pin_dir(lab_name);
    labctl_lb::remove_pins(&dir).map_err(lb_err(format!("remove pins in {}", dir.display())))?;
    release_mount(LABS_DIR)
}

/// After a lab's pins under `DEFAULT_BPFFS/sub` are gone: remove `sub` and
/// unmount labctl's bpffs, each only once nothing of another lab is left
/// there (the load balancer's and the router's teardown share this).
pub(crate) fn release_mount(sub: &str) -> Result<(), LbError> {
    let _lock = bpffs_lock()?;
    let mount = Path::new(DEFAULT_BPFFS);
    // Fails while another lab has its pins there: then the mount stays.
    let _ = std::fs::remove_dir(mount.join(sub));
    labctl_lb::unmount_bpffs(mount)
        .map_err(lb_err(format!("unmount the bpffs at {DEFAULT_BPFFS}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPOLOGY: &str = r#"
name: lbt
ebpf: { in_cluster_external: false }
vpc:
  subnets: [{ name: vsw, cidr: 10.0.0.0/24, gateway: 10.0.0.253 }]
nodes:
  - name: node
    interfaces: [{ name: eth0, subnet: vsw, address: 10.0.0.10 }]
    pod_cidr: 10.0.3.0/24
pods:
  - { name: client, node: node, address: 10.0.3.5 }
  - { name: server, node: node, address: 10.0.3.38, ports: [80] }
  - { name: server2, node: node, address: 10.0.3.39, ports: [80] }
services:
  - name: web
    cluster_ip: 192.168.27.242
    external_ips: [8.8.8.8]
    ports: [{ port: 80 }]
    endpoints: [server, server2]
"#;

    #[test]
    fn pin_dir_is_per_lab() {
        assert_eq!(pin_dir("x"), PathBuf::from("/run/labctl/bpf/labctl/x"));
    }

    #[test]
    fn wanted_follows_topology_and_overrides() {
        let lab = labctl_topology::load_str("t.yaml", TOPOLOGY, &Default::default())
            .unwrap_or_else(|e| panic!("test topology loads: {e:?}"));
        let w = wanted(&lab, &Overrides::default());
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].frontend().to_string(), "192.168.27.242:80/TCP");
        assert_eq!(w[0].backends.len(), 2);
        assert_eq!(w[0].pinned, None);
        let o = Overrides {
            backend: Some("server2".into()),
            in_cluster_external: Some(true),
            ..Overrides::default()
        };
        let w = wanted(&lab, &o);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w.iter().all(|s| s.pinned == Some(1)));
        let o = Overrides {
            changes: vec![labctl_topology::ServiceChange {
                service: "web".into(),
                external_traffic_policy: None,
                remove_endpoints: vec!["server".into()],
            }],
            backend: Some("server".into()),
            ..Overrides::default()
        };
        let w = wanted(&lab, &o);
        assert_eq!(w[0].backends.len(), 1);
        assert_eq!(w[0].pinned, None, "a removed endpoint is not pinned");
    }
}
