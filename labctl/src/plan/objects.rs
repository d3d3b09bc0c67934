//! Planning the low-level layer (`namespaces`, `links`, `addresses`,
//! `routes`, `neighbours`, `fdb`, `tc`): each object becomes its kernel
//! actions, in the phases the rest of the plan uses. It plans the CNI keys
//! lowered to objects (`Lab::lowered`) first, then the user's own layer, so
//! the keys' ifindexes stay as they were; a device an earlier call made is
//! found by the steps that made it.

use labctl_topology::{Lab, LinkKind, Objects, TcAction, hashed_ifname};

use super::{Action, IfRef, Indexes, Interfaces, Phase, Step};
use crate::kernel::{
    addr, bond, bridge, dummy, fdb, link, macvlan, neigh, route, sysctl, tc, veth, vlan, vxlan,
};

/// Append the steps of `o` (the CNI keys lowered, or the user's own
/// layer); returns every interface made so far, by namespace and name.
///
/// Ifindexes are given in list order (a veth's peer right after it), so
/// objects lowered from the CNI keys keep the numbers they always had.
/// Phases: bridges and bonds (devices), veths and the dummies links are
/// stacked on (links), vxlans, vlans, macvlans and ipvlans, other dummies
/// and bond slaves joining (stacked: their parents and bonds exist, a
/// slave is down until it has joined), masters,
/// MTUs, ARP off, addresses and renames (addresses), port options, VLANs,
/// routes, neighbours, FDB and tc (routes), sysctls and `state: down` last.
pub(super) fn steps(
    lab: &Lab,
    o: &Objects,
    idx: &mut Indexes,
    steps: &mut Vec<Step>,
) -> Interfaces {
    let mut index = Interfaces::of_steps(steps);
    if o.is_empty() {
        return index;
    }
    let ns = |entity: &str| lab.netns(entity);
    // Resolution checked every reference; 0 would make the kernel say
    // "no such device" rather than build something else.
    let find = |index: &Interfaces, netns: &str, name: &str| IfRef {
        name: name.to_string(),
        ifindex: index.get(netns, name).map_or(0, |i| i.ifindex),
    };
    let mut push = |phase, netns: String, action| {
        steps.push(Step {
            phase,
            netns,
            action,
        })
    };
    // The bonds, by namespace (the kernel's name) and name: looked up for
    // every port, so a set (10,000 pods are 10,000 ports).
    let bonds: std::collections::HashSet<(String, &str)> = o
        .links
        .iter()
        .filter(|l| matches!(l.kind, LinkKind::Bond(_)))
        .map(|l| (ns(&l.netns), l.name.as_str()))
        .collect();
    let is_bond_in = |netns: &str, name: &str| bonds.contains(&(netns.to_string(), name));
    let is_bond = |entity: &str, name: &str| !bonds.is_empty() && is_bond_in(&ns(entity), name);
    // The devices links are stacked on (a vlan's, macvlan's or ipvlan's
    // parent, a vxlan's underlay), by entity and name: a dummy that is
    // none of them is made with the stacked links.
    let parents: std::collections::HashSet<(&str, &str)> = o
        .links
        .iter()
        .filter_map(|l| match &l.kind {
            LinkKind::Vlan(v) => Some((l.netns.as_str(), v.parent.as_str())),
            LinkKind::Macvlan(m) => Some((l.made_in(), m.parent.as_str())),
            LinkKind::Ipvlan(i) => Some((l.made_in(), i.parent.as_str())),
            LinkKind::Vxlan(x) => Some((l.made_in(), x.dev.as_deref()?)),
            _ => None,
        })
        .collect();

    // Every link's ifindex (and a veth peer's), in list order, before any
    // is made: a port names its master wherever the two are listed.
    let mut numbers: Vec<(u32, u32)> = Vec::with_capacity(o.links.len());
    for link in &o.links {
        let netns = ns(&link.netns);
        let made_in = ns(link.made_in());
        let pair = match &link.kind {
            LinkKind::Veth { peer } => {
                let peer_ns = ns(&peer.netns);
                let (a, b) = (idx.next(&netns), idx.next(&peer_ns));
                index.insert(&peer_ns, &peer.name, b);
                (a, b)
            }
            _ if made_in != netns => (idx.next_in_both(&made_in, &netns), 0),
            _ => (idx.next(&netns), 0),
        };
        index.insert(&netns, &link.name, pair.0);
        numbers.push(pair);
    }

    // Masters are made first (an earlier phase): their ports and slaves
    // join them.
    for (link, &(ifindex, _)) in o.links.iter().zip(&numbers) {
        let netns = ns(&link.netns);
        let action = match &link.kind {
            LinkKind::Bridge(b) if b.vlan_filtering => {
                Action::AddVlanBridge(bridge::AddVlanBridge {
                    name: link.name.clone(),
                    ifindex,
                    mac: link.mac,
                    default_pvid: b.vlan_default_pvid,
                })
            }
            LinkKind::Bridge(_) => Action::AddBridge(bridge::AddBridge {
                name: link.name.clone(),
                ifindex,
                mac: link.mac,
            }),
            LinkKind::Bond(b) => Action::AddBond(bond::AddBond {
                name: link.name.clone(),
                ifindex,
                mac: link.mac,
                mode: b.mode,
                miimon: b.miimon,
            }),
            _ => continue,
        };
        push(Phase::Devices, netns, action);
    }
    let mut mtus = Vec::new();
    // (namespace, name, ifindex, master, port options, up)
    let mut ends = Vec::new();
    let mut arp_off = Vec::new();
    for (link, &(ifindex, peer_ifindex)) in o.links.iter().zip(&numbers) {
        let netns = ns(&link.netns);
        if !link.arp {
            arp_off.push((netns.clone(), link.name.clone(), ifindex));
        }
        match &link.kind {
            LinkKind::Bridge(_) | LinkKind::Bond(_) => {
                ends.push((
                    netns.clone(),
                    link.name.clone(),
                    ifindex,
                    link.master.clone(),
                    link.port.clone(),
                    link.up,
                ));
                mtus.push((netns, link.name.clone(), ifindex, link.mtu));
            }
            LinkKind::Veth { peer } => {
                let peer_ns = ns(&peer.netns);
                // A bond's slave joins later, while down (bond::Enslave).
                let controller = link
                    .master
                    .as_ref()
                    .filter(|m| !is_bond(&link.netns, m))
                    .map(|m| find(&index, &netns, m));
                push(
                    Phase::Links,
                    netns.clone(),
                    Action::AddVeth(veth::AddVeth {
                        name: link.name.clone(),
                        ifindex,
                        mac: link.mac,
                        controller,
                        peer_name: peer.name.clone(),
                        peer_netns: peer_ns.clone(),
                        peer_ifindex,
                        peer_mac: peer.mac,
                    }),
                );
                if peer.up {
                    push(
                        Phase::Addresses,
                        peer_ns.clone(),
                        Action::LinkUp(link::LinkUp {
                            ifname: peer.name.clone(),
                            ifindex: peer_ifindex,
                        }),
                    );
                }
                mtus.push((netns.clone(), link.name.clone(), ifindex, link.mtu));
                mtus.push((peer_ns.clone(), peer.name.clone(), peer_ifindex, peer.mtu));
                let near_master = link.master.clone().filter(|m| is_bond(&link.netns, m));
                ends.push((
                    netns,
                    link.name.clone(),
                    ifindex,
                    near_master,
                    link.port.clone(),
                    link.up,
                ));
                ends.push((
                    peer_ns,
                    peer.name.clone(),
                    peer_ifindex,
                    peer.master.clone(),
                    peer.port.clone(),
                    // A down peer is never brought up, unless joining a
                    // bond does it.
                    peer.up
                        || !peer
                            .master
                            .as_ref()
                            .is_some_and(|m| is_bond(&peer.netns, m)),
                ));
            }
            LinkKind::Dummy => {
                // As a device added to a running namespace: after every
                // veth, wherever made (kube-proxy's kube-ipvs0 comes after
                // the node's ENIs, which the VPC's namespace makes; see
                // `Lab::lowered`), unless a link is stacked on it.
                let phase = if parents.contains(&(link.netns.as_str(), link.name.as_str())) {
                    Phase::Links
                } else {
                    Phase::Stacked
                };
                push(
                    phase,
                    netns.clone(),
                    Action::AddDummy(dummy::AddDummy {
                        name: link.name.clone(),
                        ifindex,
                    }),
                );
                if let Some(mac) = link.mac {
                    // A dummy takes a new MAC while up (IFF_LIVE_ADDR_CHANGE).
                    push(
                        Phase::Stacked,
                        netns.clone(),
                        Action::SetMac(link::SetMac {
                            ifname: link.name.clone(),
                            ifindex,
                            mac,
                        }),
                    );
                }
                ends.push((
                    netns.clone(),
                    link.name.clone(),
                    ifindex,
                    link.master.clone(),
                    link.port.clone(),
                    link.up,
                ));
                mtus.push((netns, link.name.clone(), ifindex, link.mtu));
            }
            LinkKind::Vlan(v) => {
                let parent = find(&index, &netns, &v.parent);
                // A veth's far end comes up with the addresses, after this
                // phase: the vlan step brings it up first.
                let parent_up = link.up
                    && o.links.iter().any(|l| match &l.kind {
                        LinkKind::Veth { peer: p } => {
                            ns(&p.netns) == netns
                                && p.name == v.parent
                                && p.up
                                && !p.master.as_ref().is_some_and(|m| is_bond(&p.netns, m))
                        }
                        _ => false,
                    });
                push(
                    Phase::Stacked,
                    netns.clone(),
                    Action::AddVlan(vlan::AddVlan {
                        name: link.name.clone(),
                        ifindex,
                        parent,
                        id: v.id,
                        mac: link.mac,
                        parent_up,
                    }),
                );
                ends.push((
                    netns.clone(),
                    link.name.clone(),
                    ifindex,
                    link.master.clone(),
                    link.port.clone(),
                    link.up,
                ));
                mtus.push((netns, link.name.clone(), ifindex, link.mtu));
            }
            LinkKind::Vxlan(_) | LinkKind::Macvlan(_) | LinkKind::Ipvlan(_) => {
                let made_in = ns(link.made_in());
                let moved = made_in != netns;
                // The kernel looks a new link's name up in the namespace
                // that asks: made under a name of our own, renamed there.
                let made_as = if moved {
                    let prefix = match &link.kind {
                        LinkKind::Vxlan(_) => "vx",
                        LinkKind::Macvlan(_) => "mv",
                        _ => "iv",
                    };
                    hashed_ifname(prefix, &format!("{}/{}", link.netns, link.name))
                } else {
                    link.name.clone()
                };
                let action = match &link.kind {
                    LinkKind::Vxlan(x) => Action::AddVxlan(vxlan::AddVxlan {
                        name: made_as.clone(),
                        ifindex,
                        netns: moved.then(|| netns.clone()),
                        mac: link.mac,
                        id: x.id,
                        dev: x.dev.as_ref().map(|d| find(&index, &made_in, d)),
                        local: x.local,
                        remote: x.remote,
                        port: x.port,
                        learning: x.learning,
                        external: x.external,
                    }),
                    LinkKind::Macvlan(m) => Action::AddOffParent(macvlan::AddOffParent {
                        name: made_as.clone(),
                        ifindex,
                        parent: find(&index, &made_in, &m.parent),
                        netns: moved.then(|| netns.clone()),
                        mac: link.mac,
                        mode: macvlan::Mode::Macvlan(m.mode),
                    }),
                    LinkKind::Ipvlan(i) => Action::AddOffParent(macvlan::AddOffParent {
                        name: made_as.clone(),
                        ifindex,
                        parent: find(&index, &made_in, &i.parent),
                        netns: moved.then(|| netns.clone()),
                        mac: link.mac,
                        mode: macvlan::Mode::Ipvlan(i.mode),
                    }),
                    _ => unreachable!("matched above"),
                };
                push(Phase::Stacked, made_in, action);
                if moved {
                    push(
                        Phase::Addresses,
                        netns.clone(),
                        Action::RenameUp(link::RenameUp {
                            from: made_as,
                            ifname: link.name.clone(),
                            ifindex,
                        }),
                    );
                }
                ends.push((
                    netns.clone(),
                    link.name.clone(),
                    ifindex,
                    link.master.clone(),
                    link.port.clone(),
                    link.up,
                ));
                mtus.push((netns, link.name.clone(), ifindex, link.mtu));
            }
        }
    }
    let mut downs = Vec::new();
    for (netns, ifname, ifindex, master, port, up) in ends {
        if let Some(m) = &master {
            let master = find(&index, &netns, m);
            if is_bond_in(&netns, m) {
                push(
                    Phase::Stacked,
                    netns.clone(),
                    Action::Enslave(bond::Enslave {
                        ifname: ifname.clone(),
                        ifindex,
                        bond: master,
                    }),
                );
            } else {
                push(
                    Phase::Addresses,
                    netns.clone(),
                    Action::SetMaster(link::SetMaster {
                        ifname: ifname.clone(),
                        ifindex,
                        master,
                    }),
                );
            }
        }
        if let Some(p) = &port {
            if p.has_flags() {
                push(
                    Phase::Routes,
                    netns.clone(),
                    Action::SetPort(bridge::SetPort {
                        ifname: ifname.clone(),
                        ifindex,
                        learning: p.learning,
                        neigh_suppress: p.neigh_suppress,
                        isolated: p.isolated,
                        hairpin: p.hairpin,
                    }),
                );
            }
            for v in &p.vlans {
                push(
                    Phase::Routes,
                    netns.clone(),
                    Action::BridgeVlan(bridge::AddBridgeVlan {
                        ifname: ifname.clone(),
                        ifindex,
                        vlan: *v,
                        bridge_self: false,
                    }),
                );
            }
        }
        if !up {
            downs.push((netns, ifname, ifindex));
        }
    }
    for (netns, ifname, ifindex, mtu) in mtus {
        if let Some(mtu) = mtu {
            push(
                Phase::Addresses,
                netns,
                Action::SetMtu(link::SetMtu {
                    ifname,
                    ifindex,
                    mtu,
                }),
            );
        }
    }
    for (netns, ifname, ifindex) in arp_off {
        push(
            Phase::Addresses,
            netns,
            Action::ArpOff(link::ArpOff { ifname, ifindex }),
        );
    }
    for a in &o.addresses {
        let netns = ns(&a.netns);
        let dev = find(&index, &netns, &a.dev);
        let action = if a.scope_host {
            Action::AddHostAddress(addr::AddHostAddress {
                ifname: dev.name,
                ifindex: dev.ifindex,
                address: a.address,
            })
        } else {
            Action::AddAddress(addr::AddAddress {
                ifname: dev.name,
                ifindex: dev.ifindex,
                address: a.address,
            })
        };
        push(Phase::Addresses, netns, action);
    }
    for r in &o.routes {
        let netns = ns(&r.netns);
        let action = match &r.dev {
            Some(dev) if r.is_plain() => {
                let dev = find(&index, &netns, dev);
                Action::AddRoute(route::AddRoute {
                    destination: r.destination,
                    via: r.via,
                    ifname: dev.name,
                    ifindex: dev.ifindex,
                })
            }
            _ => Action::AddNsRoute(route::AddNsRoute {
                destination: r.destination,
                via: r.via,
                dev: r.dev.as_ref().map(|d| find(&index, &netns, d)),
                onlink: r.onlink,
                table: r.table,
                metric: r.metric,
                scope: r.scope,
                nexthops: r
                    .nexthops
                    .iter()
                    .map(|h| route::NextHop {
                        via: h.via,
                        dev: find(&index, &netns, &h.dev),
                        weight: h.weight,
                        onlink: h.onlink,
                    })
                    .collect(),
            }),
        };
        push(Phase::Routes, netns, action);
    }
    for n in &o.neighbours {
        let netns = ns(&n.netns);
        let dev = find(&index, &netns, &n.dev);
        let action = match n.lladdr {
            Some(lladdr) => Action::AddNeighbour(neigh::AddNeighbour {
                ifname: dev.name,
                ifindex: dev.ifindex,
                address: n.address,
                lladdr,
                state: n.state,
            }),
            // The device's own MAC, read when it exists (permanent).
            None => Action::SelfNeighbour(neigh::SelfNeighbour {
                ifname: dev.name,
                ifindex: dev.ifindex,
                address: n.address,
            }),
        };
        push(Phase::Routes, netns, action);
    }
    for e in &o.fdb {
        let netns = ns(&e.netns);
        let dev = find(&index, &netns, &e.dev);
        push(
            Phase::Routes,
            netns,
            Action::AddFdb(fdb::AddFdb {
                ifname: dev.name,
                ifindex: dev.ifindex,
                lladdr: e.lladdr,
                dst: e.dst,
                master: e.master,
            }),
        );
    }
    let mut clsact: Vec<(String, String)> = Vec::new();
    for t in &o.tc {
        let netns = ns(&t.netns);
        let dev = find(&index, &netns, &t.dev);
        if !clsact.contains(&(netns.clone(), t.dev.clone())) {
            clsact.push((netns.clone(), t.dev.clone()));
            push(
                Phase::Addresses,
                netns.clone(),
                Action::Clsact(tc::Clsact {
                    ifname: dev.name.clone(),
                    ifindex: dev.ifindex,
                }),
            );
        }
        // eBPF filters are the router's steps (below).
        let TcAction::Mirred { mirror, to } = &t.action else {
            continue;
        };
        let to = find(&index, &netns, to);
        push(
            Phase::Routes,
            netns,
            Action::TcMirred(tc::TcMirred {
                ifname: dev.name,
                ifindex: dev.ifindex,
                hook: t.hook,
                mirror: *mirror,
                to,
            }),
        );
    }
    for link in &o.links {
        if let LinkKind::Bridge(b) = &link.kind {
            let netns = ns(&link.netns);
            let ifindex = find(&index, &netns, &link.name).ifindex;
            for v in &b.vlans {
                push(
                    Phase::Routes,
                    netns.clone(),
                    Action::BridgeVlan(bridge::AddBridgeVlan {
                        ifname: link.name.clone(),
                        ifindex,
                        vlan: *v,
                        bridge_self: true,
                    }),
                );
            }
        }
    }
    for s in &o.sysctls {
        push(
            Phase::Sysctls,
            ns(&s.netns),
            Action::Sysctl(sysctl::Sysctl {
                key: s.key.clone(),
                value: s.value.clone(),
            }),
        );
    }
    // Last: a link left down took part in everything above (a port, a
    // slave) as the kernel allows a down link to.
    for (netns, ifname, ifindex) in downs {
        push(
            Phase::Sysctls,
            netns,
            Action::LinkDown(link::LinkDown { ifname, ifindex }),
        );
    }
    index
}
