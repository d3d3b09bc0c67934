//! A scenario's link changes on a lab that is up: netem on a link, a link
//! down, an MTU. Each change becomes planned steps ([`Action::Netem`],
//! [`Action::LinkDown`], [`Action::SetMtu`]) run through the [`Kernel`]
//! before the scenario's traffic, each with the steps that undo it, run
//! after the traffic (in reverse order) so the next scenario starts from
//! the lab as `up` left it.
//!
//! A change on a veth pair applies to both ends (netem and MTU): a link's
//! delay is in both directions, as a cable's is, and a link's MTU is the
//! same at both ends. `state: down` is set on the named end only; the peer
//! loses its carrier with it. A `mac` is the named interface's alone.
//!
//! What the undoing puts back is read from the kernel first (MTU, up or
//! down), never assumed. Bringing a link back up is not the whole undoing:
//! when a link goes down the kernel flushes the IPv4 routes through it
//! (`fib_disable_ip` on NETDEV_DOWN) and its neighbour entries, permanent
//! ones included (`neigh_ifdown`), so the plan's routes and neighbours on
//! that interface are added again.

use std::collections::HashMap;

use std::net::Ipv4Addr;

use labctl_topology::{Lab, LinkChange, ObjectChange, RouteChange};

use crate::kernel::{
    Kernel, KernelError, LinkSettings, Netlink, ebpf, fdb, link, neigh, qdisc, sysctl, tc, veth,
};
use crate::plan::{Action, IfRef, Phase, Plan, Step};
pub use crate::plan::{Iface, Interfaces};
use crate::state::LabState;

/// A change step and the steps that undo it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undoable {
    pub step: Step,
    pub undo: Vec<Step>,
}

/// Why a scenario's changes could not be made or undone.
#[derive(Debug, thiserror::Error)]
pub enum ImpairError {
    #[error("link `{0}` is not an interface the lab's plan makes")]
    Unknown(String),
    #[error("route {route} in {entity} is not one the lab's plan makes; it makes: {have}")]
    NoRoute {
        route: String,
        entity: String,
        have: String,
    },
    #[error("start the netlink runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{}", join(.0))]
    Kernel(Vec<KernelError>),
}

fn join(errors: &[KernelError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn step(netns: &str, action: Action) -> Step {
    Step {
        phase: Phase::Changes,
        netns: netns.to_string(),
        action,
    }
}

/// The interfaces each change touches: the named one, and its veth peer
/// for netem and MTU.
pub fn targets(
    lab: &Lab,
    ifaces: &Interfaces,
    changes: &[LinkChange],
) -> Result<Vec<(Iface, Option<Iface>)>, ImpairError> {
    changes
        .iter()
        .map(|c| {
            let i = ifaces
                .get(&lab.netns(&c.entity), &c.ifname)
                .ok_or_else(|| ImpairError::Unknown(c.link.clone()))?;
            let peer = ifaces.peer(&i);
            Ok((i, peer))
        })
        .collect()
}

/// The steps of the changes, in order, each with its undoing; `before`
/// holds what the kernel had on every interface touched.
pub fn steps(
    plan: &Plan,
    changes: &[LinkChange],
    targets: &[(Iface, Option<Iface>)],
    before: &HashMap<(String, u32), LinkSettings>,
) -> Vec<Undoable> {
    let mut out = Vec::new();
    for (c, (i, peer)) in changes.iter().zip(targets) {
        let both: Vec<&Iface> = std::iter::once(i).chain(peer.as_ref()).collect();
        if let Some(netem) = c.netem {
            for x in &both {
                let (ifname, ifindex) = (x.ifname.clone(), x.ifindex);
                out.push(Undoable {
                    step: step(
                        &x.netns,
                        Action::Netem(qdisc::Netem {
                            ifname: ifname.clone(),
                            ifindex,
                            netem,
                        }),
                    ),
                    undo: vec![step(
                        &x.netns,
                        Action::QdiscDelete(qdisc::QdiscDelete { ifname, ifindex }),
                    )],
                });
            }
        }
        if let Some(mtu) = c.mtu {
            for x in &both {
                let (ifname, ifindex) = (x.ifname.clone(), x.ifindex);
                let Some(was) = before.get(&(x.netns.clone(), ifindex)) else {
                    continue;
                };
                out.push(Undoable {
                    step: step(
                        &x.netns,
                        Action::SetMtu(link::SetMtu {
                            ifname: ifname.clone(),
                            ifindex,
                            mtu,
                        }),
                    ),
                    undo: vec![step(
                        &x.netns,
                        Action::SetMtu(link::SetMtu {
                            ifname,
                            ifindex,
                            mtu: was.mtu,
                        }),
                    )],
                });
            }
        }
        if let Some(mac) = c.mac {
            let (ifname, ifindex) = (i.ifname.clone(), i.ifindex);
            let was = before.get(&(i.netns.clone(), ifindex)).and_then(|b| b.mac);
            out.push(Undoable {
                step: step(
                    &i.netns,
                    Action::SetMac(link::SetMac {
                        ifname: ifname.clone(),
                        ifindex,
                        mac,
                    }),
                ),
                undo: was
                    .map(|mac| {
                        step(
                            &i.netns,
                            Action::SetMac(link::SetMac {
                                ifname,
                                ifindex,
                                mac,
                            }),
                        )
                    })
                    .into_iter()
                    .collect(),
            });
        }
        if c.up {
            // Up with what the kernel flushed when the lab left it down;
            // down again after (which flushes them again).
            let (name, index) = (i.ifname.clone(), i.ifindex);
            if before.get(&(i.netns.clone(), index)).is_some_and(|b| !b.up) {
                out.push(Undoable {
                    step: step(
                        &i.netns,
                        Action::LinkUp(link::LinkUp {
                            ifname: name.clone(),
                            ifindex: index,
                        }),
                    ),
                    undo: vec![step(
                        &i.netns,
                        Action::LinkDown(link::LinkDown {
                            ifname: name,
                            ifindex: index,
                        }),
                    )],
                });
                for again in flushed_with(plan, i) {
                    out.push(Undoable {
                        step: again,
                        undo: Vec::new(),
                    });
                }
            }
        }
        if c.down {
            let (name, index) = (i.ifname.clone(), i.ifindex);
            let mut undo = Vec::new();
            if before.get(&(i.netns.clone(), index)).is_none_or(|b| b.up) {
                undo.push(step(
                    &i.netns,
                    Action::LinkUp(link::LinkUp {
                        ifname: name.clone(),
                        ifindex: index,
                    }),
                ));
                undo.extend(flushed_with(plan, i));
            }
            out.push(Undoable {
                step: step(
                    &i.netns,
                    Action::LinkDown(link::LinkDown {
                        ifname: name,
                        ifindex: index,
                    }),
                ),
                undo,
            });
        }
    }
    out
}

/// The plan's steps the kernel undoes when `i` goes down: its routes and
/// neighbour entries, in plan order.
fn flushed_with(plan: &Plan, i: &Iface) -> Vec<Step> {
    plan.steps
        .iter()
        .filter(|s| s.netns == i.netns)
        .filter(|s| match &s.action {
            Action::AddRoute(crate::kernel::route::AddRoute { ifindex, .. })
            | Action::SelfNeighbour(neigh::SelfNeighbour { ifindex, .. })
            | Action::AddNeighbour(neigh::AddNeighbour { ifindex, .. }) => *ifindex == i.ifindex,
            // An ECMP route goes only when its every next hop does.
            Action::AddNsRoute(r) => {
                r.dev.as_ref().is_some_and(|d| d.ifindex == i.ifindex)
                    || !r.nexthops.is_empty()
                        && r.nexthops.iter().all(|h| h.dev.ifindex == i.ifindex)
            }
            _ => false,
        })
        .map(|s| Step {
            phase: Phase::Changes,
            ..s.clone()
        })
        .collect()
}

/// The steps of the route changes: a deleted route is undone by the
/// plan's own step that made it, an added one by deleting it.
pub fn route_steps(
    lab: &Lab,
    plan: &Plan,
    routes: &[RouteChange],
) -> Result<Vec<Undoable>, ImpairError> {
    let text = crate::plan::route_destination;
    let ifaces = Interfaces::of(plan);
    routes
        .iter()
        .map(|r| {
            let ns = lab.netns(&r.entity);
            if let Some(add) = &r.add {
                let dev = ifaces
                    .get(&ns, &add.dev)
                    .ok_or_else(|| ImpairError::Unknown(format!("{}/{}", r.entity, add.dev)))?;
                let (ifname, ifindex) = (dev.ifname, dev.ifindex);
                return Ok(Undoable {
                    step: step(
                        &ns,
                        Action::AddRoute(crate::kernel::route::AddRoute {
                            destination: r.destination,
                            via: add.via,
                            ifname: ifname.clone(),
                            ifindex,
                        }),
                    ),
                    undo: vec![step(
                        &ns,
                        Action::DelRoute(crate::kernel::route::DelRoute {
                            destination: r.destination,
                            via: add.via,
                            ifname,
                            ifindex,
                        }),
                    )],
                });
            }
            // A route of the low-level layer: taken away by destination,
            // table and metric, whatever its next hops.
            if let Some((add, a)) =
                plan.steps
                    .iter()
                    .filter(|s| s.netns == ns)
                    .find_map(|s| match &s.action {
                        Action::AddNsRoute(a) if a.destination == r.destination => Some((s, a)),
                        _ => None,
                    })
            {
                return Ok(Undoable {
                    step: step(
                        &ns,
                        Action::DelNsRoute(crate::kernel::route::DelNsRoute::of(a)),
                    ),
                    undo: vec![again(add)],
                });
            }
            let made: Vec<(&Step, &ipnet::Ipv4Net, &Option<Ipv4Addr>, &String, u32)> = plan
                .steps
                .iter()
                .filter(|s| s.netns == ns)
                .filter_map(|s| match &s.action {
                    Action::AddRoute(crate::kernel::route::AddRoute {
                        destination,
                        via,
                        ifname,
                        ifindex,
                    }) => Some((s, destination, via, ifname, *ifindex)),
                    _ => None,
                })
                .collect();
            let Some((add, destination, via, ifname, ifindex)) =
                made.iter().find(|m| *m.1 == r.destination)
            else {
                let layer =
                    plan.steps
                        .iter()
                        .filter(|s| s.netns == ns)
                        .filter_map(|s| match &s.action {
                            Action::AddNsRoute(a) => Some(text(&a.destination)),
                            _ => None,
                        });
                let have: Vec<String> = made.iter().map(|m| text(m.1)).chain(layer).collect();
                return Err(ImpairError::NoRoute {
                    route: text(&r.destination),
                    entity: r.entity.clone(),
                    have: if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    },
                });
            };
            Ok(Undoable {
                step: step(
                    &ns,
                    Action::DelRoute(crate::kernel::route::DelRoute {
                        destination: **destination,
                        via: **via,
                        ifname: (*ifname).clone(),
                        ifindex: *ifindex,
                    }),
                ),
                undo: vec![again(add)],
            })
        })
        .collect()
}

/// A plan's step, run again as a change's undoing.
fn again(s: &Step) -> Step {
    Step {
        phase: Phase::Changes,
        ..s.clone()
    }
}

/// The namespaces an object change touches.
fn object_namespaces(lab: &Lab, c: &ObjectChange) -> Vec<String> {
    match c {
        ObjectChange::Neighbour { entity, .. }
        | ObjectChange::Fdb { entity, .. }
        | ObjectChange::Sysctl { entity, .. } => vec![lab.netns(entity)],
        ObjectChange::Move { pod, from, to } => {
            vec![lab.netns(pod), lab.netns(from), lab.netns(to)]
        }
        ObjectChange::Tc { entity, .. } => vec![lab.netns(entity)],
    }
}

/// The steps of the neighbour, FDB, sysctl changes and pod moves, each
/// with its undoing, reading first from the kernel what they alter: a
/// sysctl's value, a moved pod's MACs.
///
/// An entry the change replaces or deletes is put back as the plan makes
/// it; one the kernel had learned is not (it is learned again), and an
/// entry the change adds is deleted.
///
/// A pod moves the way a container restarts on another host with a fixed
/// address: its veth pair is deleted (the pod's end with it) and made
/// again from the new node's bridge, the pod's end with the same name,
/// index, MAC, address and routes. The undoing deletes that pair and
/// replays the plan's own steps for the pod with its MACs, so every
/// ifindex is as `up` made it. (A bridge left without ports by the move,
/// or its undoing, has no carrier and a zero MAC until a port comes back:
/// the kernel's rule, which nothing but a port undoes.)
pub async fn object_steps<K: Kernel>(
    kernel: &K,
    lab: &Lab,
    plan: &Plan,
    changes: &[ObjectChange],
) -> Result<Vec<Undoable>, ImpairError> {
    let ifaces = Interfaces::of(plan);
    let dev = |ns: &str, entity: &str, name: &str| {
        ifaces
            .get(ns, name)
            .ok_or_else(|| ImpairError::Unknown(format!("{entity}/{name}")))
    };
    let mut out = Vec::new();
    for c in changes {
        match c {
            ObjectChange::Neighbour {
                entity,
                dev: name,
                address,
                lladdr,
                state,
            } => {
                let ns = lab.netns(entity);
                let d = dev(&ns, entity, name)?;
                let made = plan.steps.iter().find(|s| {
                    s.netns == ns
                        && matches!(&s.action, Action::AddNeighbour(neigh::AddNeighbour { ifindex, address: a, .. })
                            if *ifindex == d.ifindex && a == address)
                });
                let del = step(
                    &ns,
                    Action::DelNeighbour(neigh::DelNeighbour {
                        ifname: d.ifname.clone(),
                        ifindex: d.ifindex,
                        address: *address,
                    }),
                );
                out.push(match lladdr {
                    Some(lladdr) => Undoable {
                        step: step(
                            &ns,
                            Action::AddNeighbour(neigh::AddNeighbour {
                                ifname: d.ifname.clone(),
                                ifindex: d.ifindex,
                                address: *address,
                                lladdr: *lladdr,
                                state: *state,
                            }),
                        ),
                        undo: vec![made.map_or(del, again)],
                    },
                    None => Undoable {
                        step: del,
                        undo: made.map(again).into_iter().collect(),
                    },
                });
            }
            ObjectChange::Fdb {
                entity,
                dev: name,
                lladdr,
                dst,
                master,
                delete,
            } => {
                let ns = lab.netns(entity);
                let d = dev(&ns, entity, name)?;
                let made = plan.steps.iter().find(|s| {
                    s.netns == ns
                        && matches!(&s.action, Action::AddFdb(fdb::AddFdb { ifindex, lladdr: m, master: t, .. })
                            if *ifindex == d.ifindex && m == lladdr && t == master)
                });
                let del = step(
                    &ns,
                    Action::DelFdb(fdb::DelFdb {
                        ifname: d.ifname.clone(),
                        ifindex: d.ifindex,
                        lladdr: *lladdr,
                        dst: *dst,
                        master: *master,
                    }),
                );
                out.push(if *delete {
                    Undoable {
                        step: del,
                        undo: made.map(again).into_iter().collect(),
                    }
                } else {
                    Undoable {
                        step: step(
                            &ns,
                            Action::AddFdb(fdb::AddFdb {
                                ifname: d.ifname.clone(),
                                ifindex: d.ifindex,
                                lladdr: *lladdr,
                                dst: *dst,
                                master: *master,
                            }),
                        ),
                        undo: vec![made.map_or(del, again)],
                    }
                });
            }
            ObjectChange::Sysctl { entity, key, value } => {
                let ns = lab.netns(entity);
                let was = kernel
                    .sysctl(&ns, key)
                    .await
                    .map_err(|e| ImpairError::Kernel(vec![e]))?;
                let set = |value: &str| {
                    step(
                        &ns,
                        Action::Sysctl(sysctl::Sysctl {
                            key: key.clone(),
                            value: value.to_string(),
                        }),
                    )
                };
                out.push(Undoable {
                    step: set(value),
                    undo: vec![set(&was)],
                });
            }
            ObjectChange::Move { pod, from, to } => {
                out.extend(move_steps(kernel, lab, plan, &ifaces, pod, from, to).await?);
            }
            ObjectChange::Tc {
                entity,
                dev: name,
                hook,
                mirror,
                to,
            } => {
                let ns = lab.netns(entity);
                let d = dev(&ns, entity, name)?;
                // The lab's filters on this hook, mirred and eBPF (an `ebpf:`
                // lab's service programs): what a deletion takes and its
                // undoing puts back.
                let made: Vec<Step> = plan
                    .steps
                    .iter()
                    .filter(|s| {
                        s.netns == ns
                            && matches!(&s.action,
                                Action::TcMirred(tc::TcMirred { ifindex, hook: h, .. })
                                | Action::BpfAttach(ebpf::BpfAttach { ifindex, hook: h, .. })
                                if *ifindex == d.ifindex && h == hook)
                    })
                    .map(again)
                    .collect();
                let has_clsact = plan.steps.iter().any(|s| {
                    s.netns == ns
                        && matches!(&s.action, Action::Clsact(tc::Clsact { ifindex, .. }) if *ifindex == d.ifindex)
                });
                let del = step(
                    &ns,
                    Action::DelTcFilters(tc::DelTcFilters {
                        ifname: d.ifname.clone(),
                        ifindex: d.ifindex,
                        hook: *hook,
                    }),
                );
                match to {
                    None => out.push(Undoable {
                        step: del,
                        undo: made,
                    }),
                    Some(to) => {
                        let t = dev(&ns, entity, to)?;
                        if !has_clsact {
                            out.push(Undoable {
                                step: step(
                                    &ns,
                                    Action::Clsact(tc::Clsact {
                                        ifname: d.ifname.clone(),
                                        ifindex: d.ifindex,
                                    }),
                                ),
                                undo: vec![step(
                                    &ns,
                                    Action::DelClsact(tc::DelClsact {
                                        ifname: d.ifname.clone(),
                                        ifindex: d.ifindex,
                                    }),
                                )],
                            });
                        }
                        let mut undo = Vec::new();
                        if has_clsact {
                            undo.push(del);
                            undo.extend(made);
                        }
                        out.push(Undoable {
                            step: step(
                                &ns,
                                Action::TcMirred(tc::TcMirred {
                                    ifname: d.ifname.clone(),
                                    ifindex: d.ifindex,
                                    hook: *hook,
                                    mirror: *mirror,
                                    to: IfRef {
                                        name: t.ifname,
                                        ifindex: t.ifindex,
                                    },
                                }),
                            ),
                            undo,
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// See [`object_steps`].
async fn move_steps<K: Kernel>(
    kernel: &K,
    lab: &Lab,
    plan: &Plan,
    ifaces: &Interfaces,
    pod: &str,
    from: &str,
    to: &str,
) -> Result<Vec<Undoable>, ImpairError> {
    let (pod_ns, from_ns, to_ns) = (lab.netns(pod), lab.netns(from), lab.netns(to));
    let unknown = || ImpairError::Unknown(format!("{pod}/host"));
    let made = plan
        .steps
        .iter()
        .find(|s| {
            s.netns == from_ns
                && matches!(&s.action, Action::AddVeth(veth::AddVeth { peer_netns, .. }) if *peer_netns == pod_ns)
        })
        .ok_or_else(unknown)?;
    let Action::AddVeth(veth::AddVeth {
        name,
        ifindex,
        peer_ifindex,
        ..
    }) = &made.action
    else {
        return Err(unknown());
    };
    let bridge = lab
        .node(to)
        .map(|n| n.bridge.clone())
        .and_then(|b| ifaces.get(&to_ns, &b))
        .map(|i| IfRef {
            name: i.ifname,
            ifindex: i.ifindex,
        })
        .ok_or_else(|| ImpairError::Unknown(format!("{to}'s pod bridge")))?;
    let read = |ns: String, ifindex: u32| async move {
        kernel
            .link_settings(&ns, ifindex)
            .await
            .map(|s| s.mac)
            .map_err(|e| ImpairError::Kernel(vec![e]))
    };
    let host_mac = read(from_ns.clone(), *ifindex).await?;
    let pod_mac = read(pod_ns.clone(), *peer_ifindex).await?;
    let with_macs = |s: &Step, netns: &str, index: u32, controller: IfRef| {
        let mut s = again(s);
        s.netns = netns.to_string();
        if let Action::AddVeth(veth::AddVeth {
            ifindex,
            mac,
            peer_mac,
            controller: c,
            ..
        }) = &mut s.action
        {
            *ifindex = index;
            *mac = host_mac;
            *peer_mac = pod_mac;
            *c = Some(controller);
        }
        s
    };
    let from_bridge = match &made.action {
        Action::AddVeth(veth::AddVeth {
            controller: Some(c),
            ..
        }) => c.clone(),
        _ => return Err(unknown()),
    };
    // The pod's own steps (its end up, address, routes), as `up` made them.
    let pod_steps: Vec<Step> = plan
        .steps
        .iter()
        .filter(|s| s.netns == pod_ns && s.action != Action::LoopbackUp(link::LoopbackUp))
        .map(again)
        .collect();
    let new_index = ifaces.max_index(&to_ns) + 1;
    let mut undo_back = vec![with_macs(made, &from_ns, *ifindex, from_bridge)];
    undo_back.extend(pod_steps.iter().cloned());
    let mut out = vec![
        Undoable {
            step: step(
                &from_ns,
                Action::DelLink(link::DelLink {
                    ifname: name.clone(),
                    ifindex: *ifindex,
                }),
            ),
            undo: undo_back,
        },
        Undoable {
            step: with_macs(made, &to_ns, new_index, bridge),
            undo: vec![step(
                &to_ns,
                Action::DelLink(link::DelLink {
                    ifname: name.clone(),
                    ifindex: new_index,
                }),
            )],
        },
    ];
    out.extend(pod_steps.into_iter().map(|s| Undoable {
        step: s,
        undo: Vec::new(),
    }));
    Ok(out)
}

/// A scenario's changes as the report shows them, one line each:
/// `node1/eth0: netem delay 50ms`, `vpc: route 172.16.0.0/24 deleted`,
/// `worker: neighbour 10.0.0.9 dev eth0 lladdr 02:...`, `pod-a: moved from
/// node-1 to node-2`.
pub fn change_texts(sc: &labctl_topology::Scenario) -> Vec<String> {
    let mac = |m: &[u8; 6]| labctl_topology::format_mac(m);
    let route = |c: &RouteChange| {
        let dst = crate::plan::route_destination(&c.destination);
        match &c.add {
            None => format!("{}: route {dst} deleted", c.entity),
            Some(a) => {
                let via = a.via.map(|v| format!(" via {v}")).unwrap_or_default();
                format!("{}: route {dst}{via} dev {} added", c.entity, a.dev)
            }
        }
    };
    let object = |c: &ObjectChange| match c {
        ObjectChange::Neighbour {
            entity,
            dev,
            address,
            lladdr: Some(l),
            state,
        } => format!(
            "{entity}: neighbour {address} dev {dev} lladdr {} {}",
            mac(l),
            state.as_str()
        ),
        ObjectChange::Neighbour {
            entity,
            dev,
            address,
            lladdr: None,
            ..
        } => format!("{entity}: neighbour {address} dev {dev} deleted"),
        ObjectChange::Fdb {
            entity,
            dev,
            lladdr,
            dst,
            delete,
            ..
        } => {
            let dst = dst.map(|d| format!(" dst {d}")).unwrap_or_default();
            let what = if *delete { "deleted" } else { "added" };
            format!("{entity}: fdb {} dev {dev}{dst} {what}", mac(lladdr))
        }
        ObjectChange::Sysctl { entity, key, value } => format!("{entity}: {key}={value}"),
        ObjectChange::Move { pod, from, to } => format!("{pod}: moved from {from} to {to}"),
        ObjectChange::Tc {
            entity,
            dev,
            hook,
            mirror,
            to,
        } => {
            let hook = hook.as_str();
            match to {
                None => format!("{entity}: tc filters on {dev} {hook} deleted"),
                Some(to) => {
                    let what = if *mirror { "mirror" } else { "redirect" };
                    format!("{entity}: tc on {dev} {hook}: {what} to {to}")
                }
            }
        }
    };
    sc.link_changes
        .iter()
        .map(link_change_text)
        .chain(sc.route_changes.iter().map(route))
        .chain(sc.object_changes.iter().map(object))
        .collect()
}

/// A link change as the report shows it: `node1/eth0: netem delay 50ms,
/// mtu 1400, address 02:00:00:00:00:01, down`.
fn link_change_text(c: &LinkChange) -> String {
    let mut what = Vec::new();
    if let Some(n) = &c.netem {
        what.push(format!("netem {}", n.tc_args()));
    }
    if let Some(m) = c.mtu {
        what.push(format!("mtu {m}"));
    }
    if let Some(mac) = &c.mac {
        what.push(format!("address {}", labctl_topology::format_mac(mac)));
    }
    if c.down {
        what.push("down".to_string());
    }
    if c.up {
        what.push("up".to_string());
    }
    format!("{}: {}", c.link, what.join(", "))
}

/// Make the changes: read what they alter, then run each step in order.
/// On a failure the steps made so far are undone and every error is
/// returned. On success, the undoing to run after the traffic, in order.
/// `routes` are [`route_steps`], run after the link changes, `objects`
/// [`object_steps`] after those.
pub async fn apply<K: Kernel>(
    kernel: &K,
    plan: &Plan,
    changes: &[LinkChange],
    targets: &[(Iface, Option<Iface>)],
    routes: Vec<Undoable>,
    objects: Vec<Undoable>,
) -> Result<Vec<Step>, Vec<KernelError>> {
    let mut before = HashMap::new();
    for (i, peer) in targets {
        for x in std::iter::once(i).chain(peer.as_ref()) {
            let s = kernel
                .link_settings(&x.netns, x.ifindex)
                .await
                .map_err(|e| vec![e])?;
            before.insert((x.netns.clone(), x.ifindex), s);
        }
    }
    let mut list = steps(plan, changes, targets, &before);
    list.extend(routes);
    list.extend(objects);
    let mut undo: Vec<Step> = Vec::new();
    for u in list {
        if let Err(e) = kernel.run(&u.step).await {
            let mut errors = vec![e];
            errors.extend(restore(kernel, &undo).await);
            return Err(errors);
        }
        // Undone last-made first.
        undo.splice(0..0, u.undo);
    }
    // A link set up (or whose MTU change restarted it) cannot send until
    // the kernel has activated it: wait, or the scenario's first packet
    // may be dropped.
    kernel.settle().await;
    Ok(undo)
}

/// Undo changes: every step, going on past failures, reporting them all.
/// A route or neighbour that is there already is fine: a kernel that did
/// not flush it on link down kept it.
pub async fn restore<K: Kernel>(kernel: &K, undo: &[Step]) -> Vec<KernelError> {
    let mut errors = Vec::new();
    for s in undo {
        if let Err(e) = kernel.run(s).await {
            let replayed = matches!(
                s.action,
                Action::AddRoute(crate::kernel::route::AddRoute { .. })
                    | Action::SelfNeighbour(neigh::SelfNeighbour { .. })
            );
            let exists = e
                .message
                .contains(&format!("os error {}", nix::libc::EEXIST));
            if !(replayed && exists) {
                errors.push(e);
            }
        }
    }
    // The next scenario starts on links that can send (see `apply`).
    kernel.settle().await;
    errors
}

/// Changes made on a live lab, to be undone with [`Applied::undo`].
pub struct Applied {
    rt: tokio::runtime::Runtime,
    kernel: Netlink,
    undo: Vec<Step>,
}

impl Applied {
    /// Make a scenario's link, route and object changes on the lab
    /// `record` stands for.
    pub fn make(
        record: &LabState,
        lab: &Lab,
        sc: &labctl_topology::Scenario,
    ) -> Result<Applied, ImpairError> {
        let (changes, routes, objects) = (&sc.link_changes, &sc.route_changes, &sc.object_changes);
        // The lab as it was brought up: under `up --name` its namespaces
        // carry that name, not the file's.
        let named = lab.named(&record.lab);
        let lab: &Lab = &named;
        let plan = crate::plan::plan(lab);
        let ifaces = Interfaces::of(&plan);
        let targets = targets(lab, &ifaces, changes)?;
        let route_steps = route_steps(lab, &plan, routes)?;
        let mut names: Vec<String> = targets
            .iter()
            .flat_map(|(i, p)| std::iter::once(i).chain(p.as_ref()))
            .map(|x| x.netns.clone())
            .chain(route_steps.iter().map(|u| u.step.netns.clone()))
            .chain(objects.iter().flat_map(|c| object_namespaces(lab, c)))
            .collect();
        names.sort();
        names.dedup();
        let rt = crate::engine::runtime().map_err(|e| match e {
            crate::engine::EngineError::Runtime(e) => ImpairError::Runtime(e),
            other => ImpairError::Runtime(std::io::Error::other(other.to_string())),
        })?;
        let mut kernel = Netlink::new(record.mark());
        let undo = rt.block_on(async {
            kernel
                .attach(&names)
                .map_err(|e| ImpairError::Kernel(vec![e]))?;
            let objects = object_steps(&kernel, lab, &plan, objects).await?;
            apply(&kernel, &plan, changes, &targets, route_steps, objects)
                .await
                .map_err(ImpairError::Kernel)
        })?;
        Ok(Applied { rt, kernel, undo })
    }

    /// The steps that will undo the changes, as iproute2 commands.
    pub fn undo_steps(&self) -> &[Step] {
        &self.undo
    }

    /// Undo the changes, reporting every failure.
    pub fn undo(self) -> Result<(), ImpairError> {
        let errors = self.rt.block_on(restore(&self.kernel, &self.undo));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ImpairError::Kernel(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::kernel::Recorder;

    const LAB: &str = "\
name: im
vpc:
  subnets:
    - { name: vsw, cidr: 10.0.0.0/24, gateway: 10.0.0.1 }
nodes:
  - name: n1
    interfaces: [{ name: eth0, subnet: vsw, address: 10.0.0.10 }]
    pod_cidr: 172.16.0.0/24
pods:
  - { name: p1, node: n1, address: 172.16.0.10 }
clients:
  - { name: c, address: 198.51.100.10/24 }
scenarios:
  - name: s
    from: c
    to: 10.0.0.10
    protocol: icmp
    changes:
      - { link: { name: n1/eth0, netem: { delay: 50ms, loss: 1% }, mtu: 1400 } }
      - { link: { name: p1/eth0, state: down } }
";

    fn run(fail_on: Option<&str>) -> (Vec<String>, Result<Vec<Step>, Vec<KernelError>>) {
        let lab = labctl_topology::load_str("t.yaml", LAB, &BTreeMap::new()).unwrap();
        let plan = crate::plan::plan(&lab);
        let sc = &lab.scenarios[0];
        let targets = targets(&lab, &Interfaces::of(&plan), &sc.link_changes).unwrap();
        let kernel = Recorder {
            fail_on: fail_on.map(str::to_string),
            ..Recorder::default()
        };
        let rt = crate::engine::runtime().unwrap();
        let undo = rt.block_on(apply(
            &kernel,
            &plan,
            &sc.link_changes,
            &targets,
            Vec::new(),
            Vec::new(),
        ));
        if let Ok(u) = &undo {
            assert!(rt.block_on(restore(&kernel, u)).is_empty());
        }
        (kernel.log.take(), undo)
    }

    const TWO_NODES: &str = "\
name: mv
vpc:
  subnets:
    - { name: vsw, cidr: 10.0.0.0/24, gateway: 10.0.0.1 }
  routes:
    - { destination: 172.16.0.0/24, next_hop: n1 }
nodes:
  - name: n1
    interfaces: [{ name: eth0, subnet: vsw, address: 10.0.0.10 }]
    pod_cidr: 172.16.0.0/24
  - name: n2
    interfaces: [{ name: eth0, subnet: vsw, address: 10.0.0.11 }]
    pod_cidr: 172.16.1.0/24
pods:
  - { name: p1, node: n1, address: 172.16.0.10 }
scenarios:
  - name: s
    from: n2
    to: 172.16.0.10
    protocol: icmp
    changes:
      - { sysctl: { in: n1, key: net.ipv4.conf.all.arp_ignore, value: 1 } }
      - { neighbour: { in: n2, dev: eth0, address: 10.0.0.10, lladdr: 02:00:00:00:00:0a } }
      - { move: { pod: p1, to: n2 } }
";

    #[test]
    fn object_changes_and_a_move_are_undone_as_up_made_them() {
        let lab = labctl_topology::load_str("t.yaml", TWO_NODES, &BTreeMap::new()).unwrap();
        let plan = crate::plan::plan(&lab);
        let sc = &lab.scenarios[0];
        let kernel = Recorder::default();
        let rt = crate::engine::runtime().unwrap();
        let objects = rt
            .block_on(object_steps(&kernel, &lab, &plan, &sc.object_changes))
            .unwrap();
        let undo = rt
            .block_on(apply(&kernel, &plan, &[], &[], Vec::new(), objects))
            .unwrap();
        let log = kernel.log.take();
        let made: Vec<&str> = log
            .iter()
            .map(String::as_str)
            .filter(|l| !l.contains(" show ") && !l.contains("sysctl -n"))
            .collect();
        let host = plan
            .steps
            .iter()
            .find_map(|s| match &s.action {
                Action::AddVeth(veth::AddVeth { name, .. }) if s.netns == "mv-n1" => {
                    Some(name.clone())
                }
                _ => None,
            })
            .unwrap();
        // The sysctl's old value is read first; the pod's MACs are kept.
        assert!(
            log[0].contains("sysctl -n net.ipv4.conf.all.arp_ignore"),
            "{log:#?}"
        );
        assert_eq!(
            made[0],
            "ip netns exec mv-n1 sysctl -qw net.ipv4.conf.all.arp_ignore=1"
        );
        assert!(
            made[1].starts_with("ip -n mv-n2 neigh replace 10.0.0.10 lladdr 02:00:00:00:00:0a")
        );
        assert_eq!(made[2], format!("ip -n mv-n1 link del {host}"));
        assert!(
            made[3].starts_with(&format!("ip -n mv-n2 link add {host} index "))
                && made[3].contains("peer name eth0 netns mv-p1 index 2 address 02:00:00:00:00:02")
                && made[3].contains("master cni0"),
            "{}",
            made[3]
        );
        assert!(
            made.iter()
                .any(|l| l.contains("ip -n mv-p1 addr add 172.16.0.10/24"))
        );
        let undo: Vec<String> = undo.iter().map(|s| s.to_string()).collect();
        assert!(
            undo[0].starts_with(&format!("ip -n mv-n2 link del {host}")),
            "{undo:#?}"
        );
        assert!(
            undo[1].starts_with(&format!("ip -n mv-n1 link add {host} index "))
                && undo[1].contains("master cni0"),
            "{undo:#?}"
        );
        assert!(
            undo.iter()
                .any(|l| l.starts_with("ip -n mv-p1 route add default"))
        );
        assert!(
            undo.iter()
                .any(|l| l.starts_with("ip -n mv-n2 neigh del 10.0.0.10 dev eth0"))
        );
        assert_eq!(
            undo.last().unwrap(),
            "ip netns exec mv-n1 sysctl -qw net.ipv4.conf.all.arp_ignore=0"
        );
    }

    #[test]
    fn changes_hit_both_ends_and_are_undone_in_reverse() {
        let (log, undo) = run(None);
        assert!(undo.is_ok());
        let n1 = |l: &str| {
            log.iter()
                .position(|x| x == l)
                .unwrap_or_else(|| panic!("no `{l}` in {log:#?}"))
        };
        let nd = n1("tc -n im-n1 qdisc replace dev eth0 root netem delay 50ms loss 1%");
        let vd = n1("tc -n im-vpc qdisc replace dev n1-eth0 root netem delay 50ms loss 1%");
        let m = n1("ip -n im-n1 link set eth0 mtu 1400");
        let down = n1("ip -n im-p1 link set eth0 down");
        let up = n1("ip -n im-p1 link set eth0 up");
        // The pod's default route, flushed with the link, comes back.
        let route = n1("ip -n im-p1 route add default via 172.16.0.1 dev eth0 proto static");
        let m_back = n1("ip -n im-n1 link set eth0 mtu 1500");
        let q_back = n1("tc -n im-n1 qdisc del dev eth0 root");
        let vq_back = n1("tc -n im-vpc qdisc del dev n1-eth0 root");
        assert!(nd < vd && vd < m && m < down, "{log:#?}");
        assert!(
            down < up && up < route && route < m_back && m_back < vq_back && vq_back < q_back,
            "{log:#?}"
        );
        // Settings are read before anything changes.
        let first_change = nd;
        assert!(
            log[..first_change]
                .iter()
                .all(|l| l.contains("link show index")),
            "{log:#?}"
        );
    }

    #[test]
    fn a_failed_change_undoes_what_was_made() {
        let (log, undo) = run(Some("link set eth0 down"));
        let errors = undo.expect_err("must fail");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].what.contains("link set eth0 down"));
        let tail: Vec<&str> = log
            .iter()
            .skip_while(|l| !l.contains("n1-eth0 mtu 1400"))
            .skip(1)
            .map(String::as_str)
            .collect();
        assert_eq!(
            tail,
            [
                "ip -n im-vpc link set n1-eth0 mtu 1500",
                "ip -n im-n1 link set eth0 mtu 1500",
                "tc -n im-vpc qdisc del dev n1-eth0 root",
                "tc -n im-n1 qdisc del dev eth0 root",
            ]
        );
    }
}
