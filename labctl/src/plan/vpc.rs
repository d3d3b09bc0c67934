//! The VPC as plan steps: one bridge per vSwitch holding its gateway, the
//! router's sysctls and isolated ports, and its route table.

use std::collections::HashMap;

use ipnet::Ipv4Net;
use labctl_topology::{Attachment, Lab};

use super::{Action, IfRef, Indexes, Phase, Step, pusher};
use crate::kernel::{addr, bridge, nft, sysctl};

/// The vSwitches' bridges in the VPC's namespace, by subnet name.
pub(super) type Vswitches<'a> = HashMap<&'a str, IfRef>;

/// Append the VPC's bridges, their gateways and the router's settings; its
/// routes come after the nodes' ([`routes`]).
pub(super) fn steps<'a>(lab: &'a Lab, idx: &mut Indexes, steps: &mut Vec<Step>) -> Vswitches<'a> {
    let mut push = pusher(steps);
    let vpc = lab.netns("vpc");
    let (vpc_subnets, isolated) = match &lab.vpc {
        Some(v) => (&v.subnets[..], v.isolated_ports),
        None => (&[][..], false),
    };
    let mut vsw: HashMap<&str, IfRef> = HashMap::new();
    for subnet in vpc_subnets {
        let ifindex = idx.next(&vpc);
        vsw.insert(
            subnet.name.as_str(),
            IfRef {
                name: subnet.name.clone(),
                ifindex,
            },
        );
        push(
            Phase::Devices,
            &vpc,
            Action::AddBridge(bridge::AddBridge {
                name: subnet.name.clone(),
                ifindex,
                mac: None,
            }),
        );
        let address = Ipv4Net::new(subnet.gateway, subnet.cidr.prefix_len())
            .expect("resolved prefix is valid");
        push(
            Phase::Addresses,
            &vpc,
            Action::AddAddress(addr::AddAddress {
                ifname: subnet.name.clone(),
                ifindex,
                address,
            }),
        );
    }
    // A cloud vSwitch routes; it does not send ICMP redirects to hosts that
    // could reach each other directly (a Linux router would, when a reply
    // leaves by the interface it came in on). The kernel ORs `all` with the
    // interface's own setting, so both are turned off.
    if lab.vpc.is_some() {
        push(
            Phase::Sysctls,
            &vpc,
            Action::Sysctl(sysctl::Sysctl {
                key: "net.ipv4.ip_forward".into(),
                value: "1".into(),
            }),
        );
        let vpc_ifs =
            std::iter::once("all".to_string()).chain(lab.interfaces_of("vpc").unwrap_or_default());
        for ifname in vpc_ifs {
            push(
                Phase::Sysctls,
                &vpc,
                Action::Sysctl(sysctl::Sysctl {
                    key: format!("net.ipv4.conf.{ifname}.send_redirects"),
                    value: "0".into(),
                }),
            );
        }
    }

    // A cloud vSwitch: ENIs reach each other only through the router, which
    // answers their ARP for any address of the subnet (proxy ARP, also back
    // out of the bridge it came in on: pvlan), at once; but never for an
    // address on the asking ENI itself, which the node switches inside
    // (ipvlan): a bridge-family rule keeps those requests from the router.
    if isolated {
        for subnet in vpc_subnets {
            for (key, value) in [
                (format!("net.ipv4.conf.{}.proxy_arp", subnet.name), "1"),
                (
                    format!("net.ipv4.conf.{}.proxy_arp_pvlan", subnet.name),
                    "1",
                ),
                (format!("net.ipv4.neigh.{}.proxy_delay", subnet.name), "0"),
            ] {
                push(
                    Phase::Sysctls,
                    &vpc,
                    Action::Sysctl(sysctl::Sysctl {
                        key,
                        value: value.into(),
                    }),
                );
            }
        }
        push(
            Phase::Routes,
            &vpc,
            Action::Nftables(nft::Nftables {
                ruleset: same_eni_rules(lab),
            }),
        );
    }
    vsw
}

/// Append the VPC's custom route entries: destination -> the node's ENI
/// address, out of the vSwitch that holds it.
pub(super) fn routes(lab: &Lab, vsw: &Vswitches, steps: &mut Vec<Step>) {
    let mut push = pusher(steps);
    let vpc = lab.netns("vpc");
    let (vpc_subnets, vpc_routes) = match &lab.vpc {
        Some(v) => (&v.subnets[..], &v.routes[..]),
        None => (&[][..], &[][..]),
    };
    for route in vpc_routes {
        let subnet = vpc_subnets.iter().find(|s| s.cidr.contains(&route.via));
        if let Some(subnet) = subnet {
            push(
                Phase::Routes,
                &vpc,
                Action::AddRoute(crate::kernel::route::AddRoute {
                    destination: route.destination,
                    via: Some(route.via),
                    ifname: subnet.name.clone(),
                    ifindex: vsw[subnet.name.as_str()].ifindex,
                }),
            );
        }
    }
}

/// The VPC's `bridge vswitch` table: ARP requests that come in on an ENI's
/// port for an address on that same ENI (the ENI's own, its ipvlan pods')
/// are kept from the router, so only the node answers them.
fn same_eni_rules(lab: &Lab) -> String {
    let mut rules = String::new();
    for node in &lab.nodes {
        for eni in &node.interfaces {
            let mut addrs: Vec<String> = eni.address.iter().map(|a| a.addr().to_string()).collect();
            addrs.extend(
                lab.pods
                    .iter()
                    .filter(|p| p.node == node.name)
                    .filter(|p| matches!(&p.attachment, Attachment::Ipvlan { parent, .. } if *parent == eni.name))
                    .map(|p| p.address.addr().to_string()),
            );
            if addrs.is_empty() {
                continue;
            }
            rules.push_str(&format!(
                "\t\tiifname \"{}\" arp operation request arp daddr ip {{ {} }} drop\n",
                eni.vpc_port,
                addrs.join(", ")
            ));
        }
    }
    crate::services::replace_table(
        "bridge vswitch",
        &format!(
            "\tchain same-eni-arp {{\n\
             \t\ttype filter hook input priority 0; policy accept;\n\
             {rules}\
             \t}}\n"
        ),
    )
}
