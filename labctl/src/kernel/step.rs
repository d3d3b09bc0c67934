//! The vocabulary between planning and the kernel: a [`Step`] is one
//! [`Action`] bound to its namespace and [`Phase`]. The plan module makes
//! them from a lab (and re-exports them); the kernel layer carries them
//! out and each of its modules writes its own actions' iproute2 text, so
//! these types live here, below both, and the kernel layer depends on
//! nothing of planning.

use ipnet::Ipv4Net;
use labctl_topology::Role;
use serde::Serialize;

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
    /// A scenario's link changes and their undoing (the impair module),
    /// and its reset before the traffic (neighbours forgotten, eBPF maps
    /// refilled), on a lab that is up: never part of `up`'s plan, so not
    /// in [`Phase::ALL`].
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// `lo` up ([`crate::kernel::link`]).
    LoopbackUp(crate::kernel::link::LoopbackUp),
    /// A bridge, multicast snooping off ([`crate::kernel::bridge`]).
    AddBridge(crate::kernel::bridge::AddBridge),
    /// A veth pair, its peer made in its namespace ([`crate::kernel::veth`]).
    AddVeth(crate::kernel::veth::AddVeth),
    /// A dummy device ([`crate::kernel::dummy`]).
    AddDummy(crate::kernel::dummy::AddDummy),
    /// A namespace's whole IPVS table, `ipvsadm` commands in one `sh -c`
    /// (kube-proxy's IPVS mode, the SLB; [`crate::kernel::ipvs`]).
    IpvsTable(crate::kernel::ipvs::IpvsTable),
    /// `nft -f -` with a ruleset inside the namespace
    /// ([`crate::kernel::nft`]).
    Nftables(crate::kernel::nft::Nftables),
    /// A link up ([`crate::kernel::link`]).
    LinkUp(crate::kernel::link::LinkUp),
    /// A bridge port isolated ([`crate::kernel::link`]).
    IsolatePort(crate::kernel::link::IsolatePort),
    /// A link renamed from its temporary name and up
    /// ([`crate::kernel::link`]).
    RenameUp(crate::kernel::link::RenameUp),
    /// The node's own address on its ipvlan slave, scope host
    /// ([`crate::kernel::addr`]).
    AddHostAddress(crate::kernel::addr::AddHostAddress),
    /// ARP off on a link ([`crate::kernel::link`]).
    ArpOff(crate::kernel::link::ArpOff),
    /// A pod's neighbour entry for its node with its own MAC
    /// ([`crate::kernel::neigh`]).
    SelfNeighbour(crate::kernel::neigh::SelfNeighbour),
    /// An address on an interface ([`crate::kernel::addr`]).
    AddAddress(crate::kernel::addr::AddAddress),
    /// A route to a destination, through a gateway or not
    /// ([`crate::kernel::route`]).
    AddRoute(crate::kernel::route::AddRoute),
    /// A sysctl inside the namespace ([`crate::kernel::sysctl`]).
    Sysctl(crate::kernel::sysctl::Sysctl),
    /// A netem qdisc at the root of a link's egress queue (a scenario's
    /// link change, `labctl netem`; [`crate::kernel::qdisc`]).
    Netem(crate::kernel::qdisc::Netem),
    /// A link's root qdisc deleted ([`crate::kernel::qdisc`]).
    QdiscDelete(crate::kernel::qdisc::QdiscDelete),
    /// A link down ([`crate::kernel::link`]).
    LinkDown(crate::kernel::link::LinkDown),
    /// A link's MTU ([`crate::kernel::link`]).
    SetMtu(crate::kernel::link::SetMtu),
    /// A route deleted (a scenario's change; [`crate::kernel::route`]).
    DelRoute(crate::kernel::route::DelRoute),
    /// A link's MAC address (a scenario's change; [`crate::kernel::link`]).
    SetMac(crate::kernel::link::SetMac),
    /// A VXLAN device ([`crate::kernel::vxlan`]).
    AddVxlan(crate::kernel::vxlan::AddVxlan),
    /// A link enslaved to a bridge ([`crate::kernel::link`]).
    SetMaster(crate::kernel::link::SetMaster),
    /// A neighbour entry ([`crate::kernel::neigh`]).
    AddNeighbour(crate::kernel::neigh::AddNeighbour),
    /// A forwarding database entry ([`crate::kernel::fdb`]).
    AddFdb(crate::kernel::fdb::AddFdb),
    /// The clsact qdisc tc filters attach to ([`crate::kernel::tc`]).
    Clsact(crate::kernel::tc::Clsact),
    /// A match-all mirred filter ([`crate::kernel::tc`]).
    TcMirred(crate::kernel::tc::TcMirred),
    /// A link deleted (a scenario's change; [`crate::kernel::link`]).
    DelLink(crate::kernel::link::DelLink),
    /// A neighbour entry deleted (a scenario's change; [`crate::kernel::neigh`]).
    DelNeighbour(crate::kernel::neigh::DelNeighbour),
    /// Every learned IPv4 neighbour entry of the namespace deleted (a
    /// scenario's reset before its traffic; [`crate::kernel::neigh`]).
    ForgetNeighbours(crate::kernel::neigh::ForgetNeighbours),
    /// The namespace's IPv4 conntrack table emptied (a scenario's reset
    /// before its traffic; [`crate::kernel::conntrack`]).
    FlushConntrack(crate::kernel::conntrack::FlushConntrack),
    /// The namespace's IPv4 TCP sockets in TIME_WAIT closed (a scenario's
    /// reset before its traffic; [`crate::kernel::timewait`]).
    ForgetTimeWait(crate::kernel::timewait::ForgetTimeWait),
    /// Every filter of a hook deleted (a scenario's change;
    /// [`crate::kernel::tc`]).
    DelTcFilters(crate::kernel::tc::DelTcFilters),
    /// The clsact qdisc deleted, its filters with it
    /// ([`crate::kernel::tc`]).
    DelClsact(crate::kernel::tc::DelClsact),
    /// A forwarding database entry deleted (a scenario's change;
    /// [`crate::kernel::fdb`]).
    DelFdb(crate::kernel::fdb::DelFdb),
    /// The load balancer's programs and maps loaded and pinned once for
    /// the whole lab ([`crate::kernel::ebpf`]).
    BpfLoad(crate::kernel::ebpf::BpfLoad),
    /// A pinned program on an interface as a cls_bpf filter
    /// ([`crate::kernel::ebpf`]).
    BpfAttach(crate::kernel::ebpf::BpfAttach),
    /// The load balancer's maps made to hold exactly its services
    /// ([`crate::kernel::ebpf`]).
    BpfMaps(crate::kernel::ebpf::BpfMaps),
    /// The overlay router's programs and maps loaded and pinned in one
    /// node's directory ([`crate::kernel::ebpf`]).
    RouteLoad(crate::kernel::ebpf::RouteLoad),
    /// One node's router maps made to hold exactly its tables
    /// ([`crate::kernel::ebpf`]).
    RouteMaps(crate::kernel::ebpf::RouteMaps),
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

/// The priority of the layer's tc filters: what `tc` picks for the first
/// filter of a hook when none is given (the Kata article's `pref 49152`).
pub const TC_PRIO: u16 = 49152;

/// A route's destination as `ip route` writes it: `default` for 0/0.
pub fn route_destination(destination: &Ipv4Net) -> String {
    if destination.prefix_len() == 0 {
        "default".to_string()
    } else {
        destination.to_string()
    }
}
