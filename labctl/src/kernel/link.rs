//! Link settings: the payloads of [`Action::LoopbackUp`],
//! [`Action::LinkUp`], [`Action::LinkDown`], [`Action::SetMtu`],
//! [`Action::ArpOff`], [`Action::IsolatePort`], [`Action::RenameUp`],
//! [`Action::SetMac`], [`Action::SetMaster`] and [`Action::DelLink`], their
//! iproute2 text and their netlink calls: each one `RTM_SETLINK` (a bridge
//! port's flag an `RTM_NEWLINK`, a delete an `RTM_DELLINK`) on the
//! namespace's rtnetlink handle.
//!
//! [`Action::LoopbackUp`]: crate::kernel::step::Action::LoopbackUp
//! [`Action::LinkUp`]: crate::kernel::step::Action::LinkUp
//! [`Action::LinkDown`]: crate::kernel::step::Action::LinkDown
//! [`Action::SetMtu`]: crate::kernel::step::Action::SetMtu
//! [`Action::ArpOff`]: crate::kernel::step::Action::ArpOff
//! [`Action::IsolatePort`]: crate::kernel::step::Action::IsolatePort
//! [`Action::RenameUp`]: crate::kernel::step::Action::RenameUp
//! [`Action::SetMac`]: crate::kernel::step::Action::SetMac
//! [`Action::SetMaster`]: crate::kernel::step::Action::SetMaster
//! [`Action::DelLink`]: crate::kernel::step::Action::DelLink

use std::fmt;

use labctl_topology::format_mac;
use rtnetlink::LinkUnspec;
use serde::Serialize;

use super::step::{IfRef, Step, shell_quote as q};
use super::{KernelError, Netlink, fail};

/// `ip link set lo up && ip -6 addr flush dev lo`: the loopback up
/// without the `::1` the kernel gives it as it comes up (the lab's
/// namespaces have no IPv6 address). `up` deletes `::1` and lets a
/// kernel without IPv6, or a loopback without the address, pass
/// (`Netlink::loopback_v6_off`); the flush does the same in the script
/// without hiding any other failure, as `del ... || true` would: it
/// deletes the IPv6 addresses it finds on `lo` (only `::1` at this
/// point) and succeeds when there are none. In a kernel without IPv6 its
/// `AF_INET6` dump should get the all-families answer, IPv4 only, which
/// `ip` filters out (untried: the machines here all have IPv6); the
/// `addrgenmode none` of the link-making steps would fail there
/// (`EAFNOSUPPORT`, which `up` lets pass).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoopbackUp;

impl LoopbackUp {
    /// The iproute2 commands in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ip -n {ns} link set lo up && ip -n {ns} -6 addr flush dev lo"
        )
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let msg = LinkUnspec::new_with_index(1).up().build();
        nl.link_set(step, msg).await?;
        nl.loopback_v6_off(step).await
    }
}

/// `ip link set IF up`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkUp {
    pub ifname: String,
    pub ifindex: u32,
}

impl LinkUp {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ip -n {ns} link set {} up", q(&self.ifname))
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let msg = LinkUnspec::new_with_index(self.ifindex).up().build();
        nl.link_set(step, msg).await
    }
}

/// `ip link set IF down`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkDown {
    pub ifname: String,
    pub ifindex: u32,
}

impl LinkDown {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ip -n {ns} link set {} down", q(&self.ifname))
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let msg = LinkUnspec::new_with_index(self.ifindex).down().build();
        nl.link_set(step, msg).await
    }
}

/// `ip link set IF mtu N`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetMtu {
    pub ifname: String,
    pub ifindex: u32,
    pub mtu: u32,
}

impl SetMtu {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ip -n {ns} link set {} mtu {}",
            q(&self.ifname),
            self.mtu
        )
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let msg = LinkUnspec::new_with_index(self.ifindex)
            .mtu(self.mtu)
            .build();
        nl.link_set(step, msg).await
    }
}

/// `ip link set IF arp off`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArpOff {
    pub ifname: String,
    pub ifindex: u32,
}

impl ArpOff {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ip -n {ns} link set {} arp off", q(&self.ifname))
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let msg = LinkUnspec::new_with_index(self.ifindex).arp(false).build();
        nl.link_set(step, msg).await
    }
}

/// `ip link set IF type bridge_slave isolated on`: the port reaches
/// only non-isolated ports (the bridge itself, i.e. the router).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IsolatePort {
    pub ifname: String,
    pub ifindex: u32,
}

impl IsolatePort {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ip -n {ns} link set {} type bridge_slave isolated on",
            q(&self.ifname)
        )
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        // Port attributes travel in RTM_NEWLINK: the kernel's
        // RTM_SETLINK ignores IFLA_LINKINFO, and says nothing.
        let msg = rtnetlink::LinkBridgePort::new(self.ifindex)
            .isolated(true)
            .build();
        nl.handle(&step.netns)?
            .link()
            .set_port(msg)
            .execute()
            .await
            .map_err(|e| fail(step, e))
    }
}

/// `ip link set FROM name IF up`: a pod's ipvlan is made under a
/// temporary name, because the kernel looks a new link's name up in the
/// namespace that asks (the node, which has an `eth0` of its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenameUp {
    pub from: String,
    pub ifname: String,
    pub ifindex: u32,
}

impl RenameUp {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ip -n {ns} link set {} name {} up",
            q(&self.from),
            q(&self.ifname)
        )
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let msg = LinkUnspec::new_with_index(self.ifindex)
            .name(self.ifname.clone())
            .up()
            .build();
        nl.link_set(step, msg).await
    }
}

/// `ip link set IF address MAC` (a scenario's change; veth and vxlan
/// take it while up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetMac {
    pub ifname: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
}

impl SetMac {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ip -n {ns} link set {} address {}",
            q(&self.ifname),
            format_mac(&self.mac)
        )
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let msg = LinkUnspec::new_with_index(self.ifindex)
            .address(self.mac.to_vec())
            .build();
        nl.link_set(step, msg).await
    }
}

/// `ip link set IF master BRIDGE`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetMaster {
    pub ifname: String,
    pub ifindex: u32,
    pub master: IfRef,
}

impl SetMaster {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ip -n {ns} link set {} master {}",
            q(&self.ifname),
            q(&self.master.name)
        )
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let msg = LinkUnspec::new_with_index(self.ifindex)
            .controller(self.master.ifindex)
            .build();
        nl.link_set(step, msg).await
    }
}

/// `ip link del IF` (a scenario's change: a pod leaving its node; the
/// veth's other end goes with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DelLink {
    pub ifname: String,
    pub ifindex: u32,
}

impl DelLink {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ip -n {ns} link del {}", q(&self.ifname))
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        match nl.handle(&step.netns) {
            Ok(h) => h
                .link()
                .del(self.ifindex)
                .execute()
                .await
                .map_err(|e| fail(step, e)),
            Err(e) => Err(e),
        }
    }
}
