//! Resolution of `scenarios`: name, sender, target, source, backend,
//! expectations (counts, neighbours, nftables, filters, ranges) and netem.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde_saphyr::{Location, Spanned};

use super::{ENTITY_NAME_MAX, Resolver, Text};
use crate::error::unknown_hint;
use crate::model::*;
use crate::raw::*;

impl Resolver<'_> {
    pub(super) fn scenario(
        &mut self,
        raw: &RawScenario,
        lab: &Lab,
        names: &mut HashMap<String, Location>,
    ) -> Option<Scenario> {
        let before = self.problems.len();
        let name = &raw.name.value;
        if name.is_empty()
            || name.len() > ENTITY_NAME_MAX
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            self.err(
                &raw.name.referenced,
                format!("invalid scenario name `{name}`"),
                "invalid name",
                Some(format!(
                    "scenario names are lowercase letters, digits, '-' and '.', at most \
                     {ENTITY_NAME_MAX} characters: they name golden files and test trials"
                )),
            );
        } else if let Some(first) = names.get(name) {
            let first = first.line();
            self.err(
                &raw.name.referenced,
                format!("duplicate scenario name `{name}`, first at line {first}"),
                "duplicate",
                None,
            );
        } else {
            names.insert(name.clone(), raw.name.referenced);
        }

        let from = &raw.from.value;
        let sender = from != "vpc" && lab.interfaces_of(from).is_some();
        if !sender {
            let mut known: Vec<&str> = lab.nodes.iter().map(|n| n.name.as_str()).collect();
            known.extend(lab.pods.iter().map(|p| p.name.as_str()));
            known.extend(lab.clients.iter().map(|c| c.name.as_str()));
            known.extend(lab.objects.namespaces.iter().map(|n| n.name.as_str()));
            self.err(
                &raw.from.referenced,
                format!("unknown namespace, node, pod or client `{from}`"),
                "unknown sender",
                Some(unknown_hint("sender", from, &known)),
            );
        }
        let source = raw
            .source
            .as_ref()
            .filter(|_| sender)
            .and_then(|t| self.source(t, from, lab));

        let traffic = match raw.protocol {
            RawTraffic::Icmp => Traffic::Icmp,
            RawTraffic::Tcp => Traffic::Tcp,
            RawTraffic::Http => Traffic::Http,
            RawTraffic::Udp => Traffic::Udp,
        };
        let to = raw.to.value.trim();
        let (addr_text, port_text) = match to.rsplit_once(':') {
            Some((a, p)) => (a, Some(p)),
            None => (to, None),
        };
        let target = addr_text.parse::<Ipv4Addr>().ok();
        let port = port_text
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p > 0);
        if target.is_none() || (port_text.is_some() && port.is_none()) {
            self.err(
                &raw.to.referenced,
                format!("invalid target `{to}`"),
                "expected ADDRESS or ADDRESS:PORT",
                Some("write an ipv4 address, with `:PORT` for tcp, http and udp".into()),
            );
        } else if traffic == Traffic::Icmp && port.is_some() {
            self.err(
                &raw.to.referenced,
                format!("icmp has no ports: `{to}`"),
                "no port for icmp",
                Some(format!("write `to: {addr_text}`")),
            );
        } else if traffic != Traffic::Icmp && port.is_none() {
            self.err(
                &raw.to.referenced,
                format!("target `{to}` needs a port for {:?} traffic", traffic).to_lowercase(),
                "missing :PORT",
                Some(format!("write `to: {addr_text}:80`, say")),
            );
        }

        let (changes, link_changes, route_changes, object_changes) =
            self.changes(&raw.changes, lab);
        // Interfaces are named as they are during the scenario: a moved
        // pod's `POD/host` is its veth on the node it moved to.
        let moved;
        let during = if object_changes
            .iter()
            .any(|c| matches!(c, ObjectChange::Move { .. }))
        {
            let mut l = lab.clone();
            for c in &object_changes {
                if let ObjectChange::Move { pod, to, .. } = c
                    && let Some(p) = l.pods.iter_mut().find(|p| &p.name == pod)
                {
                    p.node = to.clone();
                }
            }
            moved = l;
            &moved
        } else {
            lab
        };
        let hops = |r: &mut Self, list: &[Text]| -> Vec<String> {
            list.iter()
                .filter_map(|h| match during.canonical_hop(h.value.trim()) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        r.err(
                            &h.referenced,
                            e,
                            "unknown interface",
                            Some(
                                "interfaces are ENTITY/IFNAME (see `labctl plan FILE`), \
                                 POD/host for a pod's veth on its node, or vpc"
                                    .into(),
                            ),
                        );
                        None
                    }
                })
                .collect()
        };
        let path = raw.expect.path.as_ref().map(|p| hops(self, p));
        let show_arp = raw.capture.arp;
        let sightings = |r: &mut Self, list: &[Spanned<RawSighting>]| -> Vec<Sighting> {
            list.iter()
                .filter_map(|spanned| {
                    let before = r.problems.len();
                    let s = &spanned.value;
                    let address = s.address.as_ref().and_then(|a| r.ipv4(a, "address"));
                    let src_mac = s.src_mac.as_ref().and_then(|m| r.filter_mac(m));
                    let dst_mac = s.dst_mac.as_ref().and_then(|m| r.filter_mac(m));
                    let vlan = s.vlan.as_ref().and_then(|v| {
                        if v.value > 4094 {
                            r.err(
                                &v.referenced,
                                format!("invalid vlan id {}", v.value),
                                "out of range",
                                Some("an 802.1Q VLAN id is 0 to 4094".into()),
                            );
                            return None;
                        }
                        Some(v.value as u16)
                    });
                    let vni = s.vni.as_ref().and_then(|v| {
                        if v.value > 0xff_ffff {
                            r.err(
                                &v.referenced,
                                format!("invalid vni {}", v.value),
                                "out of range",
                                Some(
                                    "a VXLAN network identifier has 24 bits: 0 to 16777215".into(),
                                ),
                            );
                            return None;
                        }
                        Some(v.value)
                    });
                    let protocol = s.protocol.as_ref().map(|p| {
                        let proto = match p.value {
                            RawSightProto::Arp => SightProto::Arp,
                            RawSightProto::Icmp => SightProto::Icmp,
                            RawSightProto::Tcp => SightProto::Tcp,
                            RawSightProto::Udp => SightProto::Udp,
                        };
                        if proto == SightProto::Arp && !show_arp {
                            r.err(
                                &p.referenced,
                                "ARP is not captured in this scenario".into(),
                                "arp not shown",
                                Some(
                                    "add `capture: {arp: true}` to the scenario: taps leave ARP \
                                     out unless asked"
                                        .into(),
                                ),
                            );
                        }
                        proto
                    });
                    if s.address.is_none()
                        && s.src_mac.is_none()
                        && s.dst_mac.is_none()
                        && s.vlan.is_none()
                        && s.vni.is_none()
                        && s.protocol.is_none()
                    {
                        r.err(
                            &spanned.referenced,
                            "a sighting needs something to look for".into(),
                            "no filter",
                            Some(
                                "give at least one of address, src_mac, dst_mac, vlan, vni, \
                                 protocol"
                                    .into(),
                            ),
                        );
                    }
                    let interfaces = hops(r, &s.interfaces);
                    (r.problems.len() == before).then_some(Sighting {
                        address,
                        src_mac,
                        dst_mac,
                        vlan,
                        vni,
                        protocol,
                        interfaces,
                        only: s.only,
                    })
                })
                .collect()
        };
        let seen_on = sightings(self, &raw.expect.seen_on);
        let not_seen_on = sightings(self, &raw.expect.not_seen_on);
        let server_saw_client = raw
            .expect
            .server_saw_client
            .as_ref()
            .and_then(|t| self.ipv4(t, "address"));
        let served_by = raw.expect.served_by.as_ref().and_then(|b| {
            let name = &b.value;
            let serves = lab
                .pods
                .iter()
                .any(|p| &p.name == name && !p.ports.is_empty())
                || lab
                    .objects
                    .namespaces
                    .iter()
                    .any(|n| &n.name == name && !n.ports.is_empty());
            if !serves {
                let known: Vec<&str> = lab
                    .pods
                    .iter()
                    .filter(|p| !p.ports.is_empty())
                    .map(|p| p.name.as_str())
                    .chain(
                        lab.objects
                            .namespaces
                            .iter()
                            .filter(|n| !n.ports.is_empty())
                            .map(|n| n.name.as_str()),
                    )
                    .collect();
                self.err(
                    &b.referenced,
                    format!("`{name}` is no pod or namespace that serves ports"),
                    "serves nothing",
                    Some(unknown_hint("server", name, &known)),
                );
                return None;
            }
            if traffic != Traffic::Http {
                self.err(
                    &b.referenced,
                    "only an HTTP answer says who served it".into(),
                    "not HTTP",
                    Some("use `protocol: http`, or leave `served_by` out".into()),
                );
                return None;
            }
            Some(name.clone())
        });
        let rtt_ms = raw
            .expect
            .rtt_ms
            .as_ref()
            .and_then(|r| self.range(r, "rtt_ms", false));
        let retransmits = raw.expect.retransmits.as_ref().and_then(|r| {
            if !matches!(traffic, Traffic::Tcp | Traffic::Http) {
                self.err(
                    &r.referenced,
                    format!(
                        "retransmissions are counted for tcp and http, and this scenario sends {}",
                        format!("{traffic:?}").to_lowercase()
                    ),
                    "not tcp",
                    Some("remove `retransmits`, or send `protocol: tcp`".into()),
                );
                return None;
            }
            self.range(r, "retransmits", true)
        });
        let pods: Vec<&str> = lab.pods.iter().map(|p| p.name.as_str()).collect();
        let nodes: Vec<&str> = lab.nodes.iter().map(|n| n.name.as_str()).collect();
        let entity = |r: &mut Self, text: &Option<Spanned<String>>, known: &[&str], what: &str| {
            let t = text.as_ref()?;
            if known.contains(&t.value.as_str()) {
                Some(t.value.clone())
            } else {
                r.err(
                    &t.referenced,
                    format!("unknown {what} `{}`", t.value),
                    "unknown",
                    Some(unknown_hint(what, &t.value, known)),
                );
                None
            }
        };
        let backend = entity(self, &raw.backend, &pods, "pod");
        if let (Some(pod), Some(target), Some(text)) = (&backend, target, &raw.backend) {
            self.backend_serves(pod, text, (target, port), &changes, lab);
        }
        let via_node = entity(self, &raw.via_node, &nodes, "node");
        let mut conntrack = Vec::new();
        for c in &raw.expect.conntrack {
            let mut places = nodes.clone();
            places.push("vpc");
            let on = entity(self, &Some(c.on.clone()), &places, "node");
            let tuple = |r: &mut Self, t: &Spanned<String>| {
                let m = TupleMatch::parse(&t.value);
                if m.is_none() {
                    r.err(
                        &t.referenced,
                        format!("invalid conntrack tuple `{}`", t.value),
                        "expected SRC[:PORT] -> DST[:PORT]",
                        Some("write e.g. `172.23.96.23 -> 192.168.13.23:80`".into()),
                    );
                }
                m
            };
            let original = tuple(self, &c.original);
            let reply = c.reply.as_ref().map(|t| tuple(self, t));
            if let (Some(on), Some(original)) = (on, original) {
                conntrack.push(ConntrackExpect {
                    on,
                    original,
                    reply: reply.flatten(),
                });
            }
        }
        let devices = self.positive_count(
            raw.expect.devices.as_ref(),
            "a request crosses at least one device",
            "devices",
        );
        let hops = self.positive_count(
            raw.expect.hops.as_ref(),
            "a request makes at least one hop",
            "hops",
        );
        let neighbours = self.neighbour_expects(&raw.expect.neighbours, lab);
        let nftables = self.nft_expects(&raw.expect.nftables, lab);
        if self.problems.len() > before {
            return None;
        }
        Some(Scenario {
            name: name.clone(),
            description: raw.description.clone(),
            from: from.clone(),
            source,
            target: target?,
            port,
            traffic,
            attempts: raw.attempts.unwrap_or(1).max(1),
            timeout_ms: raw.timeout_ms.unwrap_or(1000),
            changes,
            link_changes,
            route_changes,
            object_changes,
            backend,
            via_node,
            in_cluster_external: raw.in_cluster_external,
            show_arp,
            expect: Expect {
                result: match raw.expect.result.unwrap_or(RawResult::Connected) {
                    RawResult::Connected => ResultKind::Connected,
                    RawResult::Refused => ResultKind::Refused,
                    RawResult::Timeout => ResultKind::Timeout,
                    RawResult::Reset => ResultKind::Reset,
                    RawResult::Unreachable => ResultKind::Unreachable,
                },
                path,
                stacks: raw.expect.stacks,
                seen_on,
                not_seen_on,
                server_saw_client,
                served_by,
                conntrack,
                rtt_ms,
                retransmits,
                devices,
                hops,
                neighbours,
                nftables,
            },
        })
    }

    /// A scenario's `source:`: an IPv4 address the sender `from` holds
    /// (an unknown sender is reported on its own).
    fn source(&mut self, text: &Text, from: &str, lab: &Lab) -> Option<Ipv4Addr> {
        let address = self.ipv4(text, "source")?;
        let held = lab.addresses_of(from)?;
        // On lo the whole prefix is local (the kernel makes its prefix
        // route a local one: all of 127.0.0.0/8); elsewhere only the
        // address itself.
        if held
            .iter()
            .any(|(dev, net)| net.addr() == address || (dev == "lo" && net.contains(&address)))
        {
            return Some(address);
        }
        let listed: Vec<String> = held
            .iter()
            .map(|(dev, net)| format!("{dev} {net}"))
            .collect();
        self.err(
            &text.referenced,
            format!("source {address} is not an address of `{from}`"),
            "not the sender's",
            Some(format!(
                "the client binds to the source, so it must be local to the sender; `{from}` \
                 has: {}",
                listed.join(", ")
            )),
        );
        None
    }

    /// An expectation's count of the path (`devices`, `hops`): at least 1.
    fn positive_count(
        &mut self,
        n: Option<&Spanned<u32>>,
        message: &str,
        key: &str,
    ) -> Option<u32> {
        let n = n?;
        if n.value == 0 {
            self.err(
                &n.referenced,
                message.into(),
                &format!("zero {key}"),
                Some(format!(
                    "write the number of {key} on the path, e.g. `{key}: 18`"
                )),
            );
            return None;
        }
        Some(n.value)
    }

    /// `expect.neighbours`: a namespace of the lab, one of its interfaces,
    /// an IPv4 address, a MAC.
    fn neighbour_expects(
        &mut self,
        list: &[RawNeighbourExpect],
        lab: &Lab,
    ) -> Vec<NeighbourExpect> {
        let mut out = Vec::new();
        for n in list {
            let before = self.problems.len();
            let entity = n.netns.value.trim();
            let ifs = lab.interfaces_of(entity);
            if ifs.is_none() {
                let entities = lab.entities();
                let known: Vec<&str> = entities.iter().map(|(e, _)| e.as_str()).collect();
                self.err(
                    &n.netns.referenced,
                    format!("unknown namespace, node, pod or client `{entity}`"),
                    "unknown namespace",
                    Some(unknown_hint("namespace", entity, &known)),
                );
            }
            let dev = n.dev.as_ref().and_then(|d| {
                let name = d.value.trim();
                let ifs = ifs.as_ref()?;
                if ifs.iter().any(|i| i == name) {
                    Some(name.to_string())
                } else {
                    self.err(
                        &d.referenced,
                        format!("`{entity}` has no interface `{name}`"),
                        "unknown interface",
                        Some(format!("it has: {}", ifs.join(", "))),
                    );
                    None
                }
            });
            let address = self.ipv4(&n.address, "address");
            let lladdr = n.lladdr.as_ref().and_then(|m| self.filter_mac(m));
            if self.problems.len() > before {
                continue;
            }
            if let Some(address) = address {
                out.push(NeighbourExpect {
                    entity: entity.to_string(),
                    dev,
                    address,
                    lladdr,
                    present: n.present.unwrap_or(true),
                });
            }
        }
        out
    }

    /// `expect.nftables`: a namespace of the lab, each named once.
    fn nft_expects(&mut self, list: &[RawNftExpect], lab: &Lab) -> Vec<NftExpect> {
        let mut out: Vec<NftExpect> = Vec::new();
        for n in list {
            let entity = n.netns.value.trim();
            if lab.interfaces_of(entity).is_none() {
                let entities = lab.entities();
                let known: Vec<&str> = entities.iter().map(|(e, _)| e.as_str()).collect();
                self.err(
                    &n.netns.referenced,
                    format!("unknown namespace, node, pod or client `{entity}`"),
                    "unknown namespace",
                    Some(unknown_hint("namespace", entity, &known)),
                );
            } else if out.iter().any(|o| o.entity == entity) {
                self.err(
                    &n.netns.referenced,
                    format!("the ruleset of `{entity}` is expected twice"),
                    "again",
                    Some("one namespace has one ruleset: keep one expectation".into()),
                );
            } else {
                out.push(NftExpect {
                    entity: entity.to_string(),
                    empty: n.empty,
                });
            }
        }
        out
    }

    /// A MAC address to look for: any six hex octets (broadcast and
    /// multicast included, unlike a MAC a link is given).
    fn filter_mac(&mut self, text: &Text) -> Option<[u8; 6]> {
        self.hex_octets(text, "write six hex octets like 0a:58:0a:84:02:2e")
    }

    /// `{min, max}`: both at least 0, min not above max, whole numbers
    /// for counts.
    fn range(&mut self, raw: &Spanned<RawRange>, what: &str, whole: bool) -> Option<Range> {
        let r = &raw.value;
        if r.min.is_none() && r.max.is_none() {
            self.err(
                &raw.referenced,
                format!("`{what}` sets no bound"),
                "empty range",
                Some(format!("write `{what}: {{min: N}}`, `{{max: M}}` or both")),
            );
            return None;
        }
        let before = self.problems.len();
        for end in [&r.min, &r.max].into_iter().flatten() {
            let v = end.value;
            if !v.is_finite() || v < 0.0 {
                self.err(
                    &end.referenced,
                    format!("`{what}` bound {v} is negative"),
                    "negative",
                    Some("bounds are 0 or more".into()),
                );
            } else if whole && v.fract() != 0.0 {
                self.err(
                    &end.referenced,
                    format!("`{what}` counts segments: {v} is not a whole number"),
                    "not a count",
                    None,
                );
            }
        }
        if let (Some(a), Some(b)) = (&r.min, &r.max)
            && a.value > b.value
        {
            self.err(
                &b.referenced,
                format!("`{what}`: max {} is below min {}", b.value, a.value),
                "max below min",
                Some("swap them".into()),
            );
        }
        (self.problems.len() == before).then(|| Range {
            min: r.min.as_ref().map(|m| m.value),
            max: r.max.as_ref().map(|m| m.value),
        })
    }

    pub(super) fn netem(&mut self, raw: &Spanned<RawNetem>) -> Option<Netem> {
        let before = self.problems.len();
        let n = &raw.value;
        let field = |r: &mut Self,
                     v: &Option<Spanned<Scalar>>,
                     what: &str,
                     parse: &dyn Fn(&str) -> Result<u64, String>|
         -> u64 {
            let Some(v) = v else { return 0 };
            match parse(&v.value.0) {
                Ok(x) => x,
                Err(e) => {
                    r.err(&v.referenced, format!("netem {what}: {e}"), "invalid", None);
                    0
                }
            }
        };
        let duration = parse_netem_duration;
        let percent = |t: &str| Percent::parse(t).map(|p| u64::from(p.0));
        let delay_ns = field(self, &n.delay, "delay", &duration);
        let jitter_ns = field(self, &n.jitter, "jitter", &duration);
        let loss = Percent(field(self, &n.loss, "loss", &percent) as u32);
        let rate_bps = field(self, &n.rate, "rate", &parse_rate);
        let reorder = Percent(field(self, &n.reorder, "reorder", &percent) as u32);
        if self.problems.len() > before {
            return None;
        }
        let netem = Netem {
            delay_ns,
            jitter_ns,
            loss,
            rate_bps,
            reorder,
        };
        if netem == Netem::default() {
            self.err(
                &raw.referenced,
                "netem with no impairment".into(),
                "nothing to do",
                Some("give it delay, jitter, loss, rate or reorder, e.g. `{delay: 50ms}`".into()),
            );
            return None;
        }
        // netem reorders by sending some packets without the delay, and
        // jitter varies the delay: neither means anything without one
        // (iproute2 refuses `reorder` without `delay` too).
        for (v, what) in [(&n.jitter, "jitter"), (&n.reorder, "reorder")] {
            if let Some(v) = v
                && delay_ns == 0
            {
                self.err(
                    &v.referenced,
                    format!("netem {what} needs a delay"),
                    "no delay",
                    Some(format!(
                        "add `delay: 50ms`, say: {what} works on delayed packets"
                    )),
                );
            }
        }
        (self.problems.len() == before).then_some(netem)
    }
}
