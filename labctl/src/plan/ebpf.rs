//! The eBPF load balancer of a lab with `ebpf:` as plan steps (Terway
//! IPVLAN + eBPF, Cilium's socket-less load balancing; [`crate::lb`]):
//! load and pin the programs once, put a clsact qdisc and both programs on
//! every pod's eth0, and fill the maps. `up` runs them like every other
//! step, a scenario's overrides rewrite the maps with [`map_step`], and
//! `labctl plan -o script` prints them as the `bpftool` and `tc` commands
//! that do the same.
//!
//! `BpfLoad` and `BpfMaps` act on the bpffs (the pins under
//! [`crate::lb::pin_dir`]), which is no namespace's: their steps carry the
//! first pod's namespace only so that every step of a plan belongs to the
//! lab, and their commands run without `ip netns exec` (a bpffs mounted
//! inside `ip netns exec` would vanish with its private mount namespace).

use std::collections::HashMap;
use std::fmt;

use labctl_topology::{Lab, TcHook};

use super::{Action, Phase, Step, shell_quote};
use crate::kernel::tc;
use crate::lb::{self, BpfService};
use crate::services::Overrides;

/// The steps that put the load balancer on every pod: in
/// [`Phase::Services`] the load and each pod's clsact qdisc, in
/// [`Phase::Ebpf`] both programs on each pod's interface and the maps.
/// `pod_ifindex` is the ifindex the plan gave each pod's interface.
pub(super) fn steps(lab: &Lab, pod_ifindex: &HashMap<String, u32>) -> Vec<Step> {
    let Some(home) = home(lab) else {
        return Vec::new();
    };
    let pin_dir = lb::pin_dir(&lab.name);
    let mut out = vec![Step {
        phase: Phase::Services,
        netns: home.clone(),
        action: Action::BpfLoad {
            object: labctl_lb::OBJECT_PATH.to_string(),
            pin_dir: pin_dir.display().to_string(),
        },
    }];
    for pod in &lab.pods {
        let Some(&ifindex) = pod_ifindex.get(&pod.name) else {
            continue;
        };
        let netns = lab.netns(&pod.name);
        out.push(Step {
            phase: Phase::Services,
            netns: netns.clone(),
            action: Action::Clsact(tc::Clsact {
                ifname: pod.ifname.clone(),
                ifindex,
            }),
        });
        for (program, hook) in [
            (labctl_lb::Program::Egress, TcHook::Egress),
            (labctl_lb::Program::Ingress, TcHook::Ingress),
        ] {
            out.push(Step {
                phase: Phase::Ebpf,
                netns: netns.clone(),
                action: Action::BpfAttach {
                    ifname: pod.ifname.clone(),
                    ifindex,
                    hook,
                    program: program.name().to_string(),
                    pin: program.pin_path(&pin_dir).display().to_string(),
                },
            });
        }
    }
    out.extend(map_step(lab, &Overrides::default(), Phase::Ebpf));
    out
}

/// The step that makes the maps hold the services under `o` (the
/// topology's own with `Overrides::default()`); none for a lab without
/// `ebpf:` or pods.
pub fn map_step(lab: &Lab, o: &Overrides, phase: Phase) -> Option<Step> {
    Some(Step {
        phase,
        netns: home(lab)?,
        action: Action::BpfMaps {
            pin_dir: lb::pin_dir(&lab.name).display().to_string(),
            services: lb::wanted(lab, o),
        },
    })
}

/// The namespace the bpffs steps are filed under: the first pod's.
fn home(lab: &Lab) -> Option<String> {
    lab.ebpf?;
    lab.pods.first().map(|p| lab.netns(&p.name))
}

/// `BpfLoad`'s command: the bpffs mounted if missing, stale pins removed,
/// the object loaded with programs and maps pinned in the pin directory.
///
/// The object's maps are BTF map definitions, which the libbpf of
/// `bpftool` (1.0 and later) loads; `pinmaps` pins each under its name,
/// where `up`'s loader pins them too. `tests/objects.rs` runs this line and
/// compares the programs, maps and contents with `up`'s.
pub(super) fn fmt_load(f: &mut fmt::Formatter<'_>, object: &str, pin_dir: &str) -> fmt::Result {
    let mount = shell_quote(labctl_lb::DEFAULT_BPFFS);
    let (object, dir) = (shell_quote(object), shell_quote(pin_dir));
    write!(
        f,
        "mkdir -p {mount} && {{ mountpoint -q {mount} || mount -t bpf bpf {mount}; }} \
         && rm -rf -- {dir} && mkdir -p {dir} \
         && bpftool prog loadall {object} {dir} type classifier pinmaps {dir}"
    )
}

/// `BpfAttach`'s command.
pub(super) fn fmt_attach(
    f: &mut fmt::Formatter<'_>,
    netns: &str,
    ifname: &str,
    hook: TcHook,
    pin: &str,
) -> fmt::Result {
    let hook = hook.as_str();
    write!(
        f,
        "tc -n {} filter add dev {} {hook} protocol all bpf direct-action object-pinned {}",
        shell_quote(netns),
        shell_quote(ifname),
        shell_quote(pin)
    )
}

/// `BpfMaps`' commands: one `bpftool map update` a line, each service's
/// backend slots before the service that counts them, as
/// [`crate::lb::program_maps`] writes them. In fresh maps (`up`) that is
/// all there is to do; on a lab that is up, the executor also removes the
/// services not listed and empties the remembered flows.
pub(super) fn fmt_maps(
    f: &mut fmt::Formatter<'_>,
    pin_dir: &str,
    services: &[BpfService],
) -> fmt::Result {
    let dir = std::path::Path::new(pin_dir);
    let mut first = true;
    for s in services {
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

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
