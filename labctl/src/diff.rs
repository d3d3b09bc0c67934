//! `labctl diff`: the same scenarios run under two variants of a lab (two
//! `--var` values, or two topology files), compared aspect by aspect.
//!
//! Each side is a whole `labctl run -o json` of its own lab; this module
//! only compares the two sets of reports, as that JSON gives them
//! ([`ScenarioView`]), and writes the comparison. It is pure: the tests
//! feed it reports, no lab. The aspects are the ones a reader of two
//! articles compares: the outcome, who served and which client address
//! the server saw, the path, where the destination (a service address)
//! was still on the packets, the sightings, conntrack, and where a service
//! was translated (eBPF translations, IPVS, the nftables chains).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::html::ScenarioView;

/// A side's template variables.
pub type Vars = BTreeMap<String, String>;

/// Why the `--var`s given make no two sides.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarsError {
    #[error(
        "--var {key} is given {count} times; give a key once (for both sides) or twice \
         (side A's value, then side B's)"
    )]
    TooMany { key: String, count: usize },
    #[error("--var {key}={value} is given twice with the same value: the two sides would be one")]
    SameValue { key: String, value: String },
    #[error(
        "--var {key} is given twice, but two topology files make the two sides: with two \
         files, give each --var once (it applies to both)"
    )]
    WithTwoFiles { key: String },
    #[error(
        "nothing to compare: give one --var KEY twice (`--var KEY=A --var KEY=B`), or two \
         topology files"
    )]
    NothingVaries,
}

/// The template variables of sides A and B from the command line's
/// `--var KEY=VALUE`s, in order. A key given once applies to both sides;
/// a key given twice gives A its first value and B its second. With two
/// files (`two_files`) the files make the difference, and every key must
/// be given once.
pub fn sides(vars: &[(String, String)], two_files: bool) -> Result<(Vars, Vars), VarsError> {
    let mut values: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in vars {
        values.entry(k).or_default().push(v);
    }
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    let mut varies = false;
    for (key, vs) in values {
        let key = key.to_string();
        match vs[..] {
            [v] => {
                a.insert(key.clone(), v.to_string());
                b.insert(key, v.to_string());
            }
            [_, _] if two_files => return Err(VarsError::WithTwoFiles { key }),
            [va, vb] if va == vb => {
                return Err(VarsError::SameValue {
                    key,
                    value: va.to_string(),
                });
            }
            [va, vb] => {
                varies = true;
                a.insert(key.clone(), va.to_string());
                b.insert(key, vb.to_string());
            }
            _ => {
                return Err(VarsError::TooMany {
                    key,
                    count: vs.len(),
                });
            }
        }
    }
    if !varies && !two_files {
        return Err(VarsError::NothingVaries);
    }
    Ok((a, b))
}

/// What one side ran: for the header, and `-o json`.
#[derive(Debug, Clone, Serialize)]
pub struct SideInfo {
    /// The topology file, as given.
    pub file: String,
    /// Every template variable of the side (the shared ones too).
    pub vars: BTreeMap<String, String>,
    /// The lab the side ran in.
    pub lab: String,
    /// How many of its scenarios ran, and how many passed their own checks
    /// (expectations and golden files of the variant).
    pub ran: usize,
    pub passed: usize,
}

impl SideInfo {
    /// `FILE --var K=V ...`, control characters escaped.
    pub fn label(&self) -> String {
        let mut s = shown(&self.file);
        for (k, v) in &self.vars {
            let _ = write!(s, " --var {}", shown(&format!("{k}={v}")));
        }
        s
    }
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub a: SideInfo,
    pub b: SideInfo,
    /// Side A's scenarios in its order, then those only B ran.
    pub scenarios: Vec<Entry>,
}

/// One scenario's comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub scenario: String,
    pub status: Status,
    /// `FROM -> TO (TRAFFIC)`, as side A (or the only side) sent it.
    pub request: String,
    /// Side A's outcome in a few words (`connected, served by inst2`).
    pub summary: String,
    /// What differs, aspect by aspect; empty unless `differs`.
    pub differences: Vec<Difference>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Same,
    Differs,
    /// Only side A has the scenario (or ran it).
    OnlyA,
    OnlyB,
}

/// One aspect that differs: each side's value. A single value is a list of
/// one (none when absent); a set is in the order its report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub aspect: Aspect,
    /// The aspect in words, with the address it is about.
    pub what: String,
    pub a: Vec<String>,
    pub b: Vec<String>,
}

/// What a [`Difference`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Aspect {
    /// Sender, destination or traffic (two files may say different ones).
    Request,
    Result,
    ServedBy,
    ServerSawClient,
    /// The path in order.
    Path,
    Hops,
    /// Interfaces that saw packets to the destination address: for a
    /// service, where it was not yet translated.
    DestinationSeenOn,
    /// Interfaces that saw packets from the destination address (replies,
    /// translated back).
    ReplySeenOn,
    /// Sighting rows (`INTERFACE DIR FLOW`, counts left out).
    Sightings,
    /// Conntrack entries, `NODE: ENTRY`.
    Conntrack,
    /// The eBPF load balancer's translations.
    Translations,
    /// IPVS virtual services and real servers, `NODE: SERVICE -> SERVER`.
    Ipvs,
    /// kube-proxy's nftables chains the traffic went through, `NODE:
    /// services -> service-... -> endpoint-...` (nftables mode's "where the
    /// translation happened").
    Nft,
}

impl Aspect {
    /// Whether the values are a set (shown as what only each side has)
    /// rather than one value or a sequence (shown whole).
    fn is_set(self) -> bool {
        matches!(
            self,
            Aspect::DestinationSeenOn
                | Aspect::ReplySeenOn
                | Aspect::Sightings
                | Aspect::Conntrack
                | Aspect::Translations
                | Aspect::Ipvs
                | Aspect::Nft
        )
    }

    /// Whether each value is a line of its own in text (a sighting, a
    /// conntrack entry), rather than an item of a list (an interface).
    fn one_per_line(self) -> bool {
        matches!(
            self,
            Aspect::Sightings
                | Aspect::Conntrack
                | Aspect::Translations
                | Aspect::Ipvs
                | Aspect::Nft
        )
    }

    /// The separator of a sequence's items in text.
    fn separator(self) -> &'static str {
        match self {
            Aspect::Path | Aspect::Hops => " -> ",
            _ => ", ",
        }
    }
}

/// Compare the reports of side A with side B's, scenario by scenario
/// (matched by name).
pub fn compare(a: SideInfo, ra: &[ScenarioView], b: SideInfo, rb: &[ScenarioView]) -> Diff {
    let mut scenarios = Vec::new();
    for va in ra {
        let entry = match rb.iter().find(|vb| vb.scenario == va.scenario) {
            Some(vb) => {
                let differences = differences(va, vb);
                Entry {
                    scenario: va.scenario.clone(),
                    status: if differences.is_empty() {
                        Status::Same
                    } else {
                        Status::Differs
                    },
                    request: request(va),
                    summary: summary(va),
                    differences,
                }
            }
            None => alone(va, Status::OnlyA),
        };
        scenarios.push(entry);
    }
    for vb in rb {
        if !ra.iter().any(|va| va.scenario == vb.scenario) {
            scenarios.push(alone(vb, Status::OnlyB));
        }
    }
    Diff { a, b, scenarios }
}

fn alone(v: &ScenarioView, status: Status) -> Entry {
    Entry {
        scenario: v.scenario.clone(),
        status,
        request: request(v),
        summary: summary(v),
        differences: Vec::new(),
    }
}

fn request(v: &ScenarioView) -> String {
    match &v.traffic {
        Some(t) => format!("{} -> {} ({t})", v.sender(), v.to),
        None => format!("{} -> {}", v.sender(), v.to),
    }
}

fn result(v: &ScenarioView) -> String {
    v.result.clone().unwrap_or_else(|| "error".into())
}

fn summary(v: &ScenarioView) -> String {
    let mut s = result(v);
    if let Some(by) = &v.served_by {
        let _ = write!(s, ", served by {by}");
    }
    if let Some(c) = &v.server_saw_client {
        let _ = write!(s, ", server saw {c}");
    }
    if !v.path.is_empty() {
        let _ = write!(s, ", {} devices, {} stacks", v.path.len(), v.stacks);
    }
    s
}

/// Every aspect in which the two reports differ, in reading order.
fn differences(a: &ScenarioView, b: &ScenarioView) -> Vec<Difference> {
    let one = |s: Option<&String>| s.into_iter().cloned().collect::<Vec<_>>();
    let mut out = Vec::new();
    let mut add = |aspect: Aspect, what: String, va: Vec<String>, vb: Vec<String>| {
        // A set in the order it was seen, compared as a set.
        let differ = if aspect.is_set() {
            sorted(va.clone()) != sorted(vb.clone())
        } else {
            va != vb
        };
        if differ {
            out.push(Difference {
                aspect,
                what,
                a: va,
                b: vb,
            });
        }
    };
    add(
        Aspect::Request,
        "request".into(),
        vec![request(a)],
        vec![request(b)],
    );
    add(
        Aspect::Result,
        "result".into(),
        vec![result(a)],
        vec![result(b)],
    );
    add(
        Aspect::ServedBy,
        "served by".into(),
        one(a.served_by.as_ref()),
        one(b.served_by.as_ref()),
    );
    add(
        Aspect::ServerSawClient,
        "server saw client".into(),
        one(a.server_saw_client.as_ref()),
        one(b.server_saw_client.as_ref()),
    );
    add(Aspect::Path, "path".into(), a.path.clone(), b.path.clone());
    add(Aspect::Hops, "hops".into(), a.hops.clone(), b.hops.clone());
    // The address each side sent to (two files may name different ones).
    let dest = |v: &ScenarioView| destination(&v.to);
    let named = match (dest(a), dest(b)) {
        (Some(x), Some(y)) if x == y => x.to_string(),
        _ => "the destination".into(),
    };
    let seen = |v: &ScenarioView, to: bool| match dest(v) {
        Some(addr) => seen_on(v, addr, to),
        None => Vec::new(),
    };
    add(
        Aspect::DestinationSeenOn,
        format!("to {named} seen on"),
        seen(a, true),
        seen(b, true),
    );
    add(
        Aspect::ReplySeenOn,
        format!("from {named} seen on"),
        seen(a, false),
        seen(b, false),
    );
    add(Aspect::Sightings, "sightings".into(), rows(a), rows(b));
    add(
        Aspect::Conntrack,
        "conntrack".into(),
        per_node(&a.conntrack),
        per_node(&b.conntrack),
    );
    add(
        Aspect::Translations,
        "ebpf translations".into(),
        sorted(a.translations.clone()),
        sorted(b.translations.clone()),
    );
    add(Aspect::Ipvs, "ipvs".into(), ipvs(&a.ipvs), ipvs(&b.ipvs));
    add(
        Aspect::Nft,
        "nft chains".into(),
        per_node(&a.nft),
        per_node(&b.nft),
    );
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

/// The address of a scenario's `to` (`10.0.0.1` or `10.0.0.1:80`).
fn destination(to: &str) -> Option<Ipv4Addr> {
    let host = to.rsplit_once(':').map_or(to, |(h, _)| h);
    host.parse().ok()
}

/// The source and destination addresses of a sighting row's IP packets,
/// outer and inner (`A:* > B:4789 udp vni 1 | C > D icmp ...`); ARP
/// carries none (neighbour resolution is not the data path).
fn addresses(flow: &str) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let ip = |t: &str| -> Option<Ipv4Addr> { t.split(':').next()?.parse().ok() };
    flow.split(" | ")
        .filter_map(|seg| {
            let mut words = seg.split(' ').peekable();
            if words.peek() == Some(&"vlan") {
                words.next();
                words.next();
            }
            let src = ip(words.next()?)?;
            (words.next()? == ">").then_some(())?;
            let dst = ip(words.next()?)?;
            Some((src, dst))
        })
        .collect()
}

/// The interfaces that saw a packet to (`to`) or from `addr`, in the
/// order of the sighting table.
fn seen_on(v: &ScenarioView, addr: Ipv4Addr, to: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in &v.table {
        let hit = addresses(&r.flow)
            .iter()
            .any(|&(s, d)| if to { d == addr } else { s == addr });
        if hit && !out.contains(&r.interface) {
            out.push(r.interface.clone());
        }
    }
    out
}

fn rows(v: &ScenarioView) -> Vec<String> {
    let width = v.table.iter().map(|r| r.interface.len()).max().unwrap_or(0);
    v.table
        .iter()
        .map(|r| format!("{:width$}  {:<3}  {}", r.interface, r.direction, r.flow))
        .collect()
}

fn per_node(tables: &[(String, Vec<String>)]) -> Vec<String> {
    sorted(
        tables
            .iter()
            .flat_map(|(node, lines)| lines.iter().map(move |l| format!("{node}: {l}")))
            .collect(),
    )
}

/// IPVS lines as `NODE: SERVICE` and `NODE: SERVICE -> SERVER ...`: a real
/// server is named with its virtual service, so that a set of lines still
/// says which service it serves.
fn ipvs(tables: &[(String, Vec<String>)]) -> Vec<String> {
    let mut out = Vec::new();
    for (node, lines) in tables {
        let mut service = String::new();
        for l in lines {
            let l = l.trim();
            if let Some(server) = l.strip_prefix("->") {
                out.push(format!("{node}: {service} -> {}", server.trim()));
            } else {
                service = l.to_string();
                out.push(format!("{node}: {service}"));
            }
        }
    }
    sorted(out)
}

/// Text, with every control character escaped: names and values come from
/// other people's files and command lines, and must not drive the terminal.
fn shown(s: &str) -> String {
    if s.chars().any(char::is_control) {
        format!("{s:?}")
    } else {
        s.to_string()
    }
}

/// How many rows of a set's side are listed before "and N more".
const LIST_MAX: usize = 8;
/// The width text wraps at.
const WIDTH: usize = 100;

impl Diff {
    /// The human comparison: the two sides, then one block per scenario
    /// that differs (`A: ...` over `B: ...`, aligned), one line per
    /// scenario that does not or that only one side has, and the counts.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let labels = [self.a.label(), self.b.label()];
        let label_width = labels.iter().map(String::len).max().unwrap_or(0);
        for ((name, side), label) in [("A", &self.a), ("B", &self.b)].into_iter().zip(&labels) {
            let _ = writeln!(
                s,
                "{name}: {label:label_width$}  (lab {}: {} ran, {} passed)",
                side.lab, side.ran, side.passed
            );
        }
        s.push('\n');
        let name_width = self
            .scenarios
            .iter()
            .map(|e| e.scenario.len())
            .max()
            .unwrap_or(0);
        let what_width = self
            .scenarios
            .iter()
            .flat_map(|e| &e.differences)
            .map(|d| d.what.len())
            .max()
            .unwrap_or(0);
        for e in &self.scenarios {
            let (word, rest) = match e.status {
                Status::Same => ("same", &e.summary),
                Status::Differs => ("differs", &e.request),
                Status::OnlyA => ("only A", &e.request),
                Status::OnlyB => ("only B", &e.request),
            };
            let _ = writeln!(
                s,
                "{:name_width$}  {word:<7}  {}",
                shown(&e.scenario),
                shown(rest)
            );
            for d in &e.differences {
                write_difference(&mut s, d, what_width);
            }
            // A block stands apart from the one-line scenarios after it.
            if !e.differences.is_empty() {
                s.push('\n');
            }
        }
        let count = |st: Status| self.scenarios.iter().filter(|e| e.status == st).count();
        if !s.ends_with("\n\n") {
            s.push('\n');
        }
        let _ = write!(
            s,
            "{} scenario(s): {} differ, {} same",
            self.scenarios.len(),
            count(Status::Differs),
            count(Status::Same)
        );
        for (st, name) in [(Status::OnlyA, "A"), (Status::OnlyB, "B")] {
            if count(st) > 0 {
                let _ = write!(s, ", {} only in {name}", count(st));
            }
        }
        s.push('\n');
        s
    }
}

fn write_difference(s: &mut String, d: &Difference, what_width: usize) {
    let lines: Vec<(&str, Vec<String>)> = if d.aspect.is_set() {
        let only = |x: &[String], y: &[String]| -> Vec<String> {
            x.iter().filter(|i| !y.contains(i)).cloned().collect()
        };
        vec![("A only", only(&d.a, &d.b)), ("B only", only(&d.b, &d.a))]
    } else {
        vec![("A", d.a.clone()), ("B", d.b.clone())]
    };
    let indent = 2 + what_width + 2;
    for (i, (label, items)) in lines.iter().enumerate() {
        let what = if i == 0 { d.what.as_str() } else { "" };
        let head = format!("  {what:what_width$}  {label}: ");
        let value_indent = indent + label.len() + 2;
        if items.is_empty() {
            let _ = writeln!(s, "{head}-");
        } else if d.aspect.one_per_line() {
            // One a line; sightings aligned as in a report.
            for (j, row) in items.iter().take(LIST_MAX).enumerate() {
                let lead = if j == 0 {
                    head.clone()
                } else {
                    " ".repeat(value_indent)
                };
                let _ = writeln!(s, "{lead}{}", shown(row));
            }
            if items.len() > LIST_MAX {
                let _ = writeln!(
                    s,
                    "{}... and {} more (-o json lists them all)",
                    " ".repeat(value_indent),
                    items.len() - LIST_MAX
                );
            }
        } else {
            let items: Vec<String> = items.iter().map(|i| shown(i)).collect();
            let _ = writeln!(
                s,
                "{head}{}",
                wrap(&items, d.aspect.separator(), value_indent)
            );
        }
    }
}

/// Items joined by `sep`, wrapped before [`WIDTH`] at separators, the
/// continuation lines indented by `indent`: a list breaks after a comma, a
/// path before an arrow (`-> hop` starts the next line).
fn wrap(items: &[String], sep: &str, indent: usize) -> String {
    let arrow = sep.trim() == "->";
    let pad = " ".repeat(indent);
    let mut out = String::new();
    let mut col = indent;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            if col + sep.len() + item.len() <= WIDTH {
                out.push_str(sep);
                col += sep.len();
            } else if arrow {
                let _ = write!(out, "\n{pad}-> ");
                col = indent + 3;
            } else {
                let _ = write!(out, "{}\n{pad}", sep.trim_end());
                col = indent;
            }
        }
        out.push_str(item);
        col += item.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn view(v: serde_json::Value) -> ScenarioView {
        serde_json::from_value(v).expect("a view")
    }

    fn row(interface: &str, direction: &str, flow: &str) -> serde_json::Value {
        json!({"interface": interface, "direction": direction, "flow": flow, "packets": 1})
    }

    fn side(vars: &[(&str, &str)], lab: &str, ran: usize) -> SideInfo {
        SideInfo {
            file: "topologies/kata-peer-pods.yaml".into(),
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            lab: lab.into(),
            ran,
            passed: ran,
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const PATH: [&str; 4] = [
        "worker/ovn-k8s-mp0",
        "pod/eth0",
        "pod/vxlan1",
        "podns/vxlan0",
    ];

    /// Kata's P1 as its two variants report it: the bug (the requests
    /// reach vxlan0 for another MAC and die) and without OVN's ARP
    /// responder (ARP crosses the tunnel, the replies come back).
    fn p1(responder: bool) -> ScenarioView {
        let mut table = vec![
            row(
                "worker/ovn-k8s-mp0",
                "out",
                "arp who-has 10.132.2.46 tell 10.132.2.2",
            ),
            row(
                "worker/ovn-k8s-mp0",
                "out",
                "10.132.2.2 > 10.132.2.46 icmp echo request",
            ),
            row(
                "worker/br-ex",
                "out",
                "192.168.10.163:* > 192.168.10.201:4789 udp vni 555005 | 10.132.2.2 > 10.132.2.46 icmp echo request",
            ),
            row(
                "podns/vxlan0",
                "in",
                "10.132.2.2 > 10.132.2.46 icmp echo request",
            ),
        ];
        if !responder {
            table.extend([
                row(
                    "podns/vxlan0",
                    "in",
                    "arp who-has 10.132.2.46 tell 10.132.2.2",
                ),
                row(
                    "podns/vxlan0",
                    "out",
                    "10.132.2.46 > 10.132.2.2 icmp echo reply",
                ),
                row(
                    "worker/br-ex",
                    "in",
                    "192.168.10.201:* > 192.168.10.163:4789 udp vni 555005 | 10.132.2.46 > 10.132.2.2 icmp echo reply",
                ),
                row(
                    "worker/ovn-k8s-mp0",
                    "in",
                    "10.132.2.46 > 10.132.2.2 icmp echo reply",
                ),
            ]);
        }
        view(json!({
            "scenario": "p1-worker-pings-pod",
            "from": "worker",
            "to": "10.132.2.46",
            "traffic": "icmp",
            "result": if responder { "timeout" } else { "connected" },
            "server_saw_client": if responder { None } else { Some("10.132.2.2") },
            "path": PATH,
            "stacks": 4,
            "table": table,
            "conntrack": [],
            "ipvs": [],
            "translations": [],
            "passed": true,
        }))
    }

    /// A scenario both variants run alike.
    fn p4() -> ScenarioView {
        view(json!({
            "scenario": "p4-http-after-the-fix",
            "from": "worker",
            "to": "10.132.2.46:80",
            "traffic": "http",
            "result": "connected",
            "served_by": "podns",
            "server_saw_client": "10.132.2.2",
            "path": PATH,
            "stacks": 4,
            "table": [row("podns/vxlan0", "in", "10.132.2.2:* > 10.132.2.46:80 tcp S")],
            "passed": true,
        }))
    }

    fn only(name: &str) -> ScenarioView {
        view(json!({"scenario": name, "from": "worker", "to": "10.132.2.46", "passed": false}))
    }

    #[test]
    fn a_key_given_twice_makes_the_sides_and_once_applies_to_both() {
        let (a, b) = sides(
            &vars(&[("proxy", "ipvs"), ("nodes", "3"), ("proxy", "nftables")]),
            false,
        )
        .unwrap();
        assert_eq!(
            a,
            [("nodes", "3"), ("proxy", "ipvs")]
                .map(|(k, v)| (k.into(), v.into()))
                .into()
        );
        assert_eq!(b["proxy"], "nftables");
        assert_eq!(b["nodes"], "3");
        // Two keys may vary together: A takes the first values, B the second.
        let (a, b) = sides(
            &vars(&[("x", "1"), ("y", "p"), ("x", "2"), ("y", "q")]),
            false,
        )
        .unwrap();
        assert_eq!((a["x"].as_str(), a["y"].as_str()), ("1", "p"));
        assert_eq!((b["x"].as_str(), b["y"].as_str()), ("2", "q"));
        // Two files: the vars apply to both.
        let (a, b) = sides(&vars(&[("x", "1")]), true).unwrap();
        assert_eq!(a, b);
        assert!(sides(&[], true).unwrap().0.is_empty());
    }

    #[test]
    fn vars_that_make_no_two_sides_are_refused_with_the_reason() {
        let err = |v: &[(&str, &str)], two| sides(&vars(v), two).unwrap_err();
        assert_eq!(err(&[], false), VarsError::NothingVaries);
        assert_eq!(err(&[("x", "1")], false), VarsError::NothingVaries);
        assert_eq!(
            err(&[("x", "1"), ("x", "2"), ("x", "3")], false),
            VarsError::TooMany {
                key: "x".into(),
                count: 3
            }
        );
        assert_eq!(
            err(&[("x", "1"), ("x", "1")], false),
            VarsError::SameValue {
                key: "x".into(),
                value: "1".into()
            }
        );
        assert_eq!(
            err(&[("x", "1"), ("x", "2")], true),
            VarsError::WithTwoFiles { key: "x".into() }
        );
        insta::assert_snapshot!(
            err(&[("x", "1"), ("x", "2"), ("x", "3")], false).to_string(),
            @"--var x is given 3 times; give a key once (for both sides) or twice (side A's value, then side B's)"
        );
    }

    #[test]
    fn addresses_are_read_from_ip_packets_outer_and_inner() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            addresses("10.0.0.1:* > 10.0.0.2:80 tcp S"),
            [(a("10.0.0.1"), a("10.0.0.2"))]
        );
        assert_eq!(
            addresses("vlan 100 10.0.0.1 > 10.0.0.2 icmp echo request"),
            [(a("10.0.0.1"), a("10.0.0.2"))]
        );
        assert_eq!(
            addresses("1.1.1.1:* > 2.2.2.2:4789 udp vni 1 | 10.0.0.1 > 10.0.0.2 icmp echo request"),
            [(a("1.1.1.1"), a("2.2.2.2")), (a("10.0.0.1"), a("10.0.0.2"))]
        );
        assert!(addresses("arp who-has 10.0.0.2 tell 10.0.0.1").is_empty());
        assert_eq!(
            addresses("1.1.1.1:* > 2.2.2.2:4789 udp vni 1 | arp 10.0.0.2 is-at 02:00:00:00:00:01"),
            [(a("1.1.1.1"), a("2.2.2.2"))]
        );
        assert_eq!(destination("10.0.0.2:80"), Some(a("10.0.0.2")));
        assert_eq!(destination("10.0.0.2"), Some(a("10.0.0.2")));
        assert_eq!(destination("nginx"), None);
    }

    #[test]
    fn kata_p1_differs_in_result_and_replies_and_p4_is_the_same() {
        let a = [p1(true), p4(), only("a-only")];
        let b = [p1(false), p4(), only("b-only")];
        let d = compare(
            side(&[("arp_responder", "on")], "kata-peer-pods-a", 3),
            &a,
            side(&[("arp_responder", "off")], "kata-peer-pods-b", 3),
            &b,
        );
        let status: Vec<(&str, Status)> = d
            .scenarios
            .iter()
            .map(|e| (e.scenario.as_str(), e.status))
            .collect();
        assert_eq!(
            status,
            [
                ("p1-worker-pings-pod", Status::Differs),
                ("p4-http-after-the-fix", Status::Same),
                ("a-only", Status::OnlyA),
                ("b-only", Status::OnlyB),
            ]
        );
        let aspects: Vec<Aspect> = d.scenarios[0]
            .differences
            .iter()
            .map(|x| x.aspect)
            .collect();
        // The request still reaches vxlan0 in both: the path and where the
        // pod's address was seen on the way there are the same.
        assert_eq!(
            aspects,
            [
                Aspect::Result,
                Aspect::ServerSawClient,
                Aspect::ReplySeenOn,
                Aspect::Sightings
            ]
        );
        insta::assert_snapshot!(d.render());
        insta::assert_snapshot!(serde_json::to_string_pretty(&d.scenarios[0].differences[0]).unwrap(), @r#"
        {
          "aspect": "result",
          "what": "result",
          "a": [
            "timeout"
          ],
          "b": [
            "connected"
          ]
        }
        "#);
    }

    /// A service under two proxies: where the service address was still
    /// on the packets, conntrack, IPVS against eBPF.
    #[test]
    fn a_service_shows_where_it_was_translated() {
        let svc = |ipvs: bool| {
            let mut table = vec![
                row("client/eth0", "out", "10.0.3.5:* > 192.168.27.242:80 tcp S"),
                row("server/eth0", "in", "10.0.3.5:* > 10.0.3.38:80 tcp S"),
            ];
            if ipvs {
                table.push(row(
                    "node/eth0",
                    "in",
                    "10.0.3.5:* > 192.168.27.242:80 tcp S",
                ));
            }
            view(json!({
                "scenario": "clusterip",
                "from": "client",
                "to": "192.168.27.242:80",
                "traffic": "http",
                "result": "connected",
                "served_by": "server",
                "server_saw_client": if ipvs { "10.0.2.15" } else { "10.0.3.5" },
                "path": if ipvs {
                    vec!["client/eth0", "node/eth0", "node/veth1", "server/eth0"]
                } else {
                    vec!["client/eth0", "server/eth0"]
                },
                "stacks": if ipvs { 3 } else { 2 },
                "table": table,
                "conntrack": if ipvs {
                    json!([["node", ["tcp 6 src=10.0.3.5 dst=192.168.27.242 sport=* dport=80 src=10.0.3.38 dst=10.0.2.15 sport=80 dport=*"]]])
                } else { json!([]) },
                "ipvs": if ipvs {
                    json!([["node", ["TCP 192.168.27.242:80 rr", "  -> 10.0.3.38:80 Masq weight 1"]]])
                } else { json!([]) },
                "translations": if ipvs { json!([]) } else {
                    json!(["10.0.3.5:* -> 192.168.27.242:80 translated to 10.0.3.38:80"])
                },
                "passed": true,
            }))
        };
        let mut a = side(&[("lb", "ipvs")], "svc-a", 1);
        let mut b = side(&[("lb", "ebpf")], "svc-b", 1);
        a.file = "topologies/svc.yaml".into();
        b.file = "topologies/svc.yaml".into();
        let d = compare(a, &[svc(true)], b, &[svc(false)]);
        insta::assert_snapshot!(d.render());
    }

    /// `-o json` is for machines: its shape is a contract.
    #[test]
    fn the_json_names_each_side_status_and_aspect() {
        let d = compare(
            side(&[("arp_responder", "on")], "k-a", 2),
            &[p1(true), p4()],
            side(&[("arp_responder", "off")], "k-b", 1),
            &[p4()],
        );
        insta::assert_snapshot!(serde_json::to_string_pretty(&d).unwrap());
    }

    #[test]
    fn two_files_may_send_to_different_addresses() {
        let a = p4();
        let mut b = p4();
        b.to = "10.132.2.47:80".into();
        let d = compare(side(&[], "x-a", 1), &[a], side(&[], "x-b", 1), &[b]);
        let e = &d.scenarios[0];
        assert_eq!(e.status, Status::Differs);
        assert_eq!(e.differences[0].aspect, Aspect::Request);
        // The seen-on aspects name no address when the sides' differ.
        assert!(
            e.differences
                .iter()
                .any(|x| x.what == "to the destination seen on"),
            "{:?}",
            e.differences
        );
    }

    #[test]
    fn names_and_values_cannot_drive_the_terminal() {
        let mut a = side(&[("k", "on\x1b[2J")], "x-a", 0);
        a.file = "evil\nfile.yaml".into();
        assert_eq!(a.label(), r#""evil\nfile.yaml" --var "k=on\u{1b}[2J""#);
    }

    #[test]
    fn long_paths_wrap_before_an_arrow_and_lists_after_a_comma() {
        let items: Vec<String> = (0..12).map(|i| format!("node{i}/interface{i}")).collect();
        let path = wrap(&items, " -> ", 10);
        assert!(path.lines().count() > 1, "{path}");
        for l in path.lines().skip(1) {
            assert!(l.starts_with(&format!("{}-> ", " ".repeat(10))), "{path}");
        }
        assert!(path.lines().all(|l| l.len() <= WIDTH), "{path}");
        let list = wrap(&items, ", ", 10);
        assert!(
            list.lines().rev().skip(1).all(|l| l.ends_with(',')),
            "{list}"
        );
        assert!(list.lines().all(|l| l.len() <= WIDTH), "{list}");
    }

    /// `run -o json` writes [`crate::scenario::Report`]s: every field the
    /// comparison reads comes through.
    #[test]
    fn a_reports_json_reads_as_a_view() {
        use crate::scenario::{Report, Row};
        let report = Report {
            scenario: "s".into(),
            description: None,
            from: "a".into(),
            source: Some(Ipv4Addr::new(10, 0, 0, 1)),
            to: "10.0.0.2:80".into(),
            traffic: labctl_topology::Traffic::Http,
            result: Some(labctl_topology::ResultKind::Connected),
            detail: "connected".into(),
            served_by: Some("b".into()),
            server_saw_client: Some(Ipv4Addr::new(10, 0, 0, 1)),
            path: vec!["a/eth0".into(), "b/eth0".into()],
            stacks: 2,
            devices: 2,
            hops: vec!["a/eth0 to b/eth0".into()],
            table: vec![Row {
                interface: "a/eth0".into(),
                direction: "out",
                flow: "10.0.0.1:* > 10.0.0.2:80 tcp S".into(),
                packets: 1,
                count_stable: true,
            }],
            conntrack: vec![("a".into(), vec!["tcp 6".into()])],
            ipvs: vec![("a".into(), vec!["TCP 10.0.0.9:80 rr".into()])],
            nft: vec![("a".into(), vec!["services -> service-x".into()])],
            translations: vec!["t".into()],
            changes: Vec::new(),
            rtt_ms: Some(0.1),
            retransmits: None,
            checks: Vec::new(),
            passed: true,
            timings: Default::default(),
        };
        let v: ScenarioView =
            serde_json::from_value(serde_json::to_value(&report).unwrap()).unwrap();
        assert_eq!(v.traffic.as_deref(), Some("http"));
        assert_eq!(v.result.as_deref(), Some("connected"));
        assert_eq!(v.server_saw_client.as_deref(), Some("10.0.0.1"));
        assert_eq!(request(&v), "a (10.0.0.1) -> 10.0.0.2:80 (http)");
        assert_eq!((v.stacks, v.hops.len(), v.table.len()), (2, 1, 1));
        assert_eq!(
            (v.conntrack.len(), v.ipvs.len(), v.translations.len()),
            (1, 1, 1)
        );
        assert_eq!(v.nft, [("a".into(), vec!["services -> service-x".into()])]);
    }

    /// kube-proxy's two modes: IPVS tables on one side, the nftables
    /// chains the request went through on the other.
    #[test]
    fn nftables_mode_shows_the_chains_it_went_through() {
        let side_view = |ipvs: bool| {
            view(json!({
                "scenario": "clusterip",
                "from": "client",
                "to": "172.30.0.41:80",
                "result": "connected",
                "ipvs": if ipvs {
                    json!([["node", ["TCP 172.30.0.41:80 rr", "  -> 10.180.0.11:80 Masq weight 1"]]])
                } else { json!([]) },
                "nft": if ipvs { json!([]) } else {
                    json!([["node", ["services -> service-default/svc1/tcp/p80 -> endpoint-default/svc1/tcp/p80__10.180.0.11/80"]]])
                },
                "passed": true,
            }))
        };
        let a = side(&[("proxy", "ipvs")], "kp", 1);
        let b = side(&[("proxy", "nftables")], "kp", 1);
        let d = compare(a, &[side_view(true)], b, &[side_view(false)]);
        let aspects: Vec<Aspect> = d.scenarios[0]
            .differences
            .iter()
            .map(|x| x.aspect)
            .collect();
        assert_eq!(aspects, [Aspect::Ipvs, Aspect::Nft]);
        let text = d.render();
        assert!(
            text.contains(
                "node: services -> service-default/svc1/tcp/p80 -> endpoint-default/svc1/tcp/p80__10.180.0.11/80"
            ),
            "{text}"
        );
    }
}
