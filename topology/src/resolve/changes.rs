//! Resolution of a scenario's `changes`: every kind's references (services,
//! links, namespaces, devices, pods, nodes) are checked against the lab and
//! its values parsed, each problem reported where it stands. Whether a
//! route, neighbour or FDB entry to delete is one the lab makes is the
//! plan's to say, when the change is made.

use std::collections::HashMap;

use serde_saphyr::{Location, Spanned};

use super::service::policy;
use super::sysctl::{SYSCTL_HELP, SysctlScope, sysctl_scope, valid_sysctl};
use super::{Resolver, Text};
use crate::error::unknown_hint;
use crate::model::*;
use crate::raw::*;

/// A scenario's changes by kind: services, links, routes, the rest.
type Changes = (
    Vec<ServiceChange>,
    Vec<LinkChange>,
    Vec<RouteChange>,
    Vec<ObjectChange>,
);

impl Resolver<'_> {
    /// A scenario's changes, each kind apart, in the file's order.
    pub(super) fn changes(&mut self, raw: &[Spanned<RawChange>], lab: &Lab) -> Changes {
        let mut out: Changes = Default::default();
        let mut seen_links: HashMap<String, Location> = HashMap::new();
        // The EVPN segment as the scenario's moves so far left it.
        let mut evpn = lab.objects.evpn.clone();
        for c in raw {
            let loc = c.referenced;
            match &c.value {
                RawChange::Service(s) => out.0.extend(self.service_change(s, lab)),
                RawChange::Link(l) => {
                    if let Some(l) = self.link_change(l, loc, lab) {
                        if let Some(first) = seen_links.get(&l.link) {
                            let line = first.line();
                            self.err(
                                &loc,
                                format!("link {} is changed twice, first at line {line}", l.link),
                                "again",
                                Some("put everything for one link in one change".into()),
                            );
                        } else {
                            seen_links.insert(l.link.clone(), loc);
                            out.1.push(l);
                        }
                    }
                }
                RawChange::Route(r) => out.2.extend(self.route_change(r, lab)),
                RawChange::Neighbour(n) => out.3.extend(self.neighbour_change(n, lab)),
                RawChange::Fdb(f) => out.3.extend(self.fdb_change(f, lab)),
                RawChange::Sysctl(s) => out.3.extend(self.sysctl_change(s, lab)),
                RawChange::Move(m) => out.3.extend(self.move_change(m, lab)),
                RawChange::Tc(t) => out.3.extend(self.tc_change(t, lab)),
                RawChange::EvpnMove(m) => out.3.extend(self.evpn_move(m, &mut evpn)),
            }
        }
        out
    }

    /// An entity with a namespace (node, pod, client, vpc or a bare one).
    fn change_entity(&mut self, name: &Text, lab: &Lab) -> Option<String> {
        if lab.interfaces_of(&name.value).is_some() {
            return Some(name.value.clone());
        }
        let known: Vec<String> = lab.entities().into_iter().map(|(e, _)| e).collect();
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        self.err(
            &name.referenced,
            format!("unknown namespace, node, pod or client `{}`", name.value),
            "unknown namespace",
            Some(unknown_hint("namespace", &name.value, &known)),
        );
        None
    }

    /// A device of an entity's namespace.
    fn change_dev(&mut self, entity: &str, dev: &Text, lab: &Lab) -> Option<String> {
        let devs = lab.interfaces_of(entity).unwrap_or_default();
        if devs.contains(&dev.value) {
            return Some(dev.value.clone());
        }
        let names: Vec<&str> = devs.iter().map(String::as_str).collect();
        self.err(
            &dev.referenced,
            format!("namespace {entity} has no device `{}`", dev.value),
            "unknown device",
            Some(unknown_hint("device", &dev.value, &names)),
        );
        None
    }

    fn opt_ipv4(&mut self, text: &Option<Text>, what: &str) -> Option<Option<std::net::Ipv4Addr>> {
        match text {
            Some(t) => self.ipv4(t, what).map(Some),
            None => Some(None),
        }
    }

    /// `- route: {in, to, delete: true}` or `- route: {in, to, [via], dev}`.
    fn route_change(&mut self, r: &RawRouteChange, lab: &Lab) -> Option<RouteChange> {
        let before = self.problems.len();
        let destination = if r.to.value.trim() == "default" {
            Some(ipnet::Ipv4Net::default())
        } else {
            self.network(&r.to, "route destination")
        };
        let entity = self.change_entity(&r.netns, lab);
        let delete = r.delete.as_ref().is_some_and(|d| d.value);
        let add = match (&r.dev, delete) {
            (Some(dev), false) => {
                let via = self.opt_ipv4(&r.via, "route gateway");
                let dev = entity.as_deref().and_then(|e| self.change_dev(e, dev, lab));
                Some(RouteAdd {
                    via: via?,
                    dev: dev?,
                })
            }
            (Some(dev), true) => {
                self.err(
                    &dev.referenced,
                    format!("route {} is deleted: it needs no device", r.to.value),
                    "delete or add",
                    Some(
                        "`{in, to, delete: true}` deletes the lab's route; `{in, to, via, dev}` \
                         adds one"
                            .into(),
                    ),
                );
                None
            }
            (None, false) => {
                let at = r.delete.as_ref().map_or(r.to.referenced, |d| d.referenced);
                self.err(
                    &at,
                    format!("the change of route {} changes nothing", r.to.value),
                    "no change",
                    Some(
                        "`delete: true` takes the route away for the scenario; `dev: DEV` (and \
                         `via`) adds it"
                            .into(),
                    ),
                );
                None
            }
            (None, true) => {
                if let Some(via) = &r.via {
                    self.err(
                        &via.referenced,
                        format!("route {} is deleted: `via` says nothing", r.to.value),
                        "delete or add",
                        Some("a deleted route is named by its namespace and destination".into()),
                    );
                }
                None
            }
        };
        if self.problems.len() > before {
            return None;
        }
        Some(RouteChange {
            entity: entity?,
            destination: destination?,
            add,
        })
    }

    fn service_change(&mut self, c: &RawServiceChange, lab: &Lab) -> Option<ServiceChange> {
        let service = &c.name;
        let Some(svc) = lab.services.iter().find(|s| s.name == service.value) else {
            let known: Vec<&str> = lab.services.iter().map(|s| s.name.as_str()).collect();
            self.err(
                &service.referenced,
                format!("unknown service `{}`", service.value),
                "unknown service",
                Some(unknown_hint("service", &service.value, &known)),
            );
            return None;
        };
        let remove: &[Spanned<String>] = c
            .remove_endpoints
            .as_ref()
            .map_or(&[], |r| r.value.as_slice());
        for e in remove {
            if !svc.endpoints.contains(&e.value) {
                self.err(
                    &e.referenced,
                    format!("`{}` is not an endpoint of service {}", e.value, svc.name),
                    "not an endpoint",
                    Some(format!("its endpoints: {}", svc.endpoints.join(", "))),
                );
            }
        }
        if c.external_traffic_policy.is_none() && c.remove_endpoints.is_none() {
            self.err(
                &service.referenced,
                format!("the change of service {} changes nothing", svc.name),
                "no change",
                Some("give it `remove_endpoints: [POD]` or `external_traffic_policy`".into()),
            );
            return None;
        }
        Some(ServiceChange {
            service: svc.name.clone(),
            external_traffic_policy: c
                .external_traffic_policy
                .as_ref()
                .map(|p| policy(Some(p.value))),
            remove_endpoints: remove.iter().map(|e| e.value.clone()).collect(),
        })
    }

    fn link_change(&mut self, c: &RawLinkChange, loc: Location, lab: &Lab) -> Option<LinkChange> {
        let before = self.problems.len();
        let link = &c.name;
        let text = link.value.trim();
        let hop = if !text.contains('/') {
            Err(format!(
                "`{text}` is not an interface: write ENTITY/IFNAME (or POD/host)"
            ))
        } else {
            lab.canonical_hop(text)
        };
        let hop = match hop {
            Ok(h) => Some(h),
            Err(e) => {
                self.err(
                    &link.referenced,
                    e,
                    "unknown link",
                    Some(
                        "links are named by one of their interfaces: ENTITY/IFNAME \
                         (see `labctl plan FILE`), or POD/host for a pod's veth on its node"
                            .into(),
                    ),
                );
                None
            }
        };
        if c.netem.is_none() && c.state.is_none() && c.mtu.is_none() && c.mac.is_none() {
            self.err(
                &loc,
                format!("the change of link `{text}` changes nothing"),
                "no change",
                Some(
                    "give it `netem: {delay: 50ms}`, `state: down`, `mtu: 1400` or `mac: \
                     02:00:00:00:00:01`"
                        .into(),
                ),
            );
        }
        let netem = c.netem.as_ref().and_then(|n| self.netem(n));
        let mac = c.mac.as_ref().and_then(|m| self.mac(m));
        let mtu = c
            .mtu
            .as_ref()
            .and_then(|m| match m.value.0.trim().parse::<u32>() {
                Ok(v) if (68..=65535).contains(&v) => Some(v),
                Ok(v) => {
                    self.err(
                        &m.referenced,
                        format!("mtu {v} is outside 68 to 65535"),
                        "out of range",
                        Some("IPv4 needs at least 68 bytes; a veth takes at most 65535".into()),
                    );
                    None
                }
                Err(_) => {
                    self.err(
                        &m.referenced,
                        format!("mtu `{}` is not a number of bytes", m.value.0),
                        "not a number",
                        Some("write e.g. `mtu: 1400`".into()),
                    );
                    None
                }
            });
        if self.problems.len() > before {
            return None;
        }
        let hop = hop?;
        let (entity, ifname) = hop.split_once('/')?;
        Some(LinkChange {
            link: hop.clone(),
            entity: entity.to_string(),
            ifname: ifname.to_string(),
            netem,
            down: c
                .state
                .as_ref()
                .is_some_and(|s| s.value == RawLinkState::Down),
            up: c
                .state
                .as_ref()
                .is_some_and(|s| s.value == RawLinkState::Up),
            mtu,
            mac,
        })
    }

    fn neighbour_change(&mut self, n: &RawNeighbourChange, lab: &Lab) -> Option<ObjectChange> {
        let before = self.problems.len();
        let entity = self.change_entity(&n.netns, lab);
        let dev = entity
            .as_deref()
            .and_then(|e| self.change_dev(e, &n.dev, lab));
        let address = self.ipv4(&n.address, "neighbour address");
        let delete = n.delete.as_ref().is_some_and(|d| d.value);
        let lladdr = match (&n.lladdr, delete) {
            (Some(m), false) => self.mac(m).map(Some),
            (None, true) => Some(None),
            (Some(m), true) => {
                self.err(
                    &m.referenced,
                    format!(
                        "neighbour {} is deleted: it needs no lladdr",
                        n.address.value
                    ),
                    "delete or add",
                    Some("keep `lladdr` to replace the entry, or `delete: true` alone".into()),
                );
                None
            }
            (None, false) => {
                self.err(
                    &n.address.referenced,
                    format!(
                        "the change of neighbour {} changes nothing",
                        n.address.value
                    ),
                    "no change",
                    Some("give it `lladdr: MAC`, or `delete: true`".into()),
                );
                None
            }
        };
        if self.problems.len() > before {
            return None;
        }
        Some(ObjectChange::Neighbour {
            entity: entity?,
            dev: dev?,
            address: address?,
            lladdr: lladdr?,
            state: match n.state.unwrap_or(RawNeighState::Permanent) {
                RawNeighState::Permanent => NeighState::Permanent,
                RawNeighState::Noarp => NeighState::Noarp,
                RawNeighState::Reachable => NeighState::Reachable,
            },
        })
    }

    fn fdb_change(&mut self, f: &RawFdbChange, lab: &Lab) -> Option<ObjectChange> {
        let before = self.problems.len();
        let entity = self.change_entity(&f.netns, lab);
        let dev = entity
            .as_deref()
            .and_then(|e| self.change_dev(e, &f.dev, lab));
        let lladdr = self.mac(&f.lladdr);
        let dst = self.opt_ipv4(&f.dst, "fdb dst");
        let vxlan = |e: &str, d: &str| {
            lab.objects
                .links
                .iter()
                .any(|l| l.netns == e && l.name == d && matches!(l.kind, LinkKind::Vxlan(_)))
        };
        let is_vxlan = matches!((&entity, &dev), (Some(e), Some(d)) if vxlan(e, d));
        if let Some(d) = f.dst.as_ref().filter(|_| dev.is_some() && !is_vxlan) {
            self.err(
                &d.referenced,
                format!(
                    "`dst` is for a vxlan device's entries, and `{}` is not one",
                    f.dev.value
                ),
                "dst on a non-vxlan device",
                Some("a bridge port's entry says only which port a MAC is behind".into()),
            );
        }
        if self.problems.len() > before {
            return None;
        }
        let dst = dst?;
        let (entity, dev) = (entity?, dev?);
        let vxlan_port = is_vxlan
            && lab
                .objects
                .links
                .iter()
                .any(|l| l.netns == entity && l.name == dev && l.master.is_some());
        Some(ObjectChange::Fdb {
            master: crate::model::fdb_in_bridge(is_vxlan, vxlan_port, dst.is_some()),
            entity,
            dev,
            lladdr: lladdr?,
            dst,
            delete: f.delete.as_ref().is_some_and(|d| d.value),
        })
    }

    fn sysctl_change(&mut self, s: &RawSysctlChange, lab: &Lab) -> Option<ObjectChange> {
        let entity = self.change_entity(&s.netns, lab);
        let key = s.key.value.trim();
        let problem = if !valid_sysctl(key) {
            Some(format!("invalid sysctl name `{key}`"))
        } else {
            match sysctl_scope(key) {
                SysctlScope::Netns => None,
                SysctlScope::NotNet => Some(format!(
                    "sysctl `{key}` is not a network sysctl: setting it would change the host"
                )),
                SysctlScope::Global => Some(format!(
                    "sysctl `{key}` is global, not kept per network namespace: setting it would \
                     change the host"
                )),
                SysctlScope::Unknown => Some(format!(
                    "sysctl `{key}` is not one the kernel keeps per network namespace"
                )),
            }
        };
        if let Some(message) = problem {
            self.err(
                &s.key.referenced,
                message,
                "not per namespace",
                Some(SYSCTL_HELP.to_string()),
            );
            return None;
        }
        let value = &s.value.value.0;
        if value.chars().any(|c| c.is_control()) {
            self.err(
                &s.value.referenced,
                format!("the value of sysctl `{key}` is not one line of text"),
                "invalid value",
                Some(
                    "a sysctl value is one line of text, like `1` or `4096 131072 6291456`".into(),
                ),
            );
            return None;
        }
        Some(ObjectChange::Sysctl {
            entity: entity?,
            key: key.to_string(),
            value: value.clone(),
        })
    }

    fn move_change(&mut self, m: &RawMoveChange, lab: &Lab) -> Option<ObjectChange> {
        let Some(pod) = lab.pod(&m.pod.value) else {
            let pods: Vec<&str> = lab.pods.iter().map(|p| p.name.as_str()).collect();
            self.err(
                &m.pod.referenced,
                format!("unknown pod `{}`", m.pod.value),
                "unknown pod",
                Some(unknown_hint("pod", &m.pod.value, &pods)),
            );
            return None;
        };
        if let Attachment::Ipvlan { parent, .. } = &pod.attachment {
            self.err(
                &m.pod.referenced,
                format!(
                    "pod {} is an ipvlan slave of {}'s {parent}: only a pod on a veth can move",
                    pod.name, pod.node
                ),
                "ipvlan pod",
                Some("move a pod whose node has a `pod_cidr` (a bridge)".into()),
            );
            return None;
        }
        let bridged: Vec<&str> = lab
            .nodes
            .iter()
            .filter(|n| n.pod_cidr.is_some() && n.name != pod.node)
            .map(|n| n.name.as_str())
            .collect();
        if !bridged.contains(&m.to.value.as_str()) {
            let why = if m.to.value == pod.node {
                format!("pod {} is on node {} already", pod.name, pod.node)
            } else if lab.node(&m.to.value).is_some() {
                format!("node {} has no pod bridge (no `pod_cidr`)", m.to.value)
            } else {
                format!("unknown node `{}`", m.to.value)
            };
            self.err(
                &m.to.referenced,
                why,
                "where to?",
                Some(unknown_hint("node", &m.to.value, &bridged)),
            );
            return None;
        }
        Some(ObjectChange::Move {
            pod: pod.name.clone(),
            from: pod.node.clone(),
            to: m.to.value.clone(),
        })
    }

    fn tc_change(&mut self, t: &RawTcChange, lab: &Lab) -> Option<ObjectChange> {
        let before = self.problems.len();
        let entity = self.change_entity(&t.netns, lab);
        let dev = entity
            .as_deref()
            .and_then(|e| self.change_dev(e, &t.dev, lab));
        let delete = t.delete.as_ref().is_some_and(|d| d.value);
        let target = match (&t.redirect, &t.mirror) {
            (Some(r), None) => Some((r, false)),
            (None, Some(m)) => Some((m, true)),
            (Some(_), Some(m)) => {
                self.err(
                    &m.referenced,
                    "a tc filter both redirects and mirrors".into(),
                    "redirect or mirror",
                    Some("write two changes, or keep one of `redirect` and `mirror`".into()),
                );
                None
            }
            (None, None) => None,
        };
        let to = match (target, delete) {
            (Some((to, _)), true) => {
                self.err(
                    &to.referenced,
                    format!(
                        "the filters on `{}` are deleted: they need no target",
                        t.dev.value
                    ),
                    "delete or add",
                    Some("keep `redirect`/`mirror` to add a filter, or `delete: true`".into()),
                );
                None
            }
            (Some((to, _)), false) => entity.as_deref().and_then(|e| self.change_dev(e, to, lab)),
            (None, true) => None,
            (None, false) => {
                if self.problems.len() == before {
                    self.err(
                        &t.dev.referenced,
                        format!("the tc change on `{}` changes nothing", t.dev.value),
                        "no change",
                        Some("add `redirect: DEV` or `mirror: DEV`, or `delete: true`".into()),
                    );
                }
                None
            }
        };
        if self.problems.len() > before {
            return None;
        }
        Some(ObjectChange::Tc {
            entity: entity?,
            dev: dev?,
            hook: match t.hook {
                RawTcHook::Ingress => TcHook::Ingress,
                RawTcHook::Egress => TcHook::Egress,
            },
            mirror: target.is_some_and(|(_, m)| m),
            to,
        })
    }
}
