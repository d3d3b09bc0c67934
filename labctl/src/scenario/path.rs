//! The request's path, derived from what the taps saw: pure code on plain
//! values (no sockets, no root), so every rule below has a unit test.
//!
//! A path is the list of hops the request crossed, in the order the kernel
//! stamped them. A hop is an interface `ENTITY/IFNAME`, or a folded group:
//! every interface of the VPC is the one hop `vpc`, every interface of a
//! namespace with role `switch` the one hop named after it, as the
//! articles draw a cloud network or a top-of-rack switch. Rules:
//!
//! - A hop counts at its first crossing. It counts again when the request
//!   crosses it later the other way with other hops in between (a return
//!   leg: up a bond to a router and back down the same bond on another
//!   VLAN; an ENI the request left by and comes back in by through the
//!   SLB). A crossing the same way as an earlier one adds nothing, so
//!   retransmissions, which repeat the whole walk, add nothing.
//! - A folded group counts once per visit: consecutive crossings inside it
//!   are one hop, and it is written only on the way to a hop that counts
//!   (or at the end of the path, where the request was lost inside it).
//! - A bridge goes between two of its ports when the request went from one
//!   to the other: a frame switched port to port never shows on the bridge
//!   device, yet the articles name it.
//! - The outer UDP packet of a VXLAN-encapsulated request is the request
//!   (the caller's `is_request` looks through the encapsulation), so the
//!   underlay's interfaces are hops of the path.
//!
//! The device count of `expect.devices` is the path's length: each crossing
//! once, a folded group once per visit, a bridge put in between once.

use std::collections::HashMap;
use std::time::Duration;

use crate::observe::capture::Direction;

/// One tap's sighting of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossing {
    /// The kernel's timestamp.
    pub ts: Duration,
    /// `ENTITY/IFNAME`.
    pub hop: String,
    /// The folded hop this interface belongs to (`vpc`, a switch's name).
    pub group: Option<String>,
    pub direction: Direction,
    /// The interface's height in its namespace's device stack ([`levels`]);
    /// a bridge of `masters` counts at least 1.
    pub level: u8,
    /// The 802.1Q tag the frame carried there, if any.
    pub vlan: Option<u16>,
}

/// When a tap saw a packet, for ordering. Within one namespace the kernel
/// stamps a packet once and every tap there sees the same time; such ties
/// are ordered the way the stack moves a packet: coming in from the bottom
/// of the namespace's device stack up (a bond's slave, the bond, the vlan
/// on it; a bridge port, the bridge), going out from the top down. `level`
/// is the device's height in that stack ([`levels`]).
pub fn when(ts: Duration, direction: Direction, level: u8) -> (Duration, u8) {
    let level = level.min(MAX_LEVEL);
    let rank = match direction {
        Direction::In => level,
        Direction::Out => 2 * MAX_LEVEL + 1 - level,
    };
    (ts, rank)
}

/// The highest stack a namespace is thought to have; deeper is cut here.
const MAX_LEVEL: u8 = 8;

/// Each device's height in its namespace's stack, from (upper, lower)
/// pairs (`ENTITY/IFNAME`): 0 for a device with nothing below it, else one
/// more than the highest device below it. A cycle, which the kernel does
/// not make, stops at [`MAX_LEVEL`].
pub fn levels(pairs: &[(String, String)]) -> HashMap<String, u8> {
    fn height(dev: &str, below: &HashMap<&str, Vec<&str>>, depth: u8) -> u8 {
        if depth >= MAX_LEVEL {
            return MAX_LEVEL;
        }
        below.get(dev).map_or(0, |v| {
            1 + v
                .iter()
                .map(|l| height(l, below, depth + 1))
                .max()
                .unwrap_or(0)
        })
    }
    let mut below: HashMap<&str, Vec<&str>> = HashMap::new();
    for (upper, lower) in pairs {
        below.entry(upper).or_default().push(lower);
    }
    below
        .keys()
        .map(|d| (d.to_string(), height(d, &below, 0).min(MAX_LEVEL)))
        .collect()
}

/// The request's route from its crossings (in any order); `masters` maps a
/// bridge port `ENTITY/PORT` to its bridge `ENTITY/BRIDGE`. See the module
/// doc for the rules.
pub fn derive(crossings: &[Crossing], masters: &HashMap<String, String>) -> Vec<String> {
    derive_tagged(crossings, masters)
        .into_iter()
        .map(|(h, _)| h)
        .collect()
}

/// [`derive`], each hop with the 802.1Q tag the request carried at the
/// crossing that made it a hop (a folded group: where the request entered
/// it; a bridge put in between: none).
pub fn derive_tagged(
    crossings: &[Crossing],
    masters: &HashMap<String, String>,
) -> Vec<(String, Option<u16>)> {
    let mut sorted: Vec<&Crossing> = crossings.iter().collect();
    let is_master = |h: &str| masters.values().any(|b| b == h);
    sorted.sort_by_key(|c| {
        let level = c.level.max(u8::from(is_master(&c.hop)));
        when(c.ts, c.direction, level)
    });
    let mut first: Vec<(String, Option<u16>)> = Vec::new();
    // Every crossing so far, as (hop, direction).
    let mut visits: Vec<(&str, Direction)> = Vec::new();
    // The folded groups entered since the last hop that counted, in order
    // (a ToR, then the aggregation switch above it).
    let mut pending: Vec<(&str, Option<u16>)> = Vec::new();
    for c in sorted {
        if let Some(g) = c.group.as_deref() {
            let last = pending
                .last()
                .map(|p| p.0)
                .or(first.last().map(|f| f.0.as_str()));
            if last != Some(g) {
                pending.push((g, c.vlan));
            }
            continue;
        }
        let h = c.hop.as_str();
        let counted = first.iter().any(|f| f.0 == h);
        let new_way = !visits.contains(&(h, c.direction));
        visits.push((h, c.direction));
        // Back the other way after other hops (or a group): a return leg.
        let revisit =
            counted && new_way && (!pending.is_empty() || first.last().is_some_and(|l| l.0 != h));
        if counted && !revisit {
            pending.clear();
            continue;
        }
        first.extend(pending.drain(..).map(|(g, v)| (g.to_string(), v)));
        first.push((h.to_string(), c.vlan));
    }
    first.extend(pending.drain(..).map(|(g, v)| (g.to_string(), v)));
    let mut path: Vec<(String, Option<u16>)> = Vec::new();
    for (h, vlan) in first {
        if let (Some((prev, _)), Some(bridge)) = (path.last(), masters.get(&h))
            && masters.get(prev) == Some(bridge)
            && path.last().map(|p| &p.0) != Some(bridge)
        {
            path.push((bridge.clone(), None));
        }
        path.push((h, vlan));
    }
    path
}

/// The path as a network engineer counts hops on a drawing (the articles'
/// "18 hops"), each hop the path's devices it stands for: a device and the
/// one stacked right under or on it (`stacked` holds such upper/lower
/// pairs: a vlan and its parent, a bond and its slave; not a bridge and
/// its ports) crossed one after the other are one hop, a NIC or a gateway
/// sub-interface; folded groups (switches, the VPC) crossed one after the
/// other are one hop, the switched network. A hop joins a device to the
/// last one before it only, so a router's trunk, in by one vlan and out by
/// another, is two hops.
pub fn hops(path: &[String], stacked: &[(String, String)]) -> Vec<Vec<String>> {
    let related = |a: &str, b: &str| {
        stacked
            .iter()
            .any(|(u, l)| (u == a && l == b) || (u == b && l == a))
    };
    let folded = |h: &str| !h.contains('/');
    let mut out: Vec<Vec<String>> = Vec::new();
    for h in path {
        let joins = out
            .last()
            .and_then(|hop| hop.last())
            .is_some_and(|last| (folded(last) && folded(h)) || related(last, h));
        match out.last_mut() {
            Some(hop) if joins => hop.push(h.clone()),
            _ => out.push(vec![h.clone()]),
        }
    }
    out
}

/// The tags of a hop's devices in [`derive_tagged`]'s path, in words: ``,
/// ` [vlan 100]`, or ` [vlan 100, 200]` where its devices carried several.
pub fn hop_vlans(hop: &[String], tagged: &[(String, Option<u16>)], at: usize) -> String {
    let mut tags: Vec<u16> = Vec::new();
    for (k, _) in hop.iter().enumerate() {
        if let Some((_, Some(v))) = tagged.get(at + k)
            && !tags.contains(v)
        {
            tags.push(*v);
        }
    }
    if tags.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = tags.iter().map(u16::to_string).collect();
        format!(" [vlan {}]", list.join(", "))
    }
}

/// One hop of [`hops`] in words: its devices joined by `+`, the namespace
/// said once (`core/eth0+eth0.100`, `tor1+agg`).
pub fn hop_text(hop: &[String]) -> String {
    let mut out = String::new();
    let mut entity: Option<&str> = None;
    for (i, h) in hop.iter().enumerate() {
        if i > 0 {
            out.push('+');
        }
        match h.split_once('/') {
            Some((e, dev)) if entity == Some(e) => out.push_str(dev),
            Some((e, _)) => {
                entity = Some(e);
                out.push_str(h);
            }
            None => out.push_str(h),
        }
    }
    out
}

/// Network stacks the path crosses: its namespaces (the VPC and switches
/// folded), each once.
pub fn stacks(path: &[String]) -> u32 {
    let mut entities: Vec<&str> = path
        .iter()
        .filter(|h| *h != "vpc" && h.contains('/'))
        .filter_map(|h| h.split('/').next())
        .collect();
    entities.sort_unstable();
    entities.dedup();
    entities.len() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, hop: &str, direction: Direction) -> Crossing {
        Crossing {
            ts: Duration::from_millis(ms),
            hop: hop.into(),
            group: None,
            direction,
            level: 0,
            vlan: None,
        }
    }

    fn folded(ms: u64, hop: &str, group: &str, direction: Direction) -> Crossing {
        Crossing {
            group: Some(group.into()),
            ..at(ms, hop, direction)
        }
    }

    use Direction::{In, Out};

    /// Up a bond's slave to the bond to a vlan on it, stamped once: the
    /// stack order, lowest first coming in and highest first going out,
    /// whatever order the taps were read in.
    #[test]
    fn stacked_devices_tie_bottom_up_in_and_top_down_out() {
        let pairs: Vec<(String, String)> = [
            ("s/bond0", "s/eth0"),
            ("s/bond0", "s/eth1"),
            ("s/bond0.100", "s/bond0"),
            ("s/bond0.200", "s/bond0"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let levels = levels(&pairs);
        assert_eq!(levels["s/bond0"], 1);
        assert_eq!(levels["s/bond0.100"], 2);
        assert!(!levels.contains_key("s/eth0"));
        let with = |mut c: Crossing| {
            c.level = levels.get(&c.hop).copied().unwrap_or(0);
            c
        };
        let crossings: Vec<Crossing> = [
            at(1, "a/eth0", Out),
            at(2, "s/bond0.100", In),
            at(2, "s/bond0", In),
            at(2, "s/eth0", In),
            at(2, "s/eth0", Out),
            at(2, "s/bond0", Out),
            at(2, "s/bond0.200", Out),
        ]
        .into_iter()
        .map(with)
        .collect();
        assert_eq!(
            derive(&crossings, &HashMap::new()),
            [
                "a/eth0",
                "s/eth0",
                "s/bond0",
                "s/bond0.100",
                "s/bond0.200",
                "s/bond0",
                "s/eth0"
            ]
        );
        // A cycle (which the kernel never makes) ends.
        let cycle = super::levels(&[("x".into(), "y".into()), ("y".into(), "x".into())]);
        assert!(cycle["x"] <= MAX_LEVEL);
    }

    /// A router's trunk, in on VLAN 100 and out on VLAN 200: each hop
    /// says the tag the request carried on its devices there.
    #[test]
    fn hops_say_the_vlan_seen_at_each() {
        let tag = |mut c: Crossing, v: Option<u16>| {
            c.vlan = v;
            c
        };
        let c = [
            at(1, "a/eth0", Out),
            tag(folded(2, "sw/p1", "sw", In), Some(100)),
            tag(folded(2, "sw/p2", "sw", Out), Some(100)),
            tag(at(3, "r/eth0", In), Some(100)),
            at(4, "r/eth0.100", In),
            at(5, "r/eth0.200", Out),
            tag(at(6, "r/eth0", Out), Some(200)),
            tag(folded(7, "sw/p2", "sw", In), Some(200)),
            tag(folded(7, "sw/p3", "sw", Out), Some(200)),
            at(8, "b/eth0", In),
        ];
        let tagged = derive_tagged(&c, &HashMap::new());
        let path: Vec<String> = tagged.iter().map(|t| t.0.clone()).collect();
        let stacked = [
            ("r/eth0.100".to_string(), "r/eth0".to_string()),
            ("r/eth0.200".to_string(), "r/eth0".to_string()),
        ];
        let mut at = 0;
        let text: Vec<String> = hops(&path, &stacked)
            .iter()
            .map(|h| {
                let t = format!("{}{}", hop_text(h), hop_vlans(h, &tagged, at));
                at += h.len();
                t
            })
            .collect();
        assert_eq!(
            text,
            [
                "a/eth0",
                "sw [vlan 100]",
                "r/eth0+eth0.100 [vlan 100]",
                "r/eth0.200+eth0 [vlan 200]",
                "sw [vlan 200]",
                "b/eth0"
            ]
        );
    }

    /// Two switches in a row (a ToR, then the aggregation switch) are two
    /// hops of the path, in the order crossed, each once.
    #[test]
    fn switches_in_a_row_are_each_a_hop() {
        let c = [
            at(1, "a/eth0", Out),
            folded(2, "tor1/swp1", "tor1", In),
            folded(2, "tor1/uplink", "tor1", Out),
            folded(3, "agg/swp1", "agg", In),
            folded(3, "agg/swp3", "agg", Out),
            at(4, "r/eth0", In),
            at(5, "r/eth0", Out),
            folded(6, "agg/swp3", "agg", In),
            folded(6, "agg/swp2", "agg", Out),
            folded(7, "tor2/uplink", "tor2", In),
            folded(7, "tor2/swp2", "tor2", Out),
            at(8, "b/eth0", In),
        ];
        assert_eq!(
            derive(&c, &HashMap::new()),
            ["a/eth0", "tor1", "agg", "r/eth0", "agg", "tor2", "b/eth0"]
        );
    }

    /// Ctrip's count: a bond and its slave are one NIC, a router's trunk
    /// with each gateway sub-interface one hop per vlan, switches in a row
    /// one hop, a bridge and its ports apart.
    #[test]
    fn hops_join_stacked_devices_and_switches_in_a_row() {
        let path: Vec<String> = [
            "i/eth0",
            "c/tap",
            "c/br",
            "c/bond0",
            "c/eth0",
            "tor1",
            "agg",
            "r/eth0",
            "r/eth0.100",
            "r/eth0.200",
            "r/eth0",
            "agg",
            "tor2",
            "d/eth0",
            "d/bond0",
        ]
        .iter()
        .map(|h| h.to_string())
        .collect();
        let stacked: Vec<(String, String)> = [
            ("c/bond0", "c/eth0"),
            ("d/bond0", "d/eth0"),
            ("r/eth0.100", "r/eth0"),
            ("r/eth0.200", "r/eth0"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let hops = hops(&path, &stacked);
        let text: Vec<String> = hops.iter().map(|h| hop_text(h)).collect();
        assert_eq!(
            text,
            [
                "i/eth0",
                "c/tap",
                "c/br",
                "c/bond0+eth0",
                "tor1+agg",
                "r/eth0+eth0.100",
                "r/eth0.200+eth0",
                "agg+tor2",
                "d/eth0+bond0"
            ]
        );
        // Nothing stacked: one hop a device.
        assert_eq!(super::hops(&path, &[]).len(), path.len() - 2);
    }

    #[test]
    fn hops_in_timestamp_order_with_ties_by_direction() {
        let c = [
            at(2, "b/eth0", Out),
            at(1, "a/eth0", Out),
            at(2, "b/eth1", In),
        ];
        assert_eq!(derive(&c, &HashMap::new()), ["a/eth0", "b/eth1", "b/eth0"]);
    }

    #[test]
    fn retransmissions_add_nothing() {
        let walk = |t: u64| [at(t, "a/eth0", Out), at(t + 1, "b/eth0", In)];
        let c: Vec<Crossing> = walk(0)
            .into_iter()
            .chain(walk(1000))
            .chain(walk(2000))
            .collect();
        assert_eq!(derive(&c, &HashMap::new()), ["a/eth0", "b/eth0"]);
    }

    #[test]
    fn a_return_leg_over_the_same_bond_counts_twice() {
        // inst1 up through its node's bond (VLAN 100) to a router, back down
        // the same bond (VLAN 200) to inst2; then the retransmission.
        let walk = |t: u64| {
            [
                at(t, "node/bond0", Out),
                at(t + 1, "core/eth0.100", In),
                at(t + 2, "core/eth0.200", Out),
                at(t + 3, "node/bond0", In),
                at(t + 4, "inst2/eth0", In),
            ]
        };
        let c: Vec<Crossing> = walk(0).into_iter().chain(walk(1000)).collect();
        assert_eq!(
            derive(&c, &HashMap::new()),
            [
                "node/bond0",
                "core/eth0.100",
                "core/eth0.200",
                "node/bond0",
                "inst2/eth0"
            ]
        );
    }

    #[test]
    fn in_and_out_of_one_interface_back_to_back_is_one_crossing() {
        // A router forwarding out of the interface it received on: nothing
        // in between, so no return leg.
        let c = [
            at(1, "r/eth0", In),
            at(2, "r/eth0", Out),
            at(3, "b/eth0", In),
        ];
        assert_eq!(derive(&c, &HashMap::new()), ["r/eth0", "b/eth0"]);
    }

    #[test]
    fn switch_folds_into_one_hop_per_visit() {
        let c = [
            at(1, "node/bond0", Out),
            folded(2, "tor/p1", "tor", In),
            folded(2, "tor/p9", "tor", Out),
            at(3, "core/eth0.100", In),
            at(4, "core/eth0.200", Out),
            folded(5, "tor/p9", "tor", In),
            folded(5, "tor/p1", "tor", Out),
            at(6, "node/bond0", In),
        ];
        let path = derive(&c, &HashMap::new());
        assert_eq!(
            path,
            [
                "node/bond0",
                "tor",
                "core/eth0.100",
                "core/eth0.200",
                "tor",
                "node/bond0"
            ]
        );
        // The devices a request crossed: each crossing once.
        assert_eq!(path.len(), 6);
        assert_eq!(stacks(&path), 2);
    }

    #[test]
    fn vpc_hairpin_brings_an_eni_back() {
        let c = [
            at(1, "node1/eth0", Out),
            folded(2, "vpc/eni1", "vpc", In),
            folded(3, "vpc/eni1", "vpc", Out),
            at(4, "node1/eth0", In),
        ];
        assert_eq!(
            derive(&c, &HashMap::new()),
            ["node1/eth0", "vpc", "node1/eth0"]
        );
    }

    #[test]
    fn a_request_lost_in_a_group_ends_there() {
        let c = [at(1, "a/eth0", Out), folded(2, "vpc/x", "vpc", In)];
        assert_eq!(derive(&c, &HashMap::new()), ["a/eth0", "vpc"]);
    }

    #[test]
    fn bridge_goes_between_two_of_its_ports() {
        let masters: HashMap<String, String> = [
            ("n/veth1".to_string(), "n/br0".to_string()),
            ("n/veth2".to_string(), "n/br0".to_string()),
        ]
        .into();
        let c = [at(1, "n/veth1", In), at(1, "n/veth2", Out)];
        let path = derive(&c, &masters);
        assert_eq!(path, ["n/veth1", "n/br0", "n/veth2"]);
        assert_eq!(path.len(), 3, "the bridge counts as a device");
    }

    #[test]
    fn a_bridge_crossed_on_both_legs_counts_on_both() {
        // Up from inst1's tap through br-int to the uplink, back down from
        // the uplink through br-int to inst2's tap.
        let masters: HashMap<String, String> = ["tap1", "tap2", "int-br-bond"]
            .iter()
            .map(|p| (format!("n/{p}"), "n/br-int".to_string()))
            .collect();
        let c = [
            at(1, "n/tap1", In),
            at(1, "n/int-br-bond", Out),
            at(2, "core/eth0.100", In),
            at(2, "core/eth0.200", Out),
            at(3, "n/int-br-bond", In),
            at(3, "n/tap2", Out),
        ];
        assert_eq!(
            derive(&c, &masters),
            [
                "n/tap1",
                "n/br-int",
                "n/int-br-bond",
                "core/eth0.100",
                "core/eth0.200",
                "n/int-br-bond",
                "n/br-int",
                "n/tap2"
            ]
        );
    }

    #[test]
    fn vxlan_underlay_hops_are_on_the_path() {
        // pod/vxlan1 sends the inner packet; the worker's ens3 and the VM's
        // ens2 carry the outer UDP packet (the caller counts it as the
        // request), podns/vxlan0 receives the inner one.
        let c = [
            at(1, "pod/vxlan1", Out),
            at(1, "worker/ens3", Out),
            at(2, "podvm/ens2", In),
            at(2, "podns/vxlan0", In),
        ];
        assert_eq!(
            derive(&c, &HashMap::new()),
            ["pod/vxlan1", "worker/ens3", "podvm/ens2", "podns/vxlan0"]
        );
    }
}
