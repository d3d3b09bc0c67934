//! macvlan and the layer's ipvlan devices: the payloads of
//! [`Action::AddOffParent`], their iproute2
//! text and their netlink calls (rtnetlink's `LinkMacVlan`, `LinkIpVlan`).
//!
//! Both are made in their parent's namespace (the kernel finds the parent
//! by index there) and, when they live elsewhere, moved at once with
//! `IFLA_NET_NS_FD` under a temporary name, renamed in their namespace by
//! [`Action::RenameUp`], as the pods' ipvlans and the vxlans are.
//!
//! [`Action::AddOffParent`]: crate::kernel::step::Action::AddOffParent
//! [`Action::RenameUp`]: crate::kernel::step::Action::RenameUp

use std::fmt;
use std::os::fd::AsRawFd;

use labctl_topology::{IpvlanMode, MacvlanMode, format_mac};
use netlink_packet_route::link::{IpVlanMode, MacVlanMode};
use rtnetlink::{LinkIpVlan, LinkMacVlan};
use serde::Serialize;

use super::step::{IfRef, Step, shell_quote as q};
use super::{KernelError, Made, Netlink, write_addrgen_none};

/// The kinds made off a parent device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Macvlan(MacvlanMode),
    Ipvlan(IpvlanMode),
}

/// `ip link add link PARENT name NAME [netns NS] index N [address MAC]
/// type macvlan|ipvlan mode MODE && ip link set NAME addrgenmode none (in
/// NS when given) [&& ip link set NAME up]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddOffParent {
    pub name: String,
    pub ifindex: u32,
    /// A device of the namespace the step runs in.
    pub parent: IfRef,
    /// Where it goes, when not here.
    pub netns: Option<String>,
    pub mac: Option<[u8; 6]>,
    pub mode: Mode,
}

impl AddOffParent {
    /// The iproute2 command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = q(&self.name);
        write!(
            f,
            "ip -n {ns} link add link {} name {name}",
            q(&self.parent.name)
        )?;
        if let Some(target) = &self.netns {
            write!(f, " netns {}", q(target))?;
        }
        write!(f, " index {}", self.ifindex)?;
        if let Some(mac) = &self.mac {
            write!(f, " address {}", format_mac(mac))?;
        }
        match self.mode {
            Mode::Macvlan(m) => write!(f, " type macvlan mode {}", m.as_str())?,
            Mode::Ipvlan(m) => write!(f, " type ipvlan mode {}", m.as_str())?,
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
        // Open until the kernel has the request: the number goes in it.
        let target_fd = match &self.netns {
            Some(target) => Some(nl.netns_fd(step, target)?),
            None => None,
        };
        let fd = target_fd.as_ref().map(|fd| fd.as_raw_fd());
        let (parent, index) = (self.parent.ifindex, self.ifindex);
        let mac = self.mac.map(|m| m.to_vec());
        // The two builders are different types: each finished here.
        let msg = match self.mode {
            Mode::Macvlan(m) => {
                let mode = match m {
                    MacvlanMode::Bridge => MacVlanMode::Bridge,
                    MacvlanMode::Private => MacVlanMode::Private,
                    MacvlanMode::Vepa => MacVlanMode::Vepa,
                    MacvlanMode::Passthru => MacVlanMode::Passthrough,
                };
                let mut b = LinkMacVlan::new(&self.name, parent, mode).index(index);
                if let Some(mac) = mac {
                    b = b.address(mac);
                }
                match fd {
                    Some(fd) => b.setns_by_fd(fd),
                    None => b.up(),
                }
                .build()
            }
            Mode::Ipvlan(m) => {
                let mode = match m {
                    IpvlanMode::L2 => IpVlanMode::L2,
                    IpvlanMode::L3 => IpVlanMode::L3,
                };
                let b = LinkIpVlan::new(&self.name, parent, mode).index(index);
                match fd {
                    Some(fd) => b.setns_by_fd(fd),
                    None => b.up(),
                }
                .build()
            }
        };
        let done = nl.link_add(step, msg, &self.made()).await;
        drop(target_fd);
        done
    }
}
