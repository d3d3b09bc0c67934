//! The clsact qdisc and the mirred filters the layer puts on it: the
//! payloads of [`Action::Clsact`], [`Action::TcMirred`],
//! [`Action::DelTcFilters`] and [`Action::DelClsact`], their iproute2 text
//! and their netlink calls. A filter is u32 with one key that matches every
//! packet (matchall is not in every kernel) and the mirred action.
//!
//! [`Action::Clsact`]: crate::kernel::step::Action::Clsact
//! [`Action::TcMirred`]: crate::kernel::step::Action::TcMirred
//! [`Action::DelTcFilters`]: crate::kernel::step::Action::DelTcFilters
//! [`Action::DelClsact`]: crate::kernel::step::Action::DelClsact

use std::fmt;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirror, TcActionMirrorOption,
    TcActionOption, TcActionType, TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use serde::Serialize;

use super::step::{IfRef, Step, TC_PRIO, shell_quote as q};
use super::{KernelError, Netlink, fail};

/// `TC_H_MIN_INGRESS` / `TC_H_MIN_EGRESS`: clsact's two hooks.
const CLSACT_INGRESS: u32 = 0xffff_fff2;
const CLSACT_EGRESS: u32 = 0xffff_fff3;

/// The clsact parent of a hook's filters.
fn clsact_parent(hook: labctl_topology::TcHook) -> u32 {
    match hook {
        labctl_topology::TcHook::Ingress => CLSACT_INGRESS,
        labctl_topology::TcHook::Egress => CLSACT_EGRESS,
    }
}

/// `tc qdisc add dev IF clsact`: the hooks tc filters attach to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Clsact {
    pub ifname: String,
    pub ifindex: u32,
}

impl Clsact {
    /// The tc command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tc -n {ns} qdisc add dev {} clsact", q(&self.ifname))
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let mut msg = TcMessage::with_index(self.ifindex as i32);
        msg.header.parent = TcHandle::INGRESS;
        msg.header.handle = TcHandle::from(0xffff_0000);
        msg.attributes.push(TcAttribute::Kind("clsact".into()));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        nl.send(step, req).await
    }
}

/// `tc filter add dev IF ingress|egress protocol all prio 49152 u32
/// match u32 0 0 action mirred egress redirect|mirror dev TO`: every
/// packet, since u32 0/0 matches all (matchall is not in every kernel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TcMirred {
    pub ifname: String,
    pub ifindex: u32,
    pub hook: labctl_topology::TcHook,
    pub mirror: bool,
    pub to: IfRef,
}

impl TcMirred {
    /// The tc command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hook = self.hook.as_str();
        let what = if self.mirror { "mirror" } else { "redirect" };
        write!(
            f,
            "tc -n {ns} filter add dev {} {hook} protocol all prio {TC_PRIO} u32 match u32 0 0 \
             action mirred egress {what} dev {}",
            q(&self.ifname),
            q(&self.to.name)
        )
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let parent = clsact_parent(self.hook);
        match nl.handle(&step.netns) {
            Ok(h) => {
                let req = h
                    .traffic_filter(self.ifindex as i32)
                    .add()
                    .parent(parent)
                    .priority(TC_PRIO)
                    .protocol((nix::libc::ETH_P_ALL as u16).to_be())
                    .u32(&match_all_mirred(self.to.ifindex, self.mirror));
                match req {
                    Ok(req) => req.execute().await.map_err(|e| fail(step, e)),
                    Err(e) => Err(fail(step, e)),
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// `tc filter del dev IF ingress|egress`: every filter of the hook (a
/// scenario's change, undone by the plan's own filters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DelTcFilters {
    pub ifname: String,
    pub ifindex: u32,
    pub hook: labctl_topology::TcHook,
}

impl DelTcFilters {
    /// The tc command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hook = self.hook.as_str();
        write!(f, "tc -n {ns} filter del dev {} {hook}", q(&self.ifname))
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let parent = clsact_parent(self.hook);
        match nl.handle(&step.netns) {
            Ok(h) => h
                .traffic_filter(self.ifindex as i32)
                .del()
                .parent(parent)
                .execute()
                .await
                .map_err(|e| fail(step, e)),
            Err(e) => Err(e),
        }
    }
}

/// `tc qdisc del dev IF clsact`, its filters with it (undoing a
/// scenario's filter on a device the lab gave no clsact).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DelClsact {
    pub ifname: String,
    pub ifindex: u32,
}

impl DelClsact {
    /// The tc command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tc -n {ns} qdisc del dev {} clsact", q(&self.ifname))
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let mut msg = TcMessage::with_index(self.ifindex as i32);
        msg.header.parent = TcHandle::INGRESS;
        msg.header.handle = TcHandle::from(0xffff_0000);
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::DelQueueDiscipline(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        nl.send(step, req).await
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
