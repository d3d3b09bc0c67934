//! kube-proxy's nftables mode (`--proxy-mode=nftables`) on one node, as
//! the `nft -f` script that replaces the node's `ip kube-proxy` table.
//!
//! What is programmed follows kube-proxy's nftables proxier
//! (pkg/proxy/nftables/proxier.go), read, not copied:
//! - base chains as its newest release has them (its proxier_test.go
//!   `baseRules`): `filter-prerouting-pre-dnat` and
//!   `filter-output-pre-dnat` (priority -110, before DNAT) for the
//!   firewall check, `filter-input`/`-forward`/`-output` (priority 0, after
//!   DNAT) for the no-endpoint and ClusterIP checks, so that traffic a
//!   short-circuit rule has already translated is not dropped, and
//!   `nat-prerouting`/`nat-output` (-100) jumping to `services`,
//!   `nat-postrouting` (100) jumping to `masquerading`;
//! - dispatch by verdict maps: `service-ips` (ClusterIP, external and load
//!   balancer addresses, keyed address . protocol . port) and
//!   `service-nodeports` (protocol . port, for the node's addresses in
//!   `nodeport-ips`);
//! - per service port a `service-` chain (Cluster policy endpoints), a
//!   `local-` chain (the node's own, for a Local policy) and an
//!   `external-` chain for external traffic, whose rules masquerade under
//!   Cluster policy, or under Local policy short-circuit traffic from pods
//!   and from the node itself to the cluster chain; the endpoint is chosen
//!   by `numgen random mod N vmap`, and each `endpoint-` chain masquerades
//!   traffic from the endpoint itself (hairpin) and DNATs;
//! - no endpoints: `no-endpoint-services` / `no-endpoint-nodeports` reject
//!   (no endpoint anywhere) or drop (none for this policy here), checked in
//!   the filter chains for new connections; `cluster-ips-check` rejects
//!   traffic to a ClusterIP's unknown ports and drops traffic to
//!   unallocated addresses of the service CIDR;
//! - `mark-for-masquerade` sets 0x4000, `masquerading` clears it and
//!   masquerades.
//!
//! Differences, on purpose: chain names are kube-proxy's without the
//! 8-character hash prefix it adds to keep truncated names distinct (the
//! lab's names are short), the namespace is `default`, and an unnamed port
//! is named `pN`; a scenario's `backend:` pin keeps every endpoint in the
//! `numgen` map but points every slot at the pinned one, so the map has
//! the shape kube-proxy gives it and the choice is deterministic; and the
//! masquerade is not `fully-random`: fully random picks any source port
//! from 1024 up, which golden files could not hold (they write a port of
//! the ephemeral range, which a plain masquerade keeps, as `*`); what is
//! translated, and where, is the same.
//!
//! For observation, not in kube-proxy: every per-service chain (`firewall-`,
//! `external-`, `service-`, `local-`, `endpoint-`) opens with a bare
//! `counter` rule, and the reject and drop rules of `reject-chain` and
//! `cluster-ips-check` count too, so that after a scenario [`hits`] can
//! say which of kube-proxy's chains the request went through (the table
//! is replaced, counters at zero, before each scenario). Counters change
//! no verdict.
//!
//! `sessionAffinity: ClientIP` adds a timed set of client addresses per
//! endpoint (`affinity-...`), filled by the endpoint chain and checked by
//! the service chain ahead of `numgen`; `loadBalancerSourceRanges` puts
//! the load balancer address in `firewall-ips`, whose `firewall-` chain
//! drops other sources.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use labctl_topology::{Lab, Node, Service, ServicePort, TrafficPolicy};

use super::{MASQUERADE_MARK, allowed_sources, l4, node_addresses};

const TABLE: &str = "ip kube-proxy";

/// One endpoint: the pod's address and the service port's target port.
type Endpoint = (Ipv4Addr, u16);

/// The script under construction: declarations first (every chain exists
/// before a rule or map element names it), then rules, then elements.
#[derive(Default)]
struct Script {
    chains: Vec<String>,
    sets: Vec<String>,
    rules: Vec<String>,
    elements: Vec<String>,
}

impl Script {
    fn chain(&mut self, name: &str) {
        self.chains.push(format!("add chain {TABLE} {name}"));
    }
    /// A chain whose first rule counts what enters it (see [`hits`]).
    fn counted_chain(&mut self, name: &str) {
        self.chain(name);
        self.rule(name, "counter");
    }
    fn rule(&mut self, chain: &str, rule: &str) {
        self.rules.push(format!("add rule {TABLE} {chain} {rule}"));
    }
    fn element(&mut self, set: &str, element: &str) {
        self.elements
            .push(format!("add element {TABLE} {set} {{ {element} }}"));
    }
}

/// The names of one service port's chains.
struct Chains {
    cluster: String,
    local: String,
    external: String,
}

impl Chains {
    fn of(svc: &Service, port: &ServicePort) -> Chains {
        let base = base_name(svc, port);
        Chains {
            cluster: format!("service-{base}"),
            local: format!("local-{base}"),
            external: format!("external-{base}"),
        }
    }
}

/// `default/NAME/PROTO/PORTNAME`, as kube-proxy's chain names (without
/// their hash).
fn base_name(svc: &Service, port: &ServicePort) -> String {
    format!("default/{}/{}/p{}", svc.name, l4(port.protocol), port.port)
}

fn endpoint_chain(svc: &Service, port: &ServicePort, (addr, p): Endpoint) -> String {
    format!("endpoint-{}__{addr}/{p}", base_name(svc, port))
}

/// The set of client addresses an endpoint has served, under
/// `sessionAffinity: ClientIP`.
fn affinity_set(svc: &Service, port: &ServicePort, (addr, p): Endpoint) -> String {
    format!("affinity-{}__{addr}/{p}", base_name(svc, port))
}

/// kube-proxy's nftables table on `node` (see the module doc). `pin`: the
/// endpoint every service that has it must pick.
pub fn node_ruleset(lab: &Lab, services: &[Service], node: &Node, pin: Option<Ipv4Addr>) -> String {
    let pod_cidrs: Vec<String> = lab
        .nodes
        .iter()
        .filter_map(|n| n.pod_cidr)
        .map(|c| c.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // kube-proxy's local traffic detector (--detect-local-mode
    // ClusterCIDR): without pod CIDRs it has none, and the rules that need
    // it are left out, as kube-proxy's no-op detector does.
    let local_set = (!pod_cidrs.is_empty()).then(|| format!("{{ {} }}", pod_cidrs.join(", ")));
    let mut s = Script::default();
    setup(&mut s, lab, node);
    for svc in services {
        for port in &svc.ports {
            service_port(&mut s, lab, svc, port, node, pin, local_set.as_deref());
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "table {TABLE}");
    let _ = writeln!(out, "delete table {TABLE}");
    let _ = writeln!(
        out,
        "add table {TABLE} {{ comment \"rules for kube-proxy\" ; }}"
    );
    for line in s
        .chains
        .iter()
        .chain(&s.sets)
        .chain(&s.rules)
        .chain(&s.elements)
    {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The base chains, the dispatch and check chains, their sets and maps
/// (kube-proxy's `setupNFTables`).
fn setup(s: &mut Script, lab: &Lab, node: &Node) {
    let base = [
        ("filter-prerouting-pre-dnat", "filter", "prerouting", -110),
        ("filter-output-pre-dnat", "filter", "output", -110),
        ("filter-forward", "filter", "forward", 0),
        ("filter-input", "filter", "input", 0),
        ("filter-output", "filter", "output", 0),
        ("nat-prerouting", "nat", "prerouting", -100),
        ("nat-output", "nat", "output", -100),
        ("nat-postrouting", "nat", "postrouting", 100),
    ];
    for (name, kind, hook, priority) in base {
        s.chains.push(format!(
            "add chain {TABLE} {name} {{ type {kind} hook {hook} priority {priority} ; }}"
        ));
    }
    for name in [
        "cluster-ips-check",
        "firewall-check",
        "mark-for-masquerade",
        "masquerading",
        "nodeport-endpoints-check",
        "services",
        "service-endpoints-check",
    ] {
        s.chain(name);
    }
    s.chains.push(format!(
        "add chain {TABLE} reject-chain {{ comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }}"
    ));
    for (from, to, cond) in [
        (
            "filter-prerouting-pre-dnat",
            "firewall-check",
            "ct state new ",
        ),
        ("filter-forward", "service-endpoints-check", "ct state new "),
        ("filter-forward", "cluster-ips-check", "ct state new "),
        ("filter-input", "nodeport-endpoints-check", "ct state new "),
        ("filter-input", "service-endpoints-check", "ct state new "),
        ("filter-output", "service-endpoints-check", "ct state new "),
        ("filter-output-pre-dnat", "firewall-check", "ct state new "),
        ("filter-output", "cluster-ips-check", "ct state new "),
        ("nat-output", "services", ""),
        ("nat-postrouting", "masquerading", ""),
        ("nat-prerouting", "services", ""),
    ] {
        s.rule(from, &format!("{cond}jump {to}"));
    }
    s.rule(
        "mark-for-masquerade",
        &format!("meta mark set meta mark | {MASQUERADE_MARK:#010x}"),
    );
    s.rule(
        "masquerading",
        &format!("meta mark & {MASQUERADE_MARK:#010x} == 0 return"),
    );
    s.rule(
        "masquerading",
        &format!("meta mark set meta mark ^ {MASQUERADE_MARK:#010x}"),
    );
    // kube-proxy writes `masquerade fully-random`; here plain `masquerade`,
    // which keeps the client's source port when it is free (see the
    // module doc).
    s.rule("masquerading", "masquerade");
    let svc_key = "ipv4_addr . inet_proto . inet_service";
    for (kind, name, ty, comment) in [
        ("set", "cluster-ips", "ipv4_addr", "Active ClusterIPs"),
        (
            "set",
            "nodeport-ips",
            "ipv4_addr",
            "IPs that accept NodePort traffic",
        ),
        (
            "map",
            "no-endpoint-services",
            &format!("{svc_key} : verdict"),
            "vmap to drop or reject packets to services with no endpoints",
        ),
        (
            "map",
            "no-endpoint-nodeports",
            "inet_proto . inet_service : verdict",
            "vmap to drop or reject packets to service nodeports with no endpoints",
        ),
        (
            "map",
            "firewall-ips",
            &format!("{svc_key} : verdict"),
            "destinations that are subject to LoadBalancerSourceRanges",
        ),
        (
            "map",
            "service-ips",
            &format!("{svc_key} : verdict"),
            "ClusterIP, ExternalIP and LoadBalancer IP traffic",
        ),
        (
            "map",
            "service-nodeports",
            "inet_proto . inet_service : verdict",
            "NodePort traffic",
        ),
    ] {
        s.sets.push(format!(
            "add {kind} {TABLE} {name} {{ type {ty} ; comment \"{comment}\" ; }}"
        ));
    }
    s.rule(
        "cluster-ips-check",
        "ip daddr @cluster-ips counter reject comment \"Reject traffic to invalid ports of ClusterIPs\"",
    );
    if let Some(cidr) = lab.kube_proxy.service_cidr {
        s.rule(
            "cluster-ips-check",
            &format!(
                "ip daddr {{ {cidr} }} counter drop comment \"Drop traffic to unallocated ClusterIPs\""
            ),
        );
    }
    for a in node_addresses(node) {
        s.element("nodeport-ips", &a.to_string());
    }
    s.rule("reject-chain", "counter reject");
    s.rule(
        "service-endpoints-check",
        "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
    );
    s.rule(
        "nodeport-endpoints-check",
        "ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
    );
    s.rule(
        "firewall-check",
        "ip daddr . meta l4proto . th dport vmap @firewall-ips",
    );
    s.rule(
        "services",
        "ip daddr . meta l4proto . th dport vmap @service-ips",
    );
    s.rule(
        "services",
        "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
    );
}

/// One service port's elements and chains (kube-proxy's sync loop body).
fn service_port(
    s: &mut Script,
    lab: &Lab,
    svc: &Service,
    port: &ServicePort,
    node: &Node,
    pin: Option<Ipv4Addr>,
    local_set: Option<&str>,
) {
    let proto = l4(port.protocol);
    let e = super::categorize(lab, svc, port, node);
    let chains = Chains::of(svc, port);
    let uses_cluster = !e.cluster.is_empty();
    let uses_local = !e.local.is_empty();
    let internal_local = svc.internal_traffic_policy == TrafficPolicy::Local;
    let external_local = svc.external_traffic_policy == TrafficPolicy::Local;
    let (internal_chain, has_internal) = if internal_local {
        (&chains.local, uses_local)
    } else {
        (&chains.cluster, e.any)
    };
    let (external_policy_chain, has_external) = if external_local {
        (&chains.local, uses_local)
    } else {
        (&chains.cluster, e.any)
    };
    let uses_external = e.any && svc.externally_accessible();
    let (internal_verdict, external_verdict) = if e.any {
        ("drop", "drop")
    } else {
        ("goto reject-chain", "goto reject-chain")
    };
    let key = |addr: Ipv4Addr| format!("{addr} . {proto} . {}", port.port);

    s.element("cluster-ips", &svc.cluster_ip.to_string());
    if has_internal {
        s.element(
            "service-ips",
            &format!("{} : goto {internal_chain}", key(svc.cluster_ip)),
        );
    } else {
        s.element(
            "no-endpoint-services",
            &format!("{} : {internal_verdict}", key(svc.cluster_ip)),
        );
    }
    for addr in svc.external_ips.iter().copied().chain(svc.load_balancer_ip) {
        if e.any {
            s.element(
                "service-ips",
                &format!("{} : goto {}", key(addr), chains.external),
            );
        }
        if !has_external {
            s.element(
                "no-endpoint-services",
                &format!("{} : {external_verdict}", key(addr)),
            );
        }
    }
    if let Some(np) = port.node_port {
        if e.any {
            s.element(
                "service-nodeports",
                &format!("{proto} . {np} : goto {}", chains.external),
            );
        }
        if !has_external {
            s.element(
                "no-endpoint-nodeports",
                &format!("{proto} . {np} : {external_verdict}"),
            );
        }
    }

    let mut reachable: Vec<Endpoint> = e.cluster.clone();
    for ep in &e.local {
        if !reachable.contains(ep) {
            reachable.push(*ep);
        }
    }
    for ep in &reachable {
        s.counted_chain(&endpoint_chain(svc, port, *ep));
    }
    if uses_cluster {
        s.counted_chain(&chains.cluster);
    }
    if uses_local {
        s.counted_chain(&chains.local);
    }
    if uses_external {
        s.counted_chain(&chains.external);
    }
    // loadBalancerSourceRanges: new connections to the load balancer
    // address from elsewhere are dropped before DNAT (firewall-check, in
    // filter-prerouting-pre-dnat and filter-output-pre-dnat). Node ports
    // are not subject to them.
    if let Some(lb) = svc.load_balancer_ip
        && !svc.load_balancer_source_ranges.is_empty()
    {
        let fw = format!("firewall-{}", base_name(svc, port));
        s.counted_chain(&fw);
        s.element("firewall-ips", &format!("{} : goto {fw}", key(lb)));
        let sources = allowed_sources(svc, node, lb);
        s.rule(
            &fw,
            &format!("ip saddr != {{ {} }} drop", sources.join(", ")),
        );
    }
    // sessionAffinity: ClientIP: a set per endpoint of the clients it
    // served, entries expiring after the timeout (refreshed on each new
    // connection).
    if let Some(timeout) = svc.session_affinity {
        for ep in &reachable {
            s.sets.push(format!(
                "add set {TABLE} {} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {timeout}s ; }}",
                affinity_set(svc, port, *ep)
            ));
        }
    }

    if has_internal && let Some(local) = local_set {
        // Off-cluster traffic to a ClusterIP is masqueraded.
        s.rule(
            internal_chain,
            &format!(
                "ip daddr {} ip saddr != {local} jump mark-for-masquerade",
                svc.cluster_ip
            ),
        );
    }
    if uses_external {
        let ext = &chains.external;
        if !external_local {
            s.rule(ext, "jump mark-for-masquerade");
        } else if uses_cluster {
            if let Some(local) = local_set {
                s.rule(
                    ext,
                    &format!(
                        "ip saddr {local} goto {} comment \"short-circuit pod traffic\"",
                        chains.cluster
                    ),
                );
            }
            s.rule(
                ext,
                "fib saddr type local jump mark-for-masquerade comment \"masquerade local traffic\"",
            );
            s.rule(
                ext,
                &format!(
                    "fib saddr type local goto {} comment \"short-circuit local traffic\"",
                    chains.cluster
                ),
            );
        }
        if has_external {
            s.rule(ext, &format!("goto {external_policy_chain}"));
        }
    }
    if uses_cluster {
        numgen(s, svc, port, &chains.cluster, &e.cluster, pin);
    }
    if uses_local {
        numgen(s, svc, port, &chains.local, &e.local, pin);
    }
    for ep in &reachable {
        let chain = endpoint_chain(svc, port, *ep);
        s.rule(
            &chain,
            &format!("ip saddr {} jump mark-for-masquerade", ep.0),
        );
        if svc.session_affinity.is_some() {
            s.rule(
                &chain,
                &format!("update @{} {{ ip saddr }}", affinity_set(svc, port, *ep)),
            );
        }
        s.rule(
            &chain,
            &format!("meta l4proto {proto} dnat to {}:{}", ep.0, ep.1),
        );
    }
}

/// The endpoint choice: under session affinity first the endpoint a
/// client already has (`ip saddr @affinity-... goto endpoint-...`), then
/// `numgen random mod N vmap { 0 : goto ..., ... }`, every slot at the
/// pinned endpoint when `pin` is one of them.
fn numgen(
    s: &mut Script,
    svc: &Service,
    port: &ServicePort,
    chain: &str,
    endpoints: &[Endpoint],
    pin: Option<Ipv4Addr>,
) {
    if svc.session_affinity.is_some() {
        for ep in endpoints {
            s.rule(
                chain,
                &format!(
                    "ip saddr @{} goto {}",
                    affinity_set(svc, port, *ep),
                    endpoint_chain(svc, port, *ep)
                ),
            );
        }
    }
    let pinned = endpoints.iter().find(|e| Some(e.0) == pin);
    let slots: Vec<String> = endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| {
            let to = pinned.unwrap_or(ep);
            format!("{i} : goto {}", endpoint_chain(svc, port, *to))
        })
        .collect();
    s.rule(
        chain,
        &format!(
            "numgen random mod {} vmap {{ {} }}",
            endpoints.len(),
            slots.join(", ")
        ),
    );
}

/// The kube-proxy chains the traffic went through, from `nft -j list
/// ruleset` of one node: every chain of the `ip kube-proxy` table with a
/// counting rule that counted a packet, in the order a new connection
/// meets them (the filter checks before DNAT, then `services`' dispatch:
/// external, service or local policy, endpoint), as one line such as
/// `services -> service-default/svc1/tcp/p80 -> endpoint-...`. Empty when
/// none counted. Only a connection's first packet crosses the nat chains.
pub fn hits(json: &str) -> Result<Vec<String>, serde_json::Error> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    let mut hit: Vec<String> = Vec::new();
    let items = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .cloned()
        .unwrap_or_default();
    for item in &items {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        if rule.get("table").and_then(|t| t.as_str()) != Some("kube-proxy")
            || rule.get("family").and_then(|t| t.as_str()) != Some("ip")
        {
            continue;
        }
        let counted = rule
            .get("expr")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("counter"))
            .filter_map(|c| c.get("packets").and_then(|p| p.as_u64()))
            .any(|p| p > 0);
        let Some(chain) = rule.get("chain").and_then(|c| c.as_str()) else {
            continue;
        };
        if counted && !hit.iter().any(|h| h == chain) {
            hit.push(chain.to_string());
        }
    }
    hit.sort_by_key(|c| (rank(c), c.clone()));
    let (filter, nat): (Vec<String>, Vec<String>) = hit.into_iter().partition(|c| rank(c) < 3);
    let mut line = filter;
    if !nat.is_empty() {
        line.push("services".into());
        line.extend(nat);
    }
    Ok(if line.is_empty() {
        Vec::new()
    } else {
        vec![line.join(" -> ")]
    })
}

/// Where a chain comes in a new connection's way through the table.
fn rank(chain: &str) -> u8 {
    const ORDER: [&str; 6] = [
        "firewall-",
        "cluster-ips-check",
        "reject-chain",
        "external-",
        "service-",
        "endpoint-",
    ];
    if chain.starts_with("local-") {
        return 4;
    }
    ORDER
        .iter()
        .position(|p| chain.starts_with(p))
        .map_or(6, |i| i as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_follow_a_connection_through_the_chains() {
        let rule = |chain: &str, packets: u64| {
            serde_json::json!({"rule": {"family": "ip", "table": "kube-proxy", "chain": chain,
                "handle": 1, "expr": [{"counter": {"packets": packets, "bytes": 60 * packets}}]}})
        };
        let json = serde_json::json!({"nftables": [
            {"metainfo": {"json_schema_version": 1}},
            rule("endpoint-default/svc/tcp/p80__10.0.0.1/80", 1),
            rule("endpoint-default/svc/tcp/p80__10.0.0.2/80", 0),
            rule("service-default/svc/tcp/p80", 1),
            rule("external-default/svc/tcp/p80", 1),
            rule("firewall-default/svc/tcp/p80", 2),
            {"rule": {"family": "ip", "table": "other", "chain": "x",
                "expr": [{"counter": {"packets": 5, "bytes": 300}}]}},
        ]});
        assert_eq!(
            hits(&json.to_string()).unwrap(),
            [
                "firewall-default/svc/tcp/p80 -> services -> external-default/svc/tcp/p80 -> \
              service-default/svc/tcp/p80 -> endpoint-default/svc/tcp/p80__10.0.0.1/80"
            ]
        );
        let none = serde_json::json!({"nftables": [rule("service-default/svc/tcp/p80", 0)]});
        assert!(hits(&none.to_string()).unwrap().is_empty());
    }
}
