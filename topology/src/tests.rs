//! Unit tests of the topology language: the shipped flannel example, every
//! validation error with its location (`file:line:column`), templating and
//! the published JSON schema. No root needed.

use std::time::Instant;

use super::*;

mod evpn;

fn vars() -> BTreeMap<String, String> {
    BTreeMap::new()
}

/// A small valid topology; tests replace one piece of it.
const BASE: &str = "\
name: lab
vpc:
  cidr: 10.0.0.0/8
  subnets:
    - { name: vsw-a, cidr: 10.0.0.0/24, gateway: 10.0.0.253 }
    - { name: vsw-b, cidr: 10.0.1.0/24, gateway: 10.0.1.253 }
  routes:
    - { destination: 172.23.96.0/26, next_hop: node-1 }
nodes:
  - name: node-1
    interfaces:
      - { name: eth0, subnet: vsw-a, address: 10.0.0.10 }
    pod_cidr: 172.23.96.0/26
  - name: node-2
    interfaces:
      - { name: eth0, subnet: vsw-b, address: 10.0.1.10 }
    pod_cidr: 172.23.96.64/26
pods:
  - { name: pod-a, node: node-1, address: 172.23.96.10 }
  - { name: pod-b, node: node-2, address: 172.23.96.70, ports: [80, { port: 53, protocol: udp }] }
clients:
  - { name: client, address: 198.51.100.10/24 }
";

fn load_base(source: &str) -> Result<Lab, TopologyError> {
    load_str("t.yaml", source, &vars())
}

/// Every problem of BASE with `from` replaced by `to` (once), one line each.
fn with(from: &str, to: &str) -> Vec<String> {
    let source = BASE.replacen(from, to, 1);
    assert_ne!(source, BASE, "`{from}` is not in BASE");
    match load_base(&source) {
        Ok(_) => Vec::new(),
        Err(e) => {
            let problems = e.problems();
            assert!(!problems.is_empty(), "no located problem in {e}");
            problems.iter().map(|p| p.to_string()).collect()
        }
    }
}

/// The single problem of BASE with a replacement, and its help.
fn one(from: &str, to: &str) -> (String, String) {
    let source = BASE.replacen(from, to, 1);
    assert_ne!(source, BASE, "`{from}` is not in BASE");
    let e = load_base(&source).expect_err("should fail");
    let problems = e.problems();
    assert_eq!(problems.len(), 1, "expected one problem: {problems:#?}");
    (e.to_string(), problems[0].help.clone().unwrap_or_default())
}

fn flannel_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/flannel.yaml")
}

// ---- the shipped example ---------------------------------------------

#[test]
fn base_is_valid() {
    let lab = load_base(BASE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lab.pods[1].ports.len(), 2);
    assert_eq!(lab.pods[1].ports[1].protocol, Protocol::Udp);
    assert_eq!(lab.clients[0].gateway.to_string(), "198.51.100.1");
    assert_eq!(lab.clients[0].vpc_port, "client");
}

#[test]
fn flannel_resolves() {
    let lab = load(&flannel_path(), &vars()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lab.name, "flannel");
    assert_eq!(lab.nodes.len(), 3);
    assert_eq!(lab.pods.len(), 5);
    let gateways: Vec<String> = lab
        .nodes
        .iter()
        .map(|n| {
            assert_eq!(n.bridge, "cni0");
            assert_eq!(n.sysctls["net.ipv4.ip_forward"], "1");
            n.pod_gateway.map(|g| g.to_string()).unwrap_or_default()
        })
        .collect();
    assert_eq!(gateways, ["172.23.96.1", "172.23.96.129", "172.23.96.65"]);
    let node180 = lab.node("node-180").unwrap();
    assert_eq!(node180.default_gateway.to_string(), "10.0.0.253");
    assert_eq!(
        node180.interfaces[0].address.unwrap().to_string(),
        "10.0.0.180/24"
    );
    assert_eq!(node180.interfaces[0].vpc_port, "node-180-eth0");
    for pod in &lab.pods {
        let Attachment::Bridge { host_ifname } = &pod.attachment else {
            panic!("flannel pods are bridge pods");
        };
        assert!(host_ifname.starts_with("veth"), "{host_ifname}");
        assert_eq!(host_ifname.len(), 12);
        assert_eq!(pod.ifname, "eth0");
        let node = lab.node(&pod.node).unwrap();
        assert_eq!(pod.address.prefix_len(), 26);
        assert_eq!(
            pod.routes,
            [Route {
                destination: "0.0.0.0/0".parse().unwrap(),
                via: node.pod_gateway.unwrap(),
            }]
        );
    }
    let nginx = lab.pods.iter().find(|p| p.name == "nginx").unwrap();
    assert_eq!(
        nginx.ports,
        [Port {
            port: 80,
            protocol: Protocol::Tcp
        }]
    );
    // VPC routes: pod CIDR -> the node's address.
    let routes: Vec<(String, String, String)> = lab
        .vpc
        .as_ref()
        .unwrap()
        .routes
        .iter()
        .map(|r| {
            (
                r.destination.to_string(),
                r.next_hop_node.clone(),
                r.via.to_string(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            (
                "172.23.96.0/26".into(),
                "node-180".into(),
                "10.0.0.180".into()
            ),
            (
                "172.23.96.64/26".into(),
                "node-216".into(),
                "10.0.1.216".into()
            ),
            (
                "172.23.96.128/26".into(),
                "node-206".into(),
                "10.0.1.206".into()
            ),
        ]
    );
    assert_eq!(lab.clients[0].gateway.to_string(), "198.51.100.1");
    insta::assert_yaml_snapshot!("flannel", lab);
}

#[test]
fn flannel_renders_line_for_line() {
    // Template tags sit on lines of their own, which render empty, and the
    // VXLAN backend's loops come last: up to them, every plain line of the
    // file renders on its own line number, so errors point into the file.
    let source = std::fs::read_to_string(flannel_path()).unwrap();
    let rendered = render(&flannel_path(), &vars()).unwrap();
    let rendered: Vec<&str> = rendered.lines().collect();
    let tail = source
        .lines()
        .position(|l| l == "{% if vxlan %}")
        .expect("the VXLAN backend's block");
    assert!(rendered.len() >= tail);
    for (i, line) in source.lines().take(tail).enumerate() {
        if !line.contains("{{") && !line.contains("{%") && !line.contains("{#") {
            assert_eq!(rendered[i], line, "line {}", i + 1);
        }
    }
    assert!(!rendered.iter().any(|l| l.contains("{%")));
    let mut off = vars();
    off.insert("services".into(), "off".into());
    let plain = render(&flannel_path(), &off).unwrap();
    assert!(!plain.contains("services:") && !plain.contains("8.219.164.113"));
}

// ---- parse errors ----------------------------------------------------

#[test]
fn unknown_key_lists_valid_keys() {
    let (e, help) = one("pod_cidr: 172.23.96.0/26", "pod_cidrr: 172.23.96.0/26");
    assert_eq!(
        e,
        "t.yaml:13:5: unknown key `pod_cidrr`, expected one of: name, interfaces, pod_cidr, \
         bridge, hairpin_mode, sysctls"
    );
    assert!(help.starts_with("did you mean `pod_cidr`?"), "{help}");
}

#[test]
fn unknown_top_level_key() {
    let (e, _) = one("name: lab\n", "name: lab\nservicez: []\n");
    assert_eq!(
        e,
        "t.yaml:2:1: unknown key `servicez`, expected one of: name, vpc, nodes, pods, clients, \
         services, proxy, kube_proxy, service_cidr, scenarios, ebpf, \
         namespaces, links, addresses, routes, neighbours, fdb, evpn, tc, bpf_maps, sysctls"
    );
}

#[test]
fn wrong_type() {
    let (e, _) = one(
        "    interfaces:\n      - { name: eth0, subnet: vsw-b, address: 10.0.1.10 }",
        "    interfaces: eth0",
    );
    assert_eq!(e, "t.yaml:15:17: `interfaces` must be a list, found `eth0`");
}

#[test]
fn missing_field() {
    let (e, help) = one(
        "  - { name: pod-a, node: node-1, address: 172.23.96.10 }",
        "  - { name: pod-a, node: node-1 }",
    );
    assert_eq!(e, "t.yaml:19:20: missing field `address`");
    assert_eq!(help, "add `address` here");
}

#[test]
fn duplicate_key() {
    let (e, _) = one("name: lab\n", "name: lab\nname: lab2\n");
    assert_eq!(e, "t.yaml:2:1: duplicate mapping key: name");
}

#[test]
fn yaml_syntax_error() {
    let (e, _) = one("vpc:\n", "vpc: [\n");
    assert_eq!(e, "t.yaml:2:6: `vpc` must be a mapping, found a list");
}

/// BASE's pods.
const BASE_PODS: &str = "pods:\n  - { name: pod-a, node: node-1, address: 172.23.96.10 }\n  - \
                         { name: pod-b, node: node-2, address: 172.23.96.70, ports: [80, { port: \
                         53, protocol: udp }] }\n";

#[test]
fn empty_list_from_a_template_says_what_to_write() {
    // The loop renders no item: `pods:` is left with nothing, a null.
    let source = BASE.replacen(
        BASE_PODS,
        "pods:\n{% for p in [] %}\n  - { name: p{{ p }}, node: node-1, address: 172.23.96.9 }\n\
         {% endfor %}\n",
        1,
    );
    let e = load_base(&source).unwrap_err();
    assert_eq!(
        e.to_string(),
        "t.yaml:18:5: `pods` is empty, expected a list"
    );
    let help = e.problems()[0].help.clone().unwrap();
    assert!(help.starts_with("give `pods` one `- item` per line below it, write `pods: []` for none, or remove the key"), "{help}");
    // The same without a template, with a comment or a null.
    for (pods, column) in [
        ("pods:\n", 5),
        ("pods:   # none yet\n", 5),
        ("pods: ~\n", 7),
    ] {
        let (e, _) = one(BASE_PODS, pods);
        assert_eq!(
            e,
            format!("t.yaml:18:{column}: `pods` is empty, expected a list")
        );
    }
    let (e, _) = one(
        "  routes:\n    - { destination: 172.23.96.0/26, next_hop: node-1 }\n",
        "  routes:\n",
    );
    assert_eq!(e, "t.yaml:7:9: `routes` is empty, expected a list");
}

#[test]
fn values_of_the_wrong_shape_name_their_key() {
    let (e, help) = one(BASE_PODS, "pods: 5\n");
    assert_eq!(e, "t.yaml:18:7: `pods` must be a list, found `5`");
    assert_eq!(help, "give `pods` one `- item` per line below it");
    let (e, _) = one(BASE_PODS, "pods: { name: x }\n");
    assert_eq!(e, "t.yaml:18:7: `pods` must be a list, found a mapping");
    let source = "name: lab\nvpc: 5\nnodes: []\n";
    let e = load_base(source).unwrap_err();
    assert_eq!(
        e.to_string(),
        "t.yaml:2:6: `vpc` must be a mapping, found `5`"
    );
    let (e, _) = one("name: lab\n", "name:\n");
    assert_eq!(e, "t.yaml:1:5: `name` is empty, expected a string");
    let (e, _) = one(
        "clients:\n  - { name: client, address: 198.51.100.10/24 }\n",
        "clients:\n  -\n",
    );
    assert_eq!(e, "t.yaml:22:4: expected a mapping, found nothing");
}

#[test]
fn yaml_parser_limits_are_named() {
    let ports = vec!["80"; 250_000].join(", ");
    let (e, help) = one("ports: [80, ", &format!("ports: [{ports}, "));
    assert!(
        e.ends_with(": the topology has more than 250000 yaml values, lists and mappings"),
        "{e}"
    );
    assert!(help.ends_with("generate fewer items"), "{help}");
}

#[test]
fn port_out_of_range() {
    let (e, _) = one("ports: [80", "ports: [70000");
    assert_eq!(
        e,
        "t.yaml:20:65: invalid value: integer `70000`, expected a port from 1 to 65535"
    );
}

#[test]
fn port_zero_and_duplicate_port() {
    assert_eq!(
        with("ports: [80", "ports: [0, 80, 80"),
        [
            "t.yaml:20:65: port 0 is not a valid port",
            "t.yaml:20:72: pod pod-b lists port 80/tcp twice",
        ]
    );
}

#[test]
fn unknown_protocol_and_attachment() {
    let (e, _) = one("protocol: udp", "protocol: sctp");
    assert_eq!(
        e,
        "t.yaml:20:91: unknown variant `sctp`, expected one of tcp, udp"
    );
    let (e, _) = one(
        "address: 172.23.96.10 }",
        "address: 172.23.96.10, attachment: macvlan }",
    );
    assert_eq!(
        e,
        "t.yaml:19:69: unknown variant `macvlan`, expected one of bridge, ipvlan"
    );
}

#[test]
fn sysctl_value_of_wrong_type() {
    let (e, _) = one(
        "    pod_cidr: 172.23.96.0/26\n",
        "    pod_cidr: 172.23.96.0/26\n    sysctls: { net.ipv4.ip_forward: [1] }\n",
    );
    assert_eq!(
        e,
        "t.yaml:14:16: invalid type: sequence, expected a string or a number"
    );
}

// ---- bad text ----------------------------------------------------------

#[test]
fn bad_ipv4() {
    let (e, help) = one("10.0.0.10 }", "10.0.0.300 }");
    assert_eq!(e, "t.yaml:12:47: invalid address `10.0.0.300`");
    assert_eq!(help, "write an ipv4 address like 10.0.0.180");
    let (e, _) = one("10.0.0.10 }", "10.0.0.10/24 }");
    assert_eq!(
        e,
        "t.yaml:12:47: address `10.0.0.10/24` must be a plain ipv4 address, not a cidr"
    );
}

#[test]
fn bad_cidr() {
    let (e, _) = one("cidr: 10.0.0.0/24", "cidr: 10.0.0.0/33");
    assert_eq!(e, "t.yaml:5:28: invalid subnet cidr `10.0.0.0/33`");
    let (e, help) = one("cidr: 10.0.0.0/24", "cidr: 10.0.0.0");
    assert_eq!(e, "t.yaml:5:28: invalid subnet cidr `10.0.0.0`");
    assert_eq!(help, "add a prefix length, e.g. `10.0.0.0/24`");
    let (e, help) = one("cidr: 10.0.0.0/24", "cidr: 10.0.0.5/24");
    assert_eq!(
        e,
        "t.yaml:5:28: subnet cidr `10.0.0.5/24` has host bits set"
    );
    assert_eq!(help, "did you mean `10.0.0.0/24`?");
}

#[test]
fn bad_mac() {
    let (e, _) = one(
        "address: 10.0.0.10 }",
        "address: 10.0.0.10, mac: \"02:00:00:00:00:zz\" }",
    );
    assert_eq!(e, "t.yaml:12:63: invalid mac address `02:00:00:00:00:zz`");
    let (e, _) = one(
        "address: 10.0.0.10 }",
        "address: 10.0.0.10, mac: \"01:00:00:00:00:01\" }",
    );
    assert_eq!(
        e,
        "t.yaml:12:63: mac address `01:00:00:00:00:01` is not a unicast address"
    );
}

#[test]
fn bad_sysctl_name() {
    let (e, _) = one(
        "    pod_cidr: 172.23.96.0/26\n",
        "    pod_cidr: 172.23.96.0/26\n    sysctls: { \"../x\": 1 }\n",
    );
    assert_eq!(e, "t.yaml:14:17: invalid sysctl name `../x`");
}

/// The single problem of BASE with node-1's sysctls set to `map`.
fn sysctl_problem(map: &str) -> (String, String) {
    one(
        "    pod_cidr: 172.23.96.0/26\n",
        &format!("    pod_cidr: 172.23.96.0/26\n    sysctls: {map}\n"),
    )
}

#[test]
fn host_sysctls_are_refused() {
    let (e, help) = sysctl_problem("{ fs.lease-break-time: 1 }");
    assert_eq!(
        e,
        "t.yaml:14:16: sysctl `fs.lease-break-time` is not a network sysctl: setting it would \
         change the host"
    );
    assert!(help.contains("per network namespace"), "{help}");
    let (e, _) = sysctl_problem("\n      kernel.core_pattern: \"|/tmp/x\"");
    assert_eq!(
        e,
        "t.yaml:15:7: sysctl `kernel.core_pattern` is not a network sysctl: setting it would \
         change the host"
    );
    // The same with '/' separators.
    let (e, _) = sysctl_problem("{ kernel/core_pattern: x }");
    assert!(
        e.contains("`kernel/core_pattern` is not a network sysctl"),
        "{e}"
    );
}

#[test]
fn global_net_sysctls_are_refused() {
    for key in [
        "net.core.rmem_max",
        "net.core.bpf_jit_enable",
        "net.ipv4.tcp_mem",
        "net.ipv4.udp_mem",
        "net.ipv4.inet_peer_threshold",
        "net.ipv4.route.gc_thresh",
        "net.ipv4.neigh.default.gc_thresh3",
        "net.ipv6.mld_max_msf",
        "net.netfilter.nf_conntrack_max",
        "net.nf_conntrack_max",
    ] {
        let (e, _) = sysctl_problem(&format!("{{ {key}: 1 }}"));
        assert_eq!(
            e,
            format!(
                "t.yaml:14:16: sysctl `{key}` is global, not kept per network namespace: \
                 setting it would change the host"
            )
        );
    }
}

#[test]
fn unknown_net_sysctls_are_refused() {
    let (e, _) = sysctl_problem("{ net.bridge.bridge_nf_call_iptables: 1 }");
    assert_eq!(
        e,
        "t.yaml:14:16: sysctl `net.bridge.bridge_nf_call_iptables` is not one the kernel keeps \
         per network namespace"
    );
}

#[test]
fn per_netns_sysctls_are_kept() {
    let map = "{ net.ipv4.conf.all.rp_filter: 2, net.ipv4.tcp_rmem: \"4096 131072 6291456\", \
               net.ipv6.conf.all.disable_ipv6: 1, net.ipv4.route.min_pmtu: 552, \
               net.ipv4.neigh.eth0.gc_stale_time: 30, net.netfilter.nf_conntrack_tcp_loose: 0, \
               net.bridge.bridge-nf-call-iptables: 1, net.core.somaxconn: 4096, \
               net.unix.max_dgram_qlen: 512, net.ipv4.vs.conntrack: 1, net.mpls.platform_labels: 16 }";
    let source = BASE.replacen(
        "    pod_cidr: 172.23.96.0/26\n",
        &format!("    pod_cidr: 172.23.96.0/26\n    sysctls: {map}\n"),
        1,
    );
    let lab = load_base(&source).unwrap_or_else(|e| panic!("{e}"));
    let node = lab.node("node-1").unwrap();
    assert_eq!(node.sysctls.len(), 12);
    assert_eq!(node.sysctls["net.ipv4.tcp_rmem"], "4096 131072 6291456");
}

#[test]
fn sysctl_values_are_one_line() {
    let (e, help) = sysctl_problem("{ net.ipv4.ip_forward: \"1\\nkernel.core_pattern=|/x\" }");
    assert_eq!(
        e,
        "t.yaml:14:37: the value of sysctl `net.ipv4.ip_forward` contains a line break"
    );
    assert!(
        help.starts_with("a sysctl value is one line of text"),
        "{help}"
    );
    let (e, _) = sysctl_problem("{ net.ipv4.ip_forward: \"1\\u0000\" }");
    assert_eq!(
        e,
        "t.yaml:14:37: the value of sysctl `net.ipv4.ip_forward` contains the control \
         character '\\0'"
    );
    // A block scalar keeps its line break.
    let (e, _) = sysctl_problem("\n      net.ipv4.ip_forward: |\n        1\n");
    assert!(e.ends_with("contains a line break"), "{e}");
}

// ---- references ----------------------------------------------------------

#[test]
fn unknown_pod_node() {
    let (e, help) = one("node: node-1,", "node: node-11,");
    assert_eq!(e, "t.yaml:19:26: unknown node `node-11`");
    assert_eq!(help, "did you mean `node-1`? known nodes: node-1, node-2");
}

#[test]
fn unknown_next_hop() {
    let (e, help) = one("next_hop: node-1", "next_hop: nod-1");
    assert_eq!(e, "t.yaml:8:48: unknown node `nod-1`");
    assert!(help.starts_with("did you mean `node-1`?"), "{help}");
}

#[test]
fn unknown_subnet() {
    let (e, help) = one("subnet: vsw-a", "subnet: vsw-c");
    assert_eq!(e, "t.yaml:12:31: unknown subnet `vsw-c`");
    assert_eq!(help, "did you mean `vsw-a`? known subnets: vsw-a, vsw-b");
}

// ---- addresses and networks ------------------------------------------

#[test]
fn address_outside_subnet() {
    let (e, help) = one("10.0.0.10 }", "10.0.2.5 }");
    assert_eq!(
        e,
        "t.yaml:12:47: address 10.0.2.5 is outside subnet vsw-a (10.0.0.0/24)"
    );
    assert_eq!(
        help,
        "subnet vsw-a is 10.0.0.0/24: use an address from 10.0.0.1 to 10.0.0.254"
    );
}

#[test]
fn network_and_broadcast_addresses() {
    let (e, _) = one("10.0.0.10 }", "10.0.0.255 }");
    assert_eq!(
        e,
        "t.yaml:12:47: address 10.0.0.255 is the broadcast address of 10.0.0.0/24"
    );
    let (e, _) = one("198.51.100.10/24 }", "198.51.100.0/24 }");
    assert_eq!(
        e,
        "t.yaml:22:30: address 198.51.100.0 is the network address of 198.51.100.0/24"
    );
}

#[test]
fn pod_address_outside_pod_cidr() {
    let (e, help) = one("address: 172.23.96.10", "address: 172.23.97.10");
    assert_eq!(
        e,
        "t.yaml:19:43: address 172.23.97.10 is outside the pod cidr of node-1 (172.23.96.0/26)"
    );
    assert_eq!(
        help,
        "the pod cidr of node-1 is 172.23.96.0/26: use an address from 172.23.96.2 to 172.23.96.62"
    );
}

#[test]
fn gateway_outside_subnet() {
    let (e, _) = one("gateway: 10.0.0.253", "gateway: 10.0.2.253");
    assert_eq!(
        e,
        "t.yaml:5:50: gateway 10.0.2.253 is outside subnet vsw-a (10.0.0.0/24)"
    );
}

#[test]
fn client_gateway() {
    let (e, _) = one(
        "198.51.100.10/24 }",
        "198.51.100.10/24, gateway: 198.51.101.1 }",
    );
    assert_eq!(
        e,
        "t.yaml:22:57: gateway 198.51.101.1 is outside the network of client client \
         (198.51.100.0/24)"
    );
    let (e, _) = one("198.51.100.10/24 }", "198.51.100.1/24 }");
    assert_eq!(
        e,
        "t.yaml:22:30: address 198.51.100.1 is the default gateway of 198.51.100.0/24"
    );
    let lab = load_base(&BASE.replacen(
        "198.51.100.10/24 }",
        "198.51.100.1/24, gateway: 198.51.100.254 }",
        1,
    ))
    .unwrap();
    assert_eq!(lab.clients[0].gateway.to_string(), "198.51.100.254");
}

#[test]
fn subnet_outside_vpc() {
    let errors = with("cidr: 10.0.1.0/24", "cidr: 192.168.1.0/24");
    assert_eq!(
        errors[0],
        "t.yaml:6:28: subnet vsw-b (192.168.1.0/24) is outside the vpc cidr 10.0.0.0/8"
    );
}

#[test]
fn pods_without_pod_cidr() {
    let (e, help) = one("    pod_cidr: 172.23.96.0/26\n", "");
    assert_eq!(e, "t.yaml:10:11: node node-1 has pods but no pod_cidr");
    assert_eq!(
        help,
        "add `pod_cidr: <cidr>` to node node-1; its pods: pod-a"
    );
}

#[test]
fn pod_route_gateway_off_network() {
    let (e, _) = one(
        "address: 172.23.96.10 }",
        "address: 172.23.96.10, routes: [{ destination: default, via: 172.23.96.1 }, \
         { destination: 10.0.0.0/8, via: 10.0.0.1 }] }",
    );
    assert_eq!(
        e,
        "t.yaml:19:142: route gateway 10.0.0.1 is not on the network of pod pod-a \
         (172.23.96.0/26)"
    );
}

#[test]
fn overlapping_subnets() {
    let (e, _) = one("cidr: 10.0.1.0/24", "cidr: 10.0.0.0/23");
    assert_eq!(
        e,
        "t.yaml:6:28: subnet vsw-b (10.0.0.0/23) overlaps subnet vsw-a (10.0.0.0/24) at line 5"
    );
}

#[test]
fn overlapping_pod_cidrs() {
    let (e, _) = one("pod_cidr: 172.23.96.64/26", "pod_cidr: 172.23.96.0/25");
    assert_eq!(
        e,
        "t.yaml:17:15: pod cidr of node-2 (172.23.96.0/25) overlaps pod cidr of node-1 \
         (172.23.96.0/26) at line 13"
    );
}

#[test]
fn pod_cidr_overlapping_subnet() {
    let errors = with("pod_cidr: 172.23.96.64/26", "pod_cidr: 10.0.1.128/26");
    assert_eq!(
        errors[0],
        "t.yaml:17:15: pod cidr of node-2 (10.0.1.128/26) overlaps subnet vsw-b (10.0.1.0/24) \
         at line 6"
    );
}

#[test]
fn client_network_overlapping_subnet() {
    let (e, _) = one("198.51.100.10/24", "10.0.1.10/16");
    assert_eq!(
        e,
        "t.yaml:22:30: the network of client client (10.0.0.0/16) overlaps subnet vsw-a \
         (10.0.0.0/24) at line 5"
    );
}

#[test]
fn duplicate_route() {
    let (e, _) = one(
        "next_hop: node-1 }",
        "next_hop: node-1 }\n    - { destination: 172.23.96.0/26, next_hop: node-2 }",
    );
    assert_eq!(
        e,
        "t.yaml:9:22: duplicate route to 172.23.96.0/26, first at line 8"
    );
}

// ---- duplicates ----------------------------------------------------------

#[test]
fn duplicate_entity_name() {
    let (e, _) = one("name: pod-b", "name: node-1");
    assert_eq!(
        e,
        "t.yaml:20:13: name `node-1` is already used by node node-1 at line 10"
    );
}

#[test]
fn reserved_name_vpc() {
    let (e, _) = one("name: pod-b", "name: vpc");
    assert_eq!(
        e,
        "t.yaml:20:13: name `vpc` is reserved for the vpc namespace"
    );
}

#[test]
fn duplicate_subnet_name() {
    let errors = with("name: vsw-b", "name: vsw-a");
    assert_eq!(
        errors[0],
        "t.yaml:6:15: duplicate subnet name `vsw-a`, first at line 5"
    );
}

#[test]
fn duplicate_interface_name() {
    let (e, _) = one(
        "{ name: eth0, subnet: vsw-a, address: 10.0.0.10 }",
        "{ name: eth0, subnet: vsw-a, address: 10.0.0.10 }\n      \
         - { name: eth0, subnet: vsw-a, address: 10.0.0.11 }",
    );
    assert_eq!(
        e,
        "t.yaml:13:17: node node-1 has two interfaces named `eth0`, first at line 12"
    );
}

#[test]
fn duplicate_addresses() {
    let (e, _) = one("address: 10.0.1.10", "address: 10.0.1.253");
    assert_eq!(
        e,
        "t.yaml:16:47: address 10.0.1.253 is already used by subnet vsw-b gateway at line 6"
    );
    let (e, _) = one("address: 172.23.96.70", "address: 172.23.96.65");
    assert_eq!(
        e,
        "t.yaml:20:43: address 172.23.96.65 is already used by the pod gateway of node-2 (cni0) \
         at line 17"
    );
    let (e, _) = one(
        "  - { name: pod-a, node: node-1, address: 172.23.96.10 }",
        "  - { name: pod-a, node: node-1, address: 172.23.96.10 }\n  \
         - { name: pod-c, node: node-1, address: 172.23.96.10 }",
    );
    assert_eq!(
        e,
        "t.yaml:20:43: address 172.23.96.10 is already used by pod pod-a at line 19"
    );
}

#[test]
fn duplicate_mac() {
    let source = BASE
        .replacen(
            "address: 10.0.0.10 }",
            "address: 10.0.0.10, mac: \"02:00:00:00:00:01\" }",
            1,
        )
        .replacen(
            "address: 10.0.1.10 }",
            "address: 10.0.1.10, mac: \"02:00:00:00:00:01\" }",
            1,
        );
    let e = load_base(&source).unwrap_err();
    assert_eq!(
        e.to_string(),
        "t.yaml:16:63: mac address 02:00:00:00:00:01 is already used by node-1 eth0 at line 12"
    );
}

#[test]
fn vpc_interface_clash() {
    let (e, _) = one("name: client", "name: vsw-a");
    assert_eq!(
        e,
        "t.yaml:22:13: client vsw-a needs interface `vsw-a` in the vpc namespace, already used \
         by subnet vsw-a at line 5"
    );
}

// ---- names ---------------------------------------------------------------

#[test]
fn interface_names() {
    let errors = with("name: vsw-a", "name: vsw-a-very-long-name");
    assert_eq!(
        errors[0],
        "t.yaml:5:15: subnet name `vsw-a-very-long-name` is 20 bytes long, the kernel allows 15"
    );
    let (e, _) = one(
        "name: eth0, subnet: vsw-a",
        "name: \"eth 0\", subnet: vsw-a",
    );
    assert_eq!(
        e,
        "t.yaml:12:17: interface name `eth 0` contains ' ', which interface names cannot contain"
    );
    // The kernel takes a '"', but nftables rules quote names with it.
    let (e, _) = one("name: eth0, subnet: vsw-a", "name: 'eth\"0', subnet: vsw-a");
    assert_eq!(
        e,
        "t.yaml:12:17: interface name `eth\"0` contains '\"', which interface names cannot contain"
    );
    let (e, _) = one("name: eth0, subnet: vsw-a", "name: eth0/1, subnet: vsw-a");
    assert_eq!(
        e,
        "t.yaml:12:17: interface name `eth0/1` contains '/', which interface names cannot contain"
    );
    let (e, _) = one(
        "    pod_cidr: 172.23.96.0/26\n",
        "    pod_cidr: 172.23.96.0/26\n    bridge: br-with-a-long-name\n",
    );
    assert_eq!(
        e,
        "t.yaml:14:13: bridge name `br-with-a-long-name` is 19 bytes long, the kernel allows 15"
    );
    let (e, _) = one(
        "    pod_cidr: 172.23.96.0/26\n",
        "    pod_cidr: 172.23.96.0/26\n    bridge: eth0\n",
    );
    assert_eq!(
        e,
        "t.yaml:14:13: bridge name `eth0` clashes with the interface of node node-1 at line 12"
    );
}

#[test]
fn interface_names_are_counted_in_bytes_and_ascii() {
    // 8 characters, 16 bytes: the kernel says ERANGE.
    let (e, _) = one("name: eth0, subnet: vsw-a", "name: éééééééé, subnet: vsw-a");
    assert_eq!(
        e,
        "t.yaml:12:17: interface name `éééééééé` is 16 bytes long, the kernel allows 15"
    );
    let errors = with("name: vsw-a,", "name: vsw-à,");
    assert_eq!(
        errors[0],
        "t.yaml:5:15: subnet name `vsw-à` contains 'à', which interface names cannot contain"
    );
    let (e, _) = one(
        "    pod_cidr: 172.23.96.0/26\n",
        "    pod_cidr: 172.23.96.0/26\n    bridge: \"br\\t0\"\n",
    );
    assert_eq!(
        e,
        "t.yaml:14:13: bridge name `br\t0` contains '\\t', which interface names cannot contain"
    );
    let (e, _) = one(
        "    pod_cidr: 172.23.96.0/26\n",
        "    pod_cidr: 172.23.96.0/26\n    bridge: \"br\\u00000\"\n",
    );
    assert!(e.contains("contains '\\0'"), "{e}");
    let (e, _) = one("name: eth0, subnet: vsw-a", "name: \"..\", subnet: vsw-a");
    assert_eq!(
        e,
        "t.yaml:12:17: interface name `..` is not a valid interface name"
    );
    // Names derived from entity names stay valid interface names.
    let lab = load_base(&BASE.replacen("name: client", "name: ..", 1)).unwrap();
    assert_eq!(lab.clients[0].vpc_port, hashed_ifname("p", ".."));
}

#[test]
fn entity_names() {
    let (e, _) = one("name: pod-a", "name: Pod_A");
    assert_eq!(
        e,
        "t.yaml:19:13: pod name `Pod_A` contains 'P'; only a-z, 0-9, '-' and '.' are allowed"
    );
    let long = "p".repeat(64);
    let (e, _) = one("name: pod-a", &format!("name: {long}"));
    assert_eq!(
        e,
        format!("t.yaml:19:13: pod name `{long}` is 64 characters long, the limit is 63")
    );
}

#[test]
fn lab_names() {
    let (e, _) = one("name: lab", "name: Lab");
    assert_eq!(
        e,
        "t.yaml:1:7: lab name `Lab` must start with a lowercase letter"
    );
    let (e, _) = one("name: lab", "name: 1lab");
    assert_eq!(
        e,
        "t.yaml:1:7: lab name `1lab` must start with a lowercase letter"
    );
    let (e, _) = one("name: lab", "name: lab_1");
    assert_eq!(
        e,
        "t.yaml:1:7: lab name `lab_1` contains '_'; only a-z, 0-9 and '-' are allowed"
    );
    let (e, _) = one("name: lab", "name: lab-with-a-very-long-name");
    assert_eq!(
        e,
        "t.yaml:1:7: lab name `lab-with-a-very-long-name` is 25 characters long, the limit is 20"
    );
}

// ---- defaults ------------------------------------------------------------

#[test]
fn generated_names_and_defaults() {
    let source = BASE
        .replacen("name: node-2", "name: node-2.example", 1)
        .replacen("node: node-2,", "node: node-2.example,", 1)
        .replacen("name: client", "name: client-with-a-long-name", 1)
        .replacen(
            "    pod_cidr: 172.23.96.0/26\n",
            "    pod_cidr: 172.23.96.0/26\n    bridge: cbr0\n    \
             sysctls: { net.ipv4.ip_forward: 0, net.ipv4.conf.all.rp_filter: \"2\" }\n",
            1,
        );
    let lab = load_base(&source).unwrap_or_else(|e| panic!("{e}"));
    let node1 = lab.node("node-1").unwrap();
    assert_eq!(node1.bridge, "cbr0");
    assert_eq!(node1.sysctls["net.ipv4.ip_forward"], "0");
    assert_eq!(node1.sysctls["net.ipv4.conf.all.rp_filter"], "2");
    let node2 = lab.node("node-2.example").unwrap();
    assert_eq!(
        node2.interfaces[0].vpc_port,
        hashed_ifname("p", "node-2.example/eth0")
    );
    assert_eq!(node2.interfaces[0].vpc_port.len(), 9);
    assert_eq!(
        lab.clients[0].vpc_port,
        hashed_ifname("p", "client-with-a-long-name")
    );
    assert_eq!(
        lab.pods[0].attachment,
        Attachment::Bridge {
            host_ifname: hashed_ifname("veth", "pod-a")
        }
    );
}

#[test]
fn pod_routes() {
    let lab = load_base(&BASE.replacen(
        "address: 172.23.96.10 }",
        "address: 172.23.96.10, routes: [{ destination: 10.0.0.0/8, via: 172.23.96.1 }] }",
        1,
    ))
    .unwrap();
    assert_eq!(lab.pods[0].routes.len(), 1);
    assert_eq!(lab.pods[0].routes[0].destination.to_string(), "10.0.0.0/8");
}

// ---- several errors --------------------------------------------------------

#[test]
fn all_errors_are_collected_in_order() {
    let source = BASE
        .replacen("10.0.0.10 }", "10.0.2.5 }", 1)
        .replacen("name: pod-b", "name: node-1", 1)
        .replacen("node: node-1,", "node: node-11,", 1)
        .replacen("name: lab", "name: Lab", 1);
    let e = load_base(&source).unwrap_err();
    let lines: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(
        lines,
        [
            "t.yaml:1:7: lab name `Lab` must start with a lowercase letter",
            "t.yaml:12:47: address 10.0.2.5 is outside subnet vsw-a (10.0.0.0/24)",
            "t.yaml:19:26: unknown node `node-11`",
            "t.yaml:20:13: name `node-1` is already used by node node-1 at line 10",
        ]
    );
    assert_eq!(
        e.to_string(),
        "t.yaml:1:7: lab name `Lab` must start with a lowercase letter (and 3 more errors)"
    );
    // The fancy report shows every problem with its source.
    let mut out = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .render_report(&mut out, &e)
        .unwrap();
    assert!(out.contains("did you mean `node-1`?"), "{out}");
    assert!(out.contains("first here"), "{out}");
}

#[test]
fn errors_never_panic_on_odd_input() {
    for source in [
        "",
        "~",
        "[]",
        "name: x",
        "name: x\nvpc: {subnets: []}\nnodes: []\n",
        "name: x\nvpc: {subnets: []}\nnodes: [{name: n, interfaces: []}]\npods: [{name: p, node: n, address: 1.2.3.4}]\n",
        "name: x\nvpc: {subnets: [{name: s, cidr: 1.0.0.0/32, gateway: 1.0.0.0}]}\nnodes: [{name: n, interfaces: [{name: e, subnet: s, address: 1.0.0.0}], pod_cidr: 2.0.0.0/31}]\n",
        "name: é\u{301}\nvpc: {subnets: []}\nnodes: []\nclients: [{name: c, address: 0.0.0.0/0}]\n",
        "\t\u{0}",
    ] {
        let _ = load_str("odd.yaml", source, &vars()).map_err(|e| e.to_string());
    }
}

// ---- files and templates -------------------------------------------------

#[test]
fn missing_file_names_the_file() {
    let e = load(Path::new("/nonexistent/lab.yaml"), &vars()).unwrap_err();
    let message = e.to_string();
    assert!(
        message.starts_with("/nonexistent/lab.yaml: cannot read topology file: "),
        "{message}"
    );
    assert!(e.problems().is_empty());
}

#[test]
fn undefined_template_variable() {
    let e = load_str("t.yaml", "name: {{ n }}\n", &vars()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "t.yaml:1:10: undefined value in template: `n` is undefined"
    );
    assert!(matches!(e, TopologyError::Template(_)));
}

#[test]
fn template_syntax_error() {
    let e = load_str("t.yaml", "name: x\n{% for %}\n", &vars()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "t.yaml:2:8: syntax error in template: unexpected end of block, expected in"
    );
}

#[test]
fn templated_locations_refer_to_rendered_text() {
    let source = "{% for i in range(2) %}\nname: x{{ i }}\n{% endfor %}\n";
    let e = load_str("t.yaml", source, &vars()).unwrap_err();
    assert_eq!(e.to_string(), "t.yaml:4:1: duplicate mapping key: name");
    let help = e.problems()[0].help.clone().unwrap();
    assert!(help.contains("see `labctl render t.yaml`"), "{help}");
    // Untemplated files get no such note.
    let (_, help) = one("10.0.0.10 }", "10.0.2.5 }");
    assert!(!help.contains("labctl render"));
}

#[test]
fn integer_vars_are_integers() {
    let source = BASE.replacen(
        "pods:\n",
        "pods:\n{% for i in range(n) %}\n  - { name: x-{{ i }}{{ suffix }}, node: node-1, address: 172.23.96.{{ i + 30 }} }\n{% endfor %}\n",
        1,
    );
    let vars = BTreeMap::from([
        ("n".to_string(), "3".to_string()),
        ("suffix".to_string(), "07".to_string()),
    ]);
    let lab = load_str("t.yaml", &source, &vars).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = lab.pods.iter().take(3).map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["x-007", "x-107", "x-207"]);
}

const SCALE: &str = "\
name: scale
vpc:
  cidr: 10.0.0.0/16
  subnets:
    - { name: vsw, cidr: 10.0.0.0/24, gateway: 10.0.0.254 }
  routes:
{% for n in range(nodes) %}
    - { destination: 10.{{ 100 + n }}.0.0/24, next_hop: node-{{ n }} }
{% endfor %}
nodes:
{% for n in range(nodes) %}
  - name: node-{{ n }}
    interfaces:
      - { name: eth0, subnet: vsw, address: 10.0.0.{{ n + 10 }} }
    pod_cidr: 10.{{ 100 + n }}.0.0/24
{% endfor %}
pods:
{% for n in range(nodes) %}{% for p in range(pods) %}
  - { name: pod-{{ n }}-{{ p }}, node: node-{{ n }}, address: 10.{{ 100 + n }}.0.{{ p + 2 }}, ports: [80] }
{% endfor %}{% endfor %}
";

#[test]
fn thousand_pods_from_a_loop() {
    let vars = BTreeMap::from([
        ("nodes".to_string(), "10".to_string()),
        ("pods".to_string(), "100".to_string()),
    ]);
    let start = Instant::now();
    let lab = load_str("scale.yaml", SCALE, &vars).unwrap_or_else(|e| panic!("{e}"));
    println!("10 nodes x 100 pods resolved in {:?}", start.elapsed());
    assert_eq!(lab.nodes.len(), 10);
    assert_eq!(lab.pods.len(), 1000);
    assert_eq!(lab.vpc.as_ref().unwrap().routes.len(), 10);
    assert_eq!(lab.pods[999].name, "pod-9-99");
    assert_eq!(lab.pods[999].address.to_string(), "10.109.0.101/24");
    let mut veths: Vec<&str> = lab
        .pods
        .iter()
        .map(|p| match &p.attachment {
            Attachment::Bridge { host_ifname } => host_ifname.as_str(),
            Attachment::Ipvlan { .. } => panic!("generated pods are bridge pods"),
        })
        .collect();
    veths.sort_unstable();
    veths.dedup();
    assert_eq!(veths.len(), 1000, "host veth names collide");
}

// ---- template limits -------------------------------------------------------

/// Loops that would run for hours.
const ENDLESS: &str =
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\n";
/// 100 GB of output from 1 MB written 100,000 times.
const HUGE: &str = "{% set s = 'x' * 1000000 %}{% for i in range(100000) %}{{ s }}{% endfor %}\n";

/// The error of a template that must fail within `seconds` (the suite's
/// release build; an unoptimised build is given five times as long).
fn runaway(source: &str, seconds: u64) -> (String, String) {
    let seconds = if cfg!(debug_assertions) {
        5 * seconds
    } else {
        seconds
    };
    let start = Instant::now();
    let e = load_str("t.yaml", source, &vars()).unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        elapsed < std::time::Duration::from_secs(seconds),
        "took {elapsed:?}: {e}"
    );
    assert!(matches!(e, TopologyError::Template(_)), "{e}");
    let help = e.problems()[0].help.clone().unwrap_or_default();
    (e.to_string(), help)
}

#[test]
fn endless_loops_run_out_of_fuel() {
    let (e, help) = runaway(ENDLESS, 20);
    assert_eq!(
        e,
        "t.yaml:1:41: template ran out of fuel after 16000000 steps: its loops run too long or \
         build too much text"
    );
    assert!(help.contains("at most 16000000 steps"), "{help}");
}

#[test]
fn huge_output_is_refused() {
    let (e, help) = runaway(HUGE, 10);
    assert_eq!(e, "t.yaml:1:59: rendered topology exceeds 64 MiB");
    assert!(help.contains("at most 64 MiB"), "{help}");
    // The text of the template itself, repeated: located at that text.
    let source = "name: x\n{% for i in range(1000) %}{% for j in range(1000) %}\n\
                  # padding padding padding padding padding padding padding padding padding\n\
                  {% endfor %}{% endfor %}\n";
    let (e, _) = runaway(source, 10);
    assert_eq!(e, "t.yaml:2:53: rendered topology exceeds 64 MiB");
    // One huge value, whatever it is.
    let (e, _) = runaway("{{ 'x' * 80000000 }}\n", 10);
    assert_eq!(e, "t.yaml:1:4: rendered topology exceeds 64 MiB");
    let (e, _) = runaway("{{ range(100000) | list }}{{ 'x' * 67100000 }}\n", 10);
    assert_eq!(e, "t.yaml:1:30: rendered topology exceeds 64 MiB");
}

#[test]
fn huge_values_run_out_of_fuel_before_they_exist() {
    // 100 MB, then 200, 400 and 800 MB: the fuel pays for about 1 GiB.
    let source = "{% set a = 'x' * 100000000 %}{% set b = a ~ a %}{% set c = b ~ b %}\
                  {% set d = c ~ c %}{% set e = d ~ d %}\n";
    let (e, _) = runaway(source, 20);
    assert!(e.contains("template ran out of fuel"), "{e}");
}

#[test]
fn render_reports_the_limits_like_load() {
    let dir = std::env::temp_dir().join(format!("labctl-topology-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("huge.yaml");
    std::fs::write(&path, HUGE).unwrap();
    let e = render(&path, &vars()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}:1:59: rendered topology exceeds 64 MiB", path.display())
    );
    // A file larger than a rendering may be is not even read whole.
    let big = dir.join("big.yaml");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(RENDERED_MAX as u64 + 1).unwrap();
    let e = load(&big, &vars()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: cannot read topology file: larger than 64 MiB",
            big.display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn scale_renders_a_hundred_thousand_pods_within_the_limits() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/scale.yaml");
    let vars = BTreeMap::from([("pods".to_string(), "10000".to_string())]);
    let rendered = render(&path, &vars).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rendered.matches("- { name: pod").count(), 100_000);
    assert!(rendered.len() < RENDERED_MAX / 8, "{}", rendered.len());
}

// ---- schema ----------------------------------------------------------------

#[test]
fn published_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/topology.schema.json");
    let expected = serde_json::to_string_pretty(&schema()).unwrap() + "\n";
    if std::env::var_os("LABCTL_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &expected).unwrap();
        return;
    }
    let published = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        published == expected,
        "{} is out of date; regenerate it with \
         `cargo run -p labctl -- schema > schema/topology.schema.json` \
         (or `LABCTL_BLESS=1 cargo test -p labctl-topology published_schema_is_current`)",
        path.display()
    );
}

#[test]
fn schema_describes_the_language() {
    let schema = schema();
    assert_eq!(schema["title"], "labctl topology");
    assert_eq!(schema["additionalProperties"], false);
    let required = schema["required"].as_array().unwrap();
    // Only the name: a lab may be low-level objects alone.
    assert_eq!(required.len(), 1);
    assert!(schema["$defs"]["Vxlan"]["properties"]["underlay"].is_object());
    assert!(schema["$defs"]["Pod"]["properties"]["ports"].is_object());
    assert_eq!(schema["$defs"]["Node"]["additionalProperties"], false);
}

#[test]
fn every_shipped_topology_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let start = Instant::now();
            let lab = load(&path, &vars()).unwrap_or_else(|e| panic!("{e}"));
            println!(
                "{}: {} nodes, {} pods in {:?}",
                path.display(),
                lab.nodes.len(),
                lab.pods.len(),
                start.elapsed()
            );
            count += 1;
        }
    }
    assert!(count >= 1);
}

// ---- scenarios -------------------------------------------------------

/// BASE with one scenario appended (`- name: s1` is line 24).
fn scenario(body: &str) -> String {
    format!("{BASE}scenarios:\n  - name: s1\n{body}")
}

#[test]
fn scenario_resolves_hops_and_aliases() {
    let src = scenario(
        "    from: pod-a\n    to: 172.23.96.70:80\n    protocol: http\n    expect:\n      \
         path: [pod-a/eth0, pod-a/host, node-1/cni0, node-1/eth0, vpc, node-2/eth0]\n      \
         server_saw_client: 172.23.96.10\n",
    );
    let lab = load_base(&src).unwrap_or_else(|e| panic!("{e}"));
    let sc = &lab.scenarios[0];
    assert_eq!(sc.port, Some(80));
    assert_eq!(sc.traffic, Traffic::Http);
    assert_eq!(sc.expect.result, ResultKind::Connected);
    let path = sc.expect.path.as_ref().unwrap();
    assert_eq!(
        path[1],
        format!("node-1/{}", hashed_ifname("veth", "pod-a"))
    );
    assert_eq!(path[4], "vpc");
}

fn scenario_problem(body: &str) -> String {
    let e = load_base(&scenario(body)).expect_err("should fail");
    let p = e.problems();
    assert_eq!(p.len(), 1, "{p:#?}");
    p[0].to_string()
}

#[test]
fn scenario_unknown_sender() {
    assert_eq!(
        scenario_problem("    from: pod-z\n    to: 172.23.96.70\n    protocol: icmp\n"),
        "t.yaml:25:11: unknown namespace, node, pod or client `pod-z`"
    );
}

#[test]
fn scenario_unknown_interface() {
    assert_eq!(
        scenario_problem(
            "    from: pod-a\n    to: 172.23.96.70\n    protocol: icmp\n    expect:\n      \
             path: [pod-a/eth9]\n"
        ),
        "t.yaml:29:14: `pod-a` has no interface `eth9`; it has: eth0"
    );
}

#[test]
fn scenario_needs_a_port_for_tcp() {
    assert_eq!(
        scenario_problem("    from: pod-a\n    to: 172.23.96.70\n    protocol: tcp\n"),
        "t.yaml:26:9: target `172.23.96.70` needs a port for tcp traffic"
    );
}

#[test]
fn scenario_icmp_has_no_port() {
    assert_eq!(
        scenario_problem("    from: pod-a\n    to: 172.23.96.70:80\n    protocol: icmp\n"),
        "t.yaml:26:9: icmp has no ports: `172.23.96.70:80`"
    );
}

#[test]
fn scenario_bad_protocol_lists_valid_ones() {
    let e = load_base(&scenario(
        "    from: pod-a\n    to: 172.23.96.70\n    protocol: sctp\n",
    ))
    .expect_err("should fail");
    let msg = e.to_string();
    assert!(
        msg.starts_with("t.yaml:27:15: unknown variant `sctp`"),
        "{msg}"
    );
    assert!(msg.contains("icmp, tcp, http, udp"), "{msg}");
}

#[test]
fn scenario_source_is_an_address_the_sender_holds() {
    let source = |from: &str, address: &str| {
        let src = format!(
            "{}addresses:\n  - {{in: node-1, dev: lo, address: 10.9.9.9/32}}\n",
            scenario(&format!(
                "    from: {from}\n    to: 172.23.96.70:80\n    protocol: tcp\n    \
                 source: {address}\n"
            ))
        );
        load_base(&src).map(|lab| lab.scenarios[0].source)
    };
    // The node's ENI, its pod bridge (the pod network's gateway), any of
    // 127.0.0.0/8 and an address the low-level layer puts on its lo.
    for address in [
        "10.0.0.10",
        "172.23.96.1",
        "127.0.0.1",
        "127.1.2.3",
        "10.9.9.9",
    ] {
        let got = source("node-1", address).unwrap_or_else(|e| panic!("{address}: {e}"));
        assert_eq!(got, Some(address.parse().unwrap()));
    }
    assert_eq!(
        source("pod-a", "172.23.96.10").unwrap(),
        Some("172.23.96.10".parse().unwrap())
    );
    // Absent: the kernel's choice.
    let lab = load_base(&scenario(
        "    from: node-1\n    to: 172.23.96.70:80\n    protocol: tcp\n",
    ))
    .unwrap();
    assert_eq!(lab.scenarios[0].source, None);
}

#[test]
fn scenario_source_not_held_is_located_with_the_senders_addresses() {
    let problem = |from: &str, address: &str| {
        let e = load_base(&scenario(&format!(
            "    from: {from}\n    to: 172.23.96.70\n    protocol: icmp\n    source: {address}\n"
        )))
        .expect_err("should fail");
        let p = e.problems();
        assert_eq!(p.len(), 1, "{p:#?}");
        (p[0].to_string(), p[0].help.clone().unwrap_or_default())
    };
    // Another node's address, in the node's own subnet.
    let (msg, help) = problem("node-1", "10.0.0.11");
    assert_eq!(
        msg,
        "t.yaml:28:13: source 10.0.0.11 is not an address of `node-1`"
    );
    assert!(
        help.ends_with("`node-1` has: lo 127.0.0.1/8, eth0 10.0.0.10/24, cni0 172.23.96.1/26"),
        "{help}"
    );
    // The node's address is not its pod's.
    let (msg, help) = problem("pod-a", "10.0.0.10");
    assert_eq!(
        msg,
        "t.yaml:28:13: source 10.0.0.10 is not an address of `pod-a`"
    );
    assert!(
        help.ends_with("`pod-a` has: lo 127.0.0.1/8, eth0 172.23.96.10/26"),
        "{help}"
    );
    // Not an address at all, or a network.
    let (msg, _) = problem("node-1", "10.0.0.10/24");
    assert_eq!(
        msg,
        "t.yaml:28:13: source `10.0.0.10/24` must be a plain ipv4 address, not a cidr"
    );
    let (msg, _) = problem("node-1", "eth0");
    assert_eq!(msg, "t.yaml:28:13: invalid source `eth0`");
    // An unknown sender is the one problem: its source is not judged.
    let (msg, _) = problem("pod-z", "10.0.0.10");
    assert_eq!(
        msg,
        "t.yaml:25:11: unknown namespace, node, pod or client `pod-z`"
    );
}

#[test]
fn scenario_duplicate_names() {
    let src = format!(
        "{}  - name: s1\n    from: pod-a\n    to: 172.23.96.70\n    protocol: icmp\n",
        scenario("    from: pod-a\n    to: 172.23.96.70\n    protocol: icmp\n")
    );
    let e = load_base(&src).expect_err("should fail");
    assert_eq!(
        e.to_string(),
        "t.yaml:28:11: duplicate scenario name `s1`, first at line 24"
    );
}

// ---- ipvlan pods and services ----------------------------------------

const IPVLAN: &str = "\
name: lab
vpc:
  subnets:
    - { name: vsw, cidr: 10.0.3.0/24, gateway: 10.0.3.253 }
nodes:
  - name: node-15
    interfaces:
      - { name: eth0, subnet: vsw, address: 10.0.3.15 }
      - { name: eth1, subnet: vsw }
pods:
  - { name: nginx, node: node-15, attachment: ipvlan, interface: eth1, address: 10.0.3.38 }
services:
  - { name: nginx, cluster_ip: 192.168.27.242, ports: [{ port: 80 }], endpoints: [nginx] }
";

#[test]
fn ipvlan_pod_takes_its_enis_subnet_and_gateway() {
    let lab = load_str("t.yaml", IPVLAN, &vars()).unwrap_or_else(|e| panic!("{e}"));
    let pod = &lab.pods[0];
    assert_eq!(
        pod.attachment,
        Attachment::Ipvlan {
            parent: "eth1".into(),
            host_slave: "ipvl_2".into()
        }
    );
    assert_eq!(pod.address.to_string(), "10.0.3.38/24");
    assert_eq!(pod.routes[0].via.to_string(), "10.0.3.253");
    // A secondary ENI that carries ipvlan pods needs no address (Terway's).
    assert_eq!(lab.nodes[0].interfaces[1].address, None);
    assert_eq!(lab.services[0].ports[0].target_port, 80);
    assert!(
        lab.interfaces_of("node-15")
            .unwrap()
            .contains(&KUBE_IPVS.to_string())
    );
}

#[test]
fn ipvlan_pod_needs_a_known_interface() {
    let src = IPVLAN.replace("interface: eth1", "interface: eth7");
    let e = load_str("t.yaml", &src, &vars()).expect_err("should fail");
    assert_eq!(
        e.to_string(),
        "t.yaml:11:66: node node-15 has no interface `eth7`"
    );
}

#[test]
fn ipvlan_pod_address_must_be_in_the_eni_subnet() {
    let src = IPVLAN.replace("address: 10.0.3.38", "address: 10.0.4.38");
    let e = load_str("t.yaml", &src, &vars()).expect_err("should fail");
    assert!(
        e.to_string()
            == "t.yaml:11:81: address 10.0.4.38 is outside the subnet of node-15's eth1 (10.0.3.0/24)",
        "{e}"
    );
}

#[test]
fn service_endpoints_must_be_pods() {
    let src = IPVLAN.replace("endpoints: [nginx]", "endpoints: [ngin]");
    let e = load_str("t.yaml", &src, &vars()).expect_err("should fail");
    assert_eq!(e.to_string(), "t.yaml:13:83: unknown pod `ngin`");
    assert!(
        e.problems()[0]
            .help
            .as_ref()
            .unwrap()
            .contains("did you mean `nginx`?")
    );
}

// ---- node ports, load balancers, selectors, scenario changes -----------

const SERVICES: &str = "\
name: lab
vpc:
  subnets:
    - { name: vsw, cidr: 10.0.0.0/24, gateway: 10.0.0.253 }
nodes:
  - { name: n1, interfaces: [{ name: eth0, subnet: vsw, address: 10.0.0.1 }], pod_cidr: 172.16.0.0/24 }
  - { name: n2, interfaces: [{ name: eth0, subnet: vsw, address: 10.0.0.2 }], pod_cidr: 172.16.1.0/24 }
pods:
  - { name: a, node: n1, address: 172.16.0.10, labels: { app: web } }
  - { name: b, node: n2, address: 172.16.1.10, labels: { app: web } }
  - { name: c, node: n2, address: 172.16.1.11, labels: { app: db } }
services:
  - name: web
    cluster_ip: 192.168.0.10
    load_balancer_ip: 8.8.8.10
    external_traffic_policy: Local
    selector: { app: web }
    ports: [{ port: 80, node_port: 30080 }]
scenarios:
  - name: s1
    from: a
    to: 8.8.8.10:80
    protocol: http
    changes:
      - { service: { name: web, external_traffic_policy: Cluster, remove_endpoints: [b] } }
    backend: a
    via_node: n1
    expect:
      conntrack:
        - { on: n1, original: '172.16.0.10 -> 8.8.8.10:80', reply: '172.16.0.10:80 -> 10.0.0.1' }
";

fn services_lab(src: &str) -> Result<Lab, TopologyError> {
    load_str("t.yaml", src, &vars())
}

#[test]
fn services_resolve_with_selector_node_ports_and_scenario_changes() {
    let lab = services_lab(SERVICES).unwrap_or_else(|e| panic!("{e}"));
    let svc = &lab.services[0];
    assert_eq!(svc.endpoints, ["a", "b"]);
    assert_eq!(svc.external_traffic_policy, TrafficPolicy::Local);
    assert_eq!(svc.ports[0].node_port, Some(30080));
    assert_eq!(svc.load_balancer_ip, Some("8.8.8.10".parse().unwrap()));
    assert_eq!(
        svc.addresses().map(|a| a.to_string()).collect::<Vec<_>>(),
        ["192.168.0.10", "8.8.8.10"]
    );
    let sc = &lab.scenarios[0];
    assert_eq!(sc.backend.as_deref(), Some("a"));
    assert_eq!(sc.via_node.as_deref(), Some("n1"));
    assert_eq!(sc.changes[0].remove_endpoints, ["b"]);
    assert_eq!(
        sc.changes[0].external_traffic_policy,
        Some(TrafficPolicy::Cluster)
    );
    let ct = &sc.expect.conntrack[0];
    assert_eq!(ct.original.to_string(), "172.16.0.10 -> 8.8.8.10:80");
    assert!(ct.original.matches(
        "172.16.0.10".parse().unwrap(),
        Some(40000),
        "8.8.8.10".parse().unwrap(),
        Some(80)
    ));
    assert!(!ct.original.matches(
        "172.16.0.10".parse().unwrap(),
        Some(40000),
        "8.8.8.10".parse().unwrap(),
        Some(81)
    ));
}

#[test]
fn selector_that_selects_nothing_is_an_error() {
    let src = SERVICES.replace("selector: { app: web }", "selector: { app: wbe }");
    let e = services_lab(&src).expect_err("should fail");
    assert!(
        e.to_string()
            .contains("service web: no pod has the labels {app: wbe}"),
        "{e}"
    );
}

#[test]
fn load_balancer_ports_all_or_none_with_node_ports() {
    let src = SERVICES.replace(
        "ports: [{ port: 80, node_port: 30080 }]",
        "ports: [{ port: 80, node_port: 30080 }, { port: 81 }]",
    );
    let e = services_lab(&src).expect_err("should fail");
    assert!(
        e.to_string()
            .contains("t.yaml:15:23: service web: some ports have a node_port and some do not"),
        "{e}"
    );
}

#[test]
fn node_ports_are_in_range_and_unique() {
    let src = SERVICES.replace("node_port: 30080", "node_port: 8080");
    let e = services_lab(&src).expect_err("should fail");
    assert!(
        e.to_string()
            .contains("node port 8080 is outside 30000-32767"),
        "{e}"
    );

    let src = SERVICES.replace(
        "scenarios:",
        "  - { name: web2, cluster_ip: 192.168.0.11, endpoints: [c], ports: [{ port: 80, node_port: 30080 }] }\nscenarios:",
    );
    let e = services_lab(&src).expect_err("should fail");
    assert!(
        e.to_string()
            .contains("service web2: node port 30080 is already used at line 13"),
        "{e}"
    );
}

#[test]
fn scenario_changes_name_known_services_and_endpoints() {
    let src = SERVICES.replace("{ service: { name: web,", "{ service: { name: wbe,");
    let e = services_lab(&src).expect_err("should fail");
    assert!(e.to_string().contains("unknown service `wbe`"), "{e}");
    let help = e.problems()[0].help.clone().unwrap_or_default();
    assert!(help.contains("known services: web"), "{help}");

    let src = SERVICES.replace("remove_endpoints: [b]", "remove_endpoints: [c]");
    let e = services_lab(&src).expect_err("should fail");
    assert!(
        e.to_string()
            .contains("`c` is not an endpoint of service web"),
        "{e}"
    );

    let src = SERVICES.replace("backend: a", "backend: z");
    let e = services_lab(&src).expect_err("should fail");
    assert!(e.to_string().contains("unknown pod `z`"), "{e}");

    let src = SERVICES.replace("via_node: n1", "via_node: n3");
    let e = services_lab(&src).expect_err("should fail");
    assert!(e.to_string().contains("unknown node `n3`"), "{e}");
}

#[test]
fn conntrack_expectations_are_tuples() {
    let src = SERVICES.replace(
        "original: '172.16.0.10 -> 8.8.8.10:80'",
        "original: '172.16.0.10 => 8.8.8.10'",
    );
    let e = services_lab(&src).expect_err("should fail");
    assert!(
        e.to_string()
            .contains("invalid conntrack tuple `172.16.0.10 => 8.8.8.10`"),
        "{e}"
    );
    assert!(
        e.problems()[0]
            .help
            .as_ref()
            .unwrap()
            .contains("172.23.96.23 -> 192.168.13.23:80")
    );
}

#[test]
fn a_nodes_first_interface_needs_an_address() {
    let source = IPVLAN.replace(
        "{ name: eth0, subnet: vsw, address: 10.0.3.15 }",
        "{ name: eth0, subnet: vsw }",
    );
    let e = load_str("t.yaml", &source, &vars()).expect_err("no node address");
    let problems = e.problems();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let text = e.to_string();
    assert!(
        text.contains("t.yaml:8:")
            && text.contains("node-15's first interface eth0 has no address"),
        "{text}"
    );
    assert!(
        problems[0]
            .help
            .as_deref()
            .is_some_and(|h| h.contains("add `address:`")),
        "{problems:#?}"
    );
}

#[test]
fn unknown_attachment_lists_the_valid_ones() {
    let (e, help) = one(
        "address: 172.23.96.10 }",
        "address: 172.23.96.10, attachment: macvlan }",
    );
    assert!(e.contains("unknown variant `macvlan`"), "{e}");
    assert_eq!(help, "valid values: bridge, ipvlan");
}

#[test]
fn unknown_value_hint_reads_both_list_styles() {
    for rest in [
        "macvlan`, expected one of bridge, ipvlan",
        "macvlan`, expected one of `bridge`, `ipvlan`",
        "macvlan`, expected `bridge` or `ipvlan`",
    ] {
        assert_eq!(
            super::closest_hint("macvlan", rest).as_deref(),
            Some("valid values: bridge, ipvlan"),
            "{rest}"
        );
    }
    assert_eq!(
        super::closest_hint("ipvlann", "ipvlann`, expected one of bridge, ipvlan").as_deref(),
        Some("did you mean `ipvlan`?")
    );
}

#[test]
fn versions_compare_by_number() {
    let terway =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/terway-ipvlan-ebpf.yaml");
    let at = |v: &str| {
        let mut vars = vars();
        vars.insert("terway".into(), v.into());
        render(&terway, &vars)
    };
    for (v, on) in [
        ("1.1.0", false),
        ("1.2.0", true),
        ("1.10.0", true),
        ("v1.2", true),
        ("1.1.99", false),
    ] {
        let text = at(v).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert!(
            text.contains(&format!("in_cluster_external: {on}")),
            "terway={v}: want in_cluster_external {on}"
        );
    }
    let e = at("latest").unwrap_err().to_string();
    assert!(e.contains("`latest` is not a version"), "{e}");
    assert!(
        e.starts_with(&format!("{}:", terway.display())) || e.contains("terway-ipvlan-ebpf.yaml:"),
        "{e}"
    );
}

// ---- link changes and rtt / retransmit expectations -------------------

/// BASE with one scenario whose `changes:` and `expect:` are given.
fn impaired(changes: &str, expect: &str, protocol: &str) -> Result<Lab, TopologyError> {
    let to = if protocol == "icmp" {
        "10.0.1.10"
    } else {
        "10.0.1.10:80"
    };
    let src = format!(
        "{BASE}scenarios:\n  - name: s\n    from: client\n    to: {to}\n    protocol: {protocol}\n    changes: {changes}\n    expect: {expect}\n"
    );
    load_str("t.yaml", &src, &vars())
}

fn impaired_errors(changes: &str, expect: &str, protocol: &str) -> Vec<String> {
    match impaired(changes, expect, protocol) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems()
            .iter()
            .map(|p| match &p.help {
                Some(h) => format!("{p} [help: {h}]"),
                None => p.to_string(),
            })
            .collect(),
    }
}

#[test]
fn link_changes_resolve() {
    let lab = impaired(
        "[{ link: { name: node-1/eth0, netem: {delay: 50ms, jitter: 1.5ms, loss: 0.5%, rate: 10mbit, reorder: 25%} } }, \
         { link: { name: pod-a/host, state: down } }, { link: { name: client/eth0, mtu: 1400 } }]",
        "{rtt_ms: {min: 100, max: 2000.5}}",
        "icmp",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sc = &lab.scenarios[0];
    assert!(sc.changes.is_empty());
    let [a, b, c] = sc.link_changes.as_slice() else {
        panic!("{:?}", sc.link_changes)
    };
    let n = a.netem.unwrap();
    assert_eq!((a.entity.as_str(), a.ifname.as_str()), ("node-1", "eth0"));
    assert_eq!(n.delay_ns, 50_000_000);
    assert_eq!(n.jitter_ns, 1_500_000);
    assert_eq!(n.loss, Percent(500_000));
    assert_eq!(n.rate_bps, 10_000_000);
    assert_eq!(n.reorder, Percent(25_000_000));
    assert_eq!(
        n.tc_args(),
        "delay 50ms 1.5ms loss 0.5% rate 10mbit reorder 25%"
    );
    // POD/host is the pod's veth on its node.
    assert_eq!(b.entity, "node-1");
    assert!(b.ifname.starts_with("veth") && b.down && b.netem.is_none());
    assert_eq!(c.mtu, Some(1400));
    let rtt = sc.expect.rtt_ms.unwrap();
    assert_eq!((rtt.min, rtt.max), (Some(100.0), Some(2000.5)));
    assert!(rtt.contains(100.0) && !rtt.contains(99.9));
}

#[test]
fn service_changes_still_resolve_next_to_link_changes() {
    let src = SERVICES.replace(
        "      - { service: { name: web, external_traffic_policy: Cluster, remove_endpoints: [b] } }",
        "      - { service: { name: web, external_traffic_policy: Cluster, remove_endpoints: [b] } }\n      - { link: { name: n1/eth0, netem: { delay: 1ms } } }",
    );
    assert_ne!(src, SERVICES);
    let lab = services_lab(&src).unwrap_or_else(|e| panic!("{e}"));
    let sc = &lab.scenarios[0];
    assert_eq!(sc.changes[0].remove_endpoints, ["b"]);
    assert_eq!(sc.link_changes[0].link, "n1/eth0");
}

#[test]
fn link_change_errors_are_located_and_say_how_to_fix() {
    let e = impaired_errors(
        "[{ link: { name: node-9/eth0, state: down } }]",
        "{}",
        "icmp",
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].contains("t.yaml:28:"), "{e:#?}");
    assert!(
        e[0].contains("unknown namespace, node, pod or client `node-9`"),
        "{e:#?}"
    );

    let e = impaired_errors(
        "[{ link: { name: node-1/eth7, state: down } }]",
        "{}",
        "icmp",
    );
    assert!(
        e[0].contains("`node-1` has no interface `eth7`; it has: eth0, cni0"),
        "{e:#?}"
    );
    let e = impaired_errors("[{ link: { name: vpc, state: down } }]", "{}", "icmp");
    assert!(e[0].contains("write ENTITY/IFNAME"), "{e:#?}");

    let cases = [
        ("{delay: 50}", "`50` has no unit: write `50ms`"),
        ("{delay: 50 ms}", "unknown time unit ` ms`"),
        ("{delay: 2min}", "unknown time unit `min`"),
        ("{delay: 61s}", "more than a minute"),
        ("{delay: -5ms}", "is not a time"),
        ("{loss: 1}", "write it with `%`"),
        ("{loss: 101%}", "more than 100%"),
        ("{loss: abc%}", "is not a percentage"),
        ("{rate: 10mbps}", "tc reads `mbps` as bytes per second"),
        ("{rate: 10}", "has no unit"),
        ("{rate: 10furlongs}", "unknown rate unit `furlongs`"),
        ("{jitter: 5ms}", "netem jitter needs a delay"),
        ("{reorder: 25%}", "netem reorder needs a delay"),
        ("{}", "netem with no impairment"),
    ];
    for (netem, want) in cases {
        let e = impaired_errors(
            &format!("[{{ link: {{ name: node-1/eth0, netem: {netem} }} }}]"),
            "{}",
            "icmp",
        );
        assert_eq!(e.len(), 1, "{netem}: {e:#?}");
        assert!(e[0].contains(want), "{netem}: want `{want}` in {e:#?}");
        assert!(e[0].contains("t.yaml:28:"), "{netem}: not located: {e:#?}");
    }
    let e = impaired_errors(
        "[{ link: { name: node-1/eth0, netem: {dealy: 5ms} } }]",
        "{}",
        "icmp",
    );
    assert!(e[0].contains("dealy"), "{e:#?}");
    assert!(e[0].contains("t.yaml:28:"), "{e:#?}");

    for (mtu, want) in [
        ("1", "mtu 1 is outside 68 to 65535"),
        ("70000", "outside 68 to 65535"),
        ("big", "is not a number of bytes"),
    ] {
        let e = impaired_errors(
            &format!("[{{ link: {{ name: node-1/eth0, mtu: {mtu} }} }}]"),
            "{}",
            "icmp",
        );
        assert!(e[0].contains(want), "{mtu}: {e:#?}");
    }
    let e = impaired_errors(
        "[{ link: { name: node-1/eth0, state: sideways } }]",
        "{}",
        "icmp",
    );
    assert!(e[0].contains("sideways"), "{e:#?}");
    let e = impaired_errors("[{ link: { name: node-1/eth0 } }]", "{}", "icmp");
    assert!(e[0].contains("changes nothing"), "{e:#?}");
    let e = impaired_errors(
        "[{ link: { name: node-1/eth0, mtu: 1400 } }, { link: { name: node-1/eth0, state: down } }]",
        "{}",
        "icmp",
    );
    assert!(e[0].contains("changed twice, first at line 28"), "{e:#?}");
    let e = impaired_errors(
        "[{ link: { name: node-1/eth0, mtu: 1400, remove_endpoints: [x] } }]",
        "{}",
        "icmp",
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].contains("t.yaml:28:") && e[0].contains("unknown key `remove_endpoints`"),
        "{e:#?}"
    );
    // The kinds are externally tagged: an unknown one lists the valid ones.
    let e = impaired_errors("[{ state: down }]", "{}", "icmp");
    assert!(e[0].contains("t.yaml:28:"), "{e:#?}");
    for kind in [
        "service",
        "link",
        "route",
        "neighbour",
        "fdb",
        "sysctl",
        "move",
    ] {
        assert!(e[0].contains(kind), "{kind}: {e:#?}");
    }
    // The old flat form (a kind's key beside its fields) is refused, located.
    let e = impaired_errors("[{ link: node-1/eth0, state: down }]", "{}", "icmp");
    assert!(e[0].contains("t.yaml:28:"), "{e:#?}");
}

#[test]
fn range_expectation_errors() {
    let e = impaired_errors("[]", "{rtt_ms: {}}", "icmp");
    assert!(e[0].contains("`rtt_ms` sets no bound"), "{e:#?}");
    let e = impaired_errors("[]", "{rtt_ms: {min: 10, max: 5}}", "icmp");
    assert!(e[0].contains("max 5 is below min 10"), "{e:#?}");
    let e = impaired_errors("[]", "{rtt_ms: {min: -1}}", "icmp");
    assert!(e[0].contains("negative"), "{e:#?}");
    let e = impaired_errors("[]", "{rtt_ms: {mni: 1}}", "icmp");
    assert!(e[0].contains("mni"), "{e:#?}");
    let e = impaired_errors("[]", "{retransmits: {max: 0}}", "icmp");
    assert!(e[0].contains("counted for tcp and http"), "{e:#?}");
    let e = impaired_errors("[]", "{retransmits: {max: 0.5}}", "tcp");
    assert!(e[0].contains("not a whole number"), "{e:#?}");
    let lab = impaired("[]", "{retransmits: {max: 0}}", "tcp").unwrap();
    assert_eq!(lab.scenarios[0].expect.retransmits.unwrap().max, Some(0.0));
    for e in [
        impaired_errors("[]", "{rtt_ms: {}}", "icmp"),
        impaired_errors("[]", "{retransmits: {max: 0}}", "icmp"),
    ] {
        assert!(e[0].contains("t.yaml:29:"), "{e:#?}");
    }
}

#[test]
fn units_parse_and_print_like_tc() {
    assert_eq!(parse_duration("250us"), Ok(250_000));
    assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
    assert_eq!(parse_duration("0.001ms"), Ok(1_000));
    assert!(parse_duration("1.ms").is_err());
    assert!(parse_duration("1.0001ms").is_err());
    assert_eq!(duration_text(50_000_000), "50ms");
    assert_eq!(duration_text(1_500_000), "1.5ms");
    assert_eq!(duration_text(250_000), "250us");
    assert_eq!(duration_text(2_000_000_000), "2s");
    assert_eq!(parse_rate("1.5gbit"), Ok(1_500_000_000));
    assert_eq!(parse_rate("64kbit"), Ok(64_000));
    assert_eq!(rate_text(64_000), "64kbit");
    assert_eq!(rate_text(1_500_000_000), "1.5gbit");
    assert_eq!(Percent::parse("100%").unwrap().to_u32_fraction(), u32::MAX);
    assert_eq!(Percent::parse("0%").unwrap().to_u32_fraction(), 0);
    // iproute2's get_percent: 1% is rint(0.01 * UINT32_MAX).
    assert_eq!(Percent::parse("1%").unwrap().to_u32_fraction(), 42_949_673);
    assert_eq!(Percent::parse("0.25%").unwrap().to_string(), "0.25%");
}

// ---- the low-level layer ------------------------------------------------

/// A lab of bare namespaces only: two joined by a veth, a vxlan whose
/// underlay is the other namespace, a bridge, tc, a neighbour and an FDB
/// entry. Every error test below breaks one line of it.
const LOW: &str = "\
name: low
namespaces:
  - name: a
  - name: b
    role: switch
links:
  - veth: {name: up0, in: a, peer: {name: up1, in: b, master: br0}}
  - bridge: {name: br0, in: b}
  - vxlan: {name: vx0, in: b, underlay: a, id: 42, dev: up0, remote: 192.0.2.2}
addresses:
  - {in: a, dev: up0, address: 192.0.2.1/24}
  - {in: b, dev: br0, address: 192.0.2.1/24}
neighbours:
  - {in: b, dev: br0, address: 192.0.2.9, lladdr: 02:00:00:00:00:09}
fdb:
  - {in: b, dev: up1, lladdr: 02:00:00:00:00:09}
  - {in: b, dev: vx0, lladdr: 02:00:00:00:00:08, dst: 192.0.2.8}
tc:
  - {in: b, dev: up1, hook: ingress, redirect: vx0}
";

fn low_errors(from: &str, to: &str) -> Vec<String> {
    let source = LOW.replacen(from, to, 1);
    assert_ne!(source, LOW, "`{from}` is not in LOW");
    match load_str("t.yaml", &source, &vars()) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems()
            .iter()
            .map(|p| format!("{p} [help: {}]", p.help.clone().unwrap_or_default()))
            .collect(),
    }
}

#[test]
fn a_lab_of_bare_namespaces_loads_without_a_vpc() {
    let lab = load_str("t.yaml", LOW, &vars()).unwrap_or_else(|e| panic!("{e}"));
    assert!(lab.vpc.is_none());
    let names: Vec<(String, Role)> = lab.entities();
    assert_eq!(
        names,
        [
            ("a".to_string(), Role::Host),
            ("b".to_string(), Role::Switch)
        ]
    );
    let o = &lab.objects;
    assert_eq!(o.links.len(), 3);
    let LinkKind::Vxlan(x) = &o.links[2].kind else {
        panic!("{:?}", o.links[2])
    };
    assert_eq!((x.underlay.as_str(), x.id, x.port), ("a", 42, 4789));
    assert_eq!(x.dev.as_deref(), Some("up0"));
    // The same address in two namespaces is allowed.
    assert_eq!(o.addresses.len(), 2);
    // A port's entry goes in its bridge's table; a vxlan's in its own.
    assert!(o.fdb[0].master && !o.fdb[1].master);
    assert_eq!(o.neighbours[0].state, NeighState::Permanent);
    assert_eq!(lab.interfaces_of("b").unwrap(), ["up1", "br0", "vx0"]);
    assert_eq!(lab.canonical_hop("b/vx0").unwrap(), "b/vx0");
}

#[test]
fn nodes_without_a_vpc_are_refused() {
    let e = load_str(
        "t.yaml",
        "name: x\nnodes:\n  - {name: n1, interfaces: []}\n",
        &vars(),
    )
    .unwrap_err();
    let p = &e.problems()[0];
    assert_eq!(
        p.to_string(),
        "t.yaml:3:12: node n1 needs a vpc, and the file has none"
    );
    assert!(p.help.as_deref().unwrap().contains("namespaces"), "{p:?}");
}

#[test]
fn an_unknown_link_kind_lists_the_kinds() {
    let e = low_errors(
        "  - bridge: {name: br0, in: b}",
        "  - tap: {name: br0, in: b}",
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].starts_with("t.yaml:8:5: "), "{e:#?}");
    for kind in [
        "veth", "bridge", "vxlan", "vlan", "bond", "dummy", "macvlan", "ipvlan",
    ] {
        assert!(e[0].contains(kind), "{kind}: {e:#?}");
    }
}

#[test]
fn a_link_in_an_unknown_namespace_is_located() {
    let e = low_errors("{name: br0, in: b}", "{name: br0, in: c}");
    // The bridge, and everything that names br0 in b.
    assert!(
        e.iter()
            .filter(|m| m.starts_with(
                "t.yaml:8:29: unknown namespace `c` [help: did you mean `a`? known namespaces: a, b"
            ))
            .count()
            == 1,
        "{e:#?}"
    );
    let e = low_errors("peer: {name: up1, in: b,", "peer: {name: up1, in: bb,");
    assert!(e[0].contains("unknown namespace `bb`"), "{e:#?}");
    assert!(e[0].starts_with("t.yaml:7:52: "), "{e:#?}");
    assert!(e[0].contains("did you mean `b`?"), "{e:#?}");
}

#[test]
fn a_vxlan_needs_its_underlay() {
    let e = low_errors("underlay: a,", "underlay: z,");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with("t.yaml:9:41: unknown namespace `z`"),
        "{e:#?}"
    );
    let e = low_errors("dev: up0, remote", "dev: up1, remote");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].contains(
            "vxlan vx0 sends through `up1`, which its underlay namespace a does not have"
        ),
        "{e:#?}"
    );
    let e = low_errors("id: 42,", "id: 16777216,");
    assert!(
        e[0].contains("vni 16777216 does not fit in 24 bits"),
        "{e:#?}"
    );
}

#[test]
fn a_port_of_a_missing_bridge_is_located() {
    let e = low_errors("master: br0}", "master: br9}");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with("t.yaml:7:63: no bridge or bond `br9` in namespace b"),
        "{e:#?}"
    );
    assert!(e[0].contains("did you mean `br0`?"), "{e:#?}");
    // A master that exists and is no bridge.
    let e = low_errors("{name: br0, in: b}", "{name: br1, in: b}");
    assert!(e[0].contains("no bridge or bond `br0`"), "{e:#?}");
    let e = low_errors("master: br0}", "master: lo}");
    assert!(
        e[0].contains("master `lo` in namespace b is not a bridge or a bond"),
        "{e:#?}"
    );
}

#[test]
fn a_redirect_to_a_missing_device_is_located() {
    let e = low_errors("redirect: vx0}", "redirect: vx1}");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with(
            "t.yaml:19:48: the tc redirect names device `vx1`, which namespace b does not have"
        ),
        "{e:#?}"
    );
    let e = low_errors("redirect: vx0}", "mirror: vx0, redirect: vx0}");
    assert!(e[0].contains("both redirects and mirrors"), "{e:#?}");
}

#[test]
fn duplicate_devices_and_addresses_in_one_namespace_are_refused() {
    let e = low_errors("{name: br0, in: b}", "{name: up1, in: b}");
    assert!(
        e.iter()
            .any(|m| m.contains("namespace b already has a device `up1`")),
        "{e:#?}"
    );
    let e = low_errors(
        "{in: b, dev: br0, address: 192.0.2.1/24}",
        "{in: a, dev: up0, address: 192.0.2.1/25}",
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].contains("address 192.0.2.1 is already in namespace a"),
        "{e:#?}"
    );
}

#[test]
fn fdb_dst_is_for_vxlan_devices() {
    let e = low_errors(
        "{in: b, dev: up1, lladdr: 02:00:00:00:00:09}",
        "{in: b, dev: up1, lladdr: 02:00:00:00:00:09, dst: 192.0.2.7}",
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].contains("`dst` is for a vxlan device's entries"),
        "{e:#?}"
    );
}

#[test]
fn low_level_objects_sit_beside_the_cni_keys() {
    // An address and a tc mirror on the node's own eth0, made by `nodes`.
    let source = format!(
        "{BASE}addresses:\n  - {{in: node-1, dev: eth0, address: 192.0.2.1/24}}\n\
         tc:\n  - {{in: node-1, dev: eth0, hook: egress, mirror: lo}}\n"
    );
    let lab = load_base(&source).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lab.objects.addresses[0].netns, "node-1");
    assert!(matches!(
        &lab.objects.tc[0].action,
        TcAction::Mirred { mirror: true, .. }
    ));
    let e = load_base(&source.replace("dev: eth0, address", "dev: eth7, address")).unwrap_err();
    assert!(e.to_string().contains("device `eth7`"), "{e}");
}

#[test]
fn route_changes_resolve_and_their_errors_are_located() {
    let lab = impaired(
        "[{ route: { to: default, in: node-1, delete: true } }, { route: { to: 172.23.96.0/26, in: vpc, delete: true } }]",
        "{}",
        "icmp",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sc = &lab.scenarios[0];
    assert_eq!(sc.route_changes.len(), 2);
    assert_eq!(sc.route_changes[0].entity, "node-1");
    assert_eq!(sc.route_changes[0].destination.prefix_len(), 0);
    assert_eq!(
        sc.route_changes[1].destination.to_string(),
        "172.23.96.0/26"
    );

    let e = impaired_errors("[{ route: { to: default, in: node-1 } }]", "{}", "icmp");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].contains("the change of route default changes nothing"),
        "{e:#?}"
    );
    let e = impaired_errors(
        "[{ route: { to: default, in: node-9, delete: true } }]",
        "{}",
        "icmp",
    );
    assert!(
        e[0].contains("unknown namespace, node, pod or client `node-9`"),
        "{e:#?}"
    );
    assert!(e[0].starts_with("t.yaml:28:"), "{e:#?}");
    let e = impaired_errors(
        "[{ route: { to: 10.0.0.1/8, in: node-1, delete: true } }]",
        "{}",
        "icmp",
    );
    assert!(e[0].contains("has host bits set"), "{e:#?}");
    let e = impaired_errors(
        "[{ route: { to: default, in: node-1, delete: true, link: node-1/eth0 } }]",
        "{}",
        "icmp",
    );
    assert!(e[0].contains("unknown key `link`"), "{e:#?}");
    let e = impaired_errors(
        "[{ route: { to: default, in: node-1, delete: true, dev: eth0 } }]",
        "{}",
        "icmp",
    );
    assert!(e[0].contains("is deleted: it needs no device"), "{e:#?}");
    // A route added for the scenario.
    let lab = impaired(
        "[{ route: { to: 10.9.0.0/16, in: node-1, via: 10.0.0.1, dev: eth0 } }]",
        "{}",
        "icmp",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let add = lab.scenarios[0].route_changes[0].add.clone().unwrap();
    assert_eq!(
        (add.via, add.dev.as_str()),
        (Some("10.0.0.1".parse().unwrap()), "eth0")
    );
    let e = impaired_errors(
        "[{ route: { to: 10.9.0.0/16, in: node-1, dev: eth9 } }]",
        "{}",
        "icmp",
    );
    assert!(
        e[0].contains("t.yaml:28:") && e[0].contains("namespace node-1 has no device `eth9`"),
        "{e:#?}"
    );
}

#[test]
fn object_changes_resolve_in_file_order() {
    let lab = impaired(
        "[{ neighbour: { in: node-1, dev: eth0, address: 10.0.0.9, lladdr: 02:00:00:00:00:09 } }, \
         { neighbour: { in: node-1, dev: eth0, address: 10.0.0.8, delete: true } }, \
         { fdb: { in: node-1, dev: cni0, lladdr: 02:00:00:00:00:0a } }, \
         { sysctl: { in: node-1, key: net.ipv4.conf.all.arp_ignore, value: 1 } }, \
         { move: { pod: pod-a, to: node-2 } }]",
        "{}",
        "icmp",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let c = &lab.scenarios[0].object_changes;
    assert!(
        matches!(&c[0], ObjectChange::Neighbour { entity, lladdr: Some(_), .. } if entity == "node-1"),
        "{c:?}"
    );
    assert!(
        matches!(&c[1], ObjectChange::Neighbour { lladdr: None, .. }),
        "{c:?}"
    );
    assert!(
        matches!(
            &c[2],
            ObjectChange::Fdb {
                master: true,
                delete: false,
                ..
            }
        ),
        "{c:?}"
    );
    assert!(
        matches!(&c[3], ObjectChange::Sysctl { key, value, .. } if key == "net.ipv4.conf.all.arp_ignore" && value == "1"),
        "{c:?}"
    );
    assert_eq!(
        c[4],
        ObjectChange::Move {
            pod: "pod-a".into(),
            from: "node-1".into(),
            to: "node-2".into()
        }
    );
}

/// An FDB change goes in the table the lab's own entries would: on a
/// vxlan that is a bridge port, the bridge's without a VTEP, the vxlan's
/// own with one (EVPN's two entries per remote MAC).
#[test]
fn fdb_changes_on_a_vxlan_port_take_the_labs_tables() {
    let src = "\
name: evpn
namespaces:
  - name: leaf
links:
  - bridge: {name: br0, in: leaf}
  - vxlan: {name: vx0, in: leaf, id: 42, local: 192.0.2.1, master: br0}
scenarios:
  - name: s
    from: leaf
    to: 192.0.2.9
    protocol: icmp
    changes:
      - fdb: {in: leaf, dev: vx0, lladdr: 02:00:00:00:00:09}
      - fdb: {in: leaf, dev: vx0, lladdr: 02:00:00:00:00:09, dst: 192.0.2.2, delete: true}
    expect: {result: connected}
";
    let lab = load_str("t.yaml", src, &vars()).unwrap_or_else(|e| panic!("{e}"));
    let c = &lab.scenarios[0].object_changes;
    assert!(
        matches!(
            &c[0],
            ObjectChange::Fdb {
                master: true,
                dst: None,
                ..
            }
        ),
        "{c:?}"
    );
    assert!(
        matches!(
            &c[1],
            ObjectChange::Fdb {
                master: false,
                dst: Some(_),
                delete: true,
                ..
            }
        ),
        "{c:?}"
    );
}

#[test]
fn object_change_errors_are_located() {
    let cases = [
        (
            "[{ neighbour: { in: node-1, dev: eth0, address: 10.0.0.9 } }]",
            "changes nothing",
        ),
        (
            "[{ neighbour: { in: node-1, dev: eth0, address: 10.0.0.9, lladdr: 02:00:00:00:00:09, delete: true } }]",
            "is deleted: it needs no lladdr",
        ),
        (
            "[{ neighbour: { in: node-7, dev: eth0, address: 10.0.0.9, delete: true } }]",
            "unknown namespace, node, pod or client `node-7`",
        ),
        (
            "[{ fdb: { in: node-1, dev: cni0, lladdr: 02:00:00:00:00:0a, dst: 10.0.0.2 } }]",
            "`dst` is for a vxlan device's entries",
        ),
        (
            "[{ sysctl: { in: node-1, key: net.core.rmem_max, value: 1 } }]",
            "is global, not kept per network namespace",
        ),
        (
            "[{ sysctl: { in: node-1, key: kernel.panic, value: 1 } }]",
            "is not a network sysctl",
        ),
        (
            "[{ move: { pod: pod-z, to: node-1 } }]",
            "unknown pod `pod-z`",
        ),
        (
            "[{ move: { pod: pod-a, to: node-1 } }]",
            "is on node node-1 already",
        ),
        (
            "[{ move: { pod: pod-a, to: node-9 } }]",
            "unknown node `node-9`",
        ),
    ];
    for (changes, want) in cases {
        let e = impaired_errors(changes, "{}", "icmp");
        assert_eq!(e.len(), 1, "{changes}: {e:#?}");
        assert!(e[0].contains(want), "{changes}: want `{want}` in {e:#?}");
        assert!(
            e[0].contains("t.yaml:28:"),
            "{changes}: not located: {e:#?}"
        );
    }
}

/// Found by the fuzzer: a problem a million columns into a rendered line
/// made miette's graphical report (the CLI's on a terminal) panic while it
/// padded the underline. The problem keeps its location and drops the
/// snippet.
#[test]
fn a_problem_far_into_a_long_line_renders_without_a_snippet() {
    let source = "{% set s = 'x' * 1000000 %}{range(100000) %}{{ s }}\0\0\0\0\0\0\0\u{4}";
    let e = load_str("t.yaml", source, &vars()).unwrap_err();
    let mut out = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::none())
        .render_report(&mut out, &e)
        .unwrap();
    assert!(out.contains("t.yaml:1:1000018"), "{out}");
    assert!(
        out.len() < 2000,
        "no million-character snippet: {} bytes",
        out.len()
    );
    // A problem in a short line still shows its snippet.
    let e = load_str("t.yaml", "name: lab\nnodez: []\n", &vars()).unwrap_err();
    let mut out = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::none())
        .render_report(&mut out, &e)
        .unwrap();
    assert!(out.contains("nodez: []"), "{out}");
}

// ---- what captures and expectations can say ----------------------------

/// LOW with one scenario from `a`; `extra` holds its further keys, each line
/// indented by four spaces.
fn observed(extra: &str) -> Result<Lab, TopologyError> {
    let src = format!(
        "{LOW}scenarios:\n  - name: s\n    from: a\n    to: 192.0.2.9\n    protocol: icmp\n{extra}"
    );
    load_str("t.yaml", &src, &vars())
}

fn observed_errors(extra: &str) -> Vec<String> {
    match observed(extra) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems()
            .iter()
            .map(|p| format!("{p} [help: {}]", p.help.clone().unwrap_or_default()))
            .collect(),
    }
}

#[test]
fn sighting_filters_neighbours_and_devices_resolve() {
    let lab = observed(
        "    capture: {arp: true}\n    expect:\n      devices: 3\n      path: [a/up0, b, b/vx0]\n      \
         seen_on:\n        - {dst_mac: ff:ff:ff:ff:ff:ff, vlan: 100, interfaces: [b/up1]}\n        \
         - {address: 192.0.2.9, vni: 42, src_mac: 02:00:00:00:00:09, interfaces: [a/up0]}\n      \
         not_seen_on:\n        - {protocol: arp, interfaces: [b/vx0]}\n      \
         neighbours:\n        - {in: b, dev: br0, address: 192.0.2.9, lladdr: 02:00:00:00:00:09}\n        \
         - {in: a, address: 192.0.2.7, present: false}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sc = &lab.scenarios[0];
    assert!(sc.show_arp);
    assert_eq!(sc.expect.devices, Some(3));
    // A switch is one hop of a path.
    assert_eq!(sc.expect.path.as_deref().unwrap()[1], "b");
    let [tagged, vxlan] = sc.expect.seen_on.as_slice() else {
        panic!("{:?}", sc.expect.seen_on)
    };
    assert_eq!(tagged.address, None);
    assert_eq!(tagged.dst_mac, Some([0xff; 6]));
    assert_eq!(tagged.vlan, Some(100));
    assert_eq!(vxlan.vni, Some(42));
    assert_eq!(vxlan.src_mac, Some([2, 0, 0, 0, 0, 9]));
    assert_eq!(
        vxlan.describe(),
        "192.0.2.9 src_mac 02:00:00:00:00:09 vni 42"
    );
    assert_eq!(sc.expect.not_seen_on[0].protocol, Some(SightProto::Arp));
    assert_eq!(sc.expect.not_seen_on[0].describe(), "arp");
    let [held, absent] = sc.expect.neighbours.as_slice() else {
        panic!("{:?}", sc.expect.neighbours)
    };
    assert_eq!(
        (held.entity.as_str(), held.dev.as_deref(), held.present),
        ("b", Some("br0"), true)
    );
    assert_eq!(held.lladdr, Some([2, 0, 0, 0, 0, 9]));
    assert_eq!((absent.dev.as_deref(), absent.present), (None, false));
}

#[test]
fn bad_sighting_filters_are_located() {
    let errs = observed_errors(
        "    expect:\n      seen_on:\n        - {vlan: 4095, interfaces: [a/up0]}\n        \
         - {vni: 16777216, interfaces: [a/up0]}\n        \
         - {dst_mac: 02:00:00:00:00, interfaces: [a/up0]}\n        \
         - {interfaces: [a/up0]}\n",
    );
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(
        errs[0].starts_with("t.yaml:27:18: invalid vlan id 4095") && errs[0].contains("0 to 4094"),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with("t.yaml:28:17: invalid vni 16777216") && errs[1].contains("24 bits"),
        "{errs:#?}"
    );
    assert!(
        errs[2].starts_with("t.yaml:29:21: invalid mac address `02:00:00:00:00`"),
        "{errs:#?}"
    );
    assert!(
        errs[3].starts_with("t.yaml:30:11: a sighting needs something to look for")
            && errs[3].contains("address, src_mac, dst_mac, vlan, vni, protocol"),
        "{errs:#?}"
    );
}

#[test]
fn arp_filter_needs_arp_captured() {
    let errs = observed_errors(
        "    expect:\n      not_seen_on:\n        - {protocol: arp, interfaces: [b/vx0]}\n",
    );
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("t.yaml:27:22: ARP is not captured in this scenario")
            && errs[0].contains("capture: {arp: true}"),
        "{errs:#?}"
    );
    let errs = observed_errors("    capture: {arp: yes-please}\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].starts_with("t.yaml:25:20"), "{errs:#?}");
    let errs = observed_errors("    capture: {vlan: true}\n");
    assert!(
        errs[0].starts_with("t.yaml:25:15: unknown key `vlan`"),
        "{errs:#?}"
    );
    let errs = observed_errors(
        "    capture: {arp: true}\n    expect:\n      not_seen_on:\n        - {protocol: igmp, interfaces: [b/vx0]}\n",
    );
    assert!(errs[0].starts_with("t.yaml:28:22"), "{errs:#?}");
}

#[test]
fn bad_neighbour_expectations_are_located() {
    let errs = observed_errors(
        "    expect:\n      neighbours:\n        - {in: c, address: 192.0.2.9}\n        \
         - {in: b, dev: eth9, address: 192.0.2.9}\n        \
         - {in: b, address: 192.0.2.300, lladdr: zz:00:00:00:00:09}\n",
    );
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(
        errs[0].starts_with("t.yaml:27:16: unknown namespace, node, pod or client `c`")
            && errs[0].contains("did you mean"),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with("t.yaml:28:24: `b` has no interface `eth9`")
            && errs[1].contains("it has: "),
        "{errs:#?}"
    );
    assert!(
        errs[2].starts_with("t.yaml:29:28: invalid address `192.0.2.300`"),
        "{errs:#?}"
    );
    assert!(
        errs[3].starts_with("t.yaml:29:49: invalid mac address"),
        "{errs:#?}"
    );
    let errs = observed_errors("    expect:\n      neighbours:\n        - {address: 192.0.2.9}\n");
    assert!(
        errs[0].starts_with("t.yaml:27:12: missing field `in`"),
        "{errs:#?}"
    );
}

#[test]
fn zero_devices_is_refused() {
    let errs = observed_errors("    expect:\n      devices: 0\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("t.yaml:26:16: a request crosses at least one device"),
        "{errs:#?}"
    );
}

#[test]
fn served_by_names_a_server_of_an_http_scenario() {
    let errs = observed_errors("    expect:\n      served_by: a\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("t.yaml:26:18: `a` is no pod or namespace that serves ports"),
        "{errs:#?}"
    );
    // A serving namespace, but ICMP: nobody's server answers a ping.
    let src = format!(
        "{}scenarios:\n  - name: s\n    from: a\n    to: 192.0.2.9\n    protocol: icmp\n    \
         expect:\n      served_by: b\n",
        LOW.replace("    role: switch\n", "    role: switch\n    ports: [80]\n")
    );
    let e = load_str("t.yaml", &src, &vars()).expect_err("icmp has no server");
    let errs: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
    assert!(
        errs.len() == 1 && errs[0].contains("only an HTTP answer says who served it"),
        "{errs:#?}"
    );
}

#[test]
fn zero_hops_is_refused() {
    let errs = observed_errors("    expect:\n      hops: 0\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("t.yaml:26:13: a request makes at least one hop"),
        "{errs:#?}"
    );
}

// ---- the layer's other link kinds, bridge vlans, routes and sysctls ------

/// A host with a bond of two veths and a vlan on it, a switch with a
/// vlan-filtering bridge, and one of each other kind. Every error test
/// below breaks one line of it.
const KINDS: &str = "\
name: kinds
namespaces:
  - name: h
  - name: s
    role: switch
links:
  - veth: {name: eth0, in: h, master: bond0, peer: {name: p0, in: s, master: br0, port: {vlans: [{id: 100}, {id: 200}]}}}
  - veth: {name: eth1, in: h, master: bond0, peer: {name: p1, in: s, master: br0, port: {learning: false, vlans: [{id: 100, pvid: true, untagged: true}]}}}
  - bond: {name: bond0, in: h, mode: active-backup, miimon: 100}
  - vlan: {name: bond0.100, in: h, parent: bond0, id: 100}
  - bridge: {name: br0, in: s, vlan_filtering: true, vlan_default_pvid: 0, vlans: [{id: 100}]}
  - dummy: {name: d0, in: h, state: down, mac: 02:00:00:00:00:d0}
  - dummy: {name: d1, in: h}
  - macvlan: {name: mv0, in: s, parent: d0, parent_in: h, mode: private}
  - ipvlan: {name: iv0, in: s, parent: d1, parent_in: h, mode: l3}
addresses:
  - {in: h, dev: bond0.100, address: 10.0.100.1/24}
routes:
  - {in: h, to: 10.9.0.0/16, via: 10.0.100.254}
  - {in: h, to: 10.8.0.0/16, metric: 10, table: 100, nexthops: [{via: 10.0.100.253, dev: bond0.100}, {via: 10.0.100.254, dev: bond0.100, weight: 3}]}
  - {in: h, to: 10.7.0.0/16, dev: d1, scope: link}
sysctls:
  - {in: h, key: net.ipv4.conf.all.rp_filter, value: 0}
  - {in: s, key: net/ipv4/conf/bond0.100/arp_ignore, value: \"1\"}
";

fn kinds_errors(from: &str, to: &str) -> Vec<String> {
    let source = KINDS.replacen(from, to, 1);
    assert_ne!(source, KINDS, "`{from}` is not in KINDS");
    match load_str("t.yaml", &source, &vars()) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems()
            .iter()
            .map(|p| format!("{p} [help: {}]", p.help.clone().unwrap_or_default()))
            .collect(),
    }
}

#[test]
fn every_link_kind_resolves_with_its_options() {
    let lab = load_str("t.yaml", KINDS, &vars()).unwrap_or_else(|e| panic!("{e}"));
    let o = &lab.objects;
    let kinds: Vec<&str> = o.links.iter().map(|l| l.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "veth", "veth", "bond", "vlan", "bridge", "dummy", "dummy", "macvlan", "ipvlan"
        ]
    );
    // A slave's master is the bond; the peers are ports of the bridge.
    assert_eq!(o.links[0].master.as_deref(), Some("bond0"));
    let LinkKind::Veth { peer } = &o.links[1].kind else {
        panic!("{:?}", o.links[1])
    };
    let port = peer.port.as_ref().unwrap();
    assert_eq!(port.learning, Some(false));
    assert_eq!(
        port.vlans,
        [BridgeVlan {
            id: 100,
            pvid: true,
            untagged: true
        }]
    );
    let LinkKind::Bond(b) = &o.links[2].kind else {
        panic!()
    };
    assert_eq!((b.mode, b.miimon), (BondMode::ActiveBackup, Some(100)));
    assert_eq!(
        o.links[3].kind,
        LinkKind::Vlan(Vlan {
            parent: "bond0".into(),
            id: 100
        })
    );
    let LinkKind::Bridge(br) = &o.links[4].kind else {
        panic!()
    };
    assert!(br.vlan_filtering);
    assert_eq!(br.vlan_default_pvid, Some(0));
    assert_eq!(br.vlans.len(), 1);
    assert!(!o.links[5].up && o.links[6].up);
    // Made in its parent's namespace, living in `in`.
    assert_eq!(
        (o.links[7].made_in(), o.links[7].netns.as_str()),
        ("h", "s")
    );
    let LinkKind::Ipvlan(i) = &o.links[8].kind else {
        panic!()
    };
    assert_eq!(i.mode, IpvlanMode::L3);
    // Routes: a gateway only; ECMP in table 100; a scoped device route.
    assert!(o.routes[0].dev.is_none() && !o.routes[0].is_plain());
    assert_eq!(o.routes[1].nexthops.len(), 2);
    assert_eq!(o.routes[1].nexthops[0].weight, 1);
    assert_eq!(o.routes[1].nexthops[1].weight, 3);
    assert_eq!(
        (o.routes[1].table, o.routes[1].metric),
        (Some(100), Some(10))
    );
    assert_eq!(o.routes[2].scope, Some(RouteScope::Link));
    assert_eq!(o.sysctls.len(), 2);
    assert_eq!(o.sysctls[0].value, "0");
    assert_eq!(
        lab.interfaces_of("s").unwrap(),
        ["p0", "p1", "br0", "mv0", "iv0"]
    );
}

#[test]
fn a_new_kind_in_an_unknown_namespace_is_located() {
    let e = kinds_errors("{name: bond0.100, in: h,", "{name: bond0.100, in: x,");
    // The address and next hops on it, too: bond0.100 is no device of h.
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(
        e[0].starts_with("t.yaml:10:33: unknown namespace `x`"),
        "{e:#?}"
    );
    assert!(e[1].contains("device `bond0.100`"), "{e:#?}");
    let e = kinds_errors("parent: d0, parent_in: h,", "parent: d0, parent_in: hh,");
    assert!(e[0].contains("unknown namespace `hh`"), "{e:#?}");
    assert!(e[0].contains("did you mean `h`?"), "{e:#?}");
}

#[test]
fn a_slave_of_a_missing_bond_is_located() {
    let e = kinds_errors("in: h, master: bond0,", "in: h, master: bond9,");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with("t.yaml:7:39: no bridge or bond `bond9` in namespace h"),
        "{e:#?}"
    );
    assert!(e[0].contains("did you mean `bond0`?"), "{e:#?}");
    // A bond's slave is no bridge port: no fdb `master` entry, no port
    // options.
    let e = kinds_errors(
        "{name: eth0, in: h, master: bond0,",
        "{name: eth0, in: h, master: bond0, port: {isolated: true},",
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].contains("`eth0` has port options, but its master `bond0` is a bond"),
        "{e:#?}"
    );
}

#[test]
fn a_vlan_on_a_missing_parent_or_with_a_bad_id_is_located() {
    let e = kinds_errors("parent: bond0, id: 100}", "parent: bond7, id: 100}");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with("t.yaml:10:44: the vlan's parent `bond7` is no device of namespace h"),
        "{e:#?}"
    );
    assert!(e[0].contains("did you mean `bond0`?"), "{e:#?}");
    for bad in ["0", "4095"] {
        let e = kinds_errors(
            "parent: bond0, id: 100}",
            &format!("parent: bond0, id: {bad}}}"),
        );
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(
            e[0].starts_with(&format!("t.yaml:10:55: vlan id {bad} is out of range")),
            "{e:#?}"
        );
        assert!(e[0].contains("1 to 4094"), "{e:#?}");
    }
    // A port's vlan id too.
    let e = kinds_errors(
        "vlans: [{id: 100}, {id: 200}]",
        "vlans: [{id: 100}, {id: 5000}]",
    );
    assert!(e[0].contains("vlan id 5000 is out of range"), "{e:#?}");
    // A parent made in the same phase.
    let e = kinds_errors(
        "parent: d0, parent_in: h",
        "parent: bond0.100, parent_in: h",
    );
    assert!(
        e[0].contains("parent `bond0.100` is a stacked link of this layer"),
        "{e:#?}"
    );
}

#[test]
fn port_options_need_a_bridge_master_and_vlans_need_filtering() {
    let e = kinds_errors(
        "{name: d1, in: h}",
        "{name: d1, in: h, port: {learning: false}}",
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with(
            "t.yaml:13:36: `d1` has port options, but it has no master: they are a bridge port's"
        ),
        "{e:#?}"
    );
    let e = kinds_errors("vlan_filtering: true, vlan_default_pvid: 0, ", "");
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(
        e[0].contains("`p0` has vlans, but its bridge `br0` does not filter by vlan"),
        "{e:#?}"
    );
    assert!(
        e[2].contains("bridge br0 has vlan settings but no vlan_filtering"),
        "{e:#?}"
    );
    let e = kinds_errors(
        "{id: 100}, {id: 200}",
        "{id: 100, pvid: true}, {id: 200, pvid: true}",
    );
    assert!(e[0].contains("vlan 200 is a second pvid"), "{e:#?}");
    let e = kinds_errors("mode: l3}", "mode: l3, mac: 02:00:00:00:00:01}");
    assert!(e[0].contains("ipvlan iv0 cannot have a MAC"), "{e:#?}");
}

#[test]
fn a_nexthop_on_a_missing_device_is_located() {
    let e = kinds_errors(
        "{via: 10.0.100.253, dev: bond0.100}",
        "{via: 10.0.100.253, dev: bond0.200}",
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with(
            "t.yaml:20:90: the next hop names device `bond0.200`, which namespace h does not have"
        ),
        "{e:#?}"
    );
    let e = kinds_errors("weight: 3}", "weight: 0}");
    assert!(e[0].contains("next hop weight 0 is out of range"), "{e:#?}");
    let e = kinds_errors("to: 10.9.0.0/16, via: 10.0.100.254}", "to: 10.9.0.0/16}");
    assert!(e[0].contains("says neither `via` nor `dev`"), "{e:#?}");
    let e = kinds_errors("table: 100, nexthops", "dev: d1, nexthops");
    assert!(e[0].contains("both `nexthops` and its own"), "{e:#?}");
    let e = kinds_errors("via: 10.0.100.254}", "via: 10.0.100.254, scope: host}");
    assert!(e[0].contains("has a gateway and scope host"), "{e:#?}");
    let e = kinds_errors("table: 100,", "table: 0,");
    assert!(e[0].contains("routing table 0"), "{e:#?}");
}

#[test]
fn a_host_global_sysctl_is_refused() {
    let e = kinds_errors("key: net.ipv4.conf.all.rp_filter", "key: net.core.rmem_max");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with(
            "t.yaml:23:18: sysctl `net.core.rmem_max` is global, not kept per network namespace"
        ),
        "{e:#?}"
    );
    let e = kinds_errors("key: net.ipv4.conf.all.rp_filter", "key: kernel.hostname");
    assert!(e[0].contains("is not a network sysctl"), "{e:#?}");
    let e = kinds_errors("{in: h, key: net.ipv4", "{in: q, key: net.ipv4");
    assert!(e[0].contains("unknown namespace `q`"), "{e:#?}");
}

#[test]
fn a_bare_namespace_serves_ports_like_a_pod() {
    let lab = load_str(
        "t.yaml",
        &KINDS.replace(
            "  - name: h\n",
            "  - name: h\n    ports: [80, {port: 53, protocol: udp}]\n",
        ),
        &vars(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lab.objects.namespaces[0].ports.len(), 2);
    let e = kinds_errors("  - name: h\n", "  - name: h\n    ports: [80, 80]\n");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with("t.yaml:4:17: namespace h lists port 80/tcp twice"),
        "{e:#?}"
    );
}

#[test]
fn tc_changes_resolve_and_their_errors_are_located() {
    let lab = impaired(
        "[{ tc: { in: node-1, dev: eth0, hook: ingress, delete: true } }, \
         { tc: { in: node-1, dev: eth0, hook: egress, mirror: cni0 } }]",
        "{}",
        "icmp",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let c = &lab.scenarios[0].object_changes;
    assert!(
        matches!(
            &c[0],
            ObjectChange::Tc {
                to: None,
                hook: TcHook::Ingress,
                ..
            }
        ),
        "{c:?}"
    );
    assert!(
        matches!(&c[1], ObjectChange::Tc { to: Some(t), mirror: true, .. } if t == "cni0"),
        "{c:?}"
    );
    for (changes, want) in [
        (
            "[{ tc: { in: node-1, dev: eth0, hook: ingress } }]",
            "changes nothing",
        ),
        (
            "[{ tc: { in: node-1, dev: eth0, hook: ingress, redirect: eth9 } }]",
            "namespace node-1 has no device `eth9`",
        ),
        (
            "[{ tc: { in: node-1, dev: eth0, hook: ingress, redirect: cni0, delete: true } }]",
            "are deleted: they need no target",
        ),
        (
            "[{ tc: { in: node-1, dev: eth0, hook: ingress, redirect: cni0, mirror: cni0 } }]",
            "both redirects and mirrors",
        ),
    ] {
        let e = impaired_errors(changes, "{}", "icmp");
        assert_eq!(e.len(), 1, "{changes}: {e:#?}");
        assert!(e[0].contains(want), "{changes}: want `{want}` in {e:#?}");
        assert!(
            e[0].contains("t.yaml:28:"),
            "{changes}: not located: {e:#?}"
        );
    }
}

/// A small Cilium VXLAN node: an external vxlan, a pod's veth with both
/// MACs, the router's programs and maps.
const CIL: &str = "\
name: cil
namespaces:
  - name: node
  - name: pod
links:
  - veth: {name: eth0, in: pod, mac: 0a:58:0a:f4:01:9a, peer: {name: lxc1, in: node, mac: 0e:1b:52:8e:74:8f}}
  - veth: {name: up0, in: node, peer: {name: up1, in: pod}}
  - vxlan: {name: cilium_vxlan, in: node, external: true, dstport: 8472}
tc:
  - {in: node, dev: lxc1, hook: ingress, bpf: route_from_container}
bpf_maps:
  - in: node
    tunnel_dev: cilium_vxlan
    endpoints: [{address: 10.244.1.154, dev: lxc1, identity: 48312}]
    tunnels: [{prefix: 10.244.6.0/24, remote: 192.168.66.221}]
";

fn cil_errors(from: &str, to: &str) -> Vec<String> {
    let source = CIL.replacen(from, to, 1);
    assert_ne!(source, CIL, "`{from}` is not in CIL");
    match load_str("t.yaml", &source, &vars()) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems()
            .iter()
            .map(|p| format!("{p} [help: {}]", p.help.clone().unwrap_or_default()))
            .collect(),
    }
}

/// One located error containing `want`.
fn assert_one_error(e: &[String], want: &str, at: &str) {
    assert_eq!(e.len(), 1, "want one error `{want}`: {e:#?}");
    assert!(e[0].contains(want), "want `{want}`: {e:#?}");
    assert!(e[0].starts_with(at), "want it at {at}: {e:#?}");
}

#[test]
fn cilium_router_objects_resolve() {
    let lab = load_str("t.yaml", CIL, &vars()).unwrap_or_else(|e| panic!("{e}"));
    let o = &lab.objects;
    let LinkKind::Vxlan(x) = &o.links[2].kind else {
        panic!("{:?}", o.links[2])
    };
    assert!(x.external);
    assert_eq!((x.id, x.port), (0, 8472));
    assert_eq!(
        o.tc[0].action,
        TcAction::Bpf {
            program: "route_from_container".into()
        }
    );
    let m = &o.bpf_maps[0];
    assert_eq!(m.tunnel_dev.as_deref(), Some("cilium_vxlan"));
    let e = &m.endpoints[0];
    assert_eq!(e.address, std::net::Ipv4Addr::new(10, 244, 1, 154));
    // The lxc's MAC is the peer's here, the pod's the link's own.
    assert_eq!(e.lxc_mac, [0x0e, 0x1b, 0x52, 0x8e, 0x74, 0x8f]);
    assert_eq!(e.pod_mac, [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x9a]);
    assert_eq!(e.identity, 48312);
    assert_eq!(m.tunnels[0].prefix.to_string(), "10.244.6.0/24");
}

#[test]
fn vxlan_needs_an_id_or_external_not_both() {
    let e = cil_errors("external: true, dstport", "dstport");
    // And the maps' tunnel_dev is no external device any more.
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].starts_with("t.yaml:8:19: vxlan cilium_vxlan has no `id`"),
        "{e:#?}"
    );
    assert!(e[0].contains("`external: true`"), "{e:#?}");
    assert!(e[1].contains("is no `external` vxlan"), "{e:#?}");
    let e = cil_errors("external: true, dstport", "external: true, id: 5, dstport");
    assert_one_error(&e, "is `external` and has an `id`", "t.yaml:8:");
}

#[test]
fn tc_bpf_names_one_of_our_programs_alone() {
    let e = cil_errors("bpf: route_from_container", "bpf: route_to_mars");
    assert_one_error(&e, "unknown eBPF program `route_to_mars`", "t.yaml:10:");
    assert!(
        e[0].contains("route_from_overlay"),
        "lists the valid ones: {e:#?}"
    );
    let e = cil_errors(
        "bpf: route_from_container",
        "bpf: route_from_container, redirect: up0",
    );
    assert_one_error(&e, "both runs an eBPF program and redirects", "t.yaml:10:");
}

#[test]
fn bpf_maps_namespace_and_tunnel_dev_are_checked() {
    let e = cil_errors("  - in: node\n", "  - in: nod\n");
    assert_one_error(&e, "unknown namespace `nod`", "t.yaml:12:");
    let e = cil_errors("tunnel_dev: cilium_vxlan", "tunnel_dev: vx9");
    assert_one_error(&e, "names device `vx9`", "t.yaml:13:");
    let e = cil_errors("tunnel_dev: cilium_vxlan", "tunnel_dev: up0");
    assert_one_error(&e, "tunnel_dev `up0` is no `external` vxlan", "t.yaml:13:");
    let twice = format!("{CIL}  - {{in: node}}\n");
    let e = match load_str("t.yaml", &twice, &vars()) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("namespace node has `bpf_maps` twice"), "{e}");
    assert!(e.contains("t.yaml:16:"), "{e}");
}

#[test]
fn bpf_maps_redirect_defaults_to_egress_and_takes_peer() {
    let lab = load_str("t.yaml", CIL, &vars()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lab.objects.bpf_maps[0].redirect, BpfRedirect::Egress);
    for (text, want) in [("egress", BpfRedirect::Egress), ("peer", BpfRedirect::Peer)] {
        let source = CIL.replacen(
            "tunnel_dev: cilium_vxlan",
            &format!("tunnel_dev: cilium_vxlan\n    redirect: {text}"),
            1,
        );
        let lab = load_str("t.yaml", &source, &vars()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lab.objects.bpf_maps[0].redirect, want, "{text}");
    }
}

#[test]
fn bpf_maps_redirect_is_egress_or_peer() {
    let e = cil_errors(
        "tunnel_dev: cilium_vxlan",
        "tunnel_dev: cilium_vxlan\n    redirect: sideways",
    );
    assert_one_error(&e, "unknown variant `sideways`", "t.yaml:14:15:");
    assert!(e[0].contains("egress") && e[0].contains("peer"), "{e:#?}");
    // A near miss is named.
    let e = cil_errors(
        "tunnel_dev: cilium_vxlan",
        "tunnel_dev: cilium_vxlan\n    redirect: peers",
    );
    assert_one_error(&e, "unknown variant `peers`", "t.yaml:14:");
    assert!(e[0].contains("did you mean `peer`?"), "{e:#?}");
}

#[test]
fn bpf_endpoints_are_checked() {
    let e = cil_errors("identity: 48312", "identity: 16777216");
    assert_one_error(&e, "identity 16777216 is no VNI", "t.yaml:14:");
    let e = cil_errors("identity: 48312", "identity: 0");
    assert_one_error(&e, "identity 0 is no VNI", "t.yaml:14:");
    let e = cil_errors("dev: lxc1, identity", "dev: lxc9, identity");
    assert_one_error(&e, "names device `lxc9`", "t.yaml:14:");
    let e = cil_errors("dev: lxc1, identity", "dev: cilium_vxlan, identity");
    assert_one_error(&e, "is no veth end of the `links`", "t.yaml:14:");
    let e = cil_errors("dev: lxc1, identity", "dev: up0, identity");
    assert_one_error(&e, "need a `mac` each", "t.yaml:14:");
    let e = cil_errors("address: 10.244.1.154", "address: 10.244.1");
    assert_one_error(&e, "invalid endpoint address", "t.yaml:14:");
    let e = cil_errors(
        "identity: 48312}]",
        "identity: 48312}, {address: 10.244.1.154, dev: lxc1, identity: 7}]",
    );
    assert_one_error(&e, "endpoint 10.244.1.154 is twice", "t.yaml:14:");
}

#[test]
fn bpf_tunnels_are_checked() {
    let e = cil_errors("prefix: 10.244.6.0/24", "prefix: 10.244.6.1/24");
    assert_one_error(&e, "has host bits set", "t.yaml:15:");
    let e = cil_errors("remote: 192.168.66.221", "remote: 192.168.66.221/24");
    assert_one_error(&e, "must be a plain ipv4 address", "t.yaml:15:");
}

// ---- kube-proxy mode, version, backends ---------------------------------

/// The problems of SERVICES with `from` replaced by `to`, one line each.
fn services_problems(from: &str, to: &str) -> Vec<String> {
    let source = SERVICES.replacen(from, to, 1);
    assert_ne!(source, SERVICES, "`{from}` is not in SERVICES");
    match services_lab(&source) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems()
            .iter()
            .map(|p| format!("{p} | help: {}", p.help.clone().unwrap_or_default()))
            .collect(),
    }
}

#[test]
fn kube_proxy_defaults_to_the_newest_ipvs() {
    let lab = services_lab(SERVICES).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lab.kube_proxy.mode, ProxyMode::Ipvs);
    assert_eq!(lab.kube_proxy.minor, 35);
    assert!(lab.uses_kube_ipvs());
    let lab = services_lab(&SERVICES.replacen("services:", "proxy: nftables\nservices:", 1))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lab.kube_proxy.mode, ProxyMode::Nftables);
    assert!(!lab.uses_kube_ipvs());
    // The SLB in front of the load balancer address is still IPVS.
    assert!(lab.uses_ipvs());
}

#[test]
fn kube_proxy_versions_are_checked() {
    let p = services_problems("services:", "kube_proxy: \"1.19\"\nservices:");
    assert!(p[0].contains("kube-proxy 1.19 is not modelled"), "{p:?}");
    let p = services_problems("services:", "kube_proxy: 1.2x\nservices:");
    assert!(p[0].contains("invalid kube-proxy version `1.2x`"), "{p:?}");
    let p = services_problems(
        "services:",
        "proxy: nftables\nkube_proxy: \"1.28\"\nservices:",
    );
    assert!(
        p[0].contains("kube-proxy 1.28 has no nftables mode"),
        "{p:?}"
    );
    assert!(
        services_problems(
            "services:",
            "proxy: nftables\nkube_proxy: \"1.29\"\nservices:"
        )
        .is_empty()
    );
    let p = services_problems(
        "    external_traffic_policy: Local\n",
        "    external_traffic_policy: Local\n    internal_traffic_policy: Local\n",
    );
    assert!(p.is_empty(), "{p:?}");
    let p = services_problems(
        "services:\n  - name: web\n    cluster_ip: 192.168.0.10\n",
        "kube_proxy: \"1.21\"\nservices:\n  - name: web\n    cluster_ip: 192.168.0.10\n    internal_traffic_policy: Local\n",
    );
    assert!(
        p[0].contains("internalTrafficPolicy Local needs kube-proxy 1.22"),
        "{p:?}"
    );
}

#[test]
fn clusterips_must_be_in_the_service_cidr() {
    let p = services_problems("services:", "service_cidr: 192.168.1.0/24\nservices:");
    assert!(
        p[0].contains("ClusterIP 192.168.0.10 is outside the service cidr 192.168.1.0/24"),
        "{p:?}"
    );
    assert!(services_problems("services:", "service_cidr: 192.168.0.0/16\nservices:").is_empty());
}

#[test]
fn backend_must_be_an_endpoint_of_the_service_addressed() {
    // c is no endpoint of web.
    let p = services_problems("    backend: a\n", "    backend: c\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("backend c is not an endpoint of service web"),
        "{p:?}"
    );
    assert!(p[0].contains("web: a"), "the scenario removed b: {p:?}");
    // b is, but the scenario's change removes it.
    let p = services_problems("    backend: a\n", "    backend: b\n");
    assert!(
        p[0].contains("backend b is not an endpoint of service web"),
        "{p:?}"
    );
    // Not a service address at all.
    let p = services_problems("    to: 8.8.8.10:80\n", "    to: 172.16.1.10:80\n");
    assert!(
        p[0].contains("172.16.1.10:80 is no service's address and port"),
        "{p:?}"
    );
    // By node port on a node's address.
    assert!(services_problems("    to: 8.8.8.10:80\n", "    to: 10.0.0.2:30080\n").is_empty());
}

#[test]
fn nftables_expectations_name_each_namespace_once() {
    let scenario = |nft: &str| {
        format!(
            "{LOW}scenarios:\n  - name: s\n    from: a\n    to: 192.0.2.9\n    protocol: icmp\n    \
             expect:\n      nftables: {nft}\n"
        )
    };
    let lab = load_str("t.yaml", &scenario("[{in: b, empty: true}]"), &vars())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lab.scenarios[0].expect.nftables,
        vec![NftExpect {
            entity: "b".into(),
            empty: true
        }]
    );
    // Line 26 is `nftables:`, the first `in` names column 23.
    let e = load_str("t.yaml", &scenario("[{in: c, empty: true}]"), &vars()).unwrap_err();
    let p: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].starts_with("t.yaml:26:23: unknown namespace, node, pod or client `c`"),
        "{p:#?}"
    );
    let e = load_str(
        "t.yaml",
        &scenario("[{in: b, empty: true}, {in: b, empty: false}]"),
        &vars(),
    )
    .unwrap_err();
    let p: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
    assert!(
        p.len() == 1 && p[0].starts_with("t.yaml:26:45: the ruleset of `b` is expected twice"),
        "{p:#?}"
    );
    // `empty` is required.
    assert!(load_str("t.yaml", &scenario("[{in: b}]"), &vars()).is_err());
}

// ---- session affinity, load balancer source ranges ----------------------

#[test]
fn session_affinity_defaults_to_three_hours() {
    let src = SERVICES.replacen(
        "    selector: { app: web }\n",
        "    selector: { app: web }\n    session_affinity: ClientIP\n",
        1,
    );
    let lab = services_lab(&src).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lab.services[0].session_affinity, Some(10800));
    let lab = services_lab(SERVICES).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lab.services[0].session_affinity, None);
    let src = SERVICES.replacen(
        "    selector: { app: web }\n",
        "    selector: { app: web }\n    session_affinity: ClientIP\n    session_affinity_timeout_seconds: 600\n",
        1,
    );
    let lab = services_lab(&src).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lab.services[0].session_affinity, Some(600));
}

#[test]
fn session_affinity_timeouts_are_checked() {
    for (timeout, col) in [("0", 39), ("86401", 39)] {
        let src = SERVICES.replacen(
            "    selector: { app: web }\n",
            &format!(
                "    selector: {{ app: web }}\n    session_affinity: ClientIP\n    session_affinity_timeout_seconds: {timeout}\n"
            ),
            1,
        );
        let e = services_lab(&src).expect_err("should fail");
        assert_eq!(
            e.to_string(),
            format!(
                "t.yaml:19:{col}: service web: session affinity timeout {timeout} is outside 1-86400"
            )
        );
        assert!(
            e.problems()[0]
                .help
                .as_ref()
                .unwrap()
                .contains("the default is 10800")
        );
    }
    let p = services_problems(
        "    selector: { app: web }\n",
        "    selector: { app: web }\n    session_affinity: None\n    session_affinity_timeout_seconds: 60\n",
    );
    assert!(
        p[0].contains("t.yaml:19:39: service web: a session affinity timeout without"),
        "{p:?}"
    );
}

#[test]
fn load_balancer_source_ranges_are_checked() {
    let ranges = |r: &str| {
        SERVICES.replacen(
            "    selector: { app: web }\n",
            &format!("    selector: {{ app: web }}\n    load_balancer_source_ranges: [{r}]\n"),
            1,
        )
    };
    let lab =
        services_lab(&ranges("10.0.0.0/24, 203.0.113.0/25")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lab.services[0]
            .load_balancer_source_ranges
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
        ["10.0.0.0/24", "203.0.113.0/25"]
    );
    let e = services_lab(&ranges("10.0.0.0/24, 203.0.113.0")).expect_err("should fail");
    assert_eq!(
        e.to_string(),
        "t.yaml:18:48: invalid load balancer source range `203.0.113.0`"
    );
    let e = services_lab(&ranges("10.0.0.0/33")).expect_err("should fail");
    assert!(
        e.to_string()
            .starts_with("t.yaml:18:35: invalid load balancer source range"),
        "{e}"
    );
    // Not a LoadBalancer service.
    let src = ranges("10.0.0.0/24").replacen("    load_balancer_ip: 8.8.8.10\n", "", 1);
    let e = services_lab(&src).expect_err("should fail");
    assert_eq!(
        e.to_string(),
        "t.yaml:17:35: service web: load balancer source ranges without a load balancer ip"
    );
}

// ---- the CNI keys lowered to the low-level layer -----------------------

/// `(namespace, name, kind)` of each lowered link, in list order.
fn lowered_links(lab: &Lab) -> Vec<(String, String, &'static str)> {
    lab.lowered()
        .links
        .iter()
        .map(|l| (l.netns.clone(), l.name.clone(), l.kind.as_str()))
        .collect()
}

#[test]
fn bridge_pods_lower_to_veths_on_the_node_bridge_in_kernel_order() {
    let lab = load_base(BASE).unwrap_or_else(|e| panic!("{e}"));
    let o = lab.lowered();
    let names: Vec<String> = lowered_links(&lab)
        .into_iter()
        .map(|(ns, name, kind)| format!("{ns}/{name} {kind}"))
        .collect();
    let pod_a = match &lab.pods[0].attachment {
        Attachment::Bridge { host_ifname } => host_ifname.clone(),
        a => panic!("{a:?}"),
    };
    // vSwitches, then per node its ENI (made from the VPC's side) and pod
    // bridge, then pods, then clients: the order the kernel numbers them.
    assert_eq!(
        names[..4],
        [
            "vpc/vsw-a bridge",
            "vpc/vsw-b bridge",
            format!("vpc/{} veth", lab.nodes[0].interfaces[0].vpc_port).as_str(),
            "node-1/cni0 bridge"
        ]
    );
    assert_eq!(names[6], format!("node-1/{pod_a} veth"));
    assert_eq!(names.len(), 9, "{names:#?}");
    let eni = &o.links[2];
    assert_eq!(eni.master.as_deref(), Some("vsw-a"));
    let LinkKind::Veth { peer } = &eni.kind else {
        panic!("{eni:?}")
    };
    assert_eq!(
        (peer.netns.as_str(), peer.name.as_str()),
        ("node-1", "eth0")
    );
    let pod = &o.links[6];
    assert_eq!(pod.master.as_deref(), Some("cni0"));
    // Flannel's CNI configuration default.
    assert_eq!(pod.port.as_ref().and_then(|p| p.hairpin), Some(true));
    // The pod's address and default route, the VPC's route to node-1.
    assert!(o.addresses.iter().any(|a| a.netns == "pod-a"
        && a.dev == "eth0"
        && a.address.to_string() == "172.23.96.10/26"
        && !a.scope_host));
    assert!(o.routes.iter().any(|r| r.netns == "vpc"
        && r.destination.to_string() == "172.23.96.0/26"
        && r.dev.as_deref() == Some("vsw-a")
        && r.is_plain()));
    assert!(
        o.sysctls
            .iter()
            .any(|s| s.netns == "vpc" && s.key == "net.ipv4.ip_forward")
    );
    // The user's own objects are not in it.
    assert!(lab.objects.is_empty());

    let hairpin = BASE.replace(
        "    pod_cidr: 172.23.96.0/26\n",
        "    pod_cidr: 172.23.96.0/26\n    hairpin_mode: true\n",
    );
    let lab = load_base(&hairpin).unwrap_or_else(|e| panic!("{e}"));
    let o = lab.lowered();
    let port = o.links[6].port.as_ref().expect("hairpin port");
    assert_eq!(port.hairpin, Some(true));
}

#[test]
fn ipvlan_pods_lower_as_terway_sets_them_up() {
    let lab = load_str("t.yaml", IPVLAN, &vars()).unwrap_or_else(|e| panic!("{e}"));
    let o = lab.lowered();
    let Attachment::Ipvlan { host_slave, .. } = &lab.pods[0].attachment else {
        panic!("{:?}", lab.pods[0].attachment)
    };
    let slave = o
        .links
        .iter()
        .find(|l| l.netns == "node-15" && &l.name == host_slave)
        .expect("the node's own slave");
    assert!(!slave.arp, "ipvl_N has no ARP");
    let pod = o
        .links
        .iter()
        .find(|l| l.netns == "nginx")
        .expect("the pod's ipvlan");
    let LinkKind::Ipvlan(i) = &pod.kind else {
        panic!("{pod:?}")
    };
    // Made in the node off its ENI, living in the pod.
    assert_eq!(
        (i.parent_netns.as_str(), i.parent.as_str()),
        ("node-15", "eth1")
    );
    assert_eq!(i.mode, IpvlanMode::L2);
    assert_eq!(pod.made_in(), "node-15");
    // The node's address on its slave, scope host; the pod's entry for it
    // with the pod device's own MAC; the node's /32 route to the pod.
    let own = o.addresses.iter().find(|a| &a.dev == host_slave).unwrap();
    assert!(own.scope_host);
    assert_eq!(own.address.to_string(), "10.0.3.15/32");
    let n = &o.neighbours[0];
    assert_eq!((n.netns.as_str(), n.lladdr), ("nginx", None));
    assert_eq!(n.address.to_string(), "10.0.3.15");
    assert!(o.routes.iter().any(|r| r.netns == "node-15"
        && r.destination.to_string() == "10.0.3.38/32"
        && r.dev.as_ref() == Some(host_slave)));
    // A second pod on the same ENI shares the node's slave.
    let two = IPVLAN.replace(
        "services:",
        "  - { name: nginx2, node: node-15, attachment: ipvlan, interface: eth1, address: 10.0.3.39 }\nservices:",
    );
    let lab = load_str("t.yaml", &two, &vars()).unwrap_or_else(|e| panic!("{e}"));
    let slaves = lab
        .lowered()
        .links
        .iter()
        .filter(|l| l.netns == "node-15" && &l.name == host_slave)
        .count();
    assert_eq!(slaves, 1);
}

#[test]
fn services_and_ebpf_lower_to_objects_of_the_namespaces() {
    let src = IPVLAN
        .replace(
            "endpoints: [nginx] }",
            "endpoints: [nginx], load_balancer_ip: 47.243.139.183 }",
        )
        .replace("services:", "ebpf: {}\nservices:");
    let lab = load_str("t.yaml", &src, &vars()).unwrap_or_else(|e| panic!("{e}"));
    let o = lab.lowered();
    // kube-ipvs0 is the node's last link (made after its ENIs), holding
    // every service address.
    let node_links: Vec<&str> = o
        .links
        .iter()
        .flat_map(|l| match &l.kind {
            LinkKind::Veth { peer } => vec![
                (l.netns.as_str(), l.name.as_str()),
                (peer.netns.as_str(), peer.name.as_str()),
            ],
            _ => vec![(l.netns.as_str(), l.name.as_str())],
        })
        .filter(|(ns, _)| *ns == "node-15")
        .map(|(_, name)| name)
        .collect();
    assert_eq!(node_links.last(), Some(&KUBE_IPVS), "{node_links:?}");
    let dummy = o.links.iter().find(|l| l.name == KUBE_IPVS).unwrap();
    assert_eq!(dummy.kind, LinkKind::Dummy);
    let on = |ns: &str, dev: &str| -> Vec<String> {
        o.addresses
            .iter()
            .filter(|a| a.netns == ns && a.dev == dev)
            .map(|a| a.address.to_string())
            .collect()
    };
    assert_eq!(
        on("node-15", KUBE_IPVS),
        ["192.168.27.242/32", "47.243.139.183/32"]
    );
    // The SLB answers the LoadBalancer address on the VPC router's lo.
    assert_eq!(on("vpc", "lo"), ["47.243.139.183/32"]);
    // The load balancer's programs on the pod's interface, each on its hook.
    let filters: Vec<(&str, &str, TcHook, &TcAction)> =
        o.tc.iter()
            .map(|t| (t.netns.as_str(), t.dev.as_str(), t.hook, &t.action))
            .collect();
    let bpf = |p: &str| TcAction::Bpf { program: p.into() };
    assert_eq!(
        filters,
        [
            ("nginx", "eth0", TcHook::Egress, &bpf("lb_egress")),
            ("nginx", "eth0", TcHook::Ingress, &bpf("lb_ingress")),
        ]
    );
    // What a scenario may send from: the lowered addresses but the ipvlan
    // slave's scope-host one, in the order the plan adds them.
    let held = |e: &str| -> Vec<String> {
        lab.addresses_of(e)
            .unwrap()
            .iter()
            .map(|(d, a)| format!("{d} {a}"))
            .collect()
    };
    assert_eq!(
        held("node-15"),
        [
            "lo 127.0.0.1/8",
            "eth0 10.0.3.15/24",
            "kube-ipvs0 192.168.27.242/32",
            "kube-ipvs0 47.243.139.183/32"
        ]
    );
    assert_eq!(
        held("vpc"),
        [
            "lo 127.0.0.1/8",
            "vsw 10.0.3.253/24",
            "lo 47.243.139.183/32"
        ]
    );
    assert_eq!(held("nginx"), ["lo 127.0.0.1/8", "eth0 10.0.3.38/24"]);
    assert_eq!(lab.addresses_of("nobody"), None);
    // Without services or ebpf, none of it.
    let plain = IPVLAN[..IPVLAN.find("services:").unwrap()].to_string();
    let lab = load_str("t.yaml", &plain, &vars()).unwrap_or_else(|e| panic!("{e}"));
    let o = lab.lowered();
    assert!(o.links.iter().all(|l| l.name != KUBE_IPVS));
    assert!(o.tc.is_empty());
}

#[test]
fn layer_keys_for_what_the_cni_keys_need() {
    let source = "\
name: lab
namespaces:
  - { name: a }
  - { name: b }
links:
  - bridge: { name: br0, in: a }
  - veth: { name: p0, in: a, master: br0, port: { hairpin: true }, peer: { name: eth0, in: b } }
  - ipvlan: { name: ipvl_0, in: a, parent: br0, arp: false }
addresses:
  - { in: b, dev: eth0, address: 192.0.2.2/32, scope: host }
neighbours:
  - { in: b, dev: eth0, address: 192.0.2.1, lladdr: self }
";
    let lab = load_base(source).unwrap_or_else(|e| panic!("{e}"));
    let o = &lab.objects;
    assert_eq!(o.links[1].port.as_ref().unwrap().hairpin, Some(true));
    assert!(o.links[1].arp && !o.links[2].arp);
    assert!(o.addresses[0].scope_host);
    assert_eq!(o.neighbours[0].lladdr, None);
    // A self entry is permanent: the kernel's own MAC never ages.
    let e = load_base(&source.replace("lladdr: self }", "lladdr: self, state: reachable }"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("t.yaml:12:"), "{e}");
    assert!(e.contains("`lladdr: self` is always permanent"), "{e}");
    let e = load_base(&source.replace("scope: host", "scope: link"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("t.yaml:10:") && e.contains("unknown variant `link`"),
        "{e}"
    );
}

/// The one rule for a netem delay or jitter, the topology's and `labctl
/// netem`'s: a time with its unit, at most a minute.
#[test]
fn netem_durations_are_times_of_at_most_a_minute() {
    assert_eq!(parse_netem_duration("60s"), Ok(60_000_000_000));
    assert_eq!(parse_netem_duration("1.5ms"), Ok(1_500_000));
    assert_eq!(
        parse_netem_duration("60.001s"),
        Err("`60.001s` is more than a minute".to_string())
    );
    assert!(
        parse_netem_duration("5")
            .unwrap_err()
            .contains("has no unit")
    );
}
