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
    pub sysctls: Vec<NsSysctl>,
    /// The eBPF router's maps, one entry per namespace.
    pub bpf_maps: Vec<BpfMaps>,
    /// The EVPN segment whose entries `fdb` and `neighbours` end with, kept
    /// for the scenarios' `evpn_move`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evpn: Option<super::Evpn>,
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

    /// [`Objects::interfaces_in`] for every namespace at once, in one pass
    /// (each in creation order).
    pub fn interfaces_by_namespace(&self) -> std::collections::HashMap<&str, Vec<&str>> {
        let mut out: std::collections::HashMap<&str, Vec<&str>> = Default::default();
        for l in &self.links {
            out.entry(l.netns.as_str())
                .or_default()
                .push(l.name.as_str());
            if let LinkKind::Veth { peer } = &l.kind {
                out.entry(peer.netns.as_str())
                    .or_default()
                    .push(peer.name.as_str());
            }
        }
        out
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
    /// What the built-in server answers on in it, like a pod's ports.
    pub ports: Vec<super::Port>,
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
    /// A bridge or a bond of the same namespace.
    pub master: Option<String>,
    /// Bridge-port options (only with a bridge master).
    pub port: Option<PortOptions>,
    /// Left up (`state: up`, the default).
    pub up: bool,
    /// Answers and sends ARP (the default); `false` is `ip link set DEV
    /// arp off`, as Terway's `ipvl_N`.
    #[serde(skip_serializing_if = "is_true")]
    pub arp: bool,
    pub kind: LinkKind,
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Link {
    /// Made in another namespace than the one it lives in, and moved (a
    /// vxlan's underlay, a macvlan's or ipvlan's parent).
    pub fn made_in(&self) -> &str {
        match &self.kind {
            LinkKind::Vxlan(x) => &x.underlay,
            LinkKind::Macvlan(m) => &m.parent_netns,
            LinkKind::Ipvlan(i) => &i.parent_netns,
            _ => &self.netns,
        }
    }
}

/// A link's kind and what only that kind has. One variant per kind (the
/// registry of kinds is `raw::RawLink`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    Veth { peer: VethPeer },
    Bridge(BridgeOptions),
    Vxlan(Vxlan),
    Vlan(Vlan),
    Bond(Bond),
    Dummy,
    Macvlan(Macvlan),
    Ipvlan(Ipvlan),
}

impl LinkKind {
    /// The kind as `ip link add ... type KIND` names it.
    pub fn as_str(&self) -> &'static str {
        match self {
            LinkKind::Veth { .. } => "veth",
            LinkKind::Bridge(_) => "bridge",
            LinkKind::Vxlan(_) => "vxlan",
            LinkKind::Vlan(_) => "vlan",
            LinkKind::Bond(_) => "bond",
            LinkKind::Dummy => "dummy",
            LinkKind::Macvlan(_) => "macvlan",
            LinkKind::Ipvlan(_) => "ipvlan",
        }
    }
}

/// The far end of a veth pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VethPeer {
    pub netns: String,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub master: Option<String>,
    pub port: Option<PortOptions>,
    pub up: bool,
}

/// What a bridge is made with.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BridgeOptions {
    pub vlan_filtering: bool,
    /// The pvid a new port gets (`None`: the kernel's 1; 0: none).
    pub vlan_default_pvid: Option<u16>,
    /// VLANs of the bridge device itself (`self`).
    pub vlans: Vec<BridgeVlan>,
}

/// One VLAN of a bridge or port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct BridgeVlan {
    pub id: u16,
    pub pvid: bool,
    pub untagged: bool,
}

/// A bridge port's options; `None` leaves the kernel's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PortOptions {
    pub learning: Option<bool>,
    pub neigh_suppress: Option<bool>,
    pub isolated: Option<bool>,
    /// Send a frame back out of the port it came in on (the kernel's
    /// default: off), as a CNI's `hairpinMode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hairpin: Option<bool>,
    pub vlans: Vec<BridgeVlan>,
}

impl PortOptions {
    /// Any flag to set (`ip link set DEV type bridge_slave ...`).
    pub fn has_flags(&self) -> bool {
        self.learning.is_some()
            || self.neigh_suppress.is_some()
            || self.isolated.is_some()
            || self.hairpin.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vlan {
    /// A device of the same namespace.
    pub parent: String,
    pub id: u16,
}

/// A bond's mode, as iproute2 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum BondMode {
    #[serde(rename = "balance-rr")]
    BalanceRr,
    #[serde(rename = "active-backup")]
    ActiveBackup,
    #[serde(rename = "balance-xor")]
    BalanceXor,
    #[serde(rename = "broadcast")]
    Broadcast,
    #[serde(rename = "802.3ad")]
    Lacp,
    #[serde(rename = "balance-tlb")]
    BalanceTlb,
    #[serde(rename = "balance-alb")]
    BalanceAlb,
}

impl BondMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BondMode::BalanceRr => "balance-rr",
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceXor => "balance-xor",
            BondMode::Broadcast => "broadcast",
            BondMode::Lacp => "802.3ad",
            BondMode::BalanceTlb => "balance-tlb",
            BondMode::BalanceAlb => "balance-alb",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bond {
    pub mode: BondMode,
    pub miimon: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    Bridge,
    Private,
    Vepa,
    Passthru,
}

impl MacvlanMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Passthru => "passthru",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Macvlan {
    /// The parent's namespace, where the device is made.
    pub parent_netns: String,
    pub parent: String,
    pub mode: MacvlanMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpvlanMode {
    L2,
    L3,
}

impl IpvlanMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IpvlanMode::L2 => "l2",
            IpvlanMode::L3 => "l3",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ipvlan {
    /// The parent's namespace, where the device is made.
    pub parent_netns: String,
    pub parent: String,
    pub mode: IpvlanMode,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vxlan {
    /// The namespace of its UDP socket (`in` when not given).
    pub underlay: String,
    /// The VNI (0 for an external device, which has none).
    pub id: u32,
    /// Collect metadata: VNI and remote per packet, from its tunnel key.
    pub external: bool,
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
    /// `scope host`: never chosen as a source towards others, yet a frame
    /// for it is taken in through the device (a node's own address on its
    /// ipvlan slave, as Terway's `ipvl_N`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub scope_host: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NsRoute {
    pub netns: String,
    pub destination: Ipv4Net,
    pub via: Option<Ipv4Addr>,
    /// The output device; `None` when the kernel finds it from `via`, or
    /// with `nexthops`.
    pub dev: Option<String>,
    pub metric: Option<u32>,
    /// `None`: the main table.
    pub table: Option<u32>,
    /// `None`: the kernel's default for the route.
    pub scope: Option<RouteScope>,
    pub onlink: bool,
    /// ECMP next hops (then `via` and `dev` are `None`).
    pub nexthops: Vec<NextHop>,
}

impl NsRoute {
    /// A plain `ip route add TO [via VIA] dev DEV`: no option of the ones
    /// the layer added later.
    pub fn is_plain(&self) -> bool {
        self.dev.is_some()
            && self.metric.is_none()
            && self.table.is_none()
            && self.scope.is_none()
            && !self.onlink
            && self.nexthops.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteScope {
    Global,
    Link,
    Host,
}

impl RouteScope {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteScope::Global => "global",
            RouteScope::Link => "link",
            RouteScope::Host => "host",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NextHop {
    pub via: Option<Ipv4Addr>,
    pub dev: String,
    /// As `ip route` writes it, 1 to 256 (the kernel keeps weight - 1).
    pub weight: u16,
    pub onlink: bool,
}

/// A sysctl of one namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NsSysctl {
    pub netns: String,
    pub key: String,
    pub value: String,
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
    /// `None`: the device's own MAC (`lladdr: self`), which the kernel
    /// chooses when it makes the device: a pod's entry for the node it
    /// reaches through its own ipvlan (the frame switched inside the
    /// parent, as Terway's pods).
    pub lladdr: Option<[u8; 6]>,
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

impl TcHook {
    /// As tc names it: `ingress`, `egress`.
    pub fn as_str(self) -> &'static str {
        match self {
            TcHook::Ingress => "ingress",
            TcHook::Egress => "egress",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tc {
    pub netns: String,
    pub dev: String,
    pub hook: TcHook,
    pub action: TcAction,
}

/// What a tc filter does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TcAction {
    /// Match-all with mirred: mirror (a copy) or redirect (the packet
    /// itself) out of `to`.
    Mirred { mirror: bool, to: String },
    /// One of labctl's eBPF programs, direct action: the overlay router's
    /// ([`TC_BPF_PROGRAMS`], which a user may name), or the load
    /// balancer's ([`LB_PROGRAMS`], which only the `ebpf` key lowers to).
    Bpf { program: String },
}

/// The eBPF programs a `tc` entry may name: the overlay router's (the
/// `labctl-lb` crate's `RouteProgram`s; a labctl test keeps both lists
/// equal).
pub const TC_BPF_PROGRAMS: [&str; 2] = ["route_from_container", "route_from_overlay"];

/// The eBPF load balancer's programs (the `labctl-lb` crate's `Program`s,
/// kept equal by a labctl test), with the hook each runs on: what the
/// `ebpf` key puts on every pod's interface ([`Lab::lowered`]).
pub const LB_PROGRAMS: [(&str, TcHook); 2] = [
    ("lb_egress", TcHook::Egress),
    ("lb_ingress", TcHook::Ingress),
];

/// The eBPF router's maps of one namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BpfMaps {
    pub netns: String,
    /// The external vxlan device cross-node packets are sent out of.
    pub tunnel_dev: Option<String>,
    pub endpoints: Vec<BpfEndpoint>,
    pub tunnels: Vec<BpfTunnel>,
    /// How local endpoints are delivered to.
    pub redirect: BpfRedirect,
}

/// The eBPF router's local delivery: Cilium's `bpf_redirect` to the
/// endpoint's `lxc` device (`egress`, the default) or `bpf_redirect_peer`
/// into the pod's `eth0` (`peer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BpfRedirect {
    #[default]
    Egress,
    Peer,
}

/// A local endpoint: a pod behind a veth end of the namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BpfEndpoint {
    pub address: Ipv4Addr,
    /// The pod's host-side veth end.
    pub dev: String,
    /// That end's MAC.
    pub lxc_mac: [u8; 6],
    /// The pod's end's MAC.
    pub pod_mac: [u8; 6],
    /// The security identity, the VNI of what the pod sends across nodes.
    pub identity: u32,
}

/// A remote node CIDR and the underlay address it is tunnelled to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BpfTunnel {
    pub prefix: Ipv4Net,
    pub remote: Ipv4Addr,
}

/// Which table an FDB entry goes in, the one rule for the lab's entries and
/// a scenario's changes: a bridge port's entry is its bridge's (`master`);
/// a vxlan device's is its own (`self`, with the remote VTEP), unless the
/// vxlan is a bridge port and the entry names no VTEP (then it says which
/// port the MAC is behind, in the bridge's table).
pub fn fdb_in_bridge(vxlan: bool, bridge_port: bool, has_dst: bool) -> bool {
    !vxlan || bridge_port && !has_dst
}
