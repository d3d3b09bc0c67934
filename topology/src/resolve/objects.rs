//! Resolution of the low-level layer: every object's namespace is known,
//! every device it names exists there (made by the vpc/nodes/pods keys or
//! by `links`), names are unique per namespace and values parse. Problems
//! are collected with their locations like the rest of the resolver.

use std::collections::HashMap;

use serde_saphyr::Location;

use super::{Owner, Resolver, Text};
use crate::error::unknown_hint;
use crate::model::*;
use crate::raw::*;

/// The default VXLAN UDP port (IANA), which the kernel uses too.
pub const VXLAN_DEFAULT_PORT: u16 = 4789;

/// What a device of a namespace is, as far as references care.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dev {
    /// Made by the vpc/nodes/pods keys, or `lo`.
    Cni,
    /// A bridge (of either layer).
    Bridge,
    Veth,
    Vxlan,
}

/// The devices known so far, per namespace.
#[derive(Default)]
struct Devices {
    by_ns: HashMap<String, Vec<(String, Dev, Owner)>>,
}

impl Devices {
    fn get(&self, netns: &str, name: &str) -> Option<Dev> {
        self.by_ns
            .get(netns)?
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, d, _)| *d)
    }

    fn names(&self, netns: &str) -> Vec<&str> {
        self.by_ns
            .get(netns)
            .map(|v| v.iter().map(|(n, _, _)| n.as_str()).collect())
            .unwrap_or_default()
    }
}

impl Resolver<'_> {
    /// The low-level keys of `raw`, against the lab the other keys built.
    pub(super) fn objects(&mut self, raw: &RawTopology, lab: &Lab) -> Objects {
        let mut out = Objects::default();
        for n in &raw.namespaces {
            out.namespaces.push(Namespace {
                name: n.name.value.clone(),
                role: match n.role.unwrap_or(RawNsRole::Host) {
                    RawNsRole::Host => NsRole::Host,
                    RawNsRole::Switch => NsRole::Switch,
                    RawNsRole::Router => NsRole::Router,
                },
            });
        }
        let mut known: Vec<String> = lab.entities().into_iter().map(|(n, _)| n).collect();
        known.extend(out.namespaces.iter().map(|n| n.name.clone()));

        let mut devices = Devices::default();
        let cni = Owner {
            what: "the lab".to_string(),
            loc: Location::UNKNOWN,
        };
        for ns in &known {
            let mut v = vec![("lo".to_string(), Dev::Cni, cni.clone())];
            if lab.objects.namespaces.iter().all(|n| &n.name != ns) {
                let bridges = cni_bridges(lab, ns);
                for i in lab.interfaces_of(ns).unwrap_or_default() {
                    let dev = if bridges.contains(&i) {
                        Dev::Bridge
                    } else {
                        Dev::Cni
                    };
                    v.push((i, dev, cni.clone()));
                }
            }
            devices.by_ns.insert(ns.clone(), v);
        }

        // Bridges first, so a port may come before its bridge in the file.
        for link in &raw.links {
            // An unknown namespace is reported once, by `link` below.
            if let RawLink::Bridge(b) = link
                && known.contains(&b.netns.value)
            {
                self.claim_dev(&mut devices, &b.netns, &b.name, Dev::Bridge, "bridge");
            }
        }
        for link in &raw.links {
            if let Some(l) = self.link(link, &known, &mut devices) {
                out.links.push(l);
            }
        }
        for a in &raw.addresses {
            let netns = self.namespace_ref(&a.netns, &known);
            let dev = netns && self.dev_ref(&devices, &a.netns, &a.dev, "address");
            let address = self.cidr(&a.address, "address");
            if let (true, Some(address)) = (dev, address) {
                if out
                    .addresses
                    .iter()
                    .any(|o| o.netns == a.netns.value && o.address.addr() == address.addr())
                {
                    self.err(
                        &a.address.referenced,
                        format!(
                            "address {} is already in namespace {}",
                            address.addr(),
                            a.netns.value
                        ),
                        "duplicate address",
                        Some("an address may be in two namespaces, not twice in one".into()),
                    );
                    continue;
                }
                out.addresses.push(Address {
                    netns: a.netns.value.clone(),
                    dev: a.dev.value.clone(),
                    address,
                });
            }
        }
        for r in &raw.routes {
            let netns = self.namespace_ref(&r.netns, &known);
            let dev = netns && self.dev_ref(&devices, &r.netns, &r.dev, "route");
            let destination = if r.to.value.trim() == "default" {
                Some(ipnet::Ipv4Net::default())
            } else {
                self.network(&r.to, "route destination")
            };
            let via = match &r.via {
                Some(v) => self.ipv4(v, "route gateway").map(Some),
                None => Some(None),
            };
            if let (true, Some(destination), Some(via)) = (dev, destination, via) {
                out.routes.push(NsRoute {
                    netns: r.netns.value.clone(),
                    destination,
                    via,
                    dev: r.dev.value.clone(),
                });
            }
        }
        for n in &raw.neighbours {
            let netns = self.namespace_ref(&n.netns, &known);
            let dev = netns && self.dev_ref(&devices, &n.netns, &n.dev, "neighbour");
            let address = self.ipv4(&n.address, "neighbour address");
            let lladdr = self.lladdr(&n.lladdr);
            if let (true, Some(address), Some(lladdr)) = (dev, address, lladdr) {
                out.neighbours.push(Neighbour {
                    netns: n.netns.value.clone(),
                    dev: n.dev.value.clone(),
                    address,
                    lladdr,
                    state: match n.state.unwrap_or(RawNeighState::Permanent) {
                        RawNeighState::Permanent => NeighState::Permanent,
                        RawNeighState::Noarp => NeighState::Noarp,
                        RawNeighState::Reachable => NeighState::Reachable,
                    },
                });
            }
        }
        // Ports as the file declares them, whether or not their bridge
        // resolved: one mistake, one message.
        let mut ports: Vec<(String, String)> = Vec::new();
        for link in &raw.links {
            match link {
                RawLink::Veth(v) => {
                    if v.master.is_some() {
                        ports.push((v.netns.value.clone(), v.name.value.clone()));
                    }
                    if v.peer.master.is_some() {
                        ports.push((v.peer.netns.value.clone(), v.peer.name.value.clone()));
                    }
                }
                RawLink::Vxlan(x) if x.master.is_some() => {
                    ports.push((x.netns.value.clone(), x.name.value.clone()));
                }
                _ => {}
            }
        }
        for f in &raw.fdb {
            if let Some(e) = self.fdb(f, &known, &devices, &ports) {
                out.fdb.push(e);
            }
        }
        for t in &raw.tc {
            if let Some(t) = self.tc(t, &known, &devices) {
                out.tc.push(t);
            }
        }
        out
    }

    /// A namespace reference (`in`, `underlay`): true when it is known.
    fn namespace_ref(&mut self, name: &Text, known: &[String]) -> bool {
        if known.iter().any(|k| k == &name.value) {
            return true;
        }
        let list: Vec<&str> = known.iter().map(String::as_str).collect();
        self.err(
            &name.referenced,
            format!("unknown namespace `{}`", name.value),
            "unknown namespace",
            Some(format!(
                "{}; declare bare ones under `namespaces`",
                unknown_hint("namespace", &name.value, &list)
            )),
        );
        false
    }

    /// A device reference: true when `name` is a device of `netns`.
    fn dev_ref(&mut self, devices: &Devices, netns: &Text, name: &Text, what: &str) -> bool {
        if devices.get(&netns.value, &name.value).is_some() {
            return true;
        }
        let names = devices.names(&netns.value);
        self.err(
            &name.referenced,
            format!(
                "the {what} names device `{}`, which namespace {} does not have",
                name.value, netns.value
            ),
            "unknown device",
            Some(unknown_hint("device", &name.value, &names)),
        );
        false
    }

    /// Claim a device name in a namespace; false when it is taken.
    fn claim_dev(
        &mut self,
        devices: &mut Devices,
        netns: &Text,
        name: &Text,
        dev: Dev,
        kind: &str,
    ) -> bool {
        if !self.ifname(
            name,
            &format!("{kind} name"),
            "it is a kernel interface name",
        ) {
            return false;
        }
        let list = devices.by_ns.entry(netns.value.clone()).or_default();
        if let Some((_, _, first)) = list.iter().find(|(n, _, _)| n == &name.value).cloned() {
            let at = self.first_at(&first);
            self.err_again(
                &name.referenced,
                &first.loc,
                format!(
                    "namespace {} already has a device `{}` ({}{at})",
                    netns.value, name.value, first.what
                ),
                "duplicate device",
                Some("device names are unique within a namespace".into()),
            );
            return false;
        }
        list.push((
            name.value.clone(),
            dev,
            Owner {
                what: format!("{kind} {}", name.value),
                loc: name.referenced,
            },
        ));
        true
    }

    /// A bridge of `netns` to be a port of.
    fn master_ref(
        &mut self,
        devices: &Devices,
        netns: &Text,
        master: &Option<Text>,
    ) -> Option<Option<String>> {
        let Some(m) = master else { return Some(None) };
        match devices.get(&netns.value, &m.value) {
            Some(Dev::Bridge) => Some(Some(m.value.clone())),
            Some(_) => {
                self.err(
                    &m.referenced,
                    format!(
                        "master `{}` in namespace {} is not a bridge",
                        m.value, netns.value
                    ),
                    "not a bridge",
                    Some("a link's master is a bridge of its own namespace".into()),
                );
                None
            }
            None => {
                let bridges: Vec<&str> = devices
                    .by_ns
                    .get(&netns.value)
                    .map(|v| {
                        v.iter()
                            .filter(|(_, d, _)| *d == Dev::Bridge)
                            .map(|(n, _, _)| n.as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                self.err(
                    &m.referenced,
                    format!("no bridge `{}` in namespace {}", m.value, netns.value),
                    "unknown bridge",
                    Some(unknown_hint("bridge", &m.value, &bridges)),
                );
                None
            }
        }
    }

    fn mtu(&mut self, mtu: &Option<serde_saphyr::Spanned<u32>>) -> Option<Option<u32>> {
        match mtu {
            Some(m) if !(68..=65535).contains(&m.value) => {
                self.err(
                    &m.referenced,
                    format!("mtu {} is out of range", m.value),
                    "bad mtu",
                    Some("an ipv4 link's mtu is 68 to 65535".into()),
                );
                None
            }
            Some(m) => Some(Some(m.value)),
            None => Some(None),
        }
    }

    fn opt_mac(&mut self, mac: &Option<Text>) -> Option<Option<[u8; 6]>> {
        match mac {
            Some(m) => self.mac(m).map(Some),
            None => Some(None),
        }
    }

    /// A neighbour's or FDB entry's MAC: any unicast address; unlike a
    /// device's MAC it may repeat one the lab uses (that is the point).
    fn lladdr(&mut self, text: &Text) -> Option<[u8; 6]> {
        self.mac(text)
    }

    fn link(&mut self, raw: &RawLink, known: &[String], devices: &mut Devices) -> Option<Link> {
        match raw {
            RawLink::Bridge(b) => {
                let ok = self.namespace_ref(&b.netns, known);
                let mac = self.opt_mac(&b.mac);
                let mtu = self.mtu(&b.mtu);
                ok.then_some(())?;
                Some(Link {
                    netns: b.netns.value.clone(),
                    name: b.name.value.clone(),
                    mac: mac?,
                    mtu: mtu?,
                    master: None,
                    kind: LinkKind::Bridge,
                })
            }
            RawLink::Veth(v) => {
                let here = self.namespace_ref(&v.netns, known);
                let there = self.namespace_ref(&v.peer.netns, known);
                let a = here && self.claim_dev(devices, &v.netns, &v.name, Dev::Veth, "veth");
                let b = there
                    && self.claim_dev(devices, &v.peer.netns, &v.peer.name, Dev::Veth, "veth peer");
                let mac = self.opt_mac(&v.mac);
                let peer_mac = self.opt_mac(&v.peer.mac);
                let mtu = self.mtu(&v.mtu);
                let peer_mtu = self.mtu(&v.peer.mtu);
                let master = if a {
                    self.master_ref(devices, &v.netns, &v.master)
                } else {
                    None
                };
                let peer_master = if b {
                    self.master_ref(devices, &v.peer.netns, &v.peer.master)
                } else {
                    None
                };
                (a && b).then_some(())?;
                Some(Link {
                    netns: v.netns.value.clone(),
                    name: v.name.value.clone(),
                    mac: mac?,
                    mtu: mtu?,
                    master: master?,
                    kind: LinkKind::Veth {
                        peer: VethPeer {
                            netns: v.peer.netns.value.clone(),
                            name: v.peer.name.value.clone(),
                            mac: peer_mac?,
                            mtu: peer_mtu?,
                            master: peer_master?,
                        },
                    },
                })
            }
            RawLink::Vxlan(x) => {
                let here = self.namespace_ref(&x.netns, known);
                let underlay = x.underlay.as_ref().unwrap_or(&x.netns);
                let under = x.underlay.is_none() || self.namespace_ref(underlay, known);
                let dev = match &x.dev {
                    Some(d) if under => {
                        if devices.get(&underlay.value, &d.value).is_some() {
                            Some(Some(d.value.clone()))
                        } else {
                            let names = devices.names(&underlay.value);
                            self.err(
                                &d.referenced,
                                format!(
                                    "vxlan {} sends through `{}`, which its underlay namespace {} \
                                     does not have",
                                    x.name.value, d.value, underlay.value
                                ),
                                "unknown underlay device",
                                Some(unknown_hint("device", &d.value, &names)),
                            );
                            None
                        }
                    }
                    Some(_) => None,
                    None => Some(None),
                };
                if x.id.value > 0x00ff_ffff {
                    self.err(
                        &x.id.referenced,
                        format!("vni {} does not fit in 24 bits", x.id.value),
                        "bad vni",
                        Some("a VXLAN network identifier is 0 to 16777215".into()),
                    );
                }
                let local = match &x.local {
                    Some(l) => self.ipv4(l, "vxlan local address").map(Some),
                    None => Some(None),
                };
                let remote = match &x.remote {
                    Some(l) => self.ipv4(l, "vxlan remote address").map(Some),
                    None => Some(None),
                };
                let port = match &x.dstport {
                    Some(p) if p.value == 0 => {
                        self.err(
                            &p.referenced,
                            "vxlan dstport 0".into(),
                            "bad port",
                            Some(
                                "write a UDP port, 4789 (IANA) or 8472 (Linux's old default)"
                                    .into(),
                            ),
                        );
                        None
                    }
                    Some(p) => Some(p.value),
                    None => Some(VXLAN_DEFAULT_PORT),
                };
                let mac = self.opt_mac(&x.mac);
                let mtu = self.mtu(&x.mtu);
                let claimed =
                    here && self.claim_dev(devices, &x.netns, &x.name, Dev::Vxlan, "vxlan");
                let master = if claimed {
                    self.master_ref(devices, &x.netns, &x.master)
                } else {
                    None
                };
                (claimed && under && x.id.value <= 0x00ff_ffff).then_some(())?;
                Some(Link {
                    netns: x.netns.value.clone(),
                    name: x.name.value.clone(),
                    mac: mac?,
                    mtu: mtu?,
                    master: master?,
                    kind: LinkKind::Vxlan(Vxlan {
                        underlay: underlay.value.clone(),
                        id: x.id.value,
                        dev: dev?,
                        local: local?,
                        remote: remote?,
                        port: port?,
                        learning: x.learning.unwrap_or(true),
                    }),
                })
            }
        }
    }

    fn fdb(
        &mut self,
        f: &RawFdb,
        known: &[String],
        devices: &Devices,
        ports: &[(String, String)],
    ) -> Option<Fdb> {
        let netns = self.namespace_ref(&f.netns, known);
        let dev = netns && self.dev_ref(devices, &f.netns, &f.dev, "fdb entry");
        let lladdr = self.lladdr(&f.lladdr);
        let dst = match &f.dst {
            Some(d) => self.ipv4(d, "fdb dst").map(Some),
            None => Some(None),
        };
        if !dev {
            return None;
        }
        let kind = devices.get(&f.netns.value, &f.dev.value);
        let is_port = ports
            .iter()
            .any(|(ns, dev)| *ns == f.netns.value && *dev == f.dev.value);
        let vxlan = kind == Some(Dev::Vxlan);
        if let Some(d) = f.dst.as_ref().filter(|_| !vxlan) {
            self.err(
                &d.referenced,
                format!(
                    "`dst` is for a vxlan device's entries, and `{}` is not one",
                    f.dev.value
                ),
                "dst on a non-vxlan device",
                Some("a bridge port's entry says only which port a MAC is behind".into()),
            );
            return None;
        }
        // A vxlan device's own table unless it is a bridge port (Kata's
        // case is a bridge port's entry in the bridge's table).
        let master = !vxlan || is_port && f.dst.is_none();
        if master && !is_port && kind != Some(Dev::Cni) {
            self.err(
                &f.dev.referenced,
                format!(
                    "`{}` is no bridge port, so it has no bridge table for the entry",
                    f.dev.value
                ),
                "not a bridge port",
                Some("give the device a `master`, or put the entry on a vxlan device".into()),
            );
            return None;
        }
        Some(Fdb {
            netns: f.netns.value.clone(),
            dev: f.dev.value.clone(),
            lladdr: lladdr?,
            dst: dst?,
            master,
        })
    }

    fn tc(&mut self, t: &RawTc, known: &[String], devices: &Devices) -> Option<Tc> {
        let netns = self.namespace_ref(&t.netns, known);
        let dev = netns && self.dev_ref(devices, &t.netns, &t.dev, "tc filter");
        let (to, mirror) = match (&t.redirect, &t.mirror) {
            (Some(r), None) => (r, false),
            (None, Some(m)) => (m, true),
            (Some(_), Some(m)) => {
                self.err(
                    &m.referenced,
                    "a tc filter both redirects and mirrors".into(),
                    "redirect or mirror",
                    Some("write two filters, or keep one of `redirect` and `mirror`".into()),
                );
                return None;
            }
            (None, None) => {
                self.err(
                    &t.dev.referenced,
                    format!("the tc filter on `{}` has no action", t.dev.value),
                    "no action",
                    Some("add `redirect: DEV` or `mirror: DEV`".into()),
                );
                return None;
            }
        };
        let target = netns && self.dev_ref(devices, &t.netns, to, "tc redirect");
        (dev && target).then_some(())?;
        Some(Tc {
            netns: t.netns.value.clone(),
            dev: t.dev.value.clone(),
            hook: match t.hook {
                RawTcHook::Ingress => TcHook::Ingress,
                RawTcHook::Egress => TcHook::Egress,
            },
            mirror,
            to: to.value.clone(),
        })
    }
}

/// The bridges the vpc/nodes keys make in an entity.
fn cni_bridges(lab: &Lab, entity: &str) -> Vec<String> {
    if entity == "vpc" {
        return lab
            .vpc
            .iter()
            .flat_map(|v| v.subnets.iter().map(|s| s.name.clone()))
            .collect();
    }
    lab.node(entity)
        .filter(|n| n.pod_cidr.is_some())
        .map(|n| vec![n.bridge.clone()])
        .unwrap_or_default()
}
