//! The byte-level seam of the hand-framed netlink clients (IPVS, conntrack):
//! requests go out and datagrams come back through [`Wire`], the kernel's
//! socket in real use and a scripted fake in unit tests.

use std::io;

/// Where requests go and answers come from.
pub(crate) trait Wire: Send {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// One datagram, which may hold several netlink messages.
    fn recv(&mut self) -> io::Result<Vec<u8>>;
}

impl Wire for netlink_sys::Socket {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let kernel = netlink_sys::SocketAddr::new(0, 0);
        self.send_to(bytes, &kernel, 0).map(|_| ())
    }
    fn recv(&mut self) -> io::Result<Vec<u8>> {
        self.recv_from_full().map(|(buf, _)| buf)
    }
}

/// A scripted kernel for unit tests: answers with the given datagrams in
/// order (then nothing), and keeps every request sent.
#[cfg(test)]
pub(crate) struct Replay {
    pub sent: Vec<Vec<u8>>,
    answers: std::collections::VecDeque<Vec<u8>>,
}

#[cfg(test)]
impl Replay {
    pub fn new(answers: Vec<Vec<u8>>) -> Replay {
        Replay {
            sent: Vec::new(),
            answers: answers.into(),
        }
    }
}

#[cfg(test)]
impl Wire for Replay {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sent.push(bytes.to_vec());
        Ok(())
    }
    fn recv(&mut self) -> io::Result<Vec<u8>> {
        Ok(self.answers.pop_front().unwrap_or_default())
    }
}

/// A bound netlink socket of `protocol` (`netlink_sys::protocols`) in the
/// current thread's namespace.
pub(crate) fn socket(protocol: isize) -> io::Result<netlink_sys::Socket> {
    let mut socket = netlink_sys::Socket::new(protocol)?;
    socket.bind_auto()?;
    Ok(socket)
}

/// For unit tests: the kernel's `NLMSG_ERROR` answer to `request` (its
/// sequence number `seq`) carrying `errno` (0: the acknowledgement),
/// quoting the request's header.
#[cfg(test)]
pub(crate) fn error_answer(seq: u32, errno: i32, request: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(36u32.to_ne_bytes());
    out.extend(2u16.to_ne_bytes()); // NLMSG_ERROR
    out.extend(0u16.to_ne_bytes());
    out.extend(seq.to_ne_bytes());
    out.extend(0u32.to_ne_bytes());
    out.extend(errno.to_ne_bytes());
    out.extend(&request[..16]);
    out
}

/// Frame one request: the netlink header (`flags`, sequence number `seq`)
/// around `inner`, its length filled in.
pub(crate) fn frame<I>(seq: u32, flags: u16, inner: I) -> Vec<u8>
where
    I: netlink_packet_core::NetlinkSerializable,
{
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner));
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// Why an exchange failed, before the caller puts it in words.
pub(crate) enum Failure {
    /// The kernel's error code (positive errno).
    Errno(i32),
    Io(io::Error),
    /// An answer that could not be read.
    Reply(String),
}

/// Send one request (sequence number `seq`) and collect the inner messages
/// of its answers: those of a dump up to NLMSG_DONE, or none up to the
/// ACK. Answers to other sequence numbers (an earlier request given up on)
/// are skipped; every message of every datagram is read.
pub(crate) fn exchange<I>(wire: &mut dyn Wire, seq: u32, request: &[u8]) -> Result<Vec<I>, Failure>
where
    I: netlink_packet_core::NetlinkDeserializable,
{
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
    wire.send(request).map_err(Failure::Io)?;
    let mut out = Vec::new();
    loop {
        let buf = wire.recv().map_err(Failure::Io)?;
        if buf.is_empty() {
            return Err(Failure::Reply(
                "end of stream before the answer ended".into(),
            ));
        }
        let mut at = 0;
        while at + 16 <= buf.len() {
            let msg = NetlinkMessage::<I>::deserialize(&buf[at..])
                .map_err(|e| Failure::Reply(e.to_string()))?;
            let len = msg.header.length as usize;
            if len < 16 {
                return Err(Failure::Reply(format!("netlink message of {len} bytes")));
            }
            at += len.next_multiple_of(4);
            if msg.header.sequence_number != seq {
                continue;
            }
            match msg.payload {
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                NetlinkPayload::Error(e) => {
                    return match e.code.map(std::num::NonZeroI32::get) {
                        None => Ok(out),
                        Some(code) => Err(Failure::Errno(-code)),
                    };
                }
                NetlinkPayload::Done(d) if d.code < 0 => return Err(Failure::Errno(-d.code)),
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Overrun(_) => {
                    return Err(Failure::Reply("netlink overrun".into()));
                }
                _ => {}
            }
        }
    }
}
