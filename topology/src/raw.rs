//! The raw topology language: serde types that mirror the YAML exactly, as
//! the user wrote it. Values that need checking (names, addresses, CIDRs,
//! MACs, references) are kept as located text (`Spanned<String>`) so that
//! `resolve` can report every problem with its line and column instead of
//! stopping at the first one. Every struct denies unknown fields, and the few
//! values with two shapes (ports, sysctl values) have their own small
//! `Deserialize` impls rather than `#[serde(untagged)]`, whose errors say
//! nothing useful. The JSON schema of the language is derived from these
//! types (`schemars`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;

mod changes;
mod evpn;
mod objects;
pub use changes::*;
pub use evpn::*;
pub use objects::*;

/// A labctl topology: a cloud VPC with its vSwitches, the nodes (ECS
/// instances) plugged into them, the pods on the nodes and the clients outside.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Topology", title = "labctl topology")]
pub struct RawTopology {
    /// Lab name: lowercase letters, digits and '-', starting with a letter, at
    /// most 20 characters. Every network namespace of the lab is named
    /// `<name>-<entity>`.
    #[schemars(with = "LabName")]
    pub name: Spanned<String>,
    /// The cloud VPC the nodes and clients plug into; needed by them only.
    #[serde(default)]
    pub vpc: Option<RawVpc>,
    /// ECS instances.
    #[serde(default)]
    pub nodes: Vec<RawNode>,
    /// Pods, each in its own network namespace on a node.
    #[serde(default)]
    pub pods: Vec<RawPod>,
    /// Hosts outside the VPC, linked to the VPC router.
    #[serde(default)]
    pub clients: Vec<RawClient>,
    /// Kubernetes services, programmed on every node the way kube-proxy
    /// does (`proxy`, `kube_proxy`).
    #[serde(default)]
    pub services: Vec<RawService>,
    /// kube-proxy's mode: `ipvs` (default) or `nftables`.
    #[serde(default)]
    pub proxy: Option<RawProxyMode>,
    /// kube-proxy's version, `"1.N"` from 1.20 to 1.35 (default 1.35), for
    /// the behaviour that changed between versions: `externalTrafficPolicy:
    /// Local` in IPVS mode falls back to all endpoints on a node without a
    /// local one since 1.21; the nftables mode exists since 1.29.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub kube_proxy: Option<Spanned<String>>,
    /// The service CIDR (`--service-cluster-ip-range`): kube-proxy's
    /// nftables mode drops traffic to its unallocated addresses. Every
    /// service's ClusterIP must be in it.
    #[serde(default)]
    #[schemars(with = "Option<CidrText>")]
    pub service_cidr: Option<Spanned<String>>,
    /// Traffic scenarios (from the articles) and what they must show.
    #[serde(default)]
    pub scenarios: Vec<RawScenario>,
    /// Service load balancing in eBPF on every pod's eth0 (Terway IPVLAN +
    /// eBPF, Cilium's socket-less LB): service address:port translated to a
    /// backend on tc egress, back on ingress.
    #[serde(default)]
    pub ebpf: Option<RawEbpf>,
    /// Bare network namespaces for the low-level keys below.
    #[serde(default)]
    pub namespaces: Vec<RawNamespace>,
    /// Links of any kind in any namespace (`- veth: {...}`, `- vxlan:
    /// {...}`, `- bridge: {...}`, `- vlan`, `- bond`, `- dummy`, `-
    /// macvlan`, `- ipvlan`).
    #[serde(default)]
    pub links: Vec<RawLink>,
    /// Addresses on any link; the same address may be in two namespaces.
    #[serde(default)]
    pub addresses: Vec<RawAddress>,
    /// Routes in any namespace.
    #[serde(default)]
    pub routes: Vec<RawNsRoute>,
    /// Neighbour (ARP) entries.
    #[serde(default)]
    pub neighbours: Vec<RawNeighbour>,
    /// Forwarding database entries of bridges and vxlan devices.
    #[serde(default)]
    pub fdb: Vec<RawFdb>,
    /// An EVPN control plane: the FDB and neighbour entries and the ARP
    /// suppression of every leaf of a VXLAN segment, computed from where
    /// each pod is.
    #[serde(default)]
    pub evpn: Option<RawEvpn>,
    /// tc filters: match-all with mirred redirect or mirror, or one of
    /// labctl's eBPF programs.
    #[serde(default)]
    pub tc: Vec<RawTc>,
    /// The contents of the eBPF router's maps, per namespace (`tc: ... bpf:
    /// route_from_*`): endpoints, tunnels and the vxlan device.
    #[serde(default)]
    pub bpf_maps: Vec<RawBpfMaps>,
    /// Sysctls of any namespace, kept per network namespace by the kernel.
    #[serde(default)]
    pub sysctls: Vec<RawNsSysctl>,
}

/// The eBPF service load balancer's settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Ebpf")]
pub struct RawEbpf {
    /// Translate in-cluster access to external and load balancer addresses
    /// too (Terway >= 1.2.0 with in-cluster load balancing); else only
    /// ClusterIPs, and external addresses go out to the SLB. Default true.
    #[serde(default)]
    pub in_cluster_external: Option<bool>,
}

/// A Kubernetes service.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Service")]
pub struct RawService {
    #[schemars(with = "EntityName")]
    pub name: Spanned<String>,
    /// The ClusterIP: on every node's `kube-ipvs0` and an IPVS virtual service.
    #[schemars(with = "Ipv4Text")]
    pub cluster_ip: Spanned<String>,
    /// `spec.externalIPs`: also on every node's `kube-ipvs0`, each with an
    /// IPVS virtual service per port.
    #[serde(default)]
    #[schemars(with = "Vec<Ipv4Text>")]
    pub external_ips: Vec<Spanned<String>>,
    /// A LoadBalancer service's address: the cloud SLB in the VPC listens on
    /// it and forwards to nodeIP:nodePort (every port needs a `node_port`);
    /// kube-proxy also programs it on every node like an external IP.
    #[serde(default)]
    #[schemars(with = "Option<Ipv4Text>")]
    pub load_balancer_ip: Option<Spanned<String>>,
    /// `Cluster` (default): every endpoint on every node, node-port and
    /// external traffic masqueraded. `Local`: only the node's own endpoints,
    /// no masquerade, and the SLB forwards only to nodes with an endpoint.
    #[serde(default)]
    pub external_traffic_policy: Option<RawTrafficPolicy>,
    /// `internalTrafficPolicy`: `Cluster` (default) sends ClusterIP traffic
    /// to every endpoint, `Local` only to the client node's own (none: the
    /// traffic is dropped, or in IPVS mode sent to all when the external
    /// policy is Cluster, as kube-proxy's IPVS proxier does).
    #[serde(default)]
    pub internal_traffic_policy: Option<RawTrafficPolicy>,
    /// `sessionAffinity`: `None` (default) or `ClientIP`, every connection
    /// from one client address to the endpoint its first one reached, for
    /// `session_affinity_timeout_seconds` after its last.
    #[serde(default)]
    pub session_affinity: Option<RawSessionAffinity>,
    /// `sessionAffinityConfig.clientIP.timeoutSeconds`: 1 to 86400, default
    /// 10800 (three hours), as in Kubernetes. Only with `ClientIP`.
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 1, max = 86400))]
    pub session_affinity_timeout_seconds: Option<Spanned<u32>>,
    /// `loadBalancerSourceRanges`: the client networks allowed to reach the
    /// `load_balancer_ip` (kube-proxy drops the others on every node; node
    /// ports are not subject to them). Only with a `load_balancer_ip`.
    #[serde(default)]
    #[schemars(with = "Vec<CidrText>")]
    pub load_balancer_source_ranges: Vec<Spanned<String>>,
    pub ports: Vec<RawServicePort>,
    /// The pods behind the service, by name.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub endpoints: Vec<Spanned<String>>,
    /// The pods behind the service, by label: every pod carrying all these
    /// labels (added to `endpoints`).
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub selector: Option<Spanned<BTreeMap<String, String>>>,
}

/// kube-proxy's `--proxy-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "ProxyMode")]
pub enum RawProxyMode {
    /// IPVS virtual services, service addresses on the dummy `kube-ipvs0`,
    /// masquerading in nftables (kube-proxy's iptables rules).
    Ipvs,
    /// kube-proxy's nftables proxier: the `ip kube-proxy` table alone.
    Nftables,
}

/// `sessionAffinity`, spelled as Kubernetes does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[schemars(rename = "SessionAffinity")]
pub enum RawSessionAffinity {
    None,
    #[serde(rename = "ClientIP")]
    ClientIp,
}

/// `externalTrafficPolicy`, spelled as Kubernetes does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[schemars(rename = "TrafficPolicy")]
pub enum RawTrafficPolicy {
    Cluster,
    Local,
}

/// A service port.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ServicePort")]
pub struct RawServicePort {
    pub port: u16,
    /// The pods' port (default: `port`).
    #[serde(default)]
    pub target_port: Option<u16>,
    /// The port every node listens on for this service (NodePort and
    /// LoadBalancer services), e.g. 32580.
    #[serde(default)]
    pub node_port: Option<u16>,
    /// Default tcp.
    #[serde(default)]
    pub protocol: Option<RawProtocol>,
}

/// The VPC: one router namespace with a bridge per vSwitch.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Vpc")]
pub struct RawVpc {
    /// The VPC's CIDR; when given, every subnet must lie inside it.
    #[serde(default)]
    #[schemars(with = "Option<CidrText>")]
    pub cidr: Option<Spanned<String>>,
    /// vSwitches.
    pub subnets: Vec<RawSubnet>,
    /// Custom route entries of the VPC route table.
    #[serde(default)]
    pub routes: Vec<RawVpcRoute>,
    /// Behave like a cloud vSwitch (Terway): ENIs never reach each other
    /// directly, only through the VPC router, which answers their ARP
    /// (bridge ports `isolated`, proxy ARP) except for addresses on the
    /// asking ENI itself. Default false: a plain learning bridge.
    #[serde(default)]
    pub isolated_ports: bool,
}

/// A vSwitch: a bridge named like the subnet, holding the gateway address.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Subnet")]
pub struct RawSubnet {
    /// Also the bridge's interface name (at most 15 ASCII characters).
    #[schemars(with = "IfName")]
    pub name: Spanned<String>,
    #[schemars(with = "CidrText")]
    pub cidr: Spanned<String>,
    /// Address of the vSwitch in the subnet, the nodes' default gateway.
    #[schemars(with = "Ipv4Text")]
    pub gateway: Spanned<String>,
}

/// A route entry of the VPC: destination -> a node.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "VpcRoute")]
pub struct RawVpcRoute {
    #[schemars(with = "CidrText")]
    pub destination: Spanned<String>,
    /// Name of the node the route points at (via its first interface).
    #[schemars(with = "String")]
    pub next_hop: Spanned<String>,
}

/// An ECS instance.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Node")]
pub struct RawNode {
    #[schemars(with = "EntityName")]
    pub name: Spanned<String>,
    /// ENIs; the first one carries the node's default route.
    pub interfaces: Vec<RawInterface>,
    /// Pod CIDR (Flannel); its first address goes on the pod bridge.
    #[serde(default)]
    #[schemars(with = "Option<CidrText>")]
    pub pod_cidr: Option<Spanned<String>>,
    /// Name of the pod bridge (default `cni0`).
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub bridge: Option<Spanned<String>>,
    /// Hairpin mode on the pods' bridge ports, the CNI bridge plugin's
    /// `hairpinMode` (default true, as Flannel's CNI configuration sets
    /// it): without it a pod reaching its own service gets no reply.
    #[serde(default)]
    pub hairpin_mode: Option<bool>,
    /// Sysctls of the node's namespace (`net.ipv4.ip_forward` is 1 unless
    /// set here): only those the kernel keeps per network namespace
    /// (`net.ipv4.*`, `net.ipv6.*`, `net.netfilter.*`, ...).
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, SysctlValue>>")]
    pub sysctls: Option<Spanned<BTreeMap<String, Spanned<SysctlValue>>>>,
}

/// An ENI of a node, plugged into a vSwitch.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Interface")]
pub struct RawInterface {
    /// Interface name inside the node (`eth0`).
    #[schemars(with = "IfName")]
    pub name: Spanned<String>,
    /// Name of the subnet (vSwitch).
    #[schemars(with = "String")]
    pub subnet: Spanned<String>,
    /// Plain IPv4 address; the prefix length is the subnet's. Required on a
    /// node's first interface (the node's own address); a secondary ENI
    /// that only carries ipvlan pods may have none, as on Terway.
    #[serde(default)]
    #[schemars(with = "Option<Ipv4Text>")]
    pub address: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<MacText>")]
    pub mac: Option<Spanned<String>>,
}

/// A host outside the VPC.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Client")]
pub struct RawClient {
    #[schemars(with = "EntityName")]
    pub name: Spanned<String>,
    /// The client's address with its prefix length, e.g. 198.51.100.10/24.
    #[schemars(with = "CidrText")]
    pub address: Spanned<String>,
    /// The VPC side of the link (default: first host of the network).
    #[serde(default)]
    #[schemars(with = "Option<Ipv4Text>")]
    pub gateway: Option<Spanned<String>>,
}

/// How a pod is attached to its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "Attachment")]
pub enum RawAttachment {
    /// Flannel: a veth pair, the host side enslaved to the node's pod bridge.
    Bridge,
    /// Terway: an ipvlan (L2) slave of one of the node's ENIs (`interface`),
    /// moved into the pod; the pod's address is in the ENI's subnet.
    Ipvlan,
}

/// A pod.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Pod")]
pub struct RawPod {
    #[schemars(with = "EntityName")]
    pub name: Spanned<String>,
    /// Name of the node the pod runs on.
    #[schemars(with = "String")]
    pub node: Spanned<String>,
    /// Default `bridge`.
    #[serde(default)]
    #[schemars(with = "Option<RawAttachment>")]
    pub attachment: Option<Spanned<RawAttachment>>,
    /// For `ipvlan`: the node's ENI the pod's ipvlan hangs off (`eth1`).
    #[serde(default)]
    #[schemars(with = "Option<IfName>")]
    pub interface: Option<Spanned<String>>,
    /// Plain IPv4 address inside the node's pod CIDR (whose prefix it takes).
    #[schemars(with = "Ipv4Text")]
    pub address: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<MacText>")]
    pub mac: Option<Spanned<String>>,
    /// Routes in the pod; default: `default via` the node's pod gateway.
    #[serde(default)]
    pub routes: Option<Vec<RawRoute>>,
    /// Ports the pod serves: `80` (tcp) or `{port: 53, protocol: udp}`.
    #[serde(default)]
    #[schemars(with = "Vec<RawPort>")]
    pub ports: Vec<Spanned<RawPort>>,
    /// Labels, for services' `selector`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A route inside a pod.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Route")]
pub struct RawRoute {
    /// A CIDR or `default`.
    #[schemars(with = "RouteDestination")]
    pub destination: Spanned<String>,
    #[schemars(with = "Ipv4Text")]
    pub via: Spanned<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "Protocol")]
pub enum RawProtocol {
    Tcp,
    Udp,
}

/// A served port: a bare number (tcp) or `{port, protocol}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPort {
    pub port: u16,
    pub protocol: RawProtocol,
}

/// The mapping form of a port.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PortMapping {
    #[schemars(range(min = 1, max = 65535))]
    port: u16,
    /// Default `tcp`.
    #[serde(default)]
    protocol: Option<RawProtocol>,
}

impl<'de> Deserialize<'de> for RawPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;

        impl<'de> Visitor<'de> for PortVisitor {
            type Value = RawPort;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number or a mapping {port, protocol}")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawPort, E> {
                let port = u16::try_from(v).map_err(|_| {
                    E::invalid_value(de::Unexpected::Unsigned(v), &"a port from 1 to 65535")
                })?;
                Ok(RawPort {
                    port,
                    protocol: RawProtocol::Tcp,
                })
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawPort, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(
                        de::Unexpected::Signed(v),
                        &"a port from 1 to 65535",
                    )),
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawPort, A::Error> {
                let m = PortMapping::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawPort {
                    port: m.port,
                    protocol: m.protocol.unwrap_or(RawProtocol::Tcp),
                })
            }
        }

        deserializer.deserialize_any(PortVisitor)
    }
}

impl JsonSchema for RawPort {
    fn schema_name() -> Cow<'static, str> {
        "Port".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mapping = generator.subschema_for::<PortMapping>();
        json_schema!({
            "description": "A served port: a bare number (tcp) or `{port, protocol}`.",
            "oneOf": [
                { "type": "integer", "minimum": 1, "maximum": 65535 },
                mapping,
            ]
        })
    }
}

/// A sysctl value: YAML strings and numbers are both accepted and written
/// as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlValue(pub String);

impl<'de> Deserialize<'de> for SysctlValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;

        impl Visitor<'_> for ValueVisitor {
            type Value = SysctlValue;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a number")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<SysctlValue, E> {
                Ok(SysctlValue(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SysctlValue, E> {
                Ok(SysctlValue(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SysctlValue, E> {
                Ok(SysctlValue(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<SysctlValue, E> {
                Ok(SysctlValue(v.to_string()))
            }
        }

        deserializer.deserialize_any(ValueVisitor)
    }
}

impl JsonSchema for SysctlValue {
    fn schema_name() -> Cow<'static, str> {
        "SysctlValue".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A sysctl value, written as text.",
            "type": ["string", "number"]
        })
    }
}

/// Schema-only types: string formats the resolver checks.
macro_rules! text_schema {
    ($ty:ident, $name:literal, $schema:tt) => {
        pub(crate) struct $ty;

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

text_schema!(LabName, "LabName", {
    "description": "Lowercase letters, digits and '-', starting with a letter, at most 20 characters.",
    "type": "string",
    "pattern": "^[a-z][a-z0-9-]{0,19}$"
});
text_schema!(EntityName, "EntityName", {
    "description": "Name of a node, pod or client: lowercase letters, digits, '-' and '.', at most 63 characters; `vpc` is reserved.",
    "type": "string",
    "pattern": "^[a-z0-9.-]{1,63}$"
});
text_schema!(IfName, "IfName", {
    "description": "A kernel interface name: 1 to 15 printable ASCII characters, no '/', ':', '\"', '\\' or space, not `.` or `..`.",
    "type": "string",
    "pattern": "^[!#-.0-9;-\\[\\]-~]{1,15}$"
});
text_schema!(Ipv4Text, "Ipv4", {
    "description": "A plain IPv4 address, e.g. 10.0.0.180.",
    "type": "string",
    "format": "ipv4"
});
text_schema!(CidrText, "Cidr", {
    "description": "An IPv4 network, e.g. 10.0.0.0/24.",
    "type": "string",
    "pattern": "^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$"
});
text_schema!(MacText, "Mac", {
    "description": "A MAC address, e.g. 02:42:ac:11:00:02.",
    "type": "string",
    "pattern": "^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"
});
text_schema!(DurationText, "Duration", {
    "description": "A time with its unit: us, ms or s, e.g. 50ms or 1.5s.",
    "type": "string",
    "pattern": "^[0-9]+(\\.[0-9]+)?(us|ms|s)$"
});
text_schema!(PercentText, "Percent", {
    "description": "A percentage from 0% to 100%, e.g. 1% or 0.5%.",
    "type": "string",
    "pattern": "^[0-9]+(\\.[0-9]+)?%$"
});
text_schema!(RateText, "Rate", {
    "description": "Bits per second with bit, kbit, mbit or gbit (powers of 1000), e.g. 10mbit.",
    "type": "string",
    "pattern": "^[0-9]+(\\.[0-9]+)?(bit|kbit|mbit|gbit)$"
});
text_schema!(RouteDestination, "RouteDestination", {
    "description": "An IPv4 network (e.g. 10.0.0.0/8) or `default`.",
    "type": "string",
    "pattern": "^(default|[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2})$"
});

/// A scenario: traffic from one node, pod or client to an address, and what
/// the kernel must show for it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Scenario")]
pub struct RawScenario {
    /// Lowercase letters, digits, '-' and '.', e.g. `f1-pod-ip-same-node`.
    #[schemars(with = "EntityName")]
    pub name: Spanned<String>,
    /// One line for the report, e.g. the article's wording.
    #[serde(default)]
    pub description: Option<String>,
    /// The node, pod or client that sends.
    #[schemars(with = "String")]
    pub from: Spanned<String>,
    /// `ADDRESS` (icmp) or `ADDRESS:PORT`.
    #[schemars(with = "String")]
    pub to: Spanned<String>,
    /// The local address to send from, one the sender holds (e.g. a
    /// node's second address, its pod bridge's, or 127.0.0.1): the
    /// client binds to it, like `ping -I ADDRESS` or `curl --interface
    /// ADDRESS`. Default: the kernel picks, by the route to `to`.
    #[serde(default)]
    #[schemars(with = "Option<Ipv4Text>")]
    pub source: Option<Spanned<String>>,
    pub protocol: RawTraffic,
    /// Tries before the scenario counts as failed (default 1).
    #[serde(default)]
    pub attempts: Option<u32>,
    /// Per attempt, in milliseconds (default 1000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Changes in force during this scenario only, undone after it, by
    /// kind: `- service: {...}`, `- link: {...}`, `- route: {...}`,
    /// `- neighbour: {...}`, `- fdb: {...}`, `- sysctl: {...}`,
    /// `- move: {pod: NAME, to: NODE}`.
    #[serde(default)]
    #[schemars(with = "Vec<RawChange>")]
    pub changes: Vec<Spanned<RawChange>>,
    /// Where a load balancer could pick among several backends, the pod it
    /// picks: the other real servers get weight 0 for this scenario.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub backend: Option<Spanned<String>>,
    /// Likewise for the SLB: the node it forwards to.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub via_node: Option<Spanned<String>>,
    /// Override `ebpf.in_cluster_external` for this scenario (the Terway
    /// version: false is < 1.2.0).
    #[serde(default)]
    pub in_cluster_external: Option<bool>,
    /// What the taps record beyond the data path.
    #[serde(default)]
    pub capture: RawCapture,
    #[serde(default)]
    pub expect: RawExpect,
}

/// What a scenario's taps show beyond the request and its answers.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Capture")]
pub struct RawCapture {
    /// Show ARP requests and replies in the sighting table (`who-has
    /// 10.132.2.46 tell 10.132.2.2`, `10.132.2.46 is-at MAC`), so that
    /// `seen_on` / `not_seen_on` can speak of them (`protocol: arp`).
    /// Default false: neighbour resolution is not the data path.
    #[serde(default)]
    pub arp: bool,
}

/// netem's impairments, spelled as `tc qdisc ... netem` takes them.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Netem")]
pub struct RawNetem {
    /// Added to every packet: a number with `us`, `ms` or `s`, e.g. `50ms`.
    #[serde(default)]
    #[schemars(with = "Option<DurationText>")]
    pub delay: Option<Spanned<Scalar>>,
    /// Random variation of `delay` (needs `delay`), e.g. `10ms`.
    #[serde(default)]
    #[schemars(with = "Option<DurationText>")]
    pub jitter: Option<Spanned<Scalar>>,
    /// Packets dropped at random, e.g. `1%`.
    #[serde(default)]
    #[schemars(with = "Option<PercentText>")]
    pub loss: Option<Spanned<Scalar>>,
    /// Bandwidth limit in bits per second: `bit`, `kbit`, `mbit`, `gbit`
    /// (powers of 1000), e.g. `10mbit`.
    #[serde(default)]
    #[schemars(with = "Option<RateText>")]
    pub rate: Option<Spanned<Scalar>>,
    /// Packets sent at once, ahead of the delayed ones (needs `delay`),
    /// e.g. `25%`.
    #[serde(default)]
    #[schemars(with = "Option<PercentText>")]
    pub reorder: Option<Spanned<Scalar>>,
}

/// A link's administrative state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "LinkState")]
pub enum RawLinkState {
    Up,
    Down,
}

/// A YAML scalar kept as text, whether written as a string or a number
/// (`mtu: 1400`, `delay: 50` get a message about their unit, not a type
/// error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        SysctlValue::deserialize(deserializer).map(|v| Scalar(v.0))
    }
}

/// The traffic a scenario sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "Traffic")]
pub enum RawTraffic {
    /// ICMP echo (ping).
    Icmp,
    /// A TCP connect.
    Tcp,
    /// An HTTP GET; the built-in server answers with the client address it saw.
    Http,
    /// A UDP datagram, echoed back.
    Udp,
}

/// How a scenario's traffic ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "Result")]
pub enum RawResult {
    Connected,
    Refused,
    Timeout,
    Reset,
    Unreachable,
}

/// A range a measured number must lie in; either end may be left out.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Range")]
pub struct RawRange {
    #[serde(default)]
    #[schemars(with = "Option<f64>", range(min = 0))]
    pub min: Option<Spanned<f64>>,
    #[serde(default)]
    #[schemars(with = "Option<f64>", range(min = 0))]
    pub max: Option<Spanned<f64>>,
}

/// What a scenario must show.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Expect")]
pub struct RawExpect {
    /// Default `connected`.
    #[serde(default)]
    pub result: Option<RawResult>,
    /// The interfaces the request crosses, in order: `ENTITY/IFNAME`,
    /// `POD/host` (the pod's veth on its node) or `vpc`.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub path: Option<Vec<Spanned<String>>>,
    /// How many kernel network stacks (namespaces other than the VPC) the
    /// request crosses, as the articles count them.
    #[serde(default)]
    pub stacks: Option<u32>,
    /// Interfaces that must see packets to or from an address (or with
    /// the MACs, VLAN, VNI or protocol given).
    #[serde(default)]
    #[schemars(with = "Vec<RawSighting>")]
    pub seen_on: Vec<Spanned<RawSighting>>,
    /// Interfaces that must not.
    #[serde(default)]
    #[schemars(with = "Vec<RawSighting>")]
    pub not_seen_on: Vec<Spanned<RawSighting>>,
    /// The client address the server saw (after any NAT).
    #[serde(default)]
    #[schemars(with = "Option<Ipv4Text>")]
    pub server_saw_client: Option<Spanned<String>>,
    /// The pod or namespace whose built-in server answered (HTTP): which
    /// endpoint served, e.g. a pod restarted elsewhere with the same
    /// address.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub served_by: Option<Spanned<String>>,
    /// How many devices the request's path crosses: the path as derived,
    /// each crossing once (an interface crossed again on a return leg
    /// counts again), the VPC and each switch once per visit, a bridge put
    /// between two of its ports once.
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub devices: Option<Spanned<u32>>,
    /// How many hops the request makes, counted as a network engineer
    /// counts them on a drawing: the path's devices, where a device and the
    /// one stacked right on or under it (a vlan on its parent, a bond on
    /// its active slave) crossed one after the other are one hop (a NIC, a
    /// gateway sub-interface), and switches crossed one after the other
    /// are one hop (the switched network). The report lists the hops.
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub hops: Option<Spanned<u32>>,
    /// Neighbour (ARP) entries a namespace must hold, or must not, after
    /// the traffic, read from the kernel like `ip neigh show`.
    #[serde(default)]
    pub neighbours: Vec<RawNeighbourExpect>,
    /// The nftables ruleset of a namespace after the traffic, read there
    /// like `nft list ruleset`: `{in: node, empty: true}` says it holds no
    /// table at all (so no chain and no rule, iptables-nft's included),
    /// and no legacy iptables table is loaded there either.
    #[serde(default)]
    pub nftables: Vec<RawNftExpect>,
    /// Conntrack entries a node must hold for the flow.
    #[serde(default)]
    pub conntrack: Vec<RawConntrackExpect>,
    /// The round-trip time the client measured, in milliseconds: ping's
    /// echo request to reply, TCP's connect (SYN to SYN-ACK), UDP's
    /// datagram to echo, HTTP's connect to the end of the response.
    #[serde(default)]
    #[schemars(with = "Option<RawRange>")]
    pub rtt_ms: Option<Spanned<RawRange>>,
    /// TCP segments the client's socket retransmitted (`tcpi_total_retrans`
    /// of TCP_INFO), for tcp and http.
    #[serde(default)]
    #[schemars(with = "Option<RawRange>")]
    pub retransmits: Option<Spanned<RawRange>>,
}

/// A conntrack entry a namespace must hold after the traffic, like a line of
/// `conntrack -L`: tuples written `SRC[:PORT] -> DST[:PORT]` (a missing
/// port matches any).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ConntrackExpect")]
pub struct RawConntrackExpect {
    /// A node (or `vpc`).
    #[schemars(with = "String")]
    pub on: Spanned<String>,
    /// The first packet's direction, e.g. `172.23.96.23 -> 192.168.13.23:80`.
    #[schemars(with = "String")]
    pub original: Spanned<String>,
    /// The answer's, e.g. `172.23.96.163:80 -> 172.23.96.23`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub reply: Option<Spanned<String>>,
}

/// A neighbour entry a namespace must (or must not) hold after the traffic.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "NeighbourExpect")]
pub struct RawNeighbourExpect {
    /// The namespace, node, pod or client whose table is read.
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    /// Only entries on this interface (default: any).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub dev: Option<Spanned<String>>,
    #[schemars(with = "Ipv4Text")]
    pub address: Spanned<String>,
    /// Only an entry resolved to this MAC.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub lladdr: Option<Spanned<String>>,
    /// True (default): a resolved entry (not INCOMPLETE or FAILED) matching
    /// `address`, `dev` and `lladdr` exists. False: none does.
    #[serde(default)]
    pub present: Option<bool>,
}

/// What a namespace's nftables ruleset must be after the traffic.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "NftExpect")]
pub struct RawNftExpect {
    /// The namespace, node, pod or client whose ruleset is read.
    #[serde(rename = "in")]
    #[schemars(with = "String")]
    pub netns: Spanned<String>,
    /// True: no nftables table and no legacy iptables table. False: some
    /// table.
    pub empty: bool,
}

/// Packets a set of interfaces must see (`seen_on`) or must not
/// (`not_seen_on`). A packet matches when every filter given matches it;
/// at least one filter is needed.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Sighting")]
pub struct RawSighting {
    /// The source or destination of any header: the outer one or one
    /// carried in VXLAN (for ARP, the sender or target address).
    #[serde(default)]
    #[schemars(with = "Option<Ipv4Text>")]
    pub address: Option<Spanned<String>>,
    /// The source MAC of any Ethernet header: the frame the interface
    /// carried or one carried in VXLAN.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub src_mac: Option<Spanned<String>>,
    /// Likewise the destination MAC (ff:ff:ff:ff:ff:ff for broadcast).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub dst_mac: Option<Spanned<String>>,
    /// The VLAN id of an 802.1Q tag of any Ethernet header (the tap puts
    /// back the tag the kernel took out of the frame).
    #[serde(default)]
    #[schemars(with = "Option<u16>", range(max = 4094))]
    pub vlan: Option<Spanned<u32>>,
    /// The VXLAN network identifier of an encapsulated packet.
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(max = 16777215))]
    pub vni: Option<Spanned<u32>>,
    /// The protocol of the innermost packet: `arp` (with `capture: {arp:
    /// true}`), `icmp`, `tcp` or `udp`.
    #[serde(default)]
    #[schemars(with = "Option<RawSightProto>")]
    pub protocol: Option<Spanned<RawSightProto>>,
    /// `ENTITY/IFNAME`, `POD/host` or `vpc` (any VPC interface).
    #[schemars(with = "Vec<String>")]
    pub interfaces: Vec<Spanned<String>>,
    /// In `seen_on`: no other interface may see such a packet (with no
    /// `interfaces`: no interface at all may, as for a service address that
    /// eBPF translates before any tap).
    #[serde(default)]
    pub only: bool,
}

/// The protocol filter of a sighting.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "SightProtocol")]
pub enum RawSightProto {
    Arp,
    Icmp,
    Tcp,
    Udp,
}
