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
mod client;
mod evpn;
mod node;
mod objects;
mod pod;
mod scenario;
mod service;
mod sysctl;

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

    /// `text` as six hex octets, or the error with `help`.
    fn hex_octets(&mut self, text: &Text, help: &str) -> Option<[u8; 6]> {
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
                Some(help.to_string()),
            );
            return None;
        }
        Some(mac)
    }

    fn mac(&mut self, text: &Text) -> Option<[u8; 6]> {
        let t = text.value.trim();
        let mac = self.hex_octets(text, "write a mac address like 02:00:0a:00:00:b4")?;
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
}

/// The first host address of a network (the network address for /31, /32).
fn first_host(net: Ipv4Net) -> Ipv4Addr {
    if net.prefix_len() >= 31 {
        net.network()
    } else {
        Ipv4Addr::from(u32::from(net.network()) + 1)
    }
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
