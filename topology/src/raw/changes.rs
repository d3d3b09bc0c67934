//! A scenario's `changes`: a list of kernel operations in force during the
//! scenario only, made before its traffic and undone after it, in the file's
//! order. Each is externally tagged (`- link: {name: ..., mac: ...}`,
//! `- neighbour: {in: ..., ...}`): serde keeps the YAML locations inside
//! those and rejects an unknown kind with the list of valid ones, where an
//! internally tagged enum (`kind: link`) would lose the locations.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{
    IfName, Ipv4Text, MacText, RawLinkState, RawNeighState, RawNetem, RawTcHook, RawTrafficPolicy,
    RouteDestination, Scalar, SysctlValue,
};

/// One change, by kind.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "Change")]
pub enum RawChange {
    /// A service's endpoints or traffic policy (as the article edits a
    /// service between two captures).
    Service(RawServiceChange),
    /// A link's queue (netem), state, MTU or MAC.
    Link(Box<RawLinkChange>),
    /// A route deleted (one the lab makes) or added for the scenario.
    Route(RawRouteChange),
    /// A neighbour (ARP) entry added or replaced, or deleted.
    Neighbour(RawNeighbourChange),
    /// A forwarding database entry added, or deleted.
    Fdb(RawFdbChange),
    /// A per-namespace sysctl set for the scenario.
    Sysctl(RawSysctlChange),
    /// A match-all mirred filter added on a hook, or the hook's filters
    /// deleted.
    Tc(RawTcChange),
    /// A pod moved to another node, keeping its MAC and address.
    Move(RawMoveChange),
    /// The EVPN controller's step after a pod moved under another leaf:
    /// the entries each leaf loses, gains or has updated.
    #[serde(rename = "evpn_move")]
    EvpnMove(RawEvpnMove),
}

/// `- service: {name: nginx1, remove_endpoints: [nginx1-s6z79]}`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ServiceChange")]
pub struct RawServiceChange {
    /// The service, by name.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<RawTrafficPolicy>")]
    pub external_traffic_policy: Option<Spanned<RawTrafficPolicy>>,
    /// Endpoints taken out of the service (pods by name).
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub remove_endpoints: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `- link: {name: ENTITY/IFNAME, netem: {delay: 50ms}}`. On a veth pair
/// netem and MTU apply to both ends, so both directions are impaired (a
/// 50 ms delay adds 100 ms to a round trip through it); an interface
/// without a peer (ipvlan, a bridge) is changed alone.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "LinkChange")]
pub struct RawLinkChange {
    /// `ENTITY/IFNAME` (as `labctl plan FILE` names interfaces) or
    /// `POD/host` (a pod's veth on its node).
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Queue the link's packets through netem (`tc qdisc replace ... root
    /// netem`).
    #[serde(default)]
    #[schemars(with = "Option<RawNetem>")]
    pub netem: Option<Spanned<RawNetem>>,
    /// `down`: `ip link set IF down` for the scenario.
    #[serde(default)]
    #[schemars(with = "Option<RawLinkState>")]
    pub state: Option<Spanned<RawLinkState>>,
    /// `ip link set IF mtu N` for the scenario (68 to 65535).
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 68, max = 65535))]
    pub mtu: Option<Spanned<Scalar>>,
    /// `ip link set IF address MAC` for the scenario, on the named
    /// interface only (a veth's peer keeps its own).
    #[serde(default)]
    #[schemars(with = "Option<MacText>")]
    pub mac: Option<Spanned<String>>,
}

/// `- route: {in: vpc, to: 172.16.0.0/24, delete: true}` takes away a route
/// the lab makes; `- route: {in: n1, to: 10.9.0.0/16, via: 10.0.0.1, dev:
/// eth0}` adds one.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RouteChange")]
pub struct RawRouteChange {
    /// The namespace (entity) whose route it is.
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    /// A CIDR or `default`.
    #[schemars(with = "RouteDestination")]
    pub to: Spanned<String>,
    /// For a new route: the gateway.
    #[serde(default)]
    #[schemars(with = "Option<Ipv4Text>")]
    pub via: Option<Spanned<String>>,
    /// For a new route: the device it leaves by.
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub dev: Option<Spanned<String>>,
    /// `true`: delete the lab's route for the scenario.
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub delete: Option<Spanned<bool>>,
}

/// `- neighbour: {in: NS, dev: DEV, address: IP, lladdr: MAC}` adds (or
/// replaces) an entry for the scenario and puts back what was there;
/// `delete: true` without `lladdr` takes the entry away.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "NeighbourChange")]
pub struct RawNeighbourChange {
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    #[schemars(with = "IfName")]
    pub dev: Spanned<String>,
    #[schemars(with = "Ipv4Text")]
    pub address: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<MacText>")]
    pub lladdr: Option<Spanned<String>>,
    /// Default `permanent`.
    #[serde(default)]
    pub state: Option<RawNeighState>,
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub delete: Option<Spanned<bool>>,
}

/// `- fdb: {in: NS, dev: DEV, lladdr: MAC [, dst: VTEP]}` adds a static
/// entry for the scenario; `delete: true` takes one away.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "FdbChange")]
pub struct RawFdbChange {
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    /// A bridge port (the bridge's table) or a vxlan device (its own).
    #[schemars(with = "IfName")]
    pub dev: Spanned<String>,
    #[schemars(with = "MacText")]
    pub lladdr: Spanned<String>,
    /// For a vxlan device: the remote VTEP.
    #[serde(default)]
    #[schemars(with = "Option<Ipv4Text>")]
    pub dst: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub delete: Option<Spanned<bool>>,
}

/// `- sysctl: {in: NS, key: net.ipv4.conf.all.arp_ignore, value: 1}`: only
/// keys the kernel keeps per network namespace.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SysctlChange")]
pub struct RawSysctlChange {
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    #[schemars(with = "String")]
    pub key: Spanned<String>,
    #[schemars(with = "String")]
    pub value: Spanned<SysctlValue>,
}

/// `- move: {pod: NAME, to: NODE}`: the pod's link leaves its node for
/// another one's bridge, the pod keeping its MAC, address and routes (a
/// container restarted elsewhere with a fixed IP). Whether the network
/// still reaches it there is the kernel's to say.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MoveChange")]
pub struct RawMoveChange {
    #[schemars(with = "String")]
    pub pod: Spanned<String>,
    /// The node it moves to.
    #[schemars(with = "String")]
    pub to: Spanned<String>,
}

/// `- evpn_move: {pod: NAME, to: LEAF}`: what the controller programs once
/// an `evpn` pod is under another leaf (same address and MAC). The new
/// leaf deletes the pod's remote entries (it learns the pod as local), the
/// old leaf adds them with the new leaf as VTEP, and every other leaf has
/// its entry's VTEP replaced. The pod's own links are not touched: its
/// move (a `link` change, a `move`) is written apart.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "EvpnMoveChange")]
pub struct RawEvpnMove {
    /// A pod of `evpn`'s `pods`.
    #[schemars(with = "String")]
    pub pod: Spanned<String>,
    /// The leaf it is under now.
    #[schemars(with = "String")]
    pub to: Spanned<String>,
}

/// `- tc: {in: NS, dev: DEV, hook: ingress, delete: true}` deletes the
/// hook's filters for the scenario (`tc filter del dev DEV ingress`) and
/// puts the lab's back after it; `- tc: {in, dev, hook, redirect: TO}` (or
/// `mirror: TO`) adds a match-all mirred filter, taken away after.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TcChange")]
pub struct RawTcChange {
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    #[schemars(with = "IfName")]
    pub dev: Spanned<String>,
    pub hook: RawTcHook,
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub redirect: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub mirror: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub delete: Option<Spanned<bool>>,
}
