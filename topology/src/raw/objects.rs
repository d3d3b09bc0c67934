//! The low-level layer of the language: kernel objects as `ip`, `bridge`
//! and `tc` name them, each placed `in` a namespace (a bare one from
//! `namespaces`, or a node, pod, client or the vpc). Usable on its own or
//! beside the vpc/nodes/pods keys.
//!
//! `links` is a list of externally tagged kinds (`- veth: {...}`): serde
//! keeps the YAML locations inside those, where an internally tagged enum
//! (`kind: veth`) would lose them. A new kind is one variant here, one in
//! `model::objects::LinkKind` and one arm in `resolve::objects`.
//!
//! Every kind has the common fields `name`, `in`, `mac`, `mtu`, `master`
//! (a bridge or a bond of the same namespace), `port` (bridge-port options,
//! with a bridge master), `state` and `arp`, written out in each struct: serde's
//! `flatten` would lose the locations and the unknown-field errors.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{CidrText, EntityName, IfName, Ipv4Text, MacText, RawLinkState, RouteDestination};

/// A bare network namespace.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Namespace")]
pub struct RawNamespace {
    /// Shares one name space with nodes, pods and clients; the kernel's
    /// namespace is `<lab>-<name>`.
    #[schemars(with = "EntityName")]
    pub name: Spanned<String>,
    /// What it stands for in reports (default `host`).
    #[serde(default)]
    pub role: Option<RawNsRole>,
    /// Ports it serves while the lab is up, like a pod's: `80` (tcp) or
    /// `{port: 53, protocol: udp}`.
    #[serde(default)]
    #[schemars(with = "Vec<super::RawPort>")]
    pub ports: Vec<Spanned<super::RawPort>>,
}

/// What a bare namespace stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "NamespaceRole")]
pub enum RawNsRole {
    /// A machine: a VM, a server, a container.
    Host,
    /// A box that only switches frames (a ToR, an OVS); a path folds it
    /// into one hop.
    Switch,
    /// A box that routes.
    Router,
}

/// A link, by kind: `- veth: {name: eth0, in: a, peer: {name: eth0, in: b}}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "Link")]
pub enum RawLink {
    /// A veth pair; the peer may live in any namespace.
    Veth(RawVeth),
    /// A learning bridge (multicast snooping off).
    Bridge(RawBridge),
    /// A VXLAN device, created in its underlay's namespace (whose socket
    /// sends the UDP) and living in `in`, as the kernel allows.
    Vxlan(RawVxlan),
    /// An 802.1Q sub-interface of a parent device of the same namespace.
    Vlan(RawVlan),
    /// A bond; its slaves name it as their `master`.
    Bond(RawBond),
    /// A dummy device: a place for addresses, up with no carrier problem.
    Dummy(RawDummy),
    /// A macvlan device off a parent (which may be in another namespace).
    Macvlan(RawMacvlan),
    /// An ipvlan device off a parent (which may be in another namespace).
    Ipvlan(RawIpvlan),
}

/// A VLAN of a VLAN-filtering bridge or of one of its ports (`bridge vlan
/// add vid ID [pvid] [untagged]`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BridgeVlan")]
pub struct RawBridgeVlan {
    /// 1 to 4094.
    #[schemars(with = "u16", range(min = 1, max = 4094))]
    pub id: Spanned<u16>,
    /// Untagged frames arriving here belong to this VLAN.
    #[serde(default)]
    pub pvid: bool,
    /// Frames of this VLAN leave here without a tag.
    #[serde(default)]
    pub untagged: bool,
}

/// Options of a bridge port (`ip link set DEV type bridge_slave ...`,
/// `bridge vlan add ... dev DEV`): only on a link whose master is a bridge.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BridgePort")]
pub struct RawBridgePort {
    /// Learn source MACs seen on this port (the kernel's default: on).
    #[serde(default)]
    pub learning: Option<bool>,
    /// Answer ARP for known neighbours instead of flooding it (default off).
    #[serde(default)]
    pub neigh_suppress: Option<bool>,
    /// Reach only non-isolated ports (default off).
    #[serde(default)]
    pub isolated: Option<bool>,
    /// Send a frame back out of this port when that is where it goes
    /// (default off; a CNI's `hairpinMode`).
    #[serde(default)]
    pub hairpin: Option<bool>,
    /// The port's VLANs, for a bridge with `vlan_filtering`.
    #[serde(default)]
    pub vlans: Vec<RawBridgeVlan>,
}

/// A veth pair.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Veth")]
pub struct RawVeth {
    #[schemars(with = "IfName")]
    pub name: Spanned<String>,
    /// The namespace this end lives in.
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<MacText>")]
    pub mac: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 68, max = 65535))]
    pub mtu: Option<Spanned<u32>>,
    /// A bridge or bond of the same namespace this end is a port of.
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub master: Option<Spanned<String>>,
    /// Bridge-port options, with a bridge `master`.
    #[serde(default)]
    #[schemars(with = "Option<RawBridgePort>")]
    pub port: Option<Spanned<RawBridgePort>>,
    #[serde(default)]
    pub state: Option<RawLinkState>,
    /// Resolve and answer ARP (default true; `false` is `arp off`, as
    /// Terway's `ipvl_N`).
    #[serde(default)]
    pub arp: Option<bool>,
    pub peer: RawVethPeer,
}

/// The other end of a veth pair.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "VethPeer")]
pub struct RawVethPeer {
    #[schemars(with = "IfName")]
    pub name: Spanned<String>,
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<MacText>")]
    pub mac: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 68, max = 65535))]
    pub mtu: Option<Spanned<u32>>,
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub master: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<RawBridgePort>")]
    pub port: Option<Spanned<RawBridgePort>>,
    #[serde(default)]
    pub state: Option<RawLinkState>,
}

/// A bridge.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Bridge")]
pub struct RawBridge {
    #[schemars(with = "IfName")]
    pub name: Spanned<String>,
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<MacText>")]
    pub mac: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 68, max = 65535))]
    pub mtu: Option<Spanned<u32>>,
    #[serde(default)]
    pub state: Option<RawLinkState>,
    /// Resolve and answer ARP (default true; `false` is `arp off`, as
    /// Terway's `ipvl_N`).
    #[serde(default)]
    pub arp: Option<bool>,
    /// Forward by VLAN (802.1Q): each port carries the VLANs its `port:
    /// {vlans: ...}` lists (`vlan_filtering 1`).
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub vlan_filtering: Option<Spanned<bool>>,
    /// The VLAN a new port gets as its untagged pvid (the kernel's default
    /// 1; 0 for none), with `vlan_filtering`.
    #[serde(default)]
    #[schemars(with = "Option<u16>", range(max = 4094))]
    pub vlan_default_pvid: Option<Spanned<u16>>,
    /// VLANs of the bridge device itself (`bridge vlan add dev BR vid N
    /// self`): what its own addresses send and receive.
    #[serde(default)]
    pub vlans: Vec<RawBridgeVlan>,
}

/// A VXLAN device (`ip link add NAME type vxlan id VNI ...`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Vxlan")]
pub struct RawVxlan {
    #[schemars(with = "IfName")]
    pub name: Spanned<String>,
    /// Where the device lives (its packets in and out).
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    /// Where its UDP socket lives: the namespace whose routes carry the
    /// outer packets. Default: `in`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub underlay: Option<Spanned<String>>,
    /// The VNI, 0 to 16777215; required unless `external`.
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(max = 16777215))]
    pub id: Option<Spanned<u32>>,
    /// A collect-metadata device (`external`, IFLA_VXLAN_COLLECT_METADATA):
    /// no VNI of its own, each packet's tunnel key (set by an eBPF program,
    /// as Cilium's `cilium_vxlan`) gives its VNI and remote, and received
    /// packets keep theirs. Default false.
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub external: Option<Spanned<bool>>,
    /// A device of the underlay namespace to send through (`dev`).
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub dev: Option<Spanned<String>>,
    /// The outer source address.
    #[serde(default)]
    #[schemars(with = "Option<Ipv4Text>")]
    pub local: Option<Spanned<String>>,
    /// The one remote VTEP (else FDB entries say where frames go).
    #[serde(default)]
    #[schemars(with = "Option<Ipv4Text>")]
    pub remote: Option<Spanned<String>>,
    /// UDP destination port (default 4789; Cilium and Flannel use 8472).
    #[serde(default)]
    #[schemars(with = "Option<u16>", range(min = 1))]
    pub dstport: Option<Spanned<u16>>,
    /// Learn remote MACs from what arrives (default true; `nolearning`).
    #[serde(default)]
    pub learning: Option<bool>,
    #[serde(default)]
    #[schemars(with = "Option<MacText>")]
    pub mac: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 68, max = 65535))]
    pub mtu: Option<Spanned<u32>>,
    /// A bridge of `in` this device is a port of.
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub master: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<RawBridgePort>")]
    pub port: Option<Spanned<RawBridgePort>>,
    #[serde(default)]
    pub state: Option<RawLinkState>,
    /// Resolve and answer ARP (default true; `false` is `arp off`, as
    /// Terway's `ipvl_N`).
    #[serde(default)]
    pub arp: Option<bool>,
}

/// An 802.1Q VLAN sub-interface (`ip link add link PARENT name NAME type
/// vlan id ID`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Vlan")]
pub struct RawVlan {
    #[schemars(with = "IfName")]
    pub name: Spanned<String>,
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    /// The device of the same namespace whose frames carry the tag.
    #[schemars(with = "IfName")]
    pub parent: Spanned<String>,
    /// The VLAN id, 1 to 4094.
    #[schemars(with = "u16", range(min = 1, max = 4094))]
    pub id: Spanned<u16>,
    #[serde(default)]
    #[schemars(with = "Option<MacText>")]
    pub mac: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 68, max = 65535))]
    pub mtu: Option<Spanned<u32>>,
    /// A bridge or bond of the same namespace this link is a port of.
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub master: Option<Spanned<String>>,
    /// Bridge-port options, with a bridge `master`.
    #[serde(default)]
    #[schemars(with = "Option<RawBridgePort>")]
    pub port: Option<Spanned<RawBridgePort>>,
    #[serde(default)]
    pub state: Option<RawLinkState>,
    /// Resolve and answer ARP (default true; `false` is `arp off`, as
    /// Terway's `ipvl_N`).
    #[serde(default)]
    pub arp: Option<bool>,
}
/// How a bond spreads and fails over (`mode`, as iproute2 names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[schemars(rename = "BondMode")]
pub enum RawBondMode {
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

/// A bond (`ip link add NAME type bond mode MODE [miimon MS]`); links join
/// it with `master: NAME`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Bond")]
pub struct RawBond {
    #[schemars(with = "IfName")]
    pub name: Spanned<String>,
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    /// Default `balance-rr`, the kernel's.
    #[serde(default)]
    pub mode: Option<RawBondMode>,
    /// Link monitoring interval in milliseconds (0 or absent: none).
    #[serde(default)]
    pub miimon: Option<u32>,
    #[serde(default)]
    #[schemars(with = "Option<MacText>")]
    pub mac: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 68, max = 65535))]
    pub mtu: Option<Spanned<u32>>,
    /// A bridge or bond of the same namespace this link is a port of.
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub master: Option<Spanned<String>>,
    /// Bridge-port options, with a bridge `master`.
    #[serde(default)]
    #[schemars(with = "Option<RawBridgePort>")]
    pub port: Option<Spanned<RawBridgePort>>,
    #[serde(default)]
    pub state: Option<RawLinkState>,
    /// Resolve and answer ARP (default true; `false` is `arp off`, as
    /// Terway's `ipvl_N`).
    #[serde(default)]
    pub arp: Option<bool>,
}
/// A dummy device (`ip link add NAME type dummy`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Dummy")]
pub struct RawDummy {
    #[schemars(with = "IfName")]
    pub name: Spanned<String>,
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<MacText>")]
    pub mac: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 68, max = 65535))]
    pub mtu: Option<Spanned<u32>>,
    /// A bridge or bond of the same namespace this link is a port of.
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub master: Option<Spanned<String>>,
    /// Bridge-port options, with a bridge `master`.
    #[serde(default)]
    #[schemars(with = "Option<RawBridgePort>")]
    pub port: Option<Spanned<RawBridgePort>>,
    #[serde(default)]
    pub state: Option<RawLinkState>,
    /// Resolve and answer ARP (default true; `false` is `arp off`, as
    /// Terway's `ipvl_N`).
    #[serde(default)]
    pub arp: Option<bool>,
}
/// A macvlan's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "MacvlanMode")]
pub enum RawMacvlanMode {
    /// Siblings reach each other inside the parent.
    Bridge,
    /// Siblings never reach each other.
    Private,
    /// Everything goes out of the parent, siblings via the switch.
    Vepa,
    /// The one macvlan takes over the parent.
    Passthru,
}

/// A macvlan device (`ip link add link PARENT name NAME type macvlan mode
/// MODE`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Macvlan")]
pub struct RawMacvlan {
    #[schemars(with = "IfName")]
    pub name: Spanned<String>,
    /// Where it lives.
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    /// Its parent device, in `parent_in`.
    #[schemars(with = "IfName")]
    pub parent: Spanned<String>,
    /// The parent's namespace, where the device is made before it is moved
    /// to `in`. Default: `in`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub parent_in: Option<Spanned<String>>,
    /// Default `bridge`.
    #[serde(default)]
    pub mode: Option<RawMacvlanMode>,
    #[serde(default)]
    #[schemars(with = "Option<MacText>")]
    pub mac: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 68, max = 65535))]
    pub mtu: Option<Spanned<u32>>,
    /// A bridge or bond of the same namespace this link is a port of.
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub master: Option<Spanned<String>>,
    /// Bridge-port options, with a bridge `master`.
    #[serde(default)]
    #[schemars(with = "Option<RawBridgePort>")]
    pub port: Option<Spanned<RawBridgePort>>,
    #[serde(default)]
    pub state: Option<RawLinkState>,
    /// Resolve and answer ARP (default true; `false` is `arp off`, as
    /// Terway's `ipvl_N`).
    #[serde(default)]
    pub arp: Option<bool>,
}
/// An ipvlan's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "IpvlanMode")]
pub enum RawIpvlanMode {
    /// Switches by IP address, frames keep the parent's MAC.
    L2,
    /// Routes in the parent's namespace: no broadcast, no ARP.
    L3,
}

/// An ipvlan device (`ip link add link PARENT name NAME type ipvlan mode
/// MODE`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Ipvlan")]
pub struct RawIpvlan {
    #[schemars(with = "IfName")]
    pub name: Spanned<String>,
    /// Where it lives.
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    /// Its parent device, in `parent_in`.
    #[schemars(with = "IfName")]
    pub parent: Spanned<String>,
    /// The parent's namespace, where the device is made before it is moved
    /// to `in` (Terway's pods). Default: `in`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub parent_in: Option<Spanned<String>>,
    /// Default `l2`.
    #[serde(default)]
    pub mode: Option<RawIpvlanMode>,
    #[serde(default)]
    #[schemars(with = "Option<MacText>")]
    pub mac: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 68, max = 65535))]
    pub mtu: Option<Spanned<u32>>,
    /// A bridge or bond of the same namespace this link is a port of.
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub master: Option<Spanned<String>>,
    /// Bridge-port options, with a bridge `master`.
    #[serde(default)]
    #[schemars(with = "Option<RawBridgePort>")]
    pub port: Option<Spanned<RawBridgePort>>,
    #[serde(default)]
    pub state: Option<RawLinkState>,
    /// Resolve and answer ARP (default true; `false` is `arp off`, as
    /// Terway's `ipvl_N`).
    #[serde(default)]
    pub arp: Option<bool>,
}

/// `ip addr add ADDRESS dev DEV` in a namespace. The same address may be in
/// two namespaces.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Address")]
pub struct RawAddress {
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    #[schemars(with = "IfName")]
    pub dev: Spanned<String>,
    /// With its prefix length, e.g. 10.132.2.46/23.
    #[schemars(with = "CidrText")]
    pub address: Spanned<String>,
    /// `host`: never chosen as the source towards other hosts, yet frames
    /// for it are taken in through `dev` (default `global`).
    #[serde(default)]
    pub scope: Option<RawAddressScope>,
}

/// An address's scope, as `ip addr add ... scope S` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "AddressScope")]
pub enum RawAddressScope {
    Global,
    Host,
}

/// `ip route add TO [via VIA] [dev DEV] [onlink] [table N] [metric N]
/// [scope S]` in a namespace, or with several `nexthops` (ECMP): `ip route
/// add TO nexthop via A dev D weight W nexthop ...`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "NamespaceRoute")]
pub struct RawNsRoute {
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    /// A CIDR or `default`.
    #[schemars(with = "RouteDestination")]
    pub to: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<Ipv4Text>")]
    pub via: Option<Spanned<String>>,
    /// The output device; may be left out when `via` is given (the kernel
    /// finds it from the gateway), or with `nexthops`.
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub dev: Option<Spanned<String>>,
    /// The route's priority, lower wins (`metric`).
    #[serde(default)]
    pub metric: Option<u32>,
    /// A routing table by number (default the main table, 254).
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub table: Option<Spanned<u32>>,
    /// Default: `link` without a gateway, `global` with one.
    #[serde(default)]
    pub scope: Option<RawRouteScope>,
    /// The gateway is on the link even though no address says so.
    #[serde(default)]
    pub onlink: bool,
    /// Several next hops, chosen by flow hash (ECMP, RTA_MULTIPATH),
    /// instead of `via`/`dev`.
    #[serde(default)]
    pub nexthops: Vec<RawNextHop>,
}

/// A route's scope, as `ip route ... scope S` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "RouteScope")]
pub enum RawRouteScope {
    Global,
    Link,
    Host,
}

/// One next hop of an ECMP route.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "NextHop")]
pub struct RawNextHop {
    #[serde(default)]
    #[schemars(with = "Option<Ipv4Text>")]
    pub via: Option<Spanned<String>>,
    #[schemars(with = "IfName")]
    pub dev: Spanned<String>,
    /// 1 to 256 (default 1): its share of the flows.
    #[serde(default)]
    #[schemars(with = "Option<u16>", range(min = 1, max = 256))]
    pub weight: Option<Spanned<u16>>,
    #[serde(default)]
    pub onlink: bool,
}

/// A sysctl of one namespace (`ip netns exec NS sysctl -w KEY=VALUE`):
/// only keys the kernel keeps per network namespace.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "NamespaceSysctl")]
pub struct RawNsSysctl {
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    /// A dotted name (`net.ipv4.conf.br-int.arp_ignore`), or with slashes
    /// when an interface name has dots (`net/ipv4/conf/bond0.100/rp_filter`).
    #[schemars(with = "String")]
    pub key: Spanned<String>,
    #[schemars(with = "super::SysctlValue")]
    pub value: Spanned<super::SysctlValue>,
}

/// The state of a neighbour entry, as `ip neigh` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "NeighbourState")]
pub enum RawNeighState {
    /// Never expires, never re-resolved.
    Permanent,
    /// Valid without ARP.
    Noarp,
    /// Valid until it ages like a learned entry.
    Reachable,
}

/// `ip neigh replace ADDRESS lladdr MAC dev DEV nud STATE`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Neighbour")]
pub struct RawNeighbour {
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    #[schemars(with = "IfName")]
    pub dev: Spanned<String>,
    #[schemars(with = "Ipv4Text")]
    pub address: Spanned<String>,
    /// A MAC, or `self`: the device's own, whatever the kernel gave it.
    #[schemars(with = "String")]
    pub lladdr: Spanned<String>,
    /// Default `permanent`.
    #[serde(default)]
    pub state: Option<RawNeighState>,
}

/// `bridge fdb add MAC dev DEV [dst VTEP] master|self`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Fdb")]
pub struct RawFdb {
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    /// A bridge port (the entry goes in its bridge's table, `master`) or a
    /// vxlan device (its own table, `self`).
    #[schemars(with = "IfName")]
    pub dev: Spanned<String>,
    #[schemars(with = "MacText")]
    pub lladdr: Spanned<String>,
    /// For a vxlan device: the remote VTEP frames for this MAC go to.
    #[serde(default)]
    #[schemars(with = "Option<Ipv4Text>")]
    pub dst: Option<Spanned<String>>,
}

/// Where a tc filter hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "TcHook")]
pub enum RawTcHook {
    /// What the device receives, before the stack sees it.
    Ingress,
    /// What the device sends.
    Egress,
}

/// A tc filter on `dev`'s hook, one of: a match-all filter (`u32 match u32
/// 0 0`, which every kernel has) with a mirred action, every packet
/// redirected to, or a copy sent out of, another device of the namespace;
/// or one of labctl's eBPF programs in direct-action mode (`bpf`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Tc")]
pub struct RawTc {
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    #[schemars(with = "IfName")]
    pub dev: Spanned<String>,
    pub hook: RawTcHook,
    /// `mirred egress redirect dev TO`: the packet leaves by TO instead.
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub redirect: Option<Spanned<String>>,
    /// `mirred egress mirror dev TO`: a copy leaves by TO, the packet goes on.
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub mirror: Option<Spanned<String>>,
    /// `bpf direct-action` with one of labctl's programs, loaded once per
    /// namespace with maps of its own (`bpf_maps`):
    /// `route_from_container` (a pod's host-side device, ingress) or
    /// `route_from_overlay` (a collect-metadata vxlan device, ingress):
    /// Cilium's VXLAN data path.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub bpf: Option<Spanned<String>>,
}

/// What the eBPF router's maps of one namespace hold (`bpf_maps`), as a
/// Cilium agent fills its node's: like `cilium bpf endpoint list` and
/// `cilium bpf tunnel list`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BpfMaps")]
pub struct RawBpfMaps {
    /// The namespace (a node) whose programs use these maps.
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    /// The namespace's `external` vxlan device, which `route_from_container`
    /// sends cross-node packets out of; without it nothing is encapsulated.
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub tunnel_dev: Option<Spanned<String>>,
    /// Local endpoints: pods whose host-side device is in this namespace.
    #[serde(default)]
    pub endpoints: Vec<RawBpfEndpoint>,
    /// Other nodes' pod CIDRs and the underlay address each is tunnelled to.
    #[serde(default)]
    pub tunnels: Vec<RawBpfTunnel>,
    /// How a packet for a local endpoint is delivered (default `egress`):
    /// `egress`, `bpf_redirect` out of its `lxc` device (whose tap sees it
    /// leave) into the pod; `peer`, `bpf_redirect_peer` straight into the
    /// pod's `eth0` (the `lxc` device sees nothing).
    #[serde(default)]
    pub redirect: Option<RawBpfRedirect>,
}

/// The eBPF router's local delivery (`bpf_maps` `redirect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "BpfRedirect")]
pub enum RawBpfRedirect {
    /// `bpf_redirect(lxc, 0)`: out of the endpoint's `lxc` device.
    Egress,
    /// `bpf_redirect_peer(lxc, 0)`: into the ingress of its peer, the
    /// pod's `eth0`.
    Peer,
}

/// A local endpoint of the router's endpoint map.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BpfEndpoint")]
pub struct RawBpfEndpoint {
    /// The pod's address.
    #[schemars(with = "Ipv4Text")]
    pub address: Spanned<String>,
    /// The pod's host-side veth end (`lxc...`) in this namespace; both ends
    /// need a `mac`: the map holds them, and delivered frames carry them.
    #[schemars(with = "IfName")]
    pub dev: Spanned<String>,
    /// The pod's security identity, 1 to 16777215: the VNI of what it sends
    /// to other nodes.
    #[schemars(with = "u32", range(min = 1, max = 16777215))]
    pub identity: Spanned<u32>,
}

/// A remote node CIDR of the router's tunnel map.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BpfTunnel")]
pub struct RawBpfTunnel {
    /// The node's pod CIDR, e.g. 10.244.6.0/24.
    #[schemars(with = "CidrText")]
    pub prefix: Spanned<String>,
    /// The node's underlay address, the outer destination.
    #[schemars(with = "Ipv4Text")]
    pub remote: Spanned<String>,
}
