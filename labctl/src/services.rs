//! Kubernetes services as kube-proxy programs them, and the cloud SLB in
//! front of them.
//!
//! What the kernel gets is computed here as plain values (IPVS tables and
//! nftables rulesets per namespace), so tests read them without root; the
//! plan turns them into steps (`plan/services.rs`) that serve `up`
//! and a scenario's temporary changes ([`Overrides`]) alike, each replacing
//! its namespace's whole table, as kube-proxy's sync loop does. The kernel
//! side (IPVS over generic netlink, `nft -f`) is in `kernel/ipvs.rs` and
//! `kernel/nft.rs`; this module plans and applies nothing.
//!
//! kube-proxy's modes sit behind the plan's `ServiceProxy`.
//! The one shipped is kube-proxy's IPVS mode, what the Flannel article runs: every service address
//! on the node's dummy `kube-ipvs0`, an IPVS virtual service per address and
//! port with the endpoints as NAT real servers (all of them, or only the
//! node's own for `externalTrafficPolicy: Local` on external addresses and
//! node ports), and its iptables rules as one nftables table: traffic to a
//! ClusterIP from outside the pod network, to an external or load balancer
//! address, or to a node port is marked `0x4000` and masqueraded on its way
//! out, except under `Local` policy; a new connection to a service address
//! on a port no service has is rejected (KUBE-IPVS-FILTER), and traffic
//! from loopback addresses is left alone. `sessionAffinity: ClientIP`
//! makes the virtual services persistent for its timeout, and
//! `loadBalancerSourceRanges` drops other sources to the load balancer
//! address (KUBE-LOAD-BALANCER-FW). `net.ipv4.vs.conntrack = 1` keeps
//! the IPVS-translated flows in conntrack (as kube-proxy sets it), and
//! `net.bridge.bridge-nf-call-iptables = 1` sends bridged pod traffic
//! through those hooks, so a reply from a backend on the same bridge is
//! translated back.
//!
//! Rules are written in nft's own syntax and applied with `nft -f` inside
//! the node's namespace, as kube-proxy's nftables mode does (knftables): it
//! is what `nft list ruleset` shows back, so `labctl plan --script` is
//! readable; the `nftables` crate's JSON model would add nothing here.
//!
//! The SLB is IPVS in the VPC's namespace, on the return path of every node
//! (their default route is the VPC): its address is local there (on `lo`),
//! and it forwards to nodeIP:nodePort in NAT mode, which keeps the client's
//! address, with all nodes in the server group under `Cluster` policy and
//! only the nodes holding an endpoint under `Local`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use labctl_topology::{
    KubeProxy, Lab, Node, Protocol, Service, ServiceChange, ServicePort, TrafficPolicy,
};

pub mod nftables;
use serde::Serialize;

/// kube-proxy's masquerade mark (`--iptables-masquerade-bit=14`).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// One IPVS virtual service, `ipvsadm -A -t ADDR:PORT -s rr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VirtualService {
    pub protocol: Protocol,
    pub address: Ipv4Addr,
    pub port: u16,
    /// What it is for, e.g. `nginx1 node port`, for plans and reports.
    pub comment: String,
    /// `sessionAffinity: ClientIP`'s timeout: a persistent service,
    /// `ipvsadm -A ... -p TIMEOUT` (kube-proxy's IPVS proxier sets
    /// `IP_VS_SVC_F_PERSISTENT` with the affinity's timeout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent: Option<u32>,
    pub dests: Vec<RealServer>,
}

/// One real server, `ipvsadm -a -t VIP:PORT -r ADDR:PORT -m -w WEIGHT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RealServer {
    pub address: Ipv4Addr,
    pub port: u16,
    /// 0 takes it out of new connections (a scenario's pin).
    pub weight: u32,
}

/// A scenario's temporary view of the services, for kube-proxy, the SLB
/// and the eBPF load balancer alike.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub changes: Vec<ServiceChange>,
    /// The endpoint pod every load balancer that could pick it must pick.
    pub backend: Option<String>,
    /// The node the SLB must pick.
    pub via_node: Option<String>,
    /// Overrides the topology's `ebpf.in_cluster_external`.
    pub in_cluster_external: Option<bool>,
}

impl Overrides {
    /// A scenario's `changes`, `backend`, `via_node` and
    /// `in_cluster_external`.
    pub fn of(sc: &labctl_topology::Scenario) -> Overrides {
        Overrides {
            changes: sc.changes.clone(),
            backend: sc.backend.clone(),
            via_node: sc.via_node.clone(),
            in_cluster_external: sc.in_cluster_external,
        }
    }

    /// Whether the topology's own settings stand.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.backend.is_none()
            && self.via_node.is_none()
            && self.in_cluster_external.is_none()
    }
}

/// The services with a scenario's changes applied.
pub fn effective(lab: &Lab, changes: &[ServiceChange]) -> Vec<Service> {
    lab.services
        .iter()
        .map(|svc| {
            let mut svc = svc.clone();
            for c in changes.iter().filter(|c| c.service == svc.name) {
                if let Some(p) = c.external_traffic_policy {
                    svc.external_traffic_policy = p;
                }
                svc.endpoints.retain(|e| !c.remove_endpoints.contains(e));
            }
            svc
        })
        .collect()
}

/// The node's addresses node ports listen on: its ENIs' (the first is the
/// node's own).
/// The sources a load balancer address with source ranges takes new
/// connections from on `node`, in both proxy modes: the ranges, and the
/// address itself when a range holds the node's own IP (kube-proxy's
/// allowFromNode: the node reaches the address as a local one, from it).
pub(crate) fn allowed_sources(svc: &Service, node: &Node, lb: Ipv4Addr) -> Vec<String> {
    let ranges = &svc.load_balancer_source_ranges;
    let mut sources: Vec<String> = ranges.iter().map(|n| n.to_string()).collect();
    if node_addresses(node)
        .next()
        .is_some_and(|ip| ranges.iter().any(|n| n.contains(&ip)))
    {
        sources.push(lb.to_string());
    }
    sources
}

pub(crate) fn node_addresses(node: &Node) -> impl Iterator<Item = Ipv4Addr> + '_ {
    node.interfaces
        .iter()
        .filter_map(|i| i.address.map(|a| a.addr()))
}

/// Real servers, weight 0 for all but `pin` when `pin` is among them.
fn real_servers(dests: Vec<(Ipv4Addr, u16)>, pin: Option<Ipv4Addr>) -> Vec<RealServer> {
    let pinned = pin.filter(|p| dests.iter().any(|(a, _)| a == p));
    dests
        .into_iter()
        .map(|(address, port)| RealServer {
            address,
            port,
            weight: match pinned {
                Some(p) if p != address => 0,
                _ => 1,
            },
        })
        .collect()
}

/// A service port's endpoints as one node's kube-proxy sorts them
/// (kube-proxy's `CategorizeEndpoints`): those Cluster policy uses, those
/// a Local policy uses (the node's own), and whether it has any at all.
pub(crate) struct Categorized {
    pub cluster: Vec<(Ipv4Addr, u16)>,
    pub local: Vec<(Ipv4Addr, u16)>,
    pub any: bool,
}

pub(crate) fn categorize(lab: &Lab, svc: &Service, port: &ServicePort, node: &Node) -> Categorized {
    let pods: Vec<_> = svc.endpoints.iter().filter_map(|e| lab.pod(e)).collect();
    let ep = |p: &&labctl_topology::Pod| (p.address.addr(), port.target_port);
    let internal_local = svc.internal_traffic_policy == TrafficPolicy::Local;
    let external_local = svc.external_traffic_policy == TrafficPolicy::Local;
    let external = svc.externally_accessible();
    let uses_cluster = !internal_local || (external && !external_local);
    let uses_local = internal_local || (external && external_local);
    Categorized {
        cluster: if uses_cluster {
            pods.iter().map(ep).collect()
        } else {
            Vec::new()
        },
        local: if uses_local {
            pods.iter()
                .filter(|p| p.node == node.name)
                .map(ep)
                .collect()
        } else {
            Vec::new()
        },
        any: !pods.is_empty(),
    }
}

/// The real servers of one IPVS virtual service (kube-proxy's IPVS
/// `syncEndpoint`): for a Local policy the node's own endpoints, or, on a
/// node with none, since 1.21 the cluster's (kubernetes#97081: "allow
/// access from local pods even if no local endpoints exist"), before it
/// none at all.
fn ipvs_endpoints(c: &Categorized, only_local: bool, kp: &KubeProxy) -> Vec<(Ipv4Addr, u16)> {
    if !only_local {
        c.cluster.clone()
    } else if !c.local.is_empty() || !kp.local_falls_back_to_cluster() {
        c.local.clone()
    } else {
        c.cluster.clone()
    }
}

/// kube-proxy's IPVS table on one node.
pub fn node_table(
    lab: &Lab,
    services: &[Service],
    node: &Node,
    pin: Option<Ipv4Addr>,
) -> Vec<VirtualService> {
    let kp = &lab.kube_proxy;
    let mut out = Vec::new();
    for svc in services {
        for port in &svc.ports {
            let c = categorize(lab, svc, port, node);
            let internal =
                ipvs_endpoints(&c, svc.internal_traffic_policy == TrafficPolicy::Local, kp);
            let external =
                ipvs_endpoints(&c, svc.external_traffic_policy == TrafficPolicy::Local, kp);
            let mut add =
                |address: Ipv4Addr, port_no: u16, what: &str, dests: &Vec<(Ipv4Addr, u16)>| {
                    out.push(VirtualService {
                        protocol: port.protocol,
                        address,
                        port: port_no,
                        comment: format!("{} {what}", svc.name),
                        persistent: svc.session_affinity,
                        dests: real_servers(dests.clone(), pin),
                    });
                };
            add(svc.cluster_ip, port.port, "cluster ip", &internal);
            for ip in &svc.external_ips {
                add(*ip, port.port, "external ip", &external);
            }
            if let Some(ip) = svc.load_balancer_ip {
                add(ip, port.port, "load balancer ip", &external);
            }
            if let Some(np) = port.node_port {
                for a in node_addresses(node) {
                    add(a, np, "node port", &external);
                }
            }
        }
    }
    out
}

pub(crate) fn l4(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// kube-proxy's IPVS-mode iptables rules on `node` (masquerading and the
/// access filter of the service addresses), as an `nft -f` script that
/// replaces the `ip kube-proxy` table.
pub fn node_ruleset(lab: &Lab, services: &[Service], node: &Node) -> String {
    let pod_cidrs: BTreeSet<String> = lab
        .nodes
        .iter()
        .filter_map(|n| n.pod_cidr)
        .map(|c| c.to_string())
        .collect();
    // KUBE-SERVICES' first rule: "Dismiss connects to localhost early in
    // the service chain" (loopback is never a node port address either).
    let mut rules = String::from("\t\tip saddr 127.0.0.0/8 return\n");
    for svc in services {
        let cluster = svc.external_traffic_policy == TrafficPolicy::Cluster;
        for port in &svc.ports {
            let proto = l4(port.protocol);
            // KUBE-CLUSTER-IP: from outside the cluster's pod network.
            if !pod_cidrs.is_empty() {
                let _ = writeln!(
                    rules,
                    "\t\tip daddr {} {proto} dport {} ip saddr != {{ {} }} jump mark-for-masquerade comment \"{} cluster ip\"",
                    svc.cluster_ip,
                    port.port,
                    pod_cidrs.iter().cloned().collect::<Vec<_>>().join(", "),
                    svc.name
                );
            } else {
                let _ = writeln!(
                    rules,
                    "\t\tip daddr {} {proto} dport {} jump mark-for-masquerade comment \"{} cluster ip\"",
                    svc.cluster_ip, port.port, svc.name
                );
            }
            // KUBE-LOAD-BALANCER-FW -> KUBE-FIREWALL: a load balancer
            // address with source ranges takes new connections only from
            // KUBE-LOAD-BALANCER-SOURCE-CIDR (and, when a range holds the
            // node's IP, from the address itself,
            // KUBE-LOAD-BALANCER-SOURCE-IP); the rest are marked for drop
            // (KUBE-MARK-DROP), dropped here at once. Whatever the policy.
            if let Some(ip) = svc.load_balancer_ip
                && !svc.load_balancer_source_ranges.is_empty()
            {
                let sources = allowed_sources(svc, node, ip);
                let _ = writeln!(
                    rules,
                    "\t\tip daddr {ip} {proto} dport {} ip saddr != {{ {} }} drop comment \"{} load balancer firewall\"",
                    port.port,
                    sources.join(", "),
                    svc.name
                );
            }
            if !cluster {
                // KUBE-EXTERNAL-IP-LOCAL, KUBE-LOAD-BALANCER-LOCAL,
                // KUBE-NODE-PORT-LOCAL: accepted as they are.
                continue;
            }
            for ip in &svc.external_ips {
                let _ = writeln!(
                    rules,
                    "\t\tip daddr {ip} {proto} dport {} jump mark-for-masquerade comment \"{} external ip\"",
                    port.port, svc.name
                );
            }
            if let Some(ip) = svc.load_balancer_ip {
                let _ = writeln!(
                    rules,
                    "\t\tip daddr {ip} {proto} dport {} jump mark-for-masquerade comment \"{} load balancer ip\"",
                    port.port, svc.name
                );
            }
            if let Some(np) = port.node_port {
                let _ = writeln!(
                    rules,
                    "\t\tfib daddr type local {proto} dport {np} jump mark-for-masquerade comment \"{} node port\"",
                    svc.name
                );
            }
        }
    }
    // KUBE-LOOP-BACK: a local endpoint reaching its own service gets its
    // own connection back; masqueraded, the reply returns through the node
    // to be translated back (kube-proxy's IPVS proxier, KUBE-POSTROUTING).
    let mut loop_back = BTreeSet::new();
    for svc in services {
        for port in &svc.ports {
            for p in svc.endpoints.iter().filter_map(|e| lab.pod(e)) {
                if p.node == node.name {
                    let a = p.address.addr();
                    loop_back.insert(format!(
                        "{a} . {} . {} . {a}",
                        l4(port.protocol),
                        port.target_port
                    ));
                }
            }
        }
    }
    let loop_back_set = if loop_back.is_empty() {
        String::new()
    } else {
        format!(
            "\tset loop-back {{\n\
             \t\ttype ipv4_addr . inet_proto . inet_service . ipv4_addr\n\
             \t\telements = {{ {} }}\n\
             \t}}\n",
            loop_back.into_iter().collect::<Vec<_>>().join(", ")
        )
    };
    let loop_back_rule = if loop_back_set.is_empty() {
        ""
    } else {
        "\t\tip daddr . meta l4proto . th dport . ip saddr @loop-back masquerade\n"
    };
    let ipvs_filter = ipvs_filter(services);
    replace_table(
        "ip kube-proxy",
        &format!(
            "\tchain nat-prerouting {{\n\
         \t\ttype nat hook prerouting priority -100; policy accept;\n\
         \t\tjump services\n\
         \t}}\n\
         \tchain nat-output {{\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tjump services\n\
         \t}}\n\
         \tchain services {{\n\
         {rules}\
         \t}}\n\
         {loop_back_set}\
         \tchain mark-for-masquerade {{\n\
         \t\tmeta mark set meta mark | {MASQUERADE_MARK:#010x}\n\
         \t}}\n\
         \tchain nat-postrouting {{\n\
         \t\ttype nat hook postrouting priority 100; policy accept;\n\
         {loop_back_rule}\
         \t\tmeta mark & {MASQUERADE_MARK:#010x} == {MASQUERADE_MARK:#010x} masquerade\n\
         \t}}\n\
         {ipvs_filter}"
        ),
    )
}

/// KUBE-IPVS-FILTER (kubernetes#72236): a new connection to an address on
/// kube-ipvs0 is rejected (ICMP port unreachable) unless it is for one of
/// the services' address, protocol and port, so a service address opens no
/// other port of the node. In the filter table's INPUT, ahead of IPVS.
fn ipvs_filter(services: &[Service]) -> String {
    let ips: BTreeSet<Ipv4Addr> = services.iter().flat_map(|s| s.addresses()).collect();
    let mut ports = BTreeSet::new();
    for svc in services {
        for port in &svc.ports {
            for a in svc.addresses() {
                ports.insert((a, l4(port.protocol), port.port));
            }
        }
    }
    if ips.is_empty() {
        return String::new();
    }
    let join = |v: Vec<String>| v.join(", ");
    format!(
        "\tset ipvs-ips {{\n\
         \t\ttype ipv4_addr\n\
         \t\telements = {{ {} }}\n\
         \t}}\n\
         \tset service-ports {{\n\
         \t\ttype ipv4_addr . inet_proto . inet_service\n\
         \t\telements = {{ {} }}\n\
         \t}}\n\
         \tchain ipvs-filter {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tip daddr . meta l4proto . th dport @service-ports return\n\
         \t\tct state new ip daddr @ipvs-ips reject\n\
         \t}}\n",
        join(ips.iter().map(|a| a.to_string()).collect()),
        join(
            ports
                .into_iter()
                .map(|(a, proto, port)| format!("{a} . {proto} . {port}"))
                .collect()
        ),
    )
}

/// An `nft -f` script that replaces table `family name` (e.g. `ip
/// kube-proxy`) by one with `body`, atomically: declaring it first makes
/// the delete work whether or not it exists.
pub fn replace_table(table: &str, body: &str) -> String {
    format!("table {table}\ndelete table {table}\ntable {table} {{\n{body}}}\n")
}

/// The nodes in a service's SLB server group.
pub fn server_group<'a>(lab: &'a Lab, svc: &Service) -> Vec<&'a Node> {
    lab.nodes
        .iter()
        .filter(|n| match svc.external_traffic_policy {
            TrafficPolicy::Cluster => true,
            TrafficPolicy::Local => svc
                .endpoints
                .iter()
                .filter_map(|e| lab.pod(e))
                .any(|p| p.node == n.name),
        })
        .collect()
}

/// The SLB's IPVS table in the VPC.
pub fn slb_table(
    lab: &Lab,
    services: &[Service],
    via_node: Option<&str>,
    backend: Option<&str>,
) -> Vec<VirtualService> {
    let pin = via_node
        .and_then(|n| lab.node(n))
        .and_then(|n| node_addresses(n).next());
    let pod_pin = backend.and_then(|p| lab.pod(p)).map(|p| p.address.addr());
    let mut out = Vec::new();
    for svc in services {
        let Some(vip) = svc.load_balancer_ip else {
            continue;
        };
        let group = server_group(lab, svc);
        for port in &svc.ports {
            // To nodeIP:nodePort, or without node ports straight to the
            // pods' addresses (Terway: pods hold ENI addresses).
            let dests = match port.node_port {
                Some(np) => group
                    .iter()
                    .filter_map(|n| node_addresses(n).next())
                    .map(|a| (a, np))
                    .collect(),
                None => svc
                    .endpoints
                    .iter()
                    .filter_map(|e| lab.pod(e))
                    .map(|p| (p.address.addr(), port.target_port))
                    .collect(),
            };
            out.push(VirtualService {
                protocol: port.protocol,
                address: vip,
                port: port.port,
                comment: format!("{} slb", svc.name),
                persistent: None,
                dests: real_servers(
                    dests,
                    if port.node_port.is_some() {
                        pin
                    } else {
                        pod_pin
                    },
                ),
            });
        }
    }
    out
}

/// Why a scenario's pins cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    #[error(
        "via_node {0}: the node is in no SLB server group (under Local policy only nodes with an endpoint are)"
    )]
    NotInServerGroup(String),
}

/// Whether a scenario's pins can hold.
pub fn check_overrides(lab: &Lab, o: &Overrides) -> Result<(), OverrideError> {
    let services = effective(lab, &o.changes);
    if let Some(n) = &o.via_node {
        let in_some = services
            .iter()
            .filter(|s| s.load_balancer_ip.is_some())
            .any(|s| server_group(lab, s).iter().any(|g| &g.name == n));
        if !in_some {
            return Err(OverrideError::NotInServerGroup(n.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn flannel() -> Lab {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/flannel.yaml");
        labctl_topology::load(&path, &BTreeMap::new()).expect("flannel.yaml loads")
    }

    fn table<'a>(t: &'a [VirtualService], addr: &str, port: u16) -> &'a VirtualService {
        t.iter()
            .find(|v| v.address.to_string() == addr && v.port == port)
            .unwrap_or_else(|| panic!("no {addr}:{port} in {t:#?}"))
    }

    fn dests(v: &VirtualService) -> Vec<String> {
        v.dests
            .iter()
            .map(|d| format!("{}:{}/{}", d.address, d.port, d.weight))
            .collect()
    }

    #[test]
    fn local_policy_lists_only_the_nodes_own_endpoints() {
        let lab = flannel();
        let services = effective(&lab, &[]);
        let n180 = node_table(&lab, &services, lab.node("node-180").unwrap(), None);
        // nginx1 is Local: node-180 has none of its pods.
        assert!(table(&n180, "8.219.164.113", 80).dests.is_empty());
        assert!(table(&n180, "10.0.0.180", 32580).dests.is_empty());
        // Its ClusterIP has all endpoints everywhere.
        assert_eq!(dests(table(&n180, "192.168.13.23", 80)).len(), 3);
        let n216 = node_table(&lab, &services, lab.node("node-216").unwrap(), None);
        assert_eq!(
            dests(table(&n216, "10.0.1.216", 32580)),
            ["172.23.96.82:80/1"]
        );
    }

    #[test]
    fn slb_server_group_follows_policy_and_endpoints() {
        let lab = flannel();
        let services = effective(&lab, &[]);
        let slb = slb_table(&lab, &services, None, None);
        assert_eq!(
            dests(table(&slb, "8.219.164.113", 80)),
            ["10.0.1.206:32580/1", "10.0.1.216:32580/1"]
        );
        assert_eq!(dests(table(&slb, "8.219.164.114", 80)).len(), 3);
        let removed = effective(
            &lab,
            &[ServiceChange {
                service: "nginx1".into(),
                external_traffic_policy: None,
                remove_endpoints: vec!["nginx1-s6z79".into()],
            }],
        );
        let slb = slb_table(&lab, &removed, None, None);
        assert_eq!(
            dests(table(&slb, "8.219.164.113", 80)),
            ["10.0.1.206:32580/1"]
        );
        let n216 = node_table(&lab, &removed, lab.node("node-216").unwrap(), None);
        assert!(table(&n216, "10.0.1.216", 32580).dests.is_empty());
    }

    #[test]
    fn pins_set_the_other_weights_to_zero() {
        let lab = flannel();
        let services = effective(&lab, &[]);
        let pin = Some("172.23.96.163".parse().unwrap());
        let n180 = node_table(&lab, &services, lab.node("node-180").unwrap(), pin);
        assert_eq!(
            dests(table(&n180, "192.168.13.23", 80)),
            [
                "172.23.96.163:80/1",
                "172.23.96.164:80/0",
                "172.23.96.82:80/0"
            ]
        );
        // A service the pinned pod is not behind keeps its weights.
        assert_eq!(
            dests(table(&n180, "192.168.13.24", 80)),
            ["172.23.96.24:80/1"]
        );
        let slb = slb_table(&lab, &services, Some("node-216"), None);
        assert_eq!(
            dests(table(&slb, "8.219.164.113", 80)),
            ["10.0.1.206:32580/0", "10.0.1.216:32580/1"]
        );
        let o = Overrides {
            via_node: Some("node-180".into()),
            changes: vec![ServiceChange {
                service: "nginx2".into(),
                external_traffic_policy: Some(TrafficPolicy::Local),
                remove_endpoints: vec![],
            }],
            ..Overrides::default()
        };
        let err = check_overrides(&lab, &o).unwrap_err().to_string();
        assert!(
            err.contains("node-180 is in no SLB server group") || err.contains("via_node node-180"),
            "{err}"
        );
    }

    #[test]
    fn masquerade_follows_kube_proxy() {
        let lab = flannel();
        let services = effective(&lab, &[]);
        let rules = node_ruleset(&lab, &services, lab.node("node-180").unwrap());
        // Cluster policy: external IP, load balancer IP and node port marked.
        assert!(rules.contains("ip daddr 8.219.164.24 tcp dport 80 jump mark-for-masquerade"));
        assert!(rules.contains("fib daddr type local tcp dport 30875 jump mark-for-masquerade"));
        // Local policy: no mark for nginx1's SLB address or node port.
        let chain = rules
            .split("chain services {")
            .nth(1)
            .and_then(|r| r.split("\n\t}\n").next())
            .unwrap();
        assert!(!chain.contains("8.219.164.113"), "{chain}");
        assert!(!chain.contains("32580"));
        assert!(chain.contains("30875"), "{chain}");
        // ClusterIPs only from outside the pod network.
        assert!(rules.contains("ip daddr 192.168.13.23 tcp dport 80 ip saddr != { 172.23.96.0/26"));
        assert!(rules.contains("meta mark & 0x00004000 == 0x00004000 masquerade"));
    }

    #[test]
    fn ipvs_filter_rejects_other_ports_of_service_addresses() {
        let lab = flannel();
        let services = effective(&lab, &[]);
        let rules = node_ruleset(&lab, &services, lab.node("node-180").unwrap());
        // Every address on kube-ipvs0, and each with its services' ports.
        assert!(
            rules.contains("elements = { 8.219.164.24, 8.219.164.113, 8.219.164.114,"),
            "{rules}"
        );
        assert!(rules.contains("192.168.13.23 . tcp . 80, 192.168.13.24 . tcp . 80"));
        assert!(rules.contains("ip daddr . meta l4proto . th dport @service-ports return"));
        assert!(rules.contains("ct state new ip daddr @ipvs-ips reject"));
        // Loopback sources are never a service's.
        assert!(rules.contains("chain services {\n\t\tip saddr 127.0.0.0/8 return\n"));
    }

    fn flannel_with(vars: &[(&str, &str)]) -> Lab {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/flannel.yaml");
        let vars = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labctl_topology::load(&path, &vars).expect("flannel.yaml loads")
    }

    #[test]
    fn local_policy_falls_back_to_all_endpoints_from_1_21() {
        // nginx1 is Local; node-180 has none of its pods.
        for (version, want) in [("1.20", 0), ("1.21", 3), ("1.35", 3)] {
            let lab = flannel_with(&[("kube_proxy", version)]);
            let services = effective(&lab, &[]);
            let n180 = node_table(&lab, &services, lab.node("node-180").unwrap(), None);
            assert_eq!(
                table(&n180, "8.219.164.113", 80).dests.len(),
                want,
                "kube-proxy {version}"
            );
            // A node with a local endpoint keeps only its own, in every version.
            let n216 = node_table(&lab, &services, lab.node("node-216").unwrap(), None);
            assert_eq!(
                dests(table(&n216, "10.0.1.216", 32580)),
                ["172.23.96.82:80/1"]
            );
        }
    }

    #[test]
    fn internal_local_policy_keeps_clusterip_traffic_on_the_node() {
        let mut lab = flannel_with(&[("kube_proxy", "1.35")]);
        let nginx2 = lab
            .services
            .iter_mut()
            .find(|s| s.name == "nginx2")
            .unwrap();
        nginx2.internal_traffic_policy = TrafficPolicy::Local;
        let services = effective(&lab, &[]);
        let n216 = node_table(&lab, &services, lab.node("node-216").unwrap(), None);
        assert_eq!(
            dests(table(&n216, "192.168.13.25", 80)),
            ["172.23.96.82:80/1"]
        );
        // External traffic (Cluster) still goes to both.
        assert_eq!(dests(table(&n216, "10.0.1.216", 30875)).len(), 2);
        let rules = nftables::node_ruleset(&lab, &services, lab.node("node-180").unwrap(), None);
        // node-180 has no nginx2 pod: its ClusterIP is dropped there, its
        // node port still served.
        assert!(
            rules.contains("no-endpoint-services { 192.168.13.25 . tcp . 80 : drop }"),
            "{rules}"
        );
        assert!(
            rules.contains(
                "service-nodeports { tcp . 30875 : goto external-default/nginx2/tcp/p80 }"
            )
        );
    }

    #[test]
    fn ipvs_masquerades_hairpin_traffic_of_local_endpoints() {
        let lab = flannel();
        let services = effective(&lab, &[]);
        let n180 = node_ruleset(&lab, &services, lab.node("node-180").unwrap());
        assert!(
            n180.contains("elements = { 172.23.96.24 . tcp . 80 . 172.23.96.24 }"),
            "{n180}"
        );
        assert!(
            n180.contains("ip daddr . meta l4proto . th dport . ip saddr @loop-back masquerade")
        );
        let n206 = node_ruleset(&lab, &services, lab.node("node-206").unwrap());
        assert!(
            n206.contains(
                "172.23.96.163 . tcp . 80 . 172.23.96.163, 172.23.96.164 . tcp . 80 . 172.23.96.164"
            ),
            "{n206}"
        );
        assert!(!n206.contains("172.23.96.24 . tcp"));
    }

    #[test]
    fn nftables_ruleset_of_node_180() {
        let lab = flannel_with(&[("proxy", "nftables")]);
        let services = effective(&lab, &[]);
        let node = lab.node("node-180").unwrap();
        insta::assert_snapshot!(nftables::node_ruleset(&lab, &services, node, None));
        // A pin points every slot of the choice at the pinned endpoint.
        let pinned = nftables::node_ruleset(
            &lab,
            &services,
            node,
            Some("172.23.96.164".parse().unwrap()),
        );
        assert!(pinned.contains(
            "numgen random mod 3 vmap { 0 : goto endpoint-default/nginx1/tcp/p80__172.23.96.164/80, \
             1 : goto endpoint-default/nginx1/tcp/p80__172.23.96.164/80, \
             2 : goto endpoint-default/nginx1/tcp/p80__172.23.96.164/80 }"
        ), "{pinned}");
    }

    /// flannel.yaml with nginx1 (Local, SLB 8.219.164.113) under client IP
    /// affinity and source ranges holding node-216's address.
    fn flannel_affinity_ranges() -> Lab {
        let mut lab = flannel_with(&[("proxy", "nftables")]);
        let nginx1 = lab
            .services
            .iter_mut()
            .find(|s| s.name == "nginx1")
            .unwrap();
        nginx1.session_affinity = Some(600);
        nginx1.load_balancer_source_ranges = vec![
            "10.0.1.0/24".parse().unwrap(),
            "203.0.113.0/25".parse().unwrap(),
        ];
        lab
    }

    #[test]
    fn nftables_affinity_and_source_ranges() {
        let lab = flannel_affinity_ranges();
        let services = effective(&lab, &[]);
        let n216 = nftables::node_ruleset(&lab, &services, lab.node("node-216").unwrap(), None);
        // Only the affinity service's lines, and the firewall's.
        let lines: Vec<&str> = n216
            .lines()
            .filter(|l| l.contains("affinity") || l.contains("firewall"))
            .collect();
        insta::assert_snapshot!(lines.join("\n"));
        // node-180's address is in no range: the address itself is not
        // allowed there.
        let n180 = nftables::node_ruleset(&lab, &services, lab.node("node-180").unwrap(), None);
        assert!(
            n180.contains("ip saddr != { 10.0.1.0/24, 203.0.113.0/25 } drop"),
            "{n180}"
        );
        assert!(n216.contains("ip saddr != { 10.0.1.0/24, 203.0.113.0/25, 8.219.164.113 } drop"));
        // Services without affinity have no sets.
        assert!(!n216.contains("affinity-default/nginx2"));
    }

    #[test]
    fn ipvs_affinity_is_persistence_and_ranges_a_firewall() {
        let lab = flannel_affinity_ranges();
        let services = effective(&lab, &[]);
        let n216 = lab.node("node-216").unwrap();
        let t = node_table(&lab, &services, n216, None);
        assert_eq!(table(&t, "8.219.164.113", 80).persistent, Some(600));
        assert_eq!(table(&t, "10.0.1.216", 32580).persistent, Some(600));
        assert_eq!(table(&t, "192.168.13.24", 80).persistent, None);
        // The SLB is not kube-proxy's: not persistent.
        let slb = slb_table(&lab, &services, None, None);
        assert_eq!(table(&slb, "8.219.164.113", 80).persistent, None);
        let rules = node_ruleset(&lab, &services, n216);
        assert!(
            rules.contains(
                "ip daddr 8.219.164.113 tcp dport 80 ip saddr != { 10.0.1.0/24, 203.0.113.0/25, 8.219.164.113 } drop"
            ),
            "{rules}"
        );
        let rules = node_ruleset(&lab, &services, lab.node("node-180").unwrap());
        assert!(
            rules.contains("ip saddr != { 10.0.1.0/24, 203.0.113.0/25 } drop comment \"nginx1 load balancer firewall\""),
            "{rules}"
        );
    }
}
