//! Privileged tests of `capture` and `traffic`: each test makes its own
//! namespaces with iproute2, sends real traffic and checks what the taps saw,
//! cross-checked with tcpdump. Without root they are reported ignored.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use labctl::observe::capture::{self, Capture, Direction, Packet, Proto as Wire, VXLAN_PORT};
use labctl::traffic::{self, Failure, Kind, Proto, Request, Servers};

mod common;

/// Namespaces of one test, deleted on drop (also when the test fails).
struct Netns {
    names: Vec<String>,
}

impl Netns {
    /// `ip netns add ct-PID-TEST-X` for each suffix.
    fn new(test: &str, suffixes: &[&str]) -> Netns {
        let mut ns = Netns { names: Vec::new() };
        for s in suffixes {
            let name = format!("ct-{}-{test}-{s}", std::process::id());
            // A leftover from a killed run of the same pid: start clean.
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            ip(&["netns", "add", &name]);
            ns.names.push(name.clone());
            ip(&["-n", &name, "link", "set", "lo", "up"]);
        }
        ns
    }

    fn name(&self, i: usize) -> &str {
        &self.names[i]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair `eth0`--`eth0`, with 10.1.0.1/24 on
/// the first and 10.1.0.2/24 on the second.
fn veth_pair(test: &str) -> Netns {
    let ns = Netns::new(test, &["a", "b"]);
    let (a, b) = (ns.name(0), ns.name(1));
    ip(&[
        "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b,
    ]);
    for (n, addr) in [(a, "10.1.0.1/24"), (b, "10.1.0.2/24")] {
        ip(&["-n", n, "addr", "add", addr, "dev", "eth0"]);
        ip(&["-n", n, "link", "set", "eth0", "up"]);
    }
    ready(&ns);
    ns
}

/// Wait until the kernel has activated every link brought up (see
/// `labctl::kernel::links_not_ready`): a first packet otherwise can be
/// dropped and cost a one-second retransmit.
fn ready(ns: &Netns) {
    for n in &ns.names {
        let pending = labctl::kernel::wait_links_ready_in(n, labctl::kernel::SETTLE_LIMIT).unwrap();
        assert!(pending.is_empty(), "{n}: links not activated: {pending:?}");
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ipaddr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn icmp_flows(packets: &[Packet]) -> Vec<(Direction, capture::Flow)> {
    packets
        .iter()
        .filter_map(|p| Some((p.direction, capture::summarize(p)?)))
        .filter(|(_, f)| matches!(f.protocol, Wire::Icmp { .. }))
        .collect()
}

fn ping_across_veth_is_seen_on_both_sides() {
    let ns = veth_pair("ping");
    let cap_a = Capture::start(ns.name(0), None).unwrap();
    let cap_b = Capture::start(ns.name(1), Some(&["eth0".to_string()])).unwrap();
    let out = traffic::run_client(
        ns.name(0),
        &Request::ping(ipaddr("10.1.0.2")).with_timeout(Duration::from_secs(2)),
    );
    let a = cap_a.stop();
    let b = cap_b.stop();
    let ok = out.result.as_ref().expect("ping succeeds");
    assert_eq!(ok.replied_by, Some(ipaddr("10.1.0.2")));

    let request = |(_, f): &&(Direction, capture::Flow)| {
        f.is_echo_request() && f.src == ipaddr("10.1.0.1") && f.dst == ipaddr("10.1.0.2")
    };
    let a_flows = icmp_flows(&a);
    let b_flows = icmp_flows(&b);
    let sent = a_flows.iter().filter(request).collect::<Vec<_>>();
    let got = b_flows.iter().filter(request).collect::<Vec<_>>();
    assert_eq!(sent.len(), 1, "a: {a_flows:?}");
    assert_eq!(sent[0].0, Direction::Out);
    assert_eq!(got.len(), 1, "b: {b_flows:?}");
    assert_eq!(got[0].0, Direction::In);
    assert!(
        b_flows
            .iter()
            .any(|(d, f)| *d == Direction::Out && f.is_echo_reply() && f.src == ipaddr("10.1.0.2")),
        "b sends the reply: {b_flows:?}"
    );
    assert!(a.iter().all(|p| p.netns == ns.name(0)));
    assert!(b.iter().all(|p| p.ifname == "eth0"));
    // The reply reaches a after the request left it.
    let t_req = a
        .iter()
        .find(|p| capture::summarize(p).is_some_and(|f| f.is_echo_request()));
    let t_rep = a
        .iter()
        .find(|p| capture::summarize(p).is_some_and(|f| f.is_echo_reply()));
    assert!(t_req.unwrap().ts <= t_rep.unwrap().ts);
}

/// The first packet a capture sees is in the order it crossed the lab, not
/// the order the sockets are read: the kernel stamps frames only once a
/// workqueue has switched timestamps on, a moment after the first socket
/// asks (CI saw a ping's path in namespace order). `b` is listed first, so
/// read order would put its copy of the request before `a`'s. Each round
/// starts after every tap of the last one has closed.
fn first_packet_is_ordered_by_the_kernel() {
    let ns = veth_pair("first");
    let names = [ns.name(1).to_string(), ns.name(0).to_string()];
    for round in 0..20 {
        let cap = capture::capture_many(&names).unwrap();
        let out = traffic::run_client(
            ns.name(0),
            &Request::ping(ipaddr("10.1.0.2")).with_timeout(Duration::from_secs(2)),
        );
        let packets = cap.stop();
        assert!(out.result.is_ok(), "round {round}: {:?}", out.result);
        let request = |netns: &str, dir: Direction| {
            packets.iter().position(|p| {
                p.netns == netns
                    && p.direction == dir
                    && capture::summarize(p).is_some_and(|f| f.is_echo_request())
            })
        };
        let sent = request(ns.name(0), Direction::Out).expect("a sent the request");
        let got = request(ns.name(1), Direction::In).expect("b got the request");
        assert!(
            sent < got,
            "round {round}: b's copy sorted before a's: {:?}",
            packets
                .iter()
                .map(|p| (p.netns.as_str(), p.direction, p.ts))
                .collect::<Vec<_>>()
        );
        // Stopped captures close their taps in the background.
        capture::wait_closed();
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tcp_refused_served_and_http_body() {
    let ns = veth_pair("tcp");
    let servers = Servers::start(ns.name(1), &[(8080, Proto::Tcp)]).unwrap();

    let refused = traffic::run_client(
        ns.name(0),
        // Refused is the RST, whatever the timeout; the timeout only bounds a
        // machine too busy to schedule us.
        &Request::new(Kind::TcpConnect, addr("10.1.0.2:9")).with_timeout(Duration::from_secs(3)),
    );
    assert_eq!(refused.result, Err(Failure::Refused));

    let connected = traffic::run_client(
        ns.name(0),
        &Request::new(Kind::TcpConnect, addr("10.1.0.2:8080")),
    );
    let local = connected.result.expect("connect succeeds").local.unwrap();
    assert_eq!(local.ip(), ipaddr("10.1.0.1"));

    let got = traffic::run_client(
        ns.name(0),
        &Request::new(Kind::HttpGet, addr("10.1.0.2:8080")),
    );
    let ok = got.result.expect("http get succeeds");
    assert_eq!(ok.status, Some(200));
    let body = ok.body.as_deref().unwrap();
    let http_local = ok.local.unwrap();
    assert!(
        body.starts_with(&format!("served-by={} client={http_local}", ns.name(1))),
        "{body}"
    );
    assert_eq!(ok.served_by.as_deref(), Some(ns.name(1)));
    assert_eq!(ok.client_seen, Some(http_local));
    // The server has served: its thread runs on one CPU, as the clients do
    // (`labctl::sys::pin_traffic_thread`).
    let servers_cpus = server_threads_cpus();
    assert!(!servers_cpus.is_empty());
    for (thread, cpus) in servers_cpus {
        assert!(
            !cpus.contains(['-', ',']),
            "{thread} may run on CPUs {cpus}"
        );
    }

    // The accept loop records before the connection thread runs; give the
    // plain connect a moment in case the close raced the accept.
    let deadline = Instant::now() + Duration::from_secs(1);
    while !servers.seen_clients().contains(&local) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = servers.seen_clients();
    assert!(seen.contains(&local), "{seen:?} lacks {local}");
    assert!(seen.contains(&http_local), "{seen:?} lacks {http_local}");
    servers.stop();
}

/// Each server thread of this process (`labctl-tcp-*`, `labctl-udp-*`)
/// and the CPUs it may run on, as /proc lists them (`0`, `0-1`, `0,2`).
fn server_threads_cpus() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        if let (Some(thread), Some(cpus)) = (field("Name:"), field("Cpus_allowed_list:"))
            && (thread.starts_with("labctl-tcp-") || thread.starts_with("labctl-udp-"))
        {
            out.push((thread, cpus));
        }
    }
    out
}

/// A TCP client returns once the server has closed too: a capture stopped
/// the moment the client returns already holds the server's FIN, although
/// this server closes 100 ms after it reads the client's (until a server
/// closes, the kernel delays even its ACK). What a scenario's end on quiet
/// relies on.
fn tcp_client_returns_after_the_servers_fin() {
    use std::io::Read;
    let ns = veth_pair("fin");
    let listener =
        labctl::sys::in_netns(ns.name(1), || std::net::TcpListener::bind("0.0.0.0:8080"))
            .unwrap()
            .unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        while conn.read(&mut [0u8; 64]).unwrap() > 0 {}
        std::thread::sleep(Duration::from_millis(100));
    });
    let cap = Capture::start(ns.name(0), Some(&["eth0".to_string()])).unwrap();
    let out = traffic::run_client(
        ns.name(0),
        &Request::new(Kind::TcpConnect, addr("10.1.0.2:8080")),
    );
    let packets = cap.stop();
    server.join().unwrap();
    let local = out.result.expect("connects").local.unwrap();
    let fin = |from: SocketAddr, dir: Direction| {
        packets.iter().any(|p| {
            p.direction == dir
                && capture::summarize(p).is_some_and(|f| {
                    f.src == from.ip()
                        && f.src_port == Some(from.port())
                        && matches!(f.protocol, Wire::Tcp { flags }
                            if flags.has(capture::TcpFlags::FIN))
                })
        })
    };
    assert!(fin(local, Direction::Out), "our FIN");
    assert!(
        fin(addr("10.1.0.2:8080"), Direction::In),
        "the server's FIN"
    );
}

/// A capture asked to stop when quiet still records what comes within the
/// quiet window, ends soon after the lab goes quiet, and ends at the bound
/// when it never does.
fn capture_stops_when_the_lab_is_quiet() {
    let ns = veth_pair("quiet");
    let names = ns.names.clone();
    let ping_after = |delay: Duration, count: usize| {
        let a = ns.name(0).to_string();
        std::thread::spawn(move || {
            for _ in 0..count {
                std::thread::sleep(delay);
                let out = traffic::run_client(&a, &Request::ping(ipaddr("10.1.0.2")));
                assert!(out.is_success(), "{out:?}");
            }
        })
    };
    // A ping 50 ms into a 300 ms window is recorded; the capture ends about
    // 300 ms after it, well before the 5 s bound.
    let cap = capture::capture_many(&names).unwrap();
    let late = ping_after(Duration::from_millis(50), 1);
    let t = Instant::now();
    let packets = cap.stop_when_quiet(Duration::from_millis(300), Duration::from_secs(5));
    let took = t.elapsed();
    late.join().unwrap();
    let replies = icmp_flows(&packets)
        .iter()
        .filter(|(_, f)| f.is_echo_reply())
        .count();
    assert_eq!(replies, 2, "the late ping's reply, out of b and into a");
    assert!(took >= Duration::from_millis(340), "ended early: {took:?}");
    assert!(took < Duration::from_secs(3), "not on quiet: {took:?}");
    capture::wait_closed();

    // A ping every 20 ms for 0.8 s: never 100 ms quiet, so the 400 ms bound.
    let cap = capture::capture_many(&names).unwrap();
    let busy = ping_after(Duration::from_millis(20), 40);
    let t = Instant::now();
    let packets = cap.stop_when_quiet(Duration::from_millis(100), Duration::from_millis(400));
    let took = t.elapsed();
    busy.join().unwrap();
    assert!(!packets.is_empty());
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(
        took < Duration::from_millis(1500),
        "past the bound: {took:?}"
    );
    capture::wait_closed();
}

fn udp_echo_and_refused() {
    let ns = veth_pair("udp");
    let servers = Servers::start(ns.name(1), &[(5353, Proto::Udp)]).unwrap();
    let out = traffic::run_client(ns.name(0), &Request::new(Kind::Udp, addr("10.1.0.2:5353")));
    let ok = out.result.expect("udp echo succeeds");
    assert!(ok.echo.unwrap().starts_with("labctl udp probe"));
    assert_eq!(servers.seen_clients(), vec![ok.local.unwrap()]);

    // No server: ICMP port unreachable.
    let none = traffic::run_client(
        ns.name(0),
        &Request::new(Kind::Udp, addr("10.1.0.2:5354")).with_timeout(Duration::from_secs(1)),
    );
    assert_eq!(none.result, Err(Failure::Refused));
    servers.stop();
}

fn blackhole_is_unreachable_and_silence_times_out() {
    let ns = veth_pair("timeout");
    let a = ns.name(0);
    ip(&["-n", a, "route", "add", "blackhole", "10.9.0.0/24"]);
    let short = Duration::from_millis(500);

    for kind in [Kind::TcpConnect, Kind::Ping, Kind::Udp] {
        let out = traffic::run_client(
            a,
            &Request::new(kind, addr("10.9.0.1:80")).with_timeout(short),
        );
        assert!(
            matches!(&out.result, Err(Failure::Unreachable(m)) if m.starts_with("blackhole")),
            "{kind:?} into a blackhole: {:?}",
            out.result
        );
    }

    // On the link but nobody answers ARP: nothing comes back in time.
    for kind in [Kind::TcpConnect, Kind::Ping, Kind::HttpGet] {
        let started = Instant::now();
        let out = traffic::run_client(
            a,
            &Request::new(kind, addr("10.1.0.99:80")).with_timeout(short),
        );
        assert_eq!(
            out.result,
            Err(Failure::Timeout),
            "{kind:?} to a silent host"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{kind:?} hung");
    }

    // Given time, failed ARP turns into a local ICMP host unreachable.
    let out = traffic::run_client(
        a,
        &Request::ping(ipaddr("10.1.0.99")).with_timeout(Duration::from_secs(5)),
    );
    assert!(
        matches!(&out.result, Err(Failure::Unreachable(m)) if m.contains("No route to host")),
        "{:?}",
        out.result
    );

    // Attempts: each one times out, then the last failure is reported.
    let started = Instant::now();
    let out = traffic::run_client(
        a,
        &Request::new(Kind::TcpConnect, addr("10.1.0.99:80"))
            .with_timeout(Duration::from_millis(200))
            .with_attempts(3),
    );
    assert_eq!(out.attempts, 3);
    assert_eq!(out.result, Err(Failure::Timeout));
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// One line of `tcpdump -nn` for ICMP: (src, dst, "echo request"/"echo reply").
fn parse_tcpdump_icmp(line: &str) -> Option<(IpAddr, IpAddr, String)> {
    // 12:00:00.000000 IP 10.1.0.1 > 10.1.0.2: ICMP echo request, id 1, seq 1, length 40
    let rest = line.split_once(" IP ")?.1;
    let (src, rest) = rest.split_once(" > ")?;
    let (dst, rest) = rest.split_once(": ICMP ")?;
    let what = rest.split(',').next()?.to_string();
    Some((src.parse().ok()?, dst.parse().ok()?, what))
}

fn capture_agrees_with_tcpdump() {
    let ns = veth_pair("tcpdump");
    let (a, b) = (ns.name(0), ns.name(1));
    let pings = 3;
    let mut tcpdump = Command::new("ip")
        .args(["netns", "exec", b, "tcpdump", "-i", "eth0", "-nn", "-l"])
        .args(["-c", &(2 * pings).to_string(), "icmp"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tcpdump");
    let stderr = tcpdump.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("listening on") {
                let _ = tx.send(());
            }
        }
    });
    let listening = rx.recv_timeout(Duration::from_secs(5)).is_ok();
    if !listening {
        let _ = tcpdump.kill();
        let _ = tcpdump.wait();
        panic!("tcpdump did not start listening");
    }
    // "listening on" is printed just before the capture loop; a moment more.
    std::thread::sleep(Duration::from_millis(300));

    let cap = Capture::start(b, Some(&["eth0".to_string()])).unwrap();
    for _ in 0..pings {
        let out = traffic::run_client(a, &Request::ping(ipaddr("10.1.0.2")));
        assert!(out.is_success(), "{out:?}");
    }
    let ours: Vec<(IpAddr, IpAddr, String)> = icmp_flows(&cap.stop())
        .into_iter()
        .map(|(_, f)| {
            let Wire::Icmp { type_, code } = f.protocol else {
                unreachable!()
            };
            (f.src, f.dst, capture::icmp_name(type_, code))
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(5);
    while tcpdump.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if tcpdump.try_wait().unwrap().is_none() {
        let _ = tcpdump.kill();
    }
    let output = tcpdump.wait_with_output().unwrap();
    let theirs: Vec<(IpAddr, IpAddr, String)> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(parse_tcpdump_icmp)
        .collect();
    assert_eq!(theirs.len(), 2 * pings, "tcpdump saw: {theirs:?}");
    assert_eq!(ours, theirs);
}

fn vxlan_outer_and_inner_headers() {
    let ns = veth_pair("vxlan");
    for (n, local, remote, overlay) in [
        (ns.name(0), "10.1.0.1", "10.1.0.2", "10.42.0.1/24"),
        (ns.name(1), "10.1.0.2", "10.1.0.1", "10.42.0.2/24"),
    ] {
        ip(&[
            "-n", n, "link", "add", "vx0", "type", "vxlan", "id", "42", "dstport", "4789", "local",
            local, "remote", remote, "dev", "eth0",
        ]);
        ip(&["-n", n, "addr", "add", overlay, "dev", "vx0"]);
        ip(&["-n", n, "link", "set", "vx0", "up"]);
    }
    ready(&ns);
    let multi = capture::capture_many(&ns.names).unwrap();
    let out = traffic::run_client(
        ns.name(0),
        &Request::ping(ipaddr("10.42.0.2")).with_attempts(3),
    );
    let packets = multi.stop();
    assert!(out.is_success(), "{out:?}");
    assert!(packets.windows(2).all(|w| w[0].ts <= w[1].ts), "sorted");

    let underlay: Vec<capture::Flow> = packets
        .iter()
        .filter(|p| p.netns == ns.name(1) && p.ifname == "eth0" && p.direction == Direction::In)
        .filter_map(capture::summarize)
        .filter(|f| f.protocol == Wire::Udp && f.dst_port == Some(VXLAN_PORT))
        .collect();
    let encapsulated = underlay
        .iter()
        .find(|f| f.inner.as_ref().is_some_and(|i| i.is_echo_request()))
        .unwrap_or_else(|| panic!("no vxlan-wrapped echo request: {underlay:?}"));
    assert_eq!(encapsulated.src, ipaddr("10.1.0.1"));
    assert_eq!(encapsulated.dst, ipaddr("10.1.0.2"));
    let inner = encapsulated.inner.as_deref().unwrap();
    assert_eq!(inner.src, ipaddr("10.42.0.1"));
    assert_eq!(inner.dst, ipaddr("10.42.0.2"));

    // The vxlan device itself shows the decapsulated packet.
    assert!(packets.iter().any(|p| p.netns == ns.name(1)
        && p.ifname == "vx0"
        && capture::summarize(p).is_some_and(|f| f.is_echo_request() && f.inner.is_none())));
}

/// One pcapng of two interfaces (eth0 and lo, which carries an all-zero
/// Ethernet header), read back by tcpdump: every packet, in order.
fn pcapng_reads_back_with_tcpdump() {
    let ns = veth_pair("pcap");
    let a = ns.name(0);
    let cap = Capture::start(a, None).unwrap();
    for target in ["10.1.0.2", "10.1.0.1"] {
        let out = traffic::run_client(a, &Request::ping(ipaddr(target)));
        assert!(out.is_success(), "{target}: {out:?}");
    }
    let packets = cap.stop();
    let mut interfaces: Vec<capture::PcapngInterface> = Vec::new();
    for p in &packets {
        if !interfaces.iter().any(|i| i.ifindex == p.ifindex) {
            interfaces.push(capture::PcapngInterface {
                netns: p.netns.clone(),
                ifindex: p.ifindex,
                name: format!("a/{}", p.ifname),
                description: "test".into(),
            });
        }
    }
    for ifname in ["eth0", "lo"] {
        let n = packets.iter().filter(|p| p.ifname == ifname).count();
        assert!(n >= 2, "{ifname}: {n} packets");
    }
    let path = std::env::temp_dir().join(format!("labctl-{}-merged.pcapng", std::process::id()));
    capture::write_pcapng(&path, "two interfaces", &interfaces, &packets).unwrap();
    let out = Command::new("tcpdump")
        .args(["-r"])
        .arg(&path)
        .arg("-nn")
        .output()
        .expect("run tcpdump -r");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), packets.len(), "{text}");
    assert!(text.contains("ICMP echo request"), "{text}");
}

/// A frame with an 802.1Q tag written into one end of a veth with a packet
/// socket (this kernel has no vlan devices): the kernel takes the tag out
/// of the frame on receive (`skb_vlan_untag`), and the tap on the peer
/// still reports VLAN 100, the MACs, and keeps the tag in the frame.
fn vlan_tag_and_macs_survive_the_kernel() {
    use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, sendto, socket};
    use std::os::fd::AsRawFd;
    let ns = veth_pair("vlan");
    let (a, b) = (ns.name(0), ns.name(1));
    ip(&[
        "-n",
        b,
        "link",
        "set",
        "eth0",
        "address",
        "02:00:00:00:00:bb",
    ]);
    let src = [0x02, 0, 0, 0, 0, 0xaa];
    let dst = [0x02, 0, 0, 0, 0, 0xbb];
    let builder = etherparse::PacketBuilder::ethernet2(src, dst)
        .single_vlan(etherparse::VlanId::try_new(100).unwrap())
        .ipv4([10, 9, 0, 1], [10, 9, 0, 2], 64)
        .icmpv4_echo_request(0x4242, 1);
    let mut frame = Vec::new();
    builder.write(&mut frame, b"tagged").unwrap();
    assert_eq!(&frame[12..14], &[0x81, 0x00]);

    let cap = Capture::start(b, Some(&["eth0".to_string()])).unwrap();
    labctl::sys::in_netns(a, || {
        let ifindex = nix::net::if_::if_nametoindex("eth0").unwrap();
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let to = labctl::sys::packet_bind_addr(ifindex, 0);
        sendto(fd.as_raw_fd(), &frame, &to, MsgFlags::empty()).unwrap();
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let packets = cap.stop();
    let seen: Vec<(&Packet, capture::Flow)> = packets
        .iter()
        .filter_map(|p| Some((p, capture::summarize(p)?)))
        .filter(|(_, f)| f.dst == ipaddr("10.9.0.2"))
        .collect();
    assert_eq!(seen.len(), 1, "{packets:?}");
    let (p, f) = &seen[0];
    assert_eq!(p.direction, Direction::In);
    assert_eq!(f.vlan, Some(100), "{f:?}");
    assert_eq!(f.src_mac, Some(capture::Mac(src)));
    assert_eq!(f.dst_mac, Some(capture::Mac(dst)));
    assert!(f.is_echo_request());
    // The tag is back where it was on the wire, so the pcapng file has it.
    assert_eq!(p.data, frame, "the frame as it was sent");
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let trials = vec![
        libtest_mimic::Trial::ignorable_test("ping_across_veth_is_seen_on_both_sides", || {
            common::gate(|| {
                ping_across_veth_is_seen_on_both_sides();
                Ok(())
            })
        }),
        libtest_mimic::Trial::ignorable_test("first_packet_is_ordered_by_the_kernel", || {
            common::gate(|| {
                first_packet_is_ordered_by_the_kernel();
                Ok(())
            })
        }),
        libtest_mimic::Trial::ignorable_test("tcp_refused_served_and_http_body", || {
            common::gate(|| {
                tcp_refused_served_and_http_body();
                Ok(())
            })
        }),
        libtest_mimic::Trial::ignorable_test("tcp_client_returns_after_the_servers_fin", || {
            common::gate(|| {
                tcp_client_returns_after_the_servers_fin();
                Ok(())
            })
        }),
        libtest_mimic::Trial::ignorable_test("capture_stops_when_the_lab_is_quiet", || {
            common::gate(|| {
                capture_stops_when_the_lab_is_quiet();
                Ok(())
            })
        }),
        libtest_mimic::Trial::ignorable_test("udp_echo_and_refused", || {
            common::gate(|| {
                udp_echo_and_refused();
                Ok(())
            })
        }),
        libtest_mimic::Trial::ignorable_test(
            "blackhole_is_unreachable_and_silence_times_out",
            || {
                common::gate(|| {
                    blackhole_is_unreachable_and_silence_times_out();
                    Ok(())
                })
            },
        ),
        libtest_mimic::Trial::ignorable_test("capture_agrees_with_tcpdump", || {
            common::gate(|| {
                capture_agrees_with_tcpdump();
                Ok(())
            })
        }),
        libtest_mimic::Trial::ignorable_test("vxlan_outer_and_inner_headers", || {
            common::gate(|| {
                vxlan_outer_and_inner_headers();
                Ok(())
            })
        }),
        libtest_mimic::Trial::ignorable_test("vlan_tag_and_macs_survive_the_kernel", || {
            common::gate(|| {
                vlan_tag_and_macs_survive_the_kernel();
                Ok(())
            })
        }),
        libtest_mimic::Trial::ignorable_test("pcapng_reads_back_with_tcpdump", || {
            common::gate(|| {
                pcapng_reads_back_with_tcpdump();
                Ok(())
            })
        }),
    ];
    libtest_mimic::run(&args, trials).exit();
}
