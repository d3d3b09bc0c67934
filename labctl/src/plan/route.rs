//! The eBPF overlay router of a lab as plan steps ([`crate::route`]): for
//! every namespace whose `tc:` runs one of the router's programs or that
//! has `bpf_maps`, load the object once with its own pin directory
//! (`RouteLoad`); attach each `tc: ... bpf:` program (`BpfAttach`, on a
//! pinned program: the router's, or the load balancer's that the `ebpf`
//! key lowers to, pinned once for the lab by [`super::ebpf`]); and fill the maps
//! (`RouteMaps`) with the ifindexes this plan gave the devices. Written by
//! hand because the lab's devices and their ifindexes are only known here;
//! `labctl plan -o script` prints the `bpftool` and `tc` commands that do
//! the same (written, as the load balancer's, by [`crate::kernel::ebpf`]).

use labctl_topology::{LB_PROGRAMS, Lab, Objects, TcAction};

use super::{Action, Interfaces, Phase, Step};
use crate::kernel::ebpf;
use crate::lb;
use crate::route::{self, Endpoint, Tables};

/// The eBPF filters' steps and the router's, after the devices are
/// planned (`index` holds their ifindexes): the filters of `lowered` (the
/// CNI keys' objects: the load balancer's) and of the user's own layer,
/// whose `bpf_maps` are the router's.
pub(super) fn steps(lab: &Lab, lowered: &Objects, index: &Interfaces) -> Vec<Step> {
    let o = &lab.objects;
    let is_lb = |program: &str| LB_PROGRAMS.iter().any(|(p, _)| *p == program);
    let mut users: Vec<&str> = Vec::new();
    let bpf_tc = lowered
        .tc
        .iter()
        .chain(&o.tc)
        .filter_map(|t| match &t.action {
            TcAction::Bpf { program } => Some((t, program)),
            TcAction::Mirred { .. } => None,
        });
    for (t, program) in bpf_tc.clone() {
        if !is_lb(program) && !users.contains(&t.netns.as_str()) {
            users.push(&t.netns);
        }
    }
    for m in &o.bpf_maps {
        if !users.contains(&m.netns.as_str()) {
            users.push(&m.netns);
        }
    }
    let pin_dir = |entity: &str| route::pin_dir(&lab.name, entity);
    let ifindex = |netns: &str, name: &str| index.get(netns, name).map_or(0, |i| i.ifindex);
    let mut out = Vec::new();
    for entity in &users {
        out.push(Step {
            phase: Phase::Services,
            netns: lab.netns(entity),
            action: Action::RouteLoad(ebpf::RouteLoad {
                object: labctl_lb::ROUTE_OBJECT_PATH.to_string(),
                pin_dir: pin_dir(entity).display().to_string(),
            }),
        });
    }
    let lb_pins = lb::pin_dir(&lab.name);
    for (t, program) in bpf_tc {
        let netns = lab.netns(&t.netns);
        let pin = if is_lb(program) {
            lb_pins.join(program)
        } else {
            pin_dir(&t.netns).join(program)
        };
        out.push(Step {
            phase: Phase::Ebpf,
            action: Action::BpfAttach(ebpf::BpfAttach {
                ifname: t.dev.clone(),
                ifindex: ifindex(&netns, &t.dev),
                hook: t.hook,
                program: program.clone(),
                pin: pin.display().to_string(),
            }),
            netns,
        });
    }
    for m in &o.bpf_maps {
        let netns = lab.netns(&m.netns);
        let tables = Tables {
            endpoints: m
                .endpoints
                .iter()
                .map(|e| Endpoint {
                    address: e.address,
                    ifindex: ifindex(&netns, &e.dev),
                    identity: e.identity,
                    lxc_mac: e.lxc_mac,
                    pod_mac: e.pod_mac,
                })
                .collect(),
            tunnels: m.tunnels.iter().map(|t| (t.prefix, t.remote)).collect(),
            tunnel_ifindex: m.tunnel_dev.as_ref().map_or(0, |d| ifindex(&netns, d)),
            redirect: m.redirect,
        };
        out.push(Step {
            phase: Phase::Ebpf,
            netns,
            action: Action::RouteMaps(ebpf::RouteMaps {
                pin_dir: pin_dir(&m.netns).display().to_string(),
                tables,
            }),
        });
    }
    out
}
