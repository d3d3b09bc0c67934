//! Neighbour entries: the payloads of [`Action::AddNeighbour`],
//! [`Action::SelfNeighbour`], [`Action::DelNeighbour`] and
//! [`Action::ForgetNeighbours`], their iproute2 text and their netlink
//! calls (`RTM_NEWNEIGH`, `RTM_DELNEIGH`, an `RTM_GETNEIGH` dump).
//!
//! [`Action::AddNeighbour`]: crate::kernel::step::Action::AddNeighbour
//! [`Action::SelfNeighbour`]: crate::kernel::step::Action::SelfNeighbour
//! [`Action::DelNeighbour`]: crate::kernel::step::Action::DelNeighbour
//! [`Action::ForgetNeighbours`]: crate::kernel::step::Action::ForgetNeighbours

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use labctl_topology::format_mac;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::neighbour::NeighbourState;
use serde::Serialize;

use super::step::{Step, shell_quote as q};
use super::{KernelError, Netlink, fail};

/// `ip neigh replace ADDR lladdr MAC dev IF nud STATE`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddNeighbour {
    pub ifname: String,
    pub ifindex: u32,
    pub address: Ipv4Addr,
    pub lladdr: [u8; 6],
    pub state: labctl_topology::NeighState,
}

impl AddNeighbour {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ip -n {ns} neigh replace {} lladdr {} dev {} nud {}",
            self.address,
            format_mac(&self.lladdr),
            q(&self.ifname),
            self.state.as_str()
        )
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let state = match self.state {
            labctl_topology::NeighState::Permanent => NeighbourState::Permanent,
            labctl_topology::NeighState::Noarp => NeighbourState::Noarp,
            labctl_topology::NeighState::Reachable => NeighbourState::Reachable,
        };
        match nl.handle(&step.netns) {
            Ok(h) => h
                .neighbours()
                .add(self.ifindex, IpAddr::V4(self.address))
                .link_layer_address(&self.lladdr)
                .state(state)
                .replace()
                .execute()
                .await
                .map_err(|e| fail(step, e)),
            Err(e) => Err(e),
        }
    }
}

/// `ip neigh replace ADDR dev IF lladdr <IF's own MAC> nud permanent`:
/// a pod on an ipvlan reaches its node's address with its own MAC,
/// which ipvlan switches to the node's slave by IP address (Terway's
/// pod-side neighbour entry; no ARP leaves the pod for it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelfNeighbour {
    pub ifname: String,
    pub ifindex: u32,
    pub address: Ipv4Addr,
}

impl SelfNeighbour {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The substitution's own words are quoted inside it (a new
        // quoting context), and its output (the MAC) is kept one
        // word by the double quotes around it.
        let path = format!("/sys/class/net/{}/address", self.ifname);
        write!(
            f,
            "ip -n {ns} neigh replace {} dev {} lladdr \"$(ip netns exec {ns} cat {})\" nud permanent",
            self.address,
            q(&self.ifname),
            q(&path)
        )
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let h = nl.handle(&step.netns)?;
        let link = h
            .link()
            .get()
            .match_index(self.ifindex)
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
            .ok_or_else(|| KernelError::new(step.to_string(), "the link has no MAC address"))?;
        h.neighbours()
            .add(self.ifindex, IpAddr::V4(self.address))
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| fail(step, e))
    }
}

/// `ip neigh del ADDR dev IF` (a scenario's change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DelNeighbour {
    pub ifname: String,
    pub ifindex: u32,
    pub address: Ipv4Addr,
}

impl DelNeighbour {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ip -n {ns} neigh del {} dev {}",
            self.address,
            q(&self.ifname)
        )
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let mut msg = netlink_packet_route::neighbour::NeighbourMessage::default();
        msg.header.family = netlink_packet_route::AddressFamily::Inet;
        msg.header.ifindex = self.ifindex;
        msg.attributes.push(
            netlink_packet_route::neighbour::NeighbourAttribute::Destination(
                netlink_packet_route::neighbour::NeighbourAddress::Inet(self.address),
            ),
        );
        // No entry is what a delete asks for: a scenario that
        // clears a learned entry finds none on a fresh lab, and the
        // kernel flushes neighbours itself when a link goes down.
        match nl.handle(&step.netns) {
            Ok(h) => match h.neighbours().del(msg).execute().await {
                Err(rtnetlink::Error::NetlinkError(m))
                    if m.code.is_some_and(|c| c.get() == -nix::libc::ENOENT) =>
                {
                    Ok(())
                }
                r => r.map_err(|e| fail(step, e)),
            },
            Err(e) => Err(e),
        }
    }
}

/// Forget what a namespace has learned of its neighbours: every IPv4 entry
/// but the PERMANENT and NOARP ones (which the lab or the kernel wrote, not
/// learned) is deleted, and with the unresolved ones the packets queued on
/// them. A scenario does this in each namespace before its traffic, so it
/// starts from the neighbour table `up` left whatever ran before it: a
/// request an earlier scenario left queued cannot arrive during this one
/// (what a SYN of impair's i3 did to i4), and a path that depends on
/// whether an entry is usable (Flannel's br_netfilter bridges a de-NATed
/// reply straight to the port only with a cached entry, and otherwise
/// routes it out of cni0) is the same alone as in a run of the whole file.
///
/// The addresses in `keep` stay: entries the topology declares with a
/// state the kernel ages (`reachable`). Entries gone meanwhile (ENOENT)
/// are what was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForgetNeighbours {
    pub keep: Vec<Ipv4Addr>,
}

impl ForgetNeighbours {
    /// The iproute2 command in namespace `ns` (already quoted). Without
    /// addresses to keep it is `ip neigh flush all`, whose default states
    /// are every one but permanent and noarp (ip-neighbour(8)), NONE
    /// included, as here. `flush` cannot leave out addresses, so with some
    /// to keep the same states are listed with `show` and each entry but
    /// the kept ones deleted: `ip -4 neigh show` writes `ADDR dev DEV ...`,
    /// and a device's name has no blank in it, so `read` splits it there.
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.keep.is_empty() {
            return write!(f, "ip -n {ns} -4 neigh flush all");
        }
        // Dotted quads are digits and dots: bare words in a `case`
        // pattern, never a glob.
        let kept: Vec<String> = self.keep.iter().map(Ipv4Addr::to_string).collect();
        write!(
            f,
            "ip -n {ns} -4 neigh show nud reachable nud stale nud delay nud probe \
             nud incomplete nud failed nud none | while read -r a _ d _; do \
             case $a in {}) ;; *) ip -n {ns} neigh del \"$a\" dev \"$d\" ;; esac; done",
            kept.join("|")
        )
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        use netlink_packet_route::AddressFamily;
        use netlink_packet_route::neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourMessage,
        };
        let h = nl.handle(&step.netns)?;
        let entries: Vec<NeighbourMessage> = h
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(|e| fail(step, e))?;
        let kept = |n: &NeighbourMessage| {
            n.attributes.iter().any(|a| {
                matches!(a, NeighbourAttribute::Destination(NeighbourAddress::Inet(ip))
                    if self.keep.contains(ip))
            })
        };
        let learned = entries.into_iter().filter(|n| {
            !matches!(
                n.header.state,
                NeighbourState::Permanent | NeighbourState::Noarp
            ) && !kept(n)
        });
        for n in learned {
            match h.neighbours().del(n).execute().await {
                Err(rtnetlink::Error::NetlinkError(m))
                    if m.code.is_some_and(|c| c.get() == -nix::libc::ENOENT) => {}
                r => r.map_err(|e| fail(step, e))?,
            }
        }
        Ok(())
    }
}
