//! Resolution of `pods`: each pod's node, address, MAC, attachment,
//! routes and the ports it serves.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_saphyr::Spanned;

use super::{NodeInfo, Resolver, first_host, last_host, with_prefix};
use crate::error::unknown_hint;
use crate::model::*;
use crate::raw::*;

impl Resolver<'_> {
    pub(super) fn pod(
        &mut self,
        raw: &RawPod,
        infos: &mut BTreeMap<String, NodeInfo>,
        node_names: &[&str],
    ) -> Option<Pod> {
        let name = &raw.name.value;
        let address = self.ipv4(&raw.address, "address");
        let mac = raw.mac.as_ref().and_then(|m| {
            let mac = self.mac(m)?;
            self.claim_mac(mac, format!("pod {name}"), &m.referenced);
            Some(mac)
        });
        let mut ok = raw.mac.is_none() || mac.is_some();
        let ports = self.ports(raw);
        let info = self.node_ref(&raw.node, infos, node_names);
        let kind = raw.attachment.as_ref().map(|a| a.value);
        let node = &raw.node.value;
        // Where the pod's address comes from: the node's pod CIDR (bridge),
        // or the subnet of the ENI it hangs off (ipvlan).
        let mut eni: Option<(String, usize)> = None;
        let (pod_cidr, pod_gateway) = match (kind, info) {
            (None | Some(RawAttachment::Bridge), Some(info)) => {
                if let Some(i) = &raw.interface {
                    self.err(
                        &i.referenced,
                        format!("pod {name} is a bridge pod: `interface` is for ipvlan pods"),
                        "not for bridge pods",
                        Some("write `attachment: ipvlan` or drop `interface`".into()),
                    );
                    ok = false;
                }
                (info.pod_cidr, info.pod_gateway)
            }
            (Some(RawAttachment::Ipvlan), Some(info)) => match &raw.interface {
                None => {
                    self.err(
                        &raw.name.referenced,
                        format!("ipvlan pod {name} needs `interface`: the ENI of {node} it uses"),
                        "no interface",
                        Some(format!(
                            "{node} has: {}",
                            info.enis
                                .iter()
                                .map(|e| e.0.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    );
                    ok = false;
                    (None, None)
                }
                Some(i) => match info.enis.iter().find(|e| e.0 == i.value) {
                    Some((eni_name, cidr, gw, pos)) => {
                        eni = Some((eni_name.clone(), *pos));
                        (Some(*cidr), Some(*gw))
                    }
                    None => {
                        let known: Vec<&str> = info.enis.iter().map(|e| e.0.as_str()).collect();
                        self.err(
                            &i.referenced,
                            format!("node {node} has no interface `{}`", i.value),
                            "unknown interface",
                            Some(unknown_hint("interface", &i.value, &known)),
                        );
                        ok = false;
                        (None, None)
                    }
                },
            },
            (_, None) => (None, None),
        };
        // Bridge pods need the node's pod CIDR (checked once all are known).
        if let Some(info) = infos.get_mut(&raw.node.value)
            && !matches!(kind, Some(RawAttachment::Ipvlan))
        {
            info.pods.push(name.clone());
        }

        let address = match (address, pod_cidr) {
            (Some(address), Some(cidr)) => {
                let network = match &eni {
                    Some((e, _)) => format!("the subnet of {node}'s {e}"),
                    None => format!("the pod cidr of {node}"),
                };
                let help = format!(
                    "{network} is {cidr}: use an address from {} to {}",
                    second_host(cidr),
                    last_host(cidr)
                );
                if self.inside(
                    address,
                    cidr,
                    &raw.address.referenced,
                    || format!("address {address} is outside {network} ({cidr})"),
                    help,
                ) {
                    self.claim_address(address, format!("pod {name}"), &raw.address.referenced);
                    Some(with_prefix(address, cidr))
                } else {
                    None
                }
            }
            _ => None,
        };

        let routes = match &raw.routes {
            None => pod_gateway
                .map(|via| {
                    vec![Route {
                        destination: Ipv4Net::default(),
                        via,
                    }]
                })
                .unwrap_or_default(),
            Some(raw_routes) => {
                let mut routes = Vec::new();
                let mut seen = HashMap::new();
                for route in raw_routes {
                    let destination = if route.destination.value.trim() == "default" {
                        Some(Ipv4Net::default())
                    } else {
                        self.network(&route.destination, "route destination")
                    };
                    if let Some(d) = destination {
                        self.unique_destination(&mut seen, d, &route.destination);
                    }
                    let via = self.ipv4(&route.via, "route gateway");
                    if let (Some(via), Some(cidr)) = (via, pod_cidr)
                        && !cidr.contains(&via)
                    {
                        self.err(
                            &route.via.referenced,
                            format!(
                                "route gateway {via} is not on the network of pod {name} ({cidr})"
                            ),
                            "unreachable gateway",
                            Some(format!(
                                "the pod reaches only {cidr} directly; its default gateway is {}",
                                first_host(cidr)
                            )),
                        );
                        ok = false;
                    }
                    match (destination, via) {
                        (Some(destination), Some(via)) => routes.push(Route { destination, via }),
                        _ => ok = false,
                    }
                }
                routes
            }
        };

        let attachment = match (kind, eni) {
            (Some(RawAttachment::Ipvlan), Some((parent, pos))) => Attachment::Ipvlan {
                parent,
                host_slave: ipvlan_host_slave(pos),
            },
            _ => Attachment::Bridge {
                host_ifname: hashed_ifname("veth", name),
            },
        };
        if !ok {
            return None;
        }
        Some(Pod {
            name: name.clone(),
            node: node.clone(),
            attachment,
            ifname: "eth0".to_string(),
            address: address?,
            mac,
            routes,
            ports: ports?,
            labels: raw.labels.clone(),
        })
    }

    fn ports(&mut self, raw: &RawPod) -> Option<Vec<Port>> {
        self.served_ports(&format!("pod {}", raw.name.value), &raw.ports)
    }

    /// The ports a pod or bare namespace serves; `who` names it.
    pub(super) fn served_ports(
        &mut self,
        who: &str,
        list: &[Spanned<RawPort>],
    ) -> Option<Vec<Port>> {
        let mut ports = Vec::new();
        let mut ok = true;
        for p in list {
            let protocol = match p.value.protocol {
                RawProtocol::Tcp => Protocol::Tcp,
                RawProtocol::Udp => Protocol::Udp,
            };
            let port = Port {
                port: p.value.port,
                protocol,
            };
            let proto = if protocol == Protocol::Tcp {
                "tcp"
            } else {
                "udp"
            };
            if port.port == 0 {
                self.err(
                    &p.referenced,
                    "port 0 is not a valid port".to_string(),
                    "invalid port",
                    Some("ports range from 1 to 65535".to_string()),
                );
                ok = false;
            } else if ports.contains(&port) {
                self.err(
                    &p.referenced,
                    format!("{who} lists port {}/{proto} twice", port.port),
                    "duplicate port",
                    None,
                );
                ok = false;
            } else {
                ports.push(port);
            }
        }
        ok.then_some(ports)
    }
}

/// The first address left for pods once the bridge took the first one.
fn second_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(first_host(net)).saturating_add(1)).min(last_host(net))
}
