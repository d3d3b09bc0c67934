//! Resolution: raw topology -> validated `Lab`. Parses the located text of
//! the raw types (addresses, CIDRs, MACs), checks references, names,
//! overlaps and duplicates, and applies the defaults documented in `model`.
//! It never stops at the first problem: every problem is collected with its
//! location and the caller reports them together, sorted by position.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_saphyr::{Location, Spanned};

use crate::error::{Problem, Problems, Source, unknown_hint};
use crate::model::*;
use crate::raw::*;

mod changes;
mod evpn;
mod objects;

/// The limit on lab names: they prefix every namespace and generated name.
pub const LAB_NAME_MAX: usize = 20;
/// The limit on node, pod and client names (a DNS label).
pub const ENTITY_NAME_MAX: usize = 63;
/// The pod bridge when the node does not name one.
pub const DEFAULT_BRIDGE: &str = "cni0";

/// Located text from the YAML.
type Text = Spanned<String>;

/// Something that claimed a name, address or network first.
#[derive(Clone)]
struct Owner {
    what: String,
    loc: Location,
}

/// What resolving a node yields for the pods on it.
struct NodeInfo {
    name_loc: Location,
    pod_cidr: Option<Ipv4Net>,
    pod_cidr_declared: bool,
    pod_gateway: Option<Ipv4Addr>,
    first_address: Option<Ipv4Addr>,
    pods: Vec<String>,
    /// ENIs: name, subnet, subnet gateway, position (from 1).
    enis: Vec<(String, Ipv4Net, Ipv4Addr, usize)>,
}

struct Resolver<'a> {
    src: &'a Source,
    problems: Vec<Problem>,
    entities: HashMap<String, Owner>,
    addresses: HashMap<Ipv4Addr, Owner>,
    macs: HashMap<[u8; 6], Owner>,
    networks: Vec<(Ipv4Net, Owner)>,
    /// Interface names in the VPC namespace: bridges and ports.
    vpc_ifnames: HashMap<String, Owner>,
}

/// Resolve a parsed topology; `Err` holds every problem, in source order.
pub(crate) fn resolve(src: &Source, raw: RawTopology) -> Result<Lab, Problems> {
    let mut r = Resolver {
        src,
        problems: Vec::new(),
        entities: HashMap::new(),
        addresses: HashMap::new(),
        macs: HashMap::new(),
        networks: Vec::new(),
        vpc_ifnames: HashMap::new(),
    };
    r.lab_name(&raw.name);
    let no_vpc = RawVpc {
        cidr: None,
        subnets: Vec::new(),
        routes: Vec::new(),
        isolated_ports: false,
    };
    let raw_vpc = raw.vpc.as_ref().unwrap_or(&no_vpc);
    if raw.vpc.is_none() {
        let first = raw
            .nodes
            .first()
            .map(|n| (&n.name, "node"))
            .or(raw.clients.first().map(|c| (&c.name, "client")));
        if let Some((name, kind)) = first {
            r.err(
                &name.referenced,
                format!("{kind} {} needs a vpc, and the file has none", name.value),
                "no vpc",
                Some(
                    "nodes and clients plug into the vpc's subnets: add `vpc: {subnets: [...]}`, \
                     or build the namespaces with `namespaces` and `links`"
                        .to_string(),
                ),
            );
        }
    }
    let vpc_cidr = raw_vpc.cidr.as_ref().and_then(|c| r.network(c, "vpc cidr"));
    let subnets = r.subnets(&raw_vpc.subnets, vpc_cidr);

    // Names first, so references resolve whatever order things come in.
    r.entities.insert(
        "vpc".to_string(),
        Owner {
            what: "the vpc".to_string(),
            loc: Location::UNKNOWN,
        },
    );
    for n in &raw.nodes {
        r.entity(&n.name, "node");
    }
    for p in &raw.pods {
        r.entity(&p.name, "pod");
    }
    for c in &raw.clients {
        r.entity(&c.name, "client");
    }
    for n in &raw.namespaces {
        r.entity(&n.name, "namespace");
    }

    let declared_subnets: Vec<&str> = raw_vpc
        .subnets
        .iter()
        .map(|s| s.name.value.as_str())
        .collect();
    let mut infos: BTreeMap<String, NodeInfo> = BTreeMap::new();
    let mut nodes = Vec::new();
    for raw_node in &raw.nodes {
        let (node, info) = r.node(raw_node, &subnets, &declared_subnets);
        infos.entry(raw_node.name.value.clone()).or_insert(info);
        nodes.extend(node);
    }
    let node_names: Vec<&str> = raw.nodes.iter().map(|n| n.name.value.as_str()).collect();

    let mut routes = Vec::new();
    let mut destinations: HashMap<Ipv4Net, Location> = HashMap::new();
    for route in &raw_vpc.routes {
        let destination = r.network(&route.destination, "route destination");
        if let Some(d) = destination {
            r.unique_destination(&mut destinations, d, &route.destination);
        }
        let Some(info) = r.node_ref(&route.next_hop, &infos, &node_names) else {
            continue;
        };
        if let (Some(destination), Some(via)) = (destination, info.first_address) {
            routes.push(VpcRoute {
                destination,
                next_hop_node: route.next_hop.value.clone(),
                via,
            });
        }
    }

    let mut pods = Vec::with_capacity(raw.pods.len());
    for raw_pod in &raw.pods {
        pods.extend(r.pod(raw_pod, &mut infos, &node_names));
    }

    let mut clients = Vec::new();
    for raw_client in &raw.clients {
        clients.extend(r.client(raw_client));
    }

    for (name, info) in &infos {
        if !info.pods.is_empty() && !info.pod_cidr_declared {
            let shown: Vec<&str> = info.pods.iter().take(5).map(String::as_str).collect();
            let more = if info.pods.len() > 5 { ", ..." } else { "" };
            r.err(
                &info.name_loc,
                format!("node {name} has pods but no pod_cidr"),
                "no pod_cidr",
                Some(format!(
                    "add `pod_cidr: <cidr>` to node {name}; its pods: {}{more}",
                    shown.join(", ")
                )),
            );
        }
    }

    let mut lab = Lab {
        name: raw.name.value.clone(),
        vpc: raw.vpc.as_ref().map(|v| Vpc {
            cidr: vpc_cidr,
            subnets,
            routes,
            isolated_ports: v.isolated_ports,
        }),
        nodes,
        pods,
        clients,
        services: Vec::new(),
        kube_proxy: r.kube_proxy(&raw),
        scenarios: Vec::new(),
        ebpf: raw.ebpf.as_ref().map(|e| Ebpf {
            in_cluster_external: e.in_cluster_external.unwrap_or(true),
        }),
        objects: Objects::default(),
    };
    // After the vpc/nodes/pods keys: the layer may place objects in them.
    lab.objects = r.objects(&raw, &lab);
    let mut node_ports: HashMap<(u16, Protocol), Location> = HashMap::new();
    for raw_service in &raw.services {
        if let Some(svc) = r.service(raw_service, &raw.pods, &mut node_ports) {
            lab.services.push(svc);
        }
    }
    if lab.kube_proxy.minor < 22 {
        for svc in &lab.services {
            let raw_svc = raw.services.iter().find(|r| r.name.value == svc.name);
            if let Some(raw_svc) = raw_svc
                && svc.internal_traffic_policy == TrafficPolicy::Local
            {
                r.err(
                    &raw_svc.name.referenced,
                    format!(
                        "service {}: internalTrafficPolicy Local needs kube-proxy 1.22 or later",
                        svc.name
                    ),
                    "kube-proxy too old",
                    Some(format!(
                        "kube-proxy 1.{} has no internalTrafficPolicy (alpha in 1.21, on by default from 1.22)",
                        lab.kube_proxy.minor
                    )),
                );
            }
        }
    }
    if let (Some(cidr), Some(text)) = (lab.kube_proxy.service_cidr, &raw.service_cidr) {
        for svc in lab
            .services
            .iter()
            .filter(|s| !cidr.contains(&s.cluster_ip))
        {
            r.err(
                &text.referenced,
                format!(
                    "service {}: ClusterIP {} is outside the service cidr {cidr}",
                    svc.name, svc.cluster_ip
                ),
                "ClusterIP outside",
                Some("widen `service_cidr` or give the service a ClusterIP inside it".into()),
            );
        }
    }
    // Scenarios refer to interfaces, so they resolve against the built lab.
    if r.problems.is_empty() {
        let mut names: HashMap<String, Location> = HashMap::new();
        for raw_scenario in &raw.scenarios {
            if let Some(sc) = r.scenario(raw_scenario, &lab, &mut names) {
                lab.scenarios.push(sc);
            }
        }
    }

    let mut problems = r.problems;
    problems.sort_by_key(|p| (p.span.offset(), p.line, p.column));
    if let Some(problems) = Problems::new(problems) {
        return Err(problems);
    }
    Ok(lab)
}

impl Resolver<'_> {
    fn err(&mut self, loc: &Location, message: String, label: &str, help: Option<String>) {
        let p = self.src.at(loc, message, label, help);
        self.problems.push(p);
    }

    /// A problem about something defined twice: also points at the first.
    fn err_again(
        &mut self,
        loc: &Location,
        first: &Location,
        message: String,
        label: &str,
        help: Option<String>,
    ) {
        let mut p = self.src.at(loc, message, label, help);
        if *first != Location::UNKNOWN {
            p = p.also(self.src.span(first), "first here");
        }
        self.problems.push(p);
    }

    fn first_at(&self, owner: &Owner) -> String {
        if owner.loc == Location::UNKNOWN {
            String::new()
        } else {
            format!(" at line {}", owner.loc.line())
        }
    }

    // ---- names -------------------------------------------------------

    fn lab_name(&mut self, name: &Text) {
        if let Err((message, label)) = lab_name_problem(&name.value) {
            self.err(
                &name.referenced,
                message,
                label,
                Some(LAB_NAME_HELP.to_string()),
            );
        }
    }

    /// Check a node, pod or client name and claim it in the entity namespace.
    fn entity(&mut self, name: &Text, kind: &str) {
        let n = &name.value;
        let help = || {
            Some(format!(
                "{kind} names are lowercase letters, digits, '-' and '.', at most \
                 {ENTITY_NAME_MAX} characters: each is a network namespace `<lab>-<name>`"
            ))
        };
        if n.is_empty() {
            self.err(
                &name.referenced,
                format!("{kind} name is empty"),
                "empty name",
                help(),
            );
        } else if let Some(c) = n
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
        {
            self.err(
                &name.referenced,
                format!("{kind} name `{n}` contains {c:?}; only a-z, 0-9, '-' and '.' are allowed"),
                "invalid name",
                help(),
            );
        } else if n.len() > ENTITY_NAME_MAX {
            self.err(
                &name.referenced,
                format!(
                    "{kind} name `{n}` is {} characters long, the limit is {ENTITY_NAME_MAX}",
                    n.len()
                ),
                "too long",
                help(),
            );
        }
        match self.entities.get(n).cloned() {
            Some(first) if first.loc == Location::UNKNOWN => self.err(
                &name.referenced,
                format!("name `{n}` is reserved for the vpc namespace"),
                "reserved name",
                Some(format!("rename this {kind}")),
            ),
            Some(first) => {
                let at = self.first_at(&first);
                self.err_again(
                    &name.referenced,
                    &first.loc,
                    format!("name `{n}` is already used by {}{at}", first.what),
                    "duplicate name",
                    Some(
                        "node, pod and client names share one namespace: each becomes a network \
                         namespace `<lab>-<name>`"
                            .to_string(),
                    ),
                )
            }
            None => {
                self.entities.insert(
                    n.clone(),
                    Owner {
                        what: format!("{kind} {n}"),
                        loc: name.referenced,
                    },
                );
            }
        }
    }

    /// Check a name that becomes a kernel interface name; `what` is e.g.
    /// "subnet name", `why` a help sentence.
    fn ifname(&mut self, name: &Text, what: &str, why: &str) -> bool {
        let n = &name.value;
        let problem = ifname_problem(n).map(|p| match p {
            IfnameProblem::Empty => (format!("{what} is empty"), "empty name"),
            IfnameProblem::TooLong(len) => (
                format!("{what} `{n}` is {len} bytes long, the kernel allows {IFNAME_MAX}"),
                "too long",
            ),
            IfnameProblem::Char(c) => (
                format!("{what} `{n}` contains {c:?}, which interface names cannot contain"),
                "invalid interface name",
            ),
            IfnameProblem::Dots => (
                format!("{what} `{n}` is not a valid interface name"),
                "invalid interface name",
            ),
        });
        match problem {
            Some((message, label)) => {
                self.err(&name.referenced, message, label, Some(why.to_string()));
                false
            }
            None => true,
        }
    }

    /// Claim an interface name of the VPC namespace.
    fn vpc_ifname(&mut self, name: &str, what: String, loc: &Location) {
        if let Some(first) = self.vpc_ifnames.get(name).cloned() {
            let at = self.first_at(&first);
            self.err_again(
                loc,
                &first.loc,
                format!(
                    "{what} needs interface `{name}` in the vpc namespace, already used by {}{at}",
                    first.what
                ),
                "interface name clash",
                Some("rename one of them".to_string()),
            );
        } else {
            self.vpc_ifnames
                .insert(name.to_string(), Owner { what, loc: *loc });
        }
    }

    /// A scenario's `source:`: an IPv4 address the sender `from` holds
    /// (an unknown sender is reported on its own).
    fn source(&mut self, text: &Text, from: &str, lab: &Lab) -> Option<Ipv4Addr> {
        let address = self.ipv4(text, "source")?;
        let held = lab.addresses_of(from)?;
        // On lo the whole prefix is local (the kernel makes its prefix
        // route a local one: all of 127.0.0.0/8); elsewhere only the
        // address itself.
        if held
            .iter()
            .any(|(dev, net)| net.addr() == address || (dev == "lo" && net.contains(&address)))
        {
            return Some(address);
        }
        let listed: Vec<String> = held
            .iter()
            .map(|(dev, net)| format!("{dev} {net}"))
            .collect();
        self.err(
            &text.referenced,
            format!("source {address} is not an address of `{from}`"),
            "not the sender's",
            Some(format!(
                "the client binds to the source, so it must be local to the sender; `{from}` \
                 has: {}",
                listed.join(", ")
            )),
        );
        None
    }

    /// A scenario's `backend:` must be an endpoint (after the scenario's
    /// own changes) of a service the scenario addresses, by one of its
    /// addresses and ports or by a node port on a node's address.
    fn backend_serves(
        &mut self,
        pod: &str,
        text: &Spanned<String>,
        (target, port): (Ipv4Addr, Option<u16>),
        changes: &[ServiceChange],
        lab: &Lab,
    ) {
        let node_address = lab
            .nodes
            .iter()
            .flat_map(|n| &n.interfaces)
            .any(|i| i.address.is_some_and(|a| a.addr() == target));
        let addressed: Vec<&Service> = lab
            .services
            .iter()
            .filter(|s| {
                s.ports.iter().any(|p| {
                    let by_address =
                        port.is_none_or(|x| x == p.port) && s.addresses().any(|a| a == target);
                    let by_node_port = node_address && port.is_some() && p.node_port == port;
                    by_address || by_node_port
                })
            })
            .collect();
        if addressed.is_empty() {
            let to = match port {
                Some(p) => format!("{target}:{p}"),
                None => target.to_string(),
            };
            self.err(
                &text.referenced,
                format!("backend {pod}: {to} is no service's address and port"),
                "no service here",
                Some("`backend` pins the endpoint a service picks; send to a service address, or remove it".into()),
            );
            return;
        }
        let endpoints = |s: &Service| -> Vec<String> {
            let removed: Vec<&String> = changes
                .iter()
                .filter(|c| c.service == s.name)
                .flat_map(|c| &c.remove_endpoints)
                .collect();
            s.endpoints
                .iter()
                .filter(|e| !removed.contains(e))
                .cloned()
                .collect()
        };
        if addressed
            .iter()
            .any(|s| endpoints(s).iter().any(|e| e == pod))
        {
            return;
        }
        let listed: Vec<String> = addressed
            .iter()
            .map(|s| format!("{}: {}", s.name, endpoints(s).join(", ")))
            .collect();
        let names: Vec<&str> = addressed.iter().map(|s| s.name.as_str()).collect();
        self.err(
            &text.referenced,
            format!(
                "backend {pod} is not an endpoint of service {}",
                names.join(", ")
            ),
            "not an endpoint",
            Some(format!(
                "pick one of the endpoints (after this scenario's changes): {}",
                listed.join("; ")
            )),
        );
    }

    // ---- kube-proxy ----------------------------------------------------

    /// `proxy`, `kube_proxy` and `service_cidr`.
    fn kube_proxy(&mut self, raw: &RawTopology) -> KubeProxy {
        let mut kp = KubeProxy::default();
        if let Some(RawProxyMode::Nftables) = raw.proxy {
            kp.mode = ProxyMode::Nftables;
        }
        let (oldest, newest) = (*KubeProxy::MINORS.start(), *KubeProxy::MINORS.end());
        if let Some(text) = &raw.kube_proxy {
            let t = text.value.trim();
            let minor = t
                .strip_prefix("1.")
                .filter(|m| !m.is_empty() && m.len() <= 2 && m.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|m| m.parse::<u32>().ok());
            match minor {
                Some(m) if KubeProxy::MINORS.contains(&m) => kp.minor = m,
                Some(_) => self.err(
                    &text.referenced,
                    format!("kube-proxy {t} is not modelled"),
                    "unknown version",
                    Some(format!("labctl models kube-proxy 1.{oldest} to 1.{newest}")),
                ),
                None => self.err(
                    &text.referenced,
                    format!("invalid kube-proxy version `{t}`"),
                    "not a version",
                    Some(format!(
                        "write a minor version in quotes, e.g. \"1.{newest}\""
                    )),
                ),
            }
            if kp.mode == ProxyMode::Nftables
                && minor.is_some_and(|m| m < KubeProxy::NFTABLES_SINCE)
            {
                self.err(
                    &text.referenced,
                    format!("kube-proxy {t} has no nftables mode"),
                    "too old for nftables",
                    Some(format!(
                        "kube-proxy's nftables mode exists since 1.{}; use `proxy: ipvs` or a later version",
                        KubeProxy::NFTABLES_SINCE
                    )),
                );
            }
        }
        if let Some(text) = &raw.service_cidr {
            kp.service_cidr = self.network(text, "service cidr");
        }
        kp
    }

    // ---- text -> values ----------------------------------------------

    fn ipv4(&mut self, text: &Text, what: &str) -> Option<Ipv4Addr> {
        let t = text.value.trim();
        if let Ok(a) = t.parse() {
            return Some(a);
        }
        if t.contains('/') {
            self.err(
                &text.referenced,
                format!("{what} `{t}` must be a plain ipv4 address, not a cidr"),
                "expected a plain address",
                Some("the prefix length comes from the network the address is in".to_string()),
            );
        } else {
            self.err(
                &text.referenced,
                format!("invalid {what} `{t}`"),
                "not an ipv4 address",
                Some("write an ipv4 address like 10.0.0.180".to_string()),
            );
        }
        None
    }

    /// A CIDR with any host part (`198.51.100.10/24`).
    fn cidr(&mut self, text: &Text, what: &str) -> Option<Ipv4Net> {
        let t = text.value.trim();
        if let Ok(n) = t.parse() {
            return Some(n);
        }
        let help = if !t.contains('/') && t.parse::<Ipv4Addr>().is_ok() {
            format!("add a prefix length, e.g. `{t}/24`")
        } else {
            "write a cidr like 10.0.0.0/24".to_string()
        };
        self.err(
            &text.referenced,
            format!("invalid {what} `{t}`"),
            "not an ipv4 cidr",
            Some(help),
        );
        None
    }

    /// A network CIDR: no host bits.
    fn network(&mut self, text: &Text, what: &str) -> Option<Ipv4Net> {
        let net = self.cidr(text, what)?;
        if net.addr() != net.network() {
            self.err(
                &text.referenced,
                format!("{what} `{net}` has host bits set"),
                "not a network address",
                Some(format!("did you mean `{}`?", net.trunc())),
            );
            return None;
        }
        Some(net)
    }

    fn mac(&mut self, text: &Text) -> Option<[u8; 6]> {
        let t = text.value.trim();
        let parts: Vec<&str> = t.split(':').collect();
        let mut mac = [0u8; 6];
        let ok = parts.len() == 6
            && parts
                .iter()
                .zip(mac.iter_mut())
                .all(|(p, b)| p.len() == 2 && u8::from_str_radix(p, 16).map(|v| *b = v).is_ok());
        if !ok {
            self.err(
                &text.referenced,
                format!("invalid mac address `{t}`"),
                "not a mac address",
                Some("write a mac address like 02:00:0a:00:00:b4".to_string()),
            );
            return None;
        }
        if mac[0] & 1 == 1 || mac == [0; 6] {
            self.err(
                &text.referenced,
                format!("mac address `{t}` is not a unicast address"),
                "not unicast",
                Some(
                    "the lowest bit of the first octet must be 0; locally administered addresses \
                     start with 02"
                        .to_string(),
                ),
            );
            return None;
        }
        Some(mac)
    }

    // ---- claims ------------------------------------------------------

    fn claim_address(&mut self, addr: Ipv4Addr, what: String, loc: &Location) {
        if let Some(first) = self.addresses.get(&addr).cloned() {
            let at = self.first_at(&first);
            self.err_again(
                loc,
                &first.loc,
                format!("address {addr} is already used by {}{at}", first.what),
                "duplicate address",
                Some("every address of the lab must be unique".to_string()),
            );
        } else {
            self.addresses.insert(addr, Owner { what, loc: *loc });
        }
    }

    fn claim_mac(&mut self, mac: [u8; 6], what: String, loc: &Location) {
        if let Some(first) = self.macs.get(&mac).cloned() {
            let at = self.first_at(&first);
            self.err_again(
                loc,
                &first.loc,
                format!(
                    "mac address {} is already used by {}{at}",
                    format_mac(&mac),
                    first.what
                ),
                "duplicate mac address",
                Some("leave `mac` out to let the kernel pick one".to_string()),
            );
        } else {
            self.macs.insert(mac, Owner { what, loc: *loc });
        }
    }

    /// Claim a network; false if it overlaps one claimed before.
    fn claim_network(&mut self, net: Ipv4Net, what: String, loc: &Location) -> bool {
        let clash = self
            .networks
            .iter()
            .find(|(other, _)| other.contains(&net.network()) || net.contains(&other.network()))
            .cloned();
        if let Some((other, first)) = clash {
            let at = self.first_at(&first);
            self.err_again(
                loc,
                &first.loc,
                format!("{what} ({net}) overlaps {} ({other}){at}", first.what),
                "overlapping network",
                Some(
                    "subnets, pod cidrs and client networks must not overlap: the vpc routes \
                     between them"
                        .to_string(),
                ),
            );
            false
        } else {
            self.networks.push((net, Owner { what, loc: *loc }));
            true
        }
    }

    fn unique_destination(
        &mut self,
        seen: &mut HashMap<Ipv4Net, Location>,
        destination: Ipv4Net,
        text: &Text,
    ) {
        if let Some(first) = seen.get(&destination).copied() {
            let line = first.line();
            self.err_again(
                &text.referenced,
                &first,
                format!("duplicate route to {destination}, first at line {line}"),
                "duplicate route",
                Some("a route table holds one route per destination".to_string()),
            );
        } else {
            seen.insert(destination, text.referenced);
        }
    }

    /// `addr` must be a usable host address of `net`.
    fn inside(
        &mut self,
        addr: Ipv4Addr,
        net: Ipv4Net,
        loc: &Location,
        message: impl FnOnce() -> String,
        help: String,
    ) -> bool {
        if !net.contains(&addr) {
            self.err(loc, message(), &format!("outside {net}"), Some(help));
            return false;
        }
        if net.prefix_len() < 31 && (addr == net.network() || addr == net.broadcast()) {
            let which = if addr == net.network() {
                "network"
            } else {
                "broadcast"
            };
            self.err(
                loc,
                format!("address {addr} is the {which} address of {net}"),
                &format!("{which} address"),
                Some(help),
            );
            return false;
        }
        true
    }

    fn node_ref<'i>(
        &mut self,
        name: &Text,
        infos: &'i BTreeMap<String, NodeInfo>,
        known: &[&str],
    ) -> Option<&'i NodeInfo> {
        let info = infos.get(&name.value);
        if info.is_none() {
            self.err(
                &name.referenced,
                format!("unknown node `{}`", name.value),
                "unknown node",
                Some(unknown_hint("node", &name.value, known)),
            );
        }
        info
    }

    // ---- entities ----------------------------------------------------

    fn subnets(&mut self, raw: &[RawSubnet], vpc_cidr: Option<Ipv4Net>) -> Vec<Subnet> {
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

    fn node(
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

    fn pod(
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
    fn served_ports(&mut self, who: &str, list: &[Spanned<RawPort>]) -> Option<Vec<Port>> {
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

    fn client(&mut self, raw: &RawClient) -> Option<Client> {
        let name = &raw.name.value;
        let address = self.cidr(&raw.address, "client address")?;
        let net = address.trunc();
        let addr = address.addr();
        let help = format!(
            "the client's network is {net}: use an address from {} to {}",
            first_host(net),
            last_host(net)
        );
        let mut ok = self.inside(
            addr,
            net,
            &raw.address.referenced,
            String::new,
            help.clone(),
        );
        let own_network = self.claim_network(
            net,
            format!("the network of client {name}"),
            &raw.address.referenced,
        );
        if !own_network {
            return None;
        }
        if ok {
            self.claim_address(addr, format!("client {name}"), &raw.address.referenced);
        }
        let gateway = match &raw.gateway {
            Some(text) => {
                let gateway = self.ipv4(text, "gateway")?;
                if !self.inside(
                    gateway,
                    net,
                    &text.referenced,
                    || format!("gateway {gateway} is outside the network of client {name} ({net})"),
                    help,
                ) {
                    return None;
                }
                self.claim_address(
                    gateway,
                    format!("the gateway of client {name}"),
                    &text.referenced,
                );
                gateway
            }
            None => {
                let gateway = first_host(net);
                if gateway == addr {
                    self.err(
                        &raw.address.referenced,
                        format!("address {addr} is the default gateway of {net}"),
                        "taken by the gateway",
                        Some(format!(
                            "the client's gateway defaults to the first host of its network; \
                             set `gateway:` or use another address of {net}"
                        )),
                    );
                    ok = false;
                } else {
                    self.claim_address(
                        gateway,
                        format!("the gateway of client {name}"),
                        &raw.address.referenced,
                    );
                }
                gateway
            }
        };
        let vpc_port = if ifname_problem(name).is_none() {
            name.clone()
        } else {
            hashed_ifname("p", name)
        };
        self.vpc_ifname(&vpc_port, format!("client {name}"), &raw.name.referenced);
        ok.then(|| Client {
            name: name.clone(),
            address,
            gateway,
            vpc_port,
        })
    }
}

/// The first host address of a network (the network address for /31, /32).
fn first_host(net: Ipv4Net) -> Ipv4Addr {
    if net.prefix_len() >= 31 {
        net.network()
    } else {
        Ipv4Addr::from(u32::from(net.network()) + 1)
    }
}

/// The first address left for pods once the bridge took the first one.
fn second_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(first_host(net)).saturating_add(1)).min(last_host(net))
}

/// The last host address of a network (the broadcast address for /31, /32).
fn last_host(net: Ipv4Net) -> Ipv4Addr {
    if net.prefix_len() >= 31 {
        net.broadcast()
    } else {
        Ipv4Addr::from(u32::from(net.broadcast()) - 1)
    }
}

/// `addr` with the prefix length of `net`.
fn with_prefix(addr: Ipv4Addr, net: Ipv4Net) -> Ipv4Net {
    Ipv4Net::new(addr, net.prefix_len()).unwrap_or(net)
}

impl Resolver<'_> {
    /// Check a node's sysctl: a path under /proc/sys/net that the kernel
    /// keeps per network namespace (labctl runs as root: anything else
    /// would change the host), with a one-line value. `map` is where the
    /// sysctls mapping starts.
    fn sysctl(&mut self, key: &str, value: &Spanned<SysctlValue>, map: &Location) -> bool {
        let key_span = self.key_span(key, map, &value.referenced);
        let problem = if !valid_sysctl(key) {
            Some((
                format!("invalid sysctl name `{key}`"),
                "invalid sysctl",
                "sysctl names are dotted paths under /proc/sys, like net.ipv4.ip_forward"
                    .to_string(),
            ))
        } else {
            match sysctl_scope(key) {
                SysctlScope::Netns => None,
                SysctlScope::NotNet => Some((
                    format!(
                        "sysctl `{key}` is not a network sysctl: setting it would change the host"
                    ),
                    "not per namespace",
                    SYSCTL_HELP.to_string(),
                )),
                SysctlScope::Global => Some((
                    format!(
                        "sysctl `{key}` is global, not kept per network namespace: setting it \
                         would change the host"
                    ),
                    "not per namespace",
                    SYSCTL_HELP.to_string(),
                )),
                SysctlScope::Unknown => Some((
                    format!("sysctl `{key}` is not one the kernel keeps per network namespace"),
                    "not per namespace",
                    SYSCTL_HELP.to_string(),
                )),
            }
        };
        if let Some((message, label, help)) = problem {
            let p = self.src.at_span(key_span, message, label, Some(help));
            self.problems.push(p);
            return false;
        }
        let text = &value.value.0;
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            let what = match c {
                '\n' | '\r' => "a line break".to_string(),
                c => format!("the control character {c:?}"),
            };
            self.err(
                &value.referenced,
                format!("the value of sysctl `{key}` contains {what}"),
                "invalid value",
                Some(
                    "a sysctl value is one line of text, like `1` or `4096 131072 6291456`".into(),
                ),
            );
            return false;
        }
        true
    }

    /// The span of a sysctl's key: its last occurrence between the start of
    /// the mapping and its value (the mapping itself if not found, e.g. for
    /// a key written with escapes).
    fn key_span(&self, key: &str, map: &Location, value: &Location) -> miette::SourceSpan {
        let start = self.src.span(map).offset();
        let end = self.src.span(value).offset();
        let found = (!key.is_empty() && start <= end)
            .then(|| self.src.text.get(start..end))
            .flatten()
            .and_then(|between| between.rfind(key));
        match found {
            Some(at) => miette::SourceSpan::new((start + at).into(), key.len()),
            None => self.src.span(map),
        }
    }
}

const SYSCTL_HELP: &str = "labctl sets only sysctls the kernel keeps per network namespace: \
                           net.ipv4.*, net.ipv6.*, net.netfilter.*, net.bridge.bridge-nf-*, \
                           net.mpls.*, net.core.somaxconn, net.unix.max_dgram_qlen and a few \
                           more; set the host's own sysctls on the host";

/// Where a sysctl lives.
#[derive(Debug, PartialEq, Eq)]
enum SysctlScope {
    /// In each network namespace: a lab may set it.
    Netns,
    /// Under /proc/sys/net, but one for the whole machine.
    Global,
    /// Under /proc/sys/net, in no subtree known to be per namespace.
    Unknown,
    /// Not under /proc/sys/net at all (`kernel.*`, `fs.*`, `vm.*`).
    NotNet,
}

/// Leaves of `net.ipv4` that are one for the machine (the kernel's
/// `ipv4_table`, registered in the initial namespace only, and entries of the
/// per-namespace table without per-namespace data, read-only elsewhere).
const IPV4_GLOBAL: &[&str] = &[
    "cipso_cache_bucket_size",
    "cipso_cache_enable",
    "cipso_rbm_optfmt",
    "cipso_rbm_strictvalid",
    "fib_sync_mem",
    "inet_peer_maxttl",
    "inet_peer_minttl",
    "inet_peer_threshold",
    "ipfrag_secret_interval",
    "tcp_allowed_congestion_control",
    "tcp_available_congestion_control",
    "tcp_available_ulp",
    "tcp_low_latency",
    "tcp_max_orphans",
    "tcp_mem",
    "udp_mem",
];

/// The leaves of `net.ipv4.route` kept per namespace; the others (gc_*,
/// max_size, redirect_*) are the machine's.
const IPV4_ROUTE_NETNS: &[&str] = &[
    "error_burst",
    "error_cost",
    "flush",
    "min_adv_mss",
    "min_pmtu",
    "mtu_expires",
];

/// Leaves of `net.ipv6` that are one for the machine (`ipv6_rotable`).
const IPV6_GLOBAL: &[&str] = &[
    "calipso_cache_bucket_size",
    "calipso_cache_enable",
    "ip6frag_secret_interval",
    "mld_max_msf",
    "mld_qrv",
];

/// Leaves of `net.netfilter` that are the machine's (read-only outside the
/// initial namespace).
const NETFILTER_GLOBAL: &[&str] = &[
    "nf_conntrack_buckets",
    "nf_conntrack_expect_max",
    "nf_conntrack_max",
];

/// The leaves of `net.core` kept per namespace (`netns_core_table` and
/// the xfrm ones); the rest of `net.core` (rmem_max, netdev_max_backlog,
/// bpf_jit_*, ...) is the machine's.
const CORE_NETNS: &[&str] = &[
    "somaxconn",
    "txrehash",
    "xfrm_acq_expires",
    "xfrm_aevent_etime",
    "xfrm_aevent_rseqth",
    "xfrm_larval_drop",
];

/// Whether a (valid) sysctl name is kept per network namespace. In a
/// namespace other than the initial one, /proc/sys/net shows only the
/// per-namespace tables, so what is global here is absent or read-only
/// there; anything outside `net` is the host's.
fn sysctl_scope(key: &str) -> SysctlScope {
    let parts: Vec<&str> = key.split(['.', '/']).collect();
    match parts.as_slice() {
        ["net", "ipv4", "route", leaf] => scope_if(IPV4_ROUTE_NETNS.contains(leaf)),
        ["net", "ipv4" | "ipv6", "neigh", "default", ..] => SysctlScope::Global,
        ["net", "ipv4", leaf] if IPV4_GLOBAL.contains(leaf) => SysctlScope::Global,
        ["net", "ipv6", leaf] if IPV6_GLOBAL.contains(leaf) => SysctlScope::Global,
        ["net", "netfilter", leaf] if NETFILTER_GLOBAL.contains(leaf) => SysctlScope::Global,
        [
            "net",
            "ipv4" | "ipv6" | "netfilter" | "mpls" | "sctp" | "mptcp",
            _,
            ..,
        ] => SysctlScope::Netns,
        ["net", "bridge", leaf] if leaf.starts_with("bridge-nf-") => SysctlScope::Netns,
        ["net", "unix", "max_dgram_qlen"] => SysctlScope::Netns,
        ["net", "core", leaf] => scope_if(CORE_NETNS.contains(leaf)),
        ["net", "nf_conntrack_max"] => SysctlScope::Global,
        ["net", ..] => SysctlScope::Unknown,
        _ => SysctlScope::NotNet,
    }
}

fn scope_if(per_netns: bool) -> SysctlScope {
    if per_netns {
        SysctlScope::Netns
    } else {
        SysctlScope::Global
    }
}

/// Why the kernel would refuse an interface name.
#[derive(Debug, PartialEq, Eq)]
enum IfnameProblem {
    Empty,
    /// Longer than IFNAMSIZ - 1 bytes (the kernel counts bytes).
    TooLong(usize),
    /// Not printable ASCII, or '/', ':' or a space: the kernel refuses
    /// '/', ':' and what its `isspace` matches, which includes byte 0xa0
    /// of UTF-8 text; a NUL would cut the name short.
    Char(char),
    /// `.` or `..`.
    Dots,
}

/// Check a name the way the kernel's `dev_valid_name` does, but refusing
/// anything that is not printable ASCII.
fn ifname_problem(n: &str) -> Option<IfnameProblem> {
    if n.is_empty() {
        Some(IfnameProblem::Empty)
    } else if n.len() > IFNAME_MAX {
        Some(IfnameProblem::TooLong(n.len()))
    } else if let Some(c) = n
        .chars()
        // '"' and '\' are the kernel's to allow, not ours: names are
        // written into nftables rules as quoted strings.
        .find(|c| !c.is_ascii_graphic() || matches!(c, '/' | ':' | '"' | '\\'))
    {
        Some(IfnameProblem::Char(c))
    } else if n == "." || n == ".." {
        Some(IfnameProblem::Dots)
    } else {
        None
    }
}

/// Sysctl names are paths under /proc/sys: no empty, `.` or `..` parts.
fn valid_sysctl(key: &str) -> bool {
    !key.is_empty()
        && key.split(['.', '/']).all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

const LAB_NAME_HELP: &str = "lab names are lowercase letters, digits and '-', start with a \
                             letter and have at most 20 characters: they prefix every network \
                             namespace";

/// Check a lab name given outside a file (`labctl up --name`): the same rules
/// as the `name:` key. The error reads well after "invalid lab name: ".
pub fn check_lab_name(n: &str) -> Result<(), String> {
    lab_name_problem(n).map_err(|(message, _)| format!("{message} ({LAB_NAME_HELP})"))
}

/// The problem with a lab name, as (message, label).
fn lab_name_problem(n: &str) -> Result<(), (String, &'static str)> {
    if !n.starts_with(|c: char| c.is_ascii_lowercase()) {
        Err((
            format!("lab name `{n}` must start with a lowercase letter"),
            "invalid lab name",
        ))
    } else if let Some(c) = n
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        Err((
            format!("lab name `{n}` contains {c:?}; only a-z, 0-9 and '-' are allowed"),
            "invalid lab name",
        ))
    } else if n.chars().count() > LAB_NAME_MAX {
        Err((
            format!(
                "lab name `{n}` is {} characters long, the limit is {LAB_NAME_MAX}",
                n.chars().count()
            ),
            "too long",
        ))
    } else {
        Ok(())
    }
}

impl Resolver<'_> {
    fn scenario(
        &mut self,
        raw: &RawScenario,
        lab: &Lab,
        names: &mut HashMap<String, Location>,
    ) -> Option<Scenario> {
        let before = self.problems.len();
        let name = &raw.name.value;
        if name.is_empty()
            || name.len() > ENTITY_NAME_MAX
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            self.err(
                &raw.name.referenced,
                format!("invalid scenario name `{name}`"),
                "invalid name",
                Some(format!(
                    "scenario names are lowercase letters, digits, '-' and '.', at most \
                     {ENTITY_NAME_MAX} characters: they name golden files and test trials"
                )),
            );
        } else if let Some(first) = names.get(name) {
            let first = first.line();
            self.err(
                &raw.name.referenced,
                format!("duplicate scenario name `{name}`, first at line {first}"),
                "duplicate",
                None,
            );
        } else {
            names.insert(name.clone(), raw.name.referenced);
        }

        let from = &raw.from.value;
        let sender = from != "vpc" && lab.interfaces_of(from).is_some();
        if !sender {
            let mut known: Vec<&str> = lab.nodes.iter().map(|n| n.name.as_str()).collect();
            known.extend(lab.pods.iter().map(|p| p.name.as_str()));
            known.extend(lab.clients.iter().map(|c| c.name.as_str()));
            known.extend(lab.objects.namespaces.iter().map(|n| n.name.as_str()));
            self.err(
                &raw.from.referenced,
                format!("unknown namespace, node, pod or client `{from}`"),
                "unknown sender",
                Some(unknown_hint("sender", from, &known)),
            );
        }
        let source = raw
            .source
            .as_ref()
            .filter(|_| sender)
            .and_then(|t| self.source(t, from, lab));

        let traffic = match raw.protocol {
            RawTraffic::Icmp => Traffic::Icmp,
            RawTraffic::Tcp => Traffic::Tcp,
            RawTraffic::Http => Traffic::Http,
            RawTraffic::Udp => Traffic::Udp,
        };
        let to = raw.to.value.trim();
        let (addr_text, port_text) = match to.rsplit_once(':') {
            Some((a, p)) => (a, Some(p)),
            None => (to, None),
        };
        let target = addr_text.parse::<Ipv4Addr>().ok();
        let port = port_text
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p > 0);
        if target.is_none() || (port_text.is_some() && port.is_none()) {
            self.err(
                &raw.to.referenced,
                format!("invalid target `{to}`"),
                "expected ADDRESS or ADDRESS:PORT",
                Some("write an ipv4 address, with `:PORT` for tcp, http and udp".into()),
            );
        } else if traffic == Traffic::Icmp && port.is_some() {
            self.err(
                &raw.to.referenced,
                format!("icmp has no ports: `{to}`"),
                "no port for icmp",
                Some(format!("write `to: {addr_text}`")),
            );
        } else if traffic != Traffic::Icmp && port.is_none() {
            self.err(
                &raw.to.referenced,
                format!("target `{to}` needs a port for {:?} traffic", traffic).to_lowercase(),
                "missing :PORT",
                Some(format!("write `to: {addr_text}:80`, say")),
            );
        }

        let (changes, link_changes, route_changes, object_changes) =
            self.changes(&raw.changes, lab);
        // Interfaces are named as they are during the scenario: a moved
        // pod's `POD/host` is its veth on the node it moved to.
        let moved;
        let during = if object_changes
            .iter()
            .any(|c| matches!(c, ObjectChange::Move { .. }))
        {
            let mut l = lab.clone();
            for c in &object_changes {
                if let ObjectChange::Move { pod, to, .. } = c
                    && let Some(p) = l.pods.iter_mut().find(|p| &p.name == pod)
                {
                    p.node = to.clone();
                }
            }
            moved = l;
            &moved
        } else {
            lab
        };
        let hops = |r: &mut Self, list: &[Text]| -> Vec<String> {
            list.iter()
                .filter_map(|h| match during.canonical_hop(h.value.trim()) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        r.err(
                            &h.referenced,
                            e,
                            "unknown interface",
                            Some(
                                "interfaces are ENTITY/IFNAME (see `labctl plan FILE`), \
                                 POD/host for a pod's veth on its node, or vpc"
                                    .into(),
                            ),
                        );
                        None
                    }
                })
                .collect()
        };
        let path = raw.expect.path.as_ref().map(|p| hops(self, p));
        let show_arp = raw.capture.arp;
        let sightings = |r: &mut Self, list: &[Spanned<RawSighting>]| -> Vec<Sighting> {
            list.iter()
                .filter_map(|spanned| {
                    let before = r.problems.len();
                    let s = &spanned.value;
                    let address = s.address.as_ref().and_then(|a| r.ipv4(a, "address"));
                    let src_mac = s.src_mac.as_ref().and_then(|m| r.filter_mac(m));
                    let dst_mac = s.dst_mac.as_ref().and_then(|m| r.filter_mac(m));
                    let vlan = s.vlan.as_ref().and_then(|v| {
                        if v.value > 4094 {
                            r.err(
                                &v.referenced,
                                format!("invalid vlan id {}", v.value),
                                "out of range",
                                Some("an 802.1Q VLAN id is 0 to 4094".into()),
                            );
                            return None;
                        }
                        Some(v.value as u16)
                    });
                    let vni = s.vni.as_ref().and_then(|v| {
                        if v.value > 0xff_ffff {
                            r.err(
                                &v.referenced,
                                format!("invalid vni {}", v.value),
                                "out of range",
                                Some(
                                    "a VXLAN network identifier has 24 bits: 0 to 16777215".into(),
                                ),
                            );
                            return None;
                        }
                        Some(v.value)
                    });
                    let protocol = s.protocol.as_ref().map(|p| {
                        let proto = match p.value {
                            RawSightProto::Arp => SightProto::Arp,
                            RawSightProto::Icmp => SightProto::Icmp,
                            RawSightProto::Tcp => SightProto::Tcp,
                            RawSightProto::Udp => SightProto::Udp,
                        };
                        if proto == SightProto::Arp && !show_arp {
                            r.err(
                                &p.referenced,
                                "ARP is not captured in this scenario".into(),
                                "arp not shown",
                                Some(
                                    "add `capture: {arp: true}` to the scenario: taps leave ARP \
                                     out unless asked"
                                        .into(),
                                ),
                            );
                        }
                        proto
                    });
                    if s.address.is_none()
                        && s.src_mac.is_none()
                        && s.dst_mac.is_none()
                        && s.vlan.is_none()
                        && s.vni.is_none()
                        && s.protocol.is_none()
                    {
                        r.err(
                            &spanned.referenced,
                            "a sighting needs something to look for".into(),
                            "no filter",
                            Some(
                                "give at least one of address, src_mac, dst_mac, vlan, vni, \
                                 protocol"
                                    .into(),
                            ),
                        );
                    }
                    let interfaces = hops(r, &s.interfaces);
                    (r.problems.len() == before).then_some(Sighting {
                        address,
                        src_mac,
                        dst_mac,
                        vlan,
                        vni,
                        protocol,
                        interfaces,
                        only: s.only,
                    })
                })
                .collect()
        };
        let seen_on = sightings(self, &raw.expect.seen_on);
        let not_seen_on = sightings(self, &raw.expect.not_seen_on);
        let server_saw_client = raw
            .expect
            .server_saw_client
            .as_ref()
            .and_then(|t| self.ipv4(t, "address"));
        let served_by = raw.expect.served_by.as_ref().and_then(|b| {
            let name = &b.value;
            let serves = lab
                .pods
                .iter()
                .any(|p| &p.name == name && !p.ports.is_empty())
                || lab
                    .objects
                    .namespaces
                    .iter()
                    .any(|n| &n.name == name && !n.ports.is_empty());
            if !serves {
                let known: Vec<&str> = lab
                    .pods
                    .iter()
                    .filter(|p| !p.ports.is_empty())
                    .map(|p| p.name.as_str())
                    .chain(
                        lab.objects
                            .namespaces
                            .iter()
                            .filter(|n| !n.ports.is_empty())
                            .map(|n| n.name.as_str()),
                    )
                    .collect();
                self.err(
                    &b.referenced,
                    format!("`{name}` is no pod or namespace that serves ports"),
                    "serves nothing",
                    Some(unknown_hint("server", name, &known)),
                );
                return None;
            }
            if traffic != Traffic::Http {
                self.err(
                    &b.referenced,
                    "only an HTTP answer says who served it".into(),
                    "not HTTP",
                    Some("use `protocol: http`, or leave `served_by` out".into()),
                );
                return None;
            }
            Some(name.clone())
        });
        let rtt_ms = raw
            .expect
            .rtt_ms
            .as_ref()
            .and_then(|r| self.range(r, "rtt_ms", false));
        let retransmits = raw.expect.retransmits.as_ref().and_then(|r| {
            if !matches!(traffic, Traffic::Tcp | Traffic::Http) {
                self.err(
                    &r.referenced,
                    format!(
                        "retransmissions are counted for tcp and http, and this scenario sends {}",
                        format!("{traffic:?}").to_lowercase()
                    ),
                    "not tcp",
                    Some("remove `retransmits`, or send `protocol: tcp`".into()),
                );
                return None;
            }
            self.range(r, "retransmits", true)
        });
        let pods: Vec<&str> = lab.pods.iter().map(|p| p.name.as_str()).collect();
        let nodes: Vec<&str> = lab.nodes.iter().map(|n| n.name.as_str()).collect();
        let entity = |r: &mut Self, text: &Option<Spanned<String>>, known: &[&str], what: &str| {
            let t = text.as_ref()?;
            if known.contains(&t.value.as_str()) {
                Some(t.value.clone())
            } else {
                r.err(
                    &t.referenced,
                    format!("unknown {what} `{}`", t.value),
                    "unknown",
                    Some(unknown_hint(what, &t.value, known)),
                );
                None
            }
        };
        let backend = entity(self, &raw.backend, &pods, "pod");
        if let (Some(pod), Some(target), Some(text)) = (&backend, target, &raw.backend) {
            self.backend_serves(pod, text, (target, port), &changes, lab);
        }
        let via_node = entity(self, &raw.via_node, &nodes, "node");
        let mut conntrack = Vec::new();
        for c in &raw.expect.conntrack {
            let mut places = nodes.clone();
            places.push("vpc");
            let on = entity(self, &Some(c.on.clone()), &places, "node");
            let tuple = |r: &mut Self, t: &Spanned<String>| {
                let m = TupleMatch::parse(&t.value);
                if m.is_none() {
                    r.err(
                        &t.referenced,
                        format!("invalid conntrack tuple `{}`", t.value),
                        "expected SRC[:PORT] -> DST[:PORT]",
                        Some("write e.g. `172.23.96.23 -> 192.168.13.23:80`".into()),
                    );
                }
                m
            };
            let original = tuple(self, &c.original);
            let reply = c.reply.as_ref().map(|t| tuple(self, t));
            if let (Some(on), Some(original)) = (on, original) {
                conntrack.push(ConntrackExpect {
                    on,
                    original,
                    reply: reply.flatten(),
                });
            }
        }
        let devices = self.positive_count(
            raw.expect.devices.as_ref(),
            "a request crosses at least one device",
            "devices",
        );
        let hops = self.positive_count(
            raw.expect.hops.as_ref(),
            "a request makes at least one hop",
            "hops",
        );
        let neighbours = self.neighbour_expects(&raw.expect.neighbours, lab);
        let nftables = self.nft_expects(&raw.expect.nftables, lab);
        if self.problems.len() > before {
            return None;
        }
        Some(Scenario {
            name: name.clone(),
            description: raw.description.clone(),
            from: from.clone(),
            source,
            target: target?,
            port,
            traffic,
            attempts: raw.attempts.unwrap_or(1).max(1),
            timeout_ms: raw.timeout_ms.unwrap_or(1000),
            changes,
            link_changes,
            route_changes,
            object_changes,
            backend,
            via_node,
            in_cluster_external: raw.in_cluster_external,
            show_arp,
            expect: Expect {
                result: match raw.expect.result.unwrap_or(RawResult::Connected) {
                    RawResult::Connected => ResultKind::Connected,
                    RawResult::Refused => ResultKind::Refused,
                    RawResult::Timeout => ResultKind::Timeout,
                    RawResult::Reset => ResultKind::Reset,
                    RawResult::Unreachable => ResultKind::Unreachable,
                },
                path,
                stacks: raw.expect.stacks,
                seen_on,
                not_seen_on,
                server_saw_client,
                served_by,
                conntrack,
                rtt_ms,
                retransmits,
                devices,
                hops,
                neighbours,
                nftables,
            },
        })
    }

    /// An expectation's count of the path (`devices`, `hops`): at least 1.
    fn positive_count(
        &mut self,
        n: Option<&Spanned<u32>>,
        message: &str,
        key: &str,
    ) -> Option<u32> {
        let n = n?;
        if n.value == 0 {
            self.err(
                &n.referenced,
                message.into(),
                &format!("zero {key}"),
                Some(format!(
                    "write the number of {key} on the path, e.g. `{key}: 18`"
                )),
            );
            return None;
        }
        Some(n.value)
    }

    /// `expect.neighbours`: a namespace of the lab, one of its interfaces,
    /// an IPv4 address, a MAC.
    fn neighbour_expects(
        &mut self,
        list: &[RawNeighbourExpect],
        lab: &Lab,
    ) -> Vec<NeighbourExpect> {
        let mut out = Vec::new();
        for n in list {
            let before = self.problems.len();
            let entity = n.netns.value.trim();
            let ifs = lab.interfaces_of(entity);
            if ifs.is_none() {
                let entities = lab.entities();
                let known: Vec<&str> = entities.iter().map(|(e, _)| e.as_str()).collect();
                self.err(
                    &n.netns.referenced,
                    format!("unknown namespace, node, pod or client `{entity}`"),
                    "unknown namespace",
                    Some(unknown_hint("namespace", entity, &known)),
                );
            }
            let dev = n.dev.as_ref().and_then(|d| {
                let name = d.value.trim();
                let ifs = ifs.as_ref()?;
                if ifs.iter().any(|i| i == name) {
                    Some(name.to_string())
                } else {
                    self.err(
                        &d.referenced,
                        format!("`{entity}` has no interface `{name}`"),
                        "unknown interface",
                        Some(format!("it has: {}", ifs.join(", "))),
                    );
                    None
                }
            });
            let address = self.ipv4(&n.address, "address");
            let lladdr = n.lladdr.as_ref().and_then(|m| self.filter_mac(m));
            if self.problems.len() > before {
                continue;
            }
            if let Some(address) = address {
                out.push(NeighbourExpect {
                    entity: entity.to_string(),
                    dev,
                    address,
                    lladdr,
                    present: n.present.unwrap_or(true),
                });
            }
        }
        out
    }

    /// `expect.nftables`: a namespace of the lab, each named once.
    fn nft_expects(&mut self, list: &[RawNftExpect], lab: &Lab) -> Vec<NftExpect> {
        let mut out: Vec<NftExpect> = Vec::new();
        for n in list {
            let entity = n.netns.value.trim();
            if lab.interfaces_of(entity).is_none() {
                let entities = lab.entities();
                let known: Vec<&str> = entities.iter().map(|(e, _)| e.as_str()).collect();
                self.err(
                    &n.netns.referenced,
                    format!("unknown namespace, node, pod or client `{entity}`"),
                    "unknown namespace",
                    Some(unknown_hint("namespace", entity, &known)),
                );
            } else if out.iter().any(|o| o.entity == entity) {
                self.err(
                    &n.netns.referenced,
                    format!("the ruleset of `{entity}` is expected twice"),
                    "again",
                    Some("one namespace has one ruleset: keep one expectation".into()),
                );
            } else {
                out.push(NftExpect {
                    entity: entity.to_string(),
                    empty: n.empty,
                });
            }
        }
        out
    }

    /// A MAC address to look for: any six hex octets (broadcast and
    /// multicast included, unlike a MAC a link is given).
    fn filter_mac(&mut self, text: &Text) -> Option<[u8; 6]> {
        let t = text.value.trim();
        let parts: Vec<&str> = t.split(':').collect();
        let mut mac = [0u8; 6];
        let ok = parts.len() == 6
            && parts
                .iter()
                .zip(mac.iter_mut())
                .all(|(p, b)| p.len() == 2 && u8::from_str_radix(p, 16).map(|v| *b = v).is_ok());
        if !ok {
            self.err(
                &text.referenced,
                format!("invalid mac address `{t}`"),
                "not a mac address",
                Some("write six hex octets like 0a:58:0a:84:02:2e".to_string()),
            );
            return None;
        }
        Some(mac)
    }

    /// `{min, max}`: both at least 0, min not above max, whole numbers
    /// for counts.
    fn range(&mut self, raw: &Spanned<RawRange>, what: &str, whole: bool) -> Option<Range> {
        let r = &raw.value;
        if r.min.is_none() && r.max.is_none() {
            self.err(
                &raw.referenced,
                format!("`{what}` sets no bound"),
                "empty range",
                Some(format!("write `{what}: {{min: N}}`, `{{max: M}}` or both")),
            );
            return None;
        }
        let before = self.problems.len();
        for end in [&r.min, &r.max].into_iter().flatten() {
            let v = end.value;
            if !v.is_finite() || v < 0.0 {
                self.err(
                    &end.referenced,
                    format!("`{what}` bound {v} is negative"),
                    "negative",
                    Some("bounds are 0 or more".into()),
                );
            } else if whole && v.fract() != 0.0 {
                self.err(
                    &end.referenced,
                    format!("`{what}` counts segments: {v} is not a whole number"),
                    "not a count",
                    None,
                );
            }
        }
        if let (Some(a), Some(b)) = (&r.min, &r.max)
            && a.value > b.value
        {
            self.err(
                &b.referenced,
                format!("`{what}`: max {} is below min {}", b.value, a.value),
                "max below min",
                Some("swap them".into()),
            );
        }
        (self.problems.len() == before).then(|| Range {
            min: r.min.as_ref().map(|m| m.value),
            max: r.max.as_ref().map(|m| m.value),
        })
    }

    fn netem(&mut self, raw: &Spanned<RawNetem>) -> Option<Netem> {
        let before = self.problems.len();
        let n = &raw.value;
        let field = |r: &mut Self,
                     v: &Option<Spanned<Scalar>>,
                     what: &str,
                     parse: &dyn Fn(&str) -> Result<u64, String>|
         -> u64 {
            let Some(v) = v else { return 0 };
            match parse(&v.value.0) {
                Ok(x) => x,
                Err(e) => {
                    r.err(&v.referenced, format!("netem {what}: {e}"), "invalid", None);
                    0
                }
            }
        };
        // A minute is far beyond any scenario's timeout already.
        let duration = |t: &str| {
            parse_duration(t).and_then(|ns| {
                if ns > 60_000_000_000 {
                    Err(format!("`{t}` is more than a minute"))
                } else {
                    Ok(ns)
                }
            })
        };
        let percent = |t: &str| Percent::parse(t).map(|p| u64::from(p.0));
        let delay_ns = field(self, &n.delay, "delay", &duration);
        let jitter_ns = field(self, &n.jitter, "jitter", &duration);
        let loss = Percent(field(self, &n.loss, "loss", &percent) as u32);
        let rate_bps = field(self, &n.rate, "rate", &parse_rate);
        let reorder = Percent(field(self, &n.reorder, "reorder", &percent) as u32);
        if self.problems.len() > before {
            return None;
        }
        let netem = Netem {
            delay_ns,
            jitter_ns,
            loss,
            rate_bps,
            reorder,
        };
        if netem == Netem::default() {
            self.err(
                &raw.referenced,
                "netem with no impairment".into(),
                "nothing to do",
                Some("give it delay, jitter, loss, rate or reorder, e.g. `{delay: 50ms}`".into()),
            );
            return None;
        }
        // netem reorders by sending some packets without the delay, and
        // jitter varies the delay: neither means anything without one
        // (iproute2 refuses `reorder` without `delay` too).
        for (v, what) in [(&n.jitter, "jitter"), (&n.reorder, "reorder")] {
            if let Some(v) = v
                && delay_ns == 0
            {
                self.err(
                    &v.referenced,
                    format!("netem {what} needs a delay"),
                    "no delay",
                    Some(format!(
                        "add `delay: 50ms`, say: {what} works on delayed packets"
                    )),
                );
            }
        }
        (self.problems.len() == before).then_some(netem)
    }
}

impl Resolver<'_> {
    /// A service; `pods` are the file's pods (a pod with problems of its own
    /// is still a known endpoint).
    fn service(
        &mut self,
        raw: &RawService,
        pods: &[RawPod],
        node_ports: &mut HashMap<(u16, Protocol), Location>,
    ) -> Option<Service> {
        let before = self.problems.len();
        let name = &raw.name.value;
        let names: Vec<&str> = pods.iter().map(|p| p.name.value.as_str()).collect();
        let cluster_ip = self.ipv4(&raw.cluster_ip, "cluster ip");
        if let Some(ip) = cluster_ip {
            self.claim_address(ip, format!("service {name}"), &raw.cluster_ip.referenced);
        }
        let mut external_ips = Vec::new();
        for text in &raw.external_ips {
            if let Some(ip) = self.ipv4(text, "external ip") {
                self.claim_address(ip, format!("service {name}"), &text.referenced);
                external_ips.push(ip);
            }
        }
        let load_balancer_ip = match &raw.load_balancer_ip {
            Some(text) => {
                let ip = self.ipv4(text, "load balancer ip");
                if let Some(ip) = ip {
                    self.claim_address(ip, format!("service {name}"), &text.referenced);
                }
                Some(ip)
            }
            None => None,
        };
        let mut endpoints: Vec<String> = Vec::new();
        for e in &raw.endpoints {
            if !names.contains(&e.value.as_str()) {
                self.err(
                    &e.referenced,
                    format!("unknown pod `{}`", e.value),
                    "unknown endpoint",
                    Some(unknown_hint("pod", &e.value, &names)),
                );
            }
        }
        if let Some(selector) = &raw.selector {
            let selected: Vec<&str> = pods
                .iter()
                .filter(|p| {
                    selector
                        .value
                        .iter()
                        .all(|(k, v)| p.labels.get(k) == Some(v))
                })
                .map(|p| p.name.value.as_str())
                .collect();
            if selected.is_empty() {
                let wanted: Vec<String> = selector
                    .value
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect();
                self.err(
                    &selector.referenced,
                    format!(
                        "service {name}: no pod has the labels {{{}}}",
                        wanted.join(", ")
                    ),
                    "selects nothing",
                    Some("give the pods `labels:` with these keys and values".into()),
                );
            }
            for n in selected {
                if !raw.endpoints.iter().any(|e| e.value == n) {
                    endpoints.push(n.to_string());
                }
            }
        }
        // Named endpoints first, then selected ones, each in pod order.
        let mut all: Vec<String> = names
            .iter()
            .filter(|n| raw.endpoints.iter().any(|e| e.value == **n))
            .map(|n| n.to_string())
            .collect();
        all.extend(endpoints);
        if raw.endpoints.is_empty() && raw.selector.is_none() {
            self.err(
                &raw.name.referenced,
                format!("service {name} has no endpoints"),
                "no endpoints",
                Some("add `endpoints: [POD, ...]` or `selector: {app: NAME}`".into()),
            );
        }
        let ports: Vec<ServicePort> = raw
            .ports
            .iter()
            .map(|p| ServicePort {
                port: p.port,
                target_port: p.target_port.unwrap_or(p.port),
                node_port: p.node_port,
                protocol: match p.protocol {
                    Some(RawProtocol::Udp) => Protocol::Udp,
                    _ => Protocol::Tcp,
                },
            })
            .collect();
        if ports.is_empty() || ports.iter().any(|p| p.port == 0 || p.target_port == 0) {
            self.err(
                &raw.name.referenced,
                format!("service {name} needs ports from 1 to 65535"),
                "no ports",
                Some("write `ports: [{ port: 80 }]`".into()),
            );
        }
        for p in &ports {
            let Some(np) = p.node_port else { continue };
            if !(30000..=32767).contains(&np) {
                self.err(
                    &raw.name.referenced,
                    format!("service {name}: node port {np} is outside 30000-32767"),
                    "node port out of range",
                    Some("Kubernetes allocates node ports from 30000-32767 (--service-node-port-range)".into()),
                );
            } else if let Some(first) = node_ports.get(&(np, p.protocol)) {
                let line = first.line();
                self.err(
                    &raw.name.referenced,
                    format!("service {name}: node port {np} is already used at line {line}"),
                    "node port taken",
                    Some("every service needs node ports of its own".into()),
                );
            } else {
                node_ports.insert((np, p.protocol), raw.name.referenced);
            }
        }
        if let Some(text) = &raw.load_balancer_ip
            && ports.iter().any(|p| p.node_port.is_some())
            && ports.iter().any(|p| p.node_port.is_none())
        {
            self.err(
                &text.referenced,
                format!("service {name}: some ports have a node_port and some do not"),
                "mixed node ports",
                Some(
                    "the SLB forwards either to nodeIP:nodePort (Flannel: give every port a \
                     node_port) or straight to the pods (Terway ENIs: give none)"
                        .into(),
                ),
            );
        }
        let session_affinity = self.session_affinity(raw);
        let load_balancer_source_ranges = self.source_ranges(raw);
        if self.problems.len() > before {
            return None;
        }
        Some(Service {
            name: name.clone(),
            cluster_ip: cluster_ip?,
            external_ips,
            load_balancer_ip: load_balancer_ip.flatten(),
            external_traffic_policy: policy(raw.external_traffic_policy),
            internal_traffic_policy: policy(raw.internal_traffic_policy),
            session_affinity,
            load_balancer_source_ranges,
            ports,
            endpoints: all,
        })
    }
}

impl Resolver<'_> {
    /// `session_affinity` and its timeout: the timeout in seconds under
    /// `ClientIP`, as Kubernetes' validation allows it (1 to 86400).
    fn session_affinity(&mut self, raw: &RawService) -> Option<u32> {
        let name = &raw.name.value;
        let client_ip = raw.session_affinity == Some(RawSessionAffinity::ClientIp);
        let Some(t) = &raw.session_affinity_timeout_seconds else {
            return client_ip.then_some(DEFAULT_AFFINITY_TIMEOUT_SECONDS);
        };
        if !client_ip {
            self.err(
                &t.referenced,
                format!("service {name}: a session affinity timeout without `session_affinity: ClientIP`"),
                "no affinity to time out",
                Some("add `session_affinity: ClientIP`, or remove the timeout".into()),
            );
            return None;
        }
        if t.value == 0 || t.value > MAX_AFFINITY_TIMEOUT_SECONDS {
            self.err(
                &t.referenced,
                format!(
                    "service {name}: session affinity timeout {} is outside 1-{MAX_AFFINITY_TIMEOUT_SECONDS}",
                    t.value
                ),
                "out of range",
                Some(format!(
                    "Kubernetes accepts 1 to {MAX_AFFINITY_TIMEOUT_SECONDS} seconds (a day); the default is {DEFAULT_AFFINITY_TIMEOUT_SECONDS}"
                )),
            );
            return None;
        }
        Some(t.value)
    }

    /// `load_balancer_source_ranges`: networks, only on a service with a
    /// load balancer address (Kubernetes ignores them on others; here that
    /// is a mistake worth saying).
    fn source_ranges(&mut self, raw: &RawService) -> Vec<Ipv4Net> {
        let name = &raw.name.value;
        let mut out = Vec::new();
        for text in &raw.load_balancer_source_ranges {
            if raw.load_balancer_ip.is_none() {
                self.err(
                    &text.referenced,
                    format!(
                        "service {name}: load balancer source ranges without a load balancer ip"
                    ),
                    "not a LoadBalancer service",
                    Some(
                        "kube-proxy applies source ranges to load balancer addresses only: \
                         add `load_balancer_ip:`, or remove the ranges"
                            .into(),
                    ),
                );
                return Vec::new();
            }
            if let Some(net) = self.network(text, "load balancer source range") {
                out.push(net);
            }
        }
        out
    }
}

fn policy(raw: Option<RawTrafficPolicy>) -> TrafficPolicy {
    match raw {
        Some(RawTrafficPolicy::Local) => TrafficPolicy::Local,
        Some(RawTrafficPolicy::Cluster) | None => TrafficPolicy::Cluster,
    }
}
