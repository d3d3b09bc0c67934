//! Forwarding database entries: the payloads of [`Action::AddFdb`] and
//! [`Action::DelFdb`], their iproute2 text and their netlink calls
//! (`RTM_NEWNEIGH`, `RTM_DELNEIGH` in the bridge family).
//!
//! [`Action::AddFdb`]: crate::kernel::step::Action::AddFdb
//! [`Action::DelFdb`]: crate::kernel::step::Action::DelFdb

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use labctl_topology::format_mac;
use netlink_packet_route::neighbour::{NeighbourFlags, NeighbourState};
use serde::Serialize;

use super::step::{Step, shell_quote as q};
use super::{KernelError, Netlink, fail};

/// `bridge fdb replace MAC dev IF [dst VTEP] master|self`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddFdb {
    pub ifname: String,
    pub ifindex: u32,
    pub lladdr: [u8; 6],
    pub dst: Option<Ipv4Addr>,
    /// The bridge's table, else the device's own.
    pub master: bool,
}

impl AddFdb {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bridge -n {ns} fdb replace {} dev {}",
            format_mac(&self.lladdr),
            q(&self.ifname)
        )?;
        if let Some(dst) = self.dst {
            write!(f, " dst {dst}")?;
        }
        write!(f, " {}", if self.master { "master static" } else { "self" })
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        match nl.handle(&step.netns) {
            Ok(h) => {
                // A port's entry is `static` (NUD_NOARP): `permanent`
                // in a bridge's table means the bridge's own address.
                let (flags, state) = if self.master {
                    (NeighbourFlags::Controller, NeighbourState::Noarp)
                } else {
                    (NeighbourFlags::Own, NeighbourState::Permanent)
                };
                let mut req = h
                    .neighbours()
                    .add_bridge(self.ifindex, &self.lladdr)
                    .flags(flags)
                    .state(state)
                    .replace();
                if let Some(dst) = self.dst {
                    req = req.destination(IpAddr::V4(dst));
                }
                req.execute().await.map_err(|e| fail(step, e))
            }
            Err(e) => Err(e),
        }
    }
}

/// `bridge fdb del MAC dev IF [dst VTEP] master|self` (a scenario's
/// change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DelFdb {
    pub ifname: String,
    pub ifindex: u32,
    pub lladdr: [u8; 6],
    pub dst: Option<Ipv4Addr>,
    pub master: bool,
}

impl DelFdb {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bridge -n {ns} fdb del {} dev {}",
            format_mac(&self.lladdr),
            q(&self.ifname)
        )?;
        if let Some(dst) = self.dst {
            write!(f, " dst {dst}")?;
        }
        write!(f, " {}", if self.master { "master" } else { "self" })
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        use netlink_packet_route::neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourMessage,
        };
        let mut msg = NeighbourMessage::default();
        msg.header.family = netlink_packet_route::AddressFamily::Bridge;
        msg.header.ifindex = self.ifindex;
        msg.header.flags = if self.master {
            NeighbourFlags::Controller
        } else {
            NeighbourFlags::Own
        };
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(self.lladdr.to_vec()));
        if let Some(dst) = self.dst {
            msg.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        }
        match nl.handle(&step.netns) {
            Ok(h) => h
                .neighbours()
                .del(msg)
                .execute()
                .await
                .map_err(|e| fail(step, e)),
            Err(e) => Err(e),
        }
    }
}
