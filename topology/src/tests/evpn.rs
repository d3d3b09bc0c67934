//! `evpn` and `evpn_move`: the controller's entries, its step after a
//! drift, and every mistake located.

use std::net::Ipv4Addr;

use super::*;

/// Three leaves of VNI 42, a pod under leaf a, one under leaf b.
const EVPN: &str = "\
name: evpn
namespaces:
  - name: a
  - name: b
  - name: c
links:
  - bridge: {name: br0, in: a}
  - vxlan: {name: vx0, in: a, id: 42, local: 192.0.2.1, master: br0}
  - bridge: {name: br0, in: b}
  - vxlan: {name: vx0, in: b, id: 42, local: 192.0.2.2, master: br0}
  - bridge: {name: br0, in: c}
  - vxlan: {name: vx0, in: c, id: 42, local: 192.0.2.3, master: br0}
evpn:
  vni: 42
  leaves: [a, b, c]
  pods:
    - {name: web, leaf: a, address: 10.0.0.10, mac: 02:00:00:00:00:0a}
    - {name: client, leaf: b, address: 10.0.0.20, mac: 02:00:00:00:00:14}
scenarios:
  - name: drift
    from: c
    to: 10.0.0.10
    protocol: icmp
    changes:
      - evpn_move: {pod: web, to: c}
    expect: {result: connected}
";

fn evpn_errors(from: &str, to: &str) -> Vec<String> {
    let source = EVPN.replacen(from, to, 1);
    assert_ne!(source, EVPN, "`{from}` is not in EVPN");
    match load_str("t.yaml", &source, &vars()) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems()
            .iter()
            .map(|p| format!("{p} [help: {}]", p.help.clone().unwrap_or_default()))
            .collect(),
    }
}

fn mac(last: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, last]
}

fn fdb(netns: &str, last: u8, dst: Option<[u8; 4]>) -> Fdb {
    Fdb {
        netns: netns.into(),
        dev: "vx0".into(),
        lladdr: mac(last),
        dst: dst.map(Ipv4Addr::from),
        master: dst.is_none(),
    }
}

/// web's FDB change on a leaf.
fn web_fdb(entity: &str, dst: Option<[u8; 4]>, delete: bool) -> ObjectChange {
    ObjectChange::Fdb {
        entity: entity.into(),
        dev: "vx0".into(),
        lladdr: mac(0x0a),
        dst: dst.map(Ipv4Addr::from),
        master: dst.is_none(),
        delete,
    }
}

/// web's neighbour change on a leaf.
fn web_neighbour(entity: &str, lladdr: Option<[u8; 6]>) -> ObjectChange {
    ObjectChange::Neighbour {
        entity: entity.into(),
        dev: "br0".into(),
        address: Ipv4Addr::new(10, 0, 0, 10),
        lladdr,
        state: NeighState::Permanent,
    }
}

#[test]
fn every_leaf_gets_the_remote_pods_entries() {
    let lab = load_str("t.yaml", EVPN, &vars()).unwrap_or_else(|e| panic!("{e}"));
    let o = &lab.objects;
    assert_eq!(
        o.fdb,
        vec![
            // a: client, behind b.
            fdb("a", 0x14, None),
            fdb("a", 0x14, Some([192, 0, 2, 2])),
            // b: web, behind a.
            fdb("b", 0x0a, None),
            fdb("b", 0x0a, Some([192, 0, 2, 1])),
            // c: both.
            fdb("c", 0x0a, None),
            fdb("c", 0x0a, Some([192, 0, 2, 1])),
            fdb("c", 0x14, None),
            fdb("c", 0x14, Some([192, 0, 2, 2])),
        ]
    );
    let neigh: Vec<(&str, &str, String)> = o
        .neighbours
        .iter()
        .map(|n| (n.netns.as_str(), n.dev.as_str(), n.address.to_string()))
        .collect();
    assert_eq!(
        neigh,
        vec![
            ("a", "br0", "10.0.0.20".to_string()),
            ("b", "br0", "10.0.0.10".to_string()),
            ("c", "br0", "10.0.0.10".to_string()),
            ("c", "br0", "10.0.0.20".to_string()),
        ]
    );
    assert!(
        o.neighbours
            .iter()
            .all(|n| n.state == NeighState::Permanent)
    );
    // EVPN's settings on every vxlan device.
    for l in o.links.iter().filter(|l| l.name == "vx0") {
        let LinkKind::Vxlan(x) = &l.kind else {
            panic!("{l:?}")
        };
        assert!(!x.learning, "{l:?}");
        let port = l.port.as_ref().expect("port options");
        assert_eq!(port.learning, Some(false));
        assert_eq!(port.neigh_suppress, Some(true));
    }
}

#[test]
fn evpn_move_is_the_controllers_step() {
    let lab = load_str("t.yaml", EVPN, &vars()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lab.scenarios[0].object_changes,
        vec![
            // The new leaf forgets web as remote ...
            web_fdb("c", None, true),
            web_fdb("c", Some([192, 0, 2, 1]), true),
            web_neighbour("c", None),
            // ... the old one has it behind c ...
            web_fdb("a", None, false),
            web_fdb("a", Some([192, 0, 2, 3]), false),
            web_neighbour("a", Some(mac(0x0a))),
            // ... and b sends it to c.
            web_fdb("b", Some([192, 0, 2, 3]), false),
        ]
    );
    // A second move starts where the first left the pod; the lab's own
    // entries stay as they are.
    let source = EVPN.replace(
        "      - evpn_move: {pod: web, to: c}\n",
        "      - evpn_move: {pod: web, to: c}\n      - evpn_move: {pod: web, to: b}\n",
    );
    let moved = load_str("t.yaml", &source, &vars()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(moved.objects, lab.objects);
    assert_eq!(
        moved.scenarios[0].object_changes[7..],
        [
            web_fdb("b", None, true),
            web_fdb("b", Some([192, 0, 2, 3]), true),
            web_neighbour("b", None),
            web_fdb("c", None, false),
            web_fdb("c", Some([192, 0, 2, 2]), false),
            web_neighbour("c", Some(mac(0x0a))),
            web_fdb("a", Some([192, 0, 2, 2]), false),
        ]
    );
    // Back to where it was is a move too, not the same leaf.
    let source = EVPN.replace(
        "      - evpn_move: {pod: web, to: c}\n",
        "      - evpn_move: {pod: web, to: c}\n      - evpn_move: {pod: web, to: a}\n",
    );
    load_str("t.yaml", &source, &vars()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn evpn_mistakes_are_located() {
    let cases: &[(&str, &str, &str)] = &[
        // An unknown leaf namespace, a leaf twice.
        (
            "[a, b, c]",
            "[a, b, d]",
            "t.yaml:15:18: unknown namespace `d`",
        ),
        (
            "[a, b, c]",
            "[a, b, b]",
            "t.yaml:15:18: leaf b is listed twice, first at line 15",
        ),
        // No device of the VNI; a VNI out of range.
        (
            "in: a, id: 42",
            "in: a, id: 43",
            "t.yaml:15:12: leaf a has no vxlan device with VNI 42",
        ),
        (
            "vni: 42",
            "vni: 16777216",
            "t.yaml:14:8: vni 16777216 does not fit in 24 bits",
        ),
        // A pod under no leaf of the segment.
        (
            "{name: web, leaf: a,",
            "{name: web, leaf: x,",
            "t.yaml:17:25: pod web is under `x`, which is no leaf of the segment",
        ),
        // Two pods with one MAC, one address, one name; a bad MAC.
        (
            "mac: 02:00:00:00:00:14}",
            "mac: 02:00:00:00:00:0a}",
            "t.yaml:18:56: pod client has the MAC of pod web",
        ),
        (
            "address: 10.0.0.20",
            "address: 10.0.0.10",
            "t.yaml:18:40: pod client has the address of pod web",
        ),
        (
            "{name: client,",
            "{name: web,",
            "t.yaml:18:14: evpn pod web is listed twice, first at line 17",
        ),
        (
            "mac: 02:00:00:00:00:14}",
            "mac: 03:00:00:00:00:14}",
            "t.yaml:18:56: mac address `03:00:00:00:00:14` is not a unicast address",
        ),
        // A device that contradicts EVPN or lacks what it needs.
        (
            "local: 192.0.2.2, master: br0}",
            "local: 192.0.2.2, master: br0, learning: true}",
            "t.yaml:10:19: vxlan vx0 of leaf b learns",
        ),
        (
            "local: 192.0.2.2, master: br0}",
            "local: 192.0.2.2, master: br0, port: {neigh_suppress: false}}",
            "t.yaml:10:76: the port options of vxlan vx0 of leaf b contradict EVPN's",
        ),
        (
            "local: 192.0.2.2, master: br0}",
            "local: 192.0.2.2}",
            "t.yaml:10:19: vxlan vx0 of leaf b is no bridge port",
        ),
        (
            "local: 192.0.2.2, master",
            "master",
            "t.yaml:10:19: vxlan vx0 of leaf b has no `local` address",
        ),
        (
            "local: 192.0.2.2, master",
            "local: 192.0.2.1, master",
            "t.yaml:15:15: leaf b has VTEP 192.0.2.1, as leaf a does",
        ),
        (
            "local: 192.0.2.2, master",
            "remote: 192.0.2.9, local: 192.0.2.2, master",
            "t.yaml:10:19: vxlan vx0 of leaf b has a `remote`",
        ),
        // The moves.
        (
            "{pod: web, to: c}",
            "{pod: wbe, to: c}",
            "t.yaml:25:26: unknown evpn pod `wbe`",
        ),
        (
            "{pod: web, to: c}",
            "{pod: web, to: d}",
            "t.yaml:25:35: unknown leaf `d`",
        ),
        (
            "{pod: web, to: c}",
            "{pod: web, to: a}",
            "t.yaml:25:35: pod web is under leaf a already",
        ),
    ];
    for (from, to, want) in cases {
        let e = evpn_errors(from, to);
        assert_eq!(e.len(), 1, "{from} -> {to}: {e:#?}");
        assert!(e[0].starts_with(want), "{from} -> {to}: {e:#?}");
    }
    // Hints name what there is.
    let e = evpn_errors("{pod: web, to: c}", "{pod: wbe, to: c}");
    assert!(e[0].contains("known pods: web, client"), "{e:#?}");
    let e = evpn_errors("in: a, id: 42", "in: a, id: 43");
    assert!(e[0].contains("its vxlan devices: vx0 (VNI 43)"), "{e:#?}");
    // A VNI no leaf carries: each leaf says so.
    assert_eq!(evpn_errors("vni: 42", "vni: 43").len(), 3);
    // A move without a segment.
    let start = EVPN.find("evpn:\n").expect("segment");
    let end = EVPN.find("scenarios:").expect("scenarios");
    let source = format!("{}{}", &EVPN[..start], &EVPN[end..]);
    let e = load_str("t.yaml", &source, &vars()).unwrap_err();
    let p = e.problems();
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].to_string()
            .starts_with("t.yaml:19:26: the lab has no `evpn` segment"),
        "{p:#?}"
    );
}
