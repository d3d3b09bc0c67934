//! The eBPF steps (planned in `plan/ebpf.rs` and `plan/route.rs`): the
//! payloads of [`Action::BpfLoad`], [`Action::BpfAttach`],
//! [`Action::BpfMaps`], [`Action::RouteLoad`] and [`Action::RouteMaps`],
//! their text (the `bpftool` and `tc` commands that do the same) and their
//! calls. Loads and maps are bpf(2) calls on the pins ([`crate::lb::load`],
//! [`crate::lb::program_maps`], [`crate::route::load`],
//! [`crate::route::program_maps`]) made on a blocking thread; `BpfAttach`
//! is one `RTM_NEWTFILTER` on the pod namespace's rtnetlink handle carrying
//! the pinned program's fd, like `tc filter add dev IF ingress|egress
//! protocol all bpf direct-action object-pinned PIN`.
//!
//! Loads and maps act on the bpffs (the pins under [`crate::lb::pin_dir`]),
//! which is no namespace's: their steps carry a namespace of the lab only so
//! that every step of a plan belongs to the lab, and their commands run
//! without `ip netns exec` (a bpffs mounted inside `ip netns exec` would
//! vanish with its private mount namespace).
//!
//! [`Action::BpfLoad`]: crate::kernel::step::Action::BpfLoad
//! [`Action::BpfAttach`]: crate::kernel::step::Action::BpfAttach
//! [`Action::BpfMaps`]: crate::kernel::step::Action::BpfMaps
//! [`Action::RouteLoad`]: crate::kernel::step::Action::RouteLoad
//! [`Action::RouteMaps`]: crate::kernel::step::Action::RouteMaps

use std::fmt;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpf, TcFilterBpfOption, TcHandle, TcMessage, TcOption,
};
use serde::Serialize;

use super::step::{Step, shell_quote};
use super::{KernelError, Netlink, first_line as what};
use crate::lb::BpfService;
use crate::route::Tables;

/// `bpftool prog loadall OBJ PIN_DIR type classifier pinmaps PIN_DIR`,
/// after mounting the bpffs if missing and removing stale pins: the
/// load balancer's programs and maps, pinned once for the whole lab
/// ([`crate::lb::load`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BpfLoad {
    pub object: String,
    pub pin_dir: String,
}

impl BpfLoad {
    /// The command (run outside the namespace; see the module doc).
    pub fn command(&self, _ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        load_command(f, &self.object, &self.pin_dir)
    }

    pub(super) async fn apply(&self, _nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        load_pinned(step, &self.pin_dir, crate::lb::load).await
    }
}

/// `tc filter add dev IF ingress|egress protocol all bpf direct-action
/// object-pinned PIN`: a pinned program on a pod's interface, as a
/// netlink cls_bpf filter holding its own reference to the program
/// (the clsact qdisc is an [`Action::Clsact`] before it).
///
/// [`Action::Clsact`]: crate::kernel::step::Action::Clsact
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BpfAttach {
    pub ifname: String,
    pub ifindex: u32,
    pub hook: labctl_topology::TcHook,
    /// The program's name (`lb_egress`, `lb_ingress`).
    pub program: String,
    /// Where [`BpfLoad`] (or [`RouteLoad`]) pinned it.
    pub pin: String,
}

impl BpfAttach {
    /// The tc command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hook = self.hook.as_str();
        write!(
            f,
            "tc -n {ns} filter add dev {} {hook} protocol all bpf direct-action object-pinned {}",
            shell_quote(&self.ifname),
            shell_quote(&self.pin)
        )
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let which = labctl_lb::Program::from_name(&self.program)
            .map(labctl_lb::Program::name)
            .or_else(|| labctl_lb::RouteProgram::from_name(&self.program).map(|p| p.name()))
            .ok_or_else(|| {
                KernelError::new(step.to_string(), "not one of labctl's eBPF programs")
            })?;
        // A bpf(2) call on the bpffs, not a namespace's: made here.
        let fd = labctl_lb::pinned_program(std::path::Path::new(&self.pin), which)
            .map_err(|e| KernelError::new(step.to_string(), e))?;
        let raw =
            u32::try_from(fd.as_raw_fd()).map_err(|e| KernelError::new(step.to_string(), e))?;
        let req = attach_message(self.ifindex, self.hook, &filter_name(&self.pin), raw);
        // The fd stays open until the kernel has answered.
        let result = nl.send(step, req).await;
        drop(fd);
        result
    }
}

/// `bpftool map update pinned PIN_DIR/MAP key hex .. value hex ..` for
/// every backend slot and service: the maps hold exactly `services`
/// afterwards and no remembered flow ([`crate::lb::program_maps`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BpfMaps {
    pub pin_dir: String,
    pub services: Vec<BpfService>,
}

impl BpfMaps {
    /// The commands, one `bpftool map update` a line, each service's
    /// backend slots before the service that counts them, as
    /// [`crate::lb::program_maps`] writes them. In fresh maps (`up`) that is
    /// all there is to do; on a lab that is up, the executor also removes the
    /// services not listed and empties the remembered flows.
    pub fn command(&self, _ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = std::path::Path::new(&self.pin_dir);
        let mut first = true;
        for s in &self.services {
            let updates = match labctl_lb::service_updates(s.frontend(), &s.backends, s.pinned) {
                Ok(u) => u,
                Err(e) => {
                    // Cannot happen for a plan (pins are endpoint positions);
                    // said in the script rather than hidden.
                    write!(
                        f,
                        "{}# {}: {e}",
                        if first { "" } else { "\n" },
                        s.frontend()
                    )?;
                    first = false;
                    continue;
                }
            };
            for u in updates {
                if !first {
                    writeln!(f)?;
                }
                first = false;
                write!(
                    f,
                    "bpftool map update pinned {} key hex {} value hex {}",
                    shell_quote(&dir.join(u.map).display().to_string()),
                    hex(&u.key),
                    hex(&u.value)
                )?;
            }
        }
        if first {
            write!(f, "true # no eBPF services")?;
        }
        Ok(())
    }

    pub(super) async fn apply(&self, _nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let dir = PathBuf::from(&self.pin_dir);
        let services = self.services.clone();
        let what = what(step);
        tokio::task::spawn_blocking(move || crate::lb::program_maps(&dir, &services))
            .await
            .map_err(|e| KernelError::new(what.clone(), e))?
            .map_err(|e| KernelError::new(what, e))
    }
}

/// `bpftool prog loadall OBJ PIN_DIR type classifier pinmaps PIN_DIR`
/// for the overlay router: its programs and maps pinned in one node's
/// directory ([`crate::route::load`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteLoad {
    pub object: String,
    pub pin_dir: String,
}

impl RouteLoad {
    /// The command (run outside the namespace; see the module doc).
    pub fn command(&self, _ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        load_command(f, &self.object, &self.pin_dir)
    }

    pub(super) async fn apply(&self, _nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        load_pinned(step, &self.pin_dir, crate::route::load).await
    }
}

/// `bpftool map update pinned PIN_DIR/MAP ...` for each endpoint,
/// tunnel and the VXLAN device: the router maps of one node hold
/// exactly `tables` afterwards ([`crate::route::program_maps`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteMaps {
    pub pin_dir: String,
    pub tables: Tables,
}

impl RouteMaps {
    /// The commands: one `bpftool map update` a line, endpoints, tunnels,
    /// then the config slot (the VXLAN device and the local delivery, whose
    /// helper a comment names). In fresh maps (`up`) that is all there is
    /// to do; the executor also removes entries not listed.
    pub fn command(&self, _ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = std::path::Path::new(&self.pin_dir);
        let tables = &self.tables;
        for (i, u) in tables.to_lb().updates().iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "bpftool map update pinned {} key hex {} value hex {}",
                shell_quote(&dir.join(u.map).display().to_string()),
                hex(&u.key),
                hex(&u.value)
            )?;
            if u.map == labctl_lb::MAP_ROUTE_CONFIG {
                let mode = crate::route::redirect_mode(tables.redirect);
                write!(
                    f,
                    "  # tunnel ifindex {}, local delivery {} ({})",
                    tables.tunnel_ifindex,
                    mode.helper(),
                    mode
                )?;
            }
        }
        Ok(())
    }

    pub(super) async fn apply(&self, _nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        let dir = PathBuf::from(&self.pin_dir);
        let tables = self.tables.clone();
        let what = what(step);
        tokio::task::spawn_blocking(move || crate::route::program_maps(&dir, &tables))
            .await
            .map_err(|e| KernelError::new(what.clone(), e))?
            .map_err(|e| KernelError::new(what, e))
    }
}

/// The load commands of [`BpfLoad`] and [`RouteLoad`]: the bpffs mounted
/// if missing, stale pins removed, the object loaded with programs and maps
/// pinned in the pin directory.
///
/// The object's maps are BTF map definitions, which the libbpf of
/// `bpftool` (1.0 and later) loads; `pinmaps` pins each under its name,
/// where `up`'s loader pins them too. `tests/objects.rs` runs this line and
/// compares the programs, maps and contents with `up`'s.
fn load_command(f: &mut fmt::Formatter<'_>, object: &str, pin_dir: &str) -> fmt::Result {
    let mount = shell_quote(labctl_lb::DEFAULT_BPFFS);
    let (object, dir) = (shell_quote(object), shell_quote(pin_dir));
    write!(
        f,
        "mkdir -p {mount} && {{ mountpoint -q {mount} || mount -t bpf bpf {mount}; }} \
         && rm -rf -- {dir} && mkdir -p {dir} \
         && bpftool prog loadall {object} {dir} type classifier pinmaps {dir}"
    )
}

/// Bytes as `bpftool` takes them: two hex digits each, spaced.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

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

/// Load and pin an object's programs and maps in `pin_dir` with `load`
/// (bpftool's work, by aya), on a thread of its own.
async fn load_pinned(
    step: &Step,
    pin_dir: &str,
    load: fn(&std::path::Path) -> Result<(), crate::lb::LbError>,
) -> Result<(), KernelError> {
    let dir = PathBuf::from(pin_dir);
    let what = what(step);
    tokio::task::spawn_blocking(move || load(&dir))
        .await
        .map_err(|e| KernelError::new(what.clone(), e))?
        .map_err(|e| KernelError::new(what, e))
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
