//! Running one scenario on a live lab: the services programmed (or reset)
//! for it and the neighbour tables forgotten, its link changes made, every
//! interface tapped, the traffic sent from inside the client's namespace,
//! the taps read until the lab is quiet, the kernel's state read back, the
//! changes undone and the services left as the topology says. What the
//! packets show is turned into the [`Report`] here, with its path from
//! [`path`] and its checks from [`super::checks`].

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use labctl_topology::{Lab, ResultKind, Role, Scenario, Traffic};

use crate::engine;
use crate::observe::capture::{self, Flow, Packet, Proto};
use crate::observe::{self, conntrack};
use crate::services::Overrides;
use crate::state::LabState;
use crate::traffic::{self, Failure, Kind, Request};
use crate::{ipvs, lb, services};

use super::checks::{check, check_conntrack, check_neighbours, check_rulesets};
use super::report::{sighting_table, translation_text};
use super::{Report, ScenarioError, is_ephemeral, path};

/// The capture ends once no tap has seen a packet for this long after the
/// client is done (see [`quiet_window`]). What can still be in flight then
/// is only what the kernel forwards on its own, in softirq, without a
/// program to wake: the client has its answer, the ICMP error or RST that
/// ended it, or (TCP) the server's FIN, so only its last ACK is left (see
/// `traffic::close`). Each hop of that takes microseconds; 30 ms leaves
/// room for a softirq pushed to ksoftirqd on a loaded 2-core machine, and
/// a last ACK held longer still keeps the capture running (the taps wait
/// for the ACK of every FIN they saw, see `capture::Closes`).
pub(super) const QUIET: Duration = Duration::from_millis(30);

/// The longest the taps keep running after the client: the fixed wait
/// every scenario had before it ended on quiet, kept as the bound for a
/// lab that never goes quiet.
pub(super) const SETTLE_MAX: Duration = Duration::from_millis(300);

/// How long the lab must be quiet to end the scenario's capture. A packet
/// held by netem is in no tap until it leaves the qdisc (taps see what a
/// device sends, after its qdisc): each netem delay, with its jitter, is
/// added for both ends of the link. Loss, reordering or a rate limit can
/// hold a packet for a retransmission timeout: such a scenario keeps the
/// whole fixed wait.
pub(super) fn quiet_window(changes: &[labctl_topology::LinkChange]) -> Duration {
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
/// Every namespace first forgets the neighbours earlier scenarios taught
/// it (see [`crate::kernel::neigh::ForgetNeighbours`]) and the TCP
/// connections they left in TIME_WAIT ([`crate::kernel::timewait`]). In
/// a lab with services, the services are programmed afresh with the
/// scenario's changes and pins (and then the conntrack tables emptied, see
/// [`crate::kernel::conntrack::FlushConntrack`]), so every scenario
/// starts from the same state whatever ran before it. With
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
    // What earlier scenarios taught the neighbour tables forgotten (and
    // the connections they left in TIME_WAIT closed), and the services
    // and the eBPF load balancer's maps programmed afresh with the
    // scenario's changes and pins (remembered flows emptied), in one
    // batch of steps through the executor `up` uses; then, once they are,
    // the conntrack tables where services live emptied.
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
    // Services left as the topology says by the scenario before need
    // only what traffic changed in them reset.
    let kept = overrides.is_empty() && opts.programmed.is_some_and(Programmed::get);
    let [reset, flush] = set_up_steps(record, lab, &overrides, kept);
    if let Some(p) = opts.programmed {
        p.set(false);
    }
    engine::apply_in_turn(record, &[&reset, &flush]).map_err(program_error)?;
    if overrides.is_empty()
        && let Some(p) = opts.programmed
    {
        p.set(true);
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
    let status = observe::lab_status(record).map_err(crate::engine::EngineError::Runtime)?;
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

/// The steps a scenario runs before its traffic, through the executor
/// `up` uses: every namespace's learned neighbours and TIME_WAIT
/// connections forgotten ([`forget_steps`]), and the services and eBPF
/// maps programmed under `o` ([`program_steps`]) or, when an earlier
/// scenario left them as the topology says (`kept`), only what traffic
/// changed in them reset ([`reset_steps`]). They touch different tables,
/// so they run together, in the first batch. The second, run once the
/// first has succeeded as the flush always followed the programming,
/// empties the conntrack tables where services live ([`flush_steps`]).
fn set_up_steps(
    record: &LabState,
    lab: &Lab,
    o: &Overrides,
    kept: bool,
) -> [Vec<crate::plan::Step>; 2] {
    let mut steps = forget_steps(record, lab);
    steps.extend(if kept {
        reset_steps(lab)
    } else {
        program_steps(lab, o)
    });
    [steps, flush_steps(record, lab)]
}

/// In a lab with services, the IPv4 conntrack table of each namespace
/// where services live (the nodes and the VPC, the SLB's) emptied, so the
/// flows a scenario reads back are its own
/// ([`crate::kernel::conntrack::FlushConntrack`]). None without services:
/// nothing there is read back.
fn flush_steps(record: &LabState, lab: &Lab) -> Vec<crate::plan::Step> {
    if lab.services.is_empty() {
        return Vec::new();
    }
    record
        .namespaces
        .iter()
        .filter(|n| matches!(n.role, Role::Node | Role::Vpc))
        .map(|n| crate::plan::Step {
            phase: crate::plan::Phase::Changes,
            netns: n.name.clone(),
            action: crate::plan::Action::FlushConntrack(crate::kernel::conntrack::FlushConntrack),
        })
        .collect()
}

/// What earlier scenarios taught the neighbour tables (and the requests
/// they left queued) forgotten in each of the lab's namespaces, so each
/// scenario starts as if run alone; the entries the topology declares
/// there stay ([`crate::kernel::neigh::ForgetNeighbours`]). And the TCP
/// connections earlier scenarios left in TIME_WAIT closed there: a client
/// reusing an ephemeral port would otherwise meet one at a server it
/// reached by another address ([`crate::kernel::timewait`]).
fn forget_steps(record: &LabState, lab: &Lab) -> Vec<crate::plan::Step> {
    record
        .namespaces
        .iter()
        .flat_map(|ns| {
            let keep = lab
                .objects
                .neighbours
                .iter()
                .filter(|n| lab.netns(&n.netns) == ns.name)
                .map(|n| n.address)
                .collect();
            let step = |action| crate::plan::Step {
                phase: crate::plan::Phase::Changes,
                netns: ns.name.clone(),
                action,
            };
            [
                step(crate::plan::Action::ForgetNeighbours(
                    crate::kernel::neigh::ForgetNeighbours { keep },
                )),
                step(crate::plan::Action::ForgetTimeWait(
                    crate::kernel::timewait::ForgetTimeWait,
                )),
            ]
        })
        .collect()
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

pub(super) fn request(sc: &Scenario) -> Request {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use super::*;
    use crate::kernel::Recorder;
    use crate::kernel::neigh::ForgetNeighbours;
    use crate::plan::{Action, Step};

    /// Two namespaces; `b` declares a neighbour the kernel ages
    /// (`reachable`) and one it never does (`permanent`), `a` none.
    const LAB: &str = "\
name: fg
namespaces:
  - name: a
  - name: b
links:
  - veth: {name: up0, in: a, peer: {name: up1, in: b}}
addresses:
  - {in: a, dev: up0, address: 192.0.2.1/24}
  - {in: b, dev: up1, address: 192.0.2.2/24}
neighbours:
  - {in: b, dev: up1, address: 192.0.2.9, lladdr: 02:00:00:00:00:09, state: reachable}
  - {in: b, dev: up1, address: 192.0.2.8, lladdr: 02:00:00:00:00:08, state: permanent}
scenarios:
  - {name: s, from: a, to: 192.0.2.2, protocol: icmp}
";

    /// A scenario's set-up, run through the executor on the recording
    /// fake: one ForgetNeighbours per namespace of the lab, keeping what
    /// the topology declares there, and one ForgetTimeWait, whether the
    /// services are programmed afresh or only reset.
    #[test]
    fn set_up_forgets_each_namespace_s_neighbours_through_the_executor() {
        let lab = labctl_topology::load_str("t.yaml", LAB, &BTreeMap::new()).unwrap();
        let plan = crate::plan::plan(&lab);
        let record = LabState::new(&lab.name, None, plan.namespaces.clone());
        let rt = engine::runtime().unwrap();
        for kept in [false, true] {
            let kernel = Recorder::default();
            let [reset, flush] = set_up_steps(&record, &lab, &Overrides::default(), kept);
            // No services: no conntrack table is read back, none emptied.
            assert!(flush.is_empty(), "{flush:#?}");
            rt.block_on(engine::run_steps(&kernel, &reset, &engine::Quiet))
                .unwrap();
            let sent = kernel.sent.take();
            let closed: Vec<&str> = sent
                .iter()
                .filter(|s| matches!(s.action, Action::ForgetTimeWait(_)))
                .inspect(|s| assert_eq!(s.phase, crate::plan::Phase::Changes))
                .map(|s| s.netns.as_str())
                .collect();
            assert_eq!(closed, ["fg-a", "fg-b"], "kept: {kept}");
            let forgotten: Vec<(String, Vec<Ipv4Addr>)> = sent
                .into_iter()
                .filter_map(|s: Step| match s.action {
                    Action::ForgetNeighbours(ForgetNeighbours { keep }) => {
                        assert_eq!(s.phase, crate::plan::Phase::Changes);
                        Some((s.netns, keep))
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(
                forgotten,
                vec![
                    ("fg-a".to_string(), vec![]),
                    (
                        "fg-b".to_string(),
                        vec![Ipv4Addr::new(192, 0, 2, 9), Ipv4Addr::new(192, 0, 2, 8)]
                    ),
                ],
                "kept: {kept}"
            );
            let log = kernel.log.take();
            assert!(log.contains(&"ip -n fg-a -4 neigh flush all".to_string()));
            for ns in ["fg-a", "fg-b"] {
                let text = format!("ip netns exec {ns} ss -K -4 -t state time-wait");
                assert!(log.contains(&text), "{text} in {log:#?}");
            }
            assert!(
                log.iter()
                    .any(|l| l.starts_with("ip -n fg-b -4 neigh show ")
                        && l.contains("case $a in 192.0.2.9|192.0.2.8) ;;")),
                "{log:#?}"
            );
        }
    }

    /// In a lab with services (Flannel's), the set-up's second batch, run
    /// through the executor on the recording fake once the first is done,
    /// empties the conntrack table of each namespace where services live,
    /// and only there: after every service and neighbour step, as the flush
    /// always followed the programming, whether the services are
    /// programmed afresh or only reset.
    #[test]
    fn set_up_empties_conntrack_where_services_live_after_programming_them() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/flannel.yaml");
        let lab = labctl_topology::load(&path, &BTreeMap::new()).unwrap();
        let plan = crate::plan::plan(&lab);
        let record = LabState::new(&lab.name, None, plan.namespaces.clone());
        let services: Vec<String> = record
            .namespaces
            .iter()
            .filter(|n| matches!(n.role, Role::Node | Role::Vpc))
            .map(|n| n.name.clone())
            .collect();
        assert!(services.len() >= 2, "{services:?}");
        let rt = engine::runtime().unwrap();
        for kept in [false, true] {
            let kernel = Recorder::default();
            let batches = set_up_steps(&record, &lab, &Overrides::default(), kept);
            for batch in &batches {
                rt.block_on(engine::run_steps(&kernel, batch, &engine::Quiet))
                    .unwrap();
            }
            let sent: Vec<Step> = kernel.sent.take();
            let first = batches[0].len();
            assert!(
                sent[..first]
                    .iter()
                    .all(|s| !matches!(s.action, Action::FlushConntrack(_))),
                "kept: {kept}: a flush among the service steps"
            );
            assert!(
                sent[..first]
                    .iter()
                    .any(|s| matches!(s.action, Action::IpvsTable(_) | Action::Nftables(_))),
                "kept: {kept}: no service step"
            );
            let flushed: Vec<String> = sent[first..]
                .iter()
                .map(|s| match s.action {
                    Action::FlushConntrack(_) => {
                        assert_eq!(s.phase, crate::plan::Phase::Changes);
                        s.netns.clone()
                    }
                    _ => panic!("kept: {kept}: after the flushes: {s}"),
                })
                .collect();
            assert_eq!(flushed, services, "kept: {kept}");
            let log = kernel.log.take();
            for ns in &services {
                let text = format!("ip netns exec {ns} conntrack -F -f ipv4");
                assert_eq!(
                    log.iter().filter(|l| **l == text).count(),
                    1,
                    "{text} in {log:#?}"
                );
            }
        }
    }
}
