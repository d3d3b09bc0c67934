//! Privileged tests of the overlay router's tc programs with
//! `BPF_PROG_TEST_RUN`: Cilium's VXLAN data path of SCENARIOS.md section 4
//! (Node01 with pod A 10.244.1.154, Node02's CIDR 10.244.6.0/24 behind
//! 192.168.66.221), on hand-built frames checked byte for byte against
//! frames etherparse builds.
//!
//! `BPF_PROG_TEST_RUN` reports a redirect (`TC_ACT_REDIRECT`) without
//! performing it and cannot show the tunnel key, so the encapsulation
//! itself (outer addresses, VNI) is proved by the `cilium-vxlan` scenarios
//! on real devices; here the encap direction is told apart from the other
//! verdicts by what each input must give.
//!
//! Local delivery in `peer` mode (`bpf_redirect_peer`, seed 002's host
//! networking) gives the same verdict and frame as `egress` mode under
//! `BPF_PROG_TEST_RUN`, which records neither the target nor the helper's
//! peer flag: here it is proved that the verifier takes the program, that
//! the mode is read from the config (and not the encap path's business),
//! and that the maps hold it; the `cilium-host-routing` scenarios prove on
//! real devices that the `lxc` device then sees nothing.
//!
//! Each trial gets its own pin directory on a bpffs this binary mounts and
//! removes. Without root or without the BPF object the trials are ignored
//! with the reason; with `LABCTL_REQUIRE_ALL=1` they fail instead.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use etherparse::PacketBuilder;
use labctl_lb::{
    EndpointEntry, RedirectMode, RouteMaps, RouteProgram, RouteTables, Router, TunnelEntry,
};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

type TestResult = Result<(), Failed>;

const A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 154);
const A2: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 200);
const B: Ipv4Addr = Ipv4Addr::new(10, 244, 6, 11);
const NODE02: Ipv4Addr = Ipv4Addr::new(192, 168, 66, 221);
const A_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x9a];
const LXC_A_MAC: [u8; 6] = [0x0e, 0x1b, 0x52, 0x8e, 0x74, 0x8f];
const A2_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0xc8];
const LXC_A2_MAC: [u8; 6] = [0x0e, 0x1b, 0x52, 0x00, 0x00, 0xc8];
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

fn main() {
    let args = Arguments::from_args();
    let root = nix::unistd::geteuid().is_root();
    let bpffs = std::env::temp_dir().join(format!("labctl-route-test-{}", std::process::id()));
    let skip = if !root {
        Some("needs root (BPF)".to_owned())
    } else if !labctl_lb::programs_built() {
        Some("eBPF programs not built: run ebpf/setup.sh and rebuild".to_owned())
    } else {
        match labctl_lb::ensure_bpffs(&bpffs) {
            Ok(_) => None,
            Err(e) => Some(format!("cannot mount a bpffs: {e}")),
        }
    };
    let require_all = std::env::var("LABCTL_REQUIRE_ALL").is_ok_and(|v| v == "1");

    type Body = fn(&Fixture) -> TestResult;
    let cases: [(&str, Body); 10] = [
        ("encap_to_a_remote_node_cidr_redirects", encap),
        (
            "encap_needs_a_tunnel_device_and_a_known_sender",
            encap_preconditions,
        ),
        ("decap_delivers_to_the_local_endpoint", decap),
        ("local_endpoint_is_delivered_from_container", local_delivery),
        (
            "peer_mode_delivers_locally_with_a_redirect",
            peer_local_delivery,
        ),
        ("peer_mode_leaves_encap_and_overlay_alone", peer_encap),
        ("unknown_destination_passes_untouched", unknown_destination),
        ("non_ipv4_passes_untouched", non_ipv4),
        ("expiring_ttl_is_dropped", ttl_expired),
        ("maps_read_back_what_was_programmed", maps_round_trip),
    ];
    let trials = cases
        .into_iter()
        .map(|(name, body)| {
            let skip = skip.clone();
            let dir = bpffs.join(name);
            Trial::ignorable_test(name, move || match skip {
                Some(reason) if require_all => {
                    Err(format!("LABCTL_REQUIRE_ALL=1: {reason}").into())
                }
                Some(reason) => Ok(Completion::ignored_with(reason)),
                None => {
                    let fixture = Fixture::new(&dir)?;
                    body(&fixture)?;
                    Ok(Completion::Completed)
                }
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if root && bpffs.exists() {
        if let Err(e) = labctl_lb::unmount_bpffs(&bpffs) {
            eprintln!("warning: {e}");
        }
        let _ = std::fs::remove_dir(&bpffs);
    }
    conclusion.exit();
}

/// Node01's router: programs loaded, maps pinned in a fresh directory
/// holding [`node01`], removed on drop.
struct Fixture {
    router: Router,
    dir: PathBuf,
}

/// Node01 as the scenario builds it: A (and a second pod A2) local, the
/// VXLAN device at ifindex 9, Node02's CIDR behind 192.168.66.221.
fn node01() -> RouteTables {
    RouteTables {
        endpoints: vec![
            EndpointEntry {
                address: A,
                ifindex: 3,
                identity: 48312,
                lxc_mac: LXC_A_MAC,
                pod_mac: A_MAC,
            },
            EndpointEntry {
                address: A2,
                ifindex: 5,
                identity: 48313,
                lxc_mac: LXC_A2_MAC,
                pod_mac: A2_MAC,
            },
        ],
        tunnels: vec![TunnelEntry {
            prefix: Ipv4Addr::new(10, 244, 6, 0),
            prefix_len: 24,
            remote: NODE02,
        }],
        tunnel_ifindex: 9,
        redirect: RedirectMode::Egress,
    }
}

impl Fixture {
    fn new(dir: &Path) -> Result<Self, Failed> {
        let _ = labctl_lb::remove_pins(dir);
        let router = Router::load_pinned(dir).map_err(|e| e.to_string())?;
        let fixture = Self {
            router,
            dir: dir.to_owned(),
        };
        fixture.program(&node01())?;
        Ok(fixture)
    }

    fn program(&self, tables: &RouteTables) -> TestResult {
        RouteMaps::open(&self.dir)
            .and_then(|mut m| m.program(tables))
            .map_err(|e| e.to_string().into())
    }

    fn run(&self, program: RouteProgram, frame: &[u8]) -> Result<(u32, Vec<u8>), Failed> {
        let out = self
            .router
            .test_run(program, frame)
            .map_err(|e| e.to_string())?;
        Ok((out.action, out.frame))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Err(e) = labctl_lb::remove_pins(&self.dir) {
            eprintln!("warning: {e}");
        }
    }
}

/// An ICMP echo request `src -> dst` with TTL `ttl` in a frame
/// `src_mac -> dst_mac`.
fn ping(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
    let payload = b"labctl route test";
    let builder = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.octets(), dst.octets(), ttl)
        .icmpv4_echo_request(0x1234, 1);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).expect("frame");
    out
}

/// What A sends to `dst`: from A's MAC to its gateway's neighbour, the
/// lxc MAC.
fn from_a(dst: Ipv4Addr) -> Vec<u8> {
    ping(A_MAC, LXC_A_MAC, A, dst, 64)
}

fn expect(got: (u32, Vec<u8>), action: u32, frame: &[u8], what: &str) -> TestResult {
    if got.0 != action {
        return Err(format!("{what}: verdict {} (expected {action})", got.0).into());
    }
    if got.1 != frame {
        return Err(format!(
            "{what}: frame differs\n got      {:02x?}\n expected {frame:02x?}",
            got.1
        )
        .into());
    }
    Ok(())
}

/// A -> B: B's address is in Node02's CIDR, so the packet gets a tunnel
/// key and is redirected to the VXLAN device, the inner frame untouched
/// (the device adds the outer headers).
fn encap(f: &Fixture) -> TestResult {
    let frame = from_a(B);
    expect(
        f.run(RouteProgram::FromContainer, &frame)?,
        TC_ACT_REDIRECT,
        &frame,
        "A -> B on lxc ingress",
    )
}

/// The same packet is not encapsulated without a VXLAN device in the
/// config, nor from a sender that is no local endpoint (no identity for
/// the VNI): then it goes to the node's stack.
fn encap_preconditions(f: &Fixture) -> TestResult {
    let stranger = ping(A_MAC, LXC_A_MAC, Ipv4Addr::new(10, 244, 1, 99), B, 64);
    expect(
        f.run(RouteProgram::FromContainer, &stranger)?,
        TC_ACT_OK,
        &stranger,
        "unknown sender",
    )?;
    let mut tables = node01();
    tables.tunnel_ifindex = 0;
    f.program(&tables)?;
    let frame = from_a(B);
    expect(
        f.run(RouteProgram::FromContainer, &frame)?,
        TC_ACT_OK,
        &frame,
        "no tunnel device",
    )
}

/// On the VXLAN device's ingress (Node01 seen as the receiving node): a
/// decapsulated packet for A gets TTL - 1 and A's veth MACs and is
/// redirected to A's lxc.
fn decap(f: &Fixture) -> TestResult {
    // The inner frame as the remote pod sent it: to its own lxc's MAC.
    let inner = ping([2, 0, 0, 0, 0, 0xb], [2, 0, 0, 0, 0, 0xc], B, A, 64);
    let delivered = ping(LXC_A_MAC, A_MAC, B, A, 63);
    expect(
        f.run(RouteProgram::FromOverlay, &inner)?,
        TC_ACT_REDIRECT,
        &delivered,
        "B -> A from the overlay",
    )
}

/// A -> A2 on the same node: delivered at once, no tunnel.
fn local_delivery(f: &Fixture) -> TestResult {
    let delivered = ping(LXC_A2_MAC, A2_MAC, A, A2, 63);
    expect(
        f.run(RouteProgram::FromContainer, &from_a(A2))?,
        TC_ACT_REDIRECT,
        &delivered,
        "A -> A2",
    )
}

/// The same in `peer` mode: `bpf_redirect_peer(lxc, 0)` answers
/// `TC_ACT_REDIRECT` (a flag it does not take would give `TC_ACT_SHOT`)
/// with the frame rewritten alike, from the container and from the
/// overlay (both tc ingress, where the helper is valid).
fn peer_local_delivery(f: &Fixture) -> TestResult {
    let mut tables = node01();
    tables.redirect = RedirectMode::Peer;
    f.program(&tables)?;
    expect(
        f.run(RouteProgram::FromContainer, &from_a(A2))?,
        TC_ACT_REDIRECT,
        &ping(LXC_A2_MAC, A2_MAC, A, A2, 63),
        "A -> A2, peer mode",
    )?;
    let inner = ping([2, 0, 0, 0, 0, 0xb], [2, 0, 0, 0, 0, 0xc], B, A, 64);
    expect(
        f.run(RouteProgram::FromOverlay, &inner)?,
        TC_ACT_REDIRECT,
        &ping(LXC_A_MAC, A_MAC, B, A, 63),
        "B -> A from the overlay, peer mode",
    )?;
    // An expiring TTL is still dropped before any redirect.
    let (action, _) = f.run(
        RouteProgram::FromContainer,
        &ping(A_MAC, LXC_A_MAC, A, A2, 1),
    )?;
    if action != TC_ACT_SHOT {
        return Err(format!("TTL 1, peer mode: verdict {action} (expected {TC_ACT_SHOT})").into());
    }
    Ok(())
}

/// The mode is local delivery's only: in `peer` mode A -> B is still
/// encapsulated untouched, and unknown destinations still pass.
fn peer_encap(f: &Fixture) -> TestResult {
    let mut tables = node01();
    tables.redirect = RedirectMode::Peer;
    f.program(&tables)?;
    let frame = from_a(B);
    expect(
        f.run(RouteProgram::FromContainer, &frame)?,
        TC_ACT_REDIRECT,
        &frame,
        "A -> B, peer mode",
    )?;
    let other = from_a(Ipv4Addr::new(10, 244, 7, 1));
    expect(
        f.run(RouteProgram::FromContainer, &other)?,
        TC_ACT_OK,
        &other,
        "A -> 10.244.7.1, peer mode",
    )
}

/// A destination neither local nor in a tunnel prefix goes on to the
/// node's stack untouched, from either side.
fn unknown_destination(f: &Fixture) -> TestResult {
    for dst in [Ipv4Addr::new(10, 244, 7, 1), Ipv4Addr::new(192, 168, 66, 1)] {
        let frame = from_a(dst);
        expect(
            f.run(RouteProgram::FromContainer, &frame)?,
            TC_ACT_OK,
            &frame,
            &format!("A -> {dst} on lxc ingress"),
        )?;
        let inner = ping([2, 0, 0, 0, 0, 0xb], [2, 0, 0, 0, 0, 0xc], B, dst, 64);
        expect(
            f.run(RouteProgram::FromOverlay, &inner)?,
            TC_ACT_OK,
            &inner,
            &format!("B -> {dst} from the overlay"),
        )?;
    }
    Ok(())
}

/// ARP is no business of the router.
fn non_ipv4(f: &Fixture) -> TestResult {
    let mut arp = vec![0xff; 6];
    arp.extend(A_MAC);
    arp.extend([0x08, 0x06]);
    arp.extend([0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend(A_MAC);
    arp.extend(A.octets());
    arp.extend([0; 6]);
    arp.extend(B.octets());
    for program in RouteProgram::ALL {
        expect(
            f.run(program, &arp)?,
            TC_ACT_OK,
            &arp,
            &format!("ARP on {}", program.name()),
        )?;
    }
    Ok(())
}

/// Delivery routes, so a packet arriving with TTL 1 dies here.
fn ttl_expired(f: &Fixture) -> TestResult {
    let inner = ping([2, 0, 0, 0, 0, 0xb], [2, 0, 0, 0, 0, 0xc], B, A, 1);
    let (action, _) = f.run(RouteProgram::FromOverlay, &inner)?;
    if action != TC_ACT_SHOT {
        return Err(format!("TTL 1: verdict {action} (expected {TC_ACT_SHOT})").into());
    }
    Ok(())
}

/// The maps read back exactly what was programmed, and programming again
/// removes what is no longer wanted.
fn maps_round_trip(f: &Fixture) -> TestResult {
    let maps = RouteMaps::open(&f.dir).map_err(|e| e.to_string())?;
    let got = maps.tables().map_err(|e| e.to_string())?;
    if got != node01() {
        return Err(format!("read back {got:?}, programmed {:?}", node01()).into());
    }
    let mut fewer = node01();
    fewer.endpoints.truncate(1);
    fewer.tunnels.clear();
    // The delivery mode is kept in the config slot with the device.
    fewer.redirect = RedirectMode::Peer;
    f.program(&fewer)?;
    let got = maps.tables().map_err(|e| e.to_string())?;
    if got != fewer {
        return Err(format!("after removal read back {got:?}, programmed {fewer:?}").into());
    }
    // And the programs follow: B's CIDR is gone, so A -> B is not sent.
    let frame = from_a(B);
    expect(
        f.run(RouteProgram::FromContainer, &frame)?,
        TC_ACT_OK,
        &frame,
        "A -> B without a tunnel entry",
    )
}
