//! The eBPF overlay router of labs whose `tc:` runs `route_from_container`
//! / `route_from_overlay` (Cilium's VXLAN data path, SCENARIOS.md section
//! 4; the programs and their maps are the `labctl-lb` crate's
//! [`labctl_lb::Router`]).
//!
//! Every write is a step of the lab's plan (`plan/route.rs`):
//! `RouteLoad` loads the object once per namespace that uses it and pins
//! its programs and maps under [`pin_dir`] (one directory per node, as
//! each Cilium agent has maps of its own; [`load`]), `BpfAttach` puts a
//! pinned program on a device, and `RouteMaps` writes the endpoints,
//! tunnels and VXLAN device the topology's `bpf_maps` give, with the
//! ifindexes the plan fixed ([`program_maps`]). `labctl show route` reads
//! them back ([`tables`]); `down` removes the pins ([`teardown`]). This
//! module holds the appliers and readers, never a plan.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use labctl_lb::{
    DEFAULT_BPFFS, EndpointEntry, RedirectMode, RouteMaps, RouteTables, Router, TunnelEntry,
};
use labctl_topology::BpfRedirect;
use serde::Serialize;

use crate::lb::LbError;

/// The directory under the bpffs holding every lab's router pins (beside
/// the load balancer's, whose per-lab directory holds only files).
const LABS_DIR: &str = "labctl-route";

/// Where a lab's routers are pinned: `/run/labctl/bpf/labctl-route/LAB`.
pub fn lab_dir(lab: &str) -> PathBuf {
    Path::new(DEFAULT_BPFFS).join(LABS_DIR).join(lab)
}

/// Where the router of `entity` (a node) of `lab` is pinned.
pub fn pin_dir(lab: &str, entity: &str) -> PathBuf {
    lab_dir(lab).join(entity)
}

/// A local endpoint as the plan programs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub address: Ipv4Addr,
    /// The pod's host-side device's ifindex.
    pub ifindex: u32,
    pub identity: u32,
    pub lxc_mac: [u8; 6],
    pub pod_mac: [u8; 6],
}

/// What one node's maps hold (the payload of `Action::RouteMaps`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tables {
    pub endpoints: Vec<Endpoint>,
    pub tunnels: Vec<(Ipv4Net, Ipv4Addr)>,
    /// The VXLAN device's ifindex, 0 for none.
    pub tunnel_ifindex: u32,
    /// Local delivery: `bpf_redirect` or `bpf_redirect_peer`.
    pub redirect: BpfRedirect,
}

/// The loader's form of a topology's `redirect`.
pub fn redirect_mode(r: BpfRedirect) -> RedirectMode {
    match r {
        BpfRedirect::Egress => RedirectMode::Egress,
        BpfRedirect::Peer => RedirectMode::Peer,
    }
}

impl Tables {
    /// The loader's form.
    pub fn to_lb(&self) -> RouteTables {
        RouteTables {
            endpoints: self
                .endpoints
                .iter()
                .map(|e| EndpointEntry {
                    address: e.address,
                    ifindex: e.ifindex,
                    identity: e.identity,
                    lxc_mac: e.lxc_mac,
                    pod_mac: e.pod_mac,
                })
                .collect(),
            tunnels: self
                .tunnels
                .iter()
                .map(|(prefix, remote)| TunnelEntry {
                    prefix: prefix.network(),
                    prefix_len: prefix.prefix_len(),
                    remote: *remote,
                })
                .collect(),
            tunnel_ifindex: self.tunnel_ifindex,
            redirect: redirect_mode(self.redirect),
        }
    }
}

fn err(action: impl Into<String>) -> impl FnOnce(labctl_lb::Error) -> LbError {
    let action = action.into();
    move |source| match source {
        labctl_lb::Error::NotBuilt { reason } => LbError::NotBuilt { reason },
        source => LbError::Lb { action, source },
    }
}

/// Loads the router with programs and maps pinned in `pin_dir` (the
/// applier of `Action::RouteLoad`), after removing pins an
/// earlier lab of the same name left; like `bpftool prog loadall OBJ
/// PIN_DIR type classifier pinmaps PIN_DIR`. Blocking.
pub fn load(pin_dir: &Path) -> Result<(), LbError> {
    crate::lb::check_built()?;
    let mut router = {
        let _lock = crate::lb::bpffs_lock()?;
        labctl_lb::ensure_bpffs(Path::new(DEFAULT_BPFFS))
            .map_err(err(format!("mount a bpffs at {DEFAULT_BPFFS}")))?;
        labctl_lb::remove_pins(pin_dir)
            .map_err(err(format!("remove stale pins in {}", pin_dir.display())))?;
        Router::load_pinned(pin_dir).map_err(err("load the eBPF router"))?
    };
    router
        .pin_programs()
        .map_err(err("pin the eBPF router's programs"))
}

/// Makes the maps pinned in `pin_dir` hold exactly `tables` (the applier
/// of `Action::RouteMaps`).
pub fn program_maps(pin_dir: &Path, tables: &Tables) -> Result<(), LbError> {
    RouteMaps::open(pin_dir)
        .and_then(|mut m| m.program(&tables.to_lb()))
        .map_err(err(format!(
            "program the router maps in {}",
            pin_dir.display()
        )))
}

/// What the router maps of `entity` hold; for `labctl show route`.
pub fn tables(lab: &str, entity: &str) -> Result<RouteTables, LbError> {
    let dir = pin_dir(lab, entity);
    if !dir.is_dir() {
        return Err(LbError::NoRouter {
            lab: lab.to_owned(),
            entity: entity.to_owned(),
            pin_dir: dir,
        });
    }
    RouteMaps::open(&dir)
        .and_then(|m| m.tables())
        .map_err(err(format!("read the router maps of {entity}")))
}

/// Removes every router pin of the lab (each node's directory, then the
/// lab's); Ok when there is none. The programs and maps go with the
/// namespaces whose filters hold them.
pub fn teardown(lab: &str) -> Result<(), LbError> {
    let dir = lab_dir(lab);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut first = None;
    for entry in entries.flatten() {
        if let Err(e) = labctl_lb::remove_pins(&entry.path()) {
            first.get_or_insert(e);
        }
    }
    if let Err(e) = labctl_lb::remove_pins(&dir) {
        first.get_or_insert(e);
    }
    if let Some(e) = first {
        return Err(err(format!("remove router pins in {}", dir.display()))(e));
    }
    crate::lb::release_mount(LABS_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_dirs_are_per_lab_and_node() {
        assert_eq!(
            pin_dir("cv", "node01"),
            PathBuf::from("/run/labctl/bpf/labctl-route/cv/node01")
        );
    }

    /// The topology's list of tc eBPF programs is the loader's.
    #[test]
    fn topology_programs_are_the_routers() {
        let names: Vec<&str> = labctl_lb::RouteProgram::ALL
            .iter()
            .map(|p| p.name())
            .collect();
        assert_eq!(names, labctl_topology::TC_BPF_PROGRAMS);
    }

    /// The load balancer's programs the `ebpf` key lowers to are the
    /// loader's, each on the hook it is written for.
    #[test]
    fn topology_lb_programs_are_the_load_balancers() {
        use labctl_topology::TcHook;
        let programs: Vec<(&str, TcHook)> = labctl_lb::Program::ALL
            .iter()
            .map(|p| {
                let hook = match p {
                    labctl_lb::Program::Egress => TcHook::Egress,
                    labctl_lb::Program::Ingress => TcHook::Ingress,
                };
                (p.name(), hook)
            })
            .collect();
        assert_eq!(programs, labctl_topology::LB_PROGRAMS);
    }

    #[test]
    fn tables_convert_prefixes_to_networks() {
        let t = Tables {
            endpoints: vec![],
            tunnels: vec![(
                "10.244.6.0/24".parse().unwrap(),
                Ipv4Addr::new(192, 168, 66, 221),
            )],
            tunnel_ifindex: 4,
            redirect: BpfRedirect::Peer,
        };
        let lb = t.to_lb();
        assert_eq!(lb.tunnels[0].prefix, Ipv4Addr::new(10, 244, 6, 0));
        assert_eq!(lb.tunnels[0].prefix_len, 24);
        assert_eq!(lb.tunnel_ifindex, 4);
        assert_eq!(lb.redirect, RedirectMode::Peer);
    }
}
