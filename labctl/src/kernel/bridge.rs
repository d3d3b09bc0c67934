//! Bridges, VLAN-filtering bridges and bridge-port options: the payloads
//! of [`Action::AddBridge`], [`Action::AddVlanBridge`], [`Action::SetPort`]
//! and [`Action::BridgeVlan`], their iproute2 text and their netlink calls.
//!
//! Port options travel in `RTM_NEWLINK` with the port's
//! `IFLA_INFO_SLAVE_DATA` (rtnetlink's `set_port`): the kernel's
//! `RTM_SETLINK` ignores `IFLA_LINKINFO` and says nothing. A VLAN is added
//! with `RTM_SETLINK` in family `AF_BRIDGE` carrying
//! `IFLA_AF_SPEC`/`IFLA_BRIDGE_VLAN_INFO`, as `bridge vlan add` does.
//!
//! [`Action::AddBridge`]: crate::kernel::step::Action::AddBridge
//! [`Action::AddVlanBridge`]: crate::kernel::step::Action::AddVlanBridge
//! [`Action::SetPort`]: crate::kernel::step::Action::SetPort
//! [`Action::BridgeVlan`]: crate::kernel::step::Action::BridgeVlan

use std::fmt;

use labctl_topology::{BridgeVlan, format_mac};
use netlink_packet_route::link::BridgeVlanInfoFlags;
use rtnetlink::{LinkBridge, LinkBridgePort, LinkBridgeVlan};
use serde::Serialize;

use super::step::{Step, shell_quote as q};
use super::{KernelError, Made, Netlink, fail, write_addrgen_none};

/// `ip link add NAME index N type bridge && ip link set NAME addrgenmode
/// none && ip link set NAME up`, with
/// multicast snooping off: with it on, each bridge joins 224.0.0.106
/// (multicast router discovery) and sends IGMP reports for a second or
/// two after it comes up, which land in the captures of the first
/// scenarios. Nothing in the articles uses multicast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddBridge {
    pub name: String,
    pub ifindex: u32,
    pub mac: Option<[u8; 6]>,
}

impl AddBridge {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = q(&self.name);
        write!(f, "ip -n {ns} link add {name} index {}", self.ifindex)?;
        if let Some(mac) = &self.mac {
            write!(f, " address {}", format_mac(mac))?;
        }
        write!(f, " type bridge mcast_snooping 0")?;
        write_addrgen_none(f, ns, &self.made())?;
        write!(f, " && ip -n {ns} link set {name} up")
    }

    /// The link it makes.
    fn made(&self) -> [Made<'_>; 1] {
        [Made::here(self.ifindex, &self.name)]
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let mut b = LinkBridge::new(&self.name)
            .index(self.ifindex)
            .mcast_snooping(false)
            .up();
        if let Some(mac) = &self.mac {
            b = b.address(mac.to_vec());
        }
        nl.link_add(step, b.build(), &self.made()).await
    }
}

/// `ip link add NAME index N [address MAC] type bridge mcast_snooping 0
/// vlan_filtering 1 [vlan_default_pvid P] && ip link set NAME addrgenmode
/// none && ip link set NAME up`: a
/// bridge that forwards by VLAN, its options set as it is made so no port
/// joins it before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddVlanBridge {
    pub name: String,
    pub ifindex: u32,
    pub mac: Option<[u8; 6]>,
    /// The pvid a new port gets; `None`: the kernel's (1).
    pub default_pvid: Option<u16>,
}

impl AddVlanBridge {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = q(&self.name);
        write!(f, "ip -n {ns} link add {name} index {}", self.ifindex)?;
        if let Some(mac) = &self.mac {
            write!(f, " address {}", format_mac(mac))?;
        }
        write!(f, " type bridge mcast_snooping 0 vlan_filtering 1")?;
        if let Some(p) = self.default_pvid {
            write!(f, " vlan_default_pvid {p}")?;
        }
        write_addrgen_none(f, ns, &self.made())?;
        write!(f, " && ip -n {ns} link set {name} up")
    }

    /// The link it makes.
    fn made(&self) -> [Made<'_>; 1] {
        [Made::here(self.ifindex, &self.name)]
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let mut b = LinkBridge::new(&self.name)
            .index(self.ifindex)
            .mcast_snooping(false)
            .vlan_filtering(true)
            .up();
        if let Some(p) = self.default_pvid {
            b = b.vlan_default_pvid(p);
        }
        if let Some(mac) = &self.mac {
            b = b.address(mac.to_vec());
        }
        nl.link_add(step, b.build(), &self.made()).await
    }
}

/// `ip link set IF type bridge_slave [learning on|off] [neigh_suppress
/// on|off] [isolated on|off]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetPort {
    pub ifname: String,
    pub ifindex: u32,
    pub learning: Option<bool>,
    pub neigh_suppress: Option<bool>,
    pub isolated: Option<bool>,
    /// `hairpin`: frames may leave by the port they came in by (the CNI
    /// bridge plugin's `hairpinMode`).
    pub hairpin: Option<bool>,
}

impl SetPort {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        write!(
            f,
            "ip -n {ns} link set {} type bridge_slave",
            q(&self.ifname)
        )?;
        for (word, value) in [
            ("learning", self.learning),
            ("neigh_suppress", self.neigh_suppress),
            ("isolated", self.isolated),
            ("hairpin", self.hairpin),
        ] {
            if let Some(v) = value {
                write!(f, " {word} {}", on(v))?;
            }
        }
        Ok(())
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let mut b = LinkBridgePort::new(self.ifindex);
        if let Some(v) = self.learning {
            b = b.learning(v);
        }
        if let Some(v) = self.neigh_suppress {
            b = b.neigh_suppress(v);
        }
        if let Some(v) = self.isolated {
            b = b.isolated(v);
        }
        if let Some(v) = self.hairpin {
            b = b.hairpin(v);
        }
        nl.handle(&step.netns)?
            .link()
            .set_port(b.build())
            .execute()
            .await
            .map_err(|e| fail(step, e))
    }
}

/// `bridge vlan add vid ID dev IF [pvid] [untagged] [self]`: a VLAN of a
/// port, or of the bridge device itself (`self`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddBridgeVlan {
    pub ifname: String,
    pub ifindex: u32,
    pub vlan: BridgeVlan,
    /// The bridge's own VLAN, not a port's.
    pub bridge_self: bool,
}

impl AddBridgeVlan {
    /// The command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bridge -n {ns} vlan add vid {} dev {}",
            self.vlan.id,
            q(&self.ifname)
        )?;
        if self.vlan.pvid {
            write!(f, " pvid")?;
        }
        if self.vlan.untagged {
            write!(f, " untagged")?;
        }
        if self.bridge_self {
            write!(f, " self")?;
        }
        Ok(())
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let mut flags = BridgeVlanInfoFlags::empty();
        if self.vlan.pvid {
            flags |= BridgeVlanInfoFlags::Pvid;
        }
        if self.vlan.untagged {
            flags |= BridgeVlanInfoFlags::Untagged;
        }
        let mut b = LinkBridgeVlan::new(self.ifindex);
        if self.bridge_self {
            b = b.bridge_self();
        }
        let msg = b.vlan(self.vlan.id, flags).build();
        nl.link_set(step, msg).await
    }
}
