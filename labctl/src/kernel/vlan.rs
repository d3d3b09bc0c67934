//! 802.1Q VLAN sub-interfaces: the payload of [`Action::AddVlan`], its
//! iproute2 text and its netlink call (`ip link add link PARENT name NAME
//! type vlan id ID`, rtnetlink's `LinkVlan`).
//!
//! [`Action::AddVlan`]: crate::plan::Action::AddVlan

use std::fmt;

use labctl_topology::format_mac;
use rtnetlink::LinkVlan;
use serde::Serialize;

use super::{KernelError, Netlink};
use crate::plan::{IfRef, Step, shell_quote as q};

/// `ip link add link PARENT name NAME index N [address MAC] type vlan id
/// ID && ip link set NAME up`: tagged frames of `parent` with this id are
/// this device's, and what it sends leaves `parent` with the tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddVlan {
    pub name: String,
    pub ifindex: u32,
    /// A device of the same namespace.
    pub parent: IfRef,
    pub id: u16,
    pub mac: Option<[u8; 6]>,
}

impl AddVlan {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = q(&self.name);
        write!(
            f,
            "ip -n {ns} link add link {} name {name} index {}",
            q(&self.parent.name),
            self.ifindex
        )?;
        if let Some(mac) = &self.mac {
            write!(f, " address {}", format_mac(mac))?;
        }
        write!(
            f,
            " type vlan id {} && ip -n {ns} link set {name} up",
            self.id
        )
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let mut b = LinkVlan::new(&self.name, self.parent.ifindex, self.id)
            .index(self.ifindex)
            .up();
        if let Some(mac) = &self.mac {
            b = b.address(mac.to_vec());
        }
        nl.link_add(step, b.build()).await
    }
}
