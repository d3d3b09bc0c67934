//! The EVPN controller: from where each pod of a VXLAN segment is, the
//! entries every leaf needs (what MP-BGP EVPN's MAC/IP routes, or Ctrip's
//! CNC, would program) and the step that follows a pod's move. Pure
//! functions of the model: the resolver lowers them into the low-level
//! `fdb`, `neighbours` and object changes, which the planner makes.

use std::net::Ipv4Addr;

use serde::Serialize;

use super::{Fdb, NeighState, Neighbour, ObjectChange};

/// A VXLAN segment over leaves, and where its pods are.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evpn {
    pub vni: u32,
    pub leaves: Vec<EvpnLeaf>,
    pub pods: Vec<EvpnPod>,
}

/// A leaf: its vxlan device of the segment, that device's bridge and VTEP.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvpnLeaf {
    pub name: String,
    pub vxlan: String,
    pub bridge: String,
    pub vtep: Ipv4Addr,
}

/// A pod and the leaf it is under.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvpnPod {
    pub name: String,
    pub leaf: String,
    pub address: Ipv4Addr,
    pub mac: [u8; 6],
}

impl Evpn {
    pub fn leaf(&self, name: &str) -> Option<&EvpnLeaf> {
        self.leaves.iter().find(|l| l.name == name)
    }

    pub fn pod(&self, name: &str) -> Option<&EvpnPod> {
        self.pods.iter().find(|p| p.name == name)
    }

    /// Every leaf's FDB entries, leaf by leaf, pod by pod: for each pod
    /// under another leaf, the bridge's entry (the MAC is behind the vxlan
    /// port, `master`) and the vxlan device's (behind that leaf's VTEP,
    /// `self`). A leaf's own pods are learned by its bridge.
    pub fn fdb(&self) -> Vec<Fdb> {
        let mut out = Vec::new();
        for leaf in &self.leaves {
            for pod in self.remote_pods(leaf) {
                let vtep = self.leaf(&pod.leaf).map(|l| l.vtep);
                for dst in [None, vtep] {
                    out.push(Fdb {
                        netns: leaf.name.clone(),
                        dev: leaf.vxlan.clone(),
                        lladdr: pod.mac,
                        dst,
                        master: dst.is_none(),
                    });
                }
            }
        }
        out
    }

    /// Every leaf's neighbour entries on its bridge for the pods under other
    /// leaves: what `neigh_suppress` answers ARP from.
    pub fn neighbours(&self) -> Vec<Neighbour> {
        let mut out = Vec::new();
        for leaf in &self.leaves {
            for pod in self.remote_pods(leaf) {
                out.push(Neighbour {
                    netns: leaf.name.clone(),
                    dev: leaf.bridge.clone(),
                    address: pod.address,
                    lladdr: Some(pod.mac),
                    state: NeighState::Permanent,
                });
            }
        }
        out
    }

    fn remote_pods<'a>(&'a self, leaf: &'a EvpnLeaf) -> impl Iterator<Item = &'a EvpnPod> + 'a {
        self.pods.iter().filter(move |p| p.leaf != leaf.name)
    }

    /// The controller's step once `pod` is under leaf `to` (from the leaf
    /// it was under, `from`), with the segment's pods as they stand: the
    /// new leaf forgets the pod as remote (its bridge learns it), the old
    /// leaf gets its remote entries pointing at the new VTEP, and every
    /// other leaf has its entry's VTEP replaced (the bridge's entry stays:
    /// the MAC is still behind the vxlan port). `None` if a name is
    /// unknown or the pod is under `to` already.
    pub fn moved(&self, pod: &str, to: &str) -> Option<Vec<ObjectChange>> {
        let pod = self.pod(pod)?;
        let from = self.leaf(&pod.leaf)?;
        let to = self.leaf(to)?;
        if from.name == to.name {
            return None;
        }
        let fdb = |leaf: &EvpnLeaf, dst: Option<Ipv4Addr>, delete: bool| ObjectChange::Fdb {
            entity: leaf.name.clone(),
            dev: leaf.vxlan.clone(),
            lladdr: pod.mac,
            dst,
            master: dst.is_none(),
            delete,
        };
        let neighbour = |leaf: &EvpnLeaf, lladdr: Option<[u8; 6]>| ObjectChange::Neighbour {
            entity: leaf.name.clone(),
            dev: leaf.bridge.clone(),
            address: pod.address,
            lladdr,
            state: NeighState::Permanent,
        };
        let mut out = vec![
            fdb(to, None, true),
            fdb(to, Some(from.vtep), true),
            neighbour(to, None),
            fdb(from, None, false),
            fdb(from, Some(to.vtep), false),
            neighbour(from, Some(pod.mac)),
        ];
        for other in self
            .leaves
            .iter()
            .filter(|l| l.name != from.name && l.name != to.name)
        {
            out.push(fdb(other, Some(to.vtep), false));
        }
        Some(out)
    }

    /// The segment after `pod` moved under `to`.
    pub fn with_move(&mut self, pod: &str, to: &str) {
        if let Some(p) = self.pods.iter_mut().find(|p| p.name == pod) {
            p.leaf = to.to_string();
        }
    }
}
