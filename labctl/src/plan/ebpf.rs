//! The eBPF load balancer of a lab with `ebpf:` as plan steps (Terway
//! IPVLAN + eBPF, Cilium's socket-less load balancing; [`crate::lb`]):
//! load and pin the programs once and fill the maps (a clsact qdisc and
//! both programs on every pod's eth0 are the pods' tc objects). `up` runs them like every other
//! step, a scenario's overrides rewrite the maps with [`map_step`], and
//! `labctl plan -o script` prints them as the `bpftool` and `tc` commands
//! that do the same (written by [`crate::kernel::ebpf`]).
//!
//! `BpfLoad` and `BpfMaps` act on the bpffs (the pins under
//! [`crate::lb::pin_dir`]), which is no namespace's: their steps carry the
//! first pod's namespace only so that every step of a plan belongs to the
//! lab.

use labctl_topology::Lab;

use super::{Action, Phase, Step};
use crate::kernel::ebpf;
use crate::lb;
use crate::services::Overrides;

/// The load balancer's own steps: in [`Phase::Services`] the load (its
/// programs and maps pinned for the lab), in [`Phase::Ebpf`] the maps'
/// contents. Its filters on every pod's interface are objects of the pods'
/// namespaces ([`labctl_topology::Lab::lowered`]), attached with the
/// router's ([`super::route`]).
pub(super) fn steps(lab: &Lab) -> Vec<Step> {
    let Some(home) = home(lab) else {
        return Vec::new();
    };
    let mut out = vec![Step {
        phase: Phase::Services,
        netns: home,
        action: Action::BpfLoad(ebpf::BpfLoad {
            object: labctl_lb::OBJECT_PATH.to_string(),
            pin_dir: lb::pin_dir(&lab.name).display().to_string(),
        }),
    }];
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
