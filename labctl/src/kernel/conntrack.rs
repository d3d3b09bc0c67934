//! A namespace's conntrack table emptied: the payload of
//! [`Action::FlushConntrack`], its text (`conntrack -F -f ipv4` inside the
//! namespace, conntrack-tools' flush of one family's table) and its write,
//! one ctnetlink `IPCTNL_MSG_CT_DELETE` without attributes for family
//! IPv4, acknowledged, on a `NETLINK_NETFILTER` socket opened inside the
//! namespace by a thread of our own. A scenario does this where services
//! live before its traffic, so the flows it reads back are its own.
//!
//! The ctnetlink framing and socket are shared with observe's reader of the
//! table (`conntrack -L`), which sits above this layer. IPv4 only: labs
//! have no IPv6.
//!
//! [`Action::FlushConntrack`]: crate::kernel::step::Action::FlushConntrack

use std::fmt;
use std::io;

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use serde::Serialize;

use super::step::Step;
use super::{KernelError, Netlink, first_line};
use crate::wire::{self, Failure, Wire};

/// `conntrack -F -f ipv4` inside the namespace: every IPv4 entry of its
/// conntrack table deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlushConntrack;

impl FlushConntrack {
    /// The command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ip netns exec {ns} conntrack -F -f ipv4")
    }

    pub(super) async fn apply(&self, _nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        // ctnetlink on a socket of its own, opened inside the namespace by
        // a blocking thread of our own (as IPVS and nftables are).
        let netns = step.netns.clone();
        tokio::task::spawn_blocking(move || flush_in(&netns))
            .await
            .map_err(|e| KernelError::new(first_line(step), e))?
            .map_err(|e| KernelError::new(first_line(step), e))
    }
}

/// Why the table could not be emptied.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// No `NETLINK_NETFILTER`, or no ctnetlink subsystem behind it.
    #[error("conntrack is not available in this kernel (nf_conntrack)")]
    Unavailable,
    #[error("enter network namespace {netns}: {source}")]
    Netns { netns: String, source: io::Error },
    #[error("empty the conntrack table: netlink socket: {0}")]
    Io(io::Error),
    #[error("empty the conntrack table: {}", nix::errno::Errno::from_raw(*errno).desc())]
    Kernel { errno: i32 },
    #[error("empty the conntrack table: unexpected kernel reply: {0}")]
    Reply(String),
}

/// Empty the IPv4 conntrack table of a named namespace (`/run/netns/NAME`),
/// like `ip netns exec NAME conntrack -F -f ipv4`. Blocking: run it on a
/// thread of our own, never a runtime thread.
pub fn flush_in(netns: &str) -> Result<(), FlushError> {
    crate::sys::in_netns(netns, || {
        let mut s = socket().map_err(|e| match e.raw_os_error() {
            Some(errno) if is_unavailable(errno) => FlushError::Unavailable,
            _ => FlushError::Io(e),
        })?;
        flush_over(&mut s)
    })
    .map_err(|source| FlushError::Netns {
        netns: netns.to_string(),
        source,
    })?
}

/// The flush request: `IPCTNL_MSG_CT_DELETE` for family IPv4 without
/// attributes, with `NLM_F_ACK`, as `conntrack -F -f ipv4` sends it.
fn flush_request(seq: u32) -> Vec<u8> {
    request(seq, NLM_F_ACK, ConntrackMessage::Delete(Vec::new()))
}

fn flush_over(wire: &mut dyn Wire) -> Result<(), FlushError> {
    const SEQ: u32 = 2;
    wire::exchange::<NetfilterMessage>(wire, SEQ, &flush_request(SEQ))
        .map(|_| ())
        .map_err(|f| match f {
            Failure::Errno(errno) if is_unavailable(errno) => FlushError::Unavailable,
            Failure::Errno(errno) => FlushError::Kernel { errno },
            Failure::Io(e) => FlushError::Io(e),
            Failure::Reply(reason) => FlushError::Reply(reason),
        })
}

/// One ctnetlink request for family IPv4, framed.
pub(crate) fn request(seq: u32, flags: u16, message: ConntrackMessage) -> Vec<u8> {
    let message = NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
        message,
    );
    wire::frame(seq, NLM_F_REQUEST | flags, message)
}

/// Whether `errno` (from the socket or the kernel's answer) says there is
/// no conntrack to talk to. EPROTONOSUPPORT: no nfnetlink at all.
/// EOPNOTSUPP: nfnetlink found no ctnetlink subsystem and could not load
/// `nf_conntrack_netlink` (`nfnetlink_rcv_msg`).
pub(crate) fn is_unavailable(errno: i32) -> bool {
    use nix::errno::Errno;
    [Errno::EPROTONOSUPPORT, Errno::EOPNOTSUPP]
        .iter()
        .any(|e| *e as i32 == errno)
}

/// A bound `NETLINK_NETFILTER` socket in the current thread's namespace.
pub(crate) fn socket() -> io::Result<netlink_sys::Socket> {
    wire::socket(netlink_sys::protocols::NETLINK_NETFILTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::wire::Replay;

    /// An `NLMSG_ERROR` answer to request `seq` carrying `errno` (0: the
    /// acknowledgement).
    fn answer(seq: u32, errno: i32) -> Vec<u8> {
        crate::wire::error_answer(seq, errno, &flush_request(seq))
    }

    #[test]
    fn flush_request_bytes_match_nfnetlink_h() {
        #[rustfmt::skip]
        let want: Vec<u8> = vec![
            // nlmsghdr: len 20, type CTNETLINK<<8 | CT_DELETE, REQUEST|ACK, seq 2
            20, 0, 0, 0, 0x02, 0x01, 0x05, 0x00, 2, 0, 0, 0, 0, 0, 0, 0,
            // nfgenmsg: NFPROTO_IPV4, version 0, res_id 0
            2, 0, 0, 0,
        ];
        assert_eq!(flush_request(2), want);
    }

    #[test]
    fn flush_is_acknowledged_or_says_why_not() {
        let mut ok = Replay::new(vec![answer(2, 0)]);
        flush_over(&mut ok).expect("acknowledged");
        assert_eq!(ok.sent, vec![flush_request(2)]);
        let mut refused = Replay::new(vec![answer(2, -1)]);
        assert_eq!(
            flush_over(&mut refused).unwrap_err().to_string(),
            "empty the conntrack table: Operation not permitted"
        );
        let mut missing = Replay::new(vec![answer(2, -95)]);
        assert!(matches!(
            flush_over(&mut missing),
            Err(FlushError::Unavailable)
        ));
    }
}
