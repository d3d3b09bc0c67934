//! Privileged tests of the tc programs: `BPF_PROG_TEST_RUN` on hand-built
//! frames (checked byte for byte against frames etherparse builds with the
//! expected addresses, and with an independent checksum), then a real
//! attach with netlink tc in scratch network namespaces and a TCP
//! connection through a service address.
//!
//! Each trial gets its own pin directory on a bpffs this binary mounts and
//! removes. Without root or without the BPF object the trials are ignored
//! with the reason; with `LABCTL_REQUIRE_ALL=1` they fail instead.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::mpsc,
    time::Duration,
};

use etherparse::{
    IpHeaders, IpNumber, Ipv4Header, NetHeaders, PacketBuilder, PacketHeaders, TransportHeader,
};
use labctl_lb::{Direction, Lb, LbEvent, LbMaps, Program, Proto, Service};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

type TestResult = Result<(), Failed>;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 5);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 27, 242);
const B1: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 38);
const B2: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 39);
const B3: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 40);
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

fn main() {
    let args = Arguments::from_args();
    let root = nix::unistd::geteuid().is_root();
    let bpffs = std::env::temp_dir().join(format!("labctl-lb-test-{}", std::process::id()));
    let skip = if !root {
        Some("needs root (BPF and network namespaces)".to_owned())
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
        ("egress_tcp_to_service_is_translated", egress_tcp),
        ("egress_udp_to_service_is_translated", egress_udp),
        ("egress_udp_zero_checksum_stays_zero", egress_udp_zero_csum),
        ("egress_with_ip_options", egress_ip_options),
        ("ingress_reply_is_restored", ingress_reply),
        ("unrelated_packets_pass_untouched", untouched),
        ("pinned_backend_is_honoured", pinned_backend),
        ("remembered_flow_keeps_its_backend", remembered_flow),
        ("service_without_backends_drops", no_backends),
        ("netlink_tc_attach_end_to_end", end_to_end),
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
        // Pin directories are removed by each fixture; the mount goes last.
        if let Err(e) = labctl_lb::unmount_bpffs(&bpffs) {
            eprintln!("warning: {e}");
        }
        let _ = std::fs::remove_dir(&bpffs);
    }
    conclusion.exit();
}

/// Loaded programs with maps pinned in a fresh directory, removed on drop.
struct Fixture {
    lb: Lb,
    dir: PathBuf,
}

impl Fixture {
    fn new(dir: &Path) -> Result<Self, Failed> {
        let _ = labctl_lb::remove_pins(dir);
        let lb = Lb::load_pinned(dir).map_err(|e| e.to_string())?;
        Ok(Self {
            lb,
            dir: dir.to_owned(),
        })
    }

    fn maps(&self) -> Result<LbMaps, Failed> {
        LbMaps::open(&self.dir).map_err(|e| e.to_string().into())
    }

    fn run(&self, program: Program, frame: &[u8]) -> Result<(u32, Vec<u8>), Failed> {
        let out = self
            .lb
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

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

#[derive(Clone, Copy)]
enum L4 {
    Tcp,
    Udp,
}

/// An Ethernet + IPv4 + TCP/UDP frame with a payload, checksums computed by
/// etherparse; `options` are IPv4 options (a multiple of 4 bytes).
fn frame(l4: L4, src: SocketAddrV4, dst: SocketAddrV4, options: &[u8]) -> Vec<u8> {
    let payload = b"GET / HTTP/1.1\r\nHost: nginx\r\n\r\n";
    let proto = match l4 {
        L4::Tcp => IpNumber::TCP,
        L4::Udp => IpNumber::UDP,
    };
    let mut ip = Ipv4Header::new(0, 64, proto, src.ip().octets(), dst.ip().octets()).unwrap();
    ip.identification = 0x1234;
    ip.options = options.try_into().unwrap();
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ip(IpHeaders::Ipv4(ip, Default::default()));
    let mut out = Vec::new();
    match l4 {
        L4::Tcp => builder
            .tcp(src.port(), dst.port(), 1000, 64240)
            .write(&mut out, payload),
        L4::Udp => builder.udp(src.port(), dst.port()).write(&mut out, payload),
    }
    .unwrap();
    out
}

/// One's-complement sum of 16-bit big-endian words.
fn ones_sum(mut acc: u32, bytes: &[u8]) -> u32 {
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        acc += u32::from(word);
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// Checks the IPv4 header checksum and the TCP/UDP checksum of `frame`
/// from first principles (RFC 1071), independently of the programs and of
/// etherparse's builder.
fn check_checksums(frame: &[u8]) -> TestResult {
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ones_sum(0, &ip[..ihl]) != 0xffff {
        return Err("IPv4 header checksum is wrong".into());
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let seg = &ip[ihl..total];
    let proto = ip[9];
    if proto == 17 && seg[6..8] == [0, 0] {
        return Ok(()); // UDP without a checksum
    }
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    if ones_sum(ones_sum(0, &pseudo), seg) != 0xffff {
        return Err(format!("L4 checksum (protocol {proto}) is wrong").into());
    }
    Ok(())
}

/// Source and destination of a frame, as etherparse reads them.
fn endpoints(frame: &[u8]) -> Result<(SocketAddrV4, SocketAddrV4), Failed> {
    let h = PacketHeaders::from_ethernet_slice(frame).map_err(|e| e.to_string())?;
    let Some(NetHeaders::Ipv4(ip, _)) = h.net else {
        return Err("not IPv4".into());
    };
    let (sp, dp) = match h.transport {
        Some(TransportHeader::Tcp(t)) => (t.source_port, t.destination_port),
        Some(TransportHeader::Udp(u)) => (u.source_port, u.destination_port),
        _ => return Err("not TCP/UDP".into()),
    };
    Ok((sa(ip.source.into(), sp), sa(ip.destination.into(), dp)))
}

fn ensure(cond: bool, msg: impl Into<String>) -> TestResult {
    if cond { Ok(()) } else { Err(msg.into().into()) }
}

/// Runs `lb_egress` on client -> dst and checks the result equals the frame
/// sent to `expected`, with valid checksums.
fn expect_translated(
    fx: &Fixture,
    l4: L4,
    client: SocketAddrV4,
    dst: SocketAddrV4,
    expected: SocketAddrV4,
    options: &[u8],
) -> TestResult {
    let (action, out) = fx.run(Program::Egress, &frame(l4, client, dst, options))?;
    ensure(
        action == TC_ACT_REDIRECT,
        format!("egress verdict {action}, want redirect (to the backend's neighbour)"),
    )?;
    let (s, d) = endpoints(&out)?;
    ensure(
        s == client && d == expected,
        format!("egress {client} -> {dst}: got {s} -> {d}, want {client} -> {expected}"),
    )?;
    check_checksums(&out)?;
    ensure(
        out == frame(l4, client, expected, options),
        "translated frame differs from the one built for the backend",
    )
}

fn web() -> Service {
    Service::new(VIP, 80, Proto::Tcp)
}

fn egress_tcp(fx: &Fixture) -> TestResult {
    let mut maps = fx.maps()?;
    maps.set_service(web(), &[sa(B1, 8080)], None)?;
    expect_translated(
        fx,
        L4::Tcp,
        sa(CLIENT, 41234),
        sa(VIP, 80),
        sa(B1, 8080),
        &[],
    )?;
    let flows = maps.flows()?;
    ensure(flows.len() == 1, format!("flows: {flows:?}"))?;
    ensure(
        flows[0].to_string() == "10.0.3.5:41234 -> 192.168.27.242:80 translated to 10.0.3.38:8080",
        format!("flow shown as {}", flows[0]),
    )?;
    let event = maps.poll_event(Some(Duration::from_secs(1)))?;
    ensure(
        event.map(|e| e.to_string()).as_deref()
            == Some("10.0.3.5:41234 -> 192.168.27.242:80 translated to 10.0.3.38:8080"),
        format!("event: {event:?}"),
    )
}

fn egress_udp(fx: &Fixture) -> TestResult {
    let mut maps = fx.maps()?;
    let dns = Service::new(VIP, 53, Proto::Udp);
    maps.set_service(dns, &[sa(B2, 5353)], None)?;
    expect_translated(
        fx,
        L4::Udp,
        sa(CLIENT, 40000),
        sa(VIP, 53),
        sa(B2, 5353),
        &[],
    )?;
    // The TCP service on another port is not the UDP one.
    let f = frame(L4::Udp, sa(CLIENT, 40001), sa(VIP, 80), &[]);
    let (action, out) = fx.run(Program::Egress, &f)?;
    ensure(
        action == TC_ACT_OK && out == f,
        "UDP to a port with no UDP service changed",
    )
}

fn egress_udp_zero_csum(fx: &Fixture) -> TestResult {
    let mut maps = fx.maps()?;
    maps.set_service(Service::new(VIP, 53, Proto::Udp), &[sa(B2, 5353)], None)?;
    let zero = |mut f: Vec<u8>| {
        f[14 + 20 + 6] = 0;
        f[14 + 20 + 7] = 0;
        f
    };
    let input = zero(frame(L4::Udp, sa(CLIENT, 40000), sa(VIP, 53), &[]));
    let (action, out) = fx.run(Program::Egress, &input)?;
    ensure(action == TC_ACT_REDIRECT, format!("verdict {action}"))?;
    ensure(
        out[14 + 20 + 6..14 + 20 + 8] == [0, 0],
        "UDP checksum 0 was changed",
    )?;
    check_checksums(&out)?;
    ensure(
        out == zero(frame(L4::Udp, sa(CLIENT, 40000), sa(B2, 5353), &[])),
        "translated frame differs from the expected one",
    )
}

fn egress_ip_options(fx: &Fixture) -> TestResult {
    let mut maps = fx.maps()?;
    maps.set_service(web(), &[sa(B1, 8080)], None)?;
    maps.set_service(Service::new(VIP, 53, Proto::Udp), &[sa(B2, 5353)], None)?;
    // Record route (7) with room for two addresses, padded with NOP/EOL:
    // ihl = 8, so the L4 header is not at the usual offset.
    let options = [7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    expect_translated(
        fx,
        L4::Tcp,
        sa(CLIENT, 41000),
        sa(VIP, 80),
        sa(B1, 8080),
        &options,
    )?;
    expect_translated(
        fx,
        L4::Udp,
        sa(CLIENT, 41001),
        sa(VIP, 53),
        sa(B2, 5353),
        &options,
    )?;
    // And the reply back.
    let reply = frame(L4::Tcp, sa(B1, 8080), sa(CLIENT, 41000), &options);
    let (action, out) = fx.run(Program::Ingress, &reply)?;
    ensure(action == TC_ACT_OK, format!("verdict {action}"))?;
    check_checksums(&out)?;
    ensure(
        out == frame(L4::Tcp, sa(VIP, 80), sa(CLIENT, 41000), &options),
        "reply with IP options not restored",
    )
}

fn ingress_reply(fx: &Fixture) -> TestResult {
    let mut maps = fx.maps()?;
    maps.set_service(web(), &[sa(B1, 8080)], None)?;
    expect_translated(
        fx,
        L4::Tcp,
        sa(CLIENT, 41234),
        sa(VIP, 80),
        sa(B1, 8080),
        &[],
    )?;
    let reply = frame(L4::Tcp, sa(B1, 8080), sa(CLIENT, 41234), &[]);
    let (action, out) = fx.run(Program::Ingress, &reply)?;
    ensure(action == TC_ACT_OK, format!("verdict {action}"))?;
    let (s, d) = endpoints(&out)?;
    ensure(
        s == sa(VIP, 80) && d == sa(CLIENT, 41234),
        format!("reply became {s} -> {d}"),
    )?;
    check_checksums(&out)?;
    ensure(
        out == frame(L4::Tcp, sa(VIP, 80), sa(CLIENT, 41234), &[]),
        "restored reply differs from the frame built from the service",
    )?;
    let mut events: Vec<LbEvent> = Vec::new();
    while let Some(e) = maps.try_next_event() {
        events.push(e);
    }
    ensure(
        events.len() == 2
            && events[0].direction == Direction::Request
            && events[1].direction == Direction::Reply
            && events[1].to_string()
                == "10.0.3.38:8080 -> 10.0.3.5:41234 translated from 192.168.27.242:80",
        format!("events: {events:?}"),
    )
}

fn untouched(fx: &Fixture) -> TestResult {
    let mut maps = fx.maps()?;
    maps.set_service(web(), &[sa(B1, 8080)], None)?;
    let mut arp = frame(L4::Tcp, sa(CLIENT, 1), sa(VIP, 80), &[]);
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let mut fragment = frame(L4::Tcp, sa(CLIENT, 41234), sa(VIP, 80), &[]);
    fragment[14 + 6] |= 0x20; // more fragments
    let cases = [
        (
            Program::Egress,
            frame(L4::Tcp, sa(CLIENT, 41234), sa(B2, 80), &[]),
        ),
        (
            Program::Egress,
            frame(L4::Tcp, sa(CLIENT, 41234), sa(VIP, 81), &[]),
        ),
        (Program::Egress, arp),
        (Program::Egress, fragment),
        // A reply from a backend no flow was translated to.
        (
            Program::Ingress,
            frame(L4::Tcp, sa(B1, 8080), sa(CLIENT, 41234), &[]),
        ),
    ];
    for (program, f) in cases {
        let (action, out) = fx.run(program, &f)?;
        ensure(
            action == TC_ACT_OK && out == f,
            format!("{program:?} changed an unrelated frame (verdict {action})"),
        )?;
    }
    ensure(
        maps.flows()?.is_empty(),
        "an unrelated frame created a flow",
    )?;
    ensure(
        maps.try_next_event().is_none(),
        "an unrelated frame sent an event",
    )
}

fn pinned_backend(fx: &Fixture) -> TestResult {
    let mut maps = fx.maps()?;
    let backends = [sa(B1, 80), sa(B2, 80), sa(B3, 80)];
    maps.set_service(web(), &backends, Some(2))?;
    ensure(
        maps.services()?[0].pinned == Some(2),
        format!("services: {:?}", maps.services()?),
    )?;
    for port in 50000..50008 {
        expect_translated(fx, L4::Tcp, sa(CLIENT, port), sa(VIP, 80), backends[2], &[])?;
    }
    // Unpinned: the hash decides, as predicted from the common crate.
    maps.pin_backend(web(), None)?;
    let mut seen = [false; 3];
    for port in 51000u16..51032 {
        let h = labctl_ebpf_common::flow_hash(
            labctl_ebpf_common::addr_be(CLIENT.octets()),
            port.to_be(),
            labctl_ebpf_common::addr_be(VIP.octets()),
            80u16.to_be(),
            6,
        );
        let i = (h % 3) as usize;
        seen[i] = true;
        expect_translated(fx, L4::Tcp, sa(CLIENT, port), sa(VIP, 80), backends[i], &[])?;
    }
    ensure(seen == [true; 3], "32 flows did not reach all 3 backends")?;
    ensure(
        maps.pin_backend(web(), Some(3)).is_err()
            && maps.set_service(web(), &backends, Some(3)).is_err(),
        "pinning a slot past the end was accepted",
    )
}

fn remembered_flow(fx: &Fixture) -> TestResult {
    let mut maps = fx.maps()?;
    let backends = [sa(B1, 80), sa(B2, 80)];
    maps.set_service(web(), &backends, Some(0))?;
    expect_translated(
        fx,
        L4::Tcp,
        sa(CLIENT, 42000),
        sa(VIP, 80),
        backends[0],
        &[],
    )?;
    maps.pin_backend(web(), Some(1))?;
    // The established flow stays; a new one follows the pin.
    expect_translated(
        fx,
        L4::Tcp,
        sa(CLIENT, 42000),
        sa(VIP, 80),
        backends[0],
        &[],
    )?;
    expect_translated(
        fx,
        L4::Tcp,
        sa(CLIENT, 42001),
        sa(VIP, 80),
        backends[1],
        &[],
    )?;
    // After a flush the old flow chooses again.
    maps.flush_flows()?;
    ensure(maps.flows()?.is_empty(), "flush left flows")?;
    expect_translated(
        fx,
        L4::Tcp,
        sa(CLIENT, 42000),
        sa(VIP, 80),
        backends[1],
        &[],
    )?;
    // Shrinking the backend list: pinning a slot that would no longer exist
    // is refused; replaced without a pin, the service has none.
    ensure(
        maps.set_service(web(), &backends[..1], Some(1)).is_err(),
        "pinning a slot past the new end was accepted",
    )?;
    maps.set_service(web(), &backends[..1], None)?;
    let s = maps.services()?;
    ensure(
        s.len() == 1 && s[0].backends == backends[..1] && s[0].pinned.is_none(),
        format!("services after shrink: {s:?}"),
    )?;
    maps.remove_service(web())?;
    ensure(maps.services()?.is_empty(), "service not removed")
}

fn no_backends(fx: &Fixture) -> TestResult {
    let mut maps = fx.maps()?;
    maps.set_service(web(), &[], None)?;
    let (action, _) = fx.run(
        Program::Egress,
        &frame(L4::Tcp, sa(CLIENT, 1234), sa(VIP, 80), &[]),
    )?;
    ensure(
        action == TC_ACT_SHOT,
        format!("verdict {action}, want drop"),
    )
}

/// Runs a command in the calling thread's network namespace.
fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Client namespace (veth0, 10.99.0.1, default route via the server) and
/// server namespace (veth1, 10.99.0.2, a TCP echo on :8080), each a thread
/// that unshared its network namespace; both vanish when the threads end.
/// The programs are attached to veth0 and the `Lb` dropped before the
/// connection, so the filters must survive their loader.
fn end_to_end(fx: &Fixture) -> TestResult {
    // Programmed before the client thread exists, so its connection cannot
    // race the service.
    let mut maps = fx.maps()?;
    maps.set_service(web(), &[sa(Ipv4Addr::new(10, 99, 0, 2), 8080)], None)?;
    let (tid_tx, tid_rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || -> Result<(), String> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
        tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
        go_rx.recv().map_err(|e| e.to_string())?;
        for cmd in [
            &["ip", "link", "set", "lo", "up"][..],
            &["ip", "addr", "add", "10.99.0.2/24", "dev", "veth1"],
            &["ip", "link", "set", "veth1", "up"],
        ] {
            sh(cmd)?;
        }
        let listener = TcpListener::bind("10.99.0.2:8080").map_err(|e| e.to_string())?;
        ready_tx.send(()).unwrap();
        let (mut conn, peer) = listener.accept().map_err(|e| e.to_string())?;
        let mut buf = [0; 4];
        conn.read_exact(&mut buf).map_err(|e| e.to_string())?;
        conn.write_all(format!("pong {peer}").as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(())
    });
    let server_tid = tid_rx.recv().map_err(|e| e.to_string())?;

    let dir = fx.dir.clone();
    // The fixture's `Lb` cannot move to another thread by reference; load a
    // second one (reusing the pinned maps) on the client thread.
    let client = std::thread::spawn(move || -> Result<(String, String), String> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
        let tid = server_tid.to_string();
        for cmd in [
            &["ip", "link", "set", "lo", "up"][..],
            &[
                "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns",
                &tid,
            ],
            &["ip", "addr", "add", "10.99.0.1/24", "dev", "veth0"],
            &["ip", "link", "set", "veth0", "up"],
            &["ip", "route", "add", "default", "via", "10.99.0.2"],
        ] {
            sh(cmd)?;
        }
        go_tx.send(()).unwrap();
        {
            let mut lb = Lb::load_pinned(&dir).map_err(|e| e.to_string())?;
            lb.attach("veth0").map_err(|e| e.to_string())?;
            // Attaching again replaces rather than stacks filters.
            lb.attach("veth0").map_err(|e| e.to_string())?;
        }
        let filters = sh(&["tc", "filter", "show", "dev", "veth0", "egress"])?
            + &sh(&["tc", "filter", "show", "dev", "veth0", "ingress"])?;
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| format!("server not ready: {e}"))?;
        let vip = std::net::SocketAddr::from((VIP, 80));
        let mut conn = TcpStream::connect_timeout(&vip, Duration::from_secs(5))
            .map_err(|e| format!("connect to {vip} through the load balancer: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"ping").map_err(|e| e.to_string())?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply).map_err(|e| e.to_string())?;
        let peer = conn.peer_addr().map_err(|e| e.to_string())?;
        Ok((filters, format!("{reply} (socket peer {peer})")))
    });

    let client = client.join().map_err(|_| "client thread panicked")?;
    if client.is_err() {
        // Unblock the server if the client failed before connecting.
        let _ = TcpStream::connect_timeout(&"10.99.0.2:8080".parse().unwrap(), Duration::ZERO);
    }
    let (filters, reply) = client?;
    server.join().map_err(|_| "server thread panicked")??;
    ensure(
        filters.lines().filter(|l| l.contains("lb_egress")).count() == 1
            && filters.lines().filter(|l| l.contains("lb_ingress")).count() == 1,
        format!("tc filters after attaching twice:\n{filters}"),
    )?;
    ensure(
        filters.contains("direct-action"),
        format!("not direct-action:\n{filters}"),
    )?;
    ensure(
        reply.starts_with("pong 10.99.0.1:") && reply.ends_with("(socket peer 192.168.27.242:80)"),
        format!("reply: {reply}"),
    )?;
    let flows = maps.flows()?;
    ensure(
        flows.len() == 1 && flows[0].backend == sa(Ipv4Addr::new(10, 99, 0, 2), 8080),
        format!("flows: {flows:?}"),
    )?;
    let mut replies = 0;
    while let Some(e) = maps.try_next_event() {
        replies += usize::from(e.direction == Direction::Reply);
    }
    ensure(replies > 0, "no reply events")
}
