//! The VPC's one plan step that is no kernel object of the low-level
//! layer: with isolated ports, the bridge-family nft table that keeps an
//! ENI's ARP for its own addresses from the router. Its bridges, ports,
//! routes and sysctls are lowered objects (`Lab::lowered`).

use labctl_topology::{Attachment, Lab};

use super::{Action, Phase, Step};
use crate::kernel::nft;

/// A cloud vSwitch: ENIs reach each other only through the router, which
/// answers their ARP for any address of the subnet (proxy ARP), but never
/// for an address on the asking ENI itself, which the node switches inside
/// (ipvlan): a bridge-family rule keeps those requests from the router.
pub(super) fn same_eni_rules(lab: &Lab) -> Option<Step> {
    lab.vpc.as_ref().filter(|v| v.isolated_ports)?;
    Some(Step {
        phase: Phase::Routes,
        netns: lab.netns("vpc"),
        action: Action::Nftables(nft::Nftables {
            ruleset: same_eni_table(lab),
        }),
    })
}

/// The VPC's `bridge vswitch` table: ARP requests that come in on an ENI's
/// port for an address on that same ENI (the ENI's own, its ipvlan pods')
/// are kept from the router, so only the node answers them.
fn same_eni_table(lab: &Lab) -> String {
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
