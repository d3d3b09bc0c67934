//! The low-level layer of the language: kernel objects as `ip`, `bridge`
//! and `tc` name them, each placed `in` a namespace (a bare one from
//! `namespaces`, or a node, pod, client or the vpc). Usable on its own or
//! beside the vpc/nodes/pods keys.
//!
//! `links` is a list of externally tagged kinds (`- veth: {...}`): serde
//! keeps the YAML locations inside those, where an internally tagged enum
//! (`kind: veth`) would lose them. A new kind is one variant here, one in
//! `model::objects::LinkKind` and one arm in `resolve::objects`.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{CidrText, EntityName, IfName, Ipv4Text, MacText, RouteDestination};

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
    /// A bridge of the same namespace this end is a port of.
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub master: Option<Spanned<String>>,
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
    /// The VNI, 0 to 16777215.
    #[schemars(with = "u32", range(max = 16777215))]
    pub id: Spanned<u32>,
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
}

/// `ip route add TO [via VIA] dev DEV` in a namespace.
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
    #[schemars(with = "IfName")]
    pub dev: Spanned<String>,
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
    #[schemars(with = "MacText")]
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

/// A match-all tc filter (`u32 match u32 0 0`, which every kernel has) with
/// a mirred action: every packet of `dev`'s hook is redirected to, or a
/// copy sent out of, another device of the namespace.
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
}
