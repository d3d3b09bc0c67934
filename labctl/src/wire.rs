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
