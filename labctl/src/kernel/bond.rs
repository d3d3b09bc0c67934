//! Bonds and their slaves: the payloads of [`Action::AddBond`] and
//! [`Action::Enslave`], their iproute2 text and their netlink calls
//! (rtnetlink's `LinkBond`; a slave joins by `IFLA_MASTER` like a bridge
//! port).
//!
//! The kernel refuses to enslave a device that is up ("Device can not be
//! enslaved while up", bond_enslave), so a slave is taken down, enslaved
//! and brought up again, in that order, as one step.
//!
//! [`Action::AddBond`]: crate::kernel::step::Action::AddBond
//! [`Action::Enslave`]: crate::kernel::step::Action::Enslave

use std::fmt;

use labctl_topology::{BondMode, format_mac};
use netlink_packet_route::link::BondMode as NlBondMode;
use rtnetlink::{LinkBond, LinkUnspec};
use serde::Serialize;

use super::step::{IfRef, Step, shell_quote as q};
use super::{KernelError, Made, Netlink, write_addrgen_none};

/// `ip link add NAME index N [address MAC] type bond mode MODE [miimon
/// MS] && ip link set NAME addrgenmode none && ip link set NAME up`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddBond {
    pub name: String,
    pub ifindex: u32,
    pub mac: Option<[u8; 6]>,
    pub mode: BondMode,
    pub miimon: Option<u32>,
}

impl AddBond {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = q(&self.name);
        write!(f, "ip -n {ns} link add {name} index {}", self.ifindex)?;
        if let Some(mac) = &self.mac {
            write!(f, " address {}", format_mac(mac))?;
        }
        write!(f, " type bond mode {}", self.mode.as_str())?;
        if let Some(ms) = self.miimon {
            write!(f, " miimon {ms}")?;
        }
        write_addrgen_none(f, ns, &self.made())?;
        write!(f, " && ip -n {ns} link set {name} up")
    }

    /// The link it makes.
    fn made(&self) -> [Made<'_>; 1] {
        [Made::here(self.ifindex, &self.name)]
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let mode = match self.mode {
            BondMode::BalanceRr => NlBondMode::BalanceRr,
            BondMode::ActiveBackup => NlBondMode::ActiveBackup,
            BondMode::BalanceXor => NlBondMode::BalanceXor,
            BondMode::Broadcast => NlBondMode::Broadcast,
            BondMode::Lacp => NlBondMode::Ieee8023Ad,
            BondMode::BalanceTlb => NlBondMode::BalanceTlb,
            BondMode::BalanceAlb => NlBondMode::BalanceAlb,
        };
        let mut b = LinkBond::new(&self.name)
            .index(self.ifindex)
            .mode(mode)
            .up();
        if let Some(ms) = self.miimon {
            b = b.miimon(ms);
        }
        if let Some(mac) = &self.mac {
            b = b.address(mac.to_vec());
        }
        nl.link_add(step, b.build(), &self.made()).await
    }
}

/// `ip link set IF down && ip link set IF master BOND && ip link set IF
/// up`: the slave joins the bond while down, as the kernel requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enslave {
    pub ifname: String,
    pub ifindex: u32,
    pub bond: IfRef,
}

impl Enslave {
    /// The iproute2 commands in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ifname = q(&self.ifname);
        write!(
            f,
            "ip -n {ns} link set {ifname} down && ip -n {ns} link set {ifname} master {} && \
             ip -n {ns} link set {ifname} up",
            q(&self.bond.name)
        )
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let i = self.ifindex;
        nl.link_set(step, LinkUnspec::new_with_index(i).down().build())
            .await?;
        nl.link_set(
            step,
            LinkUnspec::new_with_index(i)
                .controller(self.bond.ifindex)
                .build(),
        )
        .await?;
        nl.link_set(step, LinkUnspec::new_with_index(i).up().build())
            .await
    }
}
