//! The low-level layer, resolved: kernel objects by namespace (entity name,
//! not the kernel's `<lab>-<name>`), names checked and references found.
//! The planner turns each into its kernel actions.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

/// Every low-level object of a lab, in file order per kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Objects {
    pub namespaces: Vec<Namespace>,
    pub links: Vec<Link>,
    pub addresses: Vec<Address>,
    pub routes: Vec<NsRoute>,
    pub neighbours: Vec<Neighbour>,
    pub fdb: Vec<Fdb>,
    pub tc: Vec<Tc>,
}

impl Objects {
    pub fn is_empty(&self) -> bool {
        *self == Objects::default()
    }

    /// The interfaces the layer puts in `netns`, in creation order: links
    /// living there and veth peers placed there.
    pub fn interfaces_in<'a>(&'a self, netns: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.links.iter().flat_map(move |l| {
            let own = (l.netns == netns).then_some(l.name.as_str());
            let peer = match &l.kind {
                LinkKind::Veth { peer } if peer.netns == netns => Some(peer.name.as_str()),
                _ => None,
            };
            own.into_iter().chain(peer)
        })
    }

    /// The UDP ports of the lab's VXLAN devices, each once.
    pub fn vxlan_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .links
            .iter()
            .filter_map(|l| match &l.kind {
                LinkKind::Vxlan(v) => Some(v.port),
                _ => None,
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// A bare namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Namespace {
    pub name: String,
    pub role: NsRole,
}

/// What a bare namespace stands for in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NsRole {
    Host,
    Switch,
    Router,
}

/// A link and where it lives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    pub netns: String,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// A bridge of the same namespace.
    pub master: Option<String>,
    pub kind: LinkKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    Veth { peer: VethPeer },
    Bridge,
    Vxlan(Vxlan),
}

/// The far end of a veth pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VethPeer {
    pub netns: String,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub master: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vxlan {
    /// The namespace of its UDP socket (`in` when not given).
    pub underlay: String,
    pub id: u32,
    /// A device of the underlay namespace.
    pub dev: Option<String>,
    pub local: Option<Ipv4Addr>,
    pub remote: Option<Ipv4Addr>,
    pub port: u16,
    pub learning: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Address {
    pub netns: String,
    pub dev: String,
    pub address: Ipv4Net,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NsRoute {
    pub netns: String,
    pub destination: Ipv4Net,
    pub via: Option<Ipv4Addr>,
    pub dev: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NeighState {
    Permanent,
    Noarp,
    Reachable,
}

impl NeighState {
    /// As `ip neigh ... nud STATE` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            NeighState::Permanent => "permanent",
            NeighState::Noarp => "noarp",
            NeighState::Reachable => "reachable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Neighbour {
    pub netns: String,
    pub dev: String,
    pub address: Ipv4Addr,
    pub lladdr: [u8; 6],
    pub state: NeighState,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fdb {
    pub netns: String,
    pub dev: String,
    pub lladdr: [u8; 6],
    pub dst: Option<Ipv4Addr>,
    /// In the bridge's table (`master`), else the device's own (`self`).
    pub master: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcHook {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tc {
    pub netns: String,
    pub dev: String,
    pub hook: TcHook,
    /// Mirror (a copy) rather than redirect (the packet itself).
    pub mirror: bool,
    pub to: String,
}
