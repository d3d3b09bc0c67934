//! Nodes as plan steps: ENIs plugged into their vSwitch, the pod bridge,
//! the default route and the node's sysctls.

use std::collections::HashMap;

use ipnet::Ipv4Net;
use labctl_topology::Lab;

use super::vpc::Vswitches;
use super::{Action, IfRef, Indexes, Phase, Step, pusher};
use crate::kernel::{addr, bridge, link, sysctl, veth};

/// What the nodes offer their pods.
pub(super) struct Nodes<'a> {
    /// Each node's pod bridge, by node name.
    pub bridge: HashMap<&'a str, IfRef>,
    /// (node, ENI name) -> its ifindex in the node.
    pub eni_index: HashMap<(String, String), u32>,
}

/// Append every node's steps.
pub(super) fn steps<'a>(
    lab: &'a Lab,
    idx: &mut Indexes,
    steps: &mut Vec<Step>,
    vsw: &Vswitches,
) -> Nodes<'a> {
    let mut push = pusher(steps);
    let vpc = lab.netns("vpc");
    let isolated = lab.vpc.as_ref().is_some_and(|v| v.isolated_ports);
    let mut node_bridge = HashMap::new();
    // (node, ENI name) -> its ifindex in the node.
    let mut eni_index: HashMap<(String, String), u32> = HashMap::new();
    for node in &lab.nodes {
        let ns = lab.netns(&node.name);
        let mut first_eni = None;
        for eni in &node.interfaces {
            let port_index = idx.next(&vpc);
            let ifindex = idx.next(&ns);
            first_eni.get_or_insert((eni.name.clone(), ifindex));
            eni_index.insert((node.name.clone(), eni.name.clone()), ifindex);
            push(
                Phase::Links,
                &vpc,
                Action::AddVeth(veth::AddVeth {
                    name: eni.vpc_port.clone(),
                    ifindex: port_index,
                    mac: None,
                    controller: vsw.get(eni.subnet.as_str()).cloned(),
                    peer_name: eni.name.clone(),
                    peer_netns: ns.clone(),
                    peer_ifindex: ifindex,
                    peer_mac: eni.mac,
                }),
            );
            push(
                Phase::Addresses,
                &ns,
                Action::LinkUp(link::LinkUp {
                    ifname: eni.name.clone(),
                    ifindex,
                }),
            );
            if isolated {
                push(
                    Phase::Addresses,
                    &vpc,
                    Action::IsolatePort(link::IsolatePort {
                        ifname: eni.vpc_port.clone(),
                        ifindex: port_index,
                    }),
                );
            }
            if let Some(address) = eni.address {
                push(
                    Phase::Addresses,
                    &ns,
                    Action::AddAddress(addr::AddAddress {
                        ifname: eni.name.clone(),
                        ifindex,
                        address,
                    }),
                );
            }
        }
        if let (Some(cidr), Some(gw)) = (node.pod_cidr, node.pod_gateway) {
            let ifindex = idx.next(&ns);
            node_bridge.insert(
                node.name.as_str(),
                IfRef {
                    name: node.bridge.clone(),
                    ifindex,
                },
            );
            push(
                Phase::Devices,
                &ns,
                Action::AddBridge(bridge::AddBridge {
                    name: node.bridge.clone(),
                    ifindex,
                    mac: None,
                }),
            );
            push(
                Phase::Addresses,
                &ns,
                Action::AddAddress(addr::AddAddress {
                    ifname: node.bridge.clone(),
                    ifindex,
                    address: Ipv4Net::new(gw, cidr.prefix_len()).expect("valid prefix"),
                }),
            );
        }
        if let Some((ifname, ifindex)) = first_eni {
            push(
                Phase::Routes,
                &ns,
                Action::AddRoute(crate::kernel::route::AddRoute {
                    destination: Ipv4Net::default(),
                    via: Some(node.default_gateway),
                    ifname,
                    ifindex,
                }),
            );
        }
        for (key, value) in &node.sysctls {
            push(
                Phase::Sysctls,
                &ns,
                Action::Sysctl(sysctl::Sysctl {
                    key: key.clone(),
                    value: value.clone(),
                }),
            );
        }
    }
    Nodes {
        bridge: node_bridge,
        eni_index,
    }
}
