//! Kubernetes services as plan steps: per node the steps of the service
//! proxy ([`ServiceProxy`], kube-proxy's IPVS mode), the SLB's IPVS table
//! in the VPC, and the sysctls they need. The tables themselves are
//! computed in [`crate::services`]; these steps carry them to the executor
//! for `up` and for a scenario's re-programming alike. (kube-ipvs0 and the
//! addresses it and the SLB hold are objects of the namespaces:
//! `Lab::lowered`.)

use std::net::Ipv4Addr;

use labctl_topology::{Lab, Node, ProxyMode, Service};

use super::{Action, Phase, Step};
use crate::kernel::{ipvs, nft, sysctl};
use crate::services::{Overrides, effective, node_ruleset, node_table, slb_table};

/// A service proxy mode: what it programs in one node.
pub trait ServiceProxy: Sync {
    /// The steps that replace the node's service programming.
    fn node_steps(
        &self,
        lab: &Lab,
        services: &[Service],
        node: &Node,
        pin: Option<Ipv4Addr>,
    ) -> Vec<Step>;
}

/// kube-proxy `--proxy-mode=ipvs`; see the module doc.
pub struct KubeProxyIpvs;

impl ServiceProxy for KubeProxyIpvs {
    fn node_steps(
        &self,
        lab: &Lab,
        services: &[Service],
        node: &Node,
        pin: Option<Ipv4Addr>,
    ) -> Vec<Step> {
        let netns = lab.netns(&node.name);
        vec![
            Step {
                phase: Phase::Services,
                netns: netns.clone(),
                action: Action::IpvsTable(ipvs::IpvsTable {
                    services: node_table(lab, services, node, pin),
                }),
            },
            Step {
                phase: Phase::Services,
                netns,
                action: Action::Nftables(nft::Nftables {
                    ruleset: node_ruleset(lab, services, node),
                }),
            },
        ]
    }
}

/// kube-proxy `--proxy-mode=nftables`: the `ip kube-proxy` table alone
/// ([`crate::services::nftables`]).
pub struct KubeProxyNftables;

impl ServiceProxy for KubeProxyNftables {
    fn node_steps(
        &self,
        lab: &Lab,
        services: &[Service],
        node: &Node,
        pin: Option<Ipv4Addr>,
    ) -> Vec<Step> {
        vec![Step {
            phase: Phase::Services,
            netns: lab.netns(&node.name),
            action: Action::Nftables(nft::Nftables {
                ruleset: crate::services::nftables::node_ruleset(lab, services, node, pin),
            }),
        }]
    }
}

/// The lab's proxy mode.
pub fn proxy(lab: &Lab) -> &'static dyn ServiceProxy {
    match lab.kube_proxy.mode {
        ProxyMode::Ipvs => &KubeProxyIpvs,
        ProxyMode::Nftables => &KubeProxyNftables,
    }
}

/// Every step that (re)programs the lab's services under `overrides`: per
/// node the proxy's steps, and the SLB in the VPC.
pub fn steps(lab: &Lab, overrides: &Overrides) -> Vec<Step> {
    if lab.services.is_empty() {
        return Vec::new();
    }
    let services = effective(lab, &overrides.changes);
    let pin = overrides
        .backend
        .as_deref()
        .and_then(|p| lab.pod(p))
        .map(|p| p.address.addr());
    let proxy = proxy(lab);
    let mut out: Vec<Step> = lab
        .nodes
        .iter()
        .flat_map(|n| proxy.node_steps(lab, &services, n, pin))
        .collect();
    if services.iter().any(|s| s.load_balancer_ip.is_some()) {
        out.push(Step {
            phase: Phase::Services,
            netns: lab.netns("vpc"),
            action: Action::IpvsTable(ipvs::IpvsTable {
                services: slb_table(
                    lab,
                    &services,
                    overrides.via_node.as_deref(),
                    overrides.backend.as_deref(),
                ),
            }),
        });
    }
    out
}

/// The sysctls kube-proxy sets on a node (and the VPC's bridges kept plain
/// switches), written after the services exist: the `net.ipv4.vs` and
/// `net.bridge` keys appear with their modules.
pub fn sysctl_steps(lab: &Lab) -> Vec<Step> {
    if lab.services.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut push = |netns: String, key: &str, value: &str| {
        out.push(Step {
            phase: Phase::Sysctls,
            netns,
            action: Action::Sysctl(sysctl::Sysctl {
                key: key.into(),
                value: value.into(),
            }),
        })
    };
    for n in &lab.nodes {
        if lab.uses_kube_ipvs() {
            push(lab.netns(&n.name), "net.ipv4.vs.conntrack", "1");
        }
        push(
            lab.netns(&n.name),
            "net.bridge.bridge-nf-call-iptables",
            "1",
        );
    }
    if lab.vpc.is_some() {
        push(lab.netns("vpc"), "net.bridge.bridge-nf-call-iptables", "0");
    }
    out
}
