//! Planning the low-level layer (`namespaces`, `links`, `addresses`,
//! `routes`, `neighbours`, `fdb`, `tc`): each object becomes its kernel
//! actions, in the phases the rest of the plan uses. It runs after the
//! vpc/nodes/pods part, so their ifindexes stay as they were; a device they
//! made is found by the steps that made it.

use labctl_topology::{Lab, LinkKind, hashed_ifname};

use super::{Action, IfRef, Indexes, Interfaces, Phase, Step};

/// Append the layer's steps.
pub(super) fn steps(lab: &Lab, idx: &mut Indexes, steps: &mut Vec<Step>) {
    let o = &lab.objects;
    if o.is_empty() {
        return;
    }
    let mut index = Interfaces::of_steps(steps);
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

    for link in o.links.iter().filter(|l| l.kind == LinkKind::Bridge) {
        let netns = ns(&link.netns);
        let ifindex = idx.next(&netns);
        index.insert(&netns, &link.name, ifindex);
        push(
            Phase::Devices,
            netns,
            Action::AddBridge {
                name: link.name.clone(),
                ifindex,
                mac: link.mac,
            },
        );
    }
    let mut mtus = Vec::new();
    let mut masters = Vec::new();
    for link in &o.links {
        let netns = ns(&link.netns);
        match &link.kind {
            LinkKind::Bridge => {}
            LinkKind::Veth { peer } => {
                let peer_ns = ns(&peer.netns);
                let ifindex = idx.next(&netns);
                let peer_ifindex = idx.next(&peer_ns);
                index.insert(&netns, &link.name, ifindex);
                index.insert(&peer_ns, &peer.name, peer_ifindex);
                push(
                    Phase::Links,
                    netns.clone(),
                    Action::AddVeth {
                        name: link.name.clone(),
                        ifindex,
                        mac: link.mac,
                        controller: link.master.as_ref().map(|m| find(&index, &netns, m)),
                        peer_name: peer.name.clone(),
                        peer_netns: peer_ns.clone(),
                        peer_ifindex,
                        peer_mac: peer.mac,
                    },
                );
                push(
                    Phase::Addresses,
                    peer_ns.clone(),
                    Action::LinkUp {
                        ifname: peer.name.clone(),
                        ifindex: peer_ifindex,
                    },
                );
                mtus.push((netns.clone(), link.name.clone(), ifindex, link.mtu));
                mtus.push((peer_ns.clone(), peer.name.clone(), peer_ifindex, peer.mtu));
                if let Some(m) = &peer.master {
                    masters.push((peer_ns, peer.name.clone(), peer_ifindex, m.clone()));
                }
            }
            LinkKind::Vxlan(x) => {
                let underlay = ns(&x.underlay);
                let moved = underlay != netns;
                let ifindex = if moved {
                    idx.next_in_both(&underlay, &netns)
                } else {
                    idx.next(&netns)
                };
                index.insert(&netns, &link.name, ifindex);
                // The kernel looks a new link's name up in the namespace
                // that asks: made under a name of our own, renamed there.
                let made_as = if moved {
                    hashed_ifname("vx", &format!("{}/{}", link.netns, link.name))
                } else {
                    link.name.clone()
                };
                push(
                    Phase::Stacked,
                    underlay.clone(),
                    Action::AddVxlan {
                        name: made_as.clone(),
                        ifindex,
                        netns: moved.then(|| netns.clone()),
                        mac: link.mac,
                        id: x.id,
                        dev: x.dev.as_ref().map(|d| find(&index, &underlay, d)),
                        local: x.local,
                        remote: x.remote,
                        port: x.port,
                        learning: x.learning,
                    },
                );
                if moved {
                    push(
                        Phase::Addresses,
                        netns.clone(),
                        Action::RenameUp {
                            from: made_as,
                            ifname: link.name.clone(),
                            ifindex,
                        },
                    );
                }
                if let Some(m) = &link.master {
                    masters.push((netns.clone(), link.name.clone(), ifindex, m.clone()));
                }
                mtus.push((netns, link.name.clone(), ifindex, link.mtu));
            }
        }
    }
    for link in o.links.iter().filter(|l| l.kind == LinkKind::Bridge) {
        let netns = ns(&link.netns);
        let ifindex = find(&index, &netns, &link.name).ifindex;
        mtus.push((netns, link.name.clone(), ifindex, link.mtu));
    }
    for (netns, ifname, ifindex, master) in masters {
        let master = find(&index, &netns, &master);
        push(
            Phase::Addresses,
            netns,
            Action::SetMaster {
                ifname,
                ifindex,
                master,
            },
        );
    }
    for (netns, ifname, ifindex, mtu) in mtus {
        if let Some(mtu) = mtu {
            push(
                Phase::Addresses,
                netns,
                Action::SetMtu {
                    ifname,
                    ifindex,
                    mtu,
                },
            );
        }
    }
    for a in &o.addresses {
        let netns = ns(&a.netns);
        let dev = find(&index, &netns, &a.dev);
        push(
            Phase::Addresses,
            netns,
            Action::AddAddress {
                ifname: dev.name,
                ifindex: dev.ifindex,
                address: a.address,
            },
        );
    }
    for r in &o.routes {
        let netns = ns(&r.netns);
        let dev = find(&index, &netns, &r.dev);
        push(
            Phase::Routes,
            netns,
            Action::AddRoute {
                destination: r.destination,
                via: r.via,
                ifname: dev.name,
                ifindex: dev.ifindex,
            },
        );
    }
    for n in &o.neighbours {
        let netns = ns(&n.netns);
        let dev = find(&index, &netns, &n.dev);
        push(
            Phase::Routes,
            netns,
            Action::AddNeighbour {
                ifname: dev.name,
                ifindex: dev.ifindex,
                address: n.address,
                lladdr: n.lladdr,
                state: n.state,
            },
        );
    }
    for e in &o.fdb {
        let netns = ns(&e.netns);
        let dev = find(&index, &netns, &e.dev);
        push(
            Phase::Routes,
            netns,
            Action::AddFdb {
                ifname: dev.name,
                ifindex: dev.ifindex,
                lladdr: e.lladdr,
                dst: e.dst,
                master: e.master,
            },
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
                Action::Clsact {
                    ifname: dev.name.clone(),
                    ifindex: dev.ifindex,
                },
            );
        }
        let to = find(&index, &netns, &t.to);
        push(
            Phase::Routes,
            netns,
            Action::TcMirred {
                ifname: dev.name,
                ifindex: dev.ifindex,
                hook: t.hook,
                mirror: t.mirror,
                to,
            },
        );
    }
}
