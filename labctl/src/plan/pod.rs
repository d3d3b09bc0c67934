//! Pods as plan steps, one function per attachment: a veth from the node's
//! bridge into the pod ([`bridge`]), or an ipvlan slave of the node's ENI
//! moved into the pod ([`ipvlan`]); eth0 inside, with its address and
//! routes whatever the attachment.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use labctl_topology::{Attachment, Lab, Pod};

use super::node::Nodes;
use super::{Action, IfRef, Indexes, Phase, Step, pusher};
use crate::kernel::{addr, link, neigh, veth};

/// Append every pod's steps; returns each pod's eth0 ifindex, by pod name.
pub(super) fn steps(
    lab: &Lab,
    idx: &mut Indexes,
    steps: &mut Vec<Step>,
    nodes: &Nodes,
) -> HashMap<String, u32> {
    let mut parents = Parents {
        eni_index: &nodes.eni_index,
        host_slaves: HashMap::new(),
    };
    let mut pod_ifindex: HashMap<String, u32> = HashMap::new();
    for pod in &lab.pods {
        let pod_index = match &pod.attachment {
            Attachment::Ipvlan { parent, host_slave } => {
                ipvlan(lab, pod, parent, host_slave, idx, steps, &mut parents)
            }
            Attachment::Bridge { host_ifname } => {
                bridge(lab, pod, host_ifname, idx, steps, &nodes.bridge)
            }
        };
        pod_ifindex.insert(pod.name.clone(), pod_index);
        let pod_ns = lab.netns(&pod.name);
        let mut push = pusher(steps);
        // Inside the pod, whatever the attachment: its address and routes.
        push(
            Phase::Addresses,
            &pod_ns,
            Action::AddAddress(addr::AddAddress {
                ifname: pod.ifname.clone(),
                ifindex: pod_index,
                address: pod.address,
            }),
        );
        for route in &pod.routes {
            push(
                Phase::Routes,
                &pod_ns,
                Action::AddRoute(crate::kernel::route::AddRoute {
                    destination: route.destination,
                    via: Some(route.via),
                    ifname: pod.ifname.clone(),
                    ifindex: pod_index,
                }),
            );
        }
    }
    pod_ifindex
}

/// The ENIs ipvlan pods hang off: their ifindexes in the nodes, and each
/// node's own slave of them, made with the first pod that needs it.
struct Parents<'n> {
    /// (node, ENI name) -> its ifindex in the node.
    eni_index: &'n HashMap<(String, String), u32>,
    /// (node, host slave name) -> its ifindex in the node.
    host_slaves: HashMap<(String, String), u32>,
}

/// An ipvlan slave of the node's ENI `parent`, made in the node and moved
/// into the pod as its eth0, the node reaching it through its own slave
/// `host_slave`; returns the pod's ifindex.
fn ipvlan(
    lab: &Lab,
    pod: &Pod,
    parent: &str,
    host_slave: &str,
    idx: &mut Indexes,
    steps: &mut Vec<Step>,
    parents: &mut Parents,
) -> u32 {
    let Parents {
        eni_index,
        host_slaves,
    } = parents;
    let mut push = pusher(steps);
    let node_ns = lab.netns(&pod.node);
    let pod_ns = lab.netns(&pod.name);
    let parent = IfRef {
        name: parent.to_string(),
        ifindex: eni_index[&(pod.node.clone(), parent.to_string())],
    };
    let key = (pod.node.clone(), host_slave.to_string());
    let slave_index = match host_slaves.get(&key) {
        Some(i) => *i,
        None => {
            let i = idx.next(&node_ns);
            host_slaves.insert(key, i);
            push(
                Phase::Stacked,
                &node_ns,
                Action::AddIpvlan(crate::kernel::ipvlan::AddIpvlan {
                    name: host_slave.to_string(),
                    ifindex: i,
                    parent: parent.clone(),
                    netns: None,
                }),
            );
            // As Terway sets up ipvl_N: no ARP, the node's own
            // address (scope host). ipvlan switches frames
            // between its slaves by IP address: the pods reach
            // the node through this slave, the node reaches them
            // through it with its own MAC (no ARP).
            push(
                Phase::Addresses,
                &node_ns,
                Action::ArpOff(link::ArpOff {
                    ifname: host_slave.to_string(),
                    ifindex: i,
                }),
            );
            push(
                Phase::Addresses,
                &node_ns,
                Action::AddHostAddress(addr::AddHostAddress {
                    ifname: host_slave.to_string(),
                    ifindex: i,
                    address: node_address(lab, &pod.node),
                }),
            );
            i
        }
    };
    let pod_index = idx.next_in_both(&node_ns, &pod_ns);
    let temporary = labctl_topology::hashed_ifname("ipv", &pod.name);
    push(
        Phase::Stacked,
        &node_ns,
        Action::AddIpvlan(crate::kernel::ipvlan::AddIpvlan {
            name: temporary.clone(),
            ifindex: pod_index,
            parent,
            netns: Some(pod_ns.clone()),
        }),
    );
    push(
        Phase::Addresses,
        &pod_ns,
        Action::RenameUp(link::RenameUp {
            from: temporary,
            ifname: pod.ifname.clone(),
            ifindex: pod_index,
        }),
    );
    push(
        Phase::Routes,
        &pod_ns,
        Action::SelfNeighbour(neigh::SelfNeighbour {
            ifname: pod.ifname.clone(),
            ifindex: pod_index,
            address: node_address(lab, &pod.node),
        }),
    );
    // The node reaches the pod through its own slave of the ENI.
    push(
        Phase::Routes,
        &node_ns,
        Action::AddRoute(crate::kernel::route::AddRoute {
            destination: Ipv4Net::new(pod.address.addr(), 32).expect("/32"),
            via: None,
            ifname: host_slave.to_string(),
            ifindex: slave_index,
        }),
    );
    pod_index
}

/// A veth from the node's bridge (`host_ifname` on its side) into the pod;
/// returns the pod's ifindex.
fn bridge(
    lab: &Lab,
    pod: &Pod,
    host_ifname: &str,
    idx: &mut Indexes,
    steps: &mut Vec<Step>,
    node_bridge: &HashMap<&str, IfRef>,
) -> u32 {
    let mut push = pusher(steps);
    let node_ns = lab.netns(&pod.node);
    let pod_ns = lab.netns(&pod.name);
    let host_index = idx.next(&node_ns);
    let pod_index = idx.next(&pod_ns);
    push(
        Phase::Links,
        &node_ns,
        Action::AddVeth(veth::AddVeth {
            name: host_ifname.to_string(),
            ifindex: host_index,
            mac: None,
            controller: node_bridge.get(pod.node.as_str()).cloned(),
            peer_name: pod.ifname.clone(),
            peer_netns: pod_ns.clone(),
            peer_ifindex: pod_index,
            peer_mac: pod.mac,
        }),
    );
    push(
        Phase::Addresses,
        &pod_ns,
        Action::LinkUp(link::LinkUp {
            ifname: pod.ifname.clone(),
            ifindex: pod_index,
        }),
    );
    if lab.node(&pod.node).is_some_and(|n| n.hairpin_mode) {
        push(
            Phase::Addresses,
            &node_ns,
            Action::SetPort(crate::kernel::bridge::SetPort {
                ifname: host_ifname.to_string(),
                ifindex: host_index,
                learning: None,
                neigh_suppress: None,
                isolated: None,
                hairpin: Some(true),
            }),
        );
    }
    pod_index
}

/// A node's own address: that of its first interface (which always has
/// one).
fn node_address(lab: &Lab, node: &str) -> Ipv4Addr {
    lab.node(node)
        .and_then(|n| crate::services::node_addresses(n).next())
        .expect("a resolved node's first interface has an address")
}
