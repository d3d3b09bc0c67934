//! The eBPF load balancer of a lab with `ebpf:` as plan steps (Terway
//! IPVLAN + eBPF, Cilium's socket-less load balancing; [`crate::lb`]):
//! load and pin the programs once, put a clsact qdisc and both programs on
//! every pod's eth0, and fill the maps. `up` runs them like every other
//! step, a scenario's overrides rewrite the maps with [`map_step`], and
//! `labctl plan -o script` prints them as the `bpftool` and `tc` commands
//! that do the same (written by [`crate::kernel::ebpf`]).
//!
//! `BpfLoad` and `BpfMaps` act on the bpffs (the pins under
//! [`crate::lb::pin_dir`]), which is no namespace's: their steps carry the
//! first pod's namespace only so that every step of a plan belongs to the
//! lab.

use std::collections::HashMap;

use labctl_topology::{Lab, TcHook};

use super::{Action, Phase, Step};
use crate::kernel::{ebpf, tc};
use crate::lb;
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
        action: Action::BpfLoad(ebpf::BpfLoad {
            object: labctl_lb::OBJECT_PATH.to_string(),
            pin_dir: pin_dir.display().to_string(),
        }),
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
                action: Action::BpfAttach(ebpf::BpfAttach {
                    ifname: pod.ifname.clone(),
                    ifindex,
                    hook,
                    program: program.name().to_string(),
                    pin: program.pin_path(&pin_dir).display().to_string(),
                }),
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
        action: Action::BpfMaps(ebpf::BpfMaps {
            pin_dir: lb::pin_dir(&lab.name).display().to_string(),
            services: lb::wanted(lab, o),
        }),
    })
}

/// The namespace the bpffs steps are filed under: the first pod's.
fn home(lab: &Lab) -> Option<String> {
    lab.ebpf?;
    lab.pods.first().map(|p| lab.netns(&p.name))
}
