//! Resolution of the vpc's `subnets` (bridges, cidrs, gateways) and of
//! `nodes`: interfaces, addresses, MACs, ENIs, pod cidrs and sysctls.

use std::collections::{BTreeMap, HashMap};

use ipnet::Ipv4Net;
use serde_saphyr::Location;

use super::{
    DEFAULT_BRIDGE, NodeInfo, Resolver, first_host, ifname_problem, last_host, with_prefix,
};
use crate::error::unknown_hint;
use crate::model::*;
use crate::raw::*;

impl Resolver<'_> {
    pub(super) fn subnets(&mut self, raw: &[RawSubnet], vpc_cidr: Option<Ipv4Net>) -> Vec<Subnet> {
        let mut out = Vec::new();
        let mut names: HashMap<&str, Location> = HashMap::new();
        for s in raw {
            let name = &s.name.value;
            if let Some(first) = names.get(name.as_str()).copied() {
                let line = first.line();
                self.err_again(
                    &s.name.referenced,
                    &first,
                    format!("duplicate subnet name `{name}`, first at line {line}"),
                    "duplicate subnet",
                    Some("subnet names are bridge names in the vpc namespace".to_string()),
                );
            } else {
                names.insert(name, s.name.referenced);
                if self.ifname(
                    &s.name,
                    "subnet name",
                    "a subnet's name is also its bridge's interface name in the vpc namespace",
                ) {
                    self.vpc_ifname(name, format!("subnet {name}"), &s.name.referenced);
                }
            }
            let cidr = self.network(&s.cidr, "subnet cidr");
            let gateway = self.ipv4(&s.gateway, "gateway");
            if let Some(cidr) = cidr {
                if let Some(vpc) = vpc_cidr
                    && !(vpc.contains(&cidr))
                {
                    self.err(
                        &s.cidr.referenced,
                        format!("subnet {name} ({cidr}) is outside the vpc cidr {vpc}"),
                        &format!("outside {vpc}"),
                        Some(format!("vpc subnets must lie inside {vpc}")),
                    );
                }
                if !self.claim_network(cidr, format!("subnet {name}"), &s.cidr.referenced) {
                    // Its addresses would only repeat the overlap.
                    continue;
                }
            }
            let (Some(cidr), Some(gateway)) = (cidr, gateway) else {
                continue;
            };
            if self.inside(
                gateway,
                cidr,
                &s.gateway.referenced,
                || format!("gateway {gateway} is outside subnet {name} ({cidr})"),
                format!("the gateway is an address of subnet {name} ({cidr})"),
            ) {
                self.claim_address(
                    gateway,
                    format!("subnet {name} gateway"),
                    &s.gateway.referenced,
                );
            }
            out.push(Subnet {
                name: name.clone(),
                cidr,
                gateway,
            });
        }
        out
    }

    pub(super) fn node(
        &mut self,
        raw: &RawNode,
        subnets: &[Subnet],
        declared_subnets: &[&str],
    ) -> (Option<Node>, NodeInfo) {
        let name = &raw.name.value;
        let mut info = NodeInfo {
            name_loc: raw.name.referenced,
            pod_cidr: None,
            pod_cidr_declared: raw.pod_cidr.is_some(),
            pod_gateway: None,
            first_address: None,
            pods: Vec::new(),
            enis: Vec::new(),
        };
        let mut ok = true;
        if raw.interfaces.is_empty() {
            self.err(
                &raw.name.referenced,
                format!("node {name} has no interfaces"),
                "no interfaces",
                Some(
                    "a node needs an interface: its first interface's subnet gateway is the \
                     node's default route"
                        .to_string(),
                ),
            );
            ok = false;
        }

        let mut interfaces = Vec::new();
        let mut ifnames: HashMap<&str, Location> = HashMap::new();
        for (i, raw_if) in raw.interfaces.iter().enumerate() {
            let ifname = &raw_if.name.value;
            let duplicate = ifnames.get(ifname.as_str()).copied();
            if let Some(first) = duplicate {
                let line = first.line();
                self.err_again(
                    &raw_if.name.referenced,
                    &first,
                    format!(
                        "node {name} has two interfaces named `{ifname}`, first at line {line}"
                    ),
                    "duplicate interface",
                    Some("interface names are unique within a node".to_string()),
                );
                ok = false;
            } else {
                ifnames.insert(ifname, raw_if.name.referenced);
            }
            self.ifname(
                &raw_if.name,
                "interface name",
                "node interfaces are kernel interfaces",
            );
            let subnet = subnets.iter().find(|s| s.name == raw_if.subnet.value);
            // A declared subnet that did not resolve was reported where it is
            // defined.
            if subnet.is_none() && !declared_subnets.contains(&raw_if.subnet.value.as_str()) {
                self.err(
                    &raw_if.subnet.referenced,
                    format!("unknown subnet `{}`", raw_if.subnet.value),
                    "unknown subnet",
                    Some(unknown_hint(
                        "subnet",
                        &raw_if.subnet.value,
                        declared_subnets,
                    )),
                );
            }
            let address = match &raw_if.address {
                Some(a) => match self.ipv4(a, "address") {
                    Some(address) => Some((address, a)),
                    None => {
                        ok = false;
                        None
                    }
                },
                None if i == 0 => {
                    self.err(
                        &raw_if.name.referenced,
                        format!("{name}'s first interface {ifname} has no address"),
                        "no address",
                        Some(
                            "a node's first interface holds the node's own address: add `address:` \
                             (only secondary ENIs that carry ipvlan pods go without)"
                                .to_string(),
                        ),
                    );
                    ok = false;
                    continue;
                }
                None => None,
            };
            let mac = raw_if.mac.as_ref().and_then(|m| {
                let mac = self.mac(m)?;
                self.claim_mac(mac, format!("{name} {ifname}"), &m.referenced);
                Some(mac)
            });
            if raw_if.mac.is_some() && mac.is_none() {
                ok = false;
            }
            let Some(subnet) = subnet else {
                ok = false;
                continue;
            };
            if let Some((address, raw_address)) = address {
                let inside = self.inside(
                    address,
                    subnet.cidr,
                    &raw_address.referenced,
                    || {
                        format!(
                            "address {address} is outside subnet {} ({})",
                            subnet.name, subnet.cidr
                        )
                    },
                    format!(
                        "subnet {} is {}: use an address from {} to {}",
                        subnet.name,
                        subnet.cidr,
                        first_host(subnet.cidr),
                        last_host(subnet.cidr)
                    ),
                );
                if !inside {
                    ok = false;
                    continue;
                }
                self.claim_address(address, format!("{name} {ifname}"), &raw_address.referenced);
            }
            if i == 0 {
                info.first_address = address.map(|(a, _)| a);
            }
            let short = format!("{name}-{ifname}");
            let vpc_port = if ifname_problem(&short).is_none() {
                short
            } else {
                hashed_ifname("p", &format!("{name}/{ifname}"))
            };
            if duplicate.is_none() {
                self.vpc_ifname(
                    &vpc_port,
                    format!("the vpc port of {name} {ifname}"),
                    &raw_if.name.referenced,
                );
            }
            info.enis.push((
                ifname.clone(),
                subnet.cidr,
                subnet.gateway,
                interfaces.len() + 1,
            ));
            interfaces.push(NodeInterface {
                name: ifname.clone(),
                subnet: subnet.name.clone(),
                address: address.map(|(a, _)| with_prefix(a, subnet.cidr)),
                mac,
                vpc_port,
            });
        }

        let bridge = match &raw.bridge {
            Some(b) => {
                if self.ifname(
                    b,
                    "bridge name",
                    "the pod bridge is a kernel interface of the node",
                ) {
                    if let Some(first) = ifnames.get(b.value.as_str()).copied() {
                        let line = first.line();
                        self.err_again(
                            &b.referenced,
                            &first,
                            format!(
                                "bridge name `{}` clashes with the interface of node {name} at line {line}",
                                b.value
                            ),
                            "interface name clash",
                            Some("the bridge and the interfaces share the node's namespace".to_string()),
                        );
                    }
                } else {
                    ok = false;
                }
                b.value.clone()
            }
            None => {
                if let Some(first) = ifnames.get(DEFAULT_BRIDGE) {
                    self.err(
                        first,
                        format!("interface name `{DEFAULT_BRIDGE}` clashes with the default pod bridge of node {name}"),
                        "interface name clash",
                        Some("rename the interface or set `bridge:` on the node".to_string()),
                    );
                }
                DEFAULT_BRIDGE.to_string()
            }
        };

        if let Some(text) = &raw.pod_cidr {
            match self.network(text, "pod cidr") {
                Some(cidr) if cidr.prefix_len() > 30 => {
                    self.err(
                        &text.referenced,
                        format!("pod cidr {cidr} of node {name} is too small"),
                        "too small",
                        Some(
                            "a pod cidr needs room for the bridge and pods: at most /30"
                                .to_string(),
                        ),
                    );
                    ok = false;
                }
                Some(cidr) => {
                    let gateway = first_host(cidr);
                    if self.claim_network(cidr, format!("pod cidr of {name}"), &text.referenced) {
                        self.claim_address(
                            gateway,
                            format!("the pod gateway of {name} ({bridge})"),
                            &text.referenced,
                        );
                    }
                    info.pod_cidr = Some(cidr);
                    info.pod_gateway = Some(gateway);
                }
                None => ok = false,
            }
        }

        let mut sysctls = BTreeMap::from([("net.ipv4.ip_forward".to_string(), "1".to_string())]);
        if let Some(map) = &raw.sysctls {
            for (key, value) in &map.value {
                if !self.sysctl(key, value, &map.referenced) {
                    ok = false;
                }
                sysctls.insert(key.clone(), value.value.0.clone());
            }
        }

        let default_gateway = raw
            .interfaces
            .first()
            .and_then(|i| subnets.iter().find(|s| s.name == i.subnet.value))
            .map(|s| s.gateway);
        let node = match (ok, default_gateway) {
            (true, Some(default_gateway)) => Some(Node {
                name: name.clone(),
                interfaces,
                pod_cidr: info.pod_cidr,
                bridge,
                hairpin_mode: raw.hairpin_mode.unwrap_or(true),
                pod_gateway: info.pod_gateway,
                default_gateway,
                sysctls,
            }),
            _ => None,
        };
        (node, info)
    }
}
