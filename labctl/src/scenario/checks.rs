//! A scenario's expectations against what the run observed: the outcome,
//! path, devices and sightings against the report and the captured
//! packets, and the neighbour tables, rulesets and conntrack entries read
//! back after the traffic. Each becomes a [`Check`]; none decides an
//! outcome of its own.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use labctl_topology::{Scenario, SightProto, Sighting};
use serde::Serialize;

use crate::observe::capture::{Flow, Mac, Packet, Proto};
use crate::observe::{self, conntrack};

use super::Report;
use super::report::word;

/// One expectation and whether the kernel met it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    /// What was observed, when it differs.
    pub detail: Option<String>,
}

/// Does any packet on this hop (`vpc` or a switch: any of its interfaces)
/// match the sighting's filters?
fn hop_sees(
    seen: &[(&Packet, Flow)],
    at: &dyn Fn(&Packet, &str) -> bool,
    want: &str,
    s: &Sighting,
) -> bool {
    seen.iter().any(|(p, f)| at(p, want) && matches(f, s))
}

/// Does a packet match every filter of a sighting? Addresses, MACs and
/// VLAN ids match on any header (the outer one or one carried in VXLAN),
/// the VNI on the VXLAN header, the protocol on the innermost packet.
pub(super) fn matches(f: &Flow, s: &Sighting) -> bool {
    let any = |test: &dyn Fn(&Flow) -> bool| layers(f).any(test);
    s.address.is_none_or(|a| {
        let a = IpAddr::V4(a);
        any(&|l| l.src == a || l.dst == a)
    }) && s
        .src_mac
        .is_none_or(|m| any(&|l| l.src_mac == Some(Mac(m))))
        && s.dst_mac
            .is_none_or(|m| any(&|l| l.dst_mac == Some(Mac(m))))
        && s.vlan.is_none_or(|v| any(&|l| l.vlan == Some(v)))
        && s.vni.is_none_or(|v| any(&|l| l.vni == Some(v)))
        && s.protocol.is_none_or(|want| {
            matches!(
                (want, &f.innermost().protocol),
                (SightProto::Arp, Proto::Arp { .. })
                    | (SightProto::Icmp, Proto::Icmp { .. })
                    | (SightProto::Tcp, Proto::Tcp { .. })
                    | (SightProto::Udp, Proto::Udp)
            )
        })
}

/// A flow and the flows it carries, outermost first.
fn layers(f: &Flow) -> impl Iterator<Item = &Flow> {
    std::iter::successors(Some(f), |l| l.inner.as_deref())
}

pub(super) fn check(
    sc: &Scenario,
    r: &Report,
    seen: &[(&Packet, Flow)],
    at: &dyn Fn(&Packet, &str) -> bool,
    hop: &dyn Fn(&Packet) -> String,
    group_of: &dyn Fn(&Packet) -> Option<String>,
) -> Vec<Check> {
    let mut out = Vec::new();
    let mut push = |what: String, ok: bool, detail: Option<String>| {
        out.push(Check {
            what,
            ok,
            detail: if ok { None } else { detail },
        })
    };
    let want = sc.expect.result;
    push(
        format!("result is {}", word(want)),
        r.result == Some(want),
        Some(format!("got: {}", r.detail)),
    );
    if let Some(path) = &sc.expect.path {
        push(
            format!("path is {}", path.join(" -> ")),
            &r.path == path,
            Some(format!("got: {}", r.path.join(" -> "))),
        );
    }
    if let Some(n) = sc.expect.stacks {
        push(
            format!("crosses {n} network stacks"),
            r.stacks == n,
            Some(format!("got: {}", r.stacks)),
        );
    }
    if let Some(n) = sc.expect.devices {
        push(
            format!("crosses {n} devices"),
            r.devices == n,
            Some(format!("got: {}", r.devices)),
        );
    }
    if let Some(n) = sc.expect.hops {
        push(
            format!("makes {n} hops"),
            r.hops.len() == n as usize,
            Some(format!("got: {}", r.hops.len())),
        );
    }
    for s in &sc.expect.seen_on {
        let what = s.describe();
        let missing: Vec<&str> = s
            .interfaces
            .iter()
            .filter(|i| !hop_sees(seen, at, i, s))
            .map(String::as_str)
            .collect();
        let label = match (s.only, s.interfaces.is_empty()) {
            (true, true) => format!("{what} seen on no interface"),
            (true, false) => format!("{what} seen only on {}", s.interfaces.join(", ")),
            (false, _) => format!("{what} seen on {}", s.interfaces.join(", ")),
        };
        let mut detail = Vec::new();
        if !missing.is_empty() {
            detail.push(format!("not seen on {}", missing.join(", ")));
        }
        if s.only {
            let mut extra: Vec<String> = seen
                .iter()
                .filter(|(_, f)| matches(f, s))
                .map(|(p, _)| group_of(p).unwrap_or_else(|| hop(p)))
                .filter(|h| !s.interfaces.contains(h))
                .collect();
            extra.sort();
            extra.dedup();
            if !extra.is_empty() {
                detail.push(format!("also seen on {}", extra.join(", ")));
            }
        }
        push(label, detail.is_empty(), Some(detail.join("; ")));
    }
    for s in &sc.expect.not_seen_on {
        let hits: Vec<&str> = s
            .interfaces
            .iter()
            .filter(|i| hop_sees(seen, at, i, s))
            .map(String::as_str)
            .collect();
        push(
            format!("{} not seen on {}", s.describe(), s.interfaces.join(", ")),
            hits.is_empty(),
            Some(format!("seen on {}", hits.join(", "))),
        );
    }
    if let Some(range) = sc.expect.rtt_ms {
        push(
            format!("round trip {range} ms"),
            r.rtt_ms.is_some_and(|v| range.contains(v)),
            Some(match r.rtt_ms {
                Some(v) => format!("got: {v:.2} ms"),
                None => format!("got no round trip: {}", r.detail),
            }),
        );
    }
    if let Some(range) = sc.expect.retransmits {
        push(
            format!("retransmissions {range}"),
            r.retransmits.is_some_and(|v| range.contains(f64::from(v))),
            Some(match r.retransmits {
                Some(v) => format!("got: {v}"),
                None => format!("no TCP connection to count on: {}", r.detail),
            }),
        );
    }
    if let Some(by) = &sc.expect.served_by {
        push(
            format!("served by {by}"),
            r.served_by.as_ref() == Some(by),
            Some(format!(
                "got: {}",
                r.served_by.as_deref().unwrap_or("no server's answer")
            )),
        );
    }
    if let Some(addr) = sc.expect.server_saw_client {
        push(
            format!("server saw client {addr}"),
            r.server_saw_client == Some(addr),
            Some(format!(
                "got: {}",
                r.server_saw_client
                    .map_or("nothing".to_string(), |a| a.to_string())
            )),
        );
    }
    out
}

/// The scenario's neighbour expectations against the tables read back.
pub(super) fn check_neighbours(
    sc: &Scenario,
    tables: &HashMap<String, Vec<observe::Neighbour>>,
) -> Vec<Check> {
    sc.expect
        .neighbours
        .iter()
        .map(|want| {
            let table = tables.get(&want.entity).map_or(&[][..], Vec::as_slice);
            let hit = |n: &&observe::Neighbour| {
                n.address == IpAddr::V4(want.address)
                    && n.lladdr.is_some()
                    && !matches!(n.state.as_str(), "INCOMPLETE" | "FAILED")
                    && want.dev.as_ref().is_none_or(|d| *d == n.dev)
                    && want.lladdr.is_none_or(|m| n.lladdr == Some(m))
            };
            let found: Vec<String> = table.iter().filter(hit).map(ToString::to_string).collect();
            let ok = found.is_empty() != want.present;
            let mut what = format!("neighbour on {}: {}", want.entity, want.address);
            if let Some(d) = &want.dev {
                let _ = write!(what, " dev {d}");
            }
            if let Some(m) = &want.lladdr {
                let _ = write!(what, " lladdr {}", labctl_topology::format_mac(m));
            }
            if !want.present {
                what.push_str(" absent");
            }
            let detail = if want.present {
                let same: Vec<String> = table
                    .iter()
                    .filter(|n| n.address == IpAddr::V4(want.address))
                    .map(ToString::to_string)
                    .collect();
                if same.is_empty() {
                    format!("no entry for {}", want.address)
                } else {
                    format!("entries: {}", same.join("; "))
                }
            } else {
                format!("entries: {}", found.join("; "))
            };
            Check {
                what,
                ok,
                detail: (!ok).then_some(detail),
            }
        })
        .collect()
}

/// The scenario's ruleset expectations against the rulesets read back.
pub(super) fn check_rulesets(
    sc: &Scenario,
    rulesets: &HashMap<String, observe::Ruleset>,
) -> Vec<Check> {
    sc.expect
        .nftables
        .iter()
        .map(|want| {
            let (ok, detail) = match rulesets.get(&want.entity) {
                Some(r) => (r.is_empty() == want.empty, r.summary()),
                None => (false, "not read".to_string()),
            };
            let what = if want.empty { "empty" } else { "not empty" };
            Check {
                what: format!("ruleset of {}: {what}", want.entity),
                ok,
                detail: (!ok).then_some(detail),
            }
        })
        .collect()
}

/// The scenario's conntrack expectations against the entries read back.
pub(super) fn check_conntrack(sc: &Scenario, ct: &[(String, Vec<conntrack::Entry>)]) -> Vec<Check> {
    sc.expect
        .conntrack
        .iter()
        .map(|want| {
            let entries: &[conntrack::Entry] = ct
                .iter()
                .find(|(e, _)| *e == want.on)
                .map_or(&[], |(_, v)| v.as_slice());
            let tuple = |m: &labctl_topology::TupleMatch, t: &conntrack::Tuple| {
                m.matches(t.src, t.sport, t.dst, t.dport)
            };
            let ok = entries.iter().any(|e| {
                tuple(&want.original, &e.original)
                    && want.reply.as_ref().is_none_or(|r| tuple(r, &e.reply))
            });
            let reply = want
                .reply
                .map(|r| format!(", reply {r}"))
                .unwrap_or_default();
            Check {
                what: format!("conntrack on {}: {}{reply}", want.on, want.original),
                ok,
                detail: (!ok).then(|| {
                    let lines = conntrack::format(entries, false);
                    if lines.is_empty() {
                        "no entries".to_string()
                    } else {
                        format!("entries: {}", lines.join("; "))
                    }
                }),
            }
        })
        .collect()
}
