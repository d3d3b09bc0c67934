//! The one interface through which `up` touches the kernel, with the real
//! implementation (rtnetlink sockets opened inside each lab namespace) and a
//! recording fake for tests without root.
//!
//! Nothing here opens a socket in, or changes, the host's own namespace: the
//! only sockets are those [`crate::sys::create_netns`] opens inside the
//! namespaces it has just made.
//!
//! Each object kind keeps its payload, its iproute2 text and its netlink
//! call together in a file of its own (veth, dummy, bridge, vxlan, vlan,
//! bond, macvlan (and ipvlan), link (a link's settings: up, down, MTU, MAC,
//! master, name, ARP, port isolation, delete), addr, route, neigh, fdb,
//! tc, qdisc (netem), sysctl, [`ebpf`] (load and pin, cls_bpf filters,
//! map contents), [`ipvs`] (a namespace's IPVS table), [`nft`] (a ruleset
//! applied inside a namespace)); this file keeps the [`Kernel`] trait, the
//! netlink executor's dispatch and the recording fake, and `objects` the
//! sender of requests built by hand. The eBPF pins live on
//! labctl's bpffs, not in a namespace; every other write is inside the
//! lab's namespaces.
//!
//! IPv6 stays off the lab's links (the articles have none: no link-local
//! addresses, router solicitations or MLD reports in captures) by the
//! address generation mode of each link made, `none`, and `::1` taken off
//! each `lo`, not by `net.ipv6.conf.{all,default}.disable_ipv6` written
//! through /proc/sys in every namespace. Measured on the 2-core build
//! machine (kernel 6.18, one thread: unshare, write, next), that write's
//! cost grows with the namespaces alive, since every namespace adds a
//! `/proc/sys/net` dentry to the same hash chain and each lookup compares
//! against all of them under the global sysctl lock (`proc_sys_compare`):
//! `all` and `default` 41 us per namespace with 500 alive, 243 us at
//! 2,500, 556 us at 5,000, so O(n^2) per lab; `default` alone 512 us and
//! `all` alone (which sets `default` too, and retries while `rtnl` is
//! busy) 759 us at 5,000, no better. `IFLA_INET6_ADDR_GEN_MODE` inside the
//! `RTM_NEWLINK` that makes a link is refused on 6.18 (`EAFNOSUPPORT`, as
//! `ip link add ... addrgenmode none` is), so an `RTM_SETLINK` follows each
//! create: too cheap to show in a profile of 1,000 pods (its
//! `inet6_set_link_af` under 0.05 % of samples). The plan's script (`labctl
//! plan -o script`) does the same in iproute2 words: each link-making
//! kind's text has `ip -n NS link set NAME addrgenmode none` for every
//! link it makes (from the same `made()` list its netlink call uses)
//! before the link comes up, and `lo`'s has `ip -6 addr flush dev lo`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::OwnedFd;

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec};

use crate::sys;
use step::{Action, NsSpec, Step};

pub mod addr;
pub mod bond;
pub mod bridge;
pub mod conntrack;
pub mod dummy;
pub mod ebpf;
pub mod fdb;
pub mod ipvs;
pub mod link;
pub mod macvlan;
pub mod neigh;
pub mod nft;
mod objects;
pub mod qdisc;
pub mod route;
pub mod step;
pub mod sysctl;
pub mod tc;
pub mod timewait;
pub mod veth;
pub mod vlan;
pub mod vxlan;

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
    /// A netlink socket's handle per namespace: the one descriptor held
    /// per namespace. A namespace's own handle (for a veth peer or a link
    /// moved into it) is opened by name when needed and closed after.
    handles: HashMap<String, Handle>,
    /// Threads used to create namespaces ([`sys::workers`] unless set).
    pub threads: usize,
    /// The lab's ownership mark, put on every namespace it creates
    /// ([`crate::owner`]).
    mark: String,
}

impl Netlink {
    /// A kernel that marks every namespace it creates with `mark`.
    pub fn new(mark: String) -> Self {
        Netlink {
            threads: sys::workers(),
            mark,
            ..Default::default()
        }
    }

    fn handle(&self, netns: &str) -> Result<&Handle, KernelError> {
        self.handles
            .get(netns)
            .ok_or_else(|| KernelError::new(netns, "namespace was not created by this run"))
    }

    /// A handle on one of this run's namespaces (`/run/netns/NAME`), for a
    /// link made into it or a thread to enter it. Kept only while the
    /// request that names it runs: holding one per namespace as well as
    /// its socket would need two descriptors per namespace, and 10,000
    /// pods would not fit under a 20,000 open-file limit.
    fn netns_fd(&self, step: &Step, netns: &str) -> Result<OwnedFd, KernelError> {
        self.handle(netns)
            .map_err(|e| KernelError::new(step.to_string(), e.message))?;
        sys::open_netns(netns)
            .map_err(|e| KernelError::new(step.to_string(), format!("open netns {netns}: {e}")))
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
            let socket = sys::netlink_socket_in(name).map_err(|e| KernelError::new(what(), e))?;
            let (conn, handle, _) = rtnetlink::from_socket(sys::tokio_socket(socket));
            tokio::spawn(conn);
            self.handles.insert(name.clone(), handle);
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

    /// `RTM_NEWLINK` in the step's namespace, then IPv6 address generation
    /// off on every link it makes (`made`: the link, and a veth's peer)
    /// before any of them can carry a frame; see [`Netlink::addrgen_none`].
    /// A link asked to be up is made down and brought up after, since the
    /// kernel gives a link that comes up with a carrier its link-local
    /// address at once (a bridge without ports has one). A veth pair keeps
    /// its `up`: its peer is made down, and a veth has no carrier until
    /// both ends are up (`veth_open`), which a later step does.
    async fn link_add(
        &self,
        step: &Step,
        mut msg: LinkMessage,
        made: &[Made<'_>],
    ) -> Result<(), KernelError> {
        use netlink_packet_route::link::{LinkFlags, LinkInfo};
        let veth = msg.attributes.iter().any(|a| {
            matches!(a, LinkAttribute::LinkInfo(infos)
                if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))))
        });
        let up = !veth && msg.header.flags.contains(LinkFlags::Up);
        if up {
            msg.header.flags.remove(LinkFlags::Up);
            msg.header.change_mask.remove(LinkFlags::Up);
        }
        let h = self.handle(&step.netns)?;
        h.link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| fail(step, e))?;
        futures::future::try_join_all(made.iter().map(|m| self.addrgen_none(step, m))).await?;
        match made.first() {
            Some(link) if up => self.link_set(step, link.builder().up().build()).await,
            _ => Ok(()),
        }
    }

    /// Take `::1` off `lo` again, like `ip -6 addr del ::1/128 dev lo`: the
    /// kernel puts it on every loopback that comes up, whatever its address
    /// generation mode, and the lab's namespaces have no IPv6 address. A
    /// kernel without IPv6, or a loopback without the address, is fine.
    async fn loopback_v6_off(&self, step: &Step) -> Result<(), KernelError> {
        use netlink_packet_route::AddressFamily;
        use netlink_packet_route::address::{AddressAttribute, AddressMessage};
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.prefix_len = 128;
        msg.header.index = 1;
        msg.attributes.push(AddressAttribute::Address(
            std::net::Ipv6Addr::LOCALHOST.into(),
        ));
        match self.handle(&step.netns)?.address().del(msg).execute().await {
            Err(e)
                if matches!(
                    errno(&e),
                    Some(nix::libc::EADDRNOTAVAIL | nix::libc::EAFNOSUPPORT)
                ) =>
            {
                Ok(())
            }
            r => r.map_err(|e| {
                KernelError::new(
                    format!(
                        "ip -n {} -6 addr del ::1/128 dev lo",
                        step::shell_quote(&step.netns)
                    ),
                    netlink_message(e),
                )
            }),
        }
    }

    /// No IPv6 addresses on a link, like `ip link set NAME addrgenmode
    /// none` (`IFLA_INET6_ADDR_GEN_MODE` in `RTM_SETLINK`): the kernel
    /// then makes no link-local address, so the link sends no duplicate
    /// address detection, router solicitation or MLD report (all-nodes, the
    /// one group it still joins, is never reported). A kernel without IPv6
    /// (`EAFNOSUPPORT`) makes none either.
    async fn addrgen_none(&self, step: &Step, link: &Made<'_>) -> Result<(), KernelError> {
        use netlink_packet_route::link::{AfSpecInet6, AfSpecUnspec, In6AddrGenMode};
        let msg = link
            .builder()
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]))
            .build();
        let what = || link.addrgen_command(&step::shell_quote(&step.netns));
        match self.handle(link.netns.unwrap_or(&step.netns)) {
            Ok(h) => match h.link().set(msg).execute().await {
                Err(e) if errno(&e) == Some(nix::libc::EAFNOSUPPORT) => Ok(()),
                r => r.map_err(|e| KernelError::new(what(), netlink_message(e))),
            },
            Err(e) => Err(KernelError::new(what(), e.message)),
        }
    }

    /// `RTM_SETLINK` in the step's namespace.
    async fn link_set(&self, step: &Step, msg: LinkMessage) -> Result<(), KernelError> {
        let h = self.handle(&step.netns)?;
        h.link().set(msg).execute().await.map_err(|e| fail(step, e))
    }
}

/// A link an `RTM_NEWLINK` makes: the namespace it lives in once made,
/// its index there and its name (which finds it when the plan left the
/// index to the kernel, 0). Each kind that makes links lists them in its
/// `made()`, which both its netlink call and its iproute2 text use, so
/// the script sets the address generation mode of the links `up` sets it
/// on, where `up` does.
pub(crate) struct Made<'a> {
    /// Another namespace than the step's (a veth's peer, a link moved at
    /// once), or `None`: the step's own.
    pub netns: Option<&'a str>,
    pub ifindex: u32,
    pub name: &'a str,
}

impl<'a> Made<'a> {
    /// A link made in the step's own namespace.
    pub(crate) fn here(ifindex: u32, name: &'a str) -> Made<'a> {
        Made {
            netns: None,
            ifindex,
            name,
        }
    }

    /// What [`Netlink::addrgen_none`] does, as iproute2: `ip -n NS link set
    /// NAME addrgenmode none`, `ns` being the step's namespace, quoted.
    pub(crate) fn addrgen_command(&self, ns: &str) -> String {
        let netns = self
            .netns
            .map_or(std::borrow::Cow::Borrowed(ns), step::shell_quote);
        format!(
            "ip -n {netns} link set {} addrgenmode none",
            step::shell_quote(self.name)
        )
    }

    /// A message about this link.
    fn builder(&self) -> LinkMessageBuilder<LinkUnspec> {
        if self.ifindex != 0 {
            LinkUnspec::new_with_index(self.ifindex)
        } else {
            LinkUnspec::new_with_name(self.name)
        }
    }
}

/// ` && ip -n NS link set NAME addrgenmode none` for each link `made`
/// (see [`Made::addrgen_command`]): what a link-making kind's iproute2
/// text says between making its links and bringing them up, as
/// [`Netlink::link_add`] does.
pub(crate) fn write_addrgen_none(
    f: &mut std::fmt::Formatter<'_>,
    ns: &str,
    made: &[Made<'_>],
) -> std::fmt::Result {
    for m in made {
        write!(f, " && {}", m.addrgen_command(ns))?;
    }
    Ok(())
}

/// The errno of a kernel refusal, if that is what `e` is.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
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
                        let mut placeholders = sys::Placeholders::default();
                        part.iter()
                            .enumerate()
                            .map(|(i, ns)| {
                                if i == part.len() / 2 {
                                    crate::fault::fault_point("half-namespaces");
                                }
                                sys::create_netns(&ns.name, mark, &mut placeholders, |socket| {
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
                    self.handles.insert(ns.name, handle);
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
            Action::AddNeighbour(a) => a.apply(self, step).await,
            Action::DelNeighbour(a) => a.apply(self, step).await,
            Action::ForgetNeighbours(a) => a.apply(self, step).await,
            Action::FlushConntrack(a) => a.apply(self, step).await,
            Action::ForgetTimeWait(a) => a.apply(self, step).await,
            Action::AddFdb(a) => a.apply(self, step).await,
            Action::DelFdb(a) => a.apply(self, step).await,
            Action::Clsact(a) => a.apply(self, step).await,
            Action::TcMirred(a) => a.apply(self, step).await,
            Action::DelTcFilters(a) => a.apply(self, step).await,
            Action::DelClsact(a) => a.apply(self, step).await,
            Action::AddVlan(a) => a.apply(self, step).await,
            Action::AddBond(a) => a.apply(self, step).await,
            Action::Enslave(a) => a.apply(self, step).await,
            Action::AddOffParent(a) => a.apply(self, step).await,
            Action::AddVlanBridge(a) => a.apply(self, step).await,
            Action::SetPort(a) => a.apply(self, step).await,
            Action::BridgeVlan(a) => a.apply(self, step).await,
            Action::AddNsRoute(a) => a.apply(self, step).await,
            Action::DelNsRoute(a) => a.apply(self, step).await,
            Action::LoopbackUp(a) => a.apply(self, step).await,
            Action::AddBridge(a) => a.apply(self, step).await,
            Action::AddVeth(a) => a.apply(self, step).await,
            Action::AddDummy(a) => a.apply(self, step).await,
            Action::BpfLoad(a) => a.apply(self, step).await,
            Action::BpfAttach(a) => a.apply(self, step).await,
            Action::BpfMaps(a) => a.apply(self, step).await,
            Action::RouteLoad(a) => a.apply(self, step).await,
            Action::RouteMaps(a) => a.apply(self, step).await,
            Action::IpvsTable(a) => a.apply(self, step).await,
            Action::Nftables(a) => a.apply(self, step).await,
            Action::RenameUp(a) => a.apply(self, step).await,
            Action::IsolatePort(a) => a.apply(self, step).await,
            Action::ArpOff(a) => a.apply(self, step).await,
            Action::AddHostAddress(a) => a.apply(self, step).await,
            Action::SelfNeighbour(a) => a.apply(self, step).await,
            Action::LinkUp(a) => a.apply(self, step).await,
            Action::AddAddress(a) => a.apply(self, step).await,
            Action::AddRoute(a) => a.apply(self, step).await,
            Action::DelRoute(a) => a.apply(self, step).await,
            Action::Netem(a) => a.apply(self, step).await,
            Action::QdiscDelete(a) => a.apply(self, step).await,
            Action::LinkDown(a) => a.apply(self, step).await,
            Action::SetMtu(a) => a.apply(self, step).await,
            Action::AddVxlan(a) => a.apply(self, step).await,
            Action::SetMac(a) => a.apply(self, step).await,
            Action::SetMaster(a) => a.apply(self, step).await,
            Action::DelLink(a) => a.apply(self, step).await,
            Action::Sysctl(a) => a.apply(self, step).await,
        }
    }

    async fn sysctl(&self, netns: &str, key: &str) -> Result<String, KernelError> {
        let what = format!("ip netns exec {netns} sysctl -n {key}");
        self.handle(netns)
            .map_err(|e| KernelError::new(what.clone(), e.message))?;
        let fd = sys::open_netns(netns).map_err(|e| KernelError::new(what.clone(), e))?;
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
