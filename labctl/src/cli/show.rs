//! `labctl show`: kernel tables of one namespace of a lab (conntrack, IPVS,
//! nftables), read back the way `conntrack -L`, `ipvsadm -Ln` and `nft list
//! ruleset` show them, the lab's
//! eBPF load-balancer maps, the way `cilium bpf lb list` does, and a node's
//! eBPF router maps, the way `cilium bpf endpoint list` and `cilium bpf
//! tunnel list` do.

use std::net::{IpAddr, Ipv4Addr};

use clap::Subcommand;
use labctl::ipvs;
use labctl::observe::{self, conntrack};
use labctl::state::LabState;
use serde::Serialize;

use super::{Exit, Failure, Result, TableFormat as Format};

/// Show a kernel table inside a node, pod, client or the VPC of a lab.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// The conntrack table, like `ip netns exec NS conntrack -L -f ipv4`.
    ///
    /// Empty until something in the namespace uses conntrack (NAT, IPVS,
    /// nftables rules matching `ct`).
    Conntrack(ConntrackArgs),
    /// The IPVS virtual services and their real servers, like
    /// `ip netns exec NS ipvsadm -Ln`.
    Ipvs(IpvsArgs),
    /// The nftables ruleset, like `ip netns exec NS nft list ruleset`:
    /// kube-proxy's `ip kube-proxy` table (both modes), the lab's own
    /// tables.
    ///
    /// `-o json` prints `nft -j list ruleset`.
    Nft(IpvsArgs),
    /// The eBPF load balancer's services and backends, like
    /// `cilium bpf lb list`, and the flows it remembers.
    ///
    /// One line per service: `VIP:PORT/PROTO -> BACKEND:PORT, ...`, with
    /// `(pinned: BACKEND)` when every new flow goes to one backend. Only for
    /// labs whose topology has `ebpf:`.
    Lb(LbArgs),
    /// A node's eBPF router maps (Cilium's VXLAN data path), like
    /// `cilium bpf endpoint list` and `cilium bpf tunnel list` in that
    /// node's agent.
    ///
    /// Endpoints: `ADDRESS ifindex N identity ID mac POD_MAC lxc mac
    /// LXC_MAC`; tunnels: `CIDR -> NODE_IP`; and the ifindex of the VXLAN
    /// device cross-node packets leave by. Only for namespaces whose
    /// topology runs the router (`tc: ... bpf:` or `bpf_maps`).
    Route(RouteArgs),
}

#[derive(clap::Args)]
struct RouteArgs {
    #[command(flatten)]
    target: Target,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Format,
}

/// `-o json` of `show route`.
#[derive(Serialize)]
struct RouteView {
    endpoints: Vec<RouteEndpointView>,
    tunnels: Vec<RouteTunnelView>,
    tunnel_ifindex: u32,
    /// Local delivery: `egress` (`bpf_redirect`) or `peer`
    /// (`bpf_redirect_peer`).
    redirect: &'static str,
}

#[derive(Serialize)]
struct RouteEndpointView {
    address: Ipv4Addr,
    ifindex: u32,
    identity: u32,
    mac: String,
    lxc_mac: String,
}

#[derive(Serialize)]
struct RouteTunnelView {
    prefix: String,
    remote: Ipv4Addr,
}

/// Which namespace.
#[derive(clap::Args)]
struct Target {
    /// Lab name.
    lab: String,
    /// Node, pod or client name (or `vpc`).
    entity: String,
}

#[derive(clap::Args)]
struct ConntrackArgs {
    #[command(flatten)]
    target: Target,
    /// Every entry; without it, only entries involving an address of the
    /// lab (loopback and other traffic of the namespace is left out).
    #[arg(long)]
    all: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Format,
}

#[derive(clap::Args)]
struct IpvsArgs {
    #[command(flatten)]
    target: Target,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Format,
}

#[derive(clap::Args)]
struct LbArgs {
    /// Lab name.
    lab: String,
    /// A pod, for symmetry with `cilium bpf lb list` run in a pod's agent:
    /// every pod of a lab shares the same maps, so it is only checked.
    pod: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Format,
}

/// One load-balancer service in JSON output.
#[derive(Serialize)]
struct LbServiceView {
    /// `VIP:PORT/PROTO`.
    service: String,
    vip: Ipv4Addr,
    port: u16,
    protocol: String,
    /// `ADDRESS:PORT`, by slot.
    backends: Vec<String>,
    /// The backend every new flow goes to, if pinned.
    pinned: Option<String>,
}

/// `-o json` of `show lb`.
#[derive(Serialize)]
struct LbView {
    services: Vec<LbServiceView>,
    flows: Vec<String>,
}

/// One IPVS service in JSON output.
#[derive(Serialize)]
struct ServiceView<'a> {
    service: &'a ipvs::Service,
    destinations: &'a [ipvs::DestInfo],
}

pub fn run(args: Args) -> Result {
    match args.what {
        What::Conntrack(a) => show_conntrack(a),
        What::Ipvs(a) => show_ipvs(a),
        What::Nft(a) => show_nft(a),
        What::Lb(a) => show_lb(a),
        What::Route(a) => show_route(a),
    }
}

/// The argv that repeats a show command inside the lab's VM.
fn vm_argv(what: &str, target: &Target, output: Format, extra: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "show".into(),
        what.into(),
        target.lab.clone(),
        target.entity.clone(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    if output == Format::Json {
        argv.extend(["-o".into(), "json".into()]);
    }
    argv
}

/// The namespace of the target entity, or an error listing the known ones.
fn netns<'a>(record: &'a LabState, target: &Target) -> Result<&'a str> {
    match record.netns_of(&target.entity) {
        Some(ns) => Ok(&ns.name),
        None => {
            let known: Vec<&str> = record
                .namespaces
                .iter()
                .map(|n| n.entity.as_str())
                .collect();
            Err(Failure::new(
                Exit::Usage,
                format!(
                    "lab `{}` has no node, pod or client `{}`; it has: {}",
                    target.lab,
                    target.entity,
                    known.join(", ")
                ),
            ))
        }
    }
}

/// Exit code for a kernel read: without root it is the environment.
fn failed() -> Exit {
    if labctl::sys::is_root() {
        Exit::Failed
    } else {
        Exit::Environment
    }
}

/// The IPv4 addresses of every interface of the lab but loopbacks.
fn lab_addresses(record: &LabState) -> Result<Vec<Ipv4Addr>> {
    let mut out = Vec::new();
    for ns in observe::lab_status(record).map_err(labctl::engine::EngineError::Runtime)? {
        for itf in ns.interfaces {
            for a in itf.addresses {
                let ip = a.split('/').next().unwrap_or(&a);
                if let Ok(IpAddr::V4(ip)) = ip.parse::<IpAddr>()
                    && !ip.is_loopback()
                {
                    out.push(ip);
                }
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn show_conntrack(args: ConntrackArgs) -> Result {
    let record = super::record(&args.target.lab)?;
    if let Some(vm) = &record.vm {
        let extra: &[&str] = if args.all { &["--all"] } else { &[] };
        return super::forward(vm, vm_argv("conntrack", &args.target, args.output, extra));
    }
    let ns = netns(&record, &args.target)?;
    let mut entries = conntrack::dump_in(ns)
        .map_err(|e| Failure::new(failed(), format!("conntrack in {ns}: {e}")))?;
    if !args.all {
        let addrs = lab_addresses(&record)?;
        let keep: std::collections::HashSet<conntrack::Entry> = addrs
            .iter()
            .flat_map(|a| conntrack::involving(&entries, *a))
            .cloned()
            .collect();
        entries.retain(|e| keep.contains(e));
    }
    if args.output == Format::Json {
        let json = serde_json::to_string_pretty(&entries).expect("conntrack entries are JSON");
        println!("{json}");
        return Ok(());
    }
    for line in conntrack::format(&entries, false) {
        println!("{line}");
    }
    // conntrack -L's summary, on stderr so the lines can be piped.
    eprintln!(
        "{} flow entries in {ns}{}",
        entries.len(),
        if args.all {
            ""
        } else {
            " (involving the lab's addresses; --all for every one)"
        }
    );
    Ok(())
}

fn show_ipvs(args: IpvsArgs) -> Result {
    let record = super::record(&args.target.lab)?;
    if let Some(vm) = &record.vm {
        return super::forward(vm, vm_argv("ipvs", &args.target, args.output, &[]));
    }
    let ns = netns(&record, &args.target)?;
    let mut ipvs = ipvs::Ipvs::open_in(ns).map_err(|e| {
        let code = match e {
            ipvs::IpvsError::NoIpvs => Exit::Environment,
            _ => failed(),
        };
        Failure::new(code, format!("IPVS in {ns}: {e}"))
    })?;
    let services = ipvs
        .services()
        .map_err(|e| Failure::new(failed(), format!("IPVS in {ns}: {e}")))?;
    if args.output == Format::Json {
        let views: Vec<ServiceView> = services
            .iter()
            .map(|(service, dests)| ServiceView {
                service,
                destinations: dests,
            })
            .collect();
        let json = serde_json::to_string_pretty(&views).expect("IPVS services are JSON");
        println!("{json}");
        return Ok(());
    }
    print!("{}", ipvs::format_table(&services));
    Ok(())
}

fn show_nft(args: IpvsArgs) -> Result {
    let record = super::record(&args.target.lab)?;
    if let Some(vm) = &record.vm {
        return super::forward(vm, vm_argv("nft", &args.target, args.output, &[]));
    }
    let ns = netns(&record, &args.target)?;
    let text = labctl::kernel::nft::list(ns, args.output == Format::Json).map_err(|e| {
        let code = match e {
            labctl::kernel::nft::NftError::NotFound => Exit::Environment,
            _ => failed(),
        };
        Failure::new(code, format!("nftables in {ns}: {e}"))
    })?;
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(())
}

/// Exit code for a load-balancer error: "not up / no `ebpf:`" is the lab's
/// state, a missing toolchain the environment.
pub(super) fn lb_exit(e: &labctl::lb::LbError) -> Exit {
    match e {
        labctl::lb::LbError::NotLoaded { .. } | labctl::lb::LbError::NoRouter { .. } => Exit::State,
        labctl::lb::LbError::NotBuilt { .. } => Exit::Environment,
        _ => failed(),
    }
}

/// A pod of the lab, or an error listing its pods.
fn check_pod(record: &LabState, pod: &str) -> Result {
    use labctl_topology::Role;
    if record.netns_of(pod).is_some_and(|ns| ns.role == Role::Pod) {
        return Ok(());
    }
    let pods: Vec<&str> = record
        .namespaces
        .iter()
        .filter(|n| n.role == Role::Pod)
        .map(|n| n.entity.as_str())
        .collect();
    Err(Failure::new(
        Exit::Usage,
        format!(
            "lab `{}` has no pod `{pod}`; its pods: {}",
            record.lab,
            pods.join(", ")
        ),
    ))
}

fn show_lb(args: LbArgs) -> Result {
    let record = super::record(&args.lab)?;
    if let Some(vm) = &record.vm {
        let mut argv: Vec<String> = vec!["show".into(), "lb".into(), args.lab.clone()];
        argv.extend(args.pod.clone());
        if args.output == Format::Json {
            argv.extend(["-o".into(), "json".into()]);
        }
        return super::forward(vm, argv);
    }
    if let Some(pod) = &args.pod {
        check_pod(&record, pod)?;
    }
    let lb_failure = |e: labctl::lb::LbError| Failure::new(lb_exit(&e), e);
    let (services, flows) = labctl::lb::services_and_flows(&args.lab).map_err(lb_failure)?;
    if args.output == Format::Json {
        let view = LbView {
            services: services
                .iter()
                .map(|e| LbServiceView {
                    service: e.service.to_string(),
                    vip: e.service.vip,
                    port: e.service.port,
                    protocol: e.service.proto.to_string(),
                    backends: e.backends.iter().map(ToString::to_string).collect(),
                    pinned: e.pinned_backend().map(|p| p.to_string()),
                })
                .collect(),
            flows: flows.iter().map(ToString::to_string).collect(),
        };
        let json = serde_json::to_string_pretty(&view).expect("load-balancer maps are JSON");
        println!("{json}");
        return Ok(());
    }
    for entry in &services {
        println!("{entry}");
    }
    if !flows.is_empty() {
        println!();
        println!("remembered flows:");
        for f in &flows {
            println!("  {f}");
        }
    }
    // A summary, on stderr so the lines can be piped.
    eprintln!(
        "{} services, {} remembered flows in lab `{}` (maps shared by all its pods)",
        services.len(),
        flows.len(),
        args.lab
    );
    Ok(())
}

fn show_route(args: RouteArgs) -> Result {
    let record = super::record(&args.target.lab)?;
    if let Some(vm) = &record.vm {
        return super::forward(vm, vm_argv("route", &args.target, args.output, &[]));
    }
    // Checks the entity, listing the lab's when unknown.
    netns(&record, &args.target)?;
    let tables = labctl::route::tables(&args.target.lab, &args.target.entity)
        .map_err(|e| Failure::new(lb_exit(&e), e))?;
    let mac = labctl_topology::format_mac;
    if args.output == Format::Json {
        let view = RouteView {
            endpoints: tables
                .endpoints
                .iter()
                .map(|e| RouteEndpointView {
                    address: e.address,
                    ifindex: e.ifindex,
                    identity: e.identity,
                    mac: mac(&e.pod_mac),
                    lxc_mac: mac(&e.lxc_mac),
                })
                .collect(),
            tunnels: tables
                .tunnels
                .iter()
                .map(|t| RouteTunnelView {
                    prefix: format!("{}/{}", t.prefix, t.prefix_len),
                    remote: t.remote,
                })
                .collect(),
            tunnel_ifindex: tables.tunnel_ifindex,
            redirect: tables.redirect.name(),
        };
        let json = serde_json::to_string_pretty(&view).expect("router maps are JSON");
        println!("{json}");
        return Ok(());
    }
    println!("endpoints:");
    for e in &tables.endpoints {
        println!("  {e}");
    }
    println!("tunnels:");
    for t in &tables.tunnels {
        println!("  {t}");
    }
    match tables.tunnel_ifindex {
        0 => println!("tunnel device: none (nothing is encapsulated)"),
        i => println!("tunnel device: ifindex {i}"),
    }
    println!(
        "local delivery: {} ({})",
        tables.redirect,
        tables.redirect.helper()
    );
    eprintln!(
        "{} endpoints, {} tunnels in the router maps of {}",
        tables.endpoints.len(),
        tables.tunnels.len(),
        args.target.entity
    );
    Ok(())
}
