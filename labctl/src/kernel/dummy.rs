//! Dummy devices: the payload of [`Action::AddDummy`], its iproute2 text
//! and its netlink call (rtnetlink's `LinkDummy`).
//!
//! [`Action::AddDummy`]: crate::kernel::step::Action::AddDummy

use std::fmt;

use rtnetlink::LinkDummy;
use serde::Serialize;

use super::step::{Step, shell_quote as q};
use super::{KernelError, Made, Netlink, write_addrgen_none};

/// `ip link add NAME index N type dummy && ip link set NAME addrgenmode
/// none && ip link set NAME up`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddDummy {
    pub name: String,
    pub ifindex: u32,
}

impl AddDummy {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = q(&self.name);
        write!(
            f,
            "ip -n {ns} link add {name} index {} type dummy",
            self.ifindex
        )?;
        write_addrgen_none(f, ns, &self.made())?;
        write!(f, " && ip -n {ns} link set {name} up")
    }

    /// The link it makes.
    fn made(&self) -> [Made<'_>; 1] {
        [Made::here(self.ifindex, &self.name)]
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let msg = LinkDummy::new(&self.name).index(self.ifindex).up().build();
        nl.link_add(step, msg, &self.made()).await
    }
}
