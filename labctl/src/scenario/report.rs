//! What one run of a scenario showed, as a value ([`Report`], serialised
//! for JSON) and as text: the golden text a golden file holds and the
//! rendering `labctl run` prints, with the sighting table and the other
//! texts (flows, ports, eBPF translations) they are made of.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use labctl_topology::{ResultKind, Traffic};
use serde::Serialize;

use crate::observe::capture::{self, Direction, Flow, Packet, Proto};

use super::{Check, Timings, is_ephemeral, path};

/// One row of the sighting table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `ENTITY/IFNAME`.
    pub interface: String,
    pub direction: &'static str,
    /// tcpdump-like, ephemeral ports as `*`: `172.23.96.23:* > 172.23.96.24:80 tcp S`.
    pub flow: String,
    pub packets: u32,
    /// Whether `packets` is stable run to run (it is not for established
    /// TCP traffic).
    pub count_stable: bool,
}

/// Everything one run of a scenario showed.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub description: Option<String>,
    pub from: String,
    /// The address the client sent from, when the scenario chose it
    /// (`source:`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Ipv4Addr>,
    pub to: String,
    pub traffic: Traffic,
    /// The outcome as the client's socket saw it; `None` for a local error.
    pub result: Option<ResultKind>,
    /// The outcome in words (`connected in 0.41 ms`, `connection refused`).
    pub detail: String,
    /// The entity whose built-in server answered (HTTP).
    pub served_by: Option<String>,
    /// The client address the server saw.
    pub server_saw_client: Option<Ipv4Addr>,
    /// Where the request went, in order; `vpc` for the VPC.
    pub path: Vec<String>,
    /// Network stacks crossed (namespaces other than the VPC).
    pub stacks: u32,
    /// Devices crossed: the path's length (see [`path`]).
    pub devices: u32,
    /// The hops of the path as [`path::hops`] counts them, each in words,
    /// for a scenario that expects `hops` (else empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hops: Vec<String>,
    pub table: Vec<Row>,
    /// Per node (and `vpc`) holding any, its conntrack entries after the
    /// traffic (the tables are emptied before it), `conntrack -L` style.
    pub conntrack: Vec<(String, Vec<String>)>,
    /// Per namespace, the IPVS virtual services that carried connections
    /// in this scenario, with all their real servers and weights.
    pub ipvs: Vec<(String, Vec<String>)>,
    /// Per node, in kube-proxy's nftables mode, the chains of its table
    /// the traffic went through, read from their counters
    /// ([`crate::services::nftables::hits`]): `services -> service-... ->
    /// endpoint-...`. In the report and its JSON, not in golden files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nft: Vec<(String, Vec<String>)>,
    /// Service translations the eBPF load balancer made for this scenario
    /// (no capture can show them): `10.0.3.5:* -> 192.168.27.242:80
    /// translated to 10.0.3.38:80`.
    pub translations: Vec<String>,
    /// The scenario's link changes, in force during its traffic:
    /// `node1/eth0: netem delay 50ms`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// The round trip the client measured (see [`crate::traffic::Success`]), in
    /// milliseconds; `None` when it got no answer.
    pub rtt_ms: Option<f64>,
    /// TCP segments the client retransmitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retransmits: Option<u32>,
    pub checks: Vec<Check>,
    /// The verdict: every check held. Checks made after the run (the
    /// golden file's) are added with [`Report::add_check`], which keeps it
    /// so: a report never says PASS above a failed check.
    pub passed: bool,
    /// Where the run's time went; in no report text (it varies).
    #[serde(skip)]
    pub timings: Timings,
}

/// A port as the golden text shows it.
fn port_text(port: Option<u16>) -> String {
    match port {
        Some(p) if is_ephemeral(p) => ":*".into(),
        Some(p) => format!(":{p}"),
        None => String::new(),
    }
}

/// One flow as a table cell, and whether its count is stable.
pub(super) fn flow_text(f: &Flow) -> (String, bool) {
    let (proto, stable) = match &f.protocol {
        Proto::Icmp { type_, code } => {
            (format!("icmp {}", capture::icmp_name(*type_, *code)), true)
        }
        Proto::Tcp { flags } => {
            let syn = flags.has(capture::TcpFlags::SYN);
            let rst = flags.has(capture::TcpFlags::RST);
            match (syn, rst) {
                (true, _) | (_, true) => (format!("tcp {flags}"), true),
                _ => ("tcp established".into(), false),
            }
        }
        Proto::Udp => ("udp".into(), true),
        Proto::Icmpv6 { type_, .. } => (format!("icmp6 type {type_}"), true),
        // Neighbour resolution repeats on its own timers: counts vary.
        Proto::Arp { op, sender_mac } => {
            let text = match (op, sender_mac) {
                (1, _) => format!("arp who-has {} tell {}", f.dst, f.src),
                (2, Some(mac)) => format!("arp {} is-at {mac}", f.src),
                (2, None) => format!("arp {} is-at ?", f.src),
                (op, _) => format!("arp op {op} {} > {}", f.src, f.dst),
            };
            return (vlan_text(f, text), false);
        }
        Proto::Other(n) => (format!("ip-proto-{n}"), true),
    };
    let text = format!(
        "{}{} > {}{} {proto}",
        f.src,
        port_text(f.src_port),
        f.dst,
        port_text(f.dst_port)
    );
    let mut text = vlan_text(f, text);
    let mut stable = stable;
    if let Some(inner) = &f.inner {
        let (i, s) = flow_text(inner);
        text = match f.vni {
            Some(vni) => format!("{text} vni {vni} | {i}"),
            None => format!("{text} | {i}"),
        };
        stable &= s;
    }
    (text, stable)
}

/// A flow's text with its frame's VLAN tag in front, when it has one.
fn vlan_text(f: &Flow, text: String) -> String {
    match f.vlan {
        Some(v) => format!("vlan {v} {text}"),
        None => text,
    }
}

/// Per interface and direction, the flows seen with their counts. Rows come
/// in path order (an interface of a folded entity where its group is), then
/// by first sighting.
pub(super) fn sighting_table(
    seen: &[(&Packet, Flow)],
    path: &[String],
    hop: &dyn Fn(&Packet) -> String,
    levels: &HashMap<String, u8>,
    folds: &HashMap<String, String>,
) -> Vec<Row> {
    let mut rows: Vec<((Duration, u8), Row)> = Vec::new();
    let mut index: HashMap<(String, Direction, String), usize> = HashMap::new();
    for (p, f) in seen {
        let (flow, stable) = flow_text(f);
        let key = (hop(p), p.direction, flow.clone());
        match index.get(&key) {
            Some(&i) => rows[i].1.packets += 1,
            None => {
                index.insert(key.clone(), rows.len());
                rows.push((
                    path::when(p.ts, p.direction, levels.get(&key.0).copied().unwrap_or(0)),
                    Row {
                        interface: key.0,
                        direction: match p.direction {
                            Direction::In => "in",
                            Direction::Out => "out",
                        },
                        flow,
                        packets: 1,
                        count_stable: stable,
                    },
                ));
            }
        }
    }
    let rank = |iface: &str| {
        let fold = iface
            .split_once('/')
            .and_then(|(entity, _)| folds.get(entity))
            .map_or(iface, String::as_str);
        path.iter().position(|h| h == fold).unwrap_or(usize::MAX)
    };
    // Interfaces in path order (others after, by first sighting); rows of
    // one interface by first sighting.
    let mut first_of: BTreeMap<String, (Duration, u8)> = BTreeMap::new();
    for (ts, r) in &rows {
        first_of
            .entry(r.interface.clone())
            .and_modify(|t| *t = (*t).min(*ts))
            .or_insert(*ts);
    }
    rows.sort_by_key(|(ts, r)| (rank(&r.interface), first_of[&r.interface], *ts));
    rows.into_iter().map(|(_, r)| r).collect()
}

/// A remembered eBPF translation as the golden text shows it, a port of
/// the kernel's ephemeral range written `*`:
/// `10.0.3.22:* -> 192.168.27.242:80 translated to 10.0.3.38:80`.
pub(super) fn translation_text(f: &labctl_lb::FlowEntry) -> String {
    let addr = |a: std::net::SocketAddrV4| format!("{}{}", a.ip(), port_text(Some(a.port())));
    format!(
        "{} -> {} translated to {}",
        addr(f.client),
        addr(f.service),
        addr(f.backend)
    )
}

pub(super) fn word(r: ResultKind) -> &'static str {
    match r {
        ResultKind::Connected => "connected",
        ResultKind::Refused => "refused",
        ResultKind::Timeout => "timeout",
        ResultKind::Reset => "reset",
        ResultKind::Unreachable => "unreachable",
    }
}

impl Report {
    /// Add a check made after the run (the golden file's), and with it
    /// recompute the verdict over every check.
    pub fn add_check(&mut self, check: Check) {
        self.checks.push(check);
        self.passed = self.checks.iter().all(|c| c.ok);
    }

    /// The sender as the report names it: `node-180`, or with the
    /// address it sent from when the scenario chose one,
    /// `node-180 (10.0.0.180)`.
    pub fn sender(&self) -> String {
        match self.source {
            Some(a) => format!("{} ({a})", self.from),
            None => self.from.clone(),
        }
    }

    /// The golden text: what a golden file holds for this scenario.
    pub fn golden(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "scenario: {}", self.scenario);
        let _ = writeln!(s, "from: {}", self.sender());
        let _ = writeln!(
            s,
            "to: {} ({})",
            self.to,
            format!("{:?}", self.traffic).to_lowercase()
        );
        for c in &self.changes {
            let _ = writeln!(s, "change: {c}");
        }
        let _ = writeln!(s, "result: {}", self.result.map_or("error", word));
        if let Some(by) = &self.served_by {
            let _ = writeln!(s, "served by: {by}");
        }
        if let Some(c) = self.server_saw_client {
            let _ = writeln!(s, "server saw client: {c}");
        }
        let _ = writeln!(s, "path: {}", self.path.join(" -> "));
        let _ = writeln!(s, "stacks: {}", self.stacks);
        if !self.hops.is_empty() {
            let _ = writeln!(s, "hops ({}): {}", self.hops.len(), self.hops.join(" -> "));
        }
        let _ = writeln!(s, "sightings:");
        let width = self.interface_width();
        for r in &self.table {
            let count = if r.count_stable {
                r.packets.to_string()
            } else {
                "n".into()
            };
            let _ = writeln!(
                s,
                "  {:width$}  {:<3}  {}  x{count}",
                r.interface, r.direction, r.flow
            );
        }
        self.write_services(&mut s, "");
        s
    }

    /// The width of the sighting table's interface column.
    fn interface_width(&self) -> usize {
        self.table
            .iter()
            .map(|r| r.interface.len())
            .max()
            .unwrap_or(0)
    }

    /// The conntrack, IPVS and eBPF sections, indented by `indent`.
    fn write_services(&self, s: &mut String, indent: &str) {
        if !self.translations.is_empty() {
            let _ = writeln!(s, "{indent}ebpf translations:");
            for t in &self.translations {
                let _ = writeln!(s, "{indent}  {t}");
            }
        }
        if !self.conntrack.is_empty() {
            let _ = writeln!(s, "{indent}conntrack:");
            for (entity, lines) in &self.conntrack {
                for l in lines {
                    let _ = writeln!(s, "{indent}  {entity}: {l}");
                }
            }
        }
        if !self.ipvs.is_empty() {
            let _ = writeln!(s, "{indent}ipvs:");
            for (entity, lines) in &self.ipvs {
                let _ = writeln!(s, "{indent}  {entity}:");
                for l in lines {
                    let _ = writeln!(s, "{indent}    {l}");
                }
            }
        }
    }

    /// The human report: outcome, path, table, checks.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mark = if self.passed { "PASS" } else { "FAIL" };
        let _ = writeln!(s, "{mark} {}", self.scenario);
        if let Some(d) = &self.description {
            let _ = writeln!(s, "  {d}");
        }
        let _ = writeln!(
            s,
            "  {} -> {} ({}): {}",
            self.sender(),
            self.to,
            format!("{:?}", self.traffic).to_lowercase(),
            self.detail
        );
        for c in &self.changes {
            let _ = writeln!(s, "  with {c}");
        }
        if let Some(by) = &self.served_by {
            let _ = writeln!(s, "  served by {by}");
        }
        if let Some(c) = self.server_saw_client {
            let _ = writeln!(s, "  server saw client {c}");
        }
        let _ = writeln!(
            s,
            "  path ({} stacks): {}",
            self.stacks,
            self.path.join(" -> ")
        );
        if !self.hops.is_empty() {
            let _ = writeln!(
                s,
                "  hops ({}): {}",
                self.hops.len(),
                self.hops.join(" -> ")
            );
        }
        let width = self.interface_width();
        for r in &self.table {
            let _ = writeln!(
                s,
                "    {:width$}  {:<3}  {}  x{}",
                r.interface, r.direction, r.flow, r.packets
            );
        }
        self.write_services(&mut s, "  ");
        if !self.nft.is_empty() {
            let _ = writeln!(s, "  nft:");
            for (entity, lines) in &self.nft {
                for l in lines {
                    let _ = writeln!(s, "    {entity}: {l}");
                }
            }
        }
        for c in &self.checks {
            let _ = write!(s, "  [{}] {}", if c.ok { "ok" } else { "FAILED" }, c.what);
            match &c.detail {
                // A detail of several lines (the golden diff): its first
                // line after the check, the others indented below it.
                Some(d) if d.contains('\n') => {
                    let mut lines = d.lines();
                    let _ = writeln!(s, " {}", lines.next().unwrap_or_default());
                    for l in lines {
                        let _ = writeln!(s, "    {l}");
                    }
                }
                Some(d) => {
                    let _ = writeln!(s, " ({d})");
                }
                None => s.push('\n'),
            }
        }
        s
    }
}
