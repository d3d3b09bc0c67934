//! A namespace's TCP sockets in TIME_WAIT closed: the payload of
//! [`Action::ForgetTimeWait`], its text (`ss -K` inside the namespace) and
//! its write, over sock_diag (`NETLINK_SOCK_DIAG`): one dump of the
//! namespace's IPv4 TCP sockets in TIME_WAIT, then a `SOCK_DESTROY` for
//! each, acknowledged, on a socket opened inside the namespace by a thread
//! of our own. The messages are netlink-packet-sock-diag's; the exchange is
//! the hand-framed one IPVS and conntrack use ([`crate::wire`]).
//!
//! Why a scenario needs it: the side that closes a connection first keeps
//! it in TIME_WAIT for a minute. When a later scenario's client picks the
//! same ephemeral port and reaches the same server by another address (a
//! ClusterIP, then the pod's own address: one 4-tuple at the server after
//! DNAT), the server's TIME_WAIT takes the new SYN. Unless its sequence
//! number or timestamp reads as newer, which depends on the kernel's
//! per-address secrets, the server answers with the old connection's ACK,
//! the client resets and sends its SYN again 10 ms later: a SYN seen twice
//! and a RST in a capture that is otherwise the same. So a scenario starts
//! with none left, as it starts with the conntrack tables empty.
//!
//! A kernel without `CONFIG_INET_DIAG_DESTROY` (or without inet_diag)
//! cannot close them from outside: the step then leaves them, as before
//! there was one, rather than fail every scenario.
//!
//! [`Action::ForgetTimeWait`]: crate::kernel::step::Action::ForgetTimeWait

use std::fmt;
use std::io;

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::{AF_INET, IPPROTO_TCP, SockDiagDestroy, SockDiagMessage};
use serde::Serialize;

use super::step::Step;
use super::{KernelError, Netlink, first_line};
use crate::wire::{self, Failure, Wire};

/// `ss -K -4 -t state time-wait` inside the namespace: every IPv4 TCP
/// socket of the namespace in TIME_WAIT closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForgetTimeWait;

impl ForgetTimeWait {
    /// The command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ip netns exec {ns} ss -K -4 -t state time-wait")
    }

    pub(super) async fn apply(&self, _nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        // sock_diag on a socket of its own, opened inside the namespace by
        // a blocking thread of our own (as conntrack's flush is).
        let netns = step.netns.clone();
        tokio::task::spawn_blocking(move || forget_in(&netns))
            .await
            .map_err(|e| KernelError::new(first_line(step), e))?
            .map(|_| ())
            .map_err(|e| KernelError::new(first_line(step), e))
    }
}

/// Why the sockets could not be closed.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    #[error("enter network namespace {netns}: {source}")]
    Netns { netns: String, source: io::Error },
    #[error("close the TIME_WAIT sockets: netlink socket: {0}")]
    Io(io::Error),
    #[error("close the TIME_WAIT sockets: {}", nix::errno::Errno::from_raw(*errno).desc())]
    Kernel { errno: i32 },
    #[error("close the TIME_WAIT sockets: unexpected kernel reply: {0}")]
    Reply(String),
}

/// Close the IPv4 TCP sockets in TIME_WAIT of a named namespace
/// (`/run/netns/NAME`), like `ip netns exec NAME ss -K -4 -t state
/// time-wait`: how many were closed. Blocking: run it on a thread of our
/// own, never a runtime thread.
pub fn forget_in(netns: &str) -> Result<usize, ForgetError> {
    crate::sys::in_netns(netns, || {
        // The dump walks the kernel's whole established hash, shared by
        // every namespace (~2 ms here, for each namespace of each
        // scenario); the namespace's own TIME_WAIT count is one read.
        let sockstat = std::fs::read_to_string("/proc/thread-self/net/sockstat");
        if sockstat.ok().as_deref().and_then(time_wait_count) == Some(0) {
            return Ok(0);
        }
        match socket() {
            Ok(mut s) => forget_over(&mut s),
            Err(e) if e.raw_os_error().is_some_and(is_unsupported) => Ok(0),
            Err(e) => Err(ForgetError::Io(e)),
        }
    })
    .map_err(|source| ForgetError::Netns {
        netns: netns.to_string(),
        source,
    })?
}

/// The `tw` figure of `/proc/net/sockstat`'s TCP line (`TCP: inuse 1
/// orphan 0 tw 3 alloc 1 mem 61`): the namespace's TCP sockets in
/// TIME_WAIT since Linux 5.19, the whole machine's before (a count that
/// is only ever too high, so the dump is never skipped wrongly).
fn time_wait_count(sockstat: &str) -> Option<u64> {
    let tcp = sockstat.lines().find_map(|l| l.strip_prefix("TCP:"))?;
    let mut words = tcp.split_whitespace();
    while let Some(word) = words.next() {
        if word == "tw" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// Whether `errno` says this kernel cannot list or close sockets from
/// outside: EPROTONOSUPPORT (no sock_diag), ENOENT (no inet_diag handler
/// for IPv4), EOPNOTSUPP (no `CONFIG_INET_DIAG_DESTROY`).
fn is_unsupported(errno: i32) -> bool {
    use nix::errno::Errno;
    [Errno::EPROTONOSUPPORT, Errno::ENOENT, Errno::EOPNOTSUPP]
        .iter()
        .any(|e| *e as i32 == errno)
}

/// The dump, then a destroy per socket it listed. A socket gone between
/// the two (its minute over) is no error.
fn forget_over(wire: &mut dyn Wire) -> Result<usize, ForgetError> {
    const DUMP: u32 = 1;
    let listed = match wire::exchange::<SockDiagMessage>(wire, DUMP, &dump_request(DUMP)) {
        Ok(listed) => listed,
        Err(Failure::Errno(errno)) if is_unsupported(errno) => return Ok(0),
        Err(f) => return Err(failure(f)),
    };
    let mut closed = 0;
    for (seq, id) in (DUMP + 1..).zip(listed.into_iter().filter_map(|m| match m {
        SockDiagMessage::InetResponse(r) => Some(r.header.socket_id),
        _ => None,
    })) {
        match wire::exchange::<SockDiagMessage>(wire, seq, &destroy_request(seq, id)) {
            Ok(_) => closed += 1,
            Err(Failure::Errno(errno)) if errno == nix::errno::Errno::ENOENT as i32 => {}
            Err(Failure::Errno(errno)) if is_unsupported(errno) => return Ok(closed),
            Err(f) => return Err(failure(f)),
        }
    }
    Ok(closed)
}

fn failure(f: Failure) -> ForgetError {
    match f {
        Failure::Errno(errno) => ForgetError::Kernel { errno },
        Failure::Io(e) => ForgetError::Io(e),
        Failure::Reply(reason) => ForgetError::Reply(reason),
    }
}

/// An IPv4 TCP request for the sockets in `states`, `id` naming one or
/// (all zero) none.
fn inet_request(states: StateFlags, id: SocketId) -> SockDiagMessage {
    SockDiagMessage::InetRequest(InetRequest {
        family: AF_INET,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states,
        socket_id: id,
    })
}

/// `SOCK_DIAG_BY_FAMILY` dump of the IPv4 TCP sockets in TIME_WAIT.
fn dump_request(seq: u32) -> Vec<u8> {
    wire::frame(
        seq,
        NLM_F_REQUEST | NLM_F_DUMP,
        inet_request(StateFlags::TIME_WAIT, SocketId::new_v4()),
    )
}

/// `SOCK_DESTROY` of the socket `id` (as the dump gave it, cookie and
/// all), acknowledged.
fn destroy_request(seq: u32, id: SocketId) -> Vec<u8> {
    wire::frame(
        seq,
        NLM_F_REQUEST | NLM_F_ACK,
        SockDiagDestroy::new(inet_request(StateFlags::all(), id)),
    )
}

/// A bound `NETLINK_SOCK_DIAG` socket in the current thread's namespace.
fn socket() -> io::Result<netlink_sys::Socket> {
    wire::socket(netlink_sys::protocols::NETLINK_SOCK_DIAG)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{IpAddr, Ipv4Addr};

    use netlink_packet_core::NLM_F_MULTIPART;
    use netlink_packet_sock_diag::inet::{InetResponse, InetResponseHeader};

    use crate::wire::Replay;

    /// An `NLMSG_ERROR` answer to request `seq` carrying `errno` (0: the
    /// acknowledgement), quoting the request's header.
    fn answer(seq: u32, errno: i32) -> Vec<u8> {
        wire::error_answer(seq, errno, &dump_request(seq))
    }

    /// `NLMSG_DONE` ending the dump `seq`.
    fn done(seq: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(20u32.to_ne_bytes());
        out.extend(3u16.to_ne_bytes()); // NLMSG_DONE
        out.extend(NLM_F_MULTIPART.to_ne_bytes());
        out.extend(seq.to_ne_bytes());
        out.extend(0u32.to_ne_bytes());
        out.extend(0i32.to_ne_bytes());
        out
    }

    /// The id of a server's TIME_WAIT socket: 172.23.96.24:80 to a
    /// client's ephemeral port, with the kernel's cookie.
    fn id(port: u16) -> SocketId {
        SocketId {
            source_port: 80,
            destination_port: port,
            source_address: IpAddr::V4(Ipv4Addr::new(172, 23, 96, 24)),
            destination_address: IpAddr::V4(Ipv4Addr::new(172, 23, 96, 23)),
            interface_id: 0,
            cookie: [port as u8, 1, 2, 3, 4, 5, 6, 7],
        }
    }

    /// One datagram of the dump `seq` listing sockets `ids` in TIME_WAIT.
    fn listed(seq: u32, ids: &[SocketId]) -> Vec<u8> {
        let mut out = Vec::new();
        for id in ids {
            let response = SockDiagMessage::InetResponse(Box::new(InetResponse {
                header: InetResponseHeader {
                    family: AF_INET,
                    state: 6, // TCP_TIME_WAIT
                    timer: None,
                    socket_id: id.clone(),
                    recv_queue: 0,
                    send_queue: 0,
                    uid: 0,
                    inode: 0,
                },
                nlas: Default::default(),
            }));
            out.extend(wire::frame(seq, NLM_F_MULTIPART, response));
        }
        out
    }

    /// sockstat's TIME_WAIT figure is read from the TCP line only; a file
    /// without one gives none (and the dump is then made).
    #[test]
    fn the_time_wait_figure_comes_from_sockstat_s_tcp_line() {
        let sockstat = "sockets: used 11\n\
                        TCP: inuse 1 orphan 0 tw 3 alloc 1 mem 61\n\
                        UDP: inuse 0 mem 0\n";
        assert_eq!(time_wait_count(sockstat), Some(3));
        assert_eq!(
            time_wait_count("TCP: inuse 0 orphan 0 tw 0 alloc 1 mem 61\n"),
            Some(0)
        );
        assert_eq!(time_wait_count("UDP: inuse 0 mem 0 tw 0\n"), None);
        assert_eq!(time_wait_count("TCP: inuse 0 orphan 0 tw\n"), None);
        assert_eq!(time_wait_count("TCP: inuse 0 tw x\n"), None);
        assert_eq!(time_wait_count(""), None);
    }

    /// The dump as inet_diag.h lays it out: `SOCK_DIAG_BY_FAMILY`,
    /// request and dump flags, then `inet_diag_req_v2` for AF_INET, TCP,
    /// no extensions, the TIME_WAIT state bit (1 << 6) and an empty id.
    #[test]
    fn dump_request_bytes_match_inet_diag_h() {
        let bytes = dump_request(1);
        #[rustfmt::skip]
        let head: Vec<u8> = vec![
            // nlmsghdr: len 72, SOCK_DIAG_BY_FAMILY (20), REQUEST|DUMP (0x301), seq 1
            72, 0, 0, 0, 20, 0, 0x01, 0x03, 1, 0, 0, 0, 0, 0, 0, 0,
            // family AF_INET, protocol TCP, extensions 0, pad
            2, 6, 0, 0,
            // idiag_states
            0x40, 0, 0, 0,
        ];
        assert_eq!(bytes[..24], head[..]);
        assert_eq!(bytes.len(), 72);
        // The socket id (ports, addresses, interface, cookie): all zero.
        assert!(bytes[24..].iter().all(|b| *b == 0), "{bytes:?}");
    }

    /// Each listed socket is destroyed by the id the dump gave, cookie
    /// included, one acknowledged `SOCK_DESTROY` (21) each; one gone
    /// meanwhile (ENOENT) is no error and not counted.
    #[test]
    fn each_listed_socket_is_destroyed_by_its_own_id() {
        let mut dump = listed(1, &[id(40003), id(40004)]);
        dump.extend(done(1));
        let mut kernel = Replay::new(vec![dump, answer(2, 0), answer(3, -2)]);
        assert_eq!(forget_over(&mut kernel).unwrap(), 1);
        assert_eq!(
            kernel.sent,
            vec![
                dump_request(1),
                destroy_request(2, id(40003)),
                destroy_request(3, id(40004))
            ]
        );
        let destroy = &kernel.sent[1];
        assert_eq!(destroy[4..6], 21u16.to_ne_bytes());
        // The id's ports (big-endian), then the cookie at its end.
        assert_eq!(destroy[24..28], [0, 80, 0x9c, 0x43]);
        assert_eq!(destroy[64..72], [0x43, 1, 2, 3, 4, 5, 6, 7]);
    }

    /// Nothing in TIME_WAIT: the dump alone. A kernel that cannot list or
    /// destroy sockets leaves them without an error; any other refusal is
    /// one, in words.
    #[test]
    fn an_empty_or_unsupported_dump_closes_nothing_and_other_errors_say_why() {
        let mut empty = Replay::new(vec![done(1)]);
        assert_eq!(forget_over(&mut empty).unwrap(), 0);
        assert_eq!(empty.sent, vec![dump_request(1)]);
        let mut no_inet_diag = Replay::new(vec![answer(1, -2)]);
        assert_eq!(forget_over(&mut no_inet_diag).unwrap(), 0);
        let mut dump = listed(1, &[id(40003), id(40004)]);
        dump.extend(done(1));
        let mut no_destroy = Replay::new(vec![dump, answer(2, -95)]);
        assert_eq!(forget_over(&mut no_destroy).unwrap(), 0);
        assert_eq!(no_destroy.sent.len(), 2, "no second destroy once refused");
        let mut refused = Replay::new(vec![answer(1, -1)]);
        assert_eq!(
            forget_over(&mut refused).unwrap_err().to_string(),
            "close the TIME_WAIT sockets: Operation not permitted"
        );
    }
}
