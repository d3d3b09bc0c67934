//! Reading a live lab back from the kernel: every namespace it made, with its
//! interfaces, their kinds, MACs, addresses and bridge masters, as
//! `ip -d addr` would show them. What `labctl status` prints. Also one
//! namespace's neighbour table (`ip neigh show`) and packet-filter rules
//! (`nft list ruleset`), which scenarios check after their traffic.
//!
//! The other readers sit beside it: [`capture`] (taps on every interface,
//! as tcpdump sees them) and [`conntrack`] (the flows the kernel
//! remembers, like `conntrack -L`). Both watch what packets did; neither
//! builds nor changes the lab (emptying conntrack and forgetting the
//! neighbours before a scenario are kernel steps, `FlushConntrack` and
//! `ForgetNeighbours`, run by the executor).
//!
//! Not here: the traffic module makes packets rather than watching them,
//! and `labctl serve` and the lab's state record use it, so it stays at the
//! top beside them (under `scenario/` it would make a cycle through the
//! state). The IPVS client and the eBPF maps are read here and there
//! (`labctl show`, a scenario's checks) but written by the kernel layer,
//! which this module uses for `nft list ruleset`: they stay where both can
//! reach them.

use std::collections::HashMap;

use futures::TryStreamExt;
use labctl_topology::{Role, format_mac};
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo};
use serde::Serialize;

use crate::state::LabState;
use crate::sys;

pub mod capture;
pub mod conntrack;

/// One namespace of a lab as the kernel has it now.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct NsStatus {
    pub name: String,
    pub entity: String,
    pub role: Role,
    /// False when the namespace is missing (e.g. `up` was interrupted).
    pub present: bool,
    pub interfaces: Vec<IfStatus>,
}

/// One interface.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct IfStatus {
    pub index: u32,
    pub name: String,
    /// `veth`, `bridge`, `loopback`, ... (the link's `IFLA_INFO_KIND`).
    pub kind: String,
    pub mac: Option<String>,
    pub up: bool,
    /// The bridge this interface is a port of.
    pub master: Option<String>,
    /// The device of the same namespace a vlan, macvlan or ipvlan sits on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<String>,
    pub addresses: Vec<String>,
}

/// Read every namespace of a lab. Namespaces are entered on threads of our
/// own (to open a netlink socket in each); the dumps run on one runtime
/// (whose start is the only failure: a namespace that cannot be read is
/// not `present`).
pub fn lab_status(record: &LabState) -> std::io::Result<Vec<NsStatus>> {
    let names: Vec<&str> = record.namespaces.iter().map(|n| n.name.as_str()).collect();
    let sockets = open_sockets(&names);
    let rt = sys::runtime()?;
    let mut out = Vec::new();
    rt.block_on(async {
        for (spec, socket) in record.namespaces.iter().zip(sockets) {
            let interfaces = match socket {
                Some(socket) => dump(socket).await.ok(),
                None => None,
            };
            out.push(NsStatus {
                name: spec.name.clone(),
                entity: spec.entity.clone(),
                role: spec.role,
                present: interfaces.is_some(),
                interfaces: interfaces.unwrap_or_default(),
            });
        }
    });
    Ok(out)
}

fn open_sockets(names: &[&str]) -> Vec<Option<netlink_sys::Socket>> {
    sys::on_workers(names, |n| sys::netlink_socket_in(n).ok())
}

async fn dump(socket: netlink_sys::Socket) -> Result<Vec<IfStatus>, rtnetlink::Error> {
    let (conn, handle, _) = rtnetlink::from_socket(sys::tokio_socket(socket));
    let task = tokio::spawn(conn);
    let links: Vec<_> = handle.link().get().execute().try_collect().await?;
    let addrs: Vec<_> = handle.address().get().execute().try_collect().await?;
    task.abort();

    let mut by_index: HashMap<u32, Vec<String>> = HashMap::new();
    for a in addrs {
        let ip = a.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = ip {
            by_index
                .entry(a.header.index)
                .or_default()
                .push(format!("{ip}/{}", a.header.prefix_len));
        }
    }
    let names = link_names(&links);
    let mut out: Vec<IfStatus> = links
        .iter()
        .map(|l| {
            let mut s = IfStatus {
                index: l.header.index,
                name: names.get(&l.header.index).cloned().unwrap_or_default(),
                kind: if l.header.flags.contains(LinkFlags::Loopback) {
                    "loopback".into()
                } else {
                    "device".into()
                },
                mac: None,
                up: l.header.flags.contains(LinkFlags::Up),
                master: None,
                lower: None,
                addresses: by_index.remove(&l.header.index).unwrap_or_default(),
            };
            // IFLA_LINK names a device of this namespace only without a
            // link-netnsid (a veth's names its peer, maybe elsewhere).
            let elsewhere = l
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::LinkNetNsId(_)));
            let mut lower = None;
            for attr in &l.attributes {
                match attr {
                    LinkAttribute::Address(mac) if mac.len() == 6 && s.kind != "loopback" => {
                        let mac: [u8; 6] = mac.as_slice().try_into().expect("length checked");
                        s.mac = Some(format_mac(&mac));
                    }
                    LinkAttribute::Controller(i) => s.master = names.get(i).cloned(),
                    LinkAttribute::Link(i) if !elsewhere => lower = names.get(i).cloned(),
                    LinkAttribute::LinkInfo(infos) => {
                        for info in infos {
                            if let LinkInfo::Kind(kind) = info {
                                s.kind = kind.to_string();
                            }
                        }
                    }
                    _ => {}
                }
            }
            if matches!(s.kind.as_str(), "vlan" | "macvlan" | "ipvlan") {
                s.lower = lower;
            }
            s
        })
        .collect();
    out.sort_by_key(|i| i.index);
    Ok(out)
}

/// One entry of a namespace's neighbour (ARP/NDP) table, as `ip neigh
/// show` prints it: `10.132.2.46 dev br-int lladdr 0a:58:0a:84:02:2e
/// PERMANENT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Neighbour {
    pub dev: String,
    pub address: std::net::IpAddr,
    /// `None` while unresolved (INCOMPLETE, FAILED).
    pub lladdr: Option<[u8; 6]>,
    /// `ip neigh`'s word for the state: `REACHABLE`, `PERMANENT`, ...
    pub state: String,
}

impl std::fmt::Display for Neighbour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} dev {}", self.address, self.dev)?;
        if let Some(mac) = &self.lladdr {
            write!(f, " lladdr {}", format_mac(mac))?;
        }
        write!(f, " {}", self.state)
    }
}

/// A namespace's packet-filter rules: its nftables ruleset (where
/// iptables-nft keeps iptables rules too) and the legacy iptables tables
/// loaded in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// `nft list ruleset`, as nft prints it (empty: no table).
    pub nft: String,
    /// `/proc/net/ip_tables_names` of the namespace: the x_tables tables
    /// legacy iptables made there (the file is absent without the module).
    pub legacy_tables: Vec<String>,
}

impl Ruleset {
    /// No nftables table and no legacy iptables table: no rule of any kind.
    pub fn is_empty(&self) -> bool {
        self.nft.trim().is_empty() && self.legacy_tables.is_empty()
    }

    /// What there is, in a line: the tables by family and name.
    pub fn summary(&self) -> String {
        let mut tables: Vec<String> = self
            .nft
            .lines()
            .filter_map(|l| l.strip_prefix("table "))
            .map(|t| t.trim_end_matches(" {").to_string())
            .collect();
        tables.extend(
            self.legacy_tables
                .iter()
                .map(|t| format!("iptables (legacy) {t}")),
        );
        if tables.is_empty() {
            "no table".to_string()
        } else {
            format!("tables: {}", tables.join(", "))
        }
    }
}

/// The packet-filter rules of one namespace, like `ip netns exec NETNS nft
/// list ruleset` and `cat /proc/net/ip_tables_names` there. Blocking.
pub fn ruleset_in(netns: &str) -> std::io::Result<Ruleset> {
    let nft = crate::kernel::nft::list(netns, false).map_err(std::io::Error::other)?;
    let legacy = sys::in_netns(netns, || {
        // The thread's own view of /proc/net: this namespace's.
        match std::fs::read_to_string("/proc/thread-self/net/ip_tables_names") {
            Ok(text) => Ok(text.lines().map(str::to_string).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    })??;
    Ok(Ruleset {
        nft,
        legacy_tables: legacy,
    })
}

/// The neighbour table of one namespace, like `ip -n NETNS neigh show`
/// (an RTM_GETNEIGH dump of IPv4 and IPv6 entries; the bridge FDB's
/// AF_BRIDGE entries are not neighbours and are left out).
pub fn neighbours_in(netns: &str) -> std::io::Result<Vec<Neighbour>> {
    use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
    let socket = sys::netlink_socket_in(netns)?;
    let rt = sys::runtime()?;
    let (links, neighs) = rt
        .block_on(async {
            let (conn, handle, _) = rtnetlink::from_socket(sys::tokio_socket(socket));
            let task = tokio::spawn(conn);
            let links: Vec<_> = handle.link().get().execute().try_collect().await?;
            let neighs: Vec<_> = handle.neighbours().get().execute().try_collect().await?;
            task.abort();
            Ok::<_, rtnetlink::Error>((links, neighs))
        })
        .map_err(|e| std::io::Error::other(format!("dump the neighbour table: {e}")))?;
    let names = link_names(&links);
    let mut out = Vec::new();
    for n in neighs {
        let mut address = None;
        let mut lladdr = None;
        for a in &n.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                    address = Some(std::net::IpAddr::V4(*v4))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                    address = Some(std::net::IpAddr::V6(*v6))
                }
                NeighbourAttribute::LinkLayerAddress(b) => {
                    lladdr = <[u8; 6]>::try_from(b.as_slice()).ok()
                }
                _ => {}
            }
        }
        let Some(address) = address else { continue };
        let state = match n.header.state {
            NeighbourState::Incomplete => "INCOMPLETE".to_string(),
            NeighbourState::Reachable => "REACHABLE".to_string(),
            NeighbourState::Stale => "STALE".to_string(),
            NeighbourState::Delay => "DELAY".to_string(),
            NeighbourState::Probe => "PROBE".to_string(),
            NeighbourState::Failed => "FAILED".to_string(),
            NeighbourState::Noarp => "NOARP".to_string(),
            NeighbourState::Permanent => "PERMANENT".to_string(),
            NeighbourState::None => "NONE".to_string(),
            other => format!("{other:?}").to_uppercase(),
        };
        out.push(Neighbour {
            dev: names
                .get(&n.header.ifindex)
                .cloned()
                .unwrap_or_else(|| format!("if{}", n.header.ifindex)),
            address,
            lladdr,
            state,
        });
    }
    Ok(out)
}

/// Each link's name, by ifindex.
fn link_names(links: &[netlink_packet_route::link::LinkMessage]) -> HashMap<u32, String> {
    links
        .iter()
        .filter_map(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some((l.header.index, n.clone())),
                _ => None,
            })
        })
        .collect()
}
