//! Packet capture inside lab namespaces: what `tcpdump -i IFNAME` would see on
//! each interface, with the kernel's receive timestamp so that packets from
//! different interfaces and namespaces can be put in one order. Scenarios use
//! it to prove, packet by packet, which headers each hop saw (the masqueraded
//! source on the uplink, the VXLAN outer header on the underlay).
//!
//! Written by hand on nix (~200 lines, see CRATES.md): the `afpacket` and
//! `pnet` crates are stale or do not give kernel timestamps. Each tap is an
//! AF_PACKET `SOCK_RAW` socket bound to one interface with `ETH_P_ALL`, as
//! libpcap opens them; `SO_TIMESTAMPNS` puts the kernel's timestamp in a
//! control message; `sll_pkttype == PACKET_OUTGOING` marks what the
//! interface sent. The kernel takes an 802.1Q tag out of the frame into the
//! skb's metadata before a tap sees it (always on receive, by
//! `skb_vlan_untag`, and on transmit with tx-vlan offload), so each tap also
//! asks for `PACKET_AUXDATA` and puts the tag back into the frame, as
//! libpcap does: decoding, the sighting table and the pcapng file all see
//! the frame as it was on the wire. Frames are decoded with etherparse; a scenario's packets
//! from every namespace are written as one pcapng file with pcap-file (one
//! interface block per tapped interface), which Wireshark, tshark and
//! `tcpdump -r` open.
//!
//! One thread polls all the taps of a capture; it stops when asked, or
//! once the lab has been quiet for a while and no TCP close is half-way
//! across a tap ([`MultiCapture::stop_when_quiet`], how a scenario ends
//! instead of a fixed wait; see [`Closes`]), and closes its taps in the
//! background ([`wait_closed`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, LinkAddr, MsgFlags, SockFlag, SockType, bind, recvmsg,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeSpec;
use serde::Serialize;

pub use crate::sys::wait_closed;
use crate::sys::{self, NetnsGuard};
pub use crate::traffic::icmp_name;

/// `ARPHRD_ETHER`: frames start with an Ethernet header.
pub const ARPHRD_ETHER: u16 = libc::ARPHRD_ETHER;
/// `ARPHRD_LOOPBACK`: `lo`; the kernel still prepends an (all-zero) Ethernet
/// header.
pub const ARPHRD_LOOPBACK: u16 = libc::ARPHRD_LOOPBACK;
/// `ARPHRD_NONE`: tun and similar L3 devices; frames start with the IP header.
pub const ARPHRD_NONE: u16 = libc::ARPHRD_NONE;

/// UDP port the kernel's vxlan driver uses by default (IANA).
pub const VXLAN_PORT: u16 = 4789;

/// Bytes read per packet. Veth passes GSO packets of up to 64 KiB; a longer
/// one is cut here and keeps its real length in [`Packet::orig_len`].
const SNAPLEN: usize = 256 * 1024;
/// `tpacket_auxdata.tp_status` bit: `tp_vlan_tci` holds a tag
/// (linux/if_packet.h).
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
/// `tp_status` bit: `tp_vlan_tpid` holds the tag's protocol (else 0x8100).
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
/// 802.1Q's tag protocol identifier.
const ETH_P_8021Q: u16 = 0x8100;

/// How long [`timestamps_switched_on`] waits for its datagram each try.
const POLL_MS: u16 = 50;

/// The longest [`MultiCapture::stop_when_quiet`] runs on, past its quiet
/// window and its bound, while a TCP close is half-way across a tap (see
/// [`Closes`]).
pub const CLOSE_MAX: Duration = Duration::from_secs(1);

/// Which way a packet crossed the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Received by the interface (any `sll_pkttype` but outgoing).
    In,
    /// Sent by the interface (`PACKET_OUTGOING`).
    Out,
}

/// One packet seen on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub netns: String,
    pub ifname: String,
    pub ifindex: u32,
    pub direction: Direction,
    /// `sll_pkttype`: `PACKET_HOST` (0), `BROADCAST` (1), `MULTICAST` (2),
    /// `OTHERHOST` (3), `OUTGOING` (4).
    pub pkt_type: u8,
    /// `ARPHRD_*` of the interface ([`ARPHRD_ETHER`], [`ARPHRD_LOOPBACK`] ...).
    pub link_type: u16,
    /// Kernel receive timestamp, since the Unix epoch.
    pub ts: Duration,
    /// Length on the wire; more than `data.len()` if the frame was cut.
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// A capture on the interfaces of one namespace; see [`Capture::start`].
pub struct Capture {
    inner: Running,
}

impl Capture {
    /// Start capturing in `netns` on the named interfaces, or on every
    /// interface (loopback included) when `ifnames` is `None`; like
    /// `ip netns exec NETNS tcpdump -i IFNAME` once per interface. The
    /// sockets are bound before this returns, so traffic sent afterwards is
    /// seen. Interfaces made after the start are not captured.
    pub fn start(netns_name: &str, ifnames: Option<&[String]>) -> io::Result<Capture> {
        let spec = TapSpec {
            netns: netns_name.to_string(),
            ifnames: ifnames.map(<[String]>::to_vec),
        };
        Ok(Capture {
            inner: Running::spawn(vec![spec])?,
        })
    }

    /// Stop and return every packet seen, in timestamp order.
    pub fn stop(self) -> Vec<Packet> {
        self.inner.finish(Duration::ZERO, Duration::ZERO)
    }
}

/// Captures on every interface of many namespaces, run by one thread.
pub struct MultiCapture {
    inner: Running,
}

impl MultiCapture {
    /// Stop all captures together and return their packets in timestamp
    /// order.
    pub fn stop(self) -> Vec<Packet> {
        self.inner.finish(Duration::ZERO, Duration::ZERO)
    }

    /// Stop once the lab is quiet: no tap has seen a packet for `quiet`,
    /// counted from this call or from the last packet, whichever is later;
    /// at the latest `most` after this call. While a tap has seen a TCP
    /// FIN cross it and not yet the ACK for it cross back (see [`Closes`]),
    /// the lab is not quiet, up to [`CLOSE_MAX`] after this call. Returns
    /// the packets in timestamp order.
    pub fn stop_when_quiet(self, quiet: Duration, most: Duration) -> Vec<Packet> {
        self.inner.finish(quiet, most)
    }
}

/// Start capturing on every interface of each namespace at once; one thread
/// enters the namespaces in turn to open the sockets (a socket stays in the
/// namespace it was made in), then polls them all.
pub fn capture_many(netns_names: &[String]) -> io::Result<MultiCapture> {
    let specs = netns_names
        .iter()
        .map(|name| TapSpec {
            netns: name.clone(),
            ifnames: None,
        })
        .collect();
    Ok(MultiCapture {
        inner: Running::spawn(specs)?,
    })
}

/// What to capture in one namespace.
struct TapSpec {
    netns: String,
    ifnames: Option<Vec<String>>,
}

/// One bound AF_PACKET socket.
struct Tap {
    /// Its place among the capture's taps, for [`Closes`].
    id: usize,
    netns: String,
    ifname: String,
    ifindex: u32,
    fd: OwnedFd,
}

/// When the capture thread is to stop, once asked to.
#[derive(Debug, Clone, Copy)]
struct Finish {
    /// When it was asked.
    asked: Instant,
    /// Stop after this long without a packet (since `asked` at first).
    quiet: Duration,
    /// Stop at this time whatever the taps see, unless a close is still
    /// half-way (see [`Closes`]).
    latest: Instant,
    /// Stop at this time whatever the taps see.
    closing: Instant,
}

/// The capture thread and how to stop it.
struct Running {
    finish: Arc<Mutex<Option<Finish>>>,
    /// A datagram here wakes the thread out of `poll` at once.
    wake: UnixDatagram,
    packets: mpsc::Receiver<Vec<Packet>>,
    /// Taken by [`Running::finish`].
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn spawn(specs: Vec<TapSpec>) -> io::Result<Running> {
        let finish = Arc::new(Mutex::new(None));
        let (wake, woken) = UnixDatagram::pair()?;
        woken.set_nonblocking(true)?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let (packets_tx, packets) = mpsc::channel();
        let asked = Arc::clone(&finish);
        let thread = std::thread::Builder::new()
            .name("labctl-capture".into())
            .spawn(move || {
                // Best effort: without it captures still work, only the
                // first packets may be ordered by when they were read.
                let probe = timestamps_switched_on();
                let taps = open_all(&specs);
                drop(probe);
                let mut taps = match taps {
                    Ok(taps) => taps,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let seen = run(&mut taps, &woken, &asked);
                let _ = packets_tx.send(seen);
                close_all(taps);
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Running {
                finish,
                wake,
                packets,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(io::Error::other(
                "capture thread died while opening sockets",
            )),
        }
    }

    /// Ask the thread to stop as [`MultiCapture::stop_when_quiet`] says,
    /// take its packets, and leave it closing the taps (see
    /// [`wait_closed`]).
    fn finish(mut self, quiet: Duration, most: Duration) -> Vec<Packet> {
        self.ask(quiet, most);
        let mut packets = self.packets.recv().unwrap_or_default();
        if let Some(thread) = self.thread.take() {
            let mut closing = sys::CLOSING.lock().unwrap_or_else(|e| e.into_inner());
            closing.retain(|t| !t.is_finished());
            closing.push(thread);
        }
        // Stable: packets with equal timestamps keep their per-socket order.
        packets.sort_by_key(|p| p.ts);
        packets
    }

    fn ask(&self, quiet: Duration, most: Duration) {
        let asked = Instant::now();
        let mut finish = self.finish.lock().unwrap_or_else(|e| e.into_inner());
        // A capture stopped at once does not wait for closes.
        let closing = if quiet.is_zero() {
            most
        } else {
            most.max(CLOSE_MAX)
        };
        if finish.is_none() {
            *finish = Some(Finish {
                asked,
                quiet,
                latest: asked + most,
                closing: asked + closing,
            });
        }
        // One datagram on a fresh socket pair: never blocks.
        let _ = self.wake.send(&[1]);
    }
}

impl Drop for Running {
    /// A capture dropped unstopped stops at once, its packets thrown away.
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.ask(Duration::ZERO, Duration::ZERO);
            sys::CLOSING
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(thread);
        }
    }
}

/// Close every tap at once, each on a thread of its own (see
/// [`wait_closed`]).
fn close_all(taps: Vec<Tap>) {
    std::thread::scope(|s| {
        for tap in taps {
            let closer = std::thread::Builder::new()
                .name("labctl-tap-close".into())
                .spawn_scoped(s, move || drop(tap));
            // Without a thread, close it here.
            if let Err(e) = closer {
                eprintln!("labctl: warning: close a tap on this thread: {e}");
            }
        }
    });
}

/// How long to wait for the kernel to start stamping packets.
const TIMESTAMP_WAIT: Duration = Duration::from_secs(2);

/// Make sure the kernel stamps packets as they cross each interface before
/// the first tap opens, and keep it so while they open.
///
/// The kernel stamps a frame on its way through only while some socket asks
/// for timestamps (its `netstamp_needed` key). The first socket to ask does
/// not switch it on: a workqueue does, a little later, and after the last
/// one closes it goes off again. Until then frames reach the taps unstamped
/// and `recvmsg` stamps each when it is read, so the first packets of a run
/// come out in the order the sockets are drained, not the order they
/// crossed the lab (seen in CI: a ping's path in namespace order).
///
/// The returned socket asks for timestamps itself. It sits in a scratch
/// namespace of its own, `lo` up, and sends itself a datagram until one
/// comes back stamped before it was read. A socket is returned even when
/// the kernel has not switched within [`TIMESTAMP_WAIT`], with a warning.
fn timestamps_switched_on() -> io::Result<OwnedFd> {
    use nix::sys::socket::{SockaddrIn, getsockname, sendto};
    let fd = {
        let _back = NetnsGuard::unshare()?;
        sys::loopback_up()?;
        socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?
    };
    setsockopt(&fd, sockopt::ReceiveTimestampns, &true)?;
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0))?;
    let me: SockaddrIn = getsockname(fd.as_raw_fd())?;
    let deadline = std::time::Instant::now() + TIMESTAMP_WAIT;
    let mut buf = [0u8; 8];
    let mut cmsg = nix::cmsg_space!(TimeSpec);
    loop {
        sendto(fd.as_raw_fd(), b"ts", &me, MsgFlags::empty())?;
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(POLL_MS));
        // Taken after the datagram is queued and before it is read: a stamp
        // made on the way in is older, one made by recvmsg is not.
        let read_at = since_epoch();
        let mut iov = [IoSliceMut::new(&mut buf)];
        let stamped = match recvmsg::<SockaddrIn>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(msg) => msg.cmsgs().ok().and_then(|mut c| {
                c.find_map(|m| match m {
                    ControlMessageOwned::ScmTimestampns(t) => Some(Duration::from(t)),
                    _ => None,
                })
            }),
            Err(Errno::EAGAIN | Errno::EINTR) => None,
            Err(e) => return Err(e.into()),
        };
        if stamped.is_some_and(|ts| ts < read_at) {
            return Ok(fd);
        }
        if std::time::Instant::now() >= deadline {
            eprintln!(
                "labctl: warning: the kernel did not start stamping packets within {} s; \
                 the first hops may be listed in the order they were read",
                TIMESTAMP_WAIT.as_secs()
            );
            return Ok(fd);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Now, as a kernel timestamp is: since the Unix epoch, on the real clock.
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn open_all(specs: &[TapSpec]) -> io::Result<Vec<Tap>> {
    let mut taps = Vec::new();
    for spec in specs {
        taps.extend(open_in(spec).map_err(|e| {
            io::Error::new(e.kind(), format!("capture in netns {}: {e}", spec.netns))
        })?);
    }
    for (id, tap) in taps.iter_mut().enumerate() {
        tap.id = id;
    }
    Ok(taps)
}

/// Enter the namespace, list its interfaces and bind a tap to each wanted
/// one. The thread returns to its namespace when the guard drops.
fn open_in(spec: &TapSpec) -> io::Result<Vec<Tap>> {
    let ns = sys::open_netns(&spec.netns)?;
    let _inside = NetnsGuard::enter(&ns)?;
    // if_nameindex asks netlink, in the thread's current namespace.
    let interfaces = nix::net::if_::if_nameindex()?;
    let present: Vec<(String, u32)> = interfaces
        .iter()
        .map(|i| (i.name().to_string_lossy().into_owned(), i.index()))
        .collect();
    if let Some(wanted) = &spec.ifnames
        && let Some(missing) = wanted
            .iter()
            .find(|w| !present.iter().any(|(n, _)| n == *w))
    {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {missing}"),
        ));
    }
    let mut taps = Vec::new();
    for (ifname, ifindex) in present {
        if spec.ifnames.as_ref().is_some_and(|w| !w.contains(&ifname)) {
            continue;
        }
        taps.push(Tap {
            id: 0,
            netns: spec.netns.clone(),
            fd: open_tap(ifindex)
                .map_err(|e| io::Error::new(e.kind(), format!("{ifname}: {e}")))?,
            ifname,
            ifindex,
        });
    }
    Ok(taps)
}

/// An AF_PACKET socket that sees every frame `ifindex` sends or receives.
fn open_tap(ifindex: u32) -> io::Result<OwnedFd> {
    // Protocol 0 receives nothing until bind, so no frame of another
    // interface slips in first.
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::ReceiveTimestampns, &true)?;
    // The VLAN tag the kernel took out of the frame, in a control message.
    sys::packet_auxdata_on(&fd)?;
    // Room for bursts while the thread sleeps; FORCE works past rmem_max as
    // root, the plain option is the fallback.
    if setsockopt(&fd, sockopt::RcvBufForce, &(4 << 20)).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &(4 << 20));
    }
    bind(
        fd.as_raw_fd(),
        &sys::packet_bind_addr(ifindex, libc::ETH_P_ALL as u16),
    )?;
    Ok(fd)
}

/// Read the taps as packets come until asked to finish and the finish
/// time has come (see [`Finish`]), then drain them once more so that
/// everything the kernel queued before is returned. Broken taps are
/// dropped from `taps`.
fn run(taps: &mut Vec<Tap>, woken: &UnixDatagram, asked: &Mutex<Option<Finish>>) -> Vec<Packet> {
    let mut packets = Vec::new();
    let mut buf = vec![0u8; SNAPLEN];
    let mut cmsg = nix::cmsg_space!(TimeSpec, [u8; AUXDATA_LEN]);
    // When a drain last found packets.
    let mut last_packet: Option<Instant> = None;
    let mut closes = Closes::default();
    loop {
        let finish = *asked.lock().unwrap_or_else(|e| e.into_inner());
        let timeout = match finish {
            None => PollTimeout::NONE,
            Some(f) => {
                let quiet_from = last_packet.map_or(f.asked, |t| t.max(f.asked));
                let mut end = (quiet_from + f.quiet).min(f.latest);
                if closes.half_way() {
                    // Woken by the packet that finishes it, or at the bound.
                    end = end.max(f.closing);
                }
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    taps.retain(|tap| drain(tap, &mut buf, &mut cmsg, &mut packets));
                    return packets;
                }
                // Rounded up: a timeout of 0 ms would spin.
                PollTimeout::try_from(left.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds: Vec<PollFd> = taps
            .iter()
            .map(|t| PollFd::new(t.fd.as_fd(), PollFlags::POLLIN))
            .chain(std::iter::once(PollFd::new(
                woken.as_fd(),
                PollFlags::POLLIN,
            )))
            .collect();
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            // Cannot happen with valid fds; do not spin.
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
        drop(fds);
        while woken.recv(&mut [0u8; 8]).is_ok() {}
        // Read every socket until it is empty: cheap, and nothing is missed
        // between the poll and the drain.
        let before = packets.len();
        taps.retain(|tap| {
            let from = packets.len();
            let kept = drain(tap, &mut buf, &mut cmsg, &mut packets);
            for p in &packets[from..] {
                closes.note(tap.id, p);
            }
            kept
        });
        if packets.len() > before {
            last_packet = Some(Instant::now());
        }
        if taps.is_empty() {
            return packets;
        }
    }
}

/// TCP closes half-way across the taps: a FIN that crossed a tap whose ACK
/// has not yet crossed back.
///
/// A scenario's client returns once its connection is closed from its own
/// side (`traffic::close`), but the last segment of the close, the ACK of
/// the FIN sent second, can still be in flight; on a loaded machine it can
/// sit in a deferred softirq past the quiet window. Cut off there, it is
/// lost to the next scenario's resets (IPVS connections, conntrack), and
/// the peer, still in LAST_ACK, sends its FIN again into that scenario.
/// Read from the packets the taps see anyway, so an ordinary scenario pays
/// nothing for it. A tap that has seen only one direction of a connection
/// (an asymmetric path) cannot see its ACK, and does not hold the capture.
#[derive(Debug, Default)]
pub(crate) struct Closes {
    /// Each direction of each connection a tap has seen: (tap, src, dst).
    seen: HashSet<(usize, SocketAddr, SocketAddr)>,
    /// FINs across a tap not yet acknowledged across it: (tap, src, dst)
    /// -> the acknowledgement number that covers the FIN.
    fins: HashMap<(usize, SocketAddr, SocketAddr), u32>,
}

impl Closes {
    /// Take note of a packet tap `tap` saw.
    pub(crate) fn note(&mut self, tap: usize, p: &Packet) {
        let Some(s) = tcp_segment(p) else { return };
        let (here, back) = ((tap, s.src, s.dst), (tap, s.dst, s.src));
        self.seen.insert(here);
        if s.rst {
            self.fins.remove(&here);
            self.fins.remove(&back);
            return;
        }
        if let Some(ack) = s.ack
            && let Some(&wanted) = self.fins.get(&back)
            && ack.wrapping_sub(wanted) as i32 >= 0
        {
            self.fins.remove(&back);
        }
        if let Some(end) = s.fin_end {
            self.fins.insert(here, end);
        }
    }

    /// Whether a FIN crossed a tap that has seen the connection's other
    /// direction, and its ACK has not crossed back yet.
    pub(crate) fn half_way(&self) -> bool {
        self.fins
            .keys()
            .any(|&(tap, src, dst)| self.seen.contains(&(tap, dst, src)))
    }
}

/// What [`Closes`] reads from a TCP segment.
struct Segment {
    src: SocketAddr,
    dst: SocketAddr,
    /// With FIN: the sequence number just past it, which its ACK carries.
    fin_end: Option<u32>,
    /// With ACK: the acknowledgement number.
    ack: Option<u32>,
    rst: bool,
}

/// The TCP segment a packet carries, not looking into tunnels (the taps
/// at each end see it plain). `None` for anything else, or a packet cut
/// short.
fn tcp_segment(p: &Packet) -> Option<Segment> {
    let sliced = sliced(p)?;
    let (src, dst): (IpAddr, IpAddr) = match sliced.net.as_ref()? {
        NetSlice::Ipv4(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        NetSlice::Arp(_) => return None,
    };
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
        return None;
    };
    // A FIN takes one sequence number after the payload (RFC 9293 3.4).
    let len = u32::try_from(tcp.payload().len()).ok()?;
    Some(Segment {
        src: SocketAddr::new(src, tcp.source_port()),
        dst: SocketAddr::new(dst, tcp.destination_port()),
        fin_end: tcp
            .fin()
            .then(|| tcp.sequence_number().wrapping_add(len).wrapping_add(1)),
        ack: tcp.ack().then(|| tcp.acknowledgment_number()),
        rst: tcp.rst(),
    })
}

/// Read all queued frames of one tap. False when the socket is broken and
/// should be dropped.
fn drain(tap: &Tap, buf: &mut [u8], cmsg: &mut [u8], out: &mut Vec<Packet>) -> bool {
    loop {
        let (len, addr, ts, tag) = {
            let mut iov = [IoSliceMut::new(buf)];
            match recvmsg::<LinkAddr>(
                tap.fd.as_raw_fd(),
                &mut iov,
                Some(cmsg),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
            ) {
                Ok(msg) => {
                    let (mut ts, mut tag) = (None, None);
                    for m in msg.cmsgs().into_iter().flatten() {
                        match m {
                            ControlMessageOwned::ScmTimestampns(t) => ts = Some(Duration::from(t)),
                            ControlMessageOwned::Unknown(u)
                                if u.cmsg_header.cmsg_level == libc::SOL_PACKET
                                    && u.cmsg_header.cmsg_type == sys::PACKET_AUXDATA =>
                            {
                                tag = auxdata_vlan(&u.data_bytes);
                            }
                            _ => {}
                        }
                    }
                    (msg.bytes, msg.address, ts, tag)
                }
                Err(Errno::EAGAIN) => return true,
                Err(Errno::EINTR) => continue,
                // Reported once when the interface goes down; the kernel
                // re-arms the tap when it comes back up.
                Err(Errno::ENETDOWN) => continue,
                Err(_) => return false,
            }
        };
        let Some(addr) = addr else { continue };
        let kept = len.min(buf.len());
        let ts = ts.unwrap_or_else(since_epoch);
        let mut data = buf[..kept].to_vec();
        let mut len = len;
        if let Some((tpid, tci)) = tag
            && matches!(addr.hatype(), ARPHRD_ETHER | ARPHRD_LOOPBACK)
            && insert_vlan_tag(&mut data, tpid, tci)
        {
            len += 4;
        }
        out.push(Packet {
            netns: tap.netns.clone(),
            ifname: tap.ifname.clone(),
            ifindex: tap.ifindex,
            direction: if addr.pkttype() == libc::PACKET_OUTGOING {
                Direction::Out
            } else {
                Direction::In
            },
            pkt_type: addr.pkttype(),
            link_type: addr.hatype(),
            ts,
            orig_len: u32::try_from(len).unwrap_or(u32::MAX),
            data,
        });
    }
}

/// Bytes of a `struct tpacket_auxdata`: tp_status, tp_len, tp_snaplen (u32),
/// tp_mac, tp_net, tp_vlan_tci, tp_vlan_tpid (u16).
const AUXDATA_LEN: usize = 20;

/// The VLAN tag of a `PACKET_AUXDATA` control message, `(tpid, tci)`, when
/// the kernel says it holds one. Read like libpcap's `pcap_read_packet`:
/// a tag is valid when `TP_STATUS_VLAN_VALID` is set (a TCI of 0 with the
/// bit set is VLAN 0, priority tagging); the TPID is 0x8100 unless
/// `TP_STATUS_VLAN_TPID_VALID` says otherwise.
fn auxdata_vlan(aux: &[u8]) -> Option<(u16, u16)> {
    let u32_at = |i: usize| {
        aux.get(i..i + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u16_at = |i: usize| aux.get(i..i + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let status = u32_at(0)?;
    if status & TP_STATUS_VLAN_VALID == 0 {
        return None;
    }
    let tci = u16_at(16)?;
    let tpid = match u16_at(18) {
        Some(t) if status & TP_STATUS_VLAN_TPID_VALID != 0 && t != 0 => t,
        _ => ETH_P_8021Q,
    };
    Some((tpid, tci))
}

/// Put a VLAN tag back after the two MAC addresses of an Ethernet frame,
/// where it was on the wire (libpcap does the same). False, and the frame
/// unchanged, when it is too short to hold the addresses.
fn insert_vlan_tag(frame: &mut Vec<u8>, tpid: u16, tci: u16) -> bool {
    if frame.len() < 12 {
        return false;
    }
    let mut tag = [0u8; 4];
    tag[..2].copy_from_slice(&tpid.to_be_bytes());
    tag[2..].copy_from_slice(&tci.to_be_bytes());
    frame.splice(12..12, tag);
    frame.truncate(SNAPLEN);
    true
}

/// An Ethernet (MAC) address; printed `0a:58:0a:84:02:2e`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// TCP flags in tcpdump's notation (`S`, `S.`, `R.`, `P.`, `F.` ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;

    pub fn has(self, flag: u8) -> bool {
        self.0 & flag != 0
    }
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tcpdump's print order; `.` is ACK.
        for (bit, c) in [
            (Self::FIN, 'F'),
            (Self::SYN, 'S'),
            (Self::RST, 'R'),
            (Self::PSH, 'P'),
            (Self::URG, 'U'),
            (Self::ECE, 'E'),
            (Self::CWR, 'W'),
            (Self::ACK, '.'),
        ] {
            if self.has(bit) {
                write!(f, "{c}")?;
            }
        }
        if self.0 == 0 {
            write!(f, "none")?;
        }
        Ok(())
    }
}

impl Serialize for TcpFlags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a packet carries above IP.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    Icmp {
        #[serde(rename = "type")]
        type_: u8,
        code: u8,
    },
    Icmpv6 {
        #[serde(rename = "type")]
        type_: u8,
        code: u8,
    },
    Tcp {
        flags: TcpFlags,
    },
    Udp,
    /// ARP; the flow's addresses are the sender's and the target's.
    Arp {
        /// 1 request, 2 reply.
        op: u16,
        /// The sender's hardware address (a reply's answer: `is-at`);
        /// `None` when it is not 6 bytes long.
        sender_mac: Option<Mac>,
    },
    /// Another IP protocol (by number), or a later IPv4 fragment.
    Other(u8),
}

/// The headers of one packet, as tcpdump's one-line summary would give them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Proto,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// The encapsulated packet, for VXLAN (UDP to port 4789).
    pub inner: Option<Box<Flow>>,
    /// The VXLAN network identifier of an encapsulated packet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// The Ethernet header's addresses; `None` for a packet without one
    /// (an L3 device's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_mac: Option<Mac>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_mac: Option<Mac>,
    /// The VLAN id of the frame's (outer) 802.1Q tag, whether it was in the
    /// frame or in the kernel's metadata (see the module doc).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

impl Flow {
    /// The innermost flow (the packet itself when not encapsulated).
    pub fn innermost(&self) -> &Flow {
        match &self.inner {
            Some(inner) => inner.innermost(),
            None => self,
        }
    }

    /// ICMP echo request (type 8) or ICMPv6 echo request (128).
    pub fn is_echo_request(&self) -> bool {
        matches!(
            self.protocol,
            Proto::Icmp { type_: 8, .. } | Proto::Icmpv6 { type_: 128, .. }
        )
    }

    /// ICMP echo reply (type 0) or ICMPv6 echo reply (129).
    pub fn is_echo_reply(&self) -> bool {
        matches!(
            self.protocol,
            Proto::Icmp { type_: 0, .. } | Proto::Icmpv6 { type_: 129, .. }
        )
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ep = |ip: &IpAddr, port: Option<u16>| match port {
            Some(p) => format!("{ip}.{p}"),
            None => ip.to_string(),
        };
        let (src, dst) = (ep(&self.src, self.src_port), ep(&self.dst, self.dst_port));
        match &self.protocol {
            Proto::Arp { op: 1, .. } => {
                write!(f, "ARP, Request who-has {} tell {}", self.dst, self.src)?
            }
            Proto::Arp { op: 2, sender_mac } => match sender_mac {
                Some(mac) => write!(f, "ARP, Reply {} is-at {mac} (to {})", self.src, self.dst)?,
                None => write!(f, "ARP, Reply {} is-at ? (to {})", self.src, self.dst)?,
            },
            Proto::Arp { op, .. } => write!(f, "ARP, op {op} {} > {}", self.src, self.dst)?,
            Proto::Icmp { type_, code } => {
                write!(f, "IP {src} > {dst}: ICMP {}", icmp_name(*type_, *code))?
            }
            Proto::Icmpv6 { type_, code } => {
                write!(f, "IP6 {src} > {dst}: ICMP6 type {type_} code {code}")?
            }
            Proto::Tcp { flags } => write!(f, "IP {src} > {dst}: Flags [{flags}]")?,
            Proto::Udp => write!(f, "IP {src} > {dst}: UDP")?,
            Proto::Other(n) => write!(f, "IP {src} > {dst}: ip-proto-{n}")?,
        }
        if let Some(inner) = &self.inner {
            write!(f, " | {inner}")?;
        }
        Ok(())
    }
}

/// Decode a captured packet: IPv4/IPv6 with ICMP, TCP, UDP, or ARP; VXLAN
/// payloads are decoded too (`inner`). `None` for other frames (LLDP, ...)
/// or ones too short to parse.
pub fn summarize(p: &Packet) -> Option<Flow> {
    summarize_with(p, &[VXLAN_PORT])
}

/// Like [`summarize`], with UDP to any of `vxlan_ports` decoded as VXLAN
/// (a lab's devices may use another port: Cilium and Flannel use 8472).
pub fn summarize_with(p: &Packet, vxlan_ports: &[u16]) -> Option<Flow> {
    flow_of(&sliced(p)?, vxlan_ports)
}

/// A captured packet's headers, from IP on a link without an Ethernet
/// header (`ARPHRD_NONE`: tun and similar), else from Ethernet.
fn sliced(p: &Packet) -> Option<SlicedPacket<'_>> {
    match p.link_type {
        ARPHRD_NONE => SlicedPacket::from_ip(&p.data).ok(),
        _ => SlicedPacket::from_ethernet(&p.data).ok(),
    }
}

/// Decode a frame that starts with an Ethernet header.
pub fn summarize_ethernet(frame: &[u8]) -> Option<Flow> {
    ethernet_with(frame, &[VXLAN_PORT])
}

fn ethernet_with(frame: &[u8], vxlan_ports: &[u16]) -> Option<Flow> {
    flow_of(&SlicedPacket::from_ethernet(frame).ok()?, vxlan_ports)
}

/// Decode a packet that starts with the IP header.
pub fn summarize_ip(packet: &[u8]) -> Option<Flow> {
    flow_of(&SlicedPacket::from_ip(packet).ok()?, &[VXLAN_PORT])
}

fn flow_of(s: &SlicedPacket<'_>, vxlan_ports: &[u16]) -> Option<Flow> {
    let mut flow = flow_of_net(s, vxlan_ports)?;
    if let Some(etherparse::LinkSlice::Ethernet2(eth)) = &s.link {
        flow.src_mac = Some(Mac(eth.source()));
        flow.dst_mac = Some(Mac(eth.destination()));
    }
    flow.vlan = s.vlan_ids().first().map(|id| id.value());
    Some(flow)
}

fn flow_of_net(s: &SlicedPacket<'_>, vxlan_ports: &[u16]) -> Option<Flow> {
    let (src, dst, ip_number): (IpAddr, IpAddr, u8) = match s.net.as_ref()? {
        NetSlice::Ipv4(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
            ip.payload_ip_number().0,
        ),
        NetSlice::Ipv6(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
            ip.payload().ip_number.0,
        ),
        NetSlice::Arp(arp) => {
            let ip = |b: &[u8]| -> Option<IpAddr> {
                match b.len() {
                    4 => Some(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?).into()),
                    16 => Some(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?).into()),
                    _ => None,
                }
            };
            return Some(Flow {
                src: ip(arp.sender_protocol_addr())?,
                dst: ip(arp.target_protocol_addr())?,
                protocol: Proto::Arp {
                    op: arp.operation().0,
                    sender_mac: <[u8; 6]>::try_from(arp.sender_hw_addr()).ok().map(Mac),
                },
                src_port: None,
                dst_port: None,
                inner: None,
                vni: None,
                src_mac: None,
                dst_mac: None,
                vlan: None,
            });
        }
    };
    let mut flow = Flow {
        src,
        dst,
        protocol: Proto::Other(ip_number),
        src_port: None,
        dst_port: None,
        inner: None,
        vni: None,
        src_mac: None,
        dst_mac: None,
        vlan: None,
    };
    match &s.transport {
        Some(TransportSlice::Icmpv4(icmp)) => {
            flow.protocol = Proto::Icmp {
                type_: icmp.type_u8(),
                code: icmp.code_u8(),
            }
        }
        Some(TransportSlice::Icmpv6(icmp)) => {
            flow.protocol = Proto::Icmpv6 {
                type_: icmp.type_u8(),
                code: icmp.code_u8(),
            }
        }
        Some(TransportSlice::Tcp(tcp)) => {
            // Byte 13 of the TCP header holds the flags.
            flow.protocol = Proto::Tcp {
                flags: TcpFlags(tcp.slice().get(13).copied().unwrap_or(0)),
            };
            flow.src_port = Some(tcp.source_port());
            flow.dst_port = Some(tcp.destination_port());
        }
        Some(TransportSlice::Udp(udp)) => {
            flow.protocol = Proto::Udp;
            flow.src_port = Some(udp.source_port());
            flow.dst_port = Some(udp.destination_port());
            if vxlan_ports.contains(&udp.destination_port()) {
                // RFC 7348: 8-byte VXLAN header (flags with the I bit, 3
                // reserved bytes, the 24-bit VNI, 1 reserved), then the
                // inner Ethernet frame.
                let payload = udp.payload();
                flow.vni = payload
                    .get(4..7)
                    .filter(|_| payload[0] & 0x08 != 0)
                    .map(|b| u32::from_be_bytes([0, b[0], b[1], b[2]]));
                flow.inner = payload
                    .get(8..)
                    .and_then(|f| ethernet_with(f, vxlan_ports))
                    .map(Box::new);
            }
        }
        Some(TransportSlice::Igmp(_)) | None => {}
    }
    Some(flow)
}

/// One Interface Description Block of a merged capture: which tap it is
/// (`netns`, `ifindex`) and what the file calls it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapngInterface {
    pub netns: String,
    pub ifindex: u32,
    /// `if_name`: `ENTITY/IFNAME`, as the sighting table names it.
    pub name: String,
    /// `if_description`: the entity's role (`node`, `pod` ...).
    pub description: String,
}

/// Write packets of many interfaces, from many namespaces, to one pcapng
/// file at `path`, like `tcpdump -i any -w` with real interface names: see
/// [`write_pcapng_to`].
pub fn write_pcapng(
    path: impl AsRef<Path>,
    comment: &str,
    interfaces: &[PcapngInterface],
    packets: &[Packet],
) -> io::Result<()> {
    let mut file = BufWriter::new(File::create(path)?);
    write_pcapng_to(&mut file, comment, interfaces, packets)?;
    io::Write::flush(&mut file)
}

/// Write one pcapng section: the Section Header Block carries `comment`
/// (and so does the first packet, where Wireshark shows it beside the
/// frame), then one Interface Description Block per entry of `interfaces`,
/// then every packet as an Enhanced Packet Block in kernel-timestamp order
/// with its direction in `epb_flags`.
///
/// Every block is LINKTYPE_ETHERNET with one snaplen and nanosecond
/// timestamps (`if_tsresol` 9, which is what pcap-file writes): libpcap,
/// so tcpdump, reads a pcapng only when all its interfaces share one link
/// type. Loopback frames carry an (all-zero) Ethernet header already; a
/// frame of an L3 device (`ARPHRD_NONE`, tunnels) that starts with an IP
/// header gets a zero Ethernet header whose type names its IP version. Other
/// frames cannot be written as Ethernet: they are left out, and the section
/// comment says how many. A packet of an interface not in `interfaces` is
/// an error.
pub fn write_pcapng_to(
    out: impl io::Write,
    comment: &str,
    interfaces: &[PcapngInterface],
    packets: &[Packet],
) -> io::Result<()> {
    use std::borrow::Cow;

    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
    use pcap_file::pcapng::blocks::interface_description::{
        InterfaceDescriptionBlock, InterfaceDescriptionOption,
    };
    use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
    use pcap_file::{DataLink, Endianness};

    let to_io = |e: pcap_file::PcapError| match e {
        pcap_file::PcapError::IoError(e) => e,
        e => io::Error::other(e.to_string()),
    };
    let mut framed = Vec::with_capacity(packets.len());
    let mut left_out = 0usize;
    for p in packets {
        let id = interfaces
            .iter()
            .position(|i| i.netns == p.netns && i.ifindex == p.ifindex)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "packet of {}/{} (ifindex {}) has no interface block",
                        p.netns, p.ifname, p.ifindex
                    ),
                )
            })?;
        match ethernet_frame(p) {
            Some((data, orig_len)) => framed.push((p, id as u32, data, orig_len)),
            None => left_out += 1,
        }
    }
    // Stable: equal timestamps keep the order they came in.
    framed.sort_by_key(|(p, ..)| p.ts);

    let mut section_comment = comment.to_string();
    if left_out > 0 {
        section_comment.push_str(&format!(
            "\n{left_out} frame(s) of non-Ethernet link types left out"
        ));
    }
    let mut options = vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
        "labctl {}",
        env!("CARGO_PKG_VERSION")
    )))];
    if !section_comment.is_empty() {
        options.insert(0, SectionHeaderOption::Comment(Cow::Owned(section_comment)));
    }
    let section = SectionHeaderBlock {
        endianness: Endianness::native(),
        options,
        ..SectionHeaderBlock::default()
    };
    let mut writer = PcapNgWriter::with_section_header(out, section).map_err(to_io)?;
    for i in interfaces {
        writer
            .write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: SNAPLEN as u32,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Borrowed(&i.name)),
                    InterfaceDescriptionOption::IfDescription(Cow::Borrowed(&i.description)),
                    // 10^-9 s: the EPB timestamps pcap-file writes are nanoseconds.
                    InterfaceDescriptionOption::IfTsResol(9),
                ],
            })
            .map_err(to_io)?;
    }
    for (n, (p, id, data, orig_len)) in framed.into_iter().enumerate() {
        // epb_flags bits 0-1: 01 inbound, 10 outbound.
        let mut options = vec![EnhancedPacketOption::Flags(match p.direction {
            Direction::In => 1,
            Direction::Out => 2,
        })];
        if n == 0 && !comment.is_empty() {
            options.push(EnhancedPacketOption::Comment(Cow::Borrowed(comment)));
        }
        writer
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: id,
                timestamp: p.ts,
                original_len: orig_len,
                data,
                options,
            })
            .map_err(to_io)?;
    }
    Ok(())
}

/// A packet's bytes as an Ethernet frame (at most [`SNAPLEN`]) and its
/// length on the wire, or `None` when it cannot be one (see
/// [`write_pcapng_to`]).
fn ethernet_frame(p: &Packet) -> Option<(std::borrow::Cow<'_, [u8]>, u32)> {
    use std::borrow::Cow;
    let orig_len = p.orig_len.max(p.data.len() as u32);
    match p.link_type {
        ARPHRD_ETHER | ARPHRD_LOOPBACK => Some((Cow::Borrowed(&p.data), orig_len)),
        _ => {
            let ethertype: u16 = match p.data.first()? >> 4 {
                4 => 0x0800,
                6 => 0x86DD,
                _ => return None,
            };
            let mut frame = vec![0u8; 12];
            frame.extend_from_slice(&ethertype.to_be_bytes());
            frame.extend_from_slice(&p.data);
            frame.truncate(SNAPLEN);
            Some((Cow::Owned(frame), orig_len.saturating_add(14)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn icmp_echo(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .icmpv4_echo_request(7, 1);
        let mut out = Vec::new();
        b.write(&mut out, b"hello").unwrap();
        out
    }

    fn packet(data: Vec<u8>) -> Packet {
        Packet {
            netns: "ns".into(),
            ifname: "eth0".into(),
            ifindex: 2,
            direction: Direction::Out,
            pkt_type: 4,
            link_type: ARPHRD_ETHER,
            ts: Duration::from_secs(1),
            orig_len: data.len() as u32,
            data,
        }
    }

    /// A TCP segment from `src` to `dst` (ports 40000 and 80 swapped to
    /// match) with `flags` among "SFAR", sequence `seq`, ack `ack`.
    fn tcp(from_client: bool, flags: &str, seq: u32, ack: u32, payload: &[u8]) -> Packet {
        let (src, dst, sport, dport) = if from_client {
            ([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80)
        } else {
            ([10, 0, 0, 2], [10, 0, 0, 1], 80, 40000)
        };
        let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, seq, 1000);
        for f in flags.chars() {
            b = match f {
                'S' => b.syn(),
                'F' => b.fin(),
                'A' => b.ack(ack),
                'R' => b.rst(),
                _ => unreachable!(),
            };
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        packet(out)
    }

    #[test]
    fn a_close_is_half_way_until_the_fin_is_acked_across_the_same_tap() {
        let mut c = Closes::default();
        c.note(0, &tcp(true, "S", 100, 0, b""));
        c.note(0, &tcp(false, "SA", 500, 101, b""));
        c.note(0, &tcp(true, "A", 101, 501, b""));
        assert!(!c.half_way());
        // The client's FIN after 5 bytes: its ACK must say 107.
        c.note(0, &tcp(true, "FA", 101, 501, b"hello"));
        assert!(c.half_way());
        c.note(0, &tcp(false, "A", 501, 106, b""));
        assert!(c.half_way(), "an ACK short of the FIN does not cover it");
        c.note(0, &tcp(false, "FA", 501, 107, b""));
        assert!(c.half_way(), "the server's FIN waits for the last ACK");
        // The last ACK crosses another tap first: this one still waits.
        c.note(1, &tcp(false, "FA", 501, 107, b""));
        c.note(1, &tcp(true, "A", 107, 502, b""));
        assert!(c.half_way());
        c.note(0, &tcp(true, "A", 107, 502, b""));
        assert!(!c.half_way());
    }

    #[test]
    fn a_reset_or_a_one_way_tap_holds_no_close() {
        let mut c = Closes::default();
        // Tap 2 sees only the server's side (an asymmetric path).
        c.note(2, &tcp(false, "FA", 501, 107, b""));
        assert!(!c.half_way());
        c.note(3, &tcp(true, "A", 100, 501, b""));
        c.note(3, &tcp(false, "FA", 501, 100, b""));
        assert!(c.half_way());
        c.note(3, &tcp(true, "R", 100, 0, b""));
        assert!(!c.half_way());
        // Sequence numbers wrap.
        let mut c = Closes::default();
        c.note(0, &tcp(false, "A", 9, 9, b""));
        c.note(0, &tcp(true, "FA", u32::MAX, 9, b""));
        assert!(c.half_way());
        c.note(0, &tcp(false, "A", 9, 0, b""));
        assert!(!c.half_way());
    }

    #[test]
    fn icmp_echo_request_is_summarized() {
        let flow = summarize(&packet(icmp_echo([10, 0, 0, 1], [10, 0, 0, 2]))).unwrap();
        assert_eq!(flow.src, IpAddr::from([10, 0, 0, 1]));
        assert_eq!(flow.dst, IpAddr::from([10, 0, 0, 2]));
        assert_eq!(flow.protocol, Proto::Icmp { type_: 8, code: 0 });
        assert!(flow.is_echo_request());
        assert_eq!(
            flow.to_string(),
            "IP 10.0.0.1 > 10.0.0.2: ICMP echo request"
        );
    }

    #[test]
    fn vxlan_on_another_port_is_decoded_when_asked() {
        let mut payload = vec![0x08, 0, 0, 0, 0x08, 0x77, 0x3d, 0];
        payload.extend_from_slice(&icmp_echo([10, 244, 1, 154], [10, 244, 6, 11]));
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([192, 168, 66, 226], [192, 168, 66, 221], 64)
            .udp(54321, 8472);
        let mut outer = Vec::new();
        b.write(&mut outer, &payload).unwrap();
        let p = packet(outer);
        assert_eq!(summarize(&p).unwrap().inner, None);
        let flow = summarize_with(&p, &[VXLAN_PORT, 8472]).unwrap();
        assert_eq!(flow.vni, Some(0x08773d));
        assert_eq!(flow.inner.unwrap().dst, IpAddr::from([10, 244, 6, 11]));
    }

    #[test]
    fn vxlan_inner_frame_is_summarized() {
        let inner = icmp_echo([10, 42, 0, 1], [10, 42, 0, 2]);
        let mut payload = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
        payload.extend_from_slice(&inner);
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 2, 0, 1], [10, 2, 0, 2], 64)
            .udp(54321, VXLAN_PORT);
        let mut outer = Vec::new();
        b.write(&mut outer, &payload).unwrap();
        let flow = summarize(&packet(outer)).unwrap();
        assert_eq!(flow.protocol, Proto::Udp);
        assert_eq!(flow.dst_port, Some(VXLAN_PORT));
        assert_eq!(flow.vni, Some(42));
        let inner = flow.inner.as_deref().unwrap();
        assert_eq!(inner.src, IpAddr::from([10, 42, 0, 1]));
        assert!(inner.is_echo_request());
        assert_eq!(flow.innermost(), inner);
    }

    /// A `tpacket_auxdata` as the kernel writes it (native endian).
    fn auxdata(status: u32, tci: u16, tpid: u16) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&status.to_ne_bytes());
        a.extend_from_slice(&[0; 8]); // tp_len, tp_snaplen
        a.extend_from_slice(&[0; 4]); // tp_mac, tp_net
        a.extend_from_slice(&tci.to_ne_bytes());
        a.extend_from_slice(&tpid.to_ne_bytes());
        a
    }

    #[test]
    fn auxdata_gives_the_tag_only_when_valid() {
        assert_eq!(auxdata_vlan(&auxdata(0, 100, 0)), None);
        assert_eq!(
            auxdata_vlan(&auxdata(TP_STATUS_VLAN_VALID, 100, 0)),
            Some((0x8100, 100))
        );
        assert_eq!(
            auxdata_vlan(&auxdata(
                TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID,
                0x2064,
                0x88a8
            )),
            Some((0x88a8, 0x2064))
        );
        // VLAN 0 (priority tagging) is a tag too.
        assert_eq!(
            auxdata_vlan(&auxdata(TP_STATUS_VLAN_VALID, 0, 0)),
            Some((0x8100, 0))
        );
        assert_eq!(auxdata_vlan(&[0; 8]), None);
    }

    #[test]
    fn a_tag_put_back_decodes_with_vlan_and_macs() {
        let mut frame = icmp_echo([10, 0, 0, 1], [10, 0, 0, 2]);
        assert!(insert_vlan_tag(&mut frame, 0x8100, (3 << 13) | 200));
        assert_eq!(&frame[12..16], &[0x81, 0x00, 0x60, 0xc8]);
        let flow = summarize(&packet(frame)).unwrap();
        assert_eq!(flow.vlan, Some(200));
        assert_eq!(flow.src_mac, Some(Mac([2, 0, 0, 0, 0, 1])));
        assert_eq!(flow.dst_mac, Some(Mac([2, 0, 0, 0, 0, 2])));
        assert!(flow.is_echo_request());
        let mut short = vec![1, 2, 3];
        assert!(!insert_vlan_tag(&mut short, 0x8100, 1));
        assert_eq!(short, [1, 2, 3]);
    }

    #[test]
    fn a_tag_still_in_the_frame_is_read() {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .single_vlan(etherparse::VlanId::try_new(100).unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(7, 1);
        let mut frame = Vec::new();
        b.write(&mut frame, b"x").unwrap();
        let flow = summarize(&packet(frame)).unwrap();
        assert_eq!(flow.vlan, Some(100));
        assert!(flow.is_echo_request());
        // An untagged frame has none.
        let flow = summarize(&packet(icmp_echo([10, 0, 0, 1], [10, 0, 0, 2]))).unwrap();
        assert_eq!(flow.vlan, None);
    }

    #[test]
    fn arp_reply_carries_the_sender_mac() {
        let b = PacketBuilder::ethernet2([0x0a, 0x58, 0x0a, 0x84, 2, 0x2e], [2, 0, 0, 0, 0, 2])
            .arp(
                etherparse::ArpPacket::new(
                    etherparse::ArpHardwareId::ETHERNET,
                    etherparse::EtherType::IPV4,
                    etherparse::ArpOperation::REPLY,
                    &[0x0a, 0x58, 0x0a, 0x84, 2, 0x2e],
                    &[10, 132, 2, 46],
                    &[2, 0, 0, 0, 0, 2],
                    &[10, 132, 2, 2],
                )
                .unwrap(),
            );
        let mut frame = Vec::new();
        b.write(&mut frame).unwrap();
        let flow = summarize(&packet(frame)).unwrap();
        assert_eq!(
            flow.protocol,
            Proto::Arp {
                op: 2,
                sender_mac: Some(Mac([0x0a, 0x58, 0x0a, 0x84, 2, 0x2e]))
            }
        );
        assert_eq!(flow.dst_mac, Some(Mac([2, 0, 0, 0, 0, 2])));
        assert_eq!(
            flow.to_string(),
            "ARP, Reply 10.132.2.46 is-at 0a:58:0a:84:02:2e (to 10.132.2.2)"
        );
    }

    #[test]
    fn tcp_flags_print_like_tcpdump() {
        assert_eq!(TcpFlags(TcpFlags::SYN).to_string(), "S");
        assert_eq!(TcpFlags(TcpFlags::SYN | TcpFlags::ACK).to_string(), "S.");
        assert_eq!(TcpFlags(TcpFlags::RST | TcpFlags::ACK).to_string(), "R.");
    }

    #[test]
    fn missing_namespace_is_an_error() {
        let err = Capture::start("labctl-no-such-netns", None).err().unwrap();
        assert!(err.to_string().contains("labctl-no-such-netns"), "{err}");
    }

    fn iface(netns: &str, ifindex: u32, name: &str, role: &str) -> PcapngInterface {
        PcapngInterface {
            netns: netns.into(),
            ifindex,
            name: name.into(),
            description: role.into(),
        }
    }

    /// Every block read back with pcap-file's reader.
    fn read_back(bytes: &[u8]) -> (Vec<String>, Vec<InterfaceBack>, Vec<PacketBack>) {
        use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
        use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
        use pcap_file::pcapng::blocks::section_header::SectionHeaderOption;
        use pcap_file::pcapng::{Block, PcapNgReader};
        let mut reader = PcapNgReader::new(bytes).unwrap();
        let section: Vec<String> = reader
            .section()
            .options
            .iter()
            .filter_map(|o| match o {
                SectionHeaderOption::Comment(c) => Some(c.to_string()),
                _ => None,
            })
            .collect();
        let (mut ifs, mut pkts) = (Vec::new(), Vec::new());
        while let Some(block) = reader.next_block() {
            match block.unwrap() {
                Block::InterfaceDescription(idb) => {
                    let mut back = InterfaceBack {
                        linktype: u32::from(idb.linktype),
                        snaplen: idb.snaplen,
                        ..InterfaceBack::default()
                    };
                    for o in &idb.options {
                        match o {
                            InterfaceDescriptionOption::IfName(n) => back.name = n.to_string(),
                            InterfaceDescriptionOption::IfDescription(d) => {
                                back.description = d.to_string()
                            }
                            InterfaceDescriptionOption::IfTsResol(r) => back.tsresol = Some(*r),
                            _ => {}
                        }
                    }
                    ifs.push(back);
                }
                Block::EnhancedPacket(epb) => pkts.push(PacketBack {
                    interface: epb.interface_id,
                    ts: epb.timestamp,
                    orig_len: epb.original_len,
                    data: epb.data.to_vec(),
                    comment: epb.options.iter().find_map(|o| match o {
                        EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                        _ => None,
                    }),
                    flags: epb.options.iter().find_map(|o| match o {
                        EnhancedPacketOption::Flags(f) => Some(*f),
                        _ => None,
                    }),
                }),
                _ => {}
            }
        }
        (section, ifs, pkts)
    }

    #[derive(Debug, Default)]
    struct InterfaceBack {
        name: String,
        description: String,
        linktype: u32,
        snaplen: u32,
        tsresol: Option<u8>,
    }

    #[derive(Debug)]
    struct PacketBack {
        interface: u32,
        ts: Duration,
        orig_len: u32,
        data: Vec<u8>,
        comment: Option<String>,
        flags: Option<u32>,
    }

    #[test]
    fn pcapng_merges_namespaces_in_timestamp_order() {
        let mut a = packet(icmp_echo([10, 0, 0, 1], [10, 0, 0, 2]));
        a.ts = Duration::new(5, 300);
        let mut b = packet(icmp_echo([10, 0, 0, 1], [10, 0, 0, 2]));
        b.netns = "other".into();
        b.direction = Direction::In;
        b.ts = Duration::new(5, 100);
        let mut c = a.clone();
        c.ts = Duration::new(5, 200);
        c.ifindex = 1;
        c.ifname = "lo".into();
        c.link_type = ARPHRD_LOOPBACK;
        let interfaces = [
            iface("ns", 2, "pod-a/eth0", "pod"),
            iface("other", 2, "node-1/eth0", "node"),
            iface("ns", 1, "pod-a/lo", "pod"),
        ];
        let mut out = Vec::new();
        write_pcapng_to(
            &mut out,
            "scenario s1\nexpect: connected",
            &interfaces,
            &[a.clone(), b.clone(), c],
        )
        .unwrap();
        let (section, ifs, pkts) = read_back(&out);
        assert_eq!(section, ["scenario s1\nexpect: connected"]);
        let names: Vec<&str> = ifs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["pod-a/eth0", "node-1/eth0", "pod-a/lo"]);
        let roles: Vec<&str> = ifs.iter().map(|i| i.description.as_str()).collect();
        assert_eq!(roles, ["pod", "node", "pod"]);
        assert!(ifs.iter().all(|i| i.linktype == 1), "{ifs:?}");
        assert!(ifs.iter().all(|i| i.snaplen == ifs[0].snaplen), "{ifs:?}");
        assert!(ifs.iter().all(|i| i.tsresol == Some(9)), "{ifs:?}");
        // Kernel-timestamp order across namespaces, nanoseconds kept.
        let order: Vec<(u32, Duration)> = pkts.iter().map(|p| (p.interface, p.ts)).collect();
        assert_eq!(
            order,
            [
                (1, Duration::new(5, 100)),
                (2, Duration::new(5, 200)),
                (0, Duration::new(5, 300)),
            ]
        );
        assert_eq!(pkts[0].data, b.data);
        assert_eq!(pkts[0].flags, Some(1));
        assert_eq!(pkts[2].flags, Some(2));
        // The scenario's comment is on the first packet only.
        assert_eq!(
            pkts[0].comment.as_deref(),
            Some("scenario s1\nexpect: connected")
        );
        assert!(pkts[1..].iter().all(|p| p.comment.is_none()));
    }

    #[test]
    fn pcapng_frames_l3_packets_as_ethernet() {
        let eth = icmp_echo([10, 0, 0, 1], [10, 0, 0, 2]);
        let mut l3 = packet(eth[14..].to_vec());
        l3.link_type = ARPHRD_NONE;
        let mut junk = packet(vec![0x00, 1, 2, 3]);
        junk.link_type = ARPHRD_NONE;
        let mut out = Vec::new();
        write_pcapng_to(
            &mut out,
            "",
            &[iface("ns", 2, "n/tun0", "node")],
            &[l3.clone(), junk],
        )
        .unwrap();
        let (section, _, pkts) = read_back(&out);
        assert_eq!(pkts.len(), 1);
        assert_eq!(&pkts[0].data[12..14], &[0x08, 0x00]);
        assert_eq!(&pkts[0].data[14..], &l3.data[..]);
        assert_eq!(pkts[0].orig_len, l3.orig_len + 14);
        let decoded = summarize_ethernet(&pkts[0].data).unwrap();
        assert!(decoded.is_echo_request());
        assert_eq!(
            section,
            ["\n1 frame(s) of non-Ethernet link types left out"]
        );
    }

    #[test]
    fn pcapng_refuses_a_packet_without_its_interface() {
        let a = packet(icmp_echo([10, 0, 0, 1], [10, 0, 0, 2]));
        let err =
            write_pcapng_to(Vec::new(), "", &[iface("ns", 3, "x/eth1", "pod")], &[a]).unwrap_err();
        assert!(err.to_string().contains("ns/eth0"), "{err}");
    }
}
