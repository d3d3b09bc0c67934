//! Resolution of `evpn`: its leaves are namespaces each with one vxlan
//! device of the VNI (a bridge port, with a VTEP address), its pods are
//! under those leaves with distinct names, addresses and MACs. The
//! controller's entries ([`Evpn::fdb`], [`Evpn::neighbours`]) then join the
//! low-level layer, and every leaf's vxlan device gets EVPN's settings (no
//! learning, ARP suppression); a scenario's `evpn_move` becomes the
//! controller's step ([`Evpn::moved`]).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde_saphyr::Location;

use super::{Resolver, Text};
use crate::error::unknown_hint;
use crate::model::*;
use crate::raw::*;

impl Resolver<'_> {
    /// `evpn`, against the links already resolved in `out`; on success its
    /// entries are appended to `out.fdb` and `out.neighbours`.
    pub(super) fn evpn(
        &mut self,
        e: &RawEvpn,
        raw: &RawTopology,
        known: &[String],
        out: &mut Objects,
    ) {
        let before = self.problems.len();
        let vni = e.vni.value;
        if vni > 0xff_ffff {
            self.err(
                &e.vni.referenced,
                format!("vni {vni} does not fit in 24 bits"),
                "out of range",
                Some("a VNI is 0 to 16777215".into()),
            );
            return;
        }
        if e.leaves.is_empty() {
            self.err(
                &e.vni.referenced,
                format!("evpn segment {vni} has no leaves"),
                "no leaves",
                Some(
                    "list the namespaces whose vxlan devices carry it: `leaves: [leaf1, ...]`"
                        .into(),
                ),
            );
        }
        let mut leaves: Vec<EvpnLeaf> = Vec::new();
        let mut seen: HashMap<&str, Location> = HashMap::new();
        let mut vteps: HashMap<Ipv4Addr, &str> = HashMap::new();
        for name in &e.leaves {
            if let Some(first) = seen.get(name.value.as_str()) {
                let line = first.line();
                self.err(
                    &name.referenced,
                    format!("leaf {} is listed twice, first at line {line}", name.value),
                    "again",
                    None,
                );
                continue;
            }
            seen.insert(&name.value, name.referenced);
            if !self.namespace_ref(name, known) {
                continue;
            }
            let Some(leaf) = self.evpn_leaf(name, vni, raw, out) else {
                continue;
            };
            if let Some(other) = vteps.get(&leaf.vtep) {
                self.err(
                    &name.referenced,
                    format!(
                        "leaf {} has VTEP {}, as leaf {other} does",
                        leaf.name, leaf.vtep
                    ),
                    "same VTEP",
                    Some("every leaf's vxlan device needs a `local` address of its own".into()),
                );
                continue;
            }
            vteps.insert(leaf.vtep, &name.value);
            leaves.push(leaf);
        }
        let pods = self.evpn_pods(e, &leaves);
        if self.problems.len() > before {
            return;
        }
        // EVPN's settings on every leaf's vxlan device: frames from the
        // fabric teach the bridge nothing, and ARP for a known pod is
        // answered from the neighbour entries instead of flooded.
        for leaf in &leaves {
            for link in out
                .links
                .iter_mut()
                .filter(|l| l.netns == leaf.name && l.name == leaf.vxlan)
            {
                if let LinkKind::Vxlan(x) = &mut link.kind {
                    x.learning = false;
                }
                let port = link.port.get_or_insert_with(PortOptions::default);
                port.learning = Some(false);
                port.neigh_suppress = Some(true);
            }
        }
        let evpn = Evpn { vni, leaves, pods };
        out.fdb.extend(evpn.fdb());
        out.neighbours.extend(evpn.neighbours());
        out.evpn = Some(evpn);
    }

    /// A leaf's vxlan device of the VNI, its bridge and VTEP.
    fn evpn_leaf(
        &mut self,
        name: &Text,
        vni: u32,
        raw: &RawTopology,
        out: &Objects,
    ) -> Option<EvpnLeaf> {
        let ns = name.value.as_str();
        let raws: Vec<&RawVxlan> = raw
            .links
            .iter()
            .filter_map(|l| match l {
                RawLink::Vxlan(x) if x.netns.value == ns => Some(x),
                _ => None,
            })
            .collect();
        let of_vni: Vec<&RawVxlan> = raws
            .iter()
            .copied()
            .filter(|x| x.id.as_ref().is_some_and(|i| i.value == vni))
            .collect();
        let raw_x = match of_vni.as_slice() {
            [one] => *one,
            [] => {
                let others: Vec<String> = raws
                    .iter()
                    .map(|x| match &x.id {
                        Some(i) => format!("{} (VNI {})", x.name.value, i.value),
                        None => format!("{} (external)", x.name.value),
                    })
                    .collect();
                let help = if others.is_empty() {
                    format!(
                        "add `- vxlan: {{name: ..., in: {ns}, id: {vni}, local: VTEP, master: BRIDGE}}` to `links`"
                    )
                } else {
                    format!("its vxlan devices: {}", others.join(", "))
                };
                self.err(
                    &name.referenced,
                    format!("leaf {ns} has no vxlan device with VNI {vni}"),
                    "no VTEP",
                    Some(help),
                );
                return None;
            }
            [_, second, ..] => {
                self.err(
                    &second.name.referenced,
                    format!("leaf {ns} has two vxlan devices with VNI {vni}"),
                    "second device",
                    Some("one device per VNI and leaf carries the segment".into()),
                );
                return None;
            }
        };
        // The device failed to resolve: that is reported where it stands.
        let link = out
            .links
            .iter()
            .find(|l| l.netns == ns && l.name == raw_x.name.value)?;
        let LinkKind::Vxlan(x) = &link.kind else {
            return None;
        };
        let at = raw_x.name.referenced;
        let dev = &raw_x.name.value;
        let mut ok = true;
        if x.remote.is_some() {
            self.err(
                &at,
                format!("vxlan {dev} of leaf {ns} has a `remote`, and an EVPN VTEP has none"),
                "remote",
                Some("the controller's FDB entries say which VTEP each MAC is behind".into()),
            );
            ok = false;
        }
        if raw_x.learning == Some(true) {
            self.err(
                &at,
                format!(
                    "vxlan {dev} of leaf {ns} learns (`learning: true`), and EVPN's VTEPs do not"
                ),
                "learning",
                Some("leave `learning` out: `evpn` turns it off".into()),
            );
            ok = false;
        }
        if let Some(p) = &raw_x.port
            && (p.value.learning == Some(true) || p.value.neigh_suppress == Some(false))
        {
            self.err(
                &p.referenced,
                format!("the port options of vxlan {dev} of leaf {ns} contradict EVPN's"),
                "learning or no suppression",
                Some(
                    "`evpn` sets `learning: false` and `neigh_suppress: true` on the port: leave \
                     them out"
                        .into(),
                ),
            );
            ok = false;
        }
        let bridge = link.master.as_ref().filter(|m| {
            out.links
                .iter()
                .any(|l| l.netns == ns && &l.name == *m && matches!(l.kind, LinkKind::Bridge(_)))
        });
        let Some(bridge) = bridge else {
            self.err(
                &at,
                format!("vxlan {dev} of leaf {ns} is no bridge port"),
                "no bridge",
                Some(
                    "give it `master: BRIDGE`: the bridge holds the MAC entries and answers ARP"
                        .into(),
                ),
            );
            return None;
        };
        let Some(vtep) = x.local else {
            self.err(
                &at,
                format!("vxlan {dev} of leaf {ns} has no `local` address, its VTEP"),
                "no VTEP address",
                Some("give it `local: ADDRESS` (on the leaf's lo, routed by the fabric)".into()),
            );
            return None;
        };
        ok.then(|| EvpnLeaf {
            name: ns.to_string(),
            vxlan: dev.clone(),
            bridge: bridge.clone(),
            vtep,
        })
    }

    /// The segment's pods: under a leaf, names, addresses and MACs unique.
    fn evpn_pods(&mut self, e: &RawEvpn, leaves: &[EvpnLeaf]) -> Vec<EvpnPod> {
        let mut pods: Vec<EvpnPod> = Vec::new();
        let mut names: HashMap<&str, Location> = HashMap::new();
        let mut macs: HashMap<[u8; 6], &str> = HashMap::new();
        let mut addresses: HashMap<Ipv4Addr, &str> = HashMap::new();
        let leaf_names: Vec<&str> = e.leaves.iter().map(|l| l.value.as_str()).collect();
        for p in &e.pods {
            let before = self.problems.len();
            let name = p.name.value.as_str();
            if let Some(first) = names.get(name) {
                let line = first.line();
                self.err(
                    &p.name.referenced,
                    format!("evpn pod {name} is listed twice, first at line {line}"),
                    "again",
                    Some("a pod is under one leaf at a time; `evpn_move` moves it".into()),
                );
                continue;
            }
            names.insert(name, p.name.referenced);
            if !leaf_names.contains(&p.leaf.value.as_str()) {
                self.err(
                    &p.leaf.referenced,
                    format!(
                        "pod {name} is under `{}`, which is no leaf of the segment",
                        p.leaf.value
                    ),
                    "unknown leaf",
                    Some(unknown_hint("leaf", &p.leaf.value, &leaf_names)),
                );
            }
            let address = self.ipv4(&p.address, "pod address");
            let mac = self.mac(&p.mac);
            if let Some(mac) = mac {
                if let Some(other) = macs.get(&mac) {
                    self.err(
                        &p.mac.referenced,
                        format!("pod {name} has the MAC of pod {other}"),
                        "duplicate MAC",
                        Some("every pod of a segment needs a MAC of its own".into()),
                    );
                } else {
                    macs.insert(mac, name);
                }
            }
            if let Some(address) = address {
                if let Some(other) = addresses.get(&address) {
                    self.err(
                        &p.address.referenced,
                        format!("pod {name} has the address of pod {other}"),
                        "duplicate address",
                        Some("every pod of a segment needs an address of its own".into()),
                    );
                } else {
                    addresses.insert(address, name);
                }
            }
            if self.problems.len() > before || !leaves.iter().any(|l| l.name == p.leaf.value) {
                continue;
            }
            if let (Some(address), Some(mac)) = (address, mac) {
                pods.push(EvpnPod {
                    name: name.to_string(),
                    leaf: p.leaf.value.clone(),
                    address,
                    mac,
                });
            }
        }
        pods
    }

    /// `- evpn_move: {pod, to}`: the controller's step, against the
    /// segment as earlier moves of the scenario left it.
    pub(super) fn evpn_move(
        &mut self,
        m: &RawEvpnMove,
        evpn: &mut Option<Evpn>,
    ) -> Vec<ObjectChange> {
        let Some(evpn) = evpn else {
            self.err(
                &m.pod.referenced,
                "the lab has no `evpn` segment for the pod to move in".into(),
                "no evpn",
                Some("add `evpn: {vni, leaves, pods}` to the topology".into()),
            );
            return Vec::new();
        };
        let Some(pod) = evpn.pod(&m.pod.value) else {
            let pods: Vec<&str> = evpn.pods.iter().map(|p| p.name.as_str()).collect();
            self.err(
                &m.pod.referenced,
                format!("unknown evpn pod `{}`", m.pod.value),
                "unknown pod",
                Some(unknown_hint("pod", &m.pod.value, &pods)),
            );
            return Vec::new();
        };
        if evpn.leaf(&m.to.value).is_none() {
            let leaves: Vec<&str> = evpn.leaves.iter().map(|l| l.name.as_str()).collect();
            self.err(
                &m.to.referenced,
                format!("unknown leaf `{}`", m.to.value),
                "unknown leaf",
                Some(unknown_hint("leaf", &m.to.value, &leaves)),
            );
            return Vec::new();
        }
        if pod.leaf == m.to.value {
            self.err(
                &m.to.referenced,
                format!("pod {} is under leaf {} already", pod.name, pod.leaf),
                "no move",
                Some("`to` is the leaf the pod is under after its move".into()),
            );
            return Vec::new();
        }
        let Some(step) = evpn.moved(&m.pod.value, &m.to.value) else {
            return Vec::new();
        };
        evpn.with_move(&m.pod.value, &m.to.value);
        step
    }
}
