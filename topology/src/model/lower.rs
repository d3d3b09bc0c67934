//! The CNI keys (`vpc`, `nodes`, `pods`, `clients`) as kernel objects of
//! the low-level layer ([`Objects`]): one path from YAML to the kernel.
//! The planner makes these objects the way it makes those a user wrote
//! in `links`, `addresses`, `routes`, ...; what is left to the keys
//! themselves is what is not a link, address, route, neighbour or filter
//! of a namespace: the VPC's bridge-family nft table, the services' IPVS
//! tables and nft rulesets, the eBPF load balancer's load and maps.
//!
//! Objects are listed in the order the kernel numbers them: the VPC's
//! vSwitches, each node's ENIs then its pod bridge, each pod (a Terway
//! node's own ipvlan slave with the first pod that needs it), each client,
//! then what the services add (kube-proxy's `kube-ipvs0` on each node, the
//! SLB's addresses) and the eBPF load balancer's filters on each pod.
//! The planner gives ifindexes in list order, so these stay what they
//! were before the keys were lowered.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::*;

impl Lab {
    /// The vpc/nodes/pods/clients keys as low-level objects (their
    /// namespaces are the entities'; the user's own `objects` are not in
    /// it).
    pub fn lowered(&self) -> Objects {
        let mut o = Objects::default();
        self.lower_vpc(&mut o);
        for node in &self.nodes {
            lower_node(
                node,
                self.vpc.as_ref().is_some_and(|v| v.isolated_ports),
                &mut o,
            );
        }
        self.lower_vpc_routes(&mut o);
        let mut host_slaves: Vec<(String, String)> = Vec::new();
        for pod in &self.pods {
            self.lower_pod(pod, &mut host_slaves, &mut o);
        }
        for client in &self.clients {
            lower_client(client, &mut o);
        }
        self.lower_services(&mut o);
        self.lower_ebpf(&mut o);
        // The router's sysctls name every interface the VPC has, which are
        // known only now; they stay first, as the router is.
        let router = self.vpc_sysctls(&o);
        o.sysctls.splice(0..0, router);
        o
    }

    /// The interfaces of a vpc, node, pod or client that the CNI keys
    /// make, as the lowered objects list them (`lowered`: their
    /// [`Objects::interfaces_by_namespace`]; `None` for another name): the one
    /// list of them, which [`Lab::interfaces_of`] extends with the user's
    /// own layer.
    pub(crate) fn cni_interfaces_in(
        &self,
        lowered: &HashMap<&str, Vec<&str>>,
        entity: &str,
    ) -> Option<Vec<String>> {
        if !self.is_cni_entity(entity) {
            return None;
        }
        Some(
            lowered
                .get(entity)
                .map(|v| v.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
        )
    }

    /// Whether `entity` is the vpc, a node, a pod or a client: a namespace
    /// of the CNI keys.
    pub(crate) fn is_cni_entity(&self, entity: &str) -> bool {
        (entity == "vpc" && self.vpc.is_some())
            || self.node(entity).is_some()
            || self.pod(entity).is_some()
            || self.clients.iter().any(|c| c.name == entity)
    }

    /// IP forwarding, no ICMP redirects, and with isolated ports proxy ARP.
    fn vpc_sysctls(&self, o: &Objects) -> Vec<NsSysctl> {
        let Some(vpc) = &self.vpc else {
            return Vec::new();
        };
        let mut out = Objects::default();
        // A cloud vSwitch routes; it does not send ICMP redirects to hosts
        // that could reach each other directly (a Linux router would, when
        // a reply leaves by the interface it came in on). The kernel ORs
        // `all` with the interface's own setting, so both are turned off.
        sysctl(&mut out, "vpc", "net.ipv4.ip_forward", "1");
        let ifs = ["all"]
            .into_iter()
            .chain(o.interfaces_in("vpc"))
            .chain(self.objects.interfaces_in("vpc"));
        for ifname in ifs {
            let key = format!("net.ipv4.conf.{ifname}.send_redirects");
            sysctl(&mut out, "vpc", &key, "0");
        }
        // A cloud vSwitch: ENIs reach each other only through the router,
        // which answers their ARP for any address of the subnet (proxy ARP,
        // also back out of the bridge it came in on: pvlan), at once. (The
        // bridge-family rule that keeps an ENI's ARP for its own addresses
        // from the router is an nft table, the planner's.)
        if vpc.isolated_ports {
            for subnet in &vpc.subnets {
                let name = &subnet.name;
                sysctl(
                    &mut out,
                    "vpc",
                    &format!("net.ipv4.conf.{name}.proxy_arp"),
                    "1",
                );
                let pvlan = format!("net.ipv4.conf.{name}.proxy_arp_pvlan");
                sysctl(&mut out, "vpc", &pvlan, "1");
                sysctl(
                    &mut out,
                    "vpc",
                    &format!("net.ipv4.neigh.{name}.proxy_delay"),
                    "0",
                );
            }
        }
        out.sysctls
    }

    /// One bridge per vSwitch holding its gateway (the router's sysctls
    /// come last: [`Lab::vpc_sysctls`]).
    fn lower_vpc(&self, o: &mut Objects) {
        let Some(vpc) = &self.vpc else { return };
        for subnet in &vpc.subnets {
            o.links.push(link(
                "vpc",
                &subnet.name,
                LinkKind::Bridge(Default::default()),
            ));
            o.addresses.push(address(
                "vpc",
                &subnet.name,
                Ipv4Net::new(subnet.gateway, subnet.cidr.prefix_len()).expect("valid prefix"),
            ));
        }
    }

    /// The VPC's custom route entries: destination -> the node's ENI
    /// address, out of the vSwitch that holds it.
    fn lower_vpc_routes(&self, o: &mut Objects) {
        let Some(vpc) = &self.vpc else { return };
        for route in &vpc.routes {
            if let Some(subnet) = vpc.subnets.iter().find(|s| s.cidr.contains(&route.via)) {
                o.routes.push(plain_route(
                    "vpc",
                    route.destination,
                    Some(route.via),
                    &subnet.name,
                ));
            }
        }
    }

    /// What the services add to the namespaces: under kube-proxy's IPVS
    /// mode a dummy `kube-ipvs0` on every node holding every service
    /// address (the planner makes it after the node's ENIs, which matters:
    /// when a route's device has no fitting address, as Terway's `ipvl_N`
    /// holding the node's with scope host, the kernel takes the first
    /// global address in device creation order as the source, which must
    /// be the node's, not a service's); and each LoadBalancer address on
    /// the VPC router's `lo`, where the SLB answers it.
    fn lower_services(&self, o: &mut Objects) {
        if self.uses_kube_ipvs() {
            for node in &self.nodes {
                o.links.push(link(&node.name, KUBE_IPVS, LinkKind::Dummy));
                for a in self.services.iter().flat_map(|s| s.addresses()) {
                    o.addresses.push(address(&node.name, KUBE_IPVS, host(a)));
                }
            }
        }
        for a in self.services.iter().filter_map(|s| s.load_balancer_ip) {
            o.addresses.push(address("vpc", "lo", host(a)));
        }
    }

    /// The eBPF load balancer (`ebpf:`) on every pod's interface: both of
    /// its programs ([`LB_PROGRAMS`]) as tc filters. Loading them and
    /// filling their maps (which a scenario's service changes rewrite) are
    /// not objects of a namespace: the planner's, from the key.
    fn lower_ebpf(&self, o: &mut Objects) {
        if self.ebpf.is_none() {
            return;
        }
        for pod in &self.pods {
            for (program, hook) in LB_PROGRAMS {
                o.tc.push(Tc {
                    netns: pod.name.clone(),
                    dev: pod.ifname.clone(),
                    hook,
                    action: TcAction::Bpf {
                        program: program.to_string(),
                    },
                });
            }
        }
    }

    /// A pod's link from its node (a veth from the pod bridge, or an
    /// ipvlan slave of the node's ENI), its address and routes.
    fn lower_pod(&self, pod: &Pod, host_slaves: &mut Vec<(String, String)>, o: &mut Objects) {
        let node = self.node(&pod.node);
        match &pod.attachment {
            Attachment::Bridge { host_ifname } => {
                let bridge = node.filter(|n| n.pod_cidr.is_some() && n.pod_gateway.is_some());
                let mut l = link(
                    &pod.node,
                    host_ifname,
                    LinkKind::Veth {
                        peer: peer(&pod.name, &pod.ifname, pod.mac),
                    },
                );
                l.master = bridge.map(|n| n.bridge.clone());
                if bridge.is_some_and(|n| n.hairpin_mode) {
                    l.port = Some(PortOptions {
                        hairpin: Some(true),
                        ..Default::default()
                    });
                }
                o.links.push(l);
            }
            Attachment::Ipvlan { parent, host_slave } => {
                // A resolved node's first interface has one; a lab still
                // being resolved may not (its error is reported there).
                let node_address = node
                    .and_then(|n| n.interfaces.iter().find_map(|i| i.address))
                    .map(|a| a.addr());
                let ipvlan = || {
                    LinkKind::Ipvlan(Ipvlan {
                        parent_netns: pod.node.clone(),
                        parent: parent.clone(),
                        mode: IpvlanMode::L2,
                    })
                };
                let key = (pod.node.clone(), host_slave.clone());
                if !host_slaves.contains(&key) {
                    host_slaves.push(key);
                    // As Terway sets up ipvl_N: no ARP, the node's own
                    // address (scope host). ipvlan switches frames between
                    // its slaves by IP address: the pods reach the node
                    // through this slave, the node reaches them through it
                    // with its own MAC (no ARP).
                    let mut l = link(&pod.node, host_slave, ipvlan());
                    l.arp = false;
                    o.links.push(l);
                    if let Some(node_address) = node_address {
                        let mut a = address(&pod.node, host_slave, host(node_address));
                        a.scope_host = true;
                        o.addresses.push(a);
                    }
                }
                o.links.push(link(&pod.name, &pod.ifname, ipvlan()));
                if let Some(node_address) = node_address {
                    o.neighbours.push(Neighbour {
                        netns: pod.name.clone(),
                        dev: pod.ifname.clone(),
                        address: node_address,
                        lladdr: None,
                        state: NeighState::Permanent,
                    });
                }
                // The node reaches the pod through its own slave of the ENI.
                o.routes.push(plain_route(
                    &pod.node,
                    host(pod.address.addr()),
                    None,
                    host_slave,
                ));
            }
        }
        o.addresses
            .push(address(&pod.name, &pod.ifname, pod.address));
        for r in &pod.routes {
            o.routes.push(plain_route(
                &pod.name,
                r.destination,
                Some(r.via),
                &pod.ifname,
            ));
        }
    }
}

/// A node's ENIs plugged into their vSwitch, its pod bridge, its default
/// route and sysctls.
fn lower_node(node: &Node, isolated: bool, o: &mut Objects) {
    for eni in &node.interfaces {
        let mut l = link(
            "vpc",
            &eni.vpc_port,
            LinkKind::Veth {
                peer: peer(&node.name, &eni.name, eni.mac),
            },
        );
        l.master = Some(eni.subnet.clone());
        if isolated {
            l.port = Some(PortOptions {
                isolated: Some(true),
                ..Default::default()
            });
        }
        o.links.push(l);
        if let Some(a) = eni.address {
            o.addresses.push(address(&node.name, &eni.name, a));
        }
    }
    if let (Some(cidr), Some(gw)) = (node.pod_cidr, node.pod_gateway) {
        o.links.push(link(
            &node.name,
            &node.bridge,
            LinkKind::Bridge(Default::default()),
        ));
        o.addresses.push(address(
            &node.name,
            &node.bridge,
            Ipv4Net::new(gw, cidr.prefix_len()).expect("valid prefix"),
        ));
    }
    if let Some(eni) = node.interfaces.first() {
        o.routes.push(plain_route(
            &node.name,
            Ipv4Net::default(),
            Some(node.default_gateway),
            &eni.name,
        ));
    }
    for (key, value) in &node.sysctls {
        sysctl(o, &node.name, key, value);
    }
}

/// A client: a veth to the VPC router, the VPC's end holding its gateway.
fn lower_client(client: &Client, o: &mut Objects) {
    o.links.push(link(
        "vpc",
        &client.vpc_port,
        LinkKind::Veth {
            peer: peer(&client.name, "eth0", None),
        },
    ));
    o.addresses.push(address(
        "vpc",
        &client.vpc_port,
        Ipv4Net::new(client.gateway, client.address.prefix_len()).expect("valid prefix"),
    ));
    o.addresses
        .push(address(&client.name, "eth0", client.address));
    o.routes.push(plain_route(
        &client.name,
        Ipv4Net::default(),
        Some(client.gateway),
        "eth0",
    ));
}

fn link(netns: &str, name: &str, kind: LinkKind) -> Link {
    Link {
        netns: netns.to_string(),
        name: name.to_string(),
        mac: None,
        mtu: None,
        master: None,
        port: None,
        up: true,
        arp: true,
        kind,
    }
}

fn peer(netns: &str, name: &str, mac: Option<[u8; 6]>) -> VethPeer {
    VethPeer {
        netns: netns.to_string(),
        name: name.to_string(),
        mac,
        mtu: None,
        master: None,
        port: None,
        up: true,
    }
}

fn address(netns: &str, dev: &str, address: Ipv4Net) -> Address {
    Address {
        netns: netns.to_string(),
        dev: dev.to_string(),
        address,
        scope_host: false,
    }
}

fn plain_route(netns: &str, destination: Ipv4Net, via: Option<Ipv4Addr>, dev: &str) -> NsRoute {
    NsRoute {
        netns: netns.to_string(),
        destination,
        via,
        dev: Some(dev.to_string()),
        metric: None,
        table: None,
        scope: None,
        onlink: false,
        nexthops: Vec::new(),
    }
}

fn sysctl(o: &mut Objects, netns: &str, key: &str, value: &str) {
    o.sysctls.push(NsSysctl {
        netns: netns.to_string(),
        key: key.to_string(),
        value: value.to_string(),
    });
}

fn host(a: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(a, 32).expect("/32")
}
