//! IPVS virtual services and their real servers, over generic netlink, like
//! `ipvsadm` (kube-proxy's IPVS mode is this data path).
//!
//! Written by hand because no crate does it: `ipvs` on crates.io is a name
//! reservation and `netlink-packet-ipvs` is built on netlink crates too old
//! for the rest of labctl. The wire format follows the kernel UAPI header
//! `include/uapi/linux/ip_vs.h` and the parser in `net/netfilter/ipvs/
//! ip_vs_ctl.c`; Go's `moby/ipvs` (used by Docker's swarm load balancer) is
//! the reference client. Framing is `netlink-packet-core` and
//! `netlink-packet-generic`; the few messages go over a blocking
//! `NETLINK_GENERIC` socket, one request and its answer at a time.
//!
//! Only IPv4 services keyed by protocol, address and port are modelled:
//! labs never make IPv6 or firewall-mark services, and a dump leaves any such
//! service out.

use crate::wire::{self, Failure, Wire};
use std::fmt;
use std::io;
use std::net::Ipv4Addr;

use netlink_packet_core::{
    DecodeError, Emitable, NLA_F_NESTED, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, Nla, NlasIterator,
    ParseableParametrized, parse_string, parse_u16, parse_u16_be, parse_u32,
};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use serde::Serialize;

/// Numbers from `include/uapi/linux/ip_vs.h` and `genetlink.h`.
mod uapi {
    pub const GENL_ID_CTRL: u16 = 0x10;
    pub const CTRL_CMD_GETFAMILY: u8 = 3;
    pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
    pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;

    pub const IPVS_GENL_NAME: &str = "IPVS";
    pub const IPVS_GENL_VERSION: u8 = 1;

    pub const IPVS_CMD_NEW_SERVICE: u8 = 1;
    pub const IPVS_CMD_DEL_SERVICE: u8 = 3;
    pub const IPVS_CMD_GET_SERVICE: u8 = 4;
    pub const IPVS_CMD_NEW_DEST: u8 = 5;
    pub const IPVS_CMD_DEL_DEST: u8 = 7;
    pub const IPVS_CMD_GET_DEST: u8 = 8;
    pub const IPVS_CMD_FLUSH: u8 = 17;

    pub const IPVS_CMD_ATTR_SERVICE: u16 = 1;
    pub const IPVS_CMD_ATTR_DEST: u16 = 2;

    pub const IPVS_SVC_ATTR_AF: u16 = 1;
    pub const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
    pub const IPVS_SVC_ATTR_ADDR: u16 = 3;
    pub const IPVS_SVC_ATTR_PORT: u16 = 4;
    pub const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
    /// IP_VS_SCHEDNAME_MAXLEN (16) less the NUL.
    pub const SCHED_NAME_MAX: usize = 15;
    pub const IPVS_SVC_ATTR_FLAGS: u16 = 7;
    pub const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
    /// `IP_VS_SVC_F_PERSISTENT` of `struct ip_vs_flags`.
    pub const IP_VS_SVC_F_PERSISTENT: u32 = 0x0001;
    pub const IPVS_SVC_ATTR_NETMASK: u16 = 9;

    pub const IPVS_DEST_ATTR_ADDR: u16 = 1;
    pub const IPVS_DEST_ATTR_PORT: u16 = 2;
    pub const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
    pub const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
    pub const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
    pub const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
    pub const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
    pub const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
    pub const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;

    pub const IP_VS_CONN_F_MASQ: u32 = 0;
    pub const IP_VS_CONN_F_LOCALNODE: u32 = 1;
    pub const IP_VS_CONN_F_TUNNEL: u32 = 2;
    pub const IP_VS_CONN_F_DROUTE: u32 = 3;

    pub const AF_INET: u16 = 2;
    pub const IPPROTO_TCP: u16 = 6;
    pub const IPPROTO_UDP: u16 = 17;
}
use uapi::*;

/// Transport protocol of a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn number(self) -> u16 {
        match self {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
        }
    }

    fn from_number(n: u16) -> Option<Protocol> {
        match n {
            IPPROTO_TCP => Some(Protocol::Tcp),
            IPPROTO_UDP => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// How IPVS hands a connection to a real server (`IP_VS_CONN_F_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Forward {
    /// NAT: the destination address is rewritten (`ipvsadm -m`); kube-proxy's mode.
    Masq,
    /// Reported by the kernel, never asked for: the real server's address is
    /// local to the namespace, so the packet is delivered here.
    Local,
    /// IP-in-IP to the real server (`ipvsadm -i`).
    Tunnel,
    /// Direct routing: only the MAC address is rewritten (`ipvsadm -g`).
    DirectRoute,
}

impl Forward {
    fn number(self) -> u32 {
        match self {
            Forward::Masq => IP_VS_CONN_F_MASQ,
            Forward::Local => IP_VS_CONN_F_LOCALNODE,
            Forward::Tunnel => IP_VS_CONN_F_TUNNEL,
            Forward::DirectRoute => IP_VS_CONN_F_DROUTE,
        }
    }

    fn from_number(n: u32) -> Option<Forward> {
        match n {
            IP_VS_CONN_F_MASQ => Some(Forward::Masq),
            IP_VS_CONN_F_LOCALNODE => Some(Forward::Local),
            IP_VS_CONN_F_TUNNEL => Some(Forward::Tunnel),
            IP_VS_CONN_F_DROUTE => Some(Forward::DirectRoute),
            _ => None,
        }
    }

    /// The word `ipvsadm -Ln` prints.
    pub fn ipvsadm_name(self) -> &'static str {
        match self {
            Forward::Masq => "Masq",
            Forward::Local => "Local",
            Forward::Tunnel => "Tunnel",
            Forward::DirectRoute => "Route",
        }
    }
}

/// A virtual service: the VIP:port clients connect to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Service {
    pub protocol: Protocol,
    pub addr: Ipv4Addr,
    pub port: u16,
    /// Scheduler module name, e.g. "rr", "wrr", "lc", "sh".
    pub scheduler: String,
    /// Persistence timeout in seconds (`ipvsadm -p TIMEOUT`): a client
    /// address keeps its real server while it has a connection or the
    /// timeout has not run out since its last one. `None`: not persistent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent: Option<u32>,
}

impl Service {
    /// A round-robin service, like `ipvsadm -A -t ADDR:PORT -s rr`.
    pub fn new(protocol: Protocol, addr: Ipv4Addr, port: u16) -> Service {
        Service {
            protocol,
            addr,
            port,
            scheduler: "rr".to_string(),
            persistent: None,
        }
    }

    fn sort_key(&self) -> (Ipv4Addr, u16, Protocol) {
        (self.addr, self.port, self.protocol)
    }
}

/// `192.168.13.23:80/tcp`.
impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.addr, self.port, self.protocol)
    }
}

/// A real server behind a service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Dest {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
    pub forward: Forward,
}

impl Dest {
    /// A NAT destination of weight 1, like `ipvsadm -a ... -r ADDR:PORT -m -w 1`.
    pub fn new(addr: Ipv4Addr, port: u16) -> Dest {
        Dest {
            addr,
            port,
            weight: 1,
            forward: Forward::Masq,
        }
    }
}

/// `10.0.0.2:8080`.
impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.port)
    }
}

/// A real server as a dump reports it, with its connection counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DestInfo {
    pub dest: Dest,
    /// Connections in ESTABLISHED (TCP) state.
    pub active: u32,
    /// All other connections (TIME_WAIT, FIN_WAIT, UDP ...).
    pub inactive: u32,
}

/// What was being done when the kernel said no.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Open,
    AddService,
    DelService,
    AddDest,
    DelDest,
    Dump,
    Flush,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Open => "open IPVS",
            Op::AddService => "add service",
            Op::DelService => "delete service",
            Op::AddDest => "add destination",
            Op::DelDest => "delete destination",
            Op::Dump => "list services",
            Op::Flush => "flush IPVS",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    #[error(
        "kernel has no IPVS (module ip_vs): generic netlink has no \"IPVS\" family; \
         load it with `modprobe ip_vs`"
    )]
    NoIpvs,
    #[error("enter network namespace {netns}")]
    Netns {
        netns: String,
        #[source]
        source: io::Error,
    },
    #[error("{op}: netlink socket")]
    Io {
        op: Op,
        #[source]
        source: io::Error,
    },
    /// The kernel refused a request; `what` and `problem` say it in words,
    /// e.g. "service 192.168.13.23:80/tcp" "already exists".
    #[error("{what} {problem} ({})", nix::errno::Errno::from_raw(*errno).desc())]
    Kernel {
        op: Op,
        what: String,
        problem: &'static str,
        errno: i32,
    },
    #[error("{op}: unexpected kernel reply: {reason}")]
    Reply { op: Op, reason: String },
    #[error(
        "scheduler name \"{name}\" of service {service} is longer than the kernel's \
         {} bytes",
        SCHED_NAME_MAX
    )]
    SchedulerName { service: String, name: String },
}

impl IpvsError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            IpvsError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// Words for an errno from an IPVS command, from what `ip_vs_ctl.c` means
/// by it for that command.
fn kernel_error(op: Op, svc: Option<&Service>, dest: Option<&Dest>, errno: i32) -> IpvsError {
    use nix::errno::Errno;
    // "10.0.0.2:8080 of service 192.168.13.23:80/tcp", or the service alone.
    let object = match (svc, dest) {
        (Some(s), Some(d)) => format!(" {d} of service {s}"),
        (Some(s), None) => format!(" {s}"),
        _ => String::new(),
    };
    let named = |noun: &str| format!("{noun}{object}");
    let (what, problem) = match (op, Errno::from_raw(errno), svc) {
        // Everything but NEW_SERVICE looks the service up first.
        (_, Errno::ESRCH, Some(s)) => (format!("service {s}"), "does not exist"),
        (_, Errno::EEXIST, Some(_)) if dest.is_some() => (named("destination"), "already exists"),
        (_, Errno::EEXIST, Some(_)) => (named("service"), "already exists"),
        (Op::AddService, Errno::ENOENT, Some(s)) => (
            format!("scheduler \"{}\" of service {s}", s.scheduler),
            "is not available",
        ),
        (Op::DelDest, Errno::ENOENT, _) => (named("destination"), "does not exist"),
        (_, Errno::EPERM, _) => (
            format!("{op}{object}"),
            "is not permitted (needs CAP_NET_ADMIN)",
        ),
        // ip_vs_new_dest() wants inet_addr_type() to say local or unicast;
        // with no IPv4 address in the namespace there is no local table
        // and every address is "broadcast".
        (Op::AddDest, Errno::EINVAL, _) => (
            format!("{op}{object}"),
            "was rejected (IPVS rejects every destination in a namespace \
             without an IPv4 address, e.g. with lo down)",
        ),
        (_, Errno::EINVAL, _) => (format!("{op}{object}"), "was rejected"),
        _ => (format!("{op}{object}"), "failed"),
    };
    IpvsError::Kernel {
        op,
        what,
        problem,
        errno,
    }
}

/// A netlink attribute as we send it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Attr {
    U16(u16, u16),
    U32(u16, u32),
    /// Network byte order: ports (`nla_get_be16` in the kernel, no
    /// NLA_F_NET_BYTEORDER flag, as ipvsadm sends them).
    Be16(u16, u16),
    Bytes(u16, Vec<u8>),
    /// NUL-terminated, as `nla_strscpy` expects.
    Str(u16, String),
    Nested(u16, Vec<Attr>),
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match self {
            Attr::U16(..) | Attr::Be16(..) => 2,
            Attr::U32(..) => 4,
            Attr::Bytes(_, b) => b.len(),
            Attr::Str(_, s) => s.len() + 1,
            Attr::Nested(_, inner) => inner.as_slice().buffer_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            // moby/ipvs sets the flag too; the kernel parses IPVS with the
            // deprecated (flag-agnostic) parser, so either way is accepted.
            Attr::Nested(k, _) => k | NLA_F_NESTED,
            Attr::U16(k, _)
            | Attr::U32(k, _)
            | Attr::Be16(k, _)
            | Attr::Bytes(k, _)
            | Attr::Str(k, _) => *k,
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            Attr::U16(_, v) => buf.copy_from_slice(&v.to_ne_bytes()),
            Attr::U32(_, v) => buf.copy_from_slice(&v.to_ne_bytes()),
            Attr::Be16(_, v) => buf.copy_from_slice(&v.to_be_bytes()),
            Attr::Bytes(_, b) => buf.copy_from_slice(b),
            Attr::Str(_, s) => {
                buf[..s.len()].copy_from_slice(s.as_bytes());
                buf[s.len()] = 0;
            }
            Attr::Nested(_, inner) => inner.as_slice().emit(buf),
        }
    }
}

/// A generic netlink request body: its command and attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Request {
    cmd: u8,
    version: u8,
    attrs: Vec<Attr>,
}

impl GenlFamily for Request {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }
    fn command(&self) -> u8 {
        self.cmd
    }
    fn version(&self) -> u8 {
        self.version
    }
}

impl Emitable for Request {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }
    fn emit(&self, buf: &mut [u8]) {
        self.attrs.as_slice().emit(buf)
    }
}

/// A generic netlink answer, attributes left as bytes until we know what
/// they are.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reply {
    cmd: u8,
    attrs: Vec<u8>,
}

impl ParseableParametrized<[u8], GenlHeader> for Reply {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        Ok(Reply {
            cmd: header.cmd,
            attrs: buf.to_vec(),
        })
    }
}

/// The attributes of one nesting level, by type.
struct Attrs<'a>(Vec<(u16, &'a [u8])>);

impl<'a> Attrs<'a> {
    fn parse(buf: &'a [u8]) -> Result<Attrs<'a>, String> {
        let mut out = Vec::new();
        for nla in NlasIterator::new(buf) {
            let nla = nla.map_err(|e| e.to_string())?;
            let (kind, len) = (nla.kind(), nla.length() as usize);
            // `value()` borrows the NlaBuffer; slice the outer buffer instead
            // so the bytes live as long as `buf` (length checked by the
            // iterator).
            let whole: &'a [u8] = nla.into_inner();
            out.push((kind, &whole[4..len]));
        }
        Ok(Attrs(out))
    }

    fn get(&self, kind: u16) -> Option<&'a [u8]> {
        self.0.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
    }

    fn need(&self, kind: u16, name: &str) -> Result<&'a [u8], String> {
        self.get(kind).ok_or_else(|| format!("no {name} attribute"))
    }

    fn u16(&self, kind: u16, name: &str) -> Result<u16, String> {
        parse_u16(self.need(kind, name)?).map_err(|e| format!("{name}: {e}"))
    }

    fn be16(&self, kind: u16, name: &str) -> Result<u16, String> {
        parse_u16_be(self.need(kind, name)?).map_err(|e| format!("{name}: {e}"))
    }

    fn u32(&self, kind: u16, name: &str) -> Result<u32, String> {
        parse_u32(self.need(kind, name)?).map_err(|e| format!("{name}: {e}"))
    }
}

/// `union nf_inet_addr`: 16 bytes, an IPv4 address in the first four. The
/// kernel `nla_memcpy`s up to 16 bytes into a zeroed union, so 4 would do
/// too (moby sends 4); we send 16 like ipvsadm, which is also what dumps
/// return.
fn inet_addr(addr: Ipv4Addr) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b[..4].copy_from_slice(&addr.octets());
    b
}

fn parse_inet_addr(b: &[u8]) -> Result<Ipv4Addr, String> {
    match b.len() {
        4 | 16 => Ok(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
        n => Err(format!("address of {n} bytes")),
    }
}

/// The attributes that identify a service (what DEL_SERVICE and the dest
/// commands need).
fn service_key(s: &Service) -> Vec<Attr> {
    vec![
        Attr::U16(IPVS_SVC_ATTR_AF, AF_INET),
        Attr::U16(IPVS_SVC_ATTR_PROTOCOL, s.protocol.number()),
        Attr::Bytes(IPVS_SVC_ATTR_ADDR, inet_addr(s.addr)),
        Attr::Be16(IPVS_SVC_ATTR_PORT, s.port),
    ]
}

/// A whole service, for NEW_SERVICE: the kernel refuses it with EINVAL
/// unless scheduler, flags, timeout and netmask are all present.
fn service_full(s: &Service) -> Vec<Attr> {
    let mut attrs = service_key(s);
    // struct ip_vs_flags { u32 flags; u32 mask; }: IP_VS_SVC_F_PERSISTENT
    // or nothing, and the mask says all of them are being set.
    let mut flags = Vec::with_capacity(8);
    let f = if s.persistent.is_some() {
        IP_VS_SVC_F_PERSISTENT
    } else {
        0
    };
    flags.extend_from_slice(&f.to_ne_bytes());
    flags.extend_from_slice(&u32::MAX.to_ne_bytes());
    attrs.extend([
        Attr::Str(IPVS_SVC_ATTR_SCHED_NAME, s.scheduler.clone()),
        Attr::Bytes(IPVS_SVC_ATTR_FLAGS, flags),
        Attr::U32(IPVS_SVC_ATTR_TIMEOUT, s.persistent.unwrap_or(0)),
        // Persistence netmask, all ones for IPv4 as ipvsadm sends it.
        Attr::U32(IPVS_SVC_ATTR_NETMASK, u32::MAX),
    ]);
    attrs
}

/// The attributes that identify a destination (DEL_DEST).
fn dest_key(d: &Dest) -> Vec<Attr> {
    vec![
        Attr::Bytes(IPVS_DEST_ATTR_ADDR, inet_addr(d.addr)),
        Attr::Be16(IPVS_DEST_ATTR_PORT, d.port),
    ]
}

/// A whole destination, for NEW_DEST: forwarding method, weight and both
/// thresholds are required.
fn dest_full(d: &Dest) -> Vec<Attr> {
    let mut attrs = dest_key(d);
    attrs.extend([
        Attr::U32(IPVS_DEST_ATTR_FWD_METHOD, d.forward.number()),
        Attr::U32(IPVS_DEST_ATTR_WEIGHT, d.weight),
        Attr::U32(IPVS_DEST_ATTR_U_THRESH, 0),
        Attr::U32(IPVS_DEST_ATTR_L_THRESH, 0),
        Attr::U16(IPVS_DEST_ATTR_ADDR_FAMILY, AF_INET),
    ]);
    attrs
}

/// Read one service from the nested IPVS_CMD_ATTR_SERVICE of a dump. `None`
/// for services this module does not model (IPv6, firewall mark, SCTP).
fn parse_service(buf: &[u8]) -> Result<Option<Service>, String> {
    let a = Attrs::parse(buf)?;
    if a.u16(IPVS_SVC_ATTR_AF, "service family")? != AF_INET {
        return Ok(None);
    }
    // A firewall-mark service has IPVS_SVC_ATTR_FWMARK instead.
    if a.get(IPVS_SVC_ATTR_PROTOCOL).is_none() {
        return Ok(None);
    }
    let Some(protocol) = Protocol::from_number(a.u16(IPVS_SVC_ATTR_PROTOCOL, "protocol")?) else {
        return Ok(None);
    };
    let sched = a.need(IPVS_SVC_ATTR_SCHED_NAME, "scheduler")?;
    // struct ip_vs_flags, the flags first; the timeout counts only for a
    // persistent service.
    let persistent = match a.get(IPVS_SVC_ATTR_FLAGS) {
        Some(f) if f.len() >= 4 => {
            let flags = u32::from_ne_bytes([f[0], f[1], f[2], f[3]]);
            if flags & IP_VS_SVC_F_PERSISTENT != 0 {
                Some(a.u32(IPVS_SVC_ATTR_TIMEOUT, "persistence timeout")?)
            } else {
                None
            }
        }
        _ => None,
    };
    Ok(Some(Service {
        protocol,
        addr: parse_inet_addr(a.need(IPVS_SVC_ATTR_ADDR, "service address")?)?,
        port: a.be16(IPVS_SVC_ATTR_PORT, "service port")?,
        scheduler: parse_string(sched).map_err(|e| format!("scheduler: {e}"))?,
        persistent,
    }))
}

/// Read one destination from the nested IPVS_CMD_ATTR_DEST of a dump. `None`
/// for an IPv6 real server (possible behind an IPv4 tunnel service).
fn parse_dest(buf: &[u8]) -> Result<Option<DestInfo>, String> {
    let a = Attrs::parse(buf)?;
    if a.get(IPVS_DEST_ATTR_ADDR_FAMILY).is_some()
        && a.u16(IPVS_DEST_ATTR_ADDR_FAMILY, "destination family")? != AF_INET
    {
        return Ok(None);
    }
    let method = a.u32(IPVS_DEST_ATTR_FWD_METHOD, "forwarding method")?;
    let forward =
        Forward::from_number(method).ok_or_else(|| format!("forwarding method {method}"))?;
    Ok(Some(DestInfo {
        dest: Dest {
            addr: parse_inet_addr(a.need(IPVS_DEST_ATTR_ADDR, "destination address")?)?,
            port: a.be16(IPVS_DEST_ATTR_PORT, "destination port")?,
            weight: a.u32(IPVS_DEST_ATTR_WEIGHT, "weight")?,
            forward,
        },
        active: a.u32(IPVS_DEST_ATTR_ACTIVE_CONNS, "active connections")?,
        inactive: a.u32(IPVS_DEST_ATTR_INACT_CONNS, "inactive connections")?,
    }))
}

/// Encode one generic netlink request.
fn encode(family: u16, seq: u32, flags: u16, request: Request) -> Vec<u8> {
    let header = GenlHeader {
        cmd: request.cmd,
        version: request.version,
    };
    crate::wire::frame(seq, flags, GenlMessage::new(header, request, family))
}

/// A client for the IPVS tables of one network namespace.
///
/// The namespace needs an IPv4 address (at least `lo` up) before real
/// servers can be added: the kernel rejects them with EINVAL otherwise.
pub struct Ipvs {
    wire: Box<dyn Wire>,
    family: u16,
    seq: u32,
}

impl Ipvs {
    /// Open in the current thread's network namespace. The socket stays
    /// bound to that namespace, wherever the thread goes afterwards. Fails
    /// with [`IpvsError::NoIpvs`] when the kernel has no "IPVS" generic
    /// netlink family (module `ip_vs` not loaded or not built).
    pub fn open() -> Result<Ipvs, IpvsError> {
        let io_err = |source| IpvsError::Io {
            op: Op::Open,
            source,
        };
        let mut socket =
            netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_GENERIC).map_err(io_err)?;
        socket.bind_auto().map_err(io_err)?;
        Ipvs::over(Box::new(socket))
    }

    /// Open inside the named namespace `/run/netns/NETNS`, like
    /// `ip netns exec NETNS ipvsadm`: a short-lived thread enters it, opens
    /// the socket there and hands it back.
    pub fn open_in(netns: &str) -> Result<Ipvs, IpvsError> {
        crate::sys::in_netns(netns, Ipvs::open).map_err(|source| IpvsError::Netns {
            netns: netns.to_string(),
            source,
        })?
    }

    fn over(wire: Box<dyn Wire>) -> Result<Ipvs, IpvsError> {
        let mut ipvs = Ipvs {
            wire,
            family: 0,
            seq: 0,
        };
        ipvs.family = ipvs.resolve_family()?;
        Ok(ipvs)
    }

    /// CTRL_CMD_GETFAMILY "IPVS", like `genl ctrl get name IPVS`.
    fn resolve_family(&mut self) -> Result<u16, IpvsError> {
        let request = Request {
            cmd: CTRL_CMD_GETFAMILY,
            version: 1,
            attrs: vec![Attr::Str(CTRL_ATTR_FAMILY_NAME, IPVS_GENL_NAME.to_string())],
        };
        let replies = match self.exchange(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, request) {
            Ok(r) => r,
            Err(Failure::Errno(e)) if e == nix::errno::Errno::ENOENT as i32 => {
                return Err(IpvsError::NoIpvs);
            }
            Err(f) => return Err(self.fail(f, Op::Open, None, None)),
        };
        let reply = |reason: String| IpvsError::Reply {
            op: Op::Open,
            reason,
        };
        let first = replies
            .first()
            .ok_or_else(|| reply("no family in answer".into()))?;
        Attrs::parse(&first.attrs)
            .and_then(|a| a.u16(CTRL_ATTR_FAMILY_ID, "family id"))
            .map_err(reply)
    }

    /// Send one request and collect its answers: the messages of a dump up to
    /// NLMSG_DONE, or nothing up to the ACK.
    fn exchange(
        &mut self,
        family: u16,
        flags: u16,
        request: Request,
    ) -> Result<Vec<Reply>, Failure> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let replies: Vec<GenlMessage<Reply>> = wire::exchange(
            self.wire.as_mut(),
            seq,
            &encode(family, seq, flags, request),
        )?;
        Ok(replies.into_iter().map(|g| g.payload).collect())
    }

    fn fail(&self, f: Failure, op: Op, svc: Option<&Service>, dest: Option<&Dest>) -> IpvsError {
        match f {
            Failure::Errno(e) => kernel_error(op, svc, dest, e),
            Failure::Io(source) => IpvsError::Io { op, source },
            Failure::Reply(reason) => IpvsError::Reply { op, reason },
        }
    }

    /// An IPVS command acknowledged by the kernel.
    fn command(&mut self, cmd: u8, attrs: Vec<Attr>) -> Result<(), Failure> {
        let request = Request {
            cmd,
            version: IPVS_GENL_VERSION,
            attrs,
        };
        self.exchange(self.family, NLM_F_REQUEST | NLM_F_ACK, request)
            .map(|_| ())
    }

    /// Add a virtual service, like `ipvsadm -A -t ADDR:PORT -s SCHED`.
    pub fn add_service(&mut self, s: &Service) -> Result<(), IpvsError> {
        // The kernel would say only EINVAL (its policy caps the string).
        if s.scheduler.len() > SCHED_NAME_MAX {
            return Err(IpvsError::SchedulerName {
                service: s.to_string(),
                name: s.scheduler.clone(),
            });
        }
        let attrs = vec![Attr::Nested(IPVS_CMD_ATTR_SERVICE, service_full(s))];
        self.command(IPVS_CMD_NEW_SERVICE, attrs)
            .map_err(|f| self.fail(f, Op::AddService, Some(s), None))
    }

    /// Delete a virtual service and its real servers, like
    /// `ipvsadm -D -t ADDR:PORT`.
    pub fn del_service(&mut self, s: &Service) -> Result<(), IpvsError> {
        let attrs = vec![Attr::Nested(IPVS_CMD_ATTR_SERVICE, service_key(s))];
        self.command(IPVS_CMD_DEL_SERVICE, attrs)
            .map_err(|f| self.fail(f, Op::DelService, Some(s), None))
    }

    /// Add a real server to a service, like
    /// `ipvsadm -a -t VIP:PORT -r RIP:RPORT -m -w WEIGHT`.
    pub fn add_dest(&mut self, s: &Service, d: &Dest) -> Result<(), IpvsError> {
        let attrs = vec![
            Attr::Nested(IPVS_CMD_ATTR_SERVICE, service_key(s)),
            Attr::Nested(IPVS_CMD_ATTR_DEST, dest_full(d)),
        ];
        self.command(IPVS_CMD_NEW_DEST, attrs)
            .map_err(|f| self.fail(f, Op::AddDest, Some(s), Some(d)))
    }

    /// Remove a real server from a service, like
    /// `ipvsadm -d -t VIP:PORT -r RIP:RPORT`.
    pub fn del_dest(&mut self, s: &Service, d: &Dest) -> Result<(), IpvsError> {
        let attrs = vec![
            Attr::Nested(IPVS_CMD_ATTR_SERVICE, service_key(s)),
            Attr::Nested(IPVS_CMD_ATTR_DEST, dest_key(d)),
        ];
        self.command(IPVS_CMD_DEL_DEST, attrs)
            .map_err(|f| self.fail(f, Op::DelDest, Some(s), Some(d)))
    }

    /// Every IPv4 service with its real servers and their connection
    /// counts, like `ipvsadm -Ln`; sorted by address, port and protocol.
    pub fn services(&mut self) -> Result<Vec<(Service, Vec<DestInfo>)>, IpvsError> {
        let dump = |ipvs: &mut Ipvs, cmd, attrs| {
            let request = Request {
                cmd,
                version: IPVS_GENL_VERSION,
                attrs,
            };
            ipvs.exchange(ipvs.family, NLM_F_REQUEST | NLM_F_DUMP, request)
        };
        let bad = |reason: String| IpvsError::Reply {
            op: Op::Dump,
            reason,
        };
        let replies = dump(self, IPVS_CMD_GET_SERVICE, Vec::new())
            .map_err(|f| self.fail(f, Op::Dump, None, None))?;
        let mut out = Vec::new();
        for reply in replies {
            let attrs = Attrs::parse(&reply.attrs).map_err(bad)?;
            let nested = attrs.need(IPVS_CMD_ATTR_SERVICE, "service").map_err(bad)?;
            let Some(service) = parse_service(nested).map_err(bad)? else {
                continue;
            };
            let key = vec![Attr::Nested(IPVS_CMD_ATTR_SERVICE, service_key(&service))];
            let replies = dump(self, IPVS_CMD_GET_DEST, key)
                .map_err(|f| self.fail(f, Op::Dump, Some(&service), None))?;
            let mut dests = Vec::new();
            for reply in replies {
                let attrs = Attrs::parse(&reply.attrs).map_err(bad)?;
                let nested = attrs.need(IPVS_CMD_ATTR_DEST, "destination").map_err(bad)?;
                dests.extend(parse_dest(nested).map_err(bad)?);
            }
            dests.sort_by_key(|d| (d.dest.addr, d.dest.port));
            out.push((service, dests));
        }
        out.sort_by_key(|(s, _)| s.sort_key());
        Ok(out)
    }

    /// Remove every service of the namespace, like `ipvsadm -C`.
    pub fn flush(&mut self) -> Result<(), IpvsError> {
        self.command(IPVS_CMD_FLUSH, Vec::new())
            .map_err(|f| self.fail(f, Op::Flush, None, None))
    }
}

/// One entry of IPVS's connection table (`ipvsadm -Lnc`): a client socket,
/// the virtual service it addressed and the real server it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    pub client: std::net::SocketAddrV4,
    pub virtual_service: std::net::SocketAddrV4,
    pub real_server: std::net::SocketAddrV4,
}

/// The IPVS connection table of a named namespace, read from its
/// `/proc/net/ip_vs_conn` (the generic netlink API has no dump of it),
/// IPv4 only. No IPVS in the kernel: no connections.
pub fn connections_in(netns: &str) -> std::io::Result<Vec<Conn>> {
    crate::sys::in_netns(netns, || {
        // thread-self: /proc/net is the whole process's namespace.
        match std::fs::read_to_string("/proc/thread-self/net/ip_vs_conn") {
            Ok(text) => Ok(parse_conns(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    })?
}

/// `Pro FromIP FPrt ToIP TPrt DestIP DPrt State Expires ...`, addresses
/// and ports in hex; IPv6 lines and the header are skipped.
fn parse_conns(text: &str) -> Vec<Conn> {
    let socket = |ip: &str, port: &str| {
        if ip.len() != 8 {
            return None; // IPv6 (`%pI6`)
        }
        let ip = u32::from_str_radix(ip, 16).ok()?;
        let port = u16::from_str_radix(port, 16).ok()?;
        Some(std::net::SocketAddrV4::new(Ipv4Addr::from(ip), port))
    };
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(Conn {
                client: socket(f.get(1)?, f.get(2)?)?,
                virtual_service: socket(f.get(3)?, f.get(4)?)?,
                real_server: socket(f.get(5)?, f.get(6)?)?,
            })
        })
        .collect()
}

/// `ipvsadm -Ln` style text of a dump (without its version line), sorted,
/// for `labctl show ipvs`.
pub fn format_table(services: &[(Service, Vec<DestInfo>)]) -> String {
    use std::fmt::Write;
    let mut sorted: Vec<_> = services.iter().collect();
    sorted.sort_by_key(|(s, _)| s.sort_key());
    let mut out = String::from(
        "Prot LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
    );
    for (s, dests) in sorted {
        let proto = match s.protocol {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        };
        match s.persistent {
            // ipvsadm's "persistent %u".
            Some(t) => {
                let _ = writeln!(
                    out,
                    "{proto}  {}:{} {} persistent {t}",
                    s.addr, s.port, s.scheduler
                );
            }
            None => {
                let _ = writeln!(out, "{proto}  {}:{} {}", s.addr, s.port, s.scheduler);
            }
        }
        let mut dests: Vec<_> = dests.iter().collect();
        dests.sort_by_key(|d| (d.dest.addr, d.dest.port));
        for d in dests {
            // ipvsadm's "  -> %-28s %-7s %-6d %-10u %-10u".
            let line = format!(
                "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
                d.dest.to_string(),
                d.dest.forward.ipvsadm_name(),
                d.dest.weight,
                d.active,
                d.inactive
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    out
}

#[cfg(test)]
mod tests {

    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
    #[test]
    fn connection_table_lines_parse() {
        let text = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n\
                    TCP 0A000316 B7A2 2FF38BB7 0050 0A000326 0050 ESTABLISHED     899\n\
                    TCP fd00::1 1F90 fd00::2 0050 fd00::3 0050 NONE 10\n";
        let conns = parse_conns(text);
        assert_eq!(
            conns,
            vec![Conn {
                client: "10.0.3.22:47010".parse().unwrap(),
                virtual_service: "47.243.139.183:80".parse().unwrap(),
                real_server: "10.0.3.38:80".parse().unwrap(),
            }]
        );
    }

    use super::*;
    use netlink_packet_core::{DoneMessage, ErrorMessage};
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    const FAMILY: u16 = 0x22;

    fn vip() -> Service {
        Service::new(Protocol::Tcp, Ipv4Addr::new(192, 168, 13, 23), 80)
    }

    fn rip(last: u8) -> Dest {
        Dest::new(Ipv4Addr::new(10, 0, 0, last), 8080)
    }

    fn body(cmd: u8, attrs: Vec<Attr>) -> Request {
        Request {
            cmd,
            version: IPVS_GENL_VERSION,
            attrs,
        }
    }

    #[test]
    fn new_service_bytes_match_ip_vs_h() {
        let attrs = vec![Attr::Nested(IPVS_CMD_ATTR_SERVICE, service_full(&vip()))];
        let got = encode(
            FAMILY,
            7,
            NLM_F_REQUEST | NLM_F_ACK,
            body(IPVS_CMD_NEW_SERVICE, attrs),
        );
        #[rustfmt::skip]
        let want: Vec<u8> = [
            // nlmsghdr: len 104, type = family, flags REQUEST|ACK, seq 7, pid 0
            &[104, 0, 0, 0, 0x22, 0, 0x05, 0, 7, 0, 0, 0, 0, 0, 0, 0][..],
            // genlmsghdr: cmd NEW_SERVICE, version 1, reserved
            &[1, 1, 0, 0],
            // IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED, len 84
            &[84, 0, 0x01, 0x80],
            // AF = AF_INET (u16, padded to 4)
            &[6, 0, 1, 0, 2, 0, 0, 0],
            // PROTOCOL = IPPROTO_TCP
            &[6, 0, 2, 0, 6, 0, 0, 0],
            // ADDR: union nf_inet_addr, 192.168.13.23 then 12 zero bytes
            &[20, 0, 3, 0, 192, 168, 13, 23, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            // PORT = 80, big-endian
            &[6, 0, 4, 0, 0, 80, 0, 0],
            // SCHED_NAME = "rr\0", one byte of padding
            &[7, 0, 6, 0, b'r', b'r', 0, 0],
            // FLAGS: struct ip_vs_flags { flags 0, mask ~0 }
            &[12, 0, 7, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
            // TIMEOUT = 0
            &[8, 0, 8, 0, 0, 0, 0, 0],
            // NETMASK = 255.255.255.255
            &[8, 0, 9, 0, 0xff, 0xff, 0xff, 0xff],
        ]
        .concat();
        assert_eq!(got, want);
    }

    #[test]
    fn new_dest_bytes_match_ip_vs_h() {
        let mut d = rip(2);
        d.weight = 3;
        let attrs = vec![
            Attr::Nested(IPVS_CMD_ATTR_SERVICE, service_key(&vip())),
            Attr::Nested(IPVS_CMD_ATTR_DEST, dest_full(&d)),
        ];
        let got = encode(
            FAMILY,
            9,
            NLM_F_REQUEST | NLM_F_ACK,
            body(IPVS_CMD_NEW_DEST, attrs),
        );
        #[rustfmt::skip]
        let want: Vec<u8> = [
            // nlmsghdr: len 140
            &[140, 0, 0, 0, 0x22, 0, 0x05, 0, 9, 0, 0, 0, 0, 0, 0, 0][..],
            // genlmsghdr: cmd NEW_DEST, version 1
            &[5, 1, 0, 0],
            // IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED, len 48: the key only
            &[48, 0, 0x01, 0x80],
            &[6, 0, 1, 0, 2, 0, 0, 0],
            &[6, 0, 2, 0, 6, 0, 0, 0],
            &[20, 0, 3, 0, 192, 168, 13, 23, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[6, 0, 4, 0, 0, 80, 0, 0],
            // IPVS_CMD_ATTR_DEST | NLA_F_NESTED, len 72
            &[72, 0, 0x02, 0x80],
            // ADDR 10.0.0.2
            &[20, 0, 1, 0, 10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            // PORT 8080 = 0x1f90, big-endian
            &[6, 0, 2, 0, 0x1f, 0x90, 0, 0],
            // FWD_METHOD = IP_VS_CONN_F_MASQ
            &[8, 0, 3, 0, 0, 0, 0, 0],
            // WEIGHT = 3
            &[8, 0, 4, 0, 3, 0, 0, 0],
            // U_THRESH, L_THRESH = 0
            &[8, 0, 5, 0, 0, 0, 0, 0],
            &[8, 0, 6, 0, 0, 0, 0, 0],
            // ADDR_FAMILY = AF_INET
            &[6, 0, 11, 0, 2, 0, 0, 0],
        ]
        .concat();
        assert_eq!(got, want);
    }

    #[test]
    fn forwarding_methods_have_kernel_numbers() {
        for (f, n) in [
            (Forward::Masq, 0),
            (Forward::Local, 1),
            (Forward::Tunnel, 2),
            (Forward::DirectRoute, 3),
        ] {
            assert_eq!(f.number(), n);
            assert_eq!(Forward::from_number(n), Some(f));
        }
        assert_eq!(Forward::from_number(4), None);
    }

    /// An attribute as the kernel emits it in dumps: `nla_nest_start_noflag`,
    /// so no NLA_F_NESTED.
    struct Plain(Attr);

    impl Nla for Plain {
        fn value_len(&self) -> usize {
            self.0.value_len()
        }
        fn kind(&self) -> u16 {
            self.0.kind() & !NLA_F_NESTED
        }
        fn emit_value(&self, buf: &mut [u8]) {
            self.0.emit_value(buf)
        }
    }

    fn emit_plain(attrs: &[Plain]) -> Vec<u8> {
        let mut buf = vec![0u8; attrs.buffer_len()];
        attrs.emit(&mut buf);
        buf
    }

    /// The nested service of a GET_SERVICE dump, with what
    /// `ip_vs_genl_fill_service` puts there besides the key.
    fn kernel_service(s: &Service) -> Vec<u8> {
        let mut attrs = service_full(s);
        attrs.push(Attr::Nested(10, vec![Attr::U32(1, 5), Attr::U32(2, 9)])); // STATS
        attrs.push(Attr::Bytes(12, vec![0; 8])); // STATS64, opaque here
        let inner: Vec<Plain> = attrs.into_iter().map(Plain).collect();
        emit_plain(&[Plain(Attr::Bytes(
            IPVS_CMD_ATTR_SERVICE,
            emit_plain(&inner),
        ))])
    }

    /// The nested dest of a GET_DEST dump, as `ip_vs_genl_fill_dest` writes it.
    fn kernel_dest(d: &DestInfo) -> Vec<u8> {
        let inner: Vec<Plain> = [
            Attr::Bytes(IPVS_DEST_ATTR_ADDR, inet_addr(d.dest.addr)),
            Attr::Be16(IPVS_DEST_ATTR_PORT, d.dest.port),
            Attr::U32(IPVS_DEST_ATTR_FWD_METHOD, d.dest.forward.number()),
            Attr::U32(IPVS_DEST_ATTR_WEIGHT, d.dest.weight),
            Attr::Bytes(13, vec![0, 0, 0, 0]), // TUN_TYPE (u8, padded)
            Attr::Be16(14, 0),                 // TUN_PORT
            Attr::U16(15, 0),                  // TUN_FLAGS
            Attr::U32(IPVS_DEST_ATTR_U_THRESH, 0),
            Attr::U32(IPVS_DEST_ATTR_L_THRESH, 0),
            Attr::U32(IPVS_DEST_ATTR_ACTIVE_CONNS, d.active),
            Attr::U32(IPVS_DEST_ATTR_INACT_CONNS, d.inactive),
            Attr::U32(9, 0), // PERSIST_CONNS
            Attr::U16(IPVS_DEST_ATTR_ADDR_FAMILY, AF_INET),
            Attr::Nested(10, vec![Attr::U32(1, 0)]),
        ]
        .into_iter()
        .map(Plain)
        .collect();
        emit_plain(&[Plain(Attr::Bytes(IPVS_CMD_ATTR_DEST, emit_plain(&inner)))])
    }

    #[test]
    fn dumped_service_and_dest_parse_back() {
        let mut s = vip();
        s.scheduler = "wrr".into();
        let nested = kernel_service(&s);
        let outer = Attrs::parse(&nested).unwrap();
        let got = parse_service(outer.get(IPVS_CMD_ATTR_SERVICE).unwrap()).unwrap();
        assert_eq!(got, Some(s));

        let d = DestInfo {
            dest: Dest {
                forward: Forward::DirectRoute,
                weight: 7,
                ..rip(3)
            },
            active: 4,
            inactive: 11,
        };
        let nested = kernel_dest(&d);
        let outer = Attrs::parse(&nested).unwrap();
        let got = parse_dest(outer.get(IPVS_CMD_ATTR_DEST).unwrap()).unwrap();
        assert_eq!(got, Some(d));
    }

    #[test]
    fn four_byte_addresses_are_read_too() {
        assert_eq!(
            parse_inet_addr(&[10, 1, 2, 3]).unwrap(),
            Ipv4Addr::new(10, 1, 2, 3)
        );
        assert!(parse_inet_addr(&[10, 1, 2]).is_err());
    }

    #[test]
    fn fwmark_and_ipv6_services_are_left_out() {
        let fwmark: Vec<Plain> = [
            Attr::U16(IPVS_SVC_ATTR_AF, AF_INET),
            Attr::U32(5, 42),
            Attr::Str(IPVS_SVC_ATTR_SCHED_NAME, "rr".into()),
        ]
        .into_iter()
        .map(Plain)
        .collect();
        assert_eq!(parse_service(&emit_plain(&fwmark)).unwrap(), None);
        let v6 = [Plain(Attr::U16(IPVS_SVC_ATTR_AF, 10))];
        assert_eq!(parse_service(&emit_plain(&v6)).unwrap(), None);
    }

    /// A control message (ACK, error, done) as the kernel sends it.
    fn kernel_msg(seq: u32, flags: u16, payload: NetlinkPayload<GenlMessage<Request>>) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        header.flags = flags;
        let mut msg = NetlinkMessage::new(header, payload);
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    /// A generic netlink message as the kernel sends it in a dump: nlmsghdr
    /// (NLM_F_MULTI), genlmsghdr, then the attribute bytes.
    fn kernel_genl(seq: u32, cmd: u8, attrs: &[u8]) -> Vec<u8> {
        let len = (16 + 4 + attrs.len()) as u32;
        let mut buf = Vec::new();
        buf.extend_from_slice(&len.to_ne_bytes());
        buf.extend_from_slice(&FAMILY.to_ne_bytes());
        buf.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&[cmd, IPVS_GENL_VERSION, 0, 0]);
        buf.extend_from_slice(attrs);
        buf
    }

    fn ack(seq: u32, errno: i32) -> Vec<u8> {
        let mut e = ErrorMessage::default();
        e.code = std::num::NonZeroI32::new(-errno);
        kernel_msg(seq, 0, NetlinkPayload::Error(e))
    }

    fn done(seq: u32) -> Vec<u8> {
        kernel_msg(seq, 2, NetlinkPayload::Done(DoneMessage::default()))
    }

    fn seq_of(request: &[u8]) -> u32 {
        u32::from_ne_bytes(request[8..12].try_into().unwrap())
    }

    type Answer = Box<dyn FnMut(&[u8]) -> Vec<Vec<u8>> + Send>;

    /// A kernel stand-in: records requests, answers each from a script.
    struct Fake {
        sent: Arc<Mutex<Vec<Vec<u8>>>>,
        queue: VecDeque<Vec<u8>>,
        answer: Answer,
    }

    impl Wire for Fake {
        fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.sent.lock().unwrap().push(bytes.to_vec());
            self.queue.extend((self.answer)(bytes));
            Ok(())
        }
        fn recv(&mut self) -> io::Result<Vec<u8>> {
            self.queue
                .pop_front()
                .ok_or_else(|| io::Error::new(io::ErrorKind::WouldBlock, "fake kernel is silent"))
        }
    }

    /// An `Ipvs` over a fake whose first answer resolves the family.
    fn fake(
        mut answer: impl FnMut(&[u8]) -> Vec<Vec<u8>> + Send + 'static,
    ) -> (Ipvs, Arc<Mutex<Vec<Vec<u8>>>>) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let mut first = true;
        let wire = Fake {
            sent: sent.clone(),
            queue: VecDeque::new(),
            answer: Box::new(move |req| {
                if std::mem::take(&mut first) {
                    let seq = seq_of(req);
                    let id = emit_plain(&[Plain(Attr::U16(CTRL_ATTR_FAMILY_ID, FAMILY))]);
                    let name =
                        emit_plain(&[Plain(Attr::Str(CTRL_ATTR_FAMILY_NAME, "IPVS".into()))]);
                    let mut reply = kernel_genl(seq, 1, &[name, id].concat());
                    reply.extend(ack(seq, 0));
                    return vec![reply];
                }
                answer(req)
            }),
        };
        (Ipvs::over(Box::new(wire)).unwrap(), sent)
    }

    #[test]
    fn open_resolves_the_family_by_name() {
        let (ipvs, sent) = fake(|_| vec![]);
        assert_eq!(ipvs.family, FAMILY);
        let req = &sent.lock().unwrap()[0];
        // To nlctrl (0x10), CTRL_CMD_GETFAMILY, attribute FAMILY_NAME "IPVS\0".
        assert_eq!(&req[4..6], &[0x10, 0]);
        assert_eq!(req[16], CTRL_CMD_GETFAMILY);
        assert_eq!(&req[20..29], &[9, 0, 2, 0, b'I', b'P', b'V', b'S', 0]);
    }

    #[test]
    fn missing_family_says_load_ip_vs() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let wire = Fake {
            sent,
            queue: VecDeque::new(),
            answer: Box::new(|req| vec![ack(seq_of(req), nix::errno::Errno::ENOENT as i32)]),
        };
        let err = Ipvs::over(Box::new(wire)).err().unwrap();
        assert!(matches!(err, IpvsError::NoIpvs));
        assert!(
            err.to_string()
                .starts_with("kernel has no IPVS (module ip_vs)"),
            "{err}"
        );
    }

    #[test]
    fn kernel_errors_are_put_in_words() {
        let (mut ipvs, _) = fake(|req| vec![ack(seq_of(req), nix::errno::Errno::EEXIST as i32)]);
        let err = ipvs.add_service(&vip()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "service 192.168.13.23:80/tcp already exists (File exists)"
        );
        assert_eq!(err.errno(), Some(17));
        let err = ipvs.add_dest(&vip(), &rip(2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "destination 10.0.0.2:8080 of service 192.168.13.23:80/tcp already exists (File exists)"
        );

        let (mut ipvs, _) = fake(|req| vec![ack(seq_of(req), nix::errno::Errno::ESRCH as i32)]);
        let err = ipvs.del_dest(&vip(), &rip(2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "service 192.168.13.23:80/tcp does not exist (No such process)"
        );

        let (mut ipvs, _) = fake(|req| vec![ack(seq_of(req), nix::errno::Errno::ENOENT as i32)]);
        let mut s = vip();
        s.scheduler = "nope".into();
        let err = ipvs.add_service(&s).unwrap_err();
        assert_eq!(
            err.to_string(),
            "scheduler \"nope\" of service 192.168.13.23:80/tcp is not available \
             (No such file or directory)"
        );
        let err = ipvs.del_dest(&vip(), &rip(9)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "destination 10.0.0.9:8080 of service 192.168.13.23:80/tcp does not exist \
             (No such file or directory)"
        );

        s.scheduler = "no-such-scheduler".into();
        let err = ipvs.add_service(&s).unwrap_err();
        assert!(matches!(err, IpvsError::SchedulerName { .. }), "{err}");

        let (mut ipvs, _) = fake(|req| vec![ack(seq_of(req), nix::errno::Errno::EPERM as i32)]);
        let err = ipvs.flush().unwrap_err();
        assert_eq!(
            err.to_string(),
            "flush IPVS is not permitted (needs CAP_NET_ADMIN) (Operation not permitted)"
        );
    }

    #[test]
    fn commands_send_their_numbers_and_wait_for_the_ack() {
        let (mut ipvs, sent) = fake(|req| vec![ack(seq_of(req), 0)]);
        ipvs.add_service(&vip()).unwrap();
        ipvs.add_dest(&vip(), &rip(2)).unwrap();
        ipvs.del_dest(&vip(), &rip(2)).unwrap();
        ipvs.del_service(&vip()).unwrap();
        ipvs.flush().unwrap();
        let sent = sent.lock().unwrap();
        let cmds: Vec<u8> = sent[1..].iter().map(|r| r[16]).collect();
        assert_eq!(cmds, [1, 5, 7, 3, 17]);
        for r in &sent[1..] {
            assert_eq!(u16::from_ne_bytes([r[4], r[5]]), FAMILY);
            assert_eq!(u16::from_ne_bytes([r[6], r[7]]), NLM_F_REQUEST | NLM_F_ACK);
            assert_eq!(r[17], IPVS_GENL_VERSION);
        }
        // DEL_DEST names the destination by address and port only.
        let del_dest = &sent[3];
        assert_eq!(del_dest.len(), 16 + 4 + 48 + 4 + 20 + 8);
    }

    #[test]
    fn services_dump_round_trips_through_the_kernel_format() {
        let web = vip();
        let dns = Service {
            scheduler: "sh".into(),
            persistent: Some(10800),
            ..Service::new(Protocol::Udp, Ipv4Addr::new(10, 96, 0, 10), 53)
        };
        let d2 = DestInfo {
            dest: rip(2),
            active: 1,
            inactive: 2,
        };
        let d3 = DestInfo {
            dest: Dest {
                weight: 5,
                forward: Forward::Tunnel,
                ..rip(3)
            },
            active: 0,
            inactive: 0,
        };
        let (web2, dns2, d2c, d3c) = (web.clone(), dns.clone(), d2.clone(), d3.clone());
        let (mut ipvs, sent) = fake(move |req| {
            let seq = seq_of(req);
            match req[16] {
                IPVS_CMD_GET_SERVICE => {
                    // Two services in one datagram, then NLMSG_DONE in another.
                    let mut one = kernel_genl(seq, IPVS_CMD_NEW_SERVICE, &kernel_service(&web2));
                    one.extend(kernel_genl(
                        seq,
                        IPVS_CMD_NEW_SERVICE,
                        &kernel_service(&dns2),
                    ));
                    vec![one, done(seq)]
                }
                IPVS_CMD_GET_DEST if req.windows(4).any(|w| w == [192, 168, 13, 23]) => {
                    // Kernel order is not sorted; the client sorts.
                    let mut one = kernel_genl(seq, IPVS_CMD_NEW_DEST, &kernel_dest(&d3c));
                    one.extend(kernel_genl(seq, IPVS_CMD_NEW_DEST, &kernel_dest(&d2c)));
                    one.extend(done(seq));
                    vec![one]
                }
                IPVS_CMD_GET_DEST => vec![done(seq)],
                _ => vec![ack(seq, 22)],
            }
        });
        let got = ipvs.services().unwrap();
        assert_eq!(
            got,
            vec![
                (dns.clone(), vec![]),
                (web.clone(), vec![d2.clone(), d3.clone()])
            ]
        );
        let sent = sent.lock().unwrap();
        // A dump has no ACK flag: it ends with NLMSG_DONE.
        assert_eq!(
            u16::from_ne_bytes([sent[1][6], sent[1][7]]),
            NLM_F_REQUEST | NLM_F_DUMP
        );
        assert_eq!(sent.len(), 4);
        assert_eq!(
            format_table(&got),
            "Prot LocalAddress:Port Scheduler Flags\n\
             \x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
             UDP  10.96.0.10:53 sh persistent 10800\n\
             TCP  192.168.13.23:80 rr\n\
             \x20 -> 10.0.0.2:8080                Masq    1      1          2\n\
             \x20 -> 10.0.0.3:8080                Tunnel  5      0          0\n"
        );
    }

    #[test]
    fn answers_to_other_requests_are_skipped() {
        let (mut ipvs, _) = fake(|req| {
            let seq = seq_of(req);
            vec![[ack(seq - 1, 17), ack(seq, 0)].concat()]
        });
        ipvs.flush().unwrap();
    }
}
