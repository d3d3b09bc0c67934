//! Clients as plan steps: a veth to the VPC router, the VPC side holding
//! the gateway.

use ipnet::Ipv4Net;
use labctl_topology::Lab;

use super::{Action, Indexes, Phase, Step, pusher};
use crate::kernel::{addr, link, veth};

/// Append every client's steps.
pub(super) fn steps(lab: &Lab, idx: &mut Indexes, steps: &mut Vec<Step>) {
    let mut push = pusher(steps);
    let vpc = lab.netns("vpc");
    for client in &lab.clients {
        let ns = lab.netns(&client.name);
        let port_index = idx.next(&vpc);
        let ifindex = idx.next(&ns);
        push(
            Phase::Links,
            &vpc,
            Action::AddVeth(veth::AddVeth {
                name: client.vpc_port.clone(),
                ifindex: port_index,
                mac: None,
                controller: None,
                peer_name: "eth0".into(),
                peer_netns: ns.clone(),
                peer_ifindex: ifindex,
                peer_mac: None,
            }),
        );
        push(
            Phase::Addresses,
            &ns,
            Action::LinkUp(link::LinkUp {
                ifname: "eth0".into(),
                ifindex,
            }),
        );
        push(
            Phase::Addresses,
            &vpc,
            Action::AddAddress(addr::AddAddress {
                ifname: client.vpc_port.clone(),
                ifindex: port_index,
                address: Ipv4Net::new(client.gateway, client.address.prefix_len())
                    .expect("valid prefix"),
            }),
        );
        push(
            Phase::Addresses,
            &ns,
            Action::AddAddress(addr::AddAddress {
                ifname: "eth0".into(),
                ifindex,
                address: client.address,
            }),
        );
        push(
            Phase::Routes,
            &ns,
            Action::AddRoute(crate::kernel::route::AddRoute {
                destination: Ipv4Net::default(),
                via: Some(client.gateway),
                ifname: "eth0".into(),
                ifindex,
            }),
        );
    }
}
