//! The eBPF service load balancer of labs with `ebpf:` (Terway's IPVLAN +
//! eBPF, Cilium's socket-less load balancing): the tc programs of the
//! `labctl-lb` crate on every pod's eth0 translate `service:port` to an
//! endpoint on egress and back on ingress, so the service address is seen
//! on no interface.
//!
//! `up` loads the programs once per lab with their maps pinned under
//! [`pin_dir`] (every pod shares one service table), attaches both
//! programs to each pod's eth0 inside the pod's namespace and fills the
//! maps from the topology ([`program`]; scenarios call it again with their
//! overrides). The programs are attached with netlink tc (clsact + `tc
//! filter ... bpf da`), so they outlive labctl and go away with the pods'
//! namespaces; `down` removes the pins ([`teardown`]). `labctl show lb` and
//! `labctl monitor` open the pinned maps from later processes.

use std::fs::File;
use std::io;
use std::net::SocketAddrV4;
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
    /// A pod's namespace could not be entered.
    #[error("enter network namespace {netns}: {source}")]
    Netns {
        /// The namespace.
        netns: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Attaching the programs to a pod failed.
    #[error("attach the load balancer to {pod}/{ifname}: {source}")]
    Attach {
        /// The pod.
        pod: String,
        /// Its interface.
        ifname: String,
        /// The loader's error.
        #[source]
        source: labctl_lb::Error,
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
/// [`setup`]) with unmounting it once empty (in [`teardown`]), so one
/// lab's `down` never unmounts the bpffs under another lab's `up`.
fn bpffs_lock() -> Result<Flock<File>, LbError> {
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

/// Loads the programs for `lab` with their maps pinned in [`pin_dir`],
/// attaches them to every pod's eth0 and programs the services; nothing
/// for a lab without `ebpf:`. Like `bpftool prog loadall ... pinmaps DIR`,
/// then per pod `ip netns exec POD tc filter add dev eth0 {egress,ingress}
/// bpf da ...`.
pub fn setup(lab: &Lab) -> Result<(), LbError> {
    if lab.ebpf.is_none() {
        return Ok(());
    }
    if !labctl_lb::programs_built() {
        // The loader says why before touching the file system: fail here,
        // before mounting anything.
        if let Err(e) = Lb::load_pinned(&pin_dir(&lab.name)) {
            return Err(lb_err("load the eBPF programs")(e));
        }
    }
    let result = load_attach_program(lab);
    if result.is_err() {
        // The caller deletes the namespaces (and with them the filters);
        // the pins and the mount are ours to remove.
        let _ = release(&lab.name);
    }
    result
}

fn load_attach_program(lab: &Lab) -> Result<(), LbError> {
    let dir = pin_dir(&lab.name);
    let mut lb = {
        let _lock = bpffs_lock()?;
        labctl_lb::ensure_bpffs(Path::new(DEFAULT_BPFFS))
            .map_err(lb_err(format!("mount a bpffs at {DEFAULT_BPFFS}")))?;
        // Pins left by a lab of the same name that crashed before `down`
        // would carry its services (or an older map layout): start afresh.
        labctl_lb::remove_pins(&dir)
            .map_err(lb_err(format!("remove stale pins in {}", dir.display())))?;
        Lb::load_pinned(&dir).map_err(lb_err("load the eBPF programs"))?
    };
    attach_all(lab, &mut lb)?;
    // The filters hold the programs and maps from here on.
    drop(lb);
    program(lab, &Overrides::default())
}

/// Attaches to every pod, each from a thread inside the pod's namespace
/// (interface names resolve in the thread's namespace).
fn attach_all(lab: &Lab, lb: &mut Lb) -> Result<(), LbError> {
    for pod in &lab.pods {
        let netns = lab.netns(&pod.name);
        crate::sys::in_netns(&netns, || lb.attach(&pod.ifname))
            .map_err(|source| LbError::Netns {
                netns: netns.clone(),
                source,
            })?
            .map_err(|source| LbError::Attach {
                pod: pod.name.clone(),
                ifname: pod.ifname.clone(),
                source,
            })?;
    }
    Ok(())
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

/// One load-balancer service: frontend, backends in slot order, pinned slot.
type Wanted = (labctl_lb::Service, Vec<SocketAddrV4>, Option<u32>);

/// What the maps should hold for `lab` under `o`: every service's
/// ClusterIP (and, with in-cluster external access, its external and
/// load-balancer addresses) per port, to its endpoints' `address:targetPort`.
fn wanted(lab: &Lab, o: &Overrides) -> Vec<Wanted> {
    let in_cluster_external = o
        .in_cluster_external
        .or(lab.ebpf.map(|e| e.in_cluster_external))
        .unwrap_or(false);
    let mut out: Vec<Wanted> = Vec::new();
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
            let proto = match port.protocol {
                Protocol::Tcp => Proto::Tcp,
                Protocol::Udp => Proto::Udp,
            };
            let backends: Vec<SocketAddrV4> = pods
                .iter()
                .map(|p| SocketAddrV4::new(p.address.addr(), port.target_port))
                .collect();
            for vip in &vips {
                let frontend = labctl_lb::Service::new(*vip, port.port, proto);
                // A frontend declared twice: the later service wins.
                out.retain(|(f, _, _)| *f != frontend);
                out.push((frontend, backends.clone(), pinned));
            }
        }
    }
    out
}

/// Makes the lab's maps hold exactly the services the topology gives under
/// `o` (like `cilium service update` per frontend and `cilium service
/// delete` for the rest), pins `o.backend` where it is an endpoint, and
/// flushes the remembered flows so the next packets choose afresh.
pub fn program(lab: &Lab, o: &Overrides) -> Result<(), LbError> {
    let mut maps = open(&lab.name)?;
    let wanted = wanted(lab, o);
    let existing = maps
        .services()
        .map_err(lb_err("list the programmed services"))?;
    for entry in existing {
        if !wanted.iter().any(|(f, _, _)| *f == entry.service) {
            maps.remove_service(entry.service)
                .map_err(lb_err(format!("remove service {}", entry.service)))?;
        }
    }
    for (frontend, backends, pinned) in &wanted {
        maps.set_service(*frontend, backends, *pinned)
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
    let _lock = bpffs_lock()?;
    let mount = Path::new(DEFAULT_BPFFS);
    // Fails while another lab has its pins there: then the mount stays.
    let _ = std::fs::remove_dir(mount.join(LABS_DIR));
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
        assert_eq!(w[0].0.to_string(), "192.168.27.242:80/TCP");
        assert_eq!(w[0].1.len(), 2);
        assert_eq!(w[0].2, None);
        let o = Overrides {
            backend: Some("server2".into()),
            in_cluster_external: Some(true),
            ..Overrides::default()
        };
        let w = wanted(&lab, &o);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w.iter().all(|(_, _, p)| *p == Some(1)));
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
        assert_eq!(w[0].1.len(), 1);
        assert_eq!(w[0].2, None, "a removed endpoint is not pinned");
    }
}
