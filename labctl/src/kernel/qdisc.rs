//! A link's root queue: the payloads of [`Action::Netem`] and
//! [`Action::QdiscDelete`], their iproute2 text and their netlink calls
//! (netem's request is built in [`crate::netem`]).
//!
//! [`Action::Netem`]: crate::kernel::step::Action::Netem
//! [`Action::QdiscDelete`]: crate::kernel::step::Action::QdiscDelete

use std::fmt;

use serde::Serialize;

use super::step::{Step, shell_quote as q};
use super::{KernelError, Netlink, fail};

/// `tc qdisc replace dev IF root netem ARGS`: the interface's egress
/// queue delays, drops, reorders or paces what leaves it (a scenario's
/// link change, `labctl netem`). The payload is built in
/// [`crate::netem`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Netem {
    pub ifname: String,
    pub ifindex: u32,
    pub netem: labctl_topology::Netem,
}

impl Netem {
    /// The command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tc -n {ns} qdisc replace dev {} root netem {}",
            q(&self.ifname),
            self.netem.tc_args()
        )
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        crate::netem::send_replace_root(nl.handle(&step.netns)?, self.ifindex, &self.netem)
            .await
            .map_err(|e| KernelError::new(step.to_string(), e))
    }
}

/// `tc qdisc del dev IF root`: back to the kernel's default queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QdiscDelete {
    pub ifname: String,
    pub ifindex: u32,
}

impl QdiscDelete {
    /// The command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tc -n {ns} qdisc del dev {} root", q(&self.ifname))
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let h = nl.handle(&step.netns)?.clone();
        let mut req = h.qdisc().del(self.ifindex as i32);
        req.message_mut().header.parent = netlink_packet_route::tc::TcHandle::ROOT;
        req.execute().await.map_err(|e| fail(step, e))
    }
}
