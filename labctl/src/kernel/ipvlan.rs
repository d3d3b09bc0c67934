//! The pods' ipvlans: the payload of [`Action::AddIpvlan`], its iproute2
//! text and its netlink call (rtnetlink's `LinkIpVlan`, made off the
//! node's ENI and moved at once into the pod's namespace when it has one).
//! The low-level layer's ipvlans and macvlans are [`super::macvlan`]'s.
//!
//! [`Action::AddIpvlan`]: crate::kernel::step::Action::AddIpvlan

use std::fmt;
use std::os::fd::AsRawFd;

use netlink_packet_route::link::IpVlanMode;
use rtnetlink::LinkIpVlan;
use serde::Serialize;

use super::step::{IfRef, Step, shell_quote as q};
use super::{KernelError, Made, Netlink, write_addrgen_none};

/// `ip link add link PARENT name NAME [netns NS] index N type ipvlan mode
/// l2 && ip link set NAME addrgenmode none [&& ip link set NAME up]`:
/// created here off `parent`, living in `netns` when given (a pod, whose
/// addrgenmode is set there), up at once when it stays here (the node's
/// own slave).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddIpvlan {
    pub name: String,
    pub ifindex: u32,
    pub parent: IfRef,
    pub netns: Option<String>,
}

impl AddIpvlan {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, parent, ifindex) = (q(&self.name), q(&self.parent.name), self.ifindex);
        write!(f, "ip -n {ns} link add link {parent} name {name}")?;
        if let Some(target) = &self.netns {
            write!(f, " netns {}", q(target))?;
        }
        write!(f, " index {ifindex} type ipvlan mode l2")?;
        write_addrgen_none(f, ns, &self.made())?;
        if self.netns.is_none() {
            write!(f, " && ip -n {ns} link set {name} up")?;
        }
        Ok(())
    }

    /// The link it makes, in the namespace it is moved to if any.
    fn made(&self) -> [Made<'_>; 1] {
        [Made {
            netns: self.netns.as_deref(),
            ifindex: self.ifindex,
            name: &self.name,
        }]
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let mut b =
            LinkIpVlan::new(&self.name, self.parent.ifindex, IpVlanMode::L2).index(self.ifindex);
        // Open until the kernel has the request.
        let mut target_fd = None;
        b = match &self.netns {
            // Made here, off the node's ENI, living in the pod.
            Some(target) => {
                target_fd = Some(nl.netns_fd(step, target)?);
                b.setns_by_fd(target_fd.as_ref().map_or(-1, |fd| fd.as_raw_fd()))
            }
            None => b.up(),
        };
        let done = nl.link_add(step, b.build(), &self.made()).await;
        drop(target_fd);
        done
    }
}
