//! veth pairs: the payload of [`Action::AddVeth`], its iproute2 text and
//! its netlink call (rtnetlink's `LinkVeth`, the peer made straight into
//! its namespace).
//!
//! Both ends are made with one transmit and one receive queue, asked for
//! in the request (`numtxqueues 1 numrxqueues 1`). Without it the kernel
//! gives each end a queue per possible CPU and then, the device already
//! registered, cuts the queues in use to one (`veth_init_queues`), which
//! waits out an expedited RCU grace period holding the RTNL lock that
//! every other link change waits for: twice per pod. The queues in use are
//! one either way (the traffic is the same); what differs is only the
//! count `ip -d link` prints, which on a real node follows its CPUs anyway.
//! Measured on 1,000 pods (10 nodes, 2 cores): `up` 1.36-1.44 s before,
//! 1.25-1.37 s after, alternating runs.
//!
//! [`Action::AddVeth`]: crate::kernel::step::Action::AddVeth

use std::fmt;
use std::os::fd::AsRawFd;

use labctl_topology::format_mac;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth};
use serde::Serialize;

use super::step::{IfRef, Step, shell_quote as q};
use super::{KernelError, Made, Netlink, write_addrgen_none};

/// `ip link add NAME index N numtxqueues 1 numrxqueues 1 type veth peer
/// name PEER netns PEER_NS index P numtxqueues 1 numrxqueues 1 && ip link
/// set NAME addrgenmode none && ip -n PEER_NS link set PEER
/// addrgenmode none [&& ip link set NAME master M] && ip link set NAME
/// up`. The peer is brought up by a later
/// [`Action::LinkUp`]: the kernel refuses to open a veth end before the
/// pair is complete (`veth_open` returns ENOTCONN).
///
/// [`Action::LinkUp`]: crate::kernel::step::Action::LinkUp
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddVeth {
    pub name: String,
    pub ifindex: u32,
    pub mac: Option<[u8; 6]>,
    /// The bridge this end is enslaved to.
    pub controller: Option<IfRef>,
    pub peer_name: String,
    pub peer_netns: String,
    pub peer_ifindex: u32,
    pub peer_mac: Option<[u8; 6]>,
}

impl AddVeth {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, peer_name, peer_netns) =
            (q(&self.name), q(&self.peer_name), q(&self.peer_netns));
        write!(f, "ip -n {ns} link add {name} index {}", self.ifindex)?;
        if let Some(mac) = &self.mac {
            write!(f, " address {}", format_mac(mac))?;
        }
        write!(
            f,
            " {ONE_QUEUE} type veth peer name {peer_name} netns {peer_netns} index {}",
            self.peer_ifindex
        )?;
        if let Some(mac) = &self.peer_mac {
            write!(f, " address {}", format_mac(mac))?;
        }
        write!(f, " {ONE_QUEUE}")?;
        write_addrgen_none(f, ns, &self.made())?;
        if let Some(c) = &self.controller {
            write!(f, " && ip -n {ns} link set {name} master {}", q(&c.name))?;
        }
        write!(f, " && ip -n {ns} link set {name} up")
    }

    /// The links it makes: this end, and the peer in its namespace.
    fn made(&self) -> [Made<'_>; 2] {
        [
            Made {
                netns: None,
                ifindex: self.ifindex,
                name: &self.name,
            },
            Made {
                netns: Some(&self.peer_netns),
                ifindex: self.peer_ifindex,
                name: &self.peer_name,
            },
        ]
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        // Open until the kernel has the request: the number goes
        // in the message.
        let peer_fd = nl.netns_fd(step, &self.peer_netns)?;
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(self.peer_name.clone())
            .index(self.peer_ifindex)
            .setns_by_fd(peer_fd.as_raw_fd());
        if let Some(mac) = &self.peer_mac {
            peer = peer.address(mac.to_vec());
        }
        let mut peer = peer.build();
        peer.attributes.extend(one_queue());
        let mut b = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(self.name.clone())
            .index(self.ifindex)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)));
        if let Some(mac) = &self.mac {
            b = b.address(mac.to_vec());
        }
        if let Some(c) = &self.controller {
            b = b.controller(c.ifindex);
        }
        let mut msg = b.build();
        msg.attributes.extend(one_queue());
        let done = nl.link_add(step, msg, &self.made()).await;
        drop(peer_fd);
        done
    }
}

/// One transmit and one receive queue (see the module doc), as iproute2
/// asks for them and as attributes of a link request.
const ONE_QUEUE: &str = "numtxqueues 1 numrxqueues 1";

fn one_queue() -> [LinkAttribute; 2] {
    [LinkAttribute::NumTxQueues(1), LinkAttribute::NumRxQueues(1)]
}
