//! Resolution of kube-proxy's settings and of `services`: addresses, ports,
//! node ports, endpoints, traffic policies, session affinity and source
//! ranges; and whether a scenario's `backend` is a service's endpoint.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_saphyr::{Location, Spanned};

use super::Resolver;
use crate::error::unknown_hint;
use crate::model::*;
use crate::raw::*;

impl Resolver<'_> {
    /// `proxy`, `kube_proxy` and `service_cidr`.
    pub(super) fn kube_proxy(&mut self, raw: &RawTopology) -> KubeProxy {
        let mut kp = KubeProxy::default();
        if let Some(RawProxyMode::Nftables) = raw.proxy {
            kp.mode = ProxyMode::Nftables;
        }
        let (oldest, newest) = (*KubeProxy::MINORS.start(), *KubeProxy::MINORS.end());
        if let Some(text) = &raw.kube_proxy {
            let t = text.value.trim();
            let minor = t
                .strip_prefix("1.")
                .filter(|m| !m.is_empty() && m.len() <= 2 && m.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|m| m.parse::<u32>().ok());
            match minor {
                Some(m) if KubeProxy::MINORS.contains(&m) => kp.minor = m,
                Some(_) => self.err(
                    &text.referenced,
                    format!("kube-proxy {t} is not modelled"),
                    "unknown version",
                    Some(format!("labctl models kube-proxy 1.{oldest} to 1.{newest}")),
                ),
                None => self.err(
                    &text.referenced,
                    format!("invalid kube-proxy version `{t}`"),
                    "not a version",
                    Some(format!(
                        "write a minor version in quotes, e.g. \"1.{newest}\""
                    )),
                ),
            }
            if kp.mode == ProxyMode::Nftables
                && minor.is_some_and(|m| m < KubeProxy::NFTABLES_SINCE)
            {
                self.err(
                    &text.referenced,
                    format!("kube-proxy {t} has no nftables mode"),
                    "too old for nftables",
                    Some(format!(
                        "kube-proxy's nftables mode exists since 1.{}; use `proxy: ipvs` or a later version",
                        KubeProxy::NFTABLES_SINCE
                    )),
                );
            }
        }
        if let Some(text) = &raw.service_cidr {
            kp.service_cidr = self.network(text, "service cidr");
        }
        kp
    }

    /// A service; `pods` are the file's pods (a pod with problems of its own
    /// is still a known endpoint).
    pub(super) fn service(
        &mut self,
        raw: &RawService,
        pods: &[RawPod],
        node_ports: &mut HashMap<(u16, Protocol), Location>,
    ) -> Option<Service> {
        let before = self.problems.len();
        let name = &raw.name.value;
        let names: Vec<&str> = pods.iter().map(|p| p.name.value.as_str()).collect();
        let cluster_ip = self.ipv4(&raw.cluster_ip, "cluster ip");
        if let Some(ip) = cluster_ip {
            self.claim_address(ip, format!("service {name}"), &raw.cluster_ip.referenced);
        }
        let mut external_ips = Vec::new();
        for text in &raw.external_ips {
            if let Some(ip) = self.ipv4(text, "external ip") {
                self.claim_address(ip, format!("service {name}"), &text.referenced);
                external_ips.push(ip);
            }
        }
        let load_balancer_ip = match &raw.load_balancer_ip {
            Some(text) => {
                let ip = self.ipv4(text, "load balancer ip");
                if let Some(ip) = ip {
                    self.claim_address(ip, format!("service {name}"), &text.referenced);
                }
                Some(ip)
            }
            None => None,
        };
        let mut endpoints: Vec<String> = Vec::new();
        for e in &raw.endpoints {
            if !names.contains(&e.value.as_str()) {
                self.err(
                    &e.referenced,
                    format!("unknown pod `{}`", e.value),
                    "unknown endpoint",
                    Some(unknown_hint("pod", &e.value, &names)),
                );
            }
        }
        if let Some(selector) = &raw.selector {
            let selected: Vec<&str> = pods
                .iter()
                .filter(|p| {
                    selector
                        .value
                        .iter()
                        .all(|(k, v)| p.labels.get(k) == Some(v))
                })
                .map(|p| p.name.value.as_str())
                .collect();
            if selected.is_empty() {
                let wanted: Vec<String> = selector
                    .value
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect();
                self.err(
                    &selector.referenced,
                    format!(
                        "service {name}: no pod has the labels {{{}}}",
                        wanted.join(", ")
                    ),
                    "selects nothing",
                    Some("give the pods `labels:` with these keys and values".into()),
                );
            }
            for n in selected {
                if !raw.endpoints.iter().any(|e| e.value == n) {
                    endpoints.push(n.to_string());
                }
            }
        }
        // Named endpoints first, then selected ones, each in pod order.
        let mut all: Vec<String> = names
            .iter()
            .filter(|n| raw.endpoints.iter().any(|e| e.value == **n))
            .map(|n| n.to_string())
            .collect();
        all.extend(endpoints);
        if raw.endpoints.is_empty() && raw.selector.is_none() {
            self.err(
                &raw.name.referenced,
                format!("service {name} has no endpoints"),
                "no endpoints",
                Some("add `endpoints: [POD, ...]` or `selector: {app: NAME}`".into()),
            );
        }
        let ports: Vec<ServicePort> = raw
            .ports
            .iter()
            .map(|p| ServicePort {
                port: p.port,
                target_port: p.target_port.unwrap_or(p.port),
                node_port: p.node_port,
                protocol: match p.protocol {
                    Some(RawProtocol::Udp) => Protocol::Udp,
                    _ => Protocol::Tcp,
                },
            })
            .collect();
        if ports.is_empty() || ports.iter().any(|p| p.port == 0 || p.target_port == 0) {
            self.err(
                &raw.name.referenced,
                format!("service {name} needs ports from 1 to 65535"),
                "no ports",
                Some("write `ports: [{ port: 80 }]`".into()),
            );
        }
        for p in &ports {
            let Some(np) = p.node_port else { continue };
            if !(30000..=32767).contains(&np) {
                self.err(
                    &raw.name.referenced,
                    format!("service {name}: node port {np} is outside 30000-32767"),
                    "node port out of range",
                    Some("Kubernetes allocates node ports from 30000-32767 (--service-node-port-range)".into()),
                );
            } else if let Some(first) = node_ports.get(&(np, p.protocol)) {
                let line = first.line();
                self.err(
                    &raw.name.referenced,
                    format!("service {name}: node port {np} is already used at line {line}"),
                    "node port taken",
                    Some("every service needs node ports of its own".into()),
                );
            } else {
                node_ports.insert((np, p.protocol), raw.name.referenced);
            }
        }
        if let Some(text) = &raw.load_balancer_ip
            && ports.iter().any(|p| p.node_port.is_some())
            && ports.iter().any(|p| p.node_port.is_none())
        {
            self.err(
                &text.referenced,
                format!("service {name}: some ports have a node_port and some do not"),
                "mixed node ports",
                Some(
                    "the SLB forwards either to nodeIP:nodePort (Flannel: give every port a \
                     node_port) or straight to the pods (Terway ENIs: give none)"
                        .into(),
                ),
            );
        }
        let session_affinity = self.session_affinity(raw);
        let load_balancer_source_ranges = self.source_ranges(raw);
        if self.problems.len() > before {
            return None;
        }
        Some(Service {
            name: name.clone(),
            cluster_ip: cluster_ip?,
            external_ips,
            load_balancer_ip: load_balancer_ip.flatten(),
            external_traffic_policy: policy(raw.external_traffic_policy),
            internal_traffic_policy: policy(raw.internal_traffic_policy),
            session_affinity,
            load_balancer_source_ranges,
            ports,
            endpoints: all,
        })
    }
}

impl Resolver<'_> {
    /// `session_affinity` and its timeout: the timeout in seconds under
    /// `ClientIP`, as Kubernetes' validation allows it (1 to 86400).
    fn session_affinity(&mut self, raw: &RawService) -> Option<u32> {
        let name = &raw.name.value;
        let client_ip = raw.session_affinity == Some(RawSessionAffinity::ClientIp);
        let Some(t) = &raw.session_affinity_timeout_seconds else {
            return client_ip.then_some(DEFAULT_AFFINITY_TIMEOUT_SECONDS);
        };
        if !client_ip {
            self.err(
                &t.referenced,
                format!("service {name}: a session affinity timeout without `session_affinity: ClientIP`"),
                "no affinity to time out",
                Some("add `session_affinity: ClientIP`, or remove the timeout".into()),
            );
            return None;
        }
        if t.value == 0 || t.value > MAX_AFFINITY_TIMEOUT_SECONDS {
            self.err(
                &t.referenced,
                format!(
                    "service {name}: session affinity timeout {} is outside 1-{MAX_AFFINITY_TIMEOUT_SECONDS}",
                    t.value
                ),
                "out of range",
                Some(format!(
                    "Kubernetes accepts 1 to {MAX_AFFINITY_TIMEOUT_SECONDS} seconds (a day); the default is {DEFAULT_AFFINITY_TIMEOUT_SECONDS}"
                )),
            );
            return None;
        }
        Some(t.value)
    }

    /// `load_balancer_source_ranges`: networks, only on a service with a
    /// load balancer address (Kubernetes ignores them on others; here that
    /// is a mistake worth saying).
    fn source_ranges(&mut self, raw: &RawService) -> Vec<Ipv4Net> {
        let name = &raw.name.value;
        let mut out = Vec::new();
        for text in &raw.load_balancer_source_ranges {
            if raw.load_balancer_ip.is_none() {
                self.err(
                    &text.referenced,
                    format!(
                        "service {name}: load balancer source ranges without a load balancer ip"
                    ),
                    "not a LoadBalancer service",
                    Some(
                        "kube-proxy applies source ranges to load balancer addresses only: \
                         add `load_balancer_ip:`, or remove the ranges"
                            .into(),
                    ),
                );
                return Vec::new();
            }
            if let Some(net) = self.network(text, "load balancer source range") {
                out.push(net);
            }
        }
        out
    }

    /// A scenario's `backend:` must be an endpoint (after the scenario's
    /// own changes) of a service the scenario addresses, by one of its
    /// addresses and ports or by a node port on a node's address.
    pub(super) fn backend_serves(
        &mut self,
        pod: &str,
        text: &Spanned<String>,
        (target, port): (Ipv4Addr, Option<u16>),
        changes: &[ServiceChange],
        lab: &Lab,
    ) {
        let node_address = lab
            .nodes
            .iter()
            .flat_map(|n| &n.interfaces)
            .any(|i| i.address.is_some_and(|a| a.addr() == target));
        let addressed: Vec<&Service> = lab
            .services
            .iter()
            .filter(|s| {
                s.ports.iter().any(|p| {
                    let by_address =
                        port.is_none_or(|x| x == p.port) && s.addresses().any(|a| a == target);
                    let by_node_port = node_address && port.is_some() && p.node_port == port;
                    by_address || by_node_port
                })
            })
            .collect();
        if addressed.is_empty() {
            let to = match port {
                Some(p) => format!("{target}:{p}"),
                None => target.to_string(),
            };
            self.err(
                &text.referenced,
                format!("backend {pod}: {to} is no service's address and port"),
                "no service here",
                Some("`backend` pins the endpoint a service picks; send to a service address, or remove it".into()),
            );
            return;
        }
        let endpoints = |s: &Service| -> Vec<String> {
            let removed: Vec<&String> = changes
                .iter()
                .filter(|c| c.service == s.name)
                .flat_map(|c| &c.remove_endpoints)
                .collect();
            s.endpoints
                .iter()
                .filter(|e| !removed.contains(e))
                .cloned()
                .collect()
        };
        if addressed
            .iter()
            .any(|s| endpoints(s).iter().any(|e| e == pod))
        {
            return;
        }
        let listed: Vec<String> = addressed
            .iter()
            .map(|s| format!("{}: {}", s.name, endpoints(s).join(", ")))
            .collect();
        let names: Vec<&str> = addressed.iter().map(|s| s.name.as_str()).collect();
        self.err(
            &text.referenced,
            format!(
                "backend {pod} is not an endpoint of service {}",
                names.join(", ")
            ),
            "not an endpoint",
            Some(format!(
                "pick one of the endpoints (after this scenario's changes): {}",
                listed.join("; ")
            )),
        );
    }
}

pub(super) fn policy(raw: Option<RawTrafficPolicy>) -> TrafficPolicy {
    match raw {
        Some(RawTrafficPolicy::Local) => TrafficPolicy::Local,
        Some(RawTrafficPolicy::Cluster) | None => TrafficPolicy::Cluster,
    }
}
