//! Addresses: the payloads of [`Action::AddAddress`] and
//! [`Action::AddHostAddress`], their iproute2 text and their netlink calls
//! (`RTM_NEWADDR`).
//!
//! [`Action::AddAddress`]: crate::kernel::step::Action::AddAddress
//! [`Action::AddHostAddress`]: crate::kernel::step::Action::AddHostAddress

use std::fmt;
use std::net::IpAddr;

use ipnet::Ipv4Net;
use netlink_packet_route::address::AddressScope;
use serde::Serialize;

use super::step::{Step, shell_quote as q};
use super::{KernelError, Netlink, fail};

/// `ip addr add ADDR dev IF`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddAddress {
    pub ifname: String,
    pub ifindex: u32,
    pub address: Ipv4Net,
}

impl AddAddress {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let address = &self.address;
        // As `up` sends it: with the broadcast address below /31.
        let brd = if address.prefix_len() < 31 {
            " brd +"
        } else {
            ""
        };
        write!(
            f,
            "ip -n {ns} addr add {address}{brd} dev {}",
            q(&self.ifname)
        )
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        nl.handle(&step.netns)?
            .address()
            .add(
                self.ifindex,
                IpAddr::V4(self.address.addr()),
                self.address.prefix_len(),
            )
            .execute()
            .await
            .map_err(|e| fail(step, e))
    }
}

/// `ip addr add ADDR dev IF scope host`: as the node's own address on
/// its ipvlan slave (Terway's `ipvl_N`). Scope host, so the kernel never
/// picks it as the source towards a pod (it takes the node's address
/// from `eth0`), yet a frame for it reaches the node through the slave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddHostAddress {
    pub ifname: String,
    pub ifindex: u32,
    pub address: Ipv4Net,
}

impl AddHostAddress {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ip -n {ns} addr add {} dev {} scope host",
            self.address,
            q(&self.ifname)
        )
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let mut req = nl.handle(&step.netns)?.address().add(
            self.ifindex,
            IpAddr::V4(self.address.addr()),
            self.address.prefix_len(),
        );
        req.message_mut().header.scope = AddressScope::Host;
        req.execute().await.map_err(|e| fail(step, e))
    }
}
