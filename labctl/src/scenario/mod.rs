//! Running a scenario on a live lab: tap every interface of every namespace,
//! send the traffic from inside the client's namespace, and turn what the
//! kernel did into a report: the outcome, the data path, the sighting table
//! and every expectation checked against them.
//!
//! Nothing here decides an outcome: "connected" is what the client's socket
//! got, a path is the order in which the taps saw the request, "seen on" is
//! what a tap recorded. Two things come from the topology instead of a
//! capture: a bridge between two of its ports (a frame switched from port to
//! port never shows on the bridge device itself, yet the articles name it in
//! the path), and the VPC and each switch shown as one hop, as the articles
//! draw them. The path rules are pure code in [`path`].
//!
//! The golden text ([`Report::golden`]) keeps what is stable from run to run:
//! ports from the kernel's ephemeral range (32768-60999) become `*`, and the
//! packet counts of established TCP traffic (which depend on delayed ACKs)
//! become `n`. ARP is left out of the table unless the scenario asks for it
//! (`capture: {arp: true}`; its counts are then `n`, its timing varies):
//! neighbour resolution is not the data path. A tagged frame's row starts
//! with `vlan N`.

pub mod path;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use labctl_topology::{Lab, ResultKind, Role, Scenario, SightProto, Sighting, Traffic};
use serde::Serialize;

use crate::engine::{self, EngineError};
use crate::observe::capture::{self, Direction, Flow, Mac, Packet, Proto};
use crate::observe::{self, conntrack};
use crate::services::Overrides;
use crate::state::LabState;
use crate::traffic::{self, Failure, Kind, Request};
use crate::{ipvs, lb, services};

/// The capture ends once no tap has seen a packet for this long after the
/// client is done (see [`quiet_window`]). What can still be in flight then
/// is only what the kernel forwards on its own, in softirq, without a
/// program to wake: the client has its answer, the ICMP error or RST that
/// ended it, or (TCP) the server's FIN, so only its last ACK is left (see
/// `traffic::close`). Each hop of that takes microseconds; 30 ms leaves
/// room for a softirq pushed to ksoftirqd on a loaded 2-core machine.
const QUIET: Duration = Duration::from_millis(30);

/// The longest the taps keep running after the client: the fixed wait
/// every scenario had before it ended on quiet, kept as the bound for a
/// lab that never goes quiet.
const SETTLE_MAX: Duration = Duration::from_millis(300);

/// How long the lab must be quiet to end the scenario's capture. A packet
/// held by netem is in no tap until it leaves the qdisc (taps see what a
/// device sends, after its qdisc): each netem delay, with its jitter, is
/// added for both ends of the link. Loss, reordering or a rate limit can
/// hold a packet for a retransmission timeout: such a scenario keeps the
/// whole fixed wait.
fn quiet_window(changes: &[labctl_topology::LinkChange]) -> Duration {
    let netems = changes.iter().filter_map(|c| c.netem.as_ref());
    let mut window = QUIET;
    for n in netems {
        if !n.loss.is_zero() || !n.reorder.is_zero() || n.rate_bps > 0 {
            return SETTLE_MAX;
        }
        window += 2 * Duration::from_nanos(n.delay_ns.saturating_add(n.jitter_ns));
    }
    window.min(SETTLE_MAX)
}

/// Why a scenario could not be run at all (as opposed to failing).
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("start captures in lab `{lab}`: {source}")]
    Capture { lab: String, source: std::io::Error },
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("scenario `{0}`: sender is not a namespace of the lab")]
    NoSender(String),
    #[error("scenario `{scenario}`: {message}")]
    Services { scenario: String, message: String },
    #[error("scenario `{scenario}`: {source}")]
    Overrides {
        scenario: String,
        source: services::OverrideError,
    },
    #[error("scenario `{scenario}`: program the services: {source}")]
    Program {
        scenario: String,
        source: EngineError,
    },
    #[error("scenario `{scenario}`: link changes: {source}")]
    Impair {
        scenario: String,
        source: crate::impair::ImpairError,
    },
    #[error("scenario `{scenario}`: read the neighbour table of {netns}: {source}")]
    Neighbours {
        scenario: String,
        netns: String,
        source: std::io::Error,
    },
    #[error("scenario `{scenario}`: read the packet-filter rules of {netns}: {source}")]
    Ruleset {
        scenario: String,
        netns: String,
        source: std::io::Error,
    },
    #[error("write the capture to {path}: {source}")]
    Pcap {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

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

/// One expectation and whether the kernel met it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    /// What was observed, when it differs.
    pub detail: Option<String>,
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
    /// ([`services::nftables::hits`]): `services -> service-... ->
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
    /// The round trip the client measured (see [`traffic::Success`]), in
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

/// Where one run of a scenario spent its time, for the `scenario` bench.
/// Everything but [`Timings::traffic`] is the run's fixed overhead.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Services programmed and conntrack emptied, interfaces read back,
    /// the scenario's changes made, the taps opened.
    pub set_up: Duration,
    /// The client, from its first packet to its answer, error or timeout.
    pub traffic: Duration,
    /// From the client's end to the last packet read: what is still in
    /// flight, then the lab quiet.
    pub capture: Duration,
    /// Taps closed, changes undone, kernel state read back, the report
    /// made and the services left as the topology says.
    pub teardown: Duration,
}

impl Timings {
    /// Everything but the traffic.
    pub fn overhead(&self) -> Duration {
        self.set_up + self.capture + self.teardown
    }
}

/// What one process knows, between the scenarios it runs on a lab, of
/// that lab's services: whether they are as the topology says, because an
/// earlier scenario of this process programmed them so and left them so.
/// Unknown (false) at first: what another process did is not trusted.
#[derive(Debug, Default)]
pub struct Programmed(std::sync::atomic::AtomicBool);

impl Programmed {
    fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set(&self, as_topology: bool) {
        self.0
            .store(as_topology, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Options of one run.
#[derive(Debug, Default, Clone)]
pub struct RunOptions<'a> {
    /// Shared by the scenarios run one after the other on one lab: a
    /// scenario without changes to the services then resets only the
    /// state traffic leaves in them ([`reset_steps`]) instead of
    /// programming them all afresh. `None`: always afresh.
    pub programmed: Option<&'a Programmed>,
    /// Write the scenario's packets, from every namespace, to one pcapng
    /// file in this directory (`DIR/<scenario>.pcapng`); the directory must
    /// exist.
    pub pcap: Option<&'a Path>,
}

/// Run one scenario on a lab that is up (`lab` is its topology).
///
/// In a lab with services, the services are first programmed afresh with
/// the scenario's changes and pins (and the conntrack tables emptied), so
/// every scenario starts from the same state whatever ran before it. With
/// [`RunOptions::programmed`] saying an earlier scenario left them as the
/// topology says, one without changes resets only what traffic changed
/// ([`reset_steps`]) and empties conntrack: the same state, for less.
pub fn run(
    record: &LabState,
    lab: &Lab,
    sc: &Scenario,
    opts: &RunOptions,
) -> Result<Report, ScenarioError> {
    let started = Instant::now();
    let mut timings = Timings::default();
    // The lab as it was brought up: under `up --name` its namespaces
    // carry that name, not the file's, and the service steps name them.
    let named = lab.named(&record.lab);
    let lab: &Lab = &named;
    let with_services = !lab.services.is_empty();
    let service_error = |message: String| ScenarioError::Services {
        scenario: sc.name.clone(),
        message,
    };
    // Namespaces where services live: the nodes and the VPC (the SLB).
    let service_ns: Vec<(String, String)> = record
        .namespaces
        .iter()
        .filter(|n| matches!(n.role, Role::Node | Role::Vpc))
        .map(|n| (n.entity.clone(), n.name.clone()))
        .collect();
    let overrides = services::Overrides::of(sc);
    // Services and the eBPF load balancer's maps, programmed afresh with
    // the scenario's changes and pins (remembered flows emptied), through
    // the executor `up` uses.
    let program_error = |source| ScenarioError::Program {
        scenario: sc.name.clone(),
        source,
    };
    if with_services {
        services::check_overrides(lab, &overrides).map_err(|source| ScenarioError::Overrides {
            scenario: sc.name.clone(),
            source,
        })?;
    }
    // What earlier scenarios taught the neighbour tables (and the requests
    // they left queued) is forgotten: each starts as if run alone.
    for ns in &record.namespaces {
        let keep: Vec<_> = lab
            .objects
            .neighbours
            .iter()
            .filter(|n| lab.netns(&n.netns) == ns.name)
            .map(|n| n.address)
            .collect();
        observe::forget_neighbours_in(&ns.name, &keep).map_err(|e| ScenarioError::Services {
            scenario: sc.name.clone(),
            message: format!("reset {}: {e}", ns.name),
        })?;
    }
    // Services left as the topology says by the scenario before need
    // only what traffic changed in them reset.
    let kept = overrides.is_empty() && opts.programmed.is_some_and(Programmed::get);
    let steps = if kept {
        reset_steps(lab)
    } else {
        program_steps(lab, &overrides)
    };
    if let Some(p) = opts.programmed {
        p.set(false);
    }
    engine::apply_steps(record, &steps).map_err(program_error)?;
    if overrides.is_empty()
        && let Some(p) = opts.programmed
    {
        p.set(true);
    }
    if with_services {
        for (_, ns) in &service_ns {
            conntrack::flush_in(ns)
                .map_err(|e| service_error(format!("empty conntrack in {ns}: {e}")))?;
        }
    }

    let entity_of: HashMap<&str, (&str, Role)> = record
        .namespaces
        .iter()
        .map(|n| (n.name.as_str(), (n.entity.as_str(), n.role)))
        .collect();
    let sender = record
        .netns_of(&sc.from)
        .ok_or_else(|| ScenarioError::NoSender(sc.name.clone()))?;
    // Bridge and bond membership and the devices vlans sit on, read back
    // from the kernel: `entity/port` -> bridge, and each device's height in
    // its namespace's stack (see `path::when`).
    let status = observe::lab_status(record)?;
    let masters: HashMap<String, String> = status
        .iter()
        .flat_map(|ns| {
            let entity = &ns.entity;
            ns.interfaces.iter().filter_map(move |i| {
                i.master
                    .as_ref()
                    .map(|m| (format!("{entity}/{}", i.name), format!("{entity}/{m}")))
            })
        })
        .collect();
    let lowers: Vec<(String, String)> = status
        .iter()
        .flat_map(|ns| {
            let entity = &ns.entity;
            ns.interfaces.iter().flat_map(move |i| {
                let me = format!("{entity}/{}", i.name);
                let over = i
                    .master
                    .as_ref()
                    .map(|m| (format!("{entity}/{m}"), me.clone()));
                let under = i
                    .lower
                    .as_ref()
                    .map(|l| (me.clone(), format!("{entity}/{l}")));
                over.into_iter().chain(under)
            })
        })
        .collect();
    let levels = path::levels(&lowers);

    let names: Vec<String> = record.namespaces.iter().map(|n| n.name.clone()).collect();
    // Link changes last before the traffic, undone first after it.
    let impair_error = |source| ScenarioError::Impair {
        scenario: sc.name.clone(),
        source,
    };
    let impaired = if sc.link_changes.is_empty()
        && sc.route_changes.is_empty()
        && sc.object_changes.is_empty()
    {
        None
    } else {
        Some(crate::impair::Applied::make(record, lab, sc).map_err(impair_error)?)
    };
    let taps = match capture::capture_many(&names) {
        Ok(t) => t,
        Err(source) => {
            if let Some(i) = impaired {
                i.undo().map_err(impair_error)?;
            }
            return Err(ScenarioError::Capture {
                lab: record.lab.clone(),
                source,
            });
        }
    };
    let client_at = Instant::now();
    timings.set_up = client_at - started;
    let outcome = traffic::run_client(&sender.name, &request(sc));
    let client_done = Instant::now();
    timings.traffic = client_done - client_at;
    let packets = taps.stop_when_quiet(quiet_window(&sc.link_changes), SETTLE_MAX);
    let captured = Instant::now();
    timings.capture = captured - client_done;
    if let Some(i) = impaired {
        i.undo().map_err(impair_error)?;
    }
    let translations = if lab.ebpf.is_some() {
        let mut t: Vec<String> = lb::flows(&record.lab)
            .map_err(|e| service_error(format!("read eBPF flows: {e}")))?
            .iter()
            .map(translation_text)
            .collect();
        t.sort();
        t
    } else {
        Vec::new()
    };
    // Conntrack (emptied before the traffic) and IPVS, read back from the
    // namespaces services live in.
    let mut service_state = Vec::new();
    let mut nft_hits = Vec::new();
    if with_services {
        for (entity, ns) in &service_ns {
            let entries = conntrack::dump_in(ns)
                .map_err(|e| service_error(format!("read conntrack in {ns}: {e}")))?;
            // No IPVS to read where nothing uses it (kube-proxy's nftables
            // mode without an SLB): the kernel need not even have it.
            let (table, conns) = if lab.uses_ipvs() {
                let table = ipvs::Ipvs::open_in(ns)
                    .and_then(|mut i| i.services())
                    .map_err(|e| service_error(format!("read IPVS in {ns}: {e}")))?;
                let conns = ipvs::connections_in(ns)
                    .map_err(|e| service_error(format!("read IPVS connections in {ns}: {e}")))?;
                (table, conns)
            } else {
                (Vec::new(), Vec::new())
            };
            if lab.kube_proxy.mode == labctl_topology::ProxyMode::Nftables
                && lab.node(entity).is_some()
            {
                let json = crate::kernel::nft::list(ns, true)
                    .map_err(|e| service_error(format!("read nftables in {ns}: {e}")))?;
                let hits = services::nftables::hits(&json)
                    .map_err(|e| service_error(format!("read nftables in {ns}: {e}")))?;
                if !hits.is_empty() {
                    nft_hits.push((entity.clone(), hits));
                }
            }
            service_state.push(ServiceState {
                entity: entity.clone(),
                conntrack: entries,
                conns,
                table,
            });
        }
    }

    let hop = |p: &Packet| -> String {
        let entity = entity_of.get(p.netns.as_str()).map_or("?", |e| e.0);
        format!("{entity}/{}", p.ifname)
    };
    // The folded hop of an interface: `vpc` for the VPC's, a switch's name
    // for a switch's.
    let group_of = |p: &Packet| -> Option<String> {
        match entity_of.get(p.netns.as_str()) {
            Some((_, Role::Vpc)) => Some("vpc".to_string()),
            Some((e, Role::Switch)) => Some(e.to_string()),
            _ => None,
        }
    };
    let folds: HashMap<String, String> = record
        .namespaces
        .iter()
        .filter_map(|n| match n.role {
            Role::Vpc => Some((n.entity.clone(), "vpc".to_string())),
            Role::Switch => Some((n.entity.clone(), n.entity.clone())),
            _ => None,
        })
        .collect();

    // Decode once, VXLAN on the IANA port and every port the lab's devices
    // use; ARP (unless asked for) and non-IPv4 are not part of the data
    // path, nor is ARP carried in a VXLAN packet.
    let mut vxlan_ports = lab.objects.vxlan_ports();
    vxlan_ports.push(capture::VXLAN_PORT);
    let seen: Vec<(&Packet, Flow)> = packets
        .iter()
        .filter(|p| p.ifname != "lo")
        .filter_map(|p| capture::summarize_with(p, &vxlan_ports).map(|f| (p, f)))
        .filter(|(_, f)| {
            (sc.show_arp || !matches!(f.innermost().protocol, Proto::Arp { .. })) && f.src.is_ipv4()
        })
        .collect();

    let crossings: Vec<path::Crossing> = seen
        .iter()
        .filter(|(_, f)| is_request(f, sc))
        .map(|(p, f)| {
            let hop = hop(p);
            path::Crossing {
                ts: p.ts,
                level: levels.get(&hop).copied().unwrap_or(0),
                hop,
                group: group_of(p),
                direction: p.direction,
                vlan: f.vlan,
            }
        })
        .collect();
    let tagged = path::derive_tagged(&crossings, &masters);
    let path: Vec<String> = tagged.iter().map(|(h, _)| h.clone()).collect();
    let stacks = path::stacks(&path);
    let devices = path.len() as u32;
    let hops: Vec<String> = if sc.expect.hops.is_some() {
        // Stacked devices: a vlan (or macvlan) on its parent, a bond on its
        // slaves; a bridge's ports are hops of their own.
        let bonds: Vec<(String, String)> = status
            .iter()
            .flat_map(|ns| {
                let entity = &ns.entity;
                ns.interfaces.iter().filter_map(move |i| {
                    let master = i.master.as_ref()?;
                    let is_bond = ns
                        .interfaces
                        .iter()
                        .any(|m| &m.name == master && m.kind == "bond");
                    is_bond.then(|| (format!("{entity}/{master}"), format!("{entity}/{}", i.name)))
                })
            })
            .collect();
        let vlans = status.iter().flat_map(|ns| {
            let entity = &ns.entity;
            ns.interfaces.iter().filter_map(move |i| {
                let lower = i.lower.as_ref()?;
                Some((format!("{entity}/{}", i.name), format!("{entity}/{lower}")))
            })
        });
        let stacked: Vec<(String, String)> = bonds.into_iter().chain(vlans).collect();
        let mut at = 0;
        path::hops(&path, &stacked)
            .iter()
            .map(|h| {
                let text = format!("{}{}", path::hop_text(h), path::hop_vlans(h, &tagged, at));
                at += h.len();
                text
            })
            .collect()
    } else {
        Vec::new()
    };
    let table = sighting_table(&seen, &path, &hop, &levels, &folds);
    // Neighbour tables the expectations name, read after the traffic.
    let mut neighbours: HashMap<String, Vec<observe::Neighbour>> = HashMap::new();
    for n in &sc.expect.neighbours {
        if neighbours.contains_key(&n.entity) {
            continue;
        }
        let netns = record
            .netns_of(&n.entity)
            .map_or_else(|| lab.netns(&n.entity), |ns| ns.name.clone());
        let table = observe::neighbours_in(&netns).map_err(|source| ScenarioError::Neighbours {
            scenario: sc.name.clone(),
            netns: netns.clone(),
            source,
        })?;
        neighbours.insert(n.entity.clone(), table);
    }
    // Rulesets the expectations name, read after the traffic.
    let mut rulesets: HashMap<String, observe::Ruleset> = HashMap::new();
    for n in &sc.expect.nftables {
        let netns = record
            .netns_of(&n.entity)
            .map_or_else(|| lab.netns(&n.entity), |ns| ns.name.clone());
        let ruleset = observe::ruleset_in(&netns).map_err(|source| ScenarioError::Ruleset {
            scenario: sc.name.clone(),
            netns: netns.clone(),
            source,
        })?;
        rulesets.insert(n.entity.clone(), ruleset);
    }
    // The request's flows (every attempt, every hop), client socket and
    // destination as the captures saw them: an IPVS connection is this
    // request's only when both ends match one, not an earlier scenario's
    // that happened to use the same client port.
    let clients: Vec<(SocketAddrV4, SocketAddrV4)> = seen
        .iter()
        .filter(|(_, f)| is_request(f, sc))
        .filter_map(|(_, f)| {
            let f = f.innermost();
            match (f.src, f.src_port, f.dst, f.dst_port) {
                (IpAddr::V4(a), Some(p), IpAddr::V4(d), Some(dp)) => {
                    Some((SocketAddrV4::new(a, p), SocketAddrV4::new(d, dp)))
                }
                _ => None,
            }
        })
        .collect();
    let ipvs_seen = addressed_services(sc, &path, &clients, &service_state);
    let ct: Vec<(String, Vec<conntrack::Entry>)> = service_state
        .into_iter()
        .filter(|s| !s.conntrack.is_empty())
        .map(|s| (s.entity, s.conntrack))
        .collect();

    let (result, detail, served_by, mut saw) = match &outcome.result {
        Ok(ok) => {
            let served_by = ok.served_by.as_ref().map(|ns| {
                entity_of
                    .get(ns.as_str())
                    .map_or(ns.clone(), |e| e.0.to_string())
            });
            let saw = ok.client_seen.and_then(|a| match a.ip() {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            });
            (
                Some(ResultKind::Connected),
                format!("connected in {:.2} ms", ok.rtt.as_secs_f64() * 1000.0),
                served_by,
                saw,
            )
        }
        Err(f) => (
            match f {
                Failure::Refused => Some(ResultKind::Refused),
                Failure::Timeout => Some(ResultKind::Timeout),
                Failure::Reset => Some(ResultKind::Reset),
                Failure::Unreachable(_) => Some(ResultKind::Unreachable),
                Failure::Other(_) => None,
            },
            f.to_string(),
            None,
            None,
        ),
    };
    // Without an HTTP answer, the server's view is the source of the request
    // as it arrived at the last hop.
    if saw.is_none() && result == Some(ResultKind::Connected) {
        saw = last_request_source(&seen, sc, &hop, path.last());
    }

    let mut report = Report {
        scenario: sc.name.clone(),
        description: sc.description.clone(),
        from: sc.from.clone(),
        source: sc.source,
        to: target_text(sc),
        traffic: sc.traffic,
        result,
        detail,
        served_by,
        server_saw_client: saw,
        path,
        stacks,
        devices,
        hops,
        table,
        conntrack: ct
            .iter()
            .map(|(e, entries)| (e.clone(), conntrack::format(entries, true)))
            .collect(),
        ipvs: ipvs_seen,
        nft: nft_hits,
        translations,
        changes: crate::impair::change_texts(sc),
        rtt_ms: outcome
            .result
            .as_ref()
            .ok()
            .map(|ok| ok.rtt.as_secs_f64() * 1000.0),
        retransmits: outcome.result.as_ref().ok().and_then(|ok| ok.retransmits),
        checks: Vec::new(),
        passed: false,
        timings,
    };
    let at = |p: &Packet, want: &str| match group_of(p) {
        Some(g) if g == want => true,
        _ => hop(p) == want,
    };
    report.checks = check(sc, &report, &seen, &at, &hop, &group_of);
    report.checks.extend(check_neighbours(sc, &neighbours));
    report.checks.extend(check_rulesets(sc, &rulesets));
    report.checks.extend(check_conntrack(sc, &ct));
    if let Some(dir) = opts.pcap {
        write_pcapng(dir, &report, &packets, &entity_of)?;
    }
    // Leave the services as the topology says.
    if !overrides.is_empty() {
        engine::apply_steps(record, &program_steps(lab, &Overrides::default()))
            .map_err(program_error)?;
        if let Some(p) = opts.programmed {
            p.set(true);
        }
    }
    report.passed = report.checks.iter().all(|c| c.ok);
    report.timings.teardown = captured.elapsed();
    Ok(report)
}

/// The steps that program the services and the eBPF maps under `o`.
fn program_steps(lab: &Lab, o: &Overrides) -> Vec<crate::plan::Step> {
    let mut steps = crate::plan::services::steps(lab, o);
    steps.extend(crate::plan::ebpf::map_step(
        lab,
        o,
        crate::plan::Phase::Changes,
    ));
    steps
}

/// Of [`program_steps`] with the topology's settings, those that reset
/// what a scenario's traffic leaves behind in services already programmed
/// so: IPVS tables (the round-robin position and the persistence
/// templates of `sessionAffinity` live in the services, re-made here),
/// kube-proxy's nftables tables (rule counters, which `labctl run` reads,
/// and the affinity sets traffic fills; nft 1.0.6 has no `reset rules`)
/// and the eBPF maps (remembered flows). Left out: IPVS mode's node
/// rulesets, which hold neither counters nor sets traffic fills.
fn reset_steps(lab: &Lab) -> Vec<crate::plan::Step> {
    let mut steps = program_steps(lab, &Overrides::default());
    steps.retain(|s| {
        !matches!(s.action, crate::plan::Action::Nftables { .. })
            || lab.kube_proxy.mode == labctl_topology::ProxyMode::Nftables
    });
    steps
}

fn request(sc: &Scenario) -> Request {
    let target = SocketAddr::new(IpAddr::V4(sc.target), sc.port.unwrap_or(0));
    let kind = match sc.traffic {
        Traffic::Icmp => Kind::Ping,
        Traffic::Tcp => Kind::TcpConnect,
        Traffic::Http => Kind::HttpGet,
        Traffic::Udp => Kind::Udp,
    };
    let req = Request::new(kind, target)
        .with_timeout(Duration::from_millis(sc.timeout_ms))
        .with_attempts(sc.attempts);
    match sc.source {
        Some(source) => req.with_source(IpAddr::V4(source)),
        None => req,
    }
}

fn target_text(sc: &Scenario) -> String {
    match sc.port {
        Some(p) => format!("{}:{p}", sc.target),
        None => sc.target.to_string(),
    }
}

/// Is this packet the scenario's request (not a reply)? ICMP echo requests,
/// TCP SYNs, UDP datagrams from an ephemeral port. Looks through VXLAN.
fn is_request(f: &Flow, sc: &Scenario) -> bool {
    let f = f.innermost();
    match (sc.traffic, &f.protocol) {
        (Traffic::Icmp, _) => f.is_echo_request(),
        (Traffic::Tcp | Traffic::Http, Proto::Tcp { flags }) => {
            flags.has(capture::TcpFlags::SYN) && !flags.has(capture::TcpFlags::ACK)
        }
        (Traffic::Udp, Proto::Udp) => f.src_port.is_some_and(is_ephemeral),
        _ => false,
    }
}

/// The kernel's default ephemeral port range (`net.ipv4.ip_local_port_range`).
fn is_ephemeral(port: u16) -> bool {
    conntrack::EPHEMERAL_PORTS.contains(&port)
}

/// Where the request came from when it reached the last hop.
fn last_request_source(
    seen: &[(&Packet, Flow)],
    sc: &Scenario,
    hop: &dyn Fn(&Packet) -> String,
    last: Option<&String>,
) -> Option<Ipv4Addr> {
    let last = last?;
    seen.iter()
        .filter(|(p, f)| is_request(f, sc) && hop(p) == *last)
        .find_map(|(_, f)| match f.innermost().src {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
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
fn flow_text(f: &Flow) -> (String, bool) {
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
fn sighting_table(
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
fn matches(f: &Flow, s: &Sighting) -> bool {
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

fn check(
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
fn check_neighbours(
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
fn check_rulesets(sc: &Scenario, rulesets: &HashMap<String, observe::Ruleset>) -> Vec<Check> {
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

/// What one namespace's services showed after the traffic.
struct ServiceState {
    entity: String,
    /// Conntrack entries (the table was emptied before the traffic).
    conntrack: Vec<conntrack::Entry>,
    /// IPVS's connection table.
    conns: Vec<ipvs::Conn>,
    /// IPVS's virtual services with their real servers.
    table: Vec<(ipvs::Service, Vec<ipvs::DestInfo>)>,
}

/// Per namespace, the IPVS virtual services the scenario's traffic was
/// addressed to, `ipvsadm -Ln` style with every real server and weight:
/// those a conntrack entry names as its original destination, or IPVS's
/// connection table holds a connection to from one of the request's client
/// sockets (the SLB: the VPC tracks nothing), or, in the namespace the path
/// ends in, the scenario's target: IPVS refused it there (no real server),
/// so no connection exists to show.
fn addressed_services(
    sc: &Scenario,
    path: &[String],
    clients: &[(SocketAddrV4, SocketAddrV4)],
    state: &[ServiceState],
) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for s in state {
        // The request ended in this namespace and left no trace in it.
        let refused_here = path
            .last()
            .is_some_and(|h| h.split('/').next() == Some(s.entity.as_str()))
            && s.conntrack.is_empty()
            && !s
                .conns
                .iter()
                .any(|c| clients.contains(&(c.client, c.virtual_service)));
        let addressed = |addr: Ipv4Addr, port: u16| {
            let vs = SocketAddrV4::new(addr, port);
            s.conntrack
                .iter()
                .any(|e| e.original.dst == addr && e.original.dport == Some(port))
                || s.conns
                    .iter()
                    .any(|c| c.virtual_service == vs && clients.contains(&(c.client, vs)))
                || (refused_here && addr == sc.target && Some(port) == sc.port)
        };
        let table = &s.table;
        let lines: Vec<String> = table
            .iter()
            .filter(|(svc, _)| addressed(svc.addr, svc.port))
            .flat_map(|(svc, dests)| {
                let mut head = format!(
                    "{} {}:{} {}",
                    svc.protocol.to_string().to_uppercase(),
                    svc.addr,
                    svc.port,
                    svc.scheduler
                );
                // As ipvsadm -Ln shows a persistent service.
                if let Some(t) = svc.persistent {
                    head.push_str(&format!(" persistent {t}"));
                }
                let dests = dests.iter().map(|d| {
                    format!(
                        "  -> {} {} weight {}",
                        d.dest,
                        d.dest.forward.ipvsadm_name(),
                        d.dest.weight
                    )
                });
                std::iter::once(head).chain(dests).collect::<Vec<_>>()
            })
            .collect();
        if !lines.is_empty() {
            out.push((s.entity.clone(), lines));
        }
    }
    out
}

/// A remembered eBPF translation as the golden text shows it, a port of
/// the kernel's ephemeral range written `*`:
/// `10.0.3.22:* -> 192.168.27.242:80 translated to 10.0.3.38:80`.
fn translation_text(f: &labctl_lb::FlowEntry) -> String {
    let addr = |a: std::net::SocketAddrV4| format!("{}{}", a.ip(), port_text(Some(a.port())));
    format!(
        "{} -> {} translated to {}",
        addr(f.client),
        addr(f.service),
        addr(f.backend)
    )
}

/// The scenario's conntrack expectations against the entries read back.
fn check_conntrack(sc: &Scenario, ct: &[(String, Vec<conntrack::Entry>)]) -> Vec<Check> {
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

fn word(r: ResultKind) -> &'static str {
    match r {
        ResultKind::Connected => "connected",
        ResultKind::Refused => "refused",
        ResultKind::Timeout => "timeout",
        ResultKind::Reset => "reset",
        ResultKind::Unreachable => "unreachable",
    }
}

/// `DIR/SCENARIO.pcapng`: every packet the taps saw, one interface block
/// per interface that saw any (`ENTITY/IFNAME`, the entity's role as its
/// description), the scenario and its expectations as the comment.
fn write_pcapng(
    dir: &Path,
    report: &Report,
    packets: &[Packet],
    entity_of: &HashMap<&str, (&str, Role)>,
) -> Result<(), ScenarioError> {
    let path = dir.join(format!("{}.pcapng", report.scenario));
    let mut interfaces: Vec<capture::PcapngInterface> = Vec::new();
    for p in packets {
        if interfaces
            .iter()
            .any(|i| i.netns == p.netns && i.ifindex == p.ifindex)
        {
            continue;
        }
        let (entity, role) = entity_of
            .get(p.netns.as_str())
            .map_or(("?".to_string(), "?".to_string()), |(e, r)| {
                (e.to_string(), format!("{r:?}").to_lowercase())
            });
        interfaces.push(capture::PcapngInterface {
            netns: p.netns.clone(),
            ifindex: p.ifindex,
            name: format!("{entity}/{}", p.ifname),
            description: role,
        });
    }
    let mut comment = format!(
        "labctl scenario {}: {} -> {} ({})",
        report.scenario,
        report.sender(),
        report.to,
        format!("{:?}", report.traffic).to_lowercase()
    );
    if let Some(d) = &report.description {
        let _ = write!(comment, "\n{d}");
    }
    for c in &report.checks {
        let _ = write!(comment, "\nexpect: {}", c.what);
    }
    capture::write_pcapng(&path, &comment, &interfaces, packets)
        .map_err(|source| ScenarioError::Pcap { path, source })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(src: [u8; 4], dst: [u8; 4], protocol: Proto) -> Flow {
        Flow {
            src: IpAddr::from(src),
            dst: IpAddr::from(dst),
            protocol,
            src_port: None,
            dst_port: None,
            inner: None,
            vni: None,
            src_mac: Some(Mac([2, 0, 0, 0, 0, 1])),
            dst_mac: Some(Mac([2, 0, 0, 0, 0, 2])),
            vlan: None,
        }
    }

    const ECHO: Proto = Proto::Icmp { type_: 8, code: 0 };

    /// `source:` becomes the address the client binds to; without it the
    /// kernel picks.
    #[test]
    fn the_request_binds_to_the_scenarios_source() {
        let lab = labctl_topology::load_str(
            "t.yaml",
            "name: s\nvpc:\n  subnets:\n    - { name: vsw, cidr: 10.0.0.0/24, gateway: 10.0.0.1 }\n\
             nodes:\n  - name: n1\n    interfaces: [{ name: eth0, subnet: vsw, address: 10.0.0.10 }]\n\
             scenarios:\n  - { name: a, from: n1, to: 10.0.0.1, protocol: icmp, source: 127.0.0.1 }\n\
             \x20 - { name: b, from: n1, to: 10.0.0.1:80, protocol: udp }\n",
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let a = request(&lab.scenarios[0]);
        assert_eq!(a.source, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(a.kind, Kind::Ping);
        assert_eq!(request(&lab.scenarios[1]).source, None);
    }

    fn netem_change(edit: impl Fn(&mut labctl_topology::Netem)) -> labctl_topology::LinkChange {
        let mut netem = labctl_topology::Netem {
            delay_ns: 0,
            jitter_ns: 0,
            loss: Default::default(),
            rate_bps: 0,
            reorder: Default::default(),
        };
        edit(&mut netem);
        labctl_topology::LinkChange {
            link: "node1/eth0".into(),
            entity: "node1".into(),
            ifname: "eth0".into(),
            netem: Some(netem),
            down: false,
            up: false,
            mtu: None,
            mac: None,
        }
    }

    #[test]
    fn netem_delays_widen_the_quiet_window_and_loss_keeps_the_fixed_wait() {
        assert_eq!(quiet_window(&[]), QUIET);
        let mut down = netem_change(|_| {});
        down.netem = None;
        down.down = true;
        assert_eq!(quiet_window(&[down]), QUIET);
        // Both ends of the link hold a packet for delay plus jitter.
        let delayed = netem_change(|n| {
            n.delay_ns = 50_000_000;
            n.jitter_ns = 5_000_000;
        });
        assert_eq!(quiet_window(&[delayed]), QUIET + Duration::from_millis(110));
        let slow = netem_change(|n| n.delay_ns = 1_000_000_000);
        assert_eq!(quiet_window(&[slow]), SETTLE_MAX);
        let lossy = netem_change(|n| n.loss = labctl_topology::Percent(1));
        assert_eq!(quiet_window(&[lossy]), SETTLE_MAX);
        let paced = netem_change(|n| n.rate_bps = 1_000_000);
        assert_eq!(quiet_window(&[paced]), SETTLE_MAX);
    }

    /// The Kata underlay: a VXLAN packet carrying the echo request for the
    /// pod's MAC.
    fn vxlan_echo() -> Flow {
        let mut inner = flow([10, 132, 2, 2], [10, 132, 2, 46], ECHO);
        inner.dst_mac = Some(Mac([0x0a, 0x58, 0x0a, 0x84, 2, 0x2e]));
        let mut outer = flow([192, 168, 10, 163], [192, 168, 10, 201], Proto::Udp);
        outer.src_port = Some(40000);
        outer.dst_port = Some(4789);
        outer.vni = Some(555005);
        outer.inner = Some(Box::new(inner));
        outer
    }

    fn sighting() -> Sighting {
        Sighting {
            address: None,
            src_mac: None,
            dst_mac: None,
            vlan: None,
            vni: None,
            protocol: None,
            interfaces: Vec::new(),
            only: false,
        }
    }

    #[test]
    fn untagged_rows_keep_their_text_and_tagged_ones_say_vlan() {
        let mut f = flow([10, 0, 0, 1], [10, 0, 0, 2], ECHO);
        assert_eq!(flow_text(&f).0, "10.0.0.1 > 10.0.0.2 icmp echo request");
        f.vlan = Some(100);
        assert_eq!(
            flow_text(&f).0,
            "vlan 100 10.0.0.1 > 10.0.0.2 icmp echo request"
        );
        assert_eq!(
            flow_text(&vxlan_echo()).0,
            "192.168.10.163:* > 192.168.10.201:4789 udp vni 555005 | 10.132.2.2 > 10.132.2.46 icmp echo request"
        );
    }

    #[test]
    fn arp_rows_read_like_tcpdump_and_have_unstable_counts() {
        let req = flow(
            [10, 132, 2, 2],
            [10, 132, 2, 46],
            Proto::Arp {
                op: 1,
                sender_mac: Some(Mac([2, 0, 0, 0, 0, 1])),
            },
        );
        assert_eq!(
            flow_text(&req),
            ("arp who-has 10.132.2.46 tell 10.132.2.2".to_string(), false)
        );
        let reply = flow(
            [10, 132, 2, 46],
            [10, 132, 2, 2],
            Proto::Arp {
                op: 2,
                sender_mac: Some(Mac([0x0a, 0x58, 0x0a, 0x84, 2, 0x2e])),
            },
        );
        assert_eq!(
            flow_text(&reply).0,
            "arp 10.132.2.46 is-at 0a:58:0a:84:02:2e"
        );
    }

    #[test]
    fn filters_match_the_layer_they_name() {
        let f = vxlan_echo();
        let pod_mac = [0x0a, 0x58, 0x0a, 0x84, 2, 0x2e];
        let with = |edit: &dyn Fn(&mut Sighting)| {
            let mut s = sighting();
            edit(&mut s);
            matches(&f, &s)
        };
        // Addresses and MACs: outer or inner header.
        assert!(with(&|s| s.address = Some(Ipv4Addr::new(10, 132, 2, 46))));
        assert!(with(&|s| s.address = Some(Ipv4Addr::new(192, 168, 10, 163))));
        assert!(!with(&|s| s.address = Some(Ipv4Addr::new(10, 132, 2, 47))));
        assert!(with(&|s| s.dst_mac = Some(pod_mac)));
        assert!(with(&|s| s.src_mac = Some([2, 0, 0, 0, 0, 1])));
        assert!(!with(&|s| s.src_mac = Some(pod_mac)));
        // The VNI on the VXLAN header; the protocol on the innermost packet.
        assert!(with(&|s| s.vni = Some(555005)));
        assert!(!with(&|s| s.vni = Some(1)));
        assert!(with(&|s| s.protocol = Some(SightProto::Icmp)));
        assert!(!with(&|s| s.protocol = Some(SightProto::Udp)));
        assert!(!with(&|s| s.protocol = Some(SightProto::Arp)));
        assert!(!with(&|s| s.vlan = Some(100)));
        // Every filter given must match.
        assert!(with(&|s| {
            s.address = Some(Ipv4Addr::new(10, 132, 2, 46));
            s.dst_mac = Some(pod_mac);
            s.vni = Some(555005);
        }));
        assert!(!with(&|s| {
            s.address = Some(Ipv4Addr::new(10, 132, 2, 46));
            s.vni = Some(1);
        }));
        let mut tagged = flow([10, 0, 0, 1], [10, 0, 0, 2], ECHO);
        tagged.vlan = Some(200);
        let mut s = sighting();
        s.vlan = Some(200);
        assert!(matches(&tagged, &s));
        s.vlan = Some(100);
        assert!(!matches(&tagged, &s));
    }
}
