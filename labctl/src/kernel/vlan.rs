//! 802.1Q VLAN sub-interfaces: the payload of [`Action::AddVlan`], its
//! iproute2 text and its netlink call (`ip link add link PARENT name NAME
//! type vlan id ID`, rtnetlink's `LinkVlan`).
//!
//! [`Action::AddVlan`]: crate::kernel::step::Action::AddVlan

use std::fmt;

use labctl_topology::format_mac;
use rtnetlink::{LinkUnspec, LinkVlan};
use serde::Serialize;

use super::step::{IfRef, Step, shell_quote as q};
use super::{KernelError, Made, Netlink, write_addrgen_none};

/// `ip link add link PARENT name NAME index N [address MAC] type vlan id
/// ID && ip link set NAME addrgenmode none && ip link set NAME up`: tagged frames of `parent` with this id are
/// this device's, and what it sends leaves `parent` with the tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddVlan {
    pub name: String,
    pub ifindex: u32,
    /// A device of the same namespace.
    pub parent: IfRef,
    pub id: u16,
    pub mac: Option<[u8; 6]>,
    /// Bring the parent up first: a veth's far end, which the plan brings
    /// up only with the addresses, after this phase; the kernel refuses
    /// to open a vlan on a lower device that is down (`ENETDOWN`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub parent_up: bool,
}

impl AddVlan {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = q(&self.name);
        if self.parent_up {
            write!(f, "ip -n {ns} link set {} up && ", q(&self.parent.name))?;
        }
        write!(
            f,
            "ip -n {ns} link add link {} name {name} index {}",
            q(&self.parent.name),
            self.ifindex
        )?;
        if let Some(mac) = &self.mac {
            write!(f, " address {}", format_mac(mac))?;
        }
        write!(f, " type vlan id {}", self.id)?;
        write_addrgen_none(f, ns, &self.made())?;
        write!(f, " && ip -n {ns} link set {name} up")
    }

    /// The link it makes.
    fn made(&self) -> [Made<'_>; 1] {
        [Made::here(self.ifindex, &self.name)]
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        if self.parent_up {
            let up = LinkUnspec::new_with_index(self.parent.ifindex).up().build();
            nl.link_set(step, up).await?;
        }
        let mut b = LinkVlan::new(&self.name, self.parent.ifindex, self.id)
            .index(self.ifindex)
            .up();
        if let Some(mac) = &self.mac {
            b = b.address(mac.to_vec());
        }
        nl.link_add(step, b.build(), &self.made()).await
    }
}
