//! VXLAN devices: the payload of [`Action::AddVxlan`], its iproute2 text
//! and its netlink call (rtnetlink's `LinkVxlan`, moved at once into its
//! namespace when it has one).
//!
//! [`Action::AddVxlan`]: crate::kernel::step::Action::AddVxlan

use std::fmt;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use labctl_topology::format_mac;
use rtnetlink::LinkVxlan;
use serde::Serialize;

use super::step::{IfRef, Step, shell_quote as q};
use super::{KernelError, Made, Netlink, write_addrgen_none};

/// `ip link add NAME [netns NS] index N type vxlan id VNI ...`, sent
/// from the underlay's namespace, whose UDP socket the device keeps
/// wherever it lives. Moved at once into `netns` when given (under a
/// temporary name, renamed there by [`Action::RenameUp`]), else up here.
///
/// [`Action::RenameUp`]: crate::kernel::step::Action::RenameUp
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddVxlan {
    pub name: String,
    pub ifindex: u32,
    pub netns: Option<String>,
    pub mac: Option<[u8; 6]>,
    pub id: u32,
    /// A device of the underlay namespace to send through.
    pub dev: Option<IfRef>,
    pub local: Option<Ipv4Addr>,
    pub remote: Option<Ipv4Addr>,
    pub port: u16,
    pub learning: bool,
    /// Collect metadata (`external`): no VNI of its own, `id` is 0.
    pub external: bool,
}

impl AddVxlan {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = q(&self.name);
        write!(f, "ip -n {ns} link add {name}")?;
        if let Some(target) = &self.netns {
            write!(f, " netns {}", q(target))?;
        }
        write!(f, " index {}", self.ifindex)?;
        if let Some(mac) = &self.mac {
            write!(f, " address {}", format_mac(mac))?;
        }
        if self.external {
            write!(f, " type vxlan external")?;
        } else {
            write!(f, " type vxlan id {}", self.id)?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {}", q(&dev.name))?;
        }
        if let Some(local) = self.local {
            write!(f, " local {local}")?;
        }
        if let Some(remote) = self.remote {
            write!(f, " remote {remote}")?;
        }
        write!(f, " dstport {}", self.port)?;
        if !self.learning {
            write!(f, " nolearning")?;
        }
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
        let mut b = LinkVxlan::new(&self.name, self.id)
            .index(self.ifindex)
            .port(self.port)
            .learning(self.learning);
        if self.external {
            // IFLA_VXLAN_COLLECT_METADATA; the id sent is 0, which
            // the kernel ignores for such a device.
            b = b.collect_metadata(true);
        }
        if let Some(dev) = &self.dev {
            b = b.dev(dev.ifindex);
        }
        if let Some(local) = self.local {
            b = b.local(local);
        }
        if let Some(remote) = self.remote {
            b = b.remote(remote);
        }
        if let Some(mac) = &self.mac {
            b = b.address(mac.to_vec());
        }
        // Open until the kernel has the request: the number goes
        // in it.
        let target_fd = match &self.netns {
            Some(target) => Some(nl.netns_fd(step, target)?),
            None => None,
        };
        b = match &target_fd {
            Some(fd) => b.setns_by_fd(fd.as_raw_fd()),
            None => b.up(),
        };
        let done = nl.link_add(step, b.build(), &self.made()).await;
        drop(target_fd);
        done
    }
}
