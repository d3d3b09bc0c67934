//! The resolved lab model: what a topology file means once templating,
//! parsing, defaults and validation are done. Everything the planner needs is
//! here, already checked; nothing here refers back to YAML.
//!
//! Names of kernel objects that the user did not give (pod host-side veths,
//! VPC ports) are derived deterministically here, so that two runs of the same
//! file build the same kernel objects and golden files stay stable.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

mod evpn;
mod lower;
mod objects;
pub use evpn::*;
pub use objects::*;

/// The kernel's limit on interface names (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// A validated lab.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lab {
    /// Lab name; prefix of every network namespace the lab creates.
    pub name: String,
    /// `None` for a lab without nodes or clients (only low-level objects).
    pub vpc: Option<Vpc>,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub clients: Vec<Client>,
    pub services: Vec<Service>,
    /// How kube-proxy programs the services.
    pub kube_proxy: KubeProxy,
    pub scenarios: Vec<Scenario>,
    /// eBPF service load balancing on every pod's eth0, when set.
    pub ebpf: Option<Ebpf>,
    /// The low-level layer: bare namespaces and kernel objects anywhere.
    #[serde(skip_serializing_if = "Objects::is_empty")]
    pub objects: Objects,
}

/// The eBPF service load balancer's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ebpf {
    /// In-cluster access to external/LB addresses translated too.
    pub in_cluster_external: bool,
}

/// kube-proxy: its mode and the version whose behaviour it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KubeProxy {
    pub mode: ProxyMode,
    /// The minor version N of kube-proxy 1.N.
    pub minor: u32,
    /// `--service-cluster-ip-range`, when given.
    pub service_cidr: Option<Ipv4Net>,
}

impl KubeProxy {
    /// The oldest and newest kube-proxy whose behaviour labctl models.
    pub const MINORS: std::ops::RangeInclusive<u32> = 20..=35;
    /// The first kube-proxy with the nftables mode (alpha in 1.29).
    pub const NFTABLES_SINCE: u32 = 29;

    /// IPVS mode: whether `externalTrafficPolicy: Local` falls back to all
    /// endpoints on a node without a local one (kubernetes#97081, 1.21).
    pub fn local_falls_back_to_cluster(&self) -> bool {
        self.minor >= 21
    }
}

impl Default for KubeProxy {
    fn default() -> Self {
        KubeProxy {
            mode: ProxyMode::Ipvs,
            minor: *Self::MINORS.end(),
            service_cidr: None,
        }
    }
}

/// kube-proxy's `--proxy-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    Ipvs,
    Nftables,
}

/// A Kubernetes service, programmed on every node by kube-proxy: in IPVS
/// mode the ClusterIP on a dummy `kube-ipvs0` and an IPVS virtual service
/// per port with the endpoints as real servers (NAT); in nftables mode
/// verdict maps and DNAT chains in the `ip kube-proxy` table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub external_ips: Vec<Ipv4Addr>,
    /// The SLB's address, for a LoadBalancer service.
    pub load_balancer_ip: Option<Ipv4Addr>,
    pub external_traffic_policy: TrafficPolicy,
    pub internal_traffic_policy: TrafficPolicy,
    /// `sessionAffinity: ClientIP`'s timeout in seconds; `None` without.
    pub session_affinity: Option<u32>,
    /// `loadBalancerSourceRanges` (only with a `load_balancer_ip`).
    pub load_balancer_source_ranges: Vec<Ipv4Net>,
    pub ports: Vec<ServicePort>,
    /// Endpoint pods, by name (those named and those selected by label, in
    /// the file's pod order).
    pub endpoints: Vec<String>,
}

impl Service {
    /// Whether traffic reaches it other than by its ClusterIP (external or
    /// load balancer addresses, node ports): kube-proxy's
    /// `ExternallyAccessible`.
    pub fn externally_accessible(&self) -> bool {
        !self.external_ips.is_empty()
            || self.load_balancer_ip.is_some()
            || self.ports.iter().any(|p| p.node_port.is_some())
    }

    /// The addresses kube-proxy puts on `kube-ipvs0` for this service.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        std::iter::once(self.cluster_ip)
            .chain(self.external_ips.iter().copied())
            .chain(self.load_balancer_ip)
    }
}

/// kube-proxy's default `sessionAffinityConfig.clientIP.timeoutSeconds`
/// (Kubernetes' `DefaultClientIPServiceAffinitySeconds`).
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10800;

/// The largest `timeoutSeconds` Kubernetes accepts (`MaxClientIPServiceAffinitySeconds`).
pub const MAX_AFFINITY_TIMEOUT_SECONDS: u32 = 86400;

/// `externalTrafficPolicy` and `internalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum TrafficPolicy {
    Cluster,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    pub port: u16,
    pub target_port: u16,
    pub node_port: Option<u16>,
    pub protocol: Protocol,
}

/// The dummy device kube-proxy's IPVS mode holds service addresses on.
pub const KUBE_IPVS: &str = "kube-ipvs0";

/// The cloud VPC: one network namespace routing between its vSwitches
/// (bridges), the nodes plugged into them and the clients outside.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vpc {
    pub cidr: Option<Ipv4Net>,
    pub subnets: Vec<Subnet>,
    pub routes: Vec<VpcRoute>,
    /// Cloud vSwitch behaviour; see the topology reference.
    pub isolated_ports: bool,
}

/// A vSwitch: a bridge in the VPC namespace named like the subnet, holding
/// the gateway address.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Subnet {
    /// Also the bridge's interface name in the VPC namespace.
    pub name: String,
    pub cidr: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// A custom route entry of the VPC route table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VpcRoute {
    pub destination: Ipv4Net,
    /// The node (ECS instance) the route points at.
    pub next_hop_node: String,
    /// The address of that node's interface used as gateway.
    pub via: Ipv4Addr,
}

/// An ECS instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    pub name: String,
    pub interfaces: Vec<NodeInterface>,
    /// Pod CIDR (Flannel). When set, the node has a bridge holding `pod_gateway`.
    pub pod_cidr: Option<Ipv4Net>,
    /// Name of the pod bridge (default `cni0`).
    pub bridge: String,
    /// Hairpin mode on the pods' bridge ports (the CNI bridge plugin's
    /// `hairpinMode`, which Flannel's CNI configuration turns on): a pod
    /// reaching itself through a translated address gets its frames back
    /// by the port they left by.
    pub hairpin_mode: bool,
    /// First host address of `pod_cidr`, held by the bridge.
    pub pod_gateway: Option<Ipv4Addr>,
    /// Default route of the node: the gateway of its first interface's subnet.
    pub default_gateway: Ipv4Addr,
    /// Sysctls written in the node's namespace after its links exist,
    /// e.g. `net.ipv4.ip_forward = 1` (always set for nodes).
    pub sysctls: BTreeMap<String, String>,
}

/// An ENI of a node, plugged into a vSwitch of the VPC.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeInterface {
    /// Name inside the node (`eth0`).
    pub name: String,
    pub subnet: String,
    /// Address with the subnet's prefix length. Always present on a node's
    /// first interface; `None` for a secondary ENI without one (Terway's
    /// ENIs that only carry ipvlan pods).
    pub address: Option<Ipv4Net>,
    pub mac: Option<[u8; 6]>,
    /// Name of the peer port in the VPC namespace (`<node>-<if>` when that
    /// fits in 15 characters, else `p` + 8 hex digits of a hash).
    pub vpc_port: String,
}

/// How a pod is attached to its node. Later kinds (ipvlan ...) add variants.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Attachment {
    /// Flannel: veth pair, pod side `eth0`, node side `host_ifname` enslaved
    /// to the node's pod bridge.
    Bridge { host_ifname: String },
    /// Terway: an ipvlan L2 slave of the node's ENI `parent`, named `eth0`
    /// in the pod; the node reaches the pod through its own slave of the
    /// same ENI, `host_slave` (`ipvl_N`), with a /32 route.
    Ipvlan { parent: String, host_slave: String },
}

/// A pod: its own network namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pod {
    pub name: String,
    pub node: String,
    pub attachment: Attachment,
    /// Pod side interface name (always `eth0` for now).
    pub ifname: String,
    /// Address with the prefix length of the node's pod CIDR.
    pub address: Ipv4Net,
    pub mac: Option<[u8; 6]>,
    /// Routes inside the pod; by default only `default via <pod gateway>`.
    pub routes: Vec<Route>,
    /// Ports the pod serves (as nginx does in the articles).
    pub ports: Vec<Port>,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A route: destination via a gateway, out of the namespace's main interface.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub destination: Ipv4Net,
    pub via: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Port {
    pub port: u16,
    pub protocol: Protocol,
}

/// A host outside the VPC, linked to the VPC router by a veth pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Client {
    pub name: String,
    /// Client side `eth0` address with prefix.
    pub address: Ipv4Net,
    /// Address of the VPC side of the link, the client's default gateway
    /// (default: first host of the client's network).
    pub gateway: Ipv4Addr,
    /// Name of the peer port in the VPC namespace (as for node interfaces).
    pub vpc_port: String,
}

/// Traffic from one entity to an address, with what it must show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    pub name: String,
    pub description: Option<String>,
    /// The sending node, pod or client.
    pub from: String,
    /// The address the client binds to before sending (`source:`), one
    /// of the sender's; `None`: the kernel's choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Ipv4Addr>,
    pub target: Ipv4Addr,
    /// Absent for ICMP.
    pub port: Option<u16>,
    pub traffic: Traffic,
    pub attempts: u32,
    pub timeout_ms: u64,
    /// Service changes in force during this scenario.
    pub changes: Vec<ServiceChange>,
    /// Link changes in force during this scenario, in the file's order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub link_changes: Vec<LinkChange>,
    /// Routes deleted or added for this scenario, in the file's order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub route_changes: Vec<RouteChange>,
    /// Neighbour, FDB, sysctl changes and pod moves for this scenario, in
    /// the file's order (made after the link and route changes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub object_changes: Vec<ObjectChange>,
    /// The endpoint pod load balancers must pick.
    pub backend: Option<String>,
    /// The node the SLB must pick.
    pub via_node: Option<String>,
    /// Override of `Lab::ebpf`'s `in_cluster_external`.
    pub in_cluster_external: Option<bool>,
    /// Show ARP in the sighting table (`capture: {arp: true}`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub show_arp: bool,
    pub expect: Expect,
}

/// A change to a service for one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceChange {
    pub service: String,
    pub external_traffic_policy: Option<TrafficPolicy>,
    pub remove_endpoints: Vec<String>,
}

/// A change to a link for one scenario: applied to `ifname` in `entity`
/// and, for a veth pair, to its peer too (both directions of the link).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkChange {
    /// `ENTITY/IFNAME` as the user named it (after `POD/host` is resolved).
    pub link: String,
    pub entity: String,
    pub ifname: String,
    pub netem: Option<Netem>,
    /// `ip link set IF down` for the scenario.
    pub down: bool,
    /// `ip link set IF up` for the scenario: a link the lab leaves down
    /// (a pod restarted elsewhere), with the routes and neighbour entries
    /// the lab makes through it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub up: bool,
    pub mtu: Option<u32>,
    /// `ip link set IF address MAC`, on this interface only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<[u8; 6]>,
}

/// A route of the lab deleted for one scenario and added back after it,
/// or (`add` set) a route added for the scenario and deleted after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteChange {
    /// The entity whose namespace holds the route.
    pub entity: String,
    pub destination: Ipv4Net,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add: Option<RouteAdd>,
}

/// The gateway and device of a route a scenario adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteAdd {
    pub via: Option<Ipv4Addr>,
    pub dev: String,
}

/// A scenario's change to a kernel object other than a link or a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectChange {
    /// `ip neigh replace ADDRESS lladdr MAC dev DEV nud STATE`, or with
    /// `lladdr` absent `ip neigh del ADDRESS dev DEV`.
    Neighbour {
        entity: String,
        dev: String,
        address: Ipv4Addr,
        lladdr: Option<[u8; 6]>,
        state: NeighState,
    },
    /// `bridge fdb replace MAC dev DEV [dst VTEP] master|self`, or `delete`.
    Fdb {
        entity: String,
        dev: String,
        lladdr: [u8; 6],
        dst: Option<Ipv4Addr>,
        /// The bridge's table (a port's entry), else the device's own.
        master: bool,
        delete: bool,
    },
    /// `sysctl -w KEY=VALUE` in the entity's namespace.
    Sysctl {
        entity: String,
        key: String,
        value: String,
    },
    /// The pod's veth leaves `from`'s bridge for `to`'s.
    Move {
        pod: String,
        from: String,
        to: String,
    },
    /// `tc filter add dev DEV HOOK ... mirred egress redirect|mirror dev
    /// TO` (`to` set, with `mirror`), or `tc filter del dev DEV HOOK`.
    Tc {
        entity: String,
        dev: String,
        hook: TcHook,
        mirror: bool,
        to: Option<String>,
    },
}

/// netem's impairments on an interface's egress queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Netem {
    pub delay_ns: u64,
    pub jitter_ns: u64,
    pub loss: Percent,
    /// Bits per second; 0 is no limit.
    pub rate_bps: u64,
    pub reorder: Percent,
}

impl Netem {
    /// The arguments after `netem` in `tc qdisc ... netem ARGS`.
    pub fn tc_args(&self) -> String {
        let mut out = Vec::new();
        if self.delay_ns > 0 {
            let mut d = format!("delay {}", duration_text(self.delay_ns));
            if self.jitter_ns > 0 {
                d.push(' ');
                d.push_str(&duration_text(self.jitter_ns));
            }
            out.push(d);
        }
        if !self.loss.is_zero() {
            out.push(format!("loss {}", self.loss));
        }
        if self.rate_bps > 0 {
            out.push(format!("rate {}", rate_text(self.rate_bps)));
        }
        if !self.reorder.is_zero() {
            out.push(format!("reorder {}", self.reorder));
        }
        out.join(" ")
    }
}

/// A percentage in millionths of a percent (exact for what users write:
/// `0.5%` is 500000).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Percent(pub u32);

impl Percent {
    pub const SCALE: u32 = 1_000_000;
    pub const HUNDRED: Percent = Percent(100 * Self::SCALE);

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// As the kernel keeps probabilities: a fraction of `u32::MAX` (netem's
    /// `loss` and `probability`), rounded as iproute2's `get_percent` does.
    pub fn to_u32_fraction(self) -> u32 {
        let hundred = u64::from(Self::HUNDRED.0);
        ((u64::from(self.0) * u64::from(u32::MAX) + hundred / 2) / hundred) as u32
    }

    /// Parses `1%`, `0.5%`, `100%`.
    pub fn parse(text: &str) -> Result<Percent, String> {
        let Some(number) = text.trim().strip_suffix('%') else {
            return Err(format!(
                "`{text}` is not a percentage: write it with `%`, e.g. `1%`"
            ));
        };
        let micro = decimal(number.trim(), 6).ok_or_else(|| {
            format!("`{text}` is not a percentage: write a number and `%`, e.g. `0.5%`")
        })?;
        if micro > u64::from(Self::HUNDRED.0) {
            return Err(format!("`{text}` is more than 100%"));
        }
        Ok(Percent(micro as u32))
    }
}

impl std::fmt::Display for Percent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let whole = self.0 / Self::SCALE;
        let frac = self.0 % Self::SCALE;
        if frac == 0 {
            write!(f, "{whole}%")
        } else {
            let digits = format!("{frac:06}");
            write!(f, "{whole}.{}%", digits.trim_end_matches('0'))
        }
    }
}

/// `value` with up to `places` decimals as an integer scaled by
/// 10^places: `decimal("1.5", 3)` is 1500. `None` for anything else
/// (signs, exponents, more decimals than `places`).
fn decimal(value: &str, places: u32) -> Option<u64> {
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > places as usize {
        return None;
    }
    if value.contains('.') && frac.is_empty() {
        return None;
    }
    let scale = 10u64.pow(places);
    let int: u64 = int.parse().ok()?;
    let frac_value: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().ok()? * 10u64.pow(places - frac.len() as u32)
    };
    int.checked_mul(scale)?.checked_add(frac_value)
}

/// Parses a time as tc writes it: a number and `us`, `ms` or `s`, into
/// nanoseconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a time: write e.g. `50ms` or `1.5s`"
        ));
    }
    let scale: u64 = match unit {
        "us" | "usec" => 1_000,
        "ms" | "msec" => 1_000_000,
        "s" | "sec" => 1_000_000_000,
        "" => {
            return Err(format!("`{text}` has no unit: write `{text}ms` (or us, s)"));
        }
        other => {
            return Err(format!(
                "`{text}`: unknown time unit `{other}`; write us, ms or s, e.g. `50ms`"
            ));
        }
    };
    // Three decimals of the unit: 1.5ms, 0.25s.
    let milli = decimal(number, 3)
        .ok_or_else(|| format!("`{text}` is not a time: write e.g. `50ms` or `1.5s`"))?;
    milli
        .checked_mul(scale)
        .map(|v| v / 1000)
        .ok_or_else(|| format!("`{text}` is too long"))
}

/// A netem delay or jitter: [`parse_duration`], at most a minute (far
/// beyond any scenario's timeout already); the one rule for the topology's
/// `netem:` and `labctl netem`.
pub fn parse_netem_duration(text: &str) -> Result<u64, String> {
    parse_duration(text).and_then(|ns| {
        if ns > 60_000_000_000 {
            Err(format!("`{text}` is more than a minute"))
        } else {
            Ok(ns)
        }
    })
}

/// Parses a bandwidth in bits per second: `bit`, `kbit`, `mbit`, `gbit`
/// (powers of 1000, as tc reads them).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if number.is_empty() {
        return Err(format!("`{text}` is not a rate: write e.g. `10mbit`"));
    }
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "bit" => 1,
        "kbit" => 1_000,
        "mbit" => 1_000_000,
        "gbit" => 1_000_000_000,
        "" => {
            return Err(format!(
                "`{text}` has no unit: write e.g. `{text}mbit` (bits per second)"
            ));
        }
        "bps" | "kbps" | "mbps" | "gbps" => {
            return Err(format!(
                "`{text}`: tc reads `{unit}` as bytes per second, a common mistake; \
                 write the rate in bits: bit, kbit, mbit or gbit, e.g. `10mbit`"
            ));
        }
        other => {
            return Err(format!(
                "`{text}`: unknown rate unit `{other}`; write bit, kbit, mbit or gbit, e.g. `10mbit`"
            ));
        }
    };
    let milli =
        decimal(number, 3).ok_or_else(|| format!("`{text}` is not a rate: write e.g. `10mbit`"))?;
    milli
        .checked_mul(scale)
        .map(|v| v / 1000)
        .ok_or_else(|| format!("`{text}` is too fast"))
}

/// Nanoseconds as tc prints a time: `50ms`, `1.5ms`, `250us`, `2s`.
pub fn duration_text(ns: u64) -> String {
    let (value, unit) = if ns >= 1_000_000_000 && ns.is_multiple_of(1_000_000) {
        (ns as f64 / 1e9, "s")
    } else if ns >= 1_000_000 && ns.is_multiple_of(1_000) {
        (ns as f64 / 1e6, "ms")
    } else {
        (ns as f64 / 1e3, "us")
    };
    format!("{value}{unit}")
}

/// Bits per second as tc takes a rate: `10mbit`, `1.5gbit`, `64kbit`.
pub fn rate_text(bps: u64) -> String {
    for (unit, scale) in [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)] {
        if bps as f64 >= scale {
            return format!("{}{unit}", bps as f64 / scale);
        }
    }
    format!("{bps}bit")
}

/// A range a measured number must lie in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Range {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Range {
    pub fn contains(&self, v: f64) -> bool {
        self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m)
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.min, self.max) {
            (Some(a), Some(b)) => write!(f, "from {a} to {b}"),
            (Some(a), None) => write!(f, "at least {a}"),
            (None, Some(b)) => write!(f, "at most {b}"),
            (None, None) => write!(f, "any"),
        }
    }
}

/// A conntrack entry a namespace must hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConntrackExpect {
    /// The entity (node or `vpc`).
    pub on: String,
    pub original: TupleMatch,
    pub reply: Option<TupleMatch>,
}

/// `SRC[:PORT] -> DST[:PORT]`; a missing port matches any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TupleMatch {
    pub src: Ipv4Addr,
    pub sport: Option<u16>,
    pub dst: Ipv4Addr,
    pub dport: Option<u16>,
}

impl TupleMatch {
    /// Parses `SRC[:PORT] -> DST[:PORT]`.
    pub fn parse(text: &str) -> Option<TupleMatch> {
        let (a, b) = text.split_once("->")?;
        let end = |t: &str| -> Option<(Ipv4Addr, Option<u16>)> {
            let t = t.trim();
            match t.split_once(':') {
                Some((ip, port)) => Some((ip.parse().ok()?, Some(port.parse().ok()?))),
                None => Some((t.parse().ok()?, None)),
            }
        };
        let (src, sport) = end(a)?;
        let (dst, dport) = end(b)?;
        Some(TupleMatch {
            src,
            sport,
            dst,
            dport,
        })
    }

    /// Whether a tuple (addresses, ports) matches.
    pub fn matches(
        &self,
        src: Ipv4Addr,
        sport: Option<u16>,
        dst: Ipv4Addr,
        dport: Option<u16>,
    ) -> bool {
        self.src == src
            && self.dst == dst
            && self.sport.is_none_or(|p| Some(p) == sport)
            && self.dport.is_none_or(|p| Some(p) == dport)
    }
}

impl std::fmt::Display for TupleMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.src)?;
        if let Some(p) = self.sport {
            write!(f, ":{p}")?;
        }
        write!(f, " -> {}", self.dst)?;
        if let Some(p) = self.dport {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Traffic {
    Icmp,
    Tcp,
    Http,
    Udp,
}

/// How traffic ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultKind {
    Connected,
    Refused,
    Timeout,
    Reset,
    Unreachable,
}

/// A scenario's expectations. Interfaces are canonical hop names:
/// `ENTITY/IFNAME`, or `vpc` for the VPC as a whole.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expect {
    pub result: ResultKind,
    pub path: Option<Vec<String>>,
    pub stacks: Option<u32>,
    pub seen_on: Vec<Sighting>,
    pub not_seen_on: Vec<Sighting>,
    pub server_saw_client: Option<Ipv4Addr>,
    /// The entity whose built-in server must answer (HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
    pub conntrack: Vec<ConntrackExpect>,
    /// The client's round-trip time, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<Range>,
    /// TCP retransmissions of the client's socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retransmits: Option<Range>,
    /// Devices the request's path crosses (see the scenario's path rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<u32>,
    /// Hops of the request: devices stacked on one another and switches
    /// crossed in a row counted once (see the scenario's path rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hops: Option<u32>,
    /// Neighbour entries that must (not) exist after the traffic.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub neighbours: Vec<NeighbourExpect>,
    /// Namespaces whose nftables ruleset must (not) be empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nftables: Vec<NftExpect>,
}

/// Packets some interfaces must (not) see: every filter given must match.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sighting {
    /// Source or destination of any header (outer or VXLAN-inner).
    pub address: Option<Ipv4Addr>,
    /// Source MAC of any Ethernet header (outer or VXLAN-inner).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_mac: Option<[u8; 6]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_mac: Option<[u8; 6]>,
    /// VLAN id of an 802.1Q tag of any Ethernet header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// VXLAN network identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// Protocol of the innermost packet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<SightProto>,
    pub interfaces: Vec<String>,
    pub only: bool,
}

impl Sighting {
    /// The filters in words, for a report: `10.132.2.46 dst_mac
    /// 0a:58:0a:84:02:2e`, `arp`.
    pub fn describe(&self) -> String {
        let mut w = Vec::new();
        if let Some(p) = self.protocol {
            w.push(format!("{p:?}").to_lowercase());
        }
        if let Some(a) = self.address {
            w.push(a.to_string());
        }
        if let Some(m) = &self.src_mac {
            w.push(format!("src_mac {}", format_mac(m)));
        }
        if let Some(m) = &self.dst_mac {
            w.push(format!("dst_mac {}", format_mac(m)));
        }
        if let Some(v) = self.vlan {
            w.push(format!("vlan {v}"));
        }
        if let Some(v) = self.vni {
            w.push(format!("vni {v}"));
        }
        w.join(" ")
    }
}

/// The protocol filter of a [`Sighting`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SightProto {
    Arp,
    Icmp,
    Tcp,
    Udp,
}

/// A neighbour entry that must (`present`) or must not exist in `entity`'s
/// namespace after the traffic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NeighbourExpect {
    pub entity: String,
    pub dev: Option<String>,
    pub address: Ipv4Addr,
    pub lladdr: Option<[u8; 6]>,
    pub present: bool,
}

/// A namespace whose ruleset must be empty (`empty`: no nftables table, no
/// legacy iptables table) or not, after the traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NftExpect {
    pub entity: String,
    pub empty: bool,
}

/// What an entity of the lab is; one network namespace each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Vpc,
    Node,
    Pod,
    Client,
    /// Bare namespaces of the low-level layer.
    Host,
    Switch,
    Router,
}

impl From<NsRole> for Role {
    fn from(r: NsRole) -> Role {
        match r {
            NsRole::Host => Role::Host,
            NsRole::Switch => Role::Switch,
            NsRole::Router => Role::Router,
        }
    }
}

impl Lab {
    /// This lab as brought up under `name` (`up --name`): its namespaces
    /// carry that name, not the file's. Borrowed when the names agree.
    pub fn named(&self, name: &str) -> std::borrow::Cow<'_, Lab> {
        if self.name == name {
            std::borrow::Cow::Borrowed(self)
        } else {
            std::borrow::Cow::Owned(Lab {
                name: name.to_string(),
                ..self.clone()
            })
        }
    }

    /// Whether the nodes hold kube-proxy's IPVS mode (`kube-ipvs0`, IPVS
    /// virtual services): services under `proxy: ipvs`.
    pub fn uses_kube_ipvs(&self) -> bool {
        !self.services.is_empty() && self.kube_proxy.mode == ProxyMode::Ipvs
    }

    /// Whether IPVS is needed at all: kube-proxy's IPVS mode, or the SLB
    /// (IPVS in the VPC) in front of a LoadBalancer service.
    pub fn uses_ipvs(&self) -> bool {
        self.uses_kube_ipvs() || self.services.iter().any(|s| s.load_balancer_ip.is_some())
    }

    /// The network namespace name of an entity (`<lab>-<entity>`), as
    /// `ip netns list` shows it.
    pub fn netns(&self, entity: &str) -> String {
        netns_name(&self.name, entity)
    }

    /// Every entity with its role, VPC first, in creation order.
    pub fn entities(&self) -> Vec<(String, Role)> {
        let mut out = Vec::new();
        if self.vpc.is_some() {
            out.push(("vpc".to_string(), Role::Vpc));
        }
        out.extend(self.nodes.iter().map(|n| (n.name.clone(), Role::Node)));
        out.extend(self.pods.iter().map(|p| (p.name.clone(), Role::Pod)));
        out.extend(self.clients.iter().map(|c| (c.name.clone(), Role::Client)));
        out.extend(
            self.objects
                .namespaces
                .iter()
                .map(|n| (n.name.clone(), n.role.into())),
        );
        out
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn pod(&self, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.name == name)
    }

    /// The interfaces labctl creates in an entity's namespace (loopback
    /// aside), by name; `None` for an unknown entity.
    pub fn interfaces_of(&self, entity: &str) -> Option<Vec<String>> {
        let mut v = if self.objects.namespaces.iter().any(|n| n.name == entity) {
            Vec::new()
        } else {
            self.cni_interfaces_of(entity)?
        };
        v.extend(self.objects.interfaces_in(entity).map(str::to_string));
        Some(v)
    }

    /// The addresses labctl gives an entity's namespace, by interface:
    /// loopback's `127.0.0.1/8` first (every namespace's lo is up), then
    /// those of the vpc/nodes/pods/clients keys, then the low-level
    /// layer's, in the order the plan adds them. `None` for an unknown
    /// entity.
    pub fn addresses_of(&self, entity: &str) -> Option<Vec<(String, Ipv4Net)>> {
        let bare = self.objects.namespaces.iter().any(|n| n.name == entity);
        if !bare && !self.is_cni_entity(entity) {
            return None;
        }
        let mut v = vec![(
            "lo".to_string(),
            Ipv4Net::new(Ipv4Addr::LOCALHOST, 8).expect("valid prefix"),
        )];
        let lowered = (!bare).then(|| self.lowered());
        // A Terway node's ipvl_N holds the node's own address with scope
        // host, which is no source of its own (the ENI's is listed).
        let keys = lowered
            .iter()
            .flat_map(|o| &o.addresses)
            .filter(|a| !a.scope_host);
        v.extend(
            keys.chain(&self.objects.addresses)
                .filter(|a| a.netns == entity)
                .map(|a| (a.dev.clone(), a.address)),
        );
        Some(v)
    }

    /// The interfaces the vpc/nodes/pods/clients keys make in an entity:
    /// those of its lowered objects ([`Lab::lowered`]).
    fn cni_interfaces_of(&self, entity: &str) -> Option<Vec<String>> {
        self.cni_interfaces_in(&self.lowered().interfaces_by_namespace(), entity)
    }

    /// Turn an interface reference as users write it into its canonical hop
    /// name: `ENTITY/IFNAME` stays, `POD/host` becomes the pod's veth on its
    /// node (`node-180/vethbda42240`), `vpc` stays. The error says why not.
    pub fn canonical_hop(&self, text: &str) -> Result<String, String> {
        if text == "vpc" && self.vpc.is_some() {
            return Ok("vpc".into());
        }
        // A switch is one hop of a path, as the VPC is.
        if self
            .objects
            .namespaces
            .iter()
            .any(|n| n.name == text && n.role == NsRole::Switch)
        {
            return Ok(text.into());
        }
        let Some((entity, ifname)) = text.split_once('/') else {
            return Err(format!(
                "`{text}` is not an interface: write ENTITY/IFNAME, POD/host or vpc"
            ));
        };
        if ifname == "host" {
            let Some(pod) = self.pod(entity) else {
                return Err(format!(
                    "`{entity}/host` names the host veth of a pod, and `{entity}` is not a pod"
                ));
            };
            return match &pod.attachment {
                Attachment::Bridge { host_ifname } => Ok(format!("{}/{host_ifname}", pod.node)),
                Attachment::Ipvlan { parent, .. } => Err(format!(
                    "`{entity}` is an ipvlan pod on {}'s {parent}: it has no veth on its node",
                    pod.node
                )),
            };
        }
        let Some(ifs) = self.interfaces_of(entity) else {
            return Err(format!("unknown namespace, node, pod or client `{entity}`"));
        };
        if ifs.iter().any(|i| i == ifname) {
            Ok(text.to_string())
        } else {
            Err(format!(
                "`{entity}` has no interface `{ifname}`; it has: {}",
                ifs.join(", ")
            ))
        }
    }
}

/// `<lab>-<entity>`: the namespace name of an entity of a lab.
pub fn netns_name(lab: &str, entity: &str) -> String {
    format!("{lab}-{entity}")
}

/// A stable short name for a generated interface: `prefix` + 8 hex digits of
/// an FNV-1a hash of `key` (like Flannel's `vethXXXXXXXX`, but deterministic).
pub fn hashed_ifname(prefix: &str, key: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{prefix}{h:08x}")
}

/// Format a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The node's own ipvlan slave of an ENI, named like Terway's `ipvl_N`
/// (N: the ENI's position among the node's interfaces, from 1).
pub fn ipvlan_host_slave(eni_position: usize) -> String {
    format!("ipvl_{eni_position}")
}
