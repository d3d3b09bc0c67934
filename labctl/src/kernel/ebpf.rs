//! The kernel side of the eBPF steps (planned in `plan/ebpf.rs` and
//! `plan/route.rs`): `BpfLoad`, `BpfMaps`, `RouteLoad` and
//! `RouteMaps` are bpf(2) calls on the pins ([`crate::lb::load`],
//! [`crate::lb::program_maps`], [`crate::route::load`],
//! [`crate::route::program_maps`]) made on a blocking thread; `BpfAttach` is
//! one `RTM_NEWTFILTER` on the pod namespace's rtnetlink handle carrying
//! the pinned program's fd, like `tc filter add dev IF ingress|egress
//! protocol all bpf direct-action object-pinned PIN`.

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpf, TcFilterBpfOption, TcHandle, TcMessage, TcOption,
};

use super::step::{Action, Step};
use super::{KernelError, Netlink, first_line as what};

/// `TC_H_MIN_INGRESS` / `TC_H_MIN_EGRESS` under clsact's `ffff:`.
const CLSACT_INGRESS: u32 = 0xffff_fff2;
const CLSACT_EGRESS: u32 = 0xffff_fff3;

/// The name `tc` gives a filter of a pinned program: the pin's file name
/// and `[*fsobj]` (iproute2's `bpf_load_common`), so `tc filter show` is
/// the same whether `up` or the plan's script attached it.
pub fn filter_name(pin: &str) -> String {
    let base = std::path::Path::new(pin)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{base}:[*fsobj]")
}

/// The cls_bpf filter request for a program's fd: protocol all, the
/// kernel's priority (49152 for a hook's first filter, as `tc` without
/// `prio`), direct action, named `name` ([`filter_name`]).
pub fn attach_message(
    ifindex: u32,
    hook: labctl_topology::TcHook,
    name: &str,
    fd: u32,
) -> NetlinkMessage<RouteNetlinkMessage> {
    let parent = match hook {
        labctl_topology::TcHook::Ingress => CLSACT_INGRESS,
        labctl_topology::TcHook::Egress => CLSACT_EGRESS,
    };
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = TcHandle::from(parent);
    msg.header.info = u32::from(TcHandle {
        major: 0,
        minor: (nix::libc::ETH_P_ALL as u16).to_be(),
    });
    msg.attributes
        .push(TcAttribute::Kind(TcFilterBpf::KIND.to_string()));
    msg.attributes.push(TcAttribute::Options(vec![
        TcOption::Bpf(TcFilterBpfOption::ProgFd(fd)),
        TcOption::Bpf(TcFilterBpfOption::ProgName(name.to_string())),
        TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
    ]));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewTrafficFilter(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    req
}

impl Netlink {
    /// Run one of the eBPF load balancer's steps.
    pub(super) async fn run_ebpf(&self, step: &Step) -> Result<(), KernelError> {
        match &step.action {
            Action::BpfLoad { pin_dir, .. } => {
                let dir = PathBuf::from(pin_dir);
                let what = what(step);
                tokio::task::spawn_blocking(move || crate::lb::load(&dir))
                    .await
                    .map_err(|e| KernelError::new(what.clone(), e))?
                    .map_err(|e| KernelError::new(what, e))
            }
            Action::BpfMaps { pin_dir, services } => {
                let dir = PathBuf::from(pin_dir);
                let services = services.clone();
                let what = what(step);
                tokio::task::spawn_blocking(move || crate::lb::program_maps(&dir, &services))
                    .await
                    .map_err(|e| KernelError::new(what.clone(), e))?
                    .map_err(|e| KernelError::new(what, e))
            }
            Action::RouteLoad { pin_dir, .. } => {
                let dir = PathBuf::from(pin_dir);
                let what = what(step);
                tokio::task::spawn_blocking(move || crate::route::load(&dir))
                    .await
                    .map_err(|e| KernelError::new(what.clone(), e))?
                    .map_err(|e| KernelError::new(what, e))
            }
            Action::RouteMaps { pin_dir, tables } => {
                let dir = PathBuf::from(pin_dir);
                let tables = tables.clone();
                let what = what(step);
                tokio::task::spawn_blocking(move || crate::route::program_maps(&dir, &tables))
                    .await
                    .map_err(|e| KernelError::new(what.clone(), e))?
                    .map_err(|e| KernelError::new(what, e))
            }
            Action::BpfAttach {
                ifindex,
                hook,
                program,
                pin,
                ..
            } => {
                let which = labctl_lb::Program::from_name(program)
                    .map(labctl_lb::Program::name)
                    .or_else(|| labctl_lb::RouteProgram::from_name(program).map(|p| p.name()))
                    .ok_or_else(|| {
                        KernelError::new(step.to_string(), "not one of labctl's eBPF programs")
                    })?;
                // A bpf(2) call on the bpffs, not a namespace's: made here.
                let fd = labctl_lb::pinned_program(std::path::Path::new(pin), which)
                    .map_err(|e| KernelError::new(step.to_string(), e))?;
                let raw = u32::try_from(fd.as_raw_fd())
                    .map_err(|e| KernelError::new(step.to_string(), e))?;
                let req = attach_message(*ifindex, *hook, &filter_name(pin), raw);
                // The fd stays open until the kernel has answered.
                let result = self.send(step, req).await;
                drop(fd);
                result
            }
            _ => Err(KernelError::new(step.to_string(), "not an eBPF action")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `up` sends for `tc filter add dev eth0 egress protocol all bpf
    /// da object-pinned .../lb_egress`: cls_bpf on clsact's egress, all
    /// protocols, the kernel's priority, the fd, tc's name, direct action.
    #[test]
    fn attach_message_is_tcs_request() {
        let pin = "/run/labctl/bpf/labctl/lab/lb_egress";
        assert_eq!(filter_name(pin), "lb_egress:[*fsobj]");
        let req = attach_message(7, labctl_topology::TcHook::Egress, &filter_name(pin), 42);
        assert_eq!(
            req.header.flags,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        );
        let netlink_packet_core::NetlinkPayload::InnerMessage(
            RouteNetlinkMessage::NewTrafficFilter(msg),
        ) = req.payload
        else {
            panic!("not a new filter: {req:?}")
        };
        assert_eq!(msg.header.index, 7);
        assert_eq!(u32::from(msg.header.parent), CLSACT_EGRESS);
        // Priority 0 (the kernel picks 49152), protocol ETH_P_ALL in
        // network order.
        assert_eq!(msg.header.info, u32::from(0x0003u16.to_be()));
        assert!(msg.attributes.contains(&TcAttribute::Kind("bpf".into())));
        let options = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                TcAttribute::Options(o) => Some(o.clone()),
                _ => None,
            })
            .expect("options");
        assert_eq!(
            options,
            vec![
                TcOption::Bpf(TcFilterBpfOption::ProgFd(42)),
                TcOption::Bpf(TcFilterBpfOption::ProgName("lb_egress:[*fsobj]".into())),
                TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
            ]
        );
        let ingress = attach_message(7, labctl_topology::TcHook::Ingress, "x", 1);
        let netlink_packet_core::NetlinkPayload::InnerMessage(
            RouteNetlinkMessage::NewTrafficFilter(msg),
        ) = ingress.payload
        else {
            panic!()
        };
        assert_eq!(u32::from(msg.header.parent), CLSACT_INGRESS);
    }
}
