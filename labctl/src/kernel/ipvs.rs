//! A namespace's IPVS table: the payload of [`Action::IpvsTable`], its
//! text (`ipvsadm` commands) and its write, the whole table replaced like
//! `ipvsadm -C` then `ipvsadm -A` / `-a` per virtual and real server, over
//! generic netlink ([`crate::ipvs`]) on a socket opened inside the
//! namespace. The table's entries are [`VirtualService`]s, computed by
//! [`crate::services`] (which `lb`, below this layer, also reads: the type
//! stays there).
//!
//! [`Action::IpvsTable`]: crate::kernel::step::Action::IpvsTable

use std::fmt;

use labctl_topology::Protocol;
use serde::Serialize;

use super::step::Step;
use super::{KernelError, Netlink, first_line};
use crate::ipvs;
use crate::services::VirtualService;

/// `ipvsadm -C`, then `ipvsadm -A -t VIP:PORT -s rr` and `ipvsadm -a -t
/// VIP:PORT -r RIP:RPORT -m -w W` for each real server, in one `sh -c`:
/// the namespace's whole IPVS table (kube-proxy's IPVS mode, the SLB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpvsTable {
    pub services: Vec<VirtualService>,
}

impl IpvsTable {
    /// The commands in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One process in the namespace for the whole table (a process per
        // `ipvsadm` is costly where every exec is, as in the VM): the
        // commands chained in one `sh -c`. Addresses, ports and weights
        // are numbers, so the single-quoted command needs no quoting of its
        // own; only the namespace does. (`ipvsadm -R` would read them from
        // stdin in one process, but Debian 12's 1.31 refuses its `-a` lines
        // with EINVAL.)
        let mut cmds = vec!["ipvsadm -C".to_string()];
        for vs in &self.services {
            let flag = match vs.protocol {
                Protocol::Tcp => "-t",
                Protocol::Udp => "-u",
            };
            let (a, p) = (vs.address, vs.port);
            let mut add = format!("ipvsadm -A {flag} {a}:{p} -s rr");
            if let Some(t) = vs.persistent {
                add.push_str(&format!(" -p {t}"));
            }
            cmds.push(add);
            for d in &vs.dests {
                cmds.push(format!(
                    "ipvsadm -a {flag} {a}:{p} -r {}:{} -m -w {}",
                    d.address, d.port, d.weight
                ));
            }
        }
        write!(f, "ip netns exec {ns} sh -c '{}'", cmds.join(" && "))
    }

    pub(super) async fn apply(&self, _nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        // IPVS is generic netlink on a socket of its own, opened inside the
        // namespace by a thread of our own. The first line names the
        // command; the whole table is in `labctl plan`.
        let (netns, services) = (step.netns.clone(), self.services.clone());
        let what = first_line(step);
        tokio::task::spawn_blocking(move || apply(&netns, &services, &what))
            .await
            .map_err(|e| KernelError::new(first_line(step), e))?
    }
}

/// Replace the IPVS table of the named lab namespace by `table`. Blocking:
/// run it on a thread of our own, never a runtime thread. `what` names the
/// step in errors.
pub fn apply(netns: &str, table: &[VirtualService], what: &str) -> Result<(), KernelError> {
    let err = |e: ipvs::IpvsError| KernelError::new(what, e);
    let mut ipvs = ipvs::Ipvs::open_in(netns).map_err(err)?;
    ipvs.flush().map_err(err)?;
    for vs in table {
        let proto = match vs.protocol {
            Protocol::Tcp => ipvs::Protocol::Tcp,
            Protocol::Udp => ipvs::Protocol::Udp,
        };
        let service = ipvs::Service {
            persistent: vs.persistent,
            ..ipvs::Service::new(proto, vs.address, vs.port)
        };
        ipvs.add_service(&service).map_err(err)?;
        for d in &vs.dests {
            let mut dest = ipvs::Dest::new(d.address, d.port);
            dest.weight = d.weight;
            ipvs.add_dest(&service, &dest).map_err(err)?;
        }
    }
    Ok(())
}
