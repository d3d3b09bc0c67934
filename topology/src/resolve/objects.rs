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
    /// A bond: a master for its slaves.
    Bond,
    /// A dummy device.
    Dummy,
    /// A vlan, macvlan or ipvlan of the layer: made in the same phase as
    /// the others and vxlans, so not a parent of one of them.
    Stacked,
}

impl Dev {
    /// The kind of link this is, for messages.
    fn what(self) -> &'static str {
        match self {
            Dev::Cni => "device",
            Dev::Bridge => "bridge",
            Dev::Veth => "veth",
            Dev::Vxlan => "vxlan",
            Dev::Bond => "bond",
            Dev::Dummy => "dummy",
            Dev::Stacked => "stacked link",
        }
    }
}

/// A link's names as the pre-pass claimed them: (own, veth peer's).
type Claimed = (bool, bool);

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
            let ports = self
                .served_ports(&format!("namespace {}", n.name.value), &n.ports)
                .unwrap_or_default();
            out.namespaces.push(Namespace {
                ports,
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
        // Lowered once: a lab of 10,000 pods has as many namespaces.
        let lowered = lab.lowered();
        let lowered = lowered.interfaces_by_namespace();
        for ns in &known {
            let mut v = vec![("lo".to_string(), Dev::Cni, cni.clone())];
            if lab.objects.namespaces.iter().all(|n| &n.name != ns) {
                let bridges = cni_bridges(lab, ns);
                let ifs = lab.cni_interfaces_in(&lowered, ns).unwrap_or_default();
                let own = lab.objects.interfaces_in(ns).map(str::to_string);
                for i in ifs.into_iter().chain(own) {
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

        // Every link's name is claimed before any reference is resolved, so
        // a port, slave or vlan may come before its bridge, bond or parent
        // in the file. Masters first: their names are what ports look up.
        let mut claimed: Vec<Claimed> = vec![(false, false); raw.links.len()];
        for (i, link) in raw.links.iter().enumerate() {
            // An unknown namespace is reported once, by `link` below.
            let (netns, name, dev, kind) = match link {
                RawLink::Bridge(b) => (&b.netns, &b.name, Dev::Bridge, "bridge"),
                RawLink::Bond(b) => (&b.netns, &b.name, Dev::Bond, "bond"),
                _ => continue,
            };
            if known.contains(&netns.value) {
                claimed[i].0 = self.claim_dev(&mut devices, netns, name, dev, kind);
            }
        }
        for (i, link) in raw.links.iter().enumerate() {
            let (netns, name, dev, kind) = match link {
                RawLink::Bridge(_) | RawLink::Bond(_) => continue,
                RawLink::Veth(v) => {
                    if known.contains(&v.peer.netns.value) && known.contains(&v.netns.value) {
                        claimed[i].0 =
                            self.claim_dev(&mut devices, &v.netns, &v.name, Dev::Veth, "veth");
                        claimed[i].1 = self.claim_dev(
                            &mut devices,
                            &v.peer.netns,
                            &v.peer.name,
                            Dev::Veth,
                            "veth peer",
                        );
                    }
                    continue;
                }
                RawLink::Vxlan(x) => (&x.netns, &x.name, Dev::Vxlan, "vxlan"),
                RawLink::Vlan(x) => (&x.netns, &x.name, Dev::Stacked, "vlan"),
                RawLink::Dummy(x) => (&x.netns, &x.name, Dev::Dummy, "dummy"),
                RawLink::Macvlan(x) => (&x.netns, &x.name, Dev::Stacked, "macvlan"),
                RawLink::Ipvlan(x) => (&x.netns, &x.name, Dev::Stacked, "ipvlan"),
            };
            if known.contains(&netns.value) {
                claimed[i].0 = self.claim_dev(&mut devices, netns, name, dev, kind);
            }
        }
        let filtering: Vec<(String, String)> = raw
            .links
            .iter()
            .filter_map(|l| match l {
                RawLink::Bridge(b) if b.vlan_filtering.as_ref().is_some_and(|f| f.value) => {
                    Some((b.netns.value.clone(), b.name.value.clone()))
                }
                _ => None,
            })
            .collect();
        for (link, claimed) in raw.links.iter().zip(claimed) {
            if let Some(l) = self.link(link, known.as_slice(), &devices, claimed, &filtering) {
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
                    scope_host: a.scope == Some(RawAddressScope::Host),
                });
            }
        }
        for r in &raw.routes {
            if let Some(r) = self.ns_route(r, &known, &devices) {
                out.routes.push(r);
            }
        }
        for s in &raw.sysctls {
            let netns = self.namespace_ref(&s.netns, &known);
            let ok = self.sysctl(&s.key.value, &s.value, &s.key.referenced);
            if netns && ok {
                out.sysctls.push(NsSysctl {
                    netns: s.netns.value.clone(),
                    key: s.key.value.clone(),
                    value: s.value.value.0.clone(),
                });
            }
        }
        for n in &raw.neighbours {
            let netns = self.namespace_ref(&n.netns, &known);
            let dev = netns && self.dev_ref(&devices, &n.netns, &n.dev, "neighbour");
            let address = self.ipv4(&n.address, "neighbour address");
            // `self`: the device's own MAC, whatever the kernel gave it.
            let lladdr = if n.lladdr.value == "self" {
                let state = n.state.unwrap_or(RawNeighState::Permanent);
                if state != RawNeighState::Permanent {
                    self.err(
                        &n.lladdr.referenced,
                        "`lladdr: self` is always permanent".to_string(),
                        "self entry not permanent",
                        Some("leave `state` out, or give the MAC".into()),
                    );
                    continue;
                }
                Some(None)
            } else {
                self.lladdr(&n.lladdr).map(Some)
            };
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
        // A bond's slave is no bridge port.
        let ports: Vec<(String, String)> = raw
            .links
            .iter()
            .flat_map(ends)
            .filter(|(netns, _, master)| {
                master.is_some_and(|m| devices.get(&netns.value, &m.value) != Some(Dev::Bond))
            })
            .map(|(netns, name, _)| (netns.value.clone(), name.value.clone()))
            .collect();
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
        for m in &raw.bpf_maps {
            if let Some(m) = self.bpf_maps(m, raw, &known, &devices, &out.bpf_maps) {
                out.bpf_maps.push(m);
            }
        }
        // Last: the controller's entries follow the file's own.
        if let Some(e) = &raw.evpn {
            self.evpn(e, raw, &known, &mut out);
        }
        out
    }

    /// A namespace reference (`in`, `underlay`): true when it is known.
    pub(super) fn namespace_ref(&mut self, name: &Text, known: &[String]) -> bool {
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

    /// A bridge or bond of `netns` to be a port or slave of: its name,
    /// and whether it is a bridge.
    fn master_ref(
        &mut self,
        devices: &Devices,
        netns: &Text,
        master: &Option<Text>,
    ) -> Option<Option<(String, bool)>> {
        let Some(m) = master else { return Some(None) };
        match devices.get(&netns.value, &m.value) {
            Some(Dev::Bridge) => Some(Some((m.value.clone(), true))),
            Some(Dev::Bond) => Some(Some((m.value.clone(), false))),
            Some(_) => {
                self.err(
                    &m.referenced,
                    format!(
                        "master `{}` in namespace {} is not a bridge or a bond",
                        m.value, netns.value
                    ),
                    "not a bridge or a bond",
                    Some("a link's master is a bridge or a bond of its own namespace".into()),
                );
                None
            }
            None => {
                let masters: Vec<&str> = devices
                    .by_ns
                    .get(&netns.value)
                    .map(|v| {
                        v.iter()
                            .filter(|(_, d, _)| matches!(d, Dev::Bridge | Dev::Bond))
                            .map(|(n, _, _)| n.as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                self.err(
                    &m.referenced,
                    format!(
                        "no bridge or bond `{}` in namespace {}",
                        m.value, netns.value
                    ),
                    "unknown master",
                    Some(unknown_hint("master", &m.value, &masters)),
                );
                None
            }
        }
    }

    /// A link end's master and port options, checked together: options
    /// only on a bridge's port, vlans only on a vlan-filtering bridge's.
    fn master_port(
        &mut self,
        devices: &Devices,
        netns: &Text,
        name: &Text,
        master: &Option<Text>,
        port: &Option<serde_saphyr::Spanned<RawBridgePort>>,
        filtering: &[(String, String)],
    ) -> Option<(Option<String>, Option<PortOptions>)> {
        let master = self.master_ref(devices, netns, master)?;
        let Some(p) = port else {
            return Some((master.map(|(m, _)| m), None));
        };
        let bridge = match &master {
            Some((m, true)) => m.clone(),
            other => {
                let why = match other {
                    Some((m, _)) => format!("its master `{m}` is a bond"),
                    None => "it has no master".to_string(),
                };
                self.err(
                    &p.referenced,
                    format!(
                        "`{}` has port options, but {why}: they are a bridge port's",
                        name.value
                    ),
                    "not a bridge port",
                    Some("give the link a bridge `master`, or drop `port`".into()),
                );
                return None;
            }
        };
        let vlans = self.bridge_vlans(&p.value.vlans)?;
        if let Some(v) = p.value.vlans.first()
            && !filtering
                .iter()
                .any(|(ns, b)| *ns == netns.value && *b == bridge)
        {
            self.err(
                &v.id.referenced,
                format!(
                    "`{}` has vlans, but its bridge `{bridge}` does not filter by vlan",
                    name.value
                ),
                "vlans without vlan_filtering",
                Some(format!("add `vlan_filtering: true` to bridge {bridge}")),
            );
            return None;
        }
        Some((
            Some(bridge),
            Some(PortOptions {
                learning: p.value.learning,
                neigh_suppress: p.value.neigh_suppress,
                isolated: p.value.isolated,
                hairpin: p.value.hairpin,
                vlans,
            }),
        ))
    }

    /// A list of bridge VLANs: ids 1 to 4094, each once, one pvid.
    fn bridge_vlans(&mut self, raw: &[RawBridgeVlan]) -> Option<Vec<BridgeVlan>> {
        let mut out: Vec<BridgeVlan> = Vec::new();
        let mut ok = true;
        for v in raw {
            if !self.vlan_id(&v.id) {
                ok = false;
                continue;
            }
            if out.iter().any(|o| o.id == v.id.value) {
                self.err(
                    &v.id.referenced,
                    format!("vlan {} is listed twice", v.id.value),
                    "duplicate vlan",
                    None,
                );
                ok = false;
                continue;
            }
            if v.pvid && out.iter().any(|o| o.pvid) {
                self.err(
                    &v.id.referenced,
                    format!("vlan {} is a second pvid", v.id.value),
                    "two pvids",
                    Some("untagged frames arriving on a port belong to one vlan".into()),
                );
                ok = false;
                continue;
            }
            out.push(BridgeVlan {
                id: v.id.value,
                pvid: v.pvid,
                untagged: v.untagged,
            });
        }
        ok.then_some(out)
    }

    /// An 802.1Q id: 1 to 4094.
    fn vlan_id(&mut self, id: &serde_saphyr::Spanned<u16>) -> bool {
        if (1..=4094).contains(&id.value) {
            return true;
        }
        self.err(
            &id.referenced,
            format!("vlan id {} is out of range", id.value),
            "bad vlan id",
            Some("802.1Q vlan ids are 1 to 4094 (0 and 4095 are reserved)".into()),
        );
        false
    }

    /// The parent of a vlan, macvlan or ipvlan: a device of `netns` that
    /// exists before the phase that makes stacked links.
    fn parent_ref(&mut self, devices: &Devices, netns: &Text, parent: &Text, kind: &str) -> bool {
        match devices.get(&netns.value, &parent.value) {
            Some(d @ (Dev::Stacked | Dev::Vxlan)) => {
                self.err(
                    &parent.referenced,
                    format!(
                        "the {kind}'s parent `{}` is a {} of this layer, made in the same phase",
                        parent.value,
                        d.what()
                    ),
                    "stacked parent",
                    Some(
                        "a parent is a veth, bond, bridge, dummy or a device of the                          vpc/nodes/pods keys"
                            .into(),
                    ),
                );
                false
            }
            Some(_) => true,
            None => {
                let names = devices.names(&netns.value);
                self.err(
                    &parent.referenced,
                    format!(
                        "the {kind}'s parent `{}` is no device of namespace {}",
                        parent.value, netns.value
                    ),
                    "unknown parent",
                    Some(unknown_hint("device", &parent.value, &names)),
                );
                false
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

    fn link(
        &mut self,
        raw: &RawLink,
        known: &[String],
        devices: &Devices,
        claimed: Claimed,
        filtering: &[(String, String)],
    ) -> Option<Link> {
        let up = |state: Option<RawLinkState>| state != Some(RawLinkState::Down);
        match raw {
            RawLink::Bridge(b) => {
                let ok = self.namespace_ref(&b.netns, known);
                let mac = self.opt_mac(&b.mac);
                let mtu = self.mtu(&b.mtu);
                let vlan_filtering = b.vlan_filtering.as_ref().is_some_and(|f| f.value);
                let pvid = match &b.vlan_default_pvid {
                    Some(p) if p.value > 4094 => {
                        self.err(
                            &p.referenced,
                            format!("vlan_default_pvid {} is out of range", p.value),
                            "bad vlan id",
                            Some("0 (no default vlan) or a vlan id, 1 to 4094".into()),
                        );
                        None
                    }
                    Some(p) => Some(Some(p.value)),
                    None => Some(None),
                };
                let vlans = self.bridge_vlans(&b.vlans);
                let needs_filtering = b
                    .vlan_default_pvid
                    .as_ref()
                    .map(|p| &p.referenced)
                    .or(b.vlans.first().map(|v| &v.id.referenced));
                if let (false, Some(at)) = (vlan_filtering, needs_filtering) {
                    self.err(
                        at,
                        format!(
                            "bridge {} has vlan settings but no vlan_filtering",
                            b.name.value
                        ),
                        "vlans without vlan_filtering",
                        Some("add `vlan_filtering: true`".into()),
                    );
                    return None;
                }
                (ok && claimed.0).then_some(())?;
                Some(Link {
                    netns: b.netns.value.clone(),
                    name: b.name.value.clone(),
                    mac: mac?,
                    mtu: mtu?,
                    master: None,
                    port: None,
                    up: up(b.state),
                    arp: b.arp != Some(false),
                    kind: LinkKind::Bridge(BridgeOptions {
                        vlan_filtering,
                        vlan_default_pvid: pvid?,
                        vlans: vlans?,
                    }),
                })
            }
            RawLink::Veth(v) => {
                let here = self.namespace_ref(&v.netns, known);
                let there = self.namespace_ref(&v.peer.netns, known);
                let (a, b) = claimed;
                let mac = self.opt_mac(&v.mac);
                let peer_mac = self.opt_mac(&v.peer.mac);
                let mtu = self.mtu(&v.mtu);
                let peer_mtu = self.mtu(&v.peer.mtu);
                let master = if a {
                    self.master_port(devices, &v.netns, &v.name, &v.master, &v.port, filtering)
                } else {
                    None
                };
                let peer_master = if b {
                    self.master_port(
                        devices,
                        &v.peer.netns,
                        &v.peer.name,
                        &v.peer.master,
                        &v.peer.port,
                        filtering,
                    )
                } else {
                    None
                };
                (here && there && a && b).then_some(())?;
                let (master, port) = master?;
                let (peer_master, peer_port) = peer_master?;
                Some(Link {
                    netns: v.netns.value.clone(),
                    name: v.name.value.clone(),
                    mac: mac?,
                    mtu: mtu?,
                    master,
                    port,
                    up: up(v.state),
                    arp: v.arp != Some(false),
                    kind: LinkKind::Veth {
                        peer: VethPeer {
                            netns: v.peer.netns.value.clone(),
                            name: v.peer.name.value.clone(),
                            mac: peer_mac?,
                            mtu: peer_mtu?,
                            master: peer_master,
                            port: peer_port,
                            up: up(v.peer.state),
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
                let external = x.external.as_ref().is_some_and(|e| e.value);
                let id = match (&x.id, &x.external) {
                    (Some(id), Some(e)) if e.value => {
                        // iproute2 refuses the same ("both 'external' and
                        // vni cannot be specified").
                        self.err(
                            &id.referenced,
                            format!("vxlan {} is `external` and has an `id`", x.name.value),
                            "external and id",
                            Some(
                                "an external device takes each packet's VNI from its tunnel \
                                 key: remove `id`, or `external`"
                                    .into(),
                            ),
                        );
                        None
                    }
                    (Some(id), _) if id.value > 0x00ff_ffff => {
                        self.err(
                            &id.referenced,
                            format!("vni {} does not fit in 24 bits", id.value),
                            "bad vni",
                            Some("a VXLAN network identifier is 0 to 16777215".into()),
                        );
                        None
                    }
                    (Some(id), _) => Some(id.value),
                    (None, _) if external => Some(0),
                    (None, _) => {
                        self.err(
                            &x.name.referenced,
                            format!("vxlan {} has no `id`", x.name.value),
                            "no vni",
                            Some(
                                "give it `id: VNI`, or `external: true` for a collect-metadata \
                                 device whose VNI an eBPF program sets per packet"
                                    .into(),
                            ),
                        );
                        None
                    }
                };
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
                let claimed = here && claimed.0;
                let master = if claimed {
                    self.master_port(devices, &x.netns, &x.name, &x.master, &x.port, filtering)
                } else {
                    None
                };
                (claimed && under).then_some(())?;
                let id = id?;
                let (master, bridge_port) = master?;
                Some(Link {
                    netns: x.netns.value.clone(),
                    name: x.name.value.clone(),
                    mac: mac?,
                    mtu: mtu?,
                    master,
                    port: bridge_port,
                    up: up(x.state),
                    arp: x.arp != Some(false),
                    kind: LinkKind::Vxlan(Vxlan {
                        underlay: underlay.value.clone(),
                        id,
                        external,
                        dev: dev?,
                        local: local?,
                        remote: remote?,
                        port: port?,
                        learning: x.learning.unwrap_or(true),
                    }),
                })
            }
            RawLink::Vlan(v) => {
                let here = self.namespace_ref(&v.netns, known);
                let parent = here && self.parent_ref(devices, &v.netns, &v.parent, "vlan");
                let id = self.vlan_id(&v.id);
                let kind = LinkKind::Vlan(Vlan {
                    parent: v.parent.value.clone(),
                    id: v.id.value,
                });
                let c = Common::of_vlan(v);
                (parent && id).then_some(())?;
                self.common(c, known, devices, claimed.0, filtering, kind)
            }
            RawLink::Bond(b) => {
                let kind = LinkKind::Bond(Bond {
                    mode: match b.mode.unwrap_or(RawBondMode::BalanceRr) {
                        RawBondMode::BalanceRr => BondMode::BalanceRr,
                        RawBondMode::ActiveBackup => BondMode::ActiveBackup,
                        RawBondMode::BalanceXor => BondMode::BalanceXor,
                        RawBondMode::Broadcast => BondMode::Broadcast,
                        RawBondMode::Lacp => BondMode::Lacp,
                        RawBondMode::BalanceTlb => BondMode::BalanceTlb,
                        RawBondMode::BalanceAlb => BondMode::BalanceAlb,
                    },
                    miimon: b.miimon.filter(|m| *m > 0),
                });
                self.common(
                    Common::of_bond(b),
                    known,
                    devices,
                    claimed.0,
                    filtering,
                    kind,
                )
            }
            RawLink::Dummy(d) => self.common(
                Common::of_dummy(d),
                known,
                devices,
                claimed.0,
                filtering,
                LinkKind::Dummy,
            ),
            RawLink::Macvlan(m) => {
                let parent_netns = m.parent_in.as_ref().unwrap_or(&m.netns);
                let there = self.namespace_ref(parent_netns, known);
                let parent = there && self.parent_ref(devices, parent_netns, &m.parent, "macvlan");
                let kind = LinkKind::Macvlan(Macvlan {
                    parent_netns: parent_netns.value.clone(),
                    parent: m.parent.value.clone(),
                    mode: match m.mode.unwrap_or(RawMacvlanMode::Bridge) {
                        RawMacvlanMode::Bridge => MacvlanMode::Bridge,
                        RawMacvlanMode::Private => MacvlanMode::Private,
                        RawMacvlanMode::Vepa => MacvlanMode::Vepa,
                        RawMacvlanMode::Passthru => MacvlanMode::Passthru,
                    },
                });
                let c = Common::of_macvlan(m);
                let link = self.common(c, known, devices, claimed.0, filtering, kind);
                parent.then_some(link)?
            }
            RawLink::Ipvlan(i) => {
                let parent_netns = i.parent_in.as_ref().unwrap_or(&i.netns);
                let there = self.namespace_ref(parent_netns, known);
                let parent = there && self.parent_ref(devices, parent_netns, &i.parent, "ipvlan");
                let kind = LinkKind::Ipvlan(Ipvlan {
                    parent_netns: parent_netns.value.clone(),
                    parent: i.parent.value.clone(),
                    mode: match i.mode.unwrap_or(RawIpvlanMode::L2) {
                        RawIpvlanMode::L2 => IpvlanMode::L2,
                        RawIpvlanMode::L3 => IpvlanMode::L3,
                    },
                });
                if let Some(m) = &i.mac {
                    self.err(
                        &m.referenced,
                        format!("ipvlan {} cannot have a MAC of its own", i.name.value),
                        "ipvlan mac",
                        Some("an ipvlan sends with its parent's MAC; drop `mac`".into()),
                    );
                    return None;
                }
                let c = Common::of_ipvlan(i);
                let link = self.common(c, known, devices, claimed.0, filtering, kind);
                parent.then_some(link)?
            }
        }
    }

    /// The fields every kind of link has, checked.
    fn common(
        &mut self,
        c: Common<'_>,
        known: &[String],
        devices: &Devices,
        claimed: bool,
        filtering: &[(String, String)],
        kind: LinkKind,
    ) -> Option<Link> {
        let here = self.namespace_ref(c.netns, known);
        let mac = self.opt_mac(c.mac);
        let mtu = self.mtu(c.mtu);
        let master = if here && claimed {
            self.master_port(devices, c.netns, c.name, c.master, c.port, filtering)
        } else {
            None
        };
        if let (LinkKind::Bond(_), Some(m)) = (&kind, c.master)
            && devices.get(&c.netns.value, &m.value) == Some(Dev::Bond)
        {
            self.err(
                &m.referenced,
                format!(
                    "bond {} cannot be a slave of bond {}",
                    c.name.value, m.value
                ),
                "bond in a bond",
                Some("the kernel refuses to enslave a bond to a bond".into()),
            );
            return None;
        }
        (here && claimed).then_some(())?;
        let (master, port) = master?;
        Some(Link {
            netns: c.netns.value.clone(),
            name: c.name.value.clone(),
            mac: mac?,
            mtu: mtu?,
            master,
            port,
            up: c.state != Some(RawLinkState::Down),
            arp: c.arp != Some(false),
            kind,
        })
    }

    /// A route of the layer: a namespace, a destination, and a gateway, a
    /// device or next hops that exist there.
    fn ns_route(&mut self, r: &RawNsRoute, known: &[String], devices: &Devices) -> Option<NsRoute> {
        let netns = self.namespace_ref(&r.netns, known);
        let mut ok = netns;
        if let Some(d) = &r.dev {
            ok &= netns && self.dev_ref(devices, &r.netns, d, "route");
        }
        let destination = if r.to.value.trim() == "default" {
            Some(ipnet::Ipv4Net::default())
        } else {
            self.network(&r.to, "route destination")
        };
        let via = match &r.via {
            Some(v) => self.ipv4(v, "route gateway").map(Some),
            None => Some(None),
        };
        let mut nexthops = Vec::new();
        for h in &r.nexthops {
            let dev = netns && self.dev_ref(devices, &r.netns, &h.dev, "next hop");
            let via = match &h.via {
                Some(v) => self.ipv4(v, "next hop gateway").map(Some),
                None => Some(None),
            };
            let weight = match &h.weight {
                Some(w) if !(1..=256).contains(&w.value) => {
                    self.err(
                        &w.referenced,
                        format!("next hop weight {} is out of range", w.value),
                        "bad weight",
                        Some("a next hop's weight is 1 to 256".into()),
                    );
                    None
                }
                Some(w) => Some(w.value),
                None => Some(1),
            };
            match (dev, via, weight) {
                (true, Some(via), Some(weight)) => nexthops.push(NextHop {
                    via,
                    dev: h.dev.value.clone(),
                    weight,
                    onlink: h.onlink,
                }),
                _ => ok = false,
            }
        }
        if !r.nexthops.is_empty() {
            if let Some(extra) = r.via.as_ref().or(r.dev.as_ref()) {
                self.err(
                    &extra.referenced,
                    format!(
                        "the route to {} has both `nexthops` and its own `via`/`dev`",
                        r.to.value
                    ),
                    "nexthops and via",
                    Some("give each next hop its `via` and `dev`, and none to the route".into()),
                );
                ok = false;
            }
        } else if r.via.is_none() && r.dev.is_none() {
            self.err(
                &r.to.referenced,
                format!("the route to {} says neither `via` nor `dev`", r.to.value),
                "no next hop",
                Some("write `via: GATEWAY`, `dev: DEVICE`, both, or `nexthops`".into()),
            );
            ok = false;
        }
        let table = match &r.table {
            Some(t) if t.value == 0 => {
                self.err(
                    &t.referenced,
                    "routing table 0".into(),
                    "bad table",
                    Some("a table is 1 to 4294967295; the main one is 254".into()),
                );
                None
            }
            Some(t) => Some(Some(t.value)),
            None => Some(None),
        };
        let scope = r.scope.map(|s| match s {
            RawRouteScope::Global => RouteScope::Global,
            RawRouteScope::Link => RouteScope::Link,
            RawRouteScope::Host => RouteScope::Host,
        });
        let gateway = r.via.is_some() || r.nexthops.iter().any(|h| h.via.is_some());
        if scope.is_some_and(|s| s != RouteScope::Global) && gateway {
            self.err(
                &r.to.referenced,
                format!(
                    "the route to {} has a gateway and scope {}",
                    r.to.value,
                    scope.map_or("", |s| s.as_str())
                ),
                "gateway out of scope",
                Some("a route through a gateway has scope global (the kernel's default)".into()),
            );
            ok = false;
        }
        (ok).then_some(())?;
        Some(NsRoute {
            netns: r.netns.value.clone(),
            destination: destination?,
            via: via?,
            dev: r.dev.as_ref().map(|d| d.value.clone()),
            metric: r.metric,
            table: table?,
            scope,
            onlink: r.onlink,
            nexthops,
        })
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
        let master = crate::model::fdb_in_bridge(vxlan, is_port, f.dst.is_some());
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
        let hook = match t.hook {
            RawTcHook::Ingress => TcHook::Ingress,
            RawTcHook::Egress => TcHook::Egress,
        };
        let (to, mirror) = match (&t.redirect, &t.mirror, &t.bpf) {
            (None, None, Some(b)) => {
                if !TC_BPF_PROGRAMS.contains(&b.value.as_str()) {
                    self.err(
                        &b.referenced,
                        format!("unknown eBPF program `{}`", b.value),
                        "unknown program",
                        Some(unknown_hint("program", &b.value, &TC_BPF_PROGRAMS)),
                    );
                    return None;
                }
                dev.then_some(())?;
                return Some(Tc {
                    netns: t.netns.value.clone(),
                    dev: t.dev.value.clone(),
                    hook,
                    action: TcAction::Bpf {
                        program: b.value.clone(),
                    },
                });
            }
            (Some(r), None, None) => (r, false),
            (None, Some(m), None) => (m, true),
            (Some(_), Some(m), None) => {
                self.err(
                    &m.referenced,
                    "a tc filter both redirects and mirrors".into(),
                    "redirect or mirror",
                    Some("write two filters, or keep one of `redirect` and `mirror`".into()),
                );
                return None;
            }
            (_, _, Some(b)) => {
                self.err(
                    &b.referenced,
                    "a tc filter both runs an eBPF program and redirects or mirrors".into(),
                    "bpf or mirred",
                    Some("write two filters, or keep one of `bpf`, `redirect` and `mirror`".into()),
                );
                return None;
            }
            (None, None, None) => {
                self.err(
                    &t.dev.referenced,
                    format!("the tc filter on `{}` has no action", t.dev.value),
                    "no action",
                    Some("add `redirect: DEV`, `mirror: DEV` or `bpf: PROGRAM`".into()),
                );
                return None;
            }
        };
        let target = netns && self.dev_ref(devices, &t.netns, to, "tc redirect");
        (dev && target).then_some(())?;
        Some(Tc {
            netns: t.netns.value.clone(),
            dev: t.dev.value.clone(),
            hook,
            action: TcAction::Mirred {
                mirror,
                to: to.value.clone(),
            },
        })
    }

    /// The eBPF router's maps of one namespace: each endpoint's device a
    /// veth end there whose two MACs are given, each tunnel a CIDR, the
    /// tunnel device an external vxlan of the namespace.
    fn bpf_maps(
        &mut self,
        m: &RawBpfMaps,
        raw: &RawTopology,
        known: &[String],
        devices: &Devices,
        done: &[BpfMaps],
    ) -> Option<BpfMaps> {
        if !self.namespace_ref(&m.netns, known) {
            return None;
        }
        let ns = &m.netns.value;
        if done.iter().any(|d| &d.netns == ns) {
            self.err(
                &m.netns.referenced,
                format!("namespace {ns} has `bpf_maps` twice"),
                "second bpf_maps",
                Some("one entry per namespace: merge their endpoints and tunnels".into()),
            );
            return None;
        }
        let mut ok = true;
        let tunnel_dev = match &m.tunnel_dev {
            None => None,
            Some(d) if !self.dev_ref(devices, &m.netns, d, "bpf_maps tunnel_dev") => {
                ok = false;
                None
            }
            Some(d) => {
                let external = raw.links.iter().any(|l| {
                    matches!(l, RawLink::Vxlan(x)
                        if &x.netns.value == ns && x.name.value == d.value
                            && x.external.as_ref().is_some_and(|e| e.value))
                });
                if !external {
                    self.err(
                        &d.referenced,
                        format!(
                            "tunnel_dev `{}` is no `external` vxlan device of namespace {ns}",
                            d.value
                        ),
                        "not an external vxlan",
                        Some(
                            "name a vxlan link of this namespace with `external: true`: the \
                             program sets each packet's tunnel key on it"
                                .into(),
                        ),
                    );
                    ok = false;
                }
                Some(d.value.clone())
            }
        };
        let mut endpoints: Vec<BpfEndpoint> = Vec::new();
        for e in &m.endpoints {
            let address = self.ipv4(&e.address, "endpoint address");
            if e.identity.value == 0 || e.identity.value > 0x00ff_ffff {
                self.err(
                    &e.identity.referenced,
                    format!(
                        "identity {} is no VNI: it must be 1 to 16777215",
                        e.identity.value
                    ),
                    "bad identity",
                    Some(
                        "the identity is sent as the VXLAN network identifier (24 bits); \
                         Cilium's pod identities start at 256"
                            .into(),
                    ),
                );
                ok = false;
            }
            let macs = self.veth_macs(&m.netns, &e.dev, raw, devices);
            let (Some(address), Some((lxc_mac, pod_mac))) = (address, macs) else {
                ok = false;
                continue;
            };
            if endpoints.iter().any(|x| x.address == address) {
                self.err(
                    &e.address.referenced,
                    format!("endpoint {address} is twice in the maps of namespace {ns}"),
                    "duplicate endpoint",
                    Some("one entry per pod address".into()),
                );
                ok = false;
                continue;
            }
            endpoints.push(BpfEndpoint {
                address,
                dev: e.dev.value.clone(),
                lxc_mac,
                pod_mac,
                identity: e.identity.value,
            });
        }
        let mut tunnels = Vec::new();
        for t in &m.tunnels {
            let prefix = self.network(&t.prefix, "tunnel prefix");
            let remote = self.ipv4(&t.remote, "tunnel remote");
            match (prefix, remote) {
                (Some(prefix), Some(remote)) => tunnels.push(BpfTunnel { prefix, remote }),
                _ => ok = false,
            }
        }
        let redirect = match m.redirect {
            None | Some(RawBpfRedirect::Egress) => BpfRedirect::Egress,
            Some(RawBpfRedirect::Peer) => BpfRedirect::Peer,
        };
        ok.then(|| BpfMaps {
            netns: ns.clone(),
            tunnel_dev,
            endpoints,
            tunnels,
            redirect,
        })
    }

    /// The MACs of the veth pair `dev` of `netns` is an end of: (that
    /// end's, the other end's), both given in the file.
    fn veth_macs(
        &mut self,
        netns: &Text,
        dev: &Text,
        raw: &RawTopology,
        devices: &Devices,
    ) -> Option<([u8; 6], [u8; 6])> {
        let ns = &netns.value;
        let pair = raw.links.iter().find_map(|l| match l {
            RawLink::Veth(v) if &v.netns.value == ns && v.name.value == dev.value => {
                Some((&v.mac, &v.peer.mac))
            }
            RawLink::Veth(v) if &v.peer.netns.value == ns && v.peer.name.value == dev.value => {
                Some((&v.peer.mac, &v.mac))
            }
            _ => None,
        });
        let Some((here, there)) = pair else {
            if devices.get(ns, &dev.value).is_none() {
                self.dev_ref(devices, netns, dev, "endpoint");
            } else {
                self.err(
                    &dev.referenced,
                    format!(
                        "endpoint device `{}` is no veth end of the `links` in namespace {ns}",
                        dev.value
                    ),
                    "not a veth",
                    Some(
                        "name the pod's host-side veth end (`lxc...`): its MACs go in the map"
                            .into(),
                    ),
                );
            }
            return None;
        };
        let (Some(here), Some(there)) = (here, there) else {
            self.err(
                &dev.referenced,
                format!(
                    "endpoint device `{}` and its veth peer need a `mac` each",
                    dev.value
                ),
                "no mac",
                Some(
                    "give both ends of the veth a `mac`: the endpoint map holds them and \
                     delivered frames carry them"
                        .into(),
                ),
            );
            return None;
        };
        // A bad MAC was reported with its link: parsed quietly here.
        let parse = |t: &Text| -> Option<[u8; 6]> {
            let mut mac = [0u8; 6];
            let parts: Vec<&str> = t.value.trim().split(':').collect();
            (parts.len() == 6).then_some(())?;
            for (p, b) in parts.iter().zip(mac.iter_mut()) {
                *b = u8::from_str_radix(p, 16).ok()?;
            }
            Some(mac)
        };
        Some((parse(here)?, parse(there)?))
    }
}

/// The fields every kind of link but veth, bridge and vxlan shares, by
/// reference (serde's `flatten` would lose their locations).
struct Common<'a> {
    netns: &'a Text,
    name: &'a Text,
    mac: &'a Option<Text>,
    mtu: &'a Option<serde_saphyr::Spanned<u32>>,
    master: &'a Option<Text>,
    port: &'a Option<serde_saphyr::Spanned<RawBridgePort>>,
    state: Option<RawLinkState>,
    arp: Option<bool>,
}

macro_rules! common_of {
    ($($f:ident: $t:ty),*) => {
        impl<'a> Common<'a> {
            $(fn $f(x: &'a $t) -> Self {
                Common {
                    netns: &x.netns,
                    name: &x.name,
                    mac: &x.mac,
                    mtu: &x.mtu,
                    master: &x.master,
                    port: &x.port,
                    state: x.state,
                    arp: x.arp,
                }
            })*
        }
    };
}
common_of!(of_vlan: RawVlan, of_bond: RawBond, of_dummy: RawDummy, of_macvlan: RawMacvlan, of_ipvlan: RawIpvlan);

/// A link's ends (one, or a veth's two): namespace, name and master.
fn ends(link: &RawLink) -> Vec<(&Text, &Text, Option<&Text>)> {
    match link {
        RawLink::Veth(v) => vec![
            (&v.netns, &v.name, v.master.as_ref()),
            (&v.peer.netns, &v.peer.name, v.peer.master.as_ref()),
        ],
        RawLink::Bridge(b) => vec![(&b.netns, &b.name, None)],
        RawLink::Vxlan(x) => vec![(&x.netns, &x.name, x.master.as_ref())],
        RawLink::Vlan(x) => vec![(&x.netns, &x.name, x.master.as_ref())],
        RawLink::Bond(x) => vec![(&x.netns, &x.name, x.master.as_ref())],
        RawLink::Dummy(x) => vec![(&x.netns, &x.name, x.master.as_ref())],
        RawLink::Macvlan(x) => vec![(&x.netns, &x.name, x.master.as_ref())],
        RawLink::Ipvlan(x) => vec![(&x.netns, &x.name, x.master.as_ref())],
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
