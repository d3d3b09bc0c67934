//! Planning: the validated lab model becomes an ordered list of kernel
//! actions, a pure value that tests inspect without root.
//!
//! Every interface gets its ifindex here (1 is `lo` in a fresh namespace, the
//! rest are numbered in the order the objects are listed, which need not be
//! the order they are made in: a bridge is made before its ports, whatever
//! its number). The kernel honours a requested
//! ifindex on `RTM_NEWLINK`, veth peers included, so the executor never has to
//! look an index up and can send a namespace's whole batch without waiting;
//! it also makes ifindexes in captures and golden files the same every run.
//!
//! Actions are grouped in phases. Within a phase they are independent and run
//! concurrently; a phase starts when the previous one has finished.
//!
//! One path from YAML to kernel: the vpc/nodes/pods/clients keys are
//! lowered to the low-level layer's objects (`Lab::lowered`, in the
//! topology crate) and planned by `objects` as the user's own `links`,
//! `addresses`, `routes`... are. [`plan`] plans, in the order that fixes
//! their ifindexes: the lowered keys, the VPC's bridge-family nft table
//! (`vpc`), services ([`services`]), the eBPF load balancer ([`ebpf`]), the
//! user's low-level objects (`objects`) and the eBPF overlay router of
//! [`route`].

use std::collections::HashMap;
use std::fmt;

use labctl_topology::Lab;
use serde::Serialize;

pub use crate::kernel::step::{
    Action, IfRef, NsSpec, Phase, Step, TC_PRIO, route_destination, shell_quote,
};
use crate::kernel::{bridge, dummy, link, veth, vxlan};

pub mod ebpf;
mod objects;
pub mod route;
mod script;
pub mod services;
mod vpc;

/// Everything `up` will do, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub lab: String,
    pub namespaces: Vec<NsSpec>,
    pub steps: Vec<Step>,
}

impl Plan {
    /// The kernel modules to load before the steps run, which nothing
    /// loads on demand for them: `br_netfilter` when a step writes one of
    /// its `net.bridge.*` sysctls (an `ip` request loads veth, bridge or
    /// vxlan by itself; a write under /proc/sys/net/bridge cannot), and
    /// IPVS when a namespace gets an IPVS table (`ipvsadm` would load it,
    /// but the probe says plainly when the kernel has none). `up` probes
    /// and loads these ([`crate::features::probe`]) and the script starts
    /// by loading `br_netfilter` ([`Plan::to_script`]): one rule for both.
    pub fn modules(&self) -> std::collections::BTreeSet<crate::features::Feature> {
        use crate::features::Feature;
        self.steps
            .iter()
            .filter_map(|step| match &step.action {
                Action::Sysctl(s) if s.key.starts_with("net.bridge.") => Some(Feature::BrNetfilter),
                Action::IpvsTable(_) => Some(Feature::Ipvs),
                _ => None,
            })
            .collect()
    }

    /// The steps of one phase.
    pub fn phase(&self, phase: Phase) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(move |s| s.phase == phase)
    }

    /// The plan as shell commands, one a line (a heredoc spans several):
    /// the namespaces, then every step. Every word that comes from the
    /// topology is quoted ([`shell_quote`]), so running the commands does
    /// what the plan says whatever the names and values are.
    pub fn to_commands(&self) -> String {
        // No IPv6 in the namespaces is the steps' work, as in `up`: each
        // link made gets address generation mode `none` before it comes up
        // and each `lo` loses `::1` (see `crate::kernel`), not a
        // `disable_ipv6` sysctl per namespace, whose `ip netns exec` and
        // /proc/sys write each cost more with every namespace alive.
        self.commands()
    }

    fn commands(&self) -> String {
        let mut out = String::new();
        for ns in &self.namespaces {
            out.push_str(&format!("ip netns add {}\n", shell_quote(&ns.name)));
        }
        for step in &self.steps {
            out.push_str(&step.to_string());
            out.push('\n');
        }
        out
    }
}

impl fmt::Display for Step {
    /// The iproute2 equivalent of the step, every word from the topology
    /// quoted for the shell ([`shell_quote`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = shell_quote;
        let ns = q(&self.netns);
        match &self.action {
            Action::LoopbackUp(a) => a.command(&ns, f),
            Action::AddBridge(a) => a.command(&ns, f),
            Action::AddVeth(a) => a.command(&ns, f),
            Action::LinkUp(a) => a.command(&ns, f),
            Action::IsolatePort(a) => a.command(&ns, f),
            Action::RenameUp(a) => a.command(&ns, f),
            Action::AddDummy(a) => a.command(&ns, f),
            Action::IpvsTable(a) => a.command(&ns, f),
            Action::Nftables(a) => a.command(&ns, f),
            Action::AddAddress(a) => a.command(&ns, f),
            Action::AddHostAddress(a) => a.command(&ns, f),
            Action::ArpOff(a) => a.command(&ns, f),
            Action::SelfNeighbour(a) => a.command(&ns, f),
            Action::AddRoute(a) => a.command(&ns, f),
            Action::Sysctl(a) => a.command(&ns, f),
            Action::Netem(a) => a.command(&ns, f),
            Action::QdiscDelete(a) => a.command(&ns, f),
            Action::LinkDown(a) => a.command(&ns, f),
            Action::SetMtu(a) => a.command(&ns, f),
            Action::AddVxlan(a) => a.command(&ns, f),
            Action::DelRoute(a) => a.command(&ns, f),
            Action::SetMac(a) => a.command(&ns, f),
            Action::SetMaster(a) => a.command(&ns, f),
            Action::AddNeighbour(a) => a.command(&ns, f),
            Action::AddFdb(a) => a.command(&ns, f),
            Action::Clsact(a) => a.command(&ns, f),
            Action::DelLink(a) => a.command(&ns, f),
            Action::DelTcFilters(a) => a.command(&ns, f),
            Action::DelClsact(a) => a.command(&ns, f),
            Action::DelNeighbour(a) => a.command(&ns, f),
            Action::ForgetNeighbours(a) => a.command(&ns, f),
            Action::FlushConntrack(a) => a.command(&ns, f),
            Action::ForgetTimeWait(a) => a.command(&ns, f),
            Action::DelFdb(a) => a.command(&ns, f),
            Action::TcMirred(a) => a.command(&ns, f),
            Action::BpfLoad(a) => a.command(&ns, f),
            Action::BpfAttach(a) => a.command(&ns, f),
            Action::BpfMaps(a) => a.command(&ns, f),
            Action::RouteLoad(a) => a.command(&ns, f),
            Action::RouteMaps(a) => a.command(&ns, f),
            Action::AddVlan(a) => a.command(&ns, f),
            Action::AddBond(a) => a.command(&ns, f),
            Action::Enslave(a) => a.command(&ns, f),
            Action::AddOffParent(a) => a.command(&ns, f),
            Action::AddVlanBridge(a) => a.command(&ns, f),
            Action::SetPort(a) => a.command(&ns, f),
            Action::BridgeVlan(a) => a.command(&ns, f),
            Action::AddNsRoute(a) => a.command(&ns, f),
            Action::DelNsRoute(a) => a.command(&ns, f),
        }
    }
}

/// An interface of the lab: its namespace, name and index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Iface {
    pub netns: String,
    pub ifname: String,
    pub ifindex: u32,
}

/// Every interface `up` makes, by namespace and name, and veth peers, read
/// off the plan (which fixes every ifindex).
pub struct Interfaces {
    index: HashMap<(String, String), u32>,
    peer: HashMap<(String, String), (String, String)>,
}

impl Interfaces {
    pub fn of(plan: &Plan) -> Interfaces {
        Interfaces::of_steps(&plan.steps)
    }

    /// Every interface the steps make.
    pub fn of_steps(steps: &[Step]) -> Interfaces {
        let mut index = HashMap::new();
        let mut peer = HashMap::new();
        for s in steps {
            let ns = s.netns.clone();
            match &s.action {
                Action::LoopbackUp(_) => {
                    index.insert((ns, "lo".to_string()), 1);
                }
                Action::AddBridge(bridge::AddBridge { name, ifindex, .. })
                | Action::AddDummy(dummy::AddDummy { name, ifindex })
                | Action::AddVxlan(vxlan::AddVxlan {
                    name,
                    ifindex,
                    netns: None,
                    ..
                }) => {
                    index.insert((ns, name.clone()), *ifindex);
                }
                Action::AddVeth(veth::AddVeth {
                    name,
                    ifindex,
                    peer_name,
                    peer_netns,
                    peer_ifindex,
                    ..
                }) => {
                    let a = (ns, name.clone());
                    let b = (peer_netns.clone(), peer_name.clone());
                    index.insert(a.clone(), *ifindex);
                    index.insert(b.clone(), *peer_ifindex);
                    peer.insert(a.clone(), b.clone());
                    peer.insert(b, a);
                }
                Action::RenameUp(link::RenameUp {
                    ifname, ifindex, ..
                }) => {
                    index.insert((ns, ifname.clone()), *ifindex);
                }
                Action::AddVlan(a) => {
                    index.insert((ns, a.name.clone()), a.ifindex);
                }
                Action::AddBond(a) => {
                    index.insert((ns, a.name.clone()), a.ifindex);
                }
                Action::AddVlanBridge(a) => {
                    index.insert((ns, a.name.clone()), a.ifindex);
                }
                Action::AddOffParent(a) if a.netns.is_none() => {
                    index.insert((ns, a.name.clone()), a.ifindex);
                }
                _ => {}
            }
        }
        Interfaces { index, peer }
    }

    /// Record an interface made later.
    pub fn insert(&mut self, netns: &str, ifname: &str, ifindex: u32) {
        self.index
            .insert((netns.to_string(), ifname.to_string()), ifindex);
    }

    /// The interface `ifname` of namespace `netns`.
    pub fn get(&self, netns: &str, ifname: &str) -> Option<Iface> {
        let ifindex = *self.index.get(&(netns.to_string(), ifname.to_string()))?;
        Some(Iface {
            netns: netns.to_string(),
            ifname: ifname.to_string(),
            ifindex,
        })
    }

    /// The highest ifindex the plan gives in `netns` (1, `lo`, if none).
    pub fn max_index(&self, netns: &str) -> u32 {
        self.index
            .iter()
            .filter(|((ns, _), _)| ns == netns)
            .map(|(_, i)| *i)
            .max()
            .unwrap_or(1)
    }

    /// The other end of a veth pair.
    pub fn peer(&self, i: &Iface) -> Option<Iface> {
        let (ns, name) = self.peer.get(&(i.netns.clone(), i.ifname.clone()))?;
        self.get(ns, name)
    }
}

/// Hands out ifindexes per namespace: 1 is `lo`, then 2, 3, ...
#[derive(Default)]
struct Indexes(HashMap<String, u32>);

impl Indexes {
    fn next(&mut self, netns: &str) -> u32 {
        let n = self.0.entry(netns.to_string()).or_insert(1);
        *n += 1;
        *n
    }

    /// An index free in both namespaces, taken in both. Needed where one
    /// namespace makes a link that lives in another: Linux 6.1 checks the
    /// requested index against the namespace that asks (6.18 against the
    /// one the link lands in).
    fn next_in_both(&mut self, a: &str, b: &str) -> u32 {
        let n = self.next(a).max(self.next(b));
        self.0.insert(a.to_string(), n);
        self.0.insert(b.to_string(), n);
        n
    }
}

/// Plan the lab, one entity kind after another. Pure: no kernel access.
pub fn plan(lab: &Lab) -> Plan {
    let namespaces: Vec<NsSpec> = lab
        .entities()
        .into_iter()
        .map(|(entity, role)| NsSpec {
            name: lab.netns(&entity),
            entity,
            role,
        })
        .collect();
    let mut steps = Vec::new();
    let mut idx = Indexes::default();
    {
        let mut push = pusher(&mut steps);
        for ns in &namespaces {
            push(
                Phase::Devices,
                &ns.name,
                Action::LoopbackUp(link::LoopbackUp),
            );
        }
    }

    // The vpc/nodes/pods/clients/services/ebpf keys, as the low-level
    // layer's objects.
    let lowered = lab.lowered();
    objects::steps(lab, &lowered, &mut idx, &mut steps);
    steps.extend(vpc::same_eni_rules(lab));
    // Services, kube-proxy IPVS style, on every node: the IPVS tables and
    // rules (crate::services), and the sysctls they need.
    if !lab.services.is_empty() {
        steps.extend(services::steps(lab, &Default::default()));
        steps.extend(services::sysctl_steps(lab));
    }
    steps.extend(ebpf::steps(lab));
    // Last, so the ifindexes of everything above stay what they were.
    let index = objects::steps(lab, &lab.objects, &mut idx, &mut steps);
    steps.extend(route::steps(lab, &lowered, &index));

    steps.sort_by_key(|s| s.phase);
    Plan {
        lab: lab.name.clone(),
        namespaces,
        steps,
    }
}

/// A `push(phase, netns, action)` appending to `steps`: how each entity
/// kind's function writes its steps.
fn pusher(steps: &mut Vec<Step>) -> impl FnMut(Phase, &str, Action) + '_ {
    move |phase, netns, action| {
        steps.push(Step {
            phase,
            netns: netns.to_string(),
            action,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::Ipv4Net;
    use labctl_topology::Role;
    use std::net::Ipv4Addr;

    const PWN: &str = "$(touch /tmp/pwned)";

    fn step(netns: &str, action: Action) -> String {
        Step {
            phase: Phase::Devices,
            netns: netns.into(),
            action,
        }
        .to_string()
    }

    #[test]
    fn words_are_quoted_only_where_needed() {
        for bare in [
            "eth0",
            "flannel-node-180",
            "net.ipv4.ip_forward=1",
            "a_b:c,d@e%f+g/h",
        ] {
            assert_eq!(shell_quote(bare), bare);
        }
        assert_eq!(shell_quote(PWN), "'$(touch /tmp/pwned)'");
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote("x;y"), "'x;y'");
        assert_eq!(shell_quote("a\nb"), "'a\nb'");
        assert_eq!(shell_quote("`id`"), "'`id`'");
        assert_eq!(shell_quote("~root"), "'~root'");
        assert_eq!(shell_quote("*"), "'*'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn hostile_names_and_values_are_single_words() {
        assert_eq!(
            step(
                "x;y",
                Action::AddBridge(bridge::AddBridge {
                    name: PWN.into(),
                    ifindex: 2,
                    mac: None,
                })
            ),
            "ip -n 'x;y' link add '$(touch /tmp/pwned)' index 2 type bridge mcast_snooping 0 \
             && ip -n 'x;y' link set '$(touch /tmp/pwned)' addrgenmode none \
             && ip -n 'x;y' link set '$(touch /tmp/pwned)' up"
        );
        assert_eq!(
            step(
                "lab-n1",
                Action::AddVeth(veth::AddVeth {
                    name: "a'b".into(),
                    ifindex: 3,
                    mac: None,
                    controller: Some(IfRef {
                        name: "x;y".into(),
                        ifindex: 2,
                    }),
                    peer_name: "a\nb".into(),
                    peer_netns: PWN.into(),
                    peer_ifindex: 2,
                    peer_mac: None,
                })
            ),
            "ip -n lab-n1 link add 'a'\\''b' index 3 numtxqueues 1 numrxqueues 1 \
             type veth peer name 'a\nb' netns '$(touch /tmp/pwned)' index 2 \
             numtxqueues 1 numrxqueues 1 \
             && ip -n lab-n1 link set 'a'\\''b' addrgenmode none \
             && ip -n '$(touch /tmp/pwned)' link set 'a\nb' addrgenmode none \
             && ip -n lab-n1 link set 'a'\\''b' master 'x;y' \
             && ip -n lab-n1 link set 'a'\\''b' up"
        );
        assert_eq!(
            step(
                "lab-n1",
                Action::Sysctl(crate::kernel::sysctl::Sysctl {
                    key: "net.ipv4.conf.x;y.rp_filter".into(),
                    value: PWN.into(),
                })
            ),
            "ip netns exec lab-n1 sysctl -qw 'net.ipv4.conf.x;y.rp_filter=$(touch /tmp/pwned)'"
        );
        assert_eq!(
            step(
                "a'b",
                Action::AddRoute(crate::kernel::route::AddRoute {
                    destination: Ipv4Net::default(),
                    via: Some(Ipv4Addr::new(10, 0, 0, 253)),
                    ifname: PWN.into(),
                    ifindex: 2,
                })
            ),
            "ip -n 'a'\\''b' route add default via 10.0.0.253 dev '$(touch /tmp/pwned)' proto static"
        );
        assert_eq!(
            step(
                "lab-p1",
                Action::AddOffParent(crate::kernel::macvlan::AddOffParent {
                    name: "x;y".into(),
                    ifindex: 4,
                    parent: IfRef {
                        name: PWN.into(),
                        ifindex: 2,
                    },
                    netns: Some("a'b".into()),
                    mac: None,
                    mode: crate::kernel::macvlan::Mode::Ipvlan(labctl_topology::IpvlanMode::L2),
                })
            ),
            "ip -n lab-p1 link add link '$(touch /tmp/pwned)' name 'x;y' netns 'a'\\''b' \
             index 4 type ipvlan mode l2 && ip -n 'a'\\''b' link set 'x;y' addrgenmode none"
        );
    }

    /// The command substitution's own words are quoted inside it, and its
    /// output is one word.
    #[test]
    fn self_neighbour_substitution_is_quoted_inside() {
        assert_eq!(
            step(
                "x;y",
                Action::SelfNeighbour(crate::kernel::neigh::SelfNeighbour {
                    ifname: "a'b".into(),
                    ifindex: 2,
                    address: Ipv4Addr::new(10, 0, 0, 1),
                })
            ),
            "ip -n 'x;y' neigh replace 10.0.0.1 dev 'a'\\''b' lladdr \
             \"$(ip netns exec 'x;y' cat '/sys/class/net/a'\\''b/address')\" nud permanent"
        );
    }

    /// Forgetting a namespace's neighbours: `flush all` leaves permanent
    /// and noarp entries by itself; with addresses to keep, the same states
    /// are listed and each entry but those deleted. The namespace is one
    /// word in every command of the loop.
    #[test]
    fn forget_neighbours_text_is_honest_about_keep_and_quotes_its_namespace() {
        let forget = |keep: Vec<Ipv4Addr>| {
            Action::ForgetNeighbours(crate::kernel::neigh::ForgetNeighbours { keep })
        };
        assert_eq!(
            step(PWN, forget(Vec::new())),
            "ip -n '$(touch /tmp/pwned)' -4 neigh flush all"
        );
        assert_eq!(
            step(
                "a'b",
                forget(vec![
                    Ipv4Addr::new(10, 0, 0, 9),
                    Ipv4Addr::new(10, 0, 0, 10)
                ])
            ),
            "ip -n 'a'\\''b' -4 neigh show nud reachable nud stale nud delay nud probe \
             nud incomplete nud failed nud none | while read -r a _ d _; do \
             case $a in 10.0.0.9|10.0.0.10) ;; *) ip -n 'a'\\''b' neigh del \"$a\" dev \"$d\" ;; \
             esac; done"
        );
    }

    /// Emptying a namespace's conntrack table: conntrack-tools inside the
    /// namespace, which is one word.
    #[test]
    fn flush_conntrack_text_quotes_its_namespace() {
        let flush = || Action::FlushConntrack(crate::kernel::conntrack::FlushConntrack);
        assert_eq!(
            step(PWN, flush()),
            "ip netns exec '$(touch /tmp/pwned)' conntrack -F -f ipv4"
        );
        assert_eq!(
            step("a'b c", flush()),
            "ip netns exec 'a'\\''b c' conntrack -F -f ipv4"
        );
    }

    /// Closing a namespace's TIME_WAIT connections: iproute2's `ss -K`
    /// inside the namespace, which is one word.
    #[test]
    fn forget_time_wait_text_quotes_its_namespace() {
        let forget = || Action::ForgetTimeWait(crate::kernel::timewait::ForgetTimeWait);
        assert_eq!(
            step(PWN, forget()),
            "ip netns exec '$(touch /tmp/pwned)' ss -K -4 -t state time-wait"
        );
        assert_eq!(
            step("a'b c", forget()),
            "ip netns exec 'a'\\''b c' ss -K -4 -t state time-wait"
        );
    }

    #[test]
    fn ipvs_table_quotes_its_namespace() {
        let services = vec![crate::services::VirtualService {
            protocol: labctl_topology::Protocol::Tcp,
            address: Ipv4Addr::new(192, 168, 13, 23),
            port: 80,
            comment: PWN.into(),
            persistent: None,
            dests: vec![crate::services::RealServer {
                address: Ipv4Addr::new(172, 23, 96, 163),
                port: 80,
                weight: 1,
            }],
        }];
        assert_eq!(
            step(
                PWN,
                Action::IpvsTable(crate::kernel::ipvs::IpvsTable { services })
            ),
            "ip netns exec '$(touch /tmp/pwned)' sh -c 'ipvsadm -C \
             && ipvsadm -A -t 192.168.13.23:80 -s rr \
             && ipvsadm -a -t 192.168.13.23:80 -r 172.23.96.163:80 -m -w 1'"
        );
    }

    /// A ruleset line `EOF` cannot end the heredoc: the delimiter is one no
    /// line of the ruleset is, and the ruleset always ends its last line.
    #[test]
    fn nft_heredoc_delimiter_is_not_in_the_ruleset() {
        let plain = step(
            "n",
            Action::Nftables(crate::kernel::nft::Nftables {
                ruleset: "table ip t {\n}\n".into(),
            }),
        );
        assert_eq!(
            plain,
            "ip netns exec n nft -f - <<'EOF'\ntable ip t {\n}\nEOF"
        );
        let hostile = step(
            "x;y",
            Action::Nftables(crate::kernel::nft::Nftables {
                ruleset: "table ip t {\nEOF\ntouch /tmp/pwned\nEOF1 \n}".into(),
            }),
        );
        assert_eq!(
            hostile,
            "ip netns exec 'x;y' nft -f - <<'EOF2'\ntable ip t {\nEOF\ntouch /tmp/pwned\nEOF1 \n}\nEOF2"
        );
    }

    /// The text output and the script list the same quoted commands.
    #[test]
    fn namespaces_are_quoted_in_the_script() {
        let p = Plan {
            lab: "x".into(),
            namespaces: vec![NsSpec {
                name: PWN.into(),
                entity: "vpc".into(),
                role: Role::Vpc,
            }],
            steps: vec![Step {
                phase: Phase::Devices,
                netns: PWN.into(),
                action: Action::LoopbackUp(link::LoopbackUp),
            }],
        };
        let commands = "ip netns add '$(touch /tmp/pwned)'\n\
                        ip -n '$(touch /tmp/pwned)' link set lo up \
                        && ip -n '$(touch /tmp/pwned)' -6 addr flush dev lo\n";
        assert_eq!(p.to_commands(), commands);
        // The script stops at a failed command inside a chain.
        let script = commands.replace("dev lo\n", "dev lo || exit\n");
        assert!(p.to_script().ends_with(&format!("set -e\n{script}")));
    }

    /// A dummy is made as a device added to a running namespace, after
    /// every veth (kube-ipvs0 after the ENIs the VPC's namespace makes),
    /// unless a link is stacked on it: then before that link.
    #[test]
    fn a_dummy_comes_after_the_veths_unless_a_link_is_stacked_on_it() {
        let src = "\
name: d
namespaces: [{ name: a }, { name: b }]
links:
  - dummy: { name: lone, in: b }
  - dummy: { name: base, in: b }
  - vlan: { name: base.7, in: b, parent: base, id: 7 }
  - veth: { name: v0, in: a, peer: { name: v1, in: b } }
";
        let lab = labctl_topology::load_str("d.yaml", src, &Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let p = plan(&lab);
        let phase_of = |name: &str| {
            p.steps
                .iter()
                .find_map(|s| match &s.action {
                    Action::AddDummy(d) if d.name == name => Some(s.phase),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("no dummy {name}"))
        };
        assert_eq!(phase_of("lone"), Phase::Stacked);
        assert_eq!(phase_of("base"), Phase::Links);
        let at = |f: &dyn Fn(&Action) -> bool| p.steps.iter().position(|s| f(&s.action)).unwrap();
        let veth = at(&|a| matches!(a, Action::AddVeth(_)));
        let lone = at(&|a| matches!(a, Action::AddDummy(d) if d.name == "lone"));
        let base = at(&|a| matches!(a, Action::AddDummy(d) if d.name == "base"));
        let vlan = at(&|a| matches!(a, Action::AddVlan(_)));
        assert!(base < vlan && veth < lone, "{}", p.to_commands());
    }

    /// `set -e` lets a failed command that is not the last of an `&&` chain
    /// pass: a chained step ends in `|| exit` in the script, and bash then
    /// stops there with that command's status. A heredoc's body is left
    /// alone (it is the ruleset).
    #[test]
    fn a_failed_command_in_a_chain_stops_the_script() {
        let p = Plan {
            lab: "x".into(),
            namespaces: Vec::new(),
            steps: vec![
                Step {
                    phase: Phase::Devices,
                    netns: "n".into(),
                    action: Action::LoopbackUp(link::LoopbackUp),
                },
                Step {
                    phase: Phase::Services,
                    netns: "n".into(),
                    action: Action::Nftables(crate::kernel::nft::Nftables {
                        ruleset: "table ip t { comment \"a && b\"\n}\n".into(),
                    }),
                },
            ],
        };
        let script = p.to_script();
        assert!(script.contains("dev lo || exit\n"), "{script}");
        assert!(script.contains("\"a && b\"\n}\nEOF\n"), "{script}");
        // What bash does with such a line: the first command fails, the
        // script stops with its status, nothing after it runs.
        let out = std::process::Command::new("bash")
            .args(["-c", "set -e\nfalse && true || exit\necho reached"])
            .output()
            .expect("bash");
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
    }
}
