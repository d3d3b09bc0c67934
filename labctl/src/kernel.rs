//! The one interface through which `up` touches the kernel, with the real
//! implementation (rtnetlink sockets opened inside each lab namespace) and a
//! recording fake for tests without root.
//!
//! Nothing here opens a socket in, or changes, the host's own namespace: the
//! only sockets are those [`crate::sys::create_netns`] opens inside the
//! namespaces it has just made.
//!
//! Kinds whose kernel side is more than one rtnetlink call keep it in a file
//! of their own: [`ebpf`] (load and pin, cls_bpf filters, map contents),
//! [`ipvs`] (a namespace's IPVS table), [`nft`] (`nft -f -` inside a
//! namespace), and the low-level layer's objects. The eBPF pins live on
//! labctl's bpffs, not in a namespace; every other write is inside the
//! lab's namespaces.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use futures::TryStreamExt;
use netlink_packet_route::address::AddressScope;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, IpVlanMode, LinkAttribute, LinkMessage,
};
use netlink_packet_route::neighbour::NeighbourState;
use rtnetlink::{
    Handle, LinkBridge, LinkDummy, LinkIpVlan, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

use crate::sys;
use step::{Action, NsSpec, Step};

pub mod bond;
pub mod bridge;
pub mod ebpf;
pub mod ipvs;
pub mod macvlan;
pub mod nft;
mod objects;
pub mod route;
pub mod step;
pub mod vlan;

/// A kernel action that failed, with its iproute2 equivalent.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct KernelError {
    /// What was being done, as the iproute2 command that does the same.
    pub what: String,
    pub message: String,
}

impl KernelError {
    pub fn new(what: impl Into<String>, err: impl std::fmt::Display) -> Self {
        KernelError {
            what: what.into(),
            message: err.to_string(),
        }
    }
}

/// What the executor needs from the kernel.
pub trait Kernel {
    /// Create the lab's namespaces (all of them, or report every failure).
    fn create_namespaces(&mut self, specs: &[NsSpec]) -> Result<(), Vec<KernelError>>;
    /// Run one planned step.
    fn run(&self, step: &Step) -> impl Future<Output = Result<(), KernelError>>;
    /// Wait until every link that is up with a carrier can send (see
    /// [`links_not_ready`]). A kernel without links has nothing to wait for.
    fn settle(&self) -> impl Future<Output = ()> {
        async {}
    }
    /// An interface's MTU and administrative state, like `ip -n NS link
    /// show index N`: what a change must put back.
    fn link_settings(
        &self,
        netns: &str,
        ifindex: u32,
    ) -> impl Future<Output = Result<LinkSettings, KernelError>>;
    /// A sysctl's value in a namespace, like `ip netns exec NS sysctl -n
    /// KEY`: what a sysctl change must put back.
    fn sysctl(&self, netns: &str, key: &str) -> impl Future<Output = Result<String, KernelError>>;
}

/// What a link change alters and its undoing restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSettings {
    pub mtu: u32,
    pub up: bool,
    /// Its MAC address, when it has an Ethernet one.
    pub mac: Option<[u8; 6]>,
}

/// How long `up` waits for the kernel to activate the links it set up.
/// Activation normally takes microseconds; this bounds a kernel that is
/// busy elsewhere (its `rtnl` lock held by another namespace's teardown).
pub const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The links of one namespace that are up and have a carrier but cannot send
/// yet. A link brought up before its peer (the first end of a veth, a port
/// whose carrier comes later) keeps the `noop` qdisc, which drops every
/// packet, until the kernel's linkwatch work runs `dev_activate`; that work
/// waits for the `rtnl` lock, so on a busy machine a first SYN or ARP request
/// can vanish and cost a one-second retransmit. The flags and qdisc come
/// from the same dump (`IFF_LOWER_UP` and `IFLA_QDISC`).
pub async fn links_not_ready(handle: &Handle) -> Result<Vec<String>, rtnetlink::Error> {
    use netlink_packet_route::link::LinkFlags;
    let links: Vec<LinkMessage> = handle.link().get().execute().try_collect().await?;
    Ok(links
        .into_iter()
        .filter(|l| {
            let f = l.header.flags;
            f.contains(LinkFlags::Up)
                && f.contains(LinkFlags::LowerUp)
                && !f.contains(LinkFlags::Loopback)
                && l.attributes
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::Qdisc(q) if q == "noop"))
        })
        .map(|l| {
            l.attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| format!("index {}", l.header.index))
        })
        .collect())
}

/// Poll [`links_not_ready`] until it is empty or `limit` has passed;
/// returns the links still not ready.
pub async fn wait_links_ready(handle: &Handle, limit: std::time::Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + limit;
    let mut pause = std::time::Duration::from_micros(200);
    loop {
        let pending = links_not_ready(handle).await.unwrap_or_default();
        if pending.is_empty() || std::time::Instant::now() >= deadline {
            return pending;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(20));
    }
}

/// [`wait_links_ready`] for one named namespace, from synchronous code (the
/// tests that build links with `ip`).
pub fn wait_links_ready_in(
    netns: &str,
    limit: std::time::Duration,
) -> std::io::Result<Vec<String>> {
    let socket = sys::netlink_socket_in(netns)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(async {
        let (conn, handle, _) = rtnetlink::from_socket(sys::tokio_socket(socket));
        let task = tokio::spawn(conn);
        let pending = wait_links_ready(&handle, limit).await;
        task.abort();
        pending
    }))
}

/// The real kernel, through rtnetlink.
#[derive(Default)]
pub struct Netlink {
    handles: HashMap<String, Handle>,
    fds: HashMap<String, OwnedFd>,
    /// Threads used to create namespaces.
    pub threads: usize,
    /// The lab's ownership mark, put on every namespace it creates
    /// ([`crate::owner`]).
    mark: String,
}

impl Netlink {
    /// A kernel that marks every namespace it creates with `mark`.
    pub fn new(mark: String) -> Self {
        Netlink {
            threads: 4,
            mark,
            ..Default::default()
        }
    }

    fn handle(&self, netns: &str) -> Result<&Handle, KernelError> {
        self.handles
            .get(netns)
            .ok_or_else(|| KernelError::new(netns, "namespace was not created by this run"))
    }

    /// Open sockets in namespaces that exist already (a lab that is up),
    /// for steps run after `up`: a scenario's changes, `labctl netem`. The
    /// names come from the lab's record; each is checked to carry the
    /// lab's mark first ([`crate::owner`]), so nothing else is touched.
    /// Call it on the runtime the steps will run on.
    pub fn attach(&mut self, names: &[String]) -> Result<(), KernelError> {
        use crate::owner::{Owner, netns_owner};
        for name in names {
            if self.handles.contains_key(name) {
                continue;
            }
            match netns_owner(name, &self.mark) {
                Owner::Ours => {}
                Owner::Gone => {
                    return Err(KernelError::new(
                        format!("ip netns exec {name}"),
                        "the namespace is gone",
                    ));
                }
                Owner::Foreign(why) => {
                    return Err(KernelError::new(format!("ip netns exec {name}"), why));
                }
            }
            let what = || format!("ip netns exec {name}");
            let fd = sys::open_netns(name).map_err(|e| KernelError::new(what(), e))?;
            let socket = sys::netlink_socket_in(name).map_err(|e| KernelError::new(what(), e))?;
            let (conn, handle, _) = rtnetlink::from_socket(sys::tokio_socket(socket));
            tokio::spawn(conn);
            self.handles.insert(name.clone(), handle);
            self.fds.insert(name.clone(), fd);
        }
        Ok(())
    }

    /// The interfaces of a namespace, by index and name (`ip -n NS link`).
    pub async fn links(&self, netns: &str) -> Result<Vec<(u32, String)>, KernelError> {
        let what = || format!("ip -n {netns} link show");
        let mut dump = self.handle(netns)?.link().get().execute();
        let mut out = Vec::new();
        while let Some(l) = dump
            .try_next()
            .await
            .map_err(|e| KernelError::new(what(), netlink_message(e)))?
        {
            let name = l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            out.push((l.header.index, name.unwrap_or_default()));
        }
        Ok(out)
    }

    /// The kind of an interface's root qdisc (`netem`, `noqueue`, ...),
    /// like `tc -n NS qdisc show dev IF root`.
    pub async fn root_qdisc(
        &self,
        netns: &str,
        ifindex: u32,
    ) -> Result<Option<String>, KernelError> {
        use netlink_packet_route::tc::{TcAttribute, TcHandle};
        let what = || format!("tc -n {netns} qdisc show");
        let h = self.handle(netns)?.clone();
        let mut dump = h.qdisc().get().index(ifindex as i32).execute();
        while let Some(m) = dump
            .try_next()
            .await
            .map_err(|e| KernelError::new(what(), netlink_message(e)))?
        {
            if m.header.index as u32 == ifindex && m.header.parent == TcHandle::ROOT {
                return Ok(m.attributes.iter().find_map(|a| match a {
                    TcAttribute::Kind(k) => Some(k.clone()),
                    _ => None,
                }));
            }
        }
        Ok(None)
    }

    /// `RTM_NEWLINK` in the step's namespace.
    async fn link_add(&self, step: &Step, msg: LinkMessage) -> Result<(), KernelError> {
        let h = self.handle(&step.netns)?;
        h.link().add(msg).execute().await.map_err(|e| fail(step, e))
    }

    /// `RTM_SETLINK` in the step's namespace.
    async fn link_set(&self, step: &Step, msg: LinkMessage) -> Result<(), KernelError> {
        let h = self.handle(&step.netns)?;
        h.link().set(msg).execute().await.map_err(|e| fail(step, e))
    }
}

/// A step's first line: what errors name for a step that spans several
/// (a table, a heredoc).
fn first_line(step: &Step) -> String {
    step.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A step's netlink failure, with the step as its iproute2 command.
fn fail(step: &Step, e: rtnetlink::Error) -> KernelError {
    KernelError::new(step.to_string(), netlink_message(e))
}

/// Makes `netlink_sys::Socket` movable between threads for the hand-over
/// from the creating threads to the runtime.
struct Created(sys::NewNetns);

impl Kernel for Netlink {
    /// Namespaces are created on a few threads at once (each unshare +
    /// bind-mount costs the kernel a little); sockets are opened inside them
    /// and handed to tokio here, on the runtime's thread.
    fn create_namespaces(&mut self, specs: &[NsSpec]) -> Result<(), Vec<KernelError>> {
        let threads = self.threads.clamp(1, 16).min(specs.len().max(1));
        let chunk = specs.len().div_ceil(threads).max(1);
        let mark = self.mark.as_str();
        let results: Vec<Vec<Result<Created, KernelError>>> = std::thread::scope(|s| {
            let workers: Vec<_> = specs
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .enumerate()
                            .map(|(i, ns)| {
                                if i == part.len() / 2 {
                                    crate::fault::fault_point("half-namespaces");
                                }
                                sys::create_netns(&ns.name, mark, |socket| {
                                    crate::owner::set_loopback_alias(socket, mark)
                                })
                                .map(Created)
                                .map_err(|e| {
                                    KernelError::new(format!("ip netns add {}", ns.name), e)
                                })
                            })
                            .collect()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("namespace worker panicked"))
                .collect()
        });
        let mut errors = Vec::new();
        for r in results.into_iter().flatten() {
            match r {
                Ok(Created(ns)) => {
                    let (conn, handle, _) = rtnetlink::from_socket(sys::tokio_socket(ns.socket));
                    tokio::spawn(conn);
                    self.handles.insert(ns.name.clone(), handle);
                    self.fds.insert(ns.name, ns.fd);
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    async fn settle(&self) {
        futures::future::join_all(
            self.handles
                .values()
                .map(|h| wait_links_ready(h, SETTLE_LIMIT)),
        )
        .await;
    }

    async fn run(&self, step: &Step) -> Result<(), KernelError> {
        match &step.action {
            Action::AddVxlan { .. }
            | Action::DelRoute { .. }
            | Action::SetMac { .. }
            | Action::SetMaster { .. }
            | Action::AddNeighbour { .. }
            | Action::AddFdb { .. }
            | Action::Clsact { .. }
            | Action::TcMirred { .. }
            | Action::DelLink { .. }
            | Action::DelNeighbour { .. }
            | Action::DelFdb { .. }
            | Action::DelTcFilters { .. }
            | Action::DelClsact { .. } => self.run_object(step).await,
            Action::AddVlan(a) => a.apply(self, step).await,
            Action::AddBond(a) => a.apply(self, step).await,
            Action::Enslave(a) => a.apply(self, step).await,
            Action::AddOffParent(a) => a.apply(self, step).await,
            Action::AddVlanBridge(a) => a.apply(self, step).await,
            Action::SetPort(a) => a.apply(self, step).await,
            Action::BridgeVlan(a) => a.apply(self, step).await,
            Action::AddNsRoute(a) => a.apply(self, step).await,
            Action::DelNsRoute(a) => a.apply(self, step).await,
            Action::LoopbackUp => {
                let msg = LinkUnspec::new_with_index(1).up().build();
                self.link_set(step, msg).await
            }
            Action::AddBridge { name, ifindex, mac } => {
                let mut b = LinkBridge::new(name)
                    .index(*ifindex)
                    .mcast_snooping(false)
                    .up();
                if let Some(mac) = mac {
                    b = b.address(mac.to_vec());
                }
                self.link_add(step, b.build()).await
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
                let peer_fd = self
                    .fds
                    .get(peer_netns)
                    .ok_or_else(|| KernelError::new(step.to_string(), "peer namespace missing"))?;
                let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
                    .name(peer_name.clone())
                    .index(*peer_ifindex)
                    .setns_by_fd(peer_fd.as_raw_fd());
                if let Some(mac) = peer_mac {
                    peer = peer.address(mac.to_vec());
                }
                let mut b = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                    .name(name.clone())
                    .index(*ifindex)
                    .up()
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
                if let Some(mac) = mac {
                    b = b.address(mac.to_vec());
                }
                if let Some(c) = controller {
                    b = b.controller(c.ifindex);
                }
                self.link_add(step, b.build()).await
            }
            Action::AddDummy { name, ifindex } => {
                let msg = LinkDummy::new(name).index(*ifindex).up().build();
                self.link_add(step, msg).await
            }
            Action::AddIpvlan {
                name,
                ifindex,
                parent,
                netns,
            } => {
                let mut b = LinkIpVlan::new(name, parent.ifindex, IpVlanMode::L2).index(*ifindex);
                b = match netns {
                    // Made here, off the node's ENI, living in the pod.
                    Some(target) => {
                        let fd = self.fds.get(target).ok_or_else(|| {
                            KernelError::new(step.to_string(), "pod namespace missing")
                        })?;
                        b.setns_by_fd(fd.as_raw_fd())
                    }
                    None => b.up(),
                };
                self.link_add(step, b.build()).await
            }
            Action::BpfLoad { .. }
            | Action::BpfAttach { .. }
            | Action::BpfMaps { .. }
            | Action::RouteLoad { .. }
            | Action::RouteMaps { .. } => self.run_ebpf(step).await,
            Action::IpvsTable { services } => {
                // IPVS is generic netlink on a socket of its own, opened
                // inside the namespace by a thread of our own. The first
                // line names the command; the whole table is in `labctl
                // plan`.
                let (netns, services) = (step.netns.clone(), services.clone());
                let what = first_line(step);
                tokio::task::spawn_blocking(move || ipvs::apply(&netns, &services, &what))
                    .await
                    .map_err(|e| KernelError::new(first_line(step), e))?
            }
            Action::Nftables { ruleset } => {
                // nft is a process, started inside the namespace by a
                // thread of our own.
                let (netns, ruleset) = (step.netns.clone(), ruleset.clone());
                let what = first_line(step);
                tokio::task::spawn_blocking(move || nft::apply(&netns, &ruleset, &what))
                    .await
                    .map_err(|e| KernelError::new(first_line(step), e))?
            }
            Action::RenameUp {
                ifname, ifindex, ..
            } => {
                let msg = LinkUnspec::new_with_index(*ifindex)
                    .name(ifname.clone())
                    .up()
                    .build();
                self.link_set(step, msg).await
            }
            Action::IsolatePort { ifindex, .. } => {
                // Port attributes travel in RTM_NEWLINK: the kernel's
                // RTM_SETLINK ignores IFLA_LINKINFO, and says nothing.
                let msg = rtnetlink::LinkBridgePort::new(*ifindex)
                    .isolated(true)
                    .build();
                self.handle(&step.netns)?
                    .link()
                    .set_port(msg)
                    .execute()
                    .await
                    .map_err(|e| fail(step, e))
            }
            Action::ArpOff { ifindex, .. } => {
                let msg = LinkUnspec::new_with_index(*ifindex).arp(false).build();
                self.link_set(step, msg).await
            }
            Action::AddHostAddress {
                ifindex, address, ..
            } => {
                let mut req =
                    self.handle(&step.netns)?
                        .address()
                        .add(*ifindex, IpAddr::V4(*address), 32);
                req.message_mut().header.scope = AddressScope::Host;
                req.execute().await.map_err(|e| fail(step, e))
            }
            Action::SelfNeighbour {
                ifindex, address, ..
            } => {
                let h = self.handle(&step.netns)?;
                let link = h
                    .link()
                    .get()
                    .match_index(*ifindex)
                    .execute()
                    .try_next()
                    .await
                    .map_err(|e| fail(step, e))?;
                let mac = link
                    .iter()
                    .flat_map(|l| l.attributes.iter())
                    .find_map(|a| match a {
                        LinkAttribute::Address(mac) => Some(mac.clone()),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        KernelError::new(step.to_string(), "the link has no MAC address")
                    })?;
                h.neighbours()
                    .add(*ifindex, IpAddr::V4(*address))
                    .link_layer_address(&mac)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
                    .map_err(|e| fail(step, e))
            }
            Action::LinkUp { ifindex, .. } => {
                let msg = LinkUnspec::new_with_index(*ifindex).up().build();
                self.link_set(step, msg).await
            }
            Action::AddAddress {
                ifindex, address, ..
            } => self
                .handle(&step.netns)?
                .address()
                .add(*ifindex, IpAddr::V4(address.addr()), address.prefix_len())
                .execute()
                .await
                .map_err(|e| fail(step, e)),
            Action::AddRoute {
                destination,
                via,
                ifindex,
                ..
            } => {
                let mut b = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .destination_prefix(destination.addr(), destination.prefix_len())
                    .output_interface(*ifindex);
                if let Some(via) = via {
                    b = b.gateway(*via);
                }
                let msg = b.build();
                self.handle(&step.netns)?
                    .route()
                    .add(msg)
                    .execute()
                    .await
                    .map_err(|e| fail(step, e))
            }
            Action::Netem { ifindex, netem, .. } => {
                crate::netem::send_replace_root(self.handle(&step.netns)?, *ifindex, netem)
                    .await
                    .map_err(|e| KernelError::new(step.to_string(), e))
            }
            Action::QdiscDelete { ifindex, .. } => {
                let h = self.handle(&step.netns)?.clone();
                let mut req = h.qdisc().del(*ifindex as i32);
                req.message_mut().header.parent = netlink_packet_route::tc::TcHandle::ROOT;
                req.execute().await.map_err(|e| fail(step, e))
            }
            Action::LinkDown { ifindex, .. } => {
                let msg = LinkUnspec::new_with_index(*ifindex).down().build();
                self.link_set(step, msg).await
            }
            Action::SetMtu { ifindex, mtu, .. } => {
                let msg = LinkUnspec::new_with_index(*ifindex).mtu(*mtu).build();
                self.link_set(step, msg).await
            }
            Action::Sysctl { key, value } => {
                let fd = self
                    .fds
                    .get(&step.netns)
                    .ok_or_else(|| KernelError::new(step.to_string(), "namespace missing"))?;
                // Entering a namespace is for a thread of our own, never a
                // runtime thread.
                let fd = fd
                    .try_clone()
                    .map_err(|e| KernelError::new(step.to_string(), e))?;
                let (key, value) = (key.clone(), value.clone());
                tokio::task::spawn_blocking(move || sys::write_sysctl_in(fd, &key, &value))
                    .await
                    .map_err(|e| KernelError::new(step.to_string(), e))?
                    .map_err(|e| KernelError::new(step.to_string(), e))
            }
        }
    }

    async fn sysctl(&self, netns: &str, key: &str) -> Result<String, KernelError> {
        let what = format!("ip netns exec {netns} sysctl -n {key}");
        let fd = self
            .fds
            .get(netns)
            .ok_or_else(|| KernelError::new(what.clone(), "namespace missing"))?
            .try_clone()
            .map_err(|e| KernelError::new(what.clone(), e))?;
        let key = key.to_string();
        tokio::task::spawn_blocking(move || sys::read_sysctl_in(fd, &key))
            .await
            .map_err(|e| KernelError::new(what.clone(), e))?
            .map_err(|e| KernelError::new(what, e))
    }

    async fn link_settings(&self, netns: &str, ifindex: u32) -> Result<LinkSettings, KernelError> {
        use netlink_packet_route::link::LinkFlags;
        let what = || format!("ip -n {netns} link show index {ifindex}");
        let link = self
            .handle(netns)?
            .link()
            .get()
            .match_index(ifindex)
            .execute()
            .try_next()
            .await
            .map_err(|e| KernelError::new(what(), netlink_message(e)))?
            .ok_or_else(|| KernelError::new(what(), "no such interface"))?;
        let mtu = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
            .ok_or_else(|| KernelError::new(what(), "the kernel gave no MTU"))?;
        let mac = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(m) => <[u8; 6]>::try_from(m.as_slice()).ok(),
            _ => None,
        });
        Ok(LinkSettings {
            mtu,
            up: link.header.flags.contains(LinkFlags::Up),
            mac,
        })
    }
}

/// The kernel's answer in words (`File exists (os error 17)`), not the
/// netlink message dump rtnetlink's Display gives.
fn netlink_message(e: rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(msg) => match msg.code {
            Some(code) => std::io::Error::from_raw_os_error(-code.get()).to_string(),
            None => "unexpected acknowledgement".to_string(),
        },
        other => other.to_string(),
    }
}

/// Records what would have been done, in order: plans and executors are
/// tested with it without root.
#[derive(Default)]
pub struct Recorder {
    pub log: RefCell<Vec<String>>,
    /// Every step sent, with its payload (the addresses, tables, pins and
    /// map entries the real kernel would get), in the order sent.
    pub sent: RefCell<Vec<Step>>,
    /// Make the step whose iproute2 text contains this fail.
    pub fail_on: Option<String>,
}

impl Kernel for Recorder {
    fn create_namespaces(&mut self, specs: &[NsSpec]) -> Result<(), Vec<KernelError>> {
        let mut log = self.log.borrow_mut();
        log.extend(specs.iter().map(|s| format!("ip netns add {}", s.name)));
        Ok(())
    }

    async fn run(&self, step: &Step) -> Result<(), KernelError> {
        let text = step.to_string();
        if self
            .fail_on
            .as_ref()
            .is_some_and(|f| text.contains(f.as_str()))
        {
            return Err(KernelError::new(text, "File exists (os error 17)"));
        }
        self.log.borrow_mut().push(text);
        self.sent.borrow_mut().push(step.clone());
        Ok(())
    }

    /// Every sysctl reads `0`.
    async fn sysctl(&self, netns: &str, key: &str) -> Result<String, KernelError> {
        self.log
            .borrow_mut()
            .push(format!("ip netns exec {netns} sysctl -n {key}"));
        Ok("0".into())
    }

    /// What `up` leaves on every link: MTU 1500, up.
    async fn link_settings(&self, netns: &str, ifindex: u32) -> Result<LinkSettings, KernelError> {
        self.log
            .borrow_mut()
            .push(format!("ip -n {netns} link show index {ifindex}"));
        Ok(LinkSettings {
            mtu: 1500,
            up: true,
            mac: Some([0x02, 0, 0, 0, 0, ifindex as u8]),
        })
    }
}
