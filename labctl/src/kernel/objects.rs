//! The netlink side of the low-level layer's remaining actions: VXLAN
//! devices, bridge ports, MAC changes, route and link deletes. Each is one
//! request on the namespace's rtnetlink handle; the iproute2 text of the
//! same action is its `Display` in `plan`. Neighbour and FDB entries and tc
//! filters have files of their own ([`neigh`], [`fdb`], [`tc`]).
//!
//! [`neigh`]: super::neigh
//! [`fdb`]: super::fdb
//! [`tc`]: super::tc

use std::os::fd::AsRawFd;

use netlink_packet_core::NetlinkMessage;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::{LinkUnspec, LinkVxlan};

use super::step::{Action, Step};
use super::{KernelError, Netlink, fail};

impl Netlink {
    /// Run one of the layer's actions.
    pub(super) async fn run_object(&self, step: &Step) -> Result<(), KernelError> {
        match &step.action {
            Action::AddVxlan {
                name,
                ifindex,
                netns,
                mac,
                id,
                dev,
                local,
                remote,
                port,
                learning,
                external,
            } => {
                let mut b = LinkVxlan::new(name, *id)
                    .index(*ifindex)
                    .port(*port)
                    .learning(*learning);
                if *external {
                    // IFLA_VXLAN_COLLECT_METADATA; the id sent is 0, which
                    // the kernel ignores for such a device.
                    b = b.collect_metadata(true);
                }
                if let Some(dev) = dev {
                    b = b.dev(dev.ifindex);
                }
                if let Some(local) = local {
                    b = b.local(*local);
                }
                if let Some(remote) = remote {
                    b = b.remote(*remote);
                }
                if let Some(mac) = mac {
                    b = b.address(mac.to_vec());
                }
                // Open until the kernel has the request: the number goes
                // in it.
                let target_fd = match netns {
                    Some(target) => Some(self.netns_fd(step, target)?),
                    None => None,
                };
                b = match &target_fd {
                    Some(fd) => b.setns_by_fd(fd.as_raw_fd()),
                    None => b.up(),
                };
                let made = super::Made {
                    netns: netns.as_deref().unwrap_or(&step.netns),
                    ifindex: *ifindex,
                    name,
                };
                let done = self.link_add(step, b.build(), &[made]).await;
                drop(target_fd);
                done
            }
            Action::DelRoute {
                destination,
                via,
                ifindex,
                ..
            } => {
                let mut b = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .destination_prefix(destination.addr(), destination.prefix_len())
                    .output_interface(*ifindex);
                if let Some(via) = via {
                    b = b.gateway(*via);
                }
                match self.handle(&step.netns) {
                    Ok(h) => h
                        .route()
                        .del(b.build())
                        .execute()
                        .await
                        .map_err(|e| fail(step, e)),
                    Err(e) => Err(e),
                }
            }
            Action::SetMac { ifindex, mac, .. } => {
                let msg = LinkUnspec::new_with_index(*ifindex)
                    .address(mac.to_vec())
                    .build();
                self.link_set(step, msg).await
            }
            Action::SetMaster {
                ifindex, master, ..
            } => {
                let msg = LinkUnspec::new_with_index(*ifindex)
                    .controller(master.ifindex)
                    .build();
                self.link_set(step, msg).await
            }
            Action::DelLink { ifindex, .. } => match self.handle(&step.netns) {
                Ok(h) => h
                    .link()
                    .del(*ifindex)
                    .execute()
                    .await
                    .map_err(|e| fail(step, e)),
                Err(e) => Err(e),
            },
            _ => Err(KernelError::new(step.to_string(), "not a low-level action")),
        }
    }

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
