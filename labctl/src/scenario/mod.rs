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
//! One file per job: `run` runs one scenario (program, tap, send, read,
//! restore) and builds its [`Report`]; `checks` holds the expectations
//! against what was observed; `report` the report and its texts; [`path`]
//! the path derivation, unit-tested without root.
//!
//! The golden text ([`Report::golden`]) keeps what is stable from run to run:
//! ports from the kernel's ephemeral range (32768-60999) become `*`, and the
//! packet counts of established TCP traffic (which depend on delayed ACKs)
//! become `n`. ARP is left out of the table unless the scenario asks for it
//! (`capture: {arp: true}`; its counts are then `n`, its timing varies):
//! neighbour resolution is not the data path. A tagged frame's row starts
//! with `vlan N`.

mod checks;
pub mod path;
mod report;
mod run;

use crate::engine::EngineError;
use crate::observe::conntrack;
use crate::services;

pub use checks::Check;
pub use report::{Report, Row};
pub use run::{Programmed, RunOptions, Timings, run};

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
    #[error("scenario `{scenario}`: reset the neighbours, services and conntrack: {source}")]
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

/// The kernel's default ephemeral port range (`net.ipv4.ip_local_port_range`).
fn is_ephemeral(port: u16) -> bool {
    conntrack::EPHEMERAL_PORTS.contains(&port)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use labctl_topology::{SightProto, Sighting};

    use super::checks::matches;
    use super::report::flow_text;
    use super::run::{QUIET, SETTLE_MAX, quiet_window, request};
    use crate::observe::capture::{Flow, Mac, Proto};
    use crate::traffic::Kind;

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
