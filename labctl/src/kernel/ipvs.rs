//! The kernel side of [`Action::IpvsTable`]: a namespace's whole IPVS
//! table replaced, like `ipvsadm -C` then `ipvsadm -A` / `-a` per virtual
//! and real server, over generic netlink ([`crate::ipvs`]) on a socket
//! opened inside the namespace.
//!
//! [`Action::IpvsTable`]: crate::kernel::step::Action::IpvsTable

use labctl_topology::Protocol;

use super::KernelError;
use crate::ipvs;
use crate::services::VirtualService;

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
