//! Planning: the validated lab model becomes an ordered list of kernel
//! actions, a pure value that tests inspect without root.
//!
//! Every interface gets its ifindex here (1 is `lo` in a fresh namespace, the
//! rest are numbered in creation order). The kernel honours a requested
//! ifindex on `RTM_NEWLINK`, veth peers included, so the executor never has to
//! look an index up and can send a namespace's whole batch without waiting;
//! it also makes ifindexes in captures and golden files the same every run.
//!
//! Actions are grouped in phases. Within a phase they are independent and run
//! concurrently; a phase starts when the previous one has finished.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use labctl_topology::{Attachment, Lab, Role, format_mac};
use serde::Serialize;

pub mod ebpf;
mod objects;
pub mod route;
pub mod services;

/// A network namespace the lab creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NsSpec {
    /// Name under /run/netns (`<lab>-<entity>`).
    pub name: String,
    /// The topology entity it stands for.
    pub entity: String,
    pub role: Role,
}

/// The order in which actions run; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Loopbacks up, bridges created.
    Devices,
    /// veth pairs, plugged into the bridges created before.
    Links,
    /// Links stacked on those (ipvlan slaves of an ENI, whose veth is made
    /// by the VPC's namespace in the phase before), and kube-proxy's
    /// kube-ipvs0, which a node gets after its ENIs.
    Stacked,
    /// Addresses, and the far ends of veth pairs brought up.
    Addresses,
    Routes,
    /// Services: IPVS tables and nftables rules (kube-proxy, the SLB).
    Services,
    /// After the services, whose modules bring some keys (`net.ipv4.vs`).
    Sysctls,
    /// The eBPF load balancer's programs on each pod's interface and its
    /// maps' contents, once the programs are loaded and pinned (in
    /// [`Phase::Services`]; see [`ebpf`]).
    Ebpf,
    /// A scenario's link changes and their undoing ([`crate::impair`]), on
    /// a lab that is up: never part of `up`'s plan, so not in
    /// [`Phase::ALL`].
    Changes,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Devices,
        Phase::Links,
        Phase::Stacked,
        Phase::Addresses,
        Phase::Routes,
        Phase::Services,
        Phase::Sysctls,
        Phase::Ebpf,
    ];
}

/// One kernel action in one namespace.
///
/// Bridges are made with multicast snooping off: with it on, each bridge
/// joins 224.0.0.106 (multicast router discovery) and sends IGMP reports for
/// a second or two after it comes up, which land in the captures of the
/// first scenarios. Nothing in the articles uses multicast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// `ip link set lo up`
    LoopbackUp,
    /// `ip link add NAME index N type bridge && ip link set NAME up`
    AddBridge {
        name: String,
        ifindex: u32,
        mac: Option<[u8; 6]>,
    },
    /// `ip link add NAME index N [master M] up type veth peer name PEER
    /// netns PEER_NS index P`. The peer is brought up by a later
    /// [`Action::LinkUp`]: the kernel refuses to open a veth end before the
    /// pair is complete (`veth_open` returns ENOTCONN).
    AddVeth {
        name: String,
        ifindex: u32,
        mac: Option<[u8; 6]>,
        /// The bridge this end is enslaved to.
        controller: Option<IfRef>,
        peer_name: String,
        peer_netns: String,
        peer_ifindex: u32,
        peer_mac: Option<[u8; 6]>,
    },
    /// `ip link add NAME index N type dummy && ip link set NAME up`
    AddDummy { name: String, ifindex: u32 },
    /// `ip link add link PARENT name NAME [netns NS] index N type ipvlan mode
    /// l2`: created here off `parent`, living in `netns` when given (a pod),
    /// up at once when it stays here (the node's own slave).
    AddIpvlan {
        name: String,
        ifindex: u32,
        parent: IfRef,
        netns: Option<String>,
    },
    /// `ipvsadm -C`, then `ipvsadm -A -t VIP:PORT -s rr` and `ipvsadm -a
    /// -t VIP:PORT -r RIP:RPORT -m -w W` for each real server: the
    /// namespace's whole IPVS table (kube-proxy's IPVS mode, the SLB).
    IpvsTable {
        services: Vec<crate::services::VirtualService>,
    },
    /// `nft -f -` with this script inside the namespace.
    Nftables { ruleset: String },
    /// `ip link set IF up`
    LinkUp { ifname: String, ifindex: u32 },
    /// `ip link set IF type bridge_slave isolated on`: the port reaches
    /// only non-isolated ports (the bridge itself, i.e. the router).
    IsolatePort { ifname: String, ifindex: u32 },
    /// `ip link set FROM name IF up`: a pod's ipvlan is made under a
    /// temporary name, because the kernel looks a new link's name up in the
    /// namespace that asks (the node, which has an `eth0` of its own).
    RenameUp {
        from: String,
        ifname: String,
        ifindex: u32,
    },
    /// `ip addr add ADDR/32 dev IF scope host`: the node's own address on
    /// its ipvlan slave (Terway's `ipvl_N`). Scope host, so the kernel never
    /// picks it as the source towards a pod (it takes the node's address
    /// from `eth0`), yet a frame for it reaches the node through the slave.
    AddHostAddress {
        ifname: String,
        ifindex: u32,
        address: Ipv4Addr,
    },
    /// `ip link set IF arp off`
    ArpOff { ifname: String, ifindex: u32 },
    /// `ip neigh replace ADDR dev IF lladdr <IF's own MAC> nud permanent`:
    /// a pod on an ipvlan reaches its node's address with its own MAC,
    /// which ipvlan switches to the node's slave by IP address (Terway's
    /// pod-side neighbour entry; no ARP leaves the pod for it).
    SelfNeighbour {
        ifname: String,
        ifindex: u32,
        address: Ipv4Addr,
    },
    /// `ip addr add ADDR dev IF`
    AddAddress {
        ifname: String,
        ifindex: u32,
        address: Ipv4Net,
    },
    /// `ip route add DST [via GW] dev IF`
    AddRoute {
        destination: Ipv4Net,
        via: Option<Ipv4Addr>,
        ifname: String,
        ifindex: u32,
    },
    /// `sysctl -w KEY=VALUE` inside the namespace.
    Sysctl { key: String, value: String },
    /// `tc qdisc replace dev IF root netem ARGS`: the interface's egress
    /// queue delays, drops, reorders or paces what leaves it (a scenario's
    /// link change, `labctl netem`). The payload is built in
    /// [`crate::netem`].
    Netem {
        ifname: String,
        ifindex: u32,
        netem: labctl_topology::Netem,
    },
    /// `tc qdisc del dev IF root`: back to the kernel's default queue.
    QdiscDelete { ifname: String, ifindex: u32 },
    /// `ip link set IF down`
    LinkDown { ifname: String, ifindex: u32 },
    /// `ip link set IF mtu N`
    SetMtu {
        ifname: String,
        ifindex: u32,
        mtu: u32,
    },
    /// `ip route del DST [via GW] dev IF`: a scenario's change, undone by
    /// the [`Action::AddRoute`] the plan made it with.
    DelRoute {
        destination: Ipv4Net,
        via: Option<Ipv4Addr>,
        ifname: String,
        ifindex: u32,
    },
    /// `ip link set IF address MAC` (a scenario's change; veth and vxlan
    /// take it while up).
    SetMac {
        ifname: String,
        ifindex: u32,
        mac: [u8; 6],
    },
    /// `ip link add NAME [netns NS] index N type vxlan id VNI ...`, sent
    /// from the underlay's namespace, whose UDP socket the device keeps
    /// wherever it lives. Moved at once into `netns` when given (under a
    /// temporary name, renamed there by [`Action::RenameUp`]), else up here.
    AddVxlan {
        name: String,
        ifindex: u32,
        netns: Option<String>,
        mac: Option<[u8; 6]>,
        id: u32,
        /// A device of the underlay namespace to send through.
        dev: Option<IfRef>,
        local: Option<Ipv4Addr>,
        remote: Option<Ipv4Addr>,
        port: u16,
        learning: bool,
        /// Collect metadata (`external`): no VNI of its own, `id` is 0.
        external: bool,
    },
    /// `ip link set IF master BRIDGE`
    SetMaster {
        ifname: String,
        ifindex: u32,
        master: IfRef,
    },
    /// `ip neigh replace ADDR lladdr MAC dev IF nud STATE`
    AddNeighbour {
        ifname: String,
        ifindex: u32,
        address: Ipv4Addr,
        lladdr: [u8; 6],
        state: labctl_topology::NeighState,
    },
    /// `bridge fdb replace MAC dev IF [dst VTEP] master|self`
    AddFdb {
        ifname: String,
        ifindex: u32,
        lladdr: [u8; 6],
        dst: Option<Ipv4Addr>,
        /// The bridge's table, else the device's own.
        master: bool,
    },
    /// `tc qdisc add dev IF clsact`: the hooks tc filters attach to.
    Clsact { ifname: String, ifindex: u32 },
    /// `tc filter add dev IF ingress|egress protocol all prio 49152 u32
    /// match u32 0 0 action mirred egress redirect|mirror dev TO`: every
    /// packet, since u32 0/0 matches all (matchall is not in every kernel).
    TcMirred {
        ifname: String,
        ifindex: u32,
        hook: labctl_topology::TcHook,
        mirror: bool,
        to: IfRef,
    },
    /// `ip link del IF` (a scenario's change: a pod leaving its node; the
    /// veth's other end goes with it).
    DelLink { ifname: String, ifindex: u32 },
    /// `ip neigh del ADDR dev IF` (a scenario's change).
    DelNeighbour {
        ifname: String,
        ifindex: u32,
        address: Ipv4Addr,
    },
    /// `tc filter del dev IF ingress|egress`: every filter of the hook (a
    /// scenario's change, undone by the plan's own filters).
    DelTcFilters {
        ifname: String,
        ifindex: u32,
        hook: labctl_topology::TcHook,
    },
    /// `tc qdisc del dev IF clsact`, its filters with it (undoing a
    /// scenario's filter on a device the lab gave no clsact).
    DelClsact { ifname: String, ifindex: u32 },
    /// `bridge fdb del MAC dev IF [dst VTEP] master|self` (a scenario's
    /// change).
    DelFdb {
        ifname: String,
        ifindex: u32,
        lladdr: [u8; 6],
        dst: Option<Ipv4Addr>,
        master: bool,
    },
    /// `bpftool prog loadall OBJ PIN_DIR type classifier pinmaps PIN_DIR`,
    /// after mounting the bpffs if missing and removing stale pins: the
    /// load balancer's programs and maps, pinned once for the whole lab
    /// ([`crate::lb::load`]).
    BpfLoad { object: String, pin_dir: String },
    /// `tc filter add dev IF ingress|egress protocol all bpf direct-action
    /// object-pinned PIN`: a pinned program on a pod's interface, as a
    /// netlink cls_bpf filter holding its own reference to the program
    /// (the clsact qdisc is an [`Action::Clsact`] before it).
    BpfAttach {
        ifname: String,
        ifindex: u32,
        hook: labctl_topology::TcHook,
        /// The program's name (`lb_egress`, `lb_ingress`).
        program: String,
        /// Where [`Action::BpfLoad`] pinned it.
        pin: String,
    },
    /// `bpftool map update pinned PIN_DIR/MAP key hex .. value hex ..` for
    /// every backend slot and service: the maps hold exactly `services`
    /// afterwards and no remembered flow ([`crate::lb::program_maps`]).
    BpfMaps {
        pin_dir: String,
        services: Vec<crate::lb::BpfService>,
    },
    /// `bpftool prog loadall OBJ PIN_DIR type classifier pinmaps PIN_DIR`
    /// for the overlay router: its programs and maps pinned in one node's
    /// directory ([`crate::route::load`]).
    RouteLoad { object: String, pin_dir: String },
    /// `bpftool map update pinned PIN_DIR/MAP ...` for each endpoint,
    /// tunnel and the VXLAN device: the router maps of one node hold
    /// exactly `tables` afterwards ([`crate::route::program_maps`]).
    RouteMaps {
        pin_dir: String,
        tables: crate::route::Tables,
    },
    /// An 802.1Q sub-interface ([`crate::kernel::vlan`]).
    AddVlan(crate::kernel::vlan::AddVlan),
    /// A bond ([`crate::kernel::bond`]).
    AddBond(crate::kernel::bond::AddBond),
    /// A slave joins its bond, down while it does ([`crate::kernel::bond`]).
    Enslave(crate::kernel::bond::Enslave),
    /// A macvlan, or an ipvlan of the low-level layer, made off its parent
    /// ([`crate::kernel::macvlan`]).
    AddOffParent(crate::kernel::macvlan::AddOffParent),
    /// A VLAN-filtering bridge ([`crate::kernel::bridge`]).
    AddVlanBridge(crate::kernel::bridge::AddVlanBridge),
    /// A bridge port's flags ([`crate::kernel::bridge`]).
    SetPort(crate::kernel::bridge::SetPort),
    /// A VLAN of a bridge port or bridge ([`crate::kernel::bridge`]).
    BridgeVlan(crate::kernel::bridge::AddBridgeVlan),
    /// A route with a table, metric, scope, onlink or several next hops
    /// ([`crate::kernel::route`]).
    AddNsRoute(crate::kernel::route::AddNsRoute),
    /// A layer route deleted by destination, table and metric (a
    /// scenario's change).
    DelNsRoute(crate::kernel::route::DelNsRoute),
}

/// An interface of the namespace the action runs in, by name and index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IfRef {
    pub name: String,
    pub ifindex: u32,
}

/// An action bound to its namespace and phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub phase: Phase,
    pub netns: String,
    #[serde(flatten)]
    pub action: Action,
}

/// Everything `up` will do, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub lab: String,
    pub namespaces: Vec<NsSpec>,
    pub steps: Vec<Step>,
}

impl Plan {
    /// The steps of one phase.
    pub fn phase(&self, phase: Phase) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(move |s| s.phase == phase)
    }

    /// The plan as shell commands, one a line (a heredoc spans several):
    /// the namespaces, then every step. Every word that comes from the
    /// topology is quoted ([`shell_quote`]), so running the commands does
    /// what the plan says whatever the names and values are.
    pub fn to_commands(&self) -> String {
        let mut out = String::new();
        for ns in &self.namespaces {
            // No IPv6, as in `up`'s namespaces: the familiar sysctl, where
            // `up` sets each link's address generation mode (see
            // `crate::kernel`; the effect is the same, its cost is not).
            let name = shell_quote(&ns.name);
            out.push_str(&format!(
                "ip netns add {name} && ip netns exec {name} sysctl -qw \
                 net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1\n"
            ));
        }
        for step in &self.steps {
            out.push_str(&step.to_string());
            out.push('\n');
        }
        out
    }

    /// The plan as a bash script of iproute2 commands: the same lab built the
    /// slow, familiar way. Used as the benchmark baseline and by `labctl plan`.
    pub fn to_script(&self) -> String {
        let mut out =
            String::from("#!/usr/bin/env bash\n# generated by `labctl plan --script`\nset -e\n");
        out.push_str(&self.to_commands());
        out
    }
}

/// `word` as one shell word, for bash and any POSIX shell: as it is when
/// every character is one of `A-Za-z0-9_./:=,@%+-` (none of which the
/// shell treats specially inside a word), else in single quotes, each `'`
/// written `'\''` (close the quotes, an escaped quote, reopen). Inside
/// single quotes nothing is special, newlines included, so no name or value
/// of a topology can expand, split or run anything. The empty word is `''`.
/// A NUL byte cannot be passed to a program in any way; it stays inside the
/// quotes, where a shell drops or rejects it but never runs anything.
///
/// Written by hand rather than taken from the `shlex` or `shell-words`
/// crate: the rule is the few lines below and tested here (down to running
/// the output with bash in `tests/trust_script.rs`), and it keeps the words
/// that need no quotes bare, as the plan snapshot and the README show them.
/// A crate would also be a new dependency (and lock file entry) for
/// these few lines.
pub fn shell_quote(word: &str) -> std::borrow::Cow<'_, str> {
    let bare = |c: char| c.is_ascii_alphanumeric() || "_./:=,@%+-".contains(c);
    if !word.is_empty() && word.chars().all(bare) {
        std::borrow::Cow::Borrowed(word)
    } else {
        std::borrow::Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
    }
}

/// A heredoc delimiter that is no line of `body`: `EOF`, else `EOF1`,
/// `EOF2`, ... A line of the body equal to the delimiter would end the
/// heredoc there and the lines after it would run as commands.
fn heredoc_delimiter(body: &str) -> String {
    let taken = |d: &str| body.lines().any(|l| l.trim_end() == d);
    let mut delimiter = "EOF".to_string();
    let mut n = 0;
    while taken(&delimiter) {
        n += 1;
        delimiter = format!("EOF{n}");
    }
    delimiter
}

impl fmt::Display for Step {
    /// The iproute2 equivalent of the step, every word from the topology
    /// quoted for the shell ([`shell_quote`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = shell_quote;
        let ns = q(&self.netns);
        match &self.action {
            Action::LoopbackUp => write!(f, "ip -n {ns} link set lo up"),
            Action::AddBridge { name, ifindex, mac } => {
                let name = q(name);
                write!(f, "ip -n {ns} link add {name} index {ifindex}")?;
                if let Some(mac) = mac {
                    write!(f, " address {}", format_mac(mac))?;
                }
                write!(
                    f,
                    " type bridge mcast_snooping 0 && ip -n {ns} link set {name} up"
                )
            }
            Action::AddVeth {
                name,
                ifindex,
                mac,
                controller,
                peer_name,
                peer_netns,
                peer_ifindex,
                peer_mac,
            } => {
                let (name, peer_name, peer_netns) = (q(name), q(peer_name), q(peer_netns));
                write!(f, "ip -n {ns} link add {name} index {ifindex}")?;
                if let Some(mac) = mac {
                    write!(f, " address {}", format_mac(mac))?;
                }
                write!(
                    f,
                    " type veth peer name {peer_name} netns {peer_netns} index {peer_ifindex}"
                )?;
                if let Some(mac) = peer_mac {
                    write!(f, " address {}", format_mac(mac))?;
                }
                if let Some(c) = controller {
                    write!(f, " && ip -n {ns} link set {name} master {}", q(&c.name))?;
                }
                write!(f, " && ip -n {ns} link set {name} up")
            }
            Action::LinkUp { ifname, .. } => write!(f, "ip -n {ns} link set {} up", q(ifname)),
            Action::IsolatePort { ifname, .. } => {
                write!(
                    f,
                    "ip -n {ns} link set {} type bridge_slave isolated on",
                    q(ifname)
                )
            }
            Action::RenameUp { from, ifname, .. } => {
                write!(f, "ip -n {ns} link set {} name {} up", q(from), q(ifname))
            }
            Action::AddDummy { name, ifindex } => {
                let name = q(name);
                write!(
                    f,
                    "ip -n {ns} link add {name} index {ifindex} type dummy && ip -n {ns} link set {name} up"
                )
            }
            Action::AddIpvlan {
                name,
                ifindex,
                parent,
                netns,
            } => {
                let (name, parent) = (q(name), q(&parent.name));
                match netns {
                    Some(target) => write!(
                        f,
                        "ip -n {ns} link add link {parent} name {name} netns {} index {ifindex} type ipvlan mode l2",
                        q(target)
                    ),
                    None => write!(
                        f,
                        "ip -n {ns} link add link {parent} name {name} index {ifindex} type ipvlan mode l2 && ip -n {ns} link set {name} up"
                    ),
                }
            }
            Action::IpvsTable { services } => {
                // Addresses, ports and weights are numbers: only the
                // namespace needs quoting.
                write!(f, "ip netns exec {ns} ipvsadm -C")?;
                for vs in services {
                    let flag = match vs.protocol {
                        labctl_topology::Protocol::Tcp => "-t",
                        labctl_topology::Protocol::Udp => "-u",
                    };
                    let (a, p) = (vs.address, vs.port);
                    write!(f, " && ip netns exec {ns} ipvsadm -A {flag} {a}:{p} -s rr")?;
                    for d in &vs.dests {
                        write!(
                            f,
                            " && ip netns exec {ns} ipvsadm -a {flag} {a}:{p} -r {}:{} -m -w {}",
                            d.address, d.port, d.weight
                        )?;
                    }
                }
                Ok(())
            }
            Action::Nftables { ruleset } => {
                // A quoted delimiter: the shell expands nothing in the body,
                // which ends at the first line equal to the delimiter, so
                // the delimiter is one no line of the ruleset is.
                let delimiter = heredoc_delimiter(ruleset);
                let newline = if ruleset.ends_with('\n') { "" } else { "\n" };
                write!(
                    f,
                    "ip netns exec {ns} nft -f - <<'{delimiter}'\n{ruleset}{newline}{delimiter}"
                )
            }
            Action::AddAddress {
                ifname, address, ..
            } => {
                // As `up` sends it: with the broadcast address below /31.
                let brd = if address.prefix_len() < 31 {
                    " brd +"
                } else {
                    ""
                };
                write!(f, "ip -n {ns} addr add {address}{brd} dev {}", q(ifname))
            }
            Action::AddHostAddress {
                ifname, address, ..
            } => write!(
                f,
                "ip -n {ns} addr add {address}/32 dev {} scope host",
                q(ifname)
            ),
            Action::ArpOff { ifname, .. } => {
                write!(f, "ip -n {ns} link set {} arp off", q(ifname))
            }
            Action::SelfNeighbour {
                ifname, address, ..
            } => {
                // The substitution's own words are quoted inside it (a new
                // quoting context), and its output (the MAC) is kept one
                // word by the double quotes around it.
                let path = format!("/sys/class/net/{ifname}/address");
                write!(
                    f,
                    "ip -n {ns} neigh replace {address} dev {} lladdr \"$(ip netns exec {ns} cat {})\" nud permanent",
                    q(ifname),
                    q(&path)
                )
            }
            Action::AddRoute {
                destination,
                via,
                ifname,
                ..
            } => {
                let dst = route_destination(destination);
                let ifname = q(ifname);
                match via {
                    // `proto static`, as `up` marks its routes.
                    Some(via) => write!(
                        f,
                        "ip -n {ns} route add {dst} via {via} dev {ifname} proto static"
                    ),
                    // `scope global`: `up` sends rtnetlink's default,
                    // universe, where `ip` alone would give a route
                    // without a gateway scope link.
                    None => write!(
                        f,
                        "ip -n {ns} route add {dst} dev {ifname} scope global proto static"
                    ),
                }
            }
            Action::Sysctl { key, value } => {
                let word = format!("{key}={value}");
                write!(f, "ip netns exec {ns} sysctl -qw {}", q(&word))
            }
            Action::Netem { ifname, netem, .. } => write!(
                f,
                "tc -n {ns} qdisc replace dev {} root netem {}",
                q(ifname),
                netem.tc_args()
            ),
            Action::QdiscDelete { ifname, .. } => {
                write!(f, "tc -n {ns} qdisc del dev {} root", q(ifname))
            }
            Action::LinkDown { ifname, .. } => {
                write!(f, "ip -n {ns} link set {} down", q(ifname))
            }
            Action::SetMtu { ifname, mtu, .. } => {
                write!(f, "ip -n {ns} link set {} mtu {mtu}", q(ifname))
            }
            Action::AddVxlan {
                name,
                ifindex,
                netns,
                mac,
                id,
                dev,
                local,
                remote,
                port,
                learning,
                external,
            } => {
                let name = q(name);
                write!(f, "ip -n {ns} link add {name}")?;
                if let Some(target) = netns {
                    write!(f, " netns {}", q(target))?;
                }
                write!(f, " index {ifindex}")?;
                if let Some(mac) = mac {
                    write!(f, " address {}", format_mac(mac))?;
                }
                if *external {
                    write!(f, " type vxlan external")?;
                } else {
                    write!(f, " type vxlan id {id}")?;
                }
                if let Some(dev) = dev {
                    write!(f, " dev {}", q(&dev.name))?;
                }
                if let Some(local) = local {
                    write!(f, " local {local}")?;
                }
                if let Some(remote) = remote {
                    write!(f, " remote {remote}")?;
                }
                write!(f, " dstport {port}")?;
                if !learning {
                    write!(f, " nolearning")?;
                }
                if netns.is_none() {
                    write!(f, " && ip -n {ns} link set {name} up")?;
                }
                Ok(())
            }
            Action::DelRoute {
                destination,
                via,
                ifname,
                ..
            } => {
                let dst = route_destination(destination);
                write!(f, "ip -n {ns} route del {dst}")?;
                if let Some(via) = via {
                    write!(f, " via {via}")?;
                }
                write!(f, " dev {}", q(ifname))
            }
            Action::SetMac { ifname, mac, .. } => {
                write!(
                    f,
                    "ip -n {ns} link set {} address {}",
                    q(ifname),
                    format_mac(mac)
                )
            }
            Action::SetMaster { ifname, master, .. } => {
                write!(
                    f,
                    "ip -n {ns} link set {} master {}",
                    q(ifname),
                    q(&master.name)
                )
            }
            Action::AddNeighbour {
                ifname,
                address,
                lladdr,
                state,
                ..
            } => write!(
                f,
                "ip -n {ns} neigh replace {address} lladdr {} dev {} nud {}",
                format_mac(lladdr),
                q(ifname),
                state.as_str()
            ),
            Action::AddFdb {
                ifname,
                lladdr,
                dst,
                master,
                ..
            } => {
                write!(
                    f,
                    "bridge -n {ns} fdb replace {} dev {}",
                    format_mac(lladdr),
                    q(ifname)
                )?;
                if let Some(dst) = dst {
                    write!(f, " dst {dst}")?;
                }
                write!(f, " {}", if *master { "master static" } else { "self" })
            }
            Action::Clsact { ifname, .. } => {
                write!(f, "tc -n {ns} qdisc add dev {} clsact", q(ifname))
            }
            Action::DelLink { ifname, .. } => write!(f, "ip -n {ns} link del {}", q(ifname)),
            Action::DelTcFilters { ifname, hook, .. } => {
                let hook = hook.as_str();
                write!(f, "tc -n {ns} filter del dev {} {hook}", q(ifname))
            }
            Action::DelClsact { ifname, .. } => {
                write!(f, "tc -n {ns} qdisc del dev {} clsact", q(ifname))
            }
            Action::DelNeighbour {
                ifname, address, ..
            } => write!(f, "ip -n {ns} neigh del {address} dev {}", q(ifname)),
            Action::DelFdb {
                ifname,
                lladdr,
                dst,
                master,
                ..
            } => {
                write!(
                    f,
                    "bridge -n {ns} fdb del {} dev {}",
                    format_mac(lladdr),
                    q(ifname)
                )?;
                if let Some(dst) = dst {
                    write!(f, " dst {dst}")?;
                }
                write!(f, " {}", if *master { "master" } else { "self" })
            }
            Action::TcMirred {
                ifname,
                hook,
                mirror,
                to,
                ..
            } => {
                let hook = hook.as_str();
                let what = if *mirror { "mirror" } else { "redirect" };
                write!(
                    f,
                    "tc -n {ns} filter add dev {} {hook} protocol all prio {TC_PRIO} u32 match u32 0 0 \
                     action mirred egress {what} dev {}",
                    q(ifname),
                    q(&to.name)
                )
            }
            Action::BpfLoad { object, pin_dir } => ebpf::fmt_load(f, object, pin_dir),
            Action::BpfAttach {
                ifname, hook, pin, ..
            } => ebpf::fmt_attach(f, &self.netns, ifname, *hook, pin),
            Action::BpfMaps { pin_dir, services } => ebpf::fmt_maps(f, pin_dir, services),
            Action::RouteLoad { object, pin_dir } => ebpf::fmt_load(f, object, pin_dir),
            Action::RouteMaps { pin_dir, tables } => route::fmt_maps(f, pin_dir, tables),
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
                Action::LoopbackUp => {
                    index.insert((ns, "lo".to_string()), 1);
                }
                Action::AddBridge { name, ifindex, .. }
                | Action::AddDummy { name, ifindex }
                | Action::AddVxlan {
                    name,
                    ifindex,
                    netns: None,
                    ..
                } => {
                    index.insert((ns, name.clone()), *ifindex);
                }
                Action::AddVeth {
                    name,
                    ifindex,
                    peer_name,
                    peer_netns,
                    peer_ifindex,
                    ..
                } => {
                    let a = (ns, name.clone());
                    let b = (peer_netns.clone(), peer_name.clone());
                    index.insert(a.clone(), *ifindex);
                    index.insert(b.clone(), *peer_ifindex);
                    peer.insert(a.clone(), b.clone());
                    peer.insert(b, a);
                }
                // Made in the node under its final name when it stays
                // there; a pod's is renamed inside the pod.
                Action::AddIpvlan {
                    name,
                    ifindex,
                    netns: None,
                    ..
                } => {
                    index.insert((ns, name.clone()), *ifindex);
                }
                Action::RenameUp {
                    ifname, ifindex, ..
                } => {
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

/// A route's destination as `ip route` writes it: `default` for 0/0.
pub fn route_destination(destination: &Ipv4Net) -> String {
    if destination.prefix_len() == 0 {
        "default".to_string()
    } else {
        destination.to_string()
    }
}

/// The priority of the layer's tc filters: what `tc` picks for the first
/// filter of a hook when none is given (the Kata article's `pref 49152`).
pub const TC_PRIO: u16 = 49152;

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

/// Plan the lab. Pure: no kernel access.
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
    let mut push = |phase, netns: &str, action| {
        steps.push(Step {
            phase,
            netns: netns.to_string(),
            action,
        })
    };

    for ns in &namespaces {
        push(Phase::Devices, &ns.name, Action::LoopbackUp);
    }

    // The VPC: one bridge per vSwitch holding its gateway, and the route table.
    let vpc = lab.netns("vpc");
    let (vpc_subnets, vpc_routes, isolated) = match &lab.vpc {
        Some(v) => (&v.subnets[..], &v.routes[..], v.isolated_ports),
        None => (&[][..], &[][..], false),
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
            Action::AddBridge {
                name: subnet.name.clone(),
                ifindex,
                mac: None,
            },
        );
        let address = Ipv4Net::new(subnet.gateway, subnet.cidr.prefix_len())
            .expect("resolved prefix is valid");
        push(
            Phase::Addresses,
            &vpc,
            Action::AddAddress {
                ifname: subnet.name.clone(),
                ifindex,
                address,
            },
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
            Action::Sysctl {
                key: "net.ipv4.ip_forward".into(),
                value: "1".into(),
            },
        );
        let vpc_ifs =
            std::iter::once("all".to_string()).chain(lab.interfaces_of("vpc").unwrap_or_default());
        for ifname in vpc_ifs {
            push(
                Phase::Sysctls,
                &vpc,
                Action::Sysctl {
                    key: format!("net.ipv4.conf.{ifname}.send_redirects"),
                    value: "0".into(),
                },
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
                    Action::Sysctl {
                        key,
                        value: value.into(),
                    },
                );
            }
        }
        push(
            Phase::Routes,
            &vpc,
            Action::Nftables {
                ruleset: same_eni_rules(lab),
            },
        );
    }

    // Nodes: ENIs plugged into their vSwitch, the pod bridge, default route.
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
                Action::AddVeth {
                    name: eni.vpc_port.clone(),
                    ifindex: port_index,
                    mac: None,
                    controller: vsw.get(eni.subnet.as_str()).cloned(),
                    peer_name: eni.name.clone(),
                    peer_netns: ns.clone(),
                    peer_ifindex: ifindex,
                    peer_mac: eni.mac,
                },
            );
            push(
                Phase::Addresses,
                &ns,
                Action::LinkUp {
                    ifname: eni.name.clone(),
                    ifindex,
                },
            );
            if isolated {
                push(
                    Phase::Addresses,
                    &vpc,
                    Action::IsolatePort {
                        ifname: eni.vpc_port.clone(),
                        ifindex: port_index,
                    },
                );
            }
            if let Some(address) = eni.address {
                push(
                    Phase::Addresses,
                    &ns,
                    Action::AddAddress {
                        ifname: eni.name.clone(),
                        ifindex,
                        address,
                    },
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
                Action::AddBridge {
                    name: node.bridge.clone(),
                    ifindex,
                    mac: None,
                },
            );
            push(
                Phase::Addresses,
                &ns,
                Action::AddAddress {
                    ifname: node.bridge.clone(),
                    ifindex,
                    address: Ipv4Net::new(gw, cidr.prefix_len()).expect("valid prefix"),
                },
            );
        }
        if let Some((ifname, ifindex)) = first_eni {
            push(
                Phase::Routes,
                &ns,
                Action::AddRoute {
                    destination: Ipv4Net::default(),
                    via: Some(node.default_gateway),
                    ifname,
                    ifindex,
                },
            );
        }
        for (key, value) in &node.sysctls {
            push(
                Phase::Sysctls,
                &ns,
                Action::Sysctl {
                    key: key.clone(),
                    value: value.clone(),
                },
            );
        }
    }

    // VPC custom route entries: destination -> the node's ENI address, out of
    // the vSwitch that holds it.
    for route in vpc_routes {
        let subnet = vpc_subnets.iter().find(|s| s.cidr.contains(&route.via));
        if let Some(subnet) = subnet {
            push(
                Phase::Routes,
                &vpc,
                Action::AddRoute {
                    destination: route.destination,
                    via: Some(route.via),
                    ifname: subnet.name.clone(),
                    ifindex: vsw[subnet.name.as_str()].ifindex,
                },
            );
        }
    }

    // Pods: veth from the node's bridge into the pod, or an ipvlan slave of
    // the node's ENI moved into the pod; eth0 inside.
    let mut host_slaves: HashMap<(String, String), u32> = HashMap::new();
    let mut pod_ifindex: HashMap<String, u32> = HashMap::new();
    for pod in &lab.pods {
        let node_ns = lab.netns(&pod.node);
        let pod_ns = lab.netns(&pod.name);
        let pod_index = match &pod.attachment {
            Attachment::Ipvlan { parent, host_slave } => {
                let parent = IfRef {
                    name: parent.clone(),
                    ifindex: eni_index[&(pod.node.clone(), parent.clone())],
                };
                let key = (pod.node.clone(), host_slave.clone());
                let slave_index = match host_slaves.get(&key) {
                    Some(i) => *i,
                    None => {
                        let i = idx.next(&node_ns);
                        host_slaves.insert(key, i);
                        push(
                            Phase::Stacked,
                            &node_ns,
                            Action::AddIpvlan {
                                name: host_slave.clone(),
                                ifindex: i,
                                parent: parent.clone(),
                                netns: None,
                            },
                        );
                        // As Terway sets up ipvl_N: no ARP, the node's own
                        // address (scope host). ipvlan switches frames
                        // between its slaves by IP address: the pods reach
                        // the node through this slave, the node reaches them
                        // through it with its own MAC (no ARP).
                        push(
                            Phase::Addresses,
                            &node_ns,
                            Action::ArpOff {
                                ifname: host_slave.clone(),
                                ifindex: i,
                            },
                        );
                        push(
                            Phase::Addresses,
                            &node_ns,
                            Action::AddHostAddress {
                                ifname: host_slave.clone(),
                                ifindex: i,
                                address: node_address(lab, &pod.node),
                            },
                        );
                        i
                    }
                };
                let pod_index = idx.next_in_both(&node_ns, &pod_ns);
                let temporary = labctl_topology::hashed_ifname("ipv", &pod.name);
                push(
                    Phase::Stacked,
                    &node_ns,
                    Action::AddIpvlan {
                        name: temporary.clone(),
                        ifindex: pod_index,
                        parent,
                        netns: Some(pod_ns.clone()),
                    },
                );
                push(
                    Phase::Addresses,
                    &pod_ns,
                    Action::RenameUp {
                        from: temporary,
                        ifname: pod.ifname.clone(),
                        ifindex: pod_index,
                    },
                );
                push(
                    Phase::Routes,
                    &pod_ns,
                    Action::SelfNeighbour {
                        ifname: pod.ifname.clone(),
                        ifindex: pod_index,
                        address: node_address(lab, &pod.node),
                    },
                );
                // The node reaches the pod through its own slave of the ENI.
                push(
                    Phase::Routes,
                    &node_ns,
                    Action::AddRoute {
                        destination: Ipv4Net::new(pod.address.addr(), 32).expect("/32"),
                        via: None,
                        ifname: host_slave.clone(),
                        ifindex: slave_index,
                    },
                );
                pod_index
            }
            Attachment::Bridge { host_ifname } => {
                let host_index = idx.next(&node_ns);
                let pod_index = idx.next(&pod_ns);
                push(
                    Phase::Links,
                    &node_ns,
                    Action::AddVeth {
                        name: host_ifname.clone(),
                        ifindex: host_index,
                        mac: None,
                        controller: node_bridge.get(pod.node.as_str()).cloned(),
                        peer_name: pod.ifname.clone(),
                        peer_netns: pod_ns.clone(),
                        peer_ifindex: pod_index,
                        peer_mac: pod.mac,
                    },
                );
                push(
                    Phase::Addresses,
                    &pod_ns,
                    Action::LinkUp {
                        ifname: pod.ifname.clone(),
                        ifindex: pod_index,
                    },
                );
                if lab.node(&pod.node).is_some_and(|n| n.hairpin_mode) {
                    push(
                        Phase::Addresses,
                        &node_ns,
                        Action::SetPort(crate::kernel::bridge::SetPort {
                            ifname: host_ifname.clone(),
                            ifindex: host_index,
                            learning: None,
                            neigh_suppress: None,
                            isolated: None,
                            hairpin: Some(true),
                        }),
                    );
                }
                pod_index
            }
        };
        pod_ifindex.insert(pod.name.clone(), pod_index);
        // Inside the pod, whatever the attachment: its address and routes.
        push(
            Phase::Addresses,
            &pod_ns,
            Action::AddAddress {
                ifname: pod.ifname.clone(),
                ifindex: pod_index,
                address: pod.address,
            },
        );
        for route in &pod.routes {
            push(
                Phase::Routes,
                &pod_ns,
                Action::AddRoute {
                    destination: route.destination,
                    via: Some(route.via),
                    ifname: pod.ifname.clone(),
                    ifindex: pod_index,
                },
            );
        }
    }

    // Clients: a veth to the VPC router, the VPC side holding the gateway.
    for client in &lab.clients {
        let ns = lab.netns(&client.name);
        let port_index = idx.next(&vpc);
        let ifindex = idx.next(&ns);
        push(
            Phase::Links,
            &vpc,
            Action::AddVeth {
                name: client.vpc_port.clone(),
                ifindex: port_index,
                mac: None,
                controller: None,
                peer_name: "eth0".into(),
                peer_netns: ns.clone(),
                peer_ifindex: ifindex,
                peer_mac: None,
            },
        );
        push(
            Phase::Addresses,
            &ns,
            Action::LinkUp {
                ifname: "eth0".into(),
                ifindex,
            },
        );
        push(
            Phase::Addresses,
            &vpc,
            Action::AddAddress {
                ifname: client.vpc_port.clone(),
                ifindex: port_index,
                address: Ipv4Net::new(client.gateway, client.address.prefix_len())
                    .expect("valid prefix"),
            },
        );
        push(
            Phase::Addresses,
            &ns,
            Action::AddAddress {
                ifname: "eth0".into(),
                ifindex,
                address: client.address,
            },
        );
        push(
            Phase::Routes,
            &ns,
            Action::AddRoute {
                destination: Ipv4Net::default(),
                via: Some(client.gateway),
                ifname: "eth0".into(),
                ifindex,
            },
        );
    }

    // Services, kube-proxy IPVS style, on every node: every service address
    // on a dummy kube-ipvs0; the SLB's addresses local to the VPC router;
    // then the IPVS tables and rules (crate::services).
    if !lab.services.is_empty() {
        for node in lab.nodes.iter().filter(|_| lab.uses_kube_ipvs()) {
            let ns = lab.netns(&node.name);
            let ifindex = idx.next(&ns);
            // After the ENIs, as kube-proxy adds it to a running node: when
            // the route's device has no fitting address (Terway's ipvl_N
            // holds the node's with scope host), the kernel takes the first
            // global address in device creation order as the source, which
            // must be the node's eth0, not a service address.
            push(
                Phase::Stacked,
                &ns,
                Action::AddDummy {
                    name: labctl_topology::KUBE_IPVS.into(),
                    ifindex,
                },
            );
            for address in lab.services.iter().flat_map(|s| s.addresses()) {
                push(
                    Phase::Addresses,
                    &ns,
                    Action::AddAddress {
                        ifname: labctl_topology::KUBE_IPVS.into(),
                        ifindex,
                        address: Ipv4Net::new(address, 32).expect("/32"),
                    },
                );
            }
        }
        for address in lab.services.iter().filter_map(|s| s.load_balancer_ip) {
            push(
                Phase::Addresses,
                &vpc,
                Action::AddAddress {
                    ifname: "lo".into(),
                    ifindex: 1,
                    address: Ipv4Net::new(address, 32).expect("/32"),
                },
            );
        }
        steps.extend(services::steps(lab, &Default::default()));
        steps.extend(services::sysctl_steps(lab));
    }
    steps.extend(ebpf::steps(lab, &pod_ifindex));
    // Last, so the ifindexes of everything above stay what they were.
    objects::steps(lab, &mut idx, &mut steps);

    steps.sort_by_key(|s| s.phase);
    Plan {
        lab: lab.name.clone(),
        namespaces,
        steps,
    }
}

/// A node's own address: that of its first interface (which always has
/// one).
fn node_address(lab: &Lab, node: &str) -> Ipv4Addr {
    lab.node(node)
        .and_then(|n| crate::services::node_addresses(n).next())
        .expect("a resolved node's first interface has an address")
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

#[cfg(test)]
mod tests {
    use super::*;

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
                Action::AddBridge {
                    name: PWN.into(),
                    ifindex: 2,
                    mac: None,
                }
            ),
            "ip -n 'x;y' link add '$(touch /tmp/pwned)' index 2 type bridge mcast_snooping 0 \
             && ip -n 'x;y' link set '$(touch /tmp/pwned)' up"
        );
        assert_eq!(
            step(
                "lab-n1",
                Action::AddVeth {
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
                }
            ),
            "ip -n lab-n1 link add 'a'\\''b' index 3 type veth peer name 'a\nb' \
             netns '$(touch /tmp/pwned)' index 2 && ip -n lab-n1 link set 'a'\\''b' master 'x;y' \
             && ip -n lab-n1 link set 'a'\\''b' up"
        );
        assert_eq!(
            step(
                "lab-n1",
                Action::Sysctl {
                    key: "net.ipv4.conf.x;y.rp_filter".into(),
                    value: PWN.into(),
                }
            ),
            "ip netns exec lab-n1 sysctl -qw 'net.ipv4.conf.x;y.rp_filter=$(touch /tmp/pwned)'"
        );
        assert_eq!(
            step(
                "a'b",
                Action::AddRoute {
                    destination: Ipv4Net::default(),
                    via: Some(Ipv4Addr::new(10, 0, 0, 253)),
                    ifname: PWN.into(),
                    ifindex: 2,
                }
            ),
            "ip -n 'a'\\''b' route add default via 10.0.0.253 dev '$(touch /tmp/pwned)' proto static"
        );
        assert_eq!(
            step(
                "lab-p1",
                Action::AddIpvlan {
                    name: "x;y".into(),
                    ifindex: 4,
                    parent: IfRef {
                        name: PWN.into(),
                        ifindex: 2,
                    },
                    netns: Some("a'b".into()),
                }
            ),
            "ip -n lab-p1 link add link '$(touch /tmp/pwned)' name 'x;y' netns 'a'\\''b' \
             index 4 type ipvlan mode l2"
        );
    }

    /// The command substitution's own words are quoted inside it, and its
    /// output is one word.
    #[test]
    fn self_neighbour_substitution_is_quoted_inside() {
        assert_eq!(
            step(
                "x;y",
                Action::SelfNeighbour {
                    ifname: "a'b".into(),
                    ifindex: 2,
                    address: Ipv4Addr::new(10, 0, 0, 1),
                }
            ),
            "ip -n 'x;y' neigh replace 10.0.0.1 dev 'a'\\''b' lladdr \
             \"$(ip netns exec 'x;y' cat '/sys/class/net/a'\\''b/address')\" nud permanent"
        );
    }

    #[test]
    fn ipvs_table_quotes_its_namespace() {
        let services = vec![crate::services::VirtualService {
            protocol: labctl_topology::Protocol::Tcp,
            address: Ipv4Addr::new(192, 168, 13, 23),
            port: 80,
            comment: PWN.into(),
            dests: vec![crate::services::RealServer {
                address: Ipv4Addr::new(172, 23, 96, 163),
                port: 80,
                weight: 1,
            }],
        }];
        assert_eq!(
            step(PWN, Action::IpvsTable { services }),
            "ip netns exec '$(touch /tmp/pwned)' ipvsadm -C \
             && ip netns exec '$(touch /tmp/pwned)' ipvsadm -A -t 192.168.13.23:80 -s rr \
             && ip netns exec '$(touch /tmp/pwned)' ipvsadm -a -t 192.168.13.23:80 -r 172.23.96.163:80 -m -w 1"
        );
    }

    /// A ruleset line `EOF` cannot end the heredoc: the delimiter is one no
    /// line of the ruleset is, and the ruleset always ends its last line.
    #[test]
    fn nft_heredoc_delimiter_is_not_in_the_ruleset() {
        let plain = step(
            "n",
            Action::Nftables {
                ruleset: "table ip t {\n}\n".into(),
            },
        );
        assert_eq!(
            plain,
            "ip netns exec n nft -f - <<'EOF'\ntable ip t {\n}\nEOF"
        );
        let hostile = step(
            "x;y",
            Action::Nftables {
                ruleset: "table ip t {\nEOF\ntouch /tmp/pwned\nEOF1 \n}".into(),
            },
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
                action: Action::LoopbackUp,
            }],
        };
        let commands = "ip netns add '$(touch /tmp/pwned)' && ip netns exec '$(touch /tmp/pwned)' \
                        sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
                        net.ipv6.conf.default.disable_ipv6=1\n\
                        ip -n '$(touch /tmp/pwned)' link set lo up\n";
        assert_eq!(p.to_commands(), commands);
        assert!(p.to_script().ends_with(&format!("set -e\n{commands}")));
    }
}
