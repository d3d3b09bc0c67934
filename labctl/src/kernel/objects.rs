//! The sender of netlink requests built by hand (the clsact qdisc in
//! [`tc`], the cls_bpf filter in [`ebpf`]), for what rtnetlink's builders
//! do not make. Every other kind's request is in its own file.
//!
//! [`tc`]: super::tc
//! [`ebpf`]: super::ebpf

use netlink_packet_core::NetlinkMessage;
use netlink_packet_route::RouteNetlinkMessage;

use super::step::Step;
use super::{KernelError, Netlink, fail};

impl Netlink {
    /// Send a request built by hand and wait for the kernel's answer (the
    /// clsact qdisc in `tc`, the cls_bpf filter in `ebpf`).
    pub(super) async fn send(
        &self,
        step: &Step,
        req: NetlinkMessage<RouteNetlinkMessage>,
    ) -> Result<(), KernelError> {
        use futures::StreamExt;
        let mut h = self.handle(&step.netns)?.clone();
        let mut answers = h.request(req).map_err(|e| fail(step, e))?;
        while let Some(m) = answers.next().await {
            if let netlink_packet_core::NetlinkPayload::Error(e) = m.payload
                && let Some(code) = e.code
            {
                return Err(KernelError::new(
                    step.to_string(),
                    std::io::Error::from_raw_os_error(-code.get()),
                ));
            }
        }
        Ok(())
    }
}
