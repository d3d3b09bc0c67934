//! The netlink side of the low-level layer's actions: VXLAN devices,
//! bridge ports, neighbour and FDB entries, clsact and mirred filters. Each
//! is one request on the namespace's rtnetlink handle; the iproute2 text of
//! the same action is its `Display` in `plan`.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::neighbour::{NeighbourFlags, NeighbourState};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirror, TcActionMirrorOption,
    TcActionOption, TcActionType, TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use rtnetlink::{LinkUnspec, LinkVxlan};

use super::step::{Action, Step, TC_PRIO};
use super::{KernelError, Netlink, fail};

/// `TC_H_MIN_INGRESS` / `TC_H_MIN_EGRESS`: clsact's two hooks.
const CLSACT_INGRESS: u32 = 0xffff_fff2;
const CLSACT_EGRESS: u32 = 0xffff_fff3;

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
            Action::AddNeighbour {
                ifindex,
                address,
                lladdr,
                state,
                ..
            } => {
                let state = match state {
                    labctl_topology::NeighState::Permanent => NeighbourState::Permanent,
                    labctl_topology::NeighState::Noarp => NeighbourState::Noarp,
                    labctl_topology::NeighState::Reachable => NeighbourState::Reachable,
                };
                match self.handle(&step.netns) {
                    Ok(h) => h
                        .neighbours()
                        .add(*ifindex, IpAddr::V4(*address))
                        .link_layer_address(lladdr)
                        .state(state)
                        .replace()
                        .execute()
                        .await
                        .map_err(|e| fail(step, e)),
                    Err(e) => Err(e),
                }
            }
            Action::AddFdb {
                ifindex,
                lladdr,
                dst,
                master,
                ..
            } => match self.handle(&step.netns) {
                Ok(h) => {
                    // A port's entry is `static` (NUD_NOARP): `permanent`
                    // in a bridge's table means the bridge's own address.
                    let (flags, state) = if *master {
                        (NeighbourFlags::Controller, NeighbourState::Noarp)
                    } else {
                        (NeighbourFlags::Own, NeighbourState::Permanent)
                    };
                    let mut req = h
                        .neighbours()
                        .add_bridge(*ifindex, lladdr)
                        .flags(flags)
                        .state(state)
                        .replace();
                    if let Some(dst) = dst {
                        req = req.destination(IpAddr::V4(*dst));
                    }
                    req.execute().await.map_err(|e| fail(step, e))
                }
                Err(e) => Err(e),
            },
            Action::Clsact { ifindex, .. } => {
                let mut msg = TcMessage::with_index(*ifindex as i32);
                msg.header.parent = TcHandle::INGRESS;
                msg.header.handle = TcHandle::from(0xffff_0000);
                msg.attributes.push(TcAttribute::Kind("clsact".into()));
                let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(msg));
                req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
                self.send(step, req).await
            }
            Action::TcMirred {
                ifindex,
                hook,
                mirror,
                to,
                ..
            } => {
                let parent = match hook {
                    labctl_topology::TcHook::Ingress => CLSACT_INGRESS,
                    labctl_topology::TcHook::Egress => CLSACT_EGRESS,
                };
                match self.handle(&step.netns) {
                    Ok(h) => {
                        let req = h
                            .traffic_filter(*ifindex as i32)
                            .add()
                            .parent(parent)
                            .priority(TC_PRIO)
                            .protocol((nix::libc::ETH_P_ALL as u16).to_be())
                            .u32(&match_all_mirred(to.ifindex, *mirror));
                        match req {
                            Ok(req) => req.execute().await.map_err(|e| fail(step, e)),
                            Err(e) => Err(fail(step, e)),
                        }
                    }
                    Err(e) => Err(e),
                }
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
            Action::DelNeighbour {
                ifindex, address, ..
            } => {
                let mut msg = netlink_packet_route::neighbour::NeighbourMessage::default();
                msg.header.family = netlink_packet_route::AddressFamily::Inet;
                msg.header.ifindex = *ifindex;
                msg.attributes.push(
                    netlink_packet_route::neighbour::NeighbourAttribute::Destination(
                        netlink_packet_route::neighbour::NeighbourAddress::Inet(*address),
                    ),
                );
                // No entry is what a delete asks for: a scenario that
                // clears a learned entry finds none on a fresh lab, and the
                // kernel flushes neighbours itself when a link goes down.
                match self.handle(&step.netns) {
                    Ok(h) => match h.neighbours().del(msg).execute().await {
                        Err(rtnetlink::Error::NetlinkError(m))
                            if m.code.is_some_and(|c| c.get() == -nix::libc::ENOENT) =>
                        {
                            Ok(())
                        }
                        r => r.map_err(|e| fail(step, e)),
                    },
                    Err(e) => Err(e),
                }
            }
            Action::DelFdb {
                ifindex,
                lladdr,
                dst,
                master,
                ..
            } => {
                use netlink_packet_route::neighbour::{
                    NeighbourAddress, NeighbourAttribute, NeighbourMessage,
                };
                let mut msg = NeighbourMessage::default();
                msg.header.family = netlink_packet_route::AddressFamily::Bridge;
                msg.header.ifindex = *ifindex;
                msg.header.flags = if *master {
                    NeighbourFlags::Controller
                } else {
                    NeighbourFlags::Own
                };
                msg.attributes
                    .push(NeighbourAttribute::LinkLayerAddress(lladdr.to_vec()));
                if let Some(dst) = dst {
                    msg.attributes
                        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                            *dst,
                        )));
                }
                match self.handle(&step.netns) {
                    Ok(h) => h
                        .neighbours()
                        .del(msg)
                        .execute()
                        .await
                        .map_err(|e| fail(step, e)),
                    Err(e) => Err(e),
                }
            }
            Action::DelTcFilters { ifindex, hook, .. } => {
                let parent = match hook {
                    labctl_topology::TcHook::Ingress => CLSACT_INGRESS,
                    labctl_topology::TcHook::Egress => CLSACT_EGRESS,
                };
                match self.handle(&step.netns) {
                    Ok(h) => h
                        .traffic_filter(*ifindex as i32)
                        .del()
                        .parent(parent)
                        .execute()
                        .await
                        .map_err(|e| fail(step, e)),
                    Err(e) => Err(e),
                }
            }
            Action::DelClsact { ifindex, .. } => {
                let mut msg = TcMessage::with_index(*ifindex as i32);
                msg.header.parent = TcHandle::INGRESS;
                msg.header.handle = TcHandle::from(0xffff_0000);
                let mut req = NetlinkMessage::from(RouteNetlinkMessage::DelQueueDiscipline(msg));
                req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
                self.send(step, req).await
            }
            _ => Err(KernelError::new(step.to_string(), "not a low-level action")),
        }
    }

    /// Send a request built by hand and wait for the kernel's answer (the
    /// clsact qdisc here, the cls_bpf filter in `ebpf`).
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

/// `u32 match u32 0 0 action mirred egress redirect|mirror dev TO`: one
/// key that every packet matches, and the mirred action (stolen for a
/// redirect, pipe for a mirror, as tc sets them).
fn match_all_mirred(to: u32, mirror: bool) -> Vec<TcFilterU32Option> {
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = 1;
    sel.keys = vec![TcU32Key::default()];
    let mut parms = TcMirror::default();
    parms.generic = TcActionGeneric::default();
    if mirror {
        parms.generic.action = TcActionType::Pipe;
        parms.eaction = TcMirrorActionType::EgressMirror;
    } else {
        parms.generic.action = TcActionType::Stolen;
        parms.eaction = TcMirrorActionType::EgressRedir;
    }
    parms.ifindex = to;
    let mut action = TcAction::default();
    action.attributes = vec![
        TcActionAttribute::Kind(TcActionMirror::KIND.to_string()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            parms,
        ))]),
    ];
    vec![
        TcFilterU32Option::Selector(sel),
        TcFilterU32Option::Action(vec![action]),
    ]
}
