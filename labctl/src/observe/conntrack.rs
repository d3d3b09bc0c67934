//! The conntrack table of a lab namespace, read over netlink like
//! `conntrack -L`: what the kernel remembers of each flow (original and reply
//! tuples, TCP state, status flags), which is how a scenario proves that a
//! connection was DNAT-ed to a backend or masqueraded on its way out.
//!
//! The messages are `netlink-packet-netfilter`'s (`IPCTNL_MSG_CT_GET` with
//! `NLM_F_DUMP` on a blocking `NETLINK_NETFILTER` socket); this module only
//! turns its attributes (`CTA_TUPLE_ORIG`, `CTA_TUPLE_REPLY`, `CTA_STATUS`,
//! `CTA_PROTOINFO`) into [`Entry`] values, with the names of
//! `include/uapi/linux/netfilter/nf_conntrack_common.h` and
//! `nf_conntrack_tcp.h`. IPv4 only: labs have no IPv6.
//!
//! A namespace has entries only once something there loaded conntrack hooks
//! (nftables or iptables rules using `ct`, NAT, IPVS with conntrack); before
//! that its table is simply empty.
//!
//! Emptying the table is a write, so a kernel step: [`FlushConntrack`],
//! whose module also frames the ctnetlink requests both send.
//!
//! [`FlushConntrack`]: crate::kernel::conntrack::FlushConntrack

use crate::kernel::conntrack::{is_unavailable, request};
use crate::wire::{self, Failure, Wire};
use std::io;
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::NLM_F_DUMP;
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple,
    Tuple as CtTuple,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};
use serde::Serialize;

/// One direction of a flow: addresses, protocol and, for TCP, UDP and the
/// like, ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP ...).
    pub protocol: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

impl Tuple {
    fn mentions(&self, addr: Ipv4Addr) -> bool {
        self.src == addr || self.dst == addr
    }
}

/// One conntrack entry, as `conntrack -L` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Entry {
    /// The direction of the first packet.
    pub original: Tuple,
    /// What an answer looks like; it differs from `original` reversed
    /// exactly when the flow is NAT-ed.
    pub reply: Tuple,
    /// TCP only: `SYN_SENT`, `ESTABLISHED`, `TIME_WAIT` ...
    pub tcp_state: Option<String>,
    /// Set `IPS_*` flags without their prefix, in bit order: `SEEN_REPLY`,
    /// `ASSURED`, `CONFIRMED`, `DST_NAT` ...
    pub status: Vec<String>,
}

impl Entry {
    fn has(&self, flag: &str) -> bool {
        self.status.iter().any(|s| s == flag)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// No `NETLINK_NETFILTER`, or no ctnetlink subsystem behind it.
    #[error("conntrack is not available in this kernel (nf_conntrack)")]
    Unavailable,
    #[error("enter network namespace {netns}")]
    Netns {
        netns: String,
        #[source]
        source: io::Error,
    },
    #[error("dump the conntrack table: netlink socket")]
    Io(#[source] io::Error),
    #[error("dump the conntrack table: {}", nix::errno::Errno::from_raw(*errno).desc())]
    Kernel { errno: i32 },
    #[error("dump the conntrack table: unexpected kernel reply: {reason}")]
    Reply { reason: String },
}

/// `IPS_*` bits of `nf_conntrack_common.h`, by bit number.
const STATUS_NAMES: &[&str] = &[
    "EXPECTED",
    "SEEN_REPLY",
    "ASSURED",
    "CONFIRMED",
    "SRC_NAT",
    "DST_NAT",
    "SEQ_ADJUST",
    "SRC_NAT_DONE",
    "DST_NAT_DONE",
    "DYING",
    "FIXED_TIMEOUT",
    "TEMPLATE",
    "NAT_CLASH",
    "HELPER",
    "OFFLOAD",
    "HW_OFFLOAD",
];

/// `enum tcp_conntrack` of `nf_conntrack_tcp.h`, with conntrack-tools'
/// names.
const TCP_STATES: &[&str] = &[
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
];

/// The ports Linux picks for clients by default
/// (`net.ipv4.ip_local_port_range`), which [`format`] can redact.
pub const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 32768..=60999;

fn status_names(bits: u32) -> Vec<String> {
    (0..32)
        .filter(|b| bits & (1 << b) != 0)
        .map(|b| match STATUS_NAMES.get(b) {
            Some(name) => name.to_string(),
            None => format!("BIT{b}"),
        })
        .collect()
}

fn tcp_state_name(state: u8) -> String {
    match TCP_STATES.get(usize::from(state)) {
        Some(name) => name.to_string(),
        None => format!("STATE{state}"),
    }
}

/// A tuple from `CTA_TUPLE_*`; `Ok(None)` for an IPv6 one.
fn tuple(attrs: &[CtTuple], which: &str) -> Result<Option<Tuple>, String> {
    let (mut src, mut dst, mut protocol, mut sport, mut dport) = (None, None, None, None, None);
    for attr in attrs {
        match attr {
            CtTuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            CtTuple::Proto(protos) => {
                for p in protos {
                    match p {
                        ProtoTuple::Protocol(n) => protocol = Some(u8::from(*n)),
                        ProtoTuple::SourcePort(n) => sport = Some(*n),
                        ProtoTuple::DestinationPort(n) => dport = Some(*n),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let missing = |what: &str| format!("{which} without {what}");
    let (src, dst) = match (src, dst) {
        (Some(IpAddr::V4(s)), Some(IpAddr::V4(d))) => (s, d),
        (Some(_), Some(_)) => return Ok(None),
        _ => return Err(missing("CTA_TUPLE_IP addresses")),
    };
    Ok(Some(Tuple {
        src,
        dst,
        protocol: protocol.ok_or_else(|| missing("CTA_PROTO_NUM"))?,
        sport,
        dport,
    }))
}

/// An entry from the attributes of one `IPCTNL_MSG_CT_NEW` message of a
/// dump; `Ok(None)` for an IPv6 entry.
fn entry(attrs: &[ConntrackAttribute]) -> Result<Option<Entry>, String> {
    let (mut original, mut reply, mut tcp_state, mut status) = (None, None, None, 0);
    for attr in attrs {
        match attr {
            ConntrackAttribute::CtaTupleOrig(t) => original = Some(tuple(t, "CTA_TUPLE_ORIG")?),
            ConntrackAttribute::CtaTupleReply(t) => reply = Some(tuple(t, "CTA_TUPLE_REPLY")?),
            ConntrackAttribute::CtaStatus(s) => status = s.bits(),
            ConntrackAttribute::CtaProtoInfo(infos) => {
                for info in infos {
                    if let ProtoInfo::TCP(tcp) = info {
                        for t in tcp {
                            if let ProtoInfoTCP::State(s) = t {
                                tcp_state = Some(tcp_state_name(*s));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    match (original, reply) {
        (Some(Some(original)), Some(Some(reply))) => Ok(Some(Entry {
            original,
            reply,
            tcp_state,
            status: status_names(status),
        })),
        (Some(None), _) | (_, Some(None)) => Ok(None),
        (None, _) => Err("entry without CTA_TUPLE_ORIG".into()),
        (_, None) => Err("entry without CTA_TUPLE_REPLY".into()),
    }
}

/// The dump request: `IPCTNL_MSG_CT_GET` for family IPv4 with
/// `NLM_F_REQUEST | NLM_F_DUMP`, as `conntrack -L -f ipv4` sends it.
fn dump_request(seq: u32) -> Vec<u8> {
    request(seq, NLM_F_DUMP, ConntrackMessage::Get(Vec::new()))
}

fn dump_over(wire: &mut dyn Wire) -> Result<Vec<Entry>, ConntrackError> {
    const SEQ: u32 = 1;
    let messages: Vec<NetfilterMessage> =
        wire::exchange(wire, SEQ, &dump_request(SEQ)).map_err(failure)?;
    let mut out = Vec::new();
    for m in messages {
        if let NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)) = m.inner {
            out.extend(entry(&attrs).map_err(|reason| ConntrackError::Reply { reason })?);
        }
    }
    Ok(out)
}

/// An exchange's failure in conntrack's words.
fn failure(f: Failure) -> ConntrackError {
    match f {
        Failure::Errno(errno) if is_unavailable(errno) => ConntrackError::Unavailable,
        Failure::Errno(errno) => ConntrackError::Kernel { errno },
        Failure::Io(e) => ConntrackError::Io(e),
        Failure::Reply(reason) => ConntrackError::Reply { reason },
    }
}

/// Dump the conntrack table of the current thread's namespace, like
/// `conntrack -L -f ipv4`.
pub fn dump() -> Result<Vec<Entry>, ConntrackError> {
    dump_over(&mut socket()?)
}

/// A `NETLINK_NETFILTER` socket in the current thread's namespace.
fn socket() -> Result<netlink_sys::Socket, ConntrackError> {
    crate::kernel::conntrack::socket().map_err(|e| match e.raw_os_error() {
        Some(errno) if is_unavailable(errno) => ConntrackError::Unavailable,
        _ => ConntrackError::Io(e),
    })
}

/// Why a named namespace could not be entered.
fn netns_error(netns: &str) -> impl FnOnce(io::Error) -> ConntrackError + '_ {
    move |source| ConntrackError::Netns {
        netns: netns.to_string(),
        source,
    }
}

/// Dump inside a named namespace (`/run/netns/NAME`), like
/// `ip netns exec NAME conntrack -L -f ipv4`: a short-lived thread enters it
/// and reads the table there. IPv4 only.
pub fn dump_in(netns: &str) -> Result<Vec<Entry>, ConntrackError> {
    crate::sys::in_netns(netns, dump).map_err(netns_error(netns))?
}

/// conntrack-tools' protocol names.
fn protocol_name(n: u8) -> &'static str {
    match n {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        33 => "dccp",
        47 => "gre",
        132 => "sctp",
        136 => "udplite",
        _ => "unknown",
    }
}

fn push_tuple(line: &mut String, t: &Tuple, redact: bool) {
    use std::fmt::Write;
    let _ = write!(line, " src={} dst={}", t.src, t.dst);
    let port = |p: u16| {
        if redact && EPHEMERAL_PORTS.contains(&p) {
            "*".to_string()
        } else {
            p.to_string()
        }
    };
    if let Some(p) = t.sport {
        let _ = write!(line, " sport={}", port(p));
    }
    if let Some(p) = t.dport {
        let _ = write!(line, " dport={}", port(p));
    }
}

/// One line per entry, like `conntrack -L`, sorted:
///
/// `tcp 6 TIME_WAIT src=172.23.96.23 dst=192.168.13.23 sport=41234 dport=80
/// src=172.23.96.163 dst=172.23.96.23 sport=80 dport=41234 [ASSURED]`
///
/// (without the timeout, mark and use count). With `redact`, for golden
/// files, ports in [`EPHEMERAL_PORTS`] are written `*` and what changes with
/// timing is left out (the TCP state, `[UNREPLIED]`, `[ASSURED]`):
///
/// `tcp 6 src=172.23.96.23 dst=192.168.13.23 sport=* dport=80
/// src=172.23.96.163 dst=172.23.96.23 sport=80 dport=*`
///
/// Redacted lines that read the same are one: how many ephemeral ports a
/// flow went through changes with timing (a VXLAN tunnel's UDP source
/// port follows the inner packet's hash, and a TCP retransmission after a
/// timeout picks a new hash for its socket: one more tunnel entry).
pub fn format(entries: &[Entry], redact: bool) -> Vec<String> {
    let mut lines: Vec<String> = entries
        .iter()
        .map(|e| {
            let p = e.original.protocol;
            let mut line = format!("{} {p}", protocol_name(p));
            if let (false, Some(state)) = (redact, &e.tcp_state) {
                line.push(' ');
                line.push_str(state);
            }
            push_tuple(&mut line, &e.original, redact);
            if !redact && !e.has("SEEN_REPLY") {
                line.push_str(" [UNREPLIED]");
            }
            push_tuple(&mut line, &e.reply, redact);
            if !redact && e.has("ASSURED") {
                line.push_str(" [ASSURED]");
            }
            line
        })
        .collect();
    lines.sort();
    if redact {
        lines.dedup();
    }
    lines
}

/// The entries whose original or reply tuple mentions `addr`, like
/// `conntrack -L --src ADDR` and friends together.
pub fn involving(entries: &[Entry], addr: Ipv4Addr) -> Vec<&Entry> {
    entries
        .iter()
        .filter(|e| e.original.mentions(addr) || e.reply.mentions(addr))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(172, 23, 96, 23);
    const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 13, 23);
    const BACKEND: Ipv4Addr = Ipv4Addr::new(172, 23, 96, 163);

    /// A netlink attribute: length, type (with NLA_F_NESTED for nests, as
    /// the kernel's `nla_nest_start` sets it), value, padding.
    fn nla(kind: u16, nested: bool, value: &[u8]) -> Vec<u8> {
        let len = 4 + value.len();
        let kind = if nested { kind | 0x8000 } else { kind };
        let mut out = Vec::new();
        out.extend((len as u16).to_ne_bytes());
        out.extend(kind.to_ne_bytes());
        out.extend(value);
        out.resize(len.next_multiple_of(4), 0);
        out
    }

    /// CTA_TUPLE_{ORIG,REPLY} built byte by byte after `nf_conntrack_tuple`
    /// dumping in `nf_conntrack_netlink.c`.
    fn tuple_nla(kind: u16, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
        let ip = [
            nla(1, false, &src.octets()), // CTA_IP_V4_SRC
            nla(2, false, &dst.octets()), // CTA_IP_V4_DST
        ]
        .concat();
        let proto = [
            nla(1, false, &[6]),                 // CTA_PROTO_NUM: TCP
            nla(2, false, &sport.to_be_bytes()), // CTA_PROTO_SRC_PORT
            nla(3, false, &dport.to_be_bytes()), // CTA_PROTO_DST_PORT
        ]
        .concat();
        let body = [
            nla(1, true, &ip),      // CTA_TUPLE_IP
            nla(2, true, &proto),   // CTA_TUPLE_PROTO
            nla(3, false, &[0, 0]), // CTA_TUPLE_ZONE: ignored
        ]
        .concat();
        nla(kind, true, &body)
    }

    /// One IPCTNL_MSG_CT_NEW message of a dump: the DNAT-ed connection
    /// CLIENT:41234 -> VIP:80 served by BACKEND:80, in TIME_WAIT.
    fn dnat_message(seq: u32) -> Vec<u8> {
        let tcp = [
            nla(1, false, &[7]),          // CTA_PROTOINFO_TCP_STATE: TIME_WAIT
            nla(2, false, &[7]),          // CTA_PROTOINFO_TCP_WSCALE_ORIGINAL
            nla(4, false, &[0x23, 0x23]), // CTA_PROTOINFO_TCP_FLAGS_ORIGINAL
        ]
        .concat();
        // SEEN_REPLY | ASSURED | CONFIRMED | DST_NAT | DST_NAT_DONE
        let status: u32 = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5) | (1 << 8);
        let attrs = [
            tuple_nla(1, CLIENT, VIP, 41234, 80),
            tuple_nla(2, BACKEND, CLIENT, 80, 41234),
            nla(3, false, &status.to_be_bytes()), // CTA_STATUS
            nla(7, false, &120u32.to_be_bytes()), // CTA_TIMEOUT
            nla(4, true, &nla(1, true, &tcp)),    // CTA_PROTOINFO { TCP }
            nla(12, false, &7u32.to_be_bytes()),  // CTA_ID: ignored
        ]
        .concat();
        let mut payload = vec![2, 0, 0, 0]; // nfgenmsg: AF_INET, version 0, res_id 0
        payload.extend(attrs);
        // NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW, NLM_F_MULTI
        message(1 << 8, 0x2, seq, &payload)
    }

    fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend((16 + payload.len() as u32).to_ne_bytes());
        out.extend(kind.to_ne_bytes());
        out.extend(flags.to_ne_bytes());
        out.extend(seq.to_ne_bytes());
        out.extend(0u32.to_ne_bytes());
        out.extend(payload);
        out
    }

    fn done(seq: u32) -> Vec<u8> {
        message(3, 0x2, seq, &0i32.to_ne_bytes()) // NLMSG_DONE
    }

    fn dnat_entry() -> Entry {
        Entry {
            original: Tuple {
                src: CLIENT,
                dst: VIP,
                protocol: 6,
                sport: Some(41234),
                dport: Some(80),
            },
            reply: Tuple {
                src: BACKEND,
                dst: CLIENT,
                protocol: 6,
                sport: Some(80),
                dport: Some(41234),
            },
            tcp_state: Some("TIME_WAIT".into()),
            status: [
                "SEEN_REPLY",
                "ASSURED",
                "CONFIRMED",
                "DST_NAT",
                "DST_NAT_DONE",
            ]
            .map(String::from)
            .to_vec(),
        }
    }

    use crate::wire::Replay;

    #[test]
    fn request_bytes_match_nfnetlink_h() {
        #[rustfmt::skip]
        let want: Vec<u8> = vec![
            // nlmsghdr: len 20, type CTNETLINK<<8 | CT_GET, REQUEST|DUMP, seq 9
            20, 0, 0, 0, 0x01, 0x01, 0x01, 0x03, 9, 0, 0, 0, 0, 0, 0, 0,
            // nfgenmsg: NFPROTO_IPV4, version 0, res_id 0
            2, 0, 0, 0,
        ];
        assert_eq!(dump_request(9), want);
    }

    #[test]
    fn decodes_a_hand_built_dnat_entry() {
        // Two messages in the first datagram, the end of the dump in the
        // second, and a stray answer to an older request that is skipped.
        let first = [dnat_message(1), dnat_message(1)].concat();
        let second = [dnat_message(77), done(1)].concat();
        let mut wire = Replay::new(vec![first, second]);
        let got = dump_over(&mut wire).expect("dump");
        assert_eq!(got, vec![dnat_entry(), dnat_entry()]);
        assert_eq!(wire.sent, vec![dump_request(1)]);
    }

    #[test]
    fn missing_subsystem_is_unavailable() {
        // nlmsgerr: -EOPNOTSUPP, then the request's header.
        let mut payload = (-95i32).to_ne_bytes().to_vec();
        payload.extend(&dump_request(1)[..16]);
        let mut wire = Replay::new(vec![message(2, 0, 1, &payload)]);
        let err = dump_over(&mut wire).unwrap_err();
        assert!(matches!(err, ConntrackError::Unavailable), "{err:?}");
        assert_eq!(
            err.to_string(),
            "conntrack is not available in this kernel (nf_conntrack)"
        );
    }

    #[test]
    fn other_kernel_errors_say_what_errno_means() {
        let mut payload = (-1i32).to_ne_bytes().to_vec();
        payload.extend(&dump_request(1)[..16]);
        let mut wire = Replay::new(vec![message(2, 0, 1, &payload)]);
        let err = dump_over(&mut wire).unwrap_err();
        assert_eq!(
            err.to_string(),
            "dump the conntrack table: Operation not permitted"
        );
    }

    #[test]
    fn empty_table() {
        let mut wire = Replay::new(vec![done(1)]);
        assert_eq!(dump_over(&mut wire).expect("dump"), vec![]);
    }

    #[test]
    fn format_like_conntrack_l() {
        let mut unreplied = dnat_entry();
        unreplied.original.dst = BACKEND;
        unreplied.reply.src = BACKEND;
        unreplied.tcp_state = Some("SYN_SENT".into());
        unreplied.status = vec!["CONFIRMED".into()];
        let got = format(&[dnat_entry(), unreplied], false);
        assert_eq!(
            got,
            [
                "tcp 6 SYN_SENT src=172.23.96.23 dst=172.23.96.163 sport=41234 dport=80 \
                 [UNREPLIED] src=172.23.96.163 dst=172.23.96.23 sport=80 dport=41234",
                "tcp 6 TIME_WAIT src=172.23.96.23 dst=192.168.13.23 sport=41234 dport=80 \
                 src=172.23.96.163 dst=172.23.96.23 sport=80 dport=41234 [ASSURED]",
            ]
        );
    }

    #[test]
    fn format_redacts_ephemeral_ports_and_sorts() {
        let mut udp = dnat_entry();
        udp.original = Tuple {
            src: CLIENT,
            dst: Ipv4Addr::new(10, 0, 0, 1),
            protocol: 17,
            sport: Some(32767), // below the range: kept
            dport: Some(61000), // above the range: kept
        };
        udp.reply = Tuple {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: CLIENT,
            protocol: 17,
            sport: Some(61000),
            dport: Some(32767),
        };
        udp.tcp_state = None;
        let mut icmp = udp.clone();
        icmp.original.protocol = 1;
        icmp.original.sport = None;
        icmp.original.dport = None;
        icmp.reply.protocol = 1;
        icmp.reply.sport = None;
        icmp.reply.dport = None;
        assert_eq!(
            format(&[udp, dnat_entry(), icmp], true),
            [
                "icmp 1 src=172.23.96.23 dst=10.0.0.1 src=10.0.0.1 dst=172.23.96.23",
                "tcp 6 src=172.23.96.23 dst=192.168.13.23 sport=* dport=80 \
                 src=172.23.96.163 dst=172.23.96.23 sport=80 dport=*",
                "udp 17 src=172.23.96.23 dst=10.0.0.1 sport=32767 dport=61000 \
                 src=10.0.0.1 dst=172.23.96.23 sport=61000 dport=32767",
            ]
        );
    }

    /// Two entries of one flow that differ only in an ephemeral port (a
    /// tunnel's source port after a retransmission) are one redacted line
    /// and two plain ones.
    #[test]
    fn redacted_lines_that_read_the_same_are_one() {
        let first = dnat_entry();
        let mut second = dnat_entry();
        second.original.sport = Some(50001);
        second.reply.dport = Some(50001);
        let both = [first, second];
        assert_eq!(format(&both, true), format(&both[..1], true));
        assert_eq!(format(&both, true).len(), 1);
        assert_eq!(format(&both, false).len(), 2);
    }

    #[test]
    fn involving_looks_at_both_tuples() {
        let entries = [dnat_entry()];
        assert_eq!(involving(&entries, CLIENT).len(), 1);
        // Only in the reply: the backend the VIP was DNAT-ed to.
        assert_eq!(involving(&entries, BACKEND).len(), 1);
        assert_eq!(involving(&entries, VIP).len(), 1);
        assert!(involving(&entries, Ipv4Addr::new(10, 9, 9, 9)).is_empty());
    }

    #[test]
    fn status_bits_by_name() {
        assert_eq!(status_names(0b110), ["SEEN_REPLY", "ASSURED"]);
        assert_eq!(status_names(1 << 20), ["BIT20"]);
        assert_eq!(tcp_state_name(3), "ESTABLISHED");
    }
}
