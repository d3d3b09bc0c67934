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

use labctl_topology::{Lab, LinkChange, RouteChange};

use crate::kernel::{Kernel, KernelError, LinkSettings, Netlink};
use crate::plan::{Action, Phase, Plan, Step};
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
                        Action::Netem {
                            ifname: ifname.clone(),
                            ifindex,
                            netem,
                        },
                    ),
                    undo: vec![step(&x.netns, Action::QdiscDelete { ifname, ifindex })],
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
                        Action::SetMtu {
                            ifname: ifname.clone(),
                            ifindex,
                            mtu,
                        },
                    ),
                    undo: vec![step(
                        &x.netns,
                        Action::SetMtu {
                            ifname,
                            ifindex,
                            mtu: was.mtu,
                        },
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
                    Action::SetMac {
                        ifname: ifname.clone(),
                        ifindex,
                        mac,
                    },
                ),
                undo: was
                    .map(|mac| {
                        step(
                            &i.netns,
                            Action::SetMac {
                                ifname,
                                ifindex,
                                mac,
                            },
                        )
                    })
                    .into_iter()
                    .collect(),
            });
        }
        if c.down {
            let (name, index) = (i.ifname.clone(), i.ifindex);
            let mut undo = Vec::new();
            if before.get(&(i.netns.clone(), index)).is_none_or(|b| b.up) {
                undo.push(step(
                    &i.netns,
                    Action::LinkUp {
                        ifname: name.clone(),
                        ifindex: index,
                    },
                ));
                undo.extend(flushed_with(plan, i));
            }
            out.push(Undoable {
                step: step(
                    &i.netns,
                    Action::LinkDown {
                        ifname: name,
                        ifindex: index,
                    },
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
            Action::AddRoute { ifindex, .. }
            | Action::SelfNeighbour { ifindex, .. }
            | Action::AddNeighbour { ifindex, .. } => *ifindex == i.ifindex,
            _ => false,
        })
        .map(|s| Step {
            phase: Phase::Changes,
            ..s.clone()
        })
        .collect()
}

/// The steps that delete each route for the scenario, each undone by the
/// plan's own step that made it.
pub fn route_steps(
    lab: &Lab,
    plan: &Plan,
    routes: &[RouteChange],
) -> Result<Vec<Undoable>, ImpairError> {
    let text = crate::plan::route_destination;
    routes
        .iter()
        .map(|r| {
            let ns = lab.netns(&r.entity);
            let made: Vec<(
                &Step,
                &ipnet::Ipv4Net,
                &Option<std::net::Ipv4Addr>,
                &String,
                u32,
            )> = plan
                .steps
                .iter()
                .filter(|s| s.netns == ns)
                .filter_map(|s| match &s.action {
                    Action::AddRoute {
                        destination,
                        via,
                        ifname,
                        ifindex,
                    } => Some((s, destination, via, ifname, *ifindex)),
                    _ => None,
                })
                .collect();
            let Some((add, destination, via, ifname, ifindex)) =
                made.iter().find(|m| *m.1 == r.destination)
            else {
                let have: Vec<String> = made.iter().map(|m| text(m.1)).collect();
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
                    Action::DelRoute {
                        destination: **destination,
                        via: **via,
                        ifname: (*ifname).clone(),
                        ifindex: *ifindex,
                    },
                ),
                undo: vec![Step {
                    phase: Phase::Changes,
                    ..(*add).clone()
                }],
            })
        })
        .collect()
}

/// Make the changes: read what they alter, then run each step in order.
/// On a failure the steps made so far are undone and every error is
/// returned. On success, the undoing to run after the traffic, in order.
/// `routes` are [`route_steps`], run after the link changes.
pub async fn apply<K: Kernel>(
    kernel: &K,
    plan: &Plan,
    changes: &[LinkChange],
    targets: &[(Iface, Option<Iface>)],
    routes: Vec<Undoable>,
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
                Action::AddRoute { .. } | Action::SelfNeighbour { .. }
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
    /// Make a scenario's link changes on the lab `record` stands for.
    pub fn make(
        record: &LabState,
        lab: &Lab,
        changes: &[LinkChange],
        routes: &[RouteChange],
    ) -> Result<Applied, ImpairError> {
        // The lab as it was brought up: under `up --name` its namespaces
        // carry that name, not the file's.
        let renamed;
        let lab = if lab.name == record.lab {
            lab
        } else {
            renamed = Lab {
                name: record.lab.clone(),
                ..lab.clone()
            };
            &renamed
        };
        let plan = crate::plan::plan(lab);
        let ifaces = Interfaces::of(&plan);
        let targets = targets(lab, &ifaces, changes)?;
        let route_steps = route_steps(lab, &plan, routes)?;
        let mut names: Vec<String> = targets
            .iter()
            .flat_map(|(i, p)| std::iter::once(i).chain(p.as_ref()))
            .map(|x| x.netns.clone())
            .chain(route_steps.iter().map(|u| u.step.netns.clone()))
            .collect();
        names.sort();
        names.dedup();
        let rt = crate::engine::runtime().map_err(|e| match e {
            crate::engine::EngineError::Runtime(e) => ImpairError::Runtime(e),
            other => ImpairError::Runtime(std::io::Error::other(other.to_string())),
        })?;
        let mut kernel = Netlink::new(record.mark());
        let undo = rt.block_on(async {
            kernel.attach(&names).map_err(|e| vec![e])?;
            apply(&kernel, &plan, changes, &targets, route_steps).await
        });
        let undo = undo.map_err(ImpairError::Kernel)?;
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
      - { link: n1/eth0, netem: { delay: 50ms, loss: 1% }, mtu: 1400 }
      - { link: p1/eth0, state: down }
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
        ));
        if let Ok(u) = &undo {
            assert!(rt.block_on(restore(&kernel, u)).is_empty());
        }
        (kernel.log.take(), undo)
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
