//! Plans and the executor, without root: the Flannel plan as a snapshot, its
//! invariants, and the executor's ordering and failure handling against the
//! recording fake kernel.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use labctl::engine::{Quiet, execute};
use labctl::kernel::{Recorder, addr, bridge, ebpf, link, tc, veth, vxlan};
use labctl::plan::{Action, Phase, Plan, plan};

fn flannel() -> labctl::Lab {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topologies/flannel.yaml");
    labctl_topology::load(&path, &BTreeMap::new()).expect("flannel.yaml loads")
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn flannel_plan_snapshot() {
    let p = plan(&flannel());
    insta::assert_snapshot!("flannel_plan", p.to_script());
}

/// Flannel's VXLAN backend: flannel.1 on every node and flanneld's
/// route, neighbour and FDB entries per other node; no VPC pod routes.
#[test]
fn flannel_vxlan_plan_snapshot() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topologies/flannel.yaml");
    let vars = BTreeMap::from([("backend".to_string(), "vxlan".to_string())]);
    let lab = labctl_topology::load(&path, &vars).expect("flannel.yaml loads");
    let script = plan(&lab).to_script();
    assert!(!script.contains("route add 172.23.96.128/26 via 10.0.1.206"));
    insta::assert_snapshot!("flannel_vxlan_plan", script);
}

/// Every shipped topology but flannel's (above) and the generated scale
/// lab, as its `labctl plan -o script`.
#[test]
fn every_topology_plan_snapshot() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topologies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        if stem == "flannel" || stem == "scale" {
            continue;
        }
        let lab = labctl_topology::load(&file, &BTreeMap::new())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // The eBPF objects' paths are the build's (its OUT_DIR).
        let script = plan(&lab)
            .to_script()
            .replace(labctl_lb::ROUTE_OBJECT_PATH, "[labctl-route object]")
            .replace(labctl_lb::OBJECT_PATH, "[labctl-lb object]");
        insta::assert_snapshot!(format!("{stem}_plan"), script);
    }
}

/// Every ifindex of the vxlan-redirect lab is unique in its namespace,
/// a moved vxlan's in both the namespace that makes it and the one it
/// lands in, and every reference to a device finds it (no index 0).
#[test]
fn low_level_references_find_their_devices() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topologies/vxlan-redirect.yaml");
    let p = plan(&labctl_topology::load(&path, &BTreeMap::new()).unwrap());
    let mut seen: HashMap<&str, HashSet<u32>> = HashMap::new();
    for s in &p.steps {
        if let Action::AddVxlan(vxlan::AddVxlan { ifindex, netns, .. }) = &s.action {
            assert!(seen.entry(&s.netns).or_default().insert(*ifindex), "{s}");
            if let Some(n) = netns {
                assert!(seen.entry(n).or_default().insert(*ifindex), "{s}");
            }
        }
        let json = serde_json::to_value(s).unwrap();
        let text = json.to_string();
        assert!(
            !text.contains("\"ifindex\":0"),
            "{s}: a reference found no device"
        );
    }
    let text = p.to_script();
    assert!(text.contains("master br-int"), "{text}");
    assert!(
        text.contains("action mirred egress redirect dev vxlan1"),
        "{text}"
    );
    assert!(text.contains("fdb replace 0a:58:0a:84:02:2e dev 8b7266486ea2861 master static"));
}

#[test]
fn ifindexes_are_unique_and_controllers_exist_first() {
    let p = plan(&flannel());
    let mut seen: HashMap<&str, HashSet<u32>> = HashMap::new();
    let mut bridges: HashMap<(&str, u32), Phase> = HashMap::new();
    for s in &p.steps {
        match &s.action {
            Action::AddBridge(bridge::AddBridge { ifindex, .. }) => {
                assert!(seen.entry(&s.netns).or_default().insert(*ifindex), "{s}");
                bridges.insert((&s.netns, *ifindex), s.phase);
            }
            Action::AddVeth(veth::AddVeth {
                ifindex,
                peer_netns,
                peer_ifindex,
                controller,
                ..
            }) => {
                assert!(seen.entry(&s.netns).or_default().insert(*ifindex), "{s}");
                assert!(
                    seen.entry(peer_netns).or_default().insert(*peer_ifindex),
                    "{s}"
                );
                if let Some(c) = controller {
                    let phase = bridges
                        .get(&(s.netns.as_str(), c.ifindex))
                        .unwrap_or_else(|| panic!("{s}: controller not created in its namespace"));
                    assert!(
                        *phase < s.phase,
                        "{s}: controller created in the same phase"
                    );
                }
            }
            _ => {}
        }
        assert!(
            p.namespaces.iter().any(|n| n.name == s.netns),
            "{s}: namespace not in the plan"
        );
    }
    // 1 is lo everywhere.
    assert!(seen.values().all(|s| !s.contains(&1)));
}

#[test]
fn phases_are_in_order() {
    let p = plan(&flannel());
    let phases: Vec<Phase> = p.steps.iter().map(|s| s.phase).collect();
    let mut sorted = phases.clone();
    sorted.sort();
    assert_eq!(phases, sorted);
}

fn run(p: &Plan, fail_on: Option<&str>) -> (Result<(), usize>, Vec<String>) {
    let mut k = Recorder {
        fail_on: fail_on.map(String::from),
        ..Default::default()
    };
    let r = block_on(execute(p, &mut k, &Quiet)).map_err(|e| e.len());
    (r, k.log.into_inner())
}

#[test]
fn executor_runs_every_step_namespaces_first() {
    let p = plan(&flannel());
    let (r, log) = run(&p, None);
    assert_eq!(r, Ok(()));
    assert_eq!(log.len(), p.namespaces.len() + p.steps.len());
    assert!(
        log[..p.namespaces.len()]
            .iter()
            .all(|l| l.starts_with("ip netns add"))
    );
    // Every route comes after every address.
    let last_addr = log.iter().rposition(|l| l.contains(" addr add ")).unwrap();
    let first_route = log.iter().position(|l| l.contains(" route add ")).unwrap();
    assert!(last_addr < first_route);
}

#[test]
fn executor_stops_after_a_failing_phase_and_reports_it() {
    let p = plan(&flannel());
    let (r, log) = run(&p, Some("addr add 172.23.96.23/26"));
    assert_eq!(r, Err(1), "one failure reported");
    assert!(
        !log.iter().any(|l| l.contains(" route add ")),
        "no route may be added after a failed address phase"
    );
    // The rest of the failing phase still ran: errors are reported together.
    assert!(log.iter().any(|l| l.contains("addr add 172.23.96.24/26")));
}

#[test]
fn script_creates_every_namespace() {
    let p = plan(&flannel());
    let script = p.to_script();
    for ns in &p.namespaces {
        let line = format!("ip netns add {}", ns.name);
        assert!(script.lines().any(|l| l == line), "no line {line:?}");
    }
    assert_eq!(p.namespaces.len(), 10);
    assert!(p.namespaces.iter().all(|n| n.name.starts_with("flannel-")));
}

/// A lab with vxlan links needs the kernel's vxlan: where the host lacks
/// it, the lab goes to the VM like any other missing feature.
#[test]
fn vxlan_links_require_the_vxlan_feature() {
    use labctl::features::{Feature, required};
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topologies/vxlan-redirect.yaml");
    let lab = labctl_topology::load(&path, &BTreeMap::new()).unwrap();
    assert!(required(&lab).contains(&Feature::Vxlan));
    assert!(!required(&flannel()).contains(&Feature::Vxlan));
}

fn terway(vars: &[(&str, &str)]) -> labctl::Lab {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topologies/terway-ipvlan-ebpf.yaml");
    let vars: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labctl_topology::load(&path, &vars).expect("terway-ipvlan-ebpf.yaml loads")
}

/// The eBPF load balancer is part of the plan: loaded once, then on every
/// pod's eth0 after its clsact qdisc, then the maps; the fake kernel is
/// sent the pins and the map contents the real one would get.
#[test]
fn ebpf_load_attach_and_maps_go_through_the_executor() {
    let lab = terway(&[]);
    let p = plan(&lab);
    let mut k = Recorder::default();
    block_on(execute(&p, &mut k, &Quiet)).expect("fake kernel accepts the plan");
    let sent = k.sent.into_inner();
    assert_eq!(sent.len(), p.steps.len());
    let pin_dir = labctl::lb::pin_dir(&lab.name).display().to_string();
    let pos = |f: &dyn Fn(&Action) -> bool| sent.iter().position(|s| f(&s.action));
    let load = pos(&|a| matches!(a, Action::BpfLoad { .. })).expect("a load step");
    assert_eq!(
        sent.iter()
            .filter(|s| matches!(s.action, Action::BpfLoad { .. }))
            .count(),
        1,
        "the programs are loaded once per lab"
    );
    match &sent[load].action {
        Action::BpfLoad(ebpf::BpfLoad { object, pin_dir: d }) => {
            assert_eq!(object, labctl_lb::OBJECT_PATH);
            assert_eq!(d, &pin_dir);
        }
        _ => unreachable!(),
    }
    for pod in &lab.pods {
        let ns = lab.netns(&pod.name);
        let clsact = sent
            .iter()
            .position(|s| s.netns == ns && matches!(s.action, Action::Clsact(tc::Clsact { .. })))
            .unwrap_or_else(|| panic!("no clsact in {ns}"));
        let attaches: Vec<usize> = sent
            .iter()
            .enumerate()
            .filter(|(_, s)| s.netns == ns && matches!(s.action, Action::BpfAttach { .. }))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(attaches.len(), 2, "egress and ingress in {ns}");
        for i in attaches {
            assert!(i > clsact && i > load, "{}", sent[i]);
            let Action::BpfAttach(ebpf::BpfAttach {
                ifname,
                ifindex,
                program,
                pin,
                ..
            }) = &sent[i].action
            else {
                unreachable!()
            };
            assert_eq!(ifname, &pod.ifname);
            assert_eq!(pin, &format!("{pin_dir}/{program}"));
            // The index the plan gave the pod's interface.
            let addr = p
                .steps
                .iter()
                .find_map(|s| match &s.action {
                    Action::AddAddress(addr::AddAddress {
                        ifindex: x,
                        address,
                        ..
                    }) if s.netns == ns && *address == pod.address => Some(*x),
                    _ => None,
                })
                .unwrap();
            assert_eq!(*ifindex, addr);
        }
    }
    let maps = pos(&|a| matches!(a, Action::BpfMaps { .. })).expect("a maps step");
    assert!(maps > load);
    let Action::BpfMaps(ebpf::BpfMaps { services, .. }) = &sent[maps].action else {
        unreachable!()
    };
    // Terway 1.2.0: the ClusterIP and, in-cluster, the SLB address, both
    // to nginx's address and port, no pinned backend.
    let frontends: Vec<String> = services.iter().map(|s| s.frontend().to_string()).collect();
    assert_eq!(
        frontends,
        ["192.168.27.242:80/TCP", "47.243.139.183:80/TCP"]
    );
    assert!(
        services
            .iter()
            .all(|s| s.backends == ["10.0.3.38:80".parse().unwrap()] && s.pinned.is_none())
    );
    // Before Terway 1.2.0 only the ClusterIP.
    let old = plan(&terway(&[("terway", "1.1.0")]));
    let n = old
        .steps
        .iter()
        .find_map(|s| match &s.action {
            Action::BpfMaps(ebpf::BpfMaps { services, .. }) => Some(services.len()),
            _ => None,
        })
        .unwrap();
    assert_eq!(n, 1);
}

/// A scenario's overrides become one maps step for the executor, with the
/// pinned backend; the script's lines for it are the maps' bytes.
#[test]
fn scenario_overrides_program_the_maps_as_a_step() {
    let lab = terway(&[]);
    let o = labctl::services::Overrides {
        backend: Some("nginx-j7dqz".into()),
        in_cluster_external: Some(false),
        ..Default::default()
    };
    let step = labctl::plan::ebpf::map_step(&lab, &o, Phase::Changes).expect("an ebpf lab");
    let Action::BpfMaps(ebpf::BpfMaps { services, .. }) = &step.action else {
        panic!("{step:?}")
    };
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].pinned, Some(0));
    let text = step.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("bpftool map update pinned /run/labctl/bpf/labctl/terway/LB_BACKENDS key hex c0 a8 1b f2 00 50 06 00"), "{text}");
    assert!(
        lines[1].ends_with("value hex 01 00 00 00 00 00 00 00"),
        "pinned to slot 0: {text}"
    );
    // A lab without `ebpf:` has no such step.
    assert!(labctl::plan::ebpf::map_step(&flannel(), &o, Phase::Changes).is_none());
}

fn bond_vlan() -> labctl::Lab {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topologies/bond-vlan.yaml");
    labctl_topology::load(&path, &BTreeMap::new()).expect("bond-vlan.yaml loads")
}

/// The bond-vlan lab needs what this host's kernel lacks (so it goes to
/// the VM), and its plan orders what the kernel requires: a slave joins
/// its bond after both exist and before it is brought up again, a port's
/// vlans come after it joined the bridge, a vlan after its parent bond.
#[test]
fn bond_vlan_plan_is_ordered_as_the_kernel_requires() {
    use labctl::features::{Feature, required};
    let lab = bond_vlan();
    let need = required(&lab);
    for f in [Feature::Bond, Feature::Vlan, Feature::BridgeVlanFiltering] {
        assert!(need.contains(&f), "{f}: {need:?}");
    }
    assert!(!need.contains(&Feature::Vxlan));
    let p = plan(&lab);
    let phase_of = |pred: &dyn Fn(&Action) -> bool| {
        let s = p.steps.iter().find(|s| pred(&s.action));
        s.unwrap_or_else(|| panic!("no such step in {:#?}", p.steps))
            .phase
    };
    let bond = phase_of(&|a| matches!(a, Action::AddBond(_)));
    let veth =
        phase_of(&|a| matches!(a, Action::AddVeth(veth::AddVeth { name, .. }) if name == "eth1"));
    let enslave = phase_of(&|a| matches!(a, Action::Enslave(e) if e.ifname == "eth1"));
    let vlan = phase_of(&|a| matches!(a, Action::AddVlan(v) if v.id == 200));
    let master = phase_of(
        &|a| matches!(a, Action::SetMaster(link::SetMaster { ifname, .. }) if ifname == "swp3"),
    );
    let port_vlan = phase_of(&|a| matches!(a, Action::BridgeVlan(v) if v.ifname == "swp3"));
    assert!(
        bond < veth && veth < enslave,
        "{bond:?} {veth:?} {enslave:?}"
    );
    assert!(bond < vlan);
    assert!(master < port_vlan);
    // A slave is never made with its bond as controller (it would be up).
    assert!(!p.steps.iter().any(|s| matches!(
        &s.action,
        Action::AddVeth(veth::AddVeth { controller: Some(c), .. }) if c.name == "bond0"
    )));
    // The commands, one a step (the script batches some of them).
    let script = p.to_commands();
    for line in [
        "ip -n bond-vlan-server link add bond0 index 2 address 02:00:00:00:00:10 type bond mode active-backup miimon 100",
        "ip -n bond-vlan-server link set eth0 down && ip -n bond-vlan-server link set eth0 master bond0 && ip -n bond-vlan-server link set eth0 up",
        "ip -n bond-vlan-server link add link bond0 name bond0.100 index 5 type vlan id 100",
        "type bridge mcast_snooping 0 vlan_filtering 1 vlan_default_pvid 0",
        "bridge -n bond-vlan-tor vlan add vid 100 dev swp3 pvid untagged",
        "ip -n bond-vlan-b route add default via 10.200.0.1 proto static",
        "ip netns exec bond-vlan-server sysctl -qw net.ipv4.ip_forward=1",
    ] {
        assert!(script.contains(line), "no `{line}` in\n{script}");
    }
}
