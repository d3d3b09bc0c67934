//! Waiting until the kernel has really released a lab's namespaces, for
//! `labctl down --wait`, so that a benchmark of `down` times all of it.
//!
//! Removing a namespace's name and the last handle on it only queues it:
//! the kernel's `netns` workqueue runs the queued namespaces' exit methods
//! later (`cleanup_net`: every device unregistered, tables flushed, an RCU
//! barrier), and `down` used to return while that went on for seconds. No
//! file under /proc counts the namespaces alive (the `net_namespace` slab's
//! figures count whole slabs, and every user's namespaces), and a namespace
//! nobody holds cannot be looked at. What the kernel does say is when a
//! namespace's cleanup starts: first thing, it takes the namespace's id
//! (NSID) out of every other namespace's table (`unhash_nsid`). And the
//! workqueue is ordered, one `cleanup_net` at a time, each taking every
//! namespace queued by then.
//!
//! So a [`Watch`] keeps a namespace of its own (never the host's), gives
//! each of the lab's namespaces an id there while `down` still holds them
//! (`RTM_NEWNSID`, like `ip netns set NAME auto`), and after they are let
//! go reads its table (`RTM_GETNSID`) until none is left: every cleanup has
//! begun. Then it gives a fresh namespace of its own, a sentinel, an id and
//! lets it go: the sentinel was queued after the last of the lab's
//! cleanups began, so its id goes in a later `cleanup_net`, which starts
//! only when those have ended.
//!
//! The ids cost the kernel something: a dying namespace's cleanup looks
//! for its id in the table of every namespace still alive, by a walk of
//! each table (`__peernet2id`), so ours adds O(n) per namespace. Measured
//! on 10 nodes x 1,000 pods (10,011 namespaces) under load 7-8 on 2
//! cores, released 6.9 and 7.8 s after `down` let go with an id each,
//! 6.3 and 8.8 s with the sentinels alone: within the noise, and only the
//! ids see a namespace that something else still holds (a socket closing
//! in it), which the sentinels alone would report released. 1,011
//! namespaces: 0.8 s.
//!
//! `down` lets go of them in the reverse order of their ids: the kernel
//! takes a batch last queued first, so each dying namespace's id is then
//! the first in our table, not the last, and the walk stops there. `perf`
//! of a 10,011-namespace `down --wait` (2 cores, load about 2): the table
//! walks under `cleanup_net` were 3.2 % of all samples in the old order
//! and are gone in the new; released 12.04 and 12.70 s against 12.00 and
//! 11.20 s, alternating. Giving the ids still walks the table (`perf`:
//! 2.6 %, before `down` lets go).

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};

use crate::sys;
use crate::wire;

/// Namespace ids handed out in a namespace of our own, and read back.
pub struct Watch {
    /// A NETLINK_ROUTE socket in the watching namespace, which it keeps
    /// alive.
    socket: netlink_sys::Socket,
    seq: u32,
}

/// Why a wait ended without every namespace released.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error(
        "{left} of its namespaces still not released by the kernel after {limit:?}: something outside the lab holds them (a process that entered one, a socket still closing), and the kernel frees them when it lets go"
    )]
    Timeout { left: usize, limit: Duration },
    #[error("the kernel was still cleaning up after its namespaces {limit:?} later")]
    Cleanup { limit: Duration },
    #[error("their release by the kernel could not be watched: {0}")]
    Io(#[from] io::Error),
}

impl Watch {
    /// A watch in a new, unnamed namespace.
    pub fn new() -> io::Result<Watch> {
        let socket = sys::in_new_netns(|| {
            let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
            socket.bind_auto()?;
            Ok(socket)
        })?;
        Ok(Watch { socket, seq: 0 })
    }

    /// Give the namespace `ns` an id in the watching namespace, like `ip
    /// netns set NAME auto` run there.
    pub fn add(&mut self, ns: impl AsFd) -> io::Result<()> {
        let mut msg = NsidMessage::default();
        msg.attributes
            .push(NsidAttribute::Fd(ns.as_fd().as_raw_fd() as u32));
        // -1: the kernel picks the id.
        msg.attributes.push(NsidAttribute::Id(-1));
        self.exchange(NLM_F_ACK, RouteNetlinkMessage::NewNsId(msg))
            .map(|_| ())
    }

    /// How many of the namespaces given an id still exist (their cleanup
    /// has not begun), like `ip netns list-id` run in the watching one.
    pub fn left(&mut self) -> io::Result<usize> {
        let answers = self.exchange(
            NLM_F_DUMP,
            RouteNetlinkMessage::GetNsId(NsidMessage::default()),
        )?;
        Ok(answers
            .iter()
            .filter(|m| matches!(m, RouteNetlinkMessage::NewNsId(_)))
            .count())
    }

    /// Wait, up to `limit`, until every namespace given an id and since let
    /// go is released: gone from the table, then a sentinel's cleanup run
    /// after theirs (see the module doc). Polls with a pause growing from
    /// 1 ms to 20 ms, so a dump of thousands of ids does not take the CPU
    /// the kernel's cleanup needs.
    pub fn wait(mut self, limit: Duration) -> Result<(), WaitError> {
        let deadline = Instant::now() + limit;
        self.until_empty(deadline, limit)?;
        self.sentinel(deadline, limit)
    }

    /// Give a new namespace of our own an id, let it go and wait until its
    /// cleanup has begun: every namespace let go before has had its
    /// cleanup begin too (in the same `cleanup_net` or an earlier one).
    fn sentinel(&mut self, deadline: Instant, limit: Duration) -> Result<(), WaitError> {
        let sentinel = sys::in_new_netns(sys::open_own_netns)?;
        self.add(&sentinel)?;
        drop(sentinel);
        self.until_empty(deadline, limit).map_err(|e| match e {
            WaitError::Timeout { limit, .. } => WaitError::Cleanup { limit },
            e => e,
        })
    }

    fn until_empty(&mut self, deadline: Instant, limit: Duration) -> Result<(), WaitError> {
        let mut pause = Duration::from_millis(1);
        loop {
            let left = self.left()?;
            if left == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(WaitError::Timeout { left, limit });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    fn exchange(
        &mut self,
        flags: u16,
        message: RouteNetlinkMessage,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq += 1;
        let request = wire::frame(self.seq, NLM_F_REQUEST | flags, message);
        wire::exchange(&mut self.socket, self.seq, &request).map_err(|e| match e {
            wire::Failure::Errno(code) => io::Error::from_raw_os_error(code),
            wire::Failure::Io(e) => e,
            wire::Failure::Reply(r) => io::Error::other(r),
        })
    }
}

/// Wait, up to `limit`, until the kernel has released every namespace let
/// go before this call, when nothing else holds any of them (what is held
/// is not queued, and this cannot see it): a sentinel's cleanup begun
/// means theirs have, a second one's that theirs have ended. For
/// namespaces removed by someone else, such as the `ip netns delete`s of a
/// benchmark's baseline; `down` knows its own and uses [`Watch`].
pub fn wait_let_go(limit: Duration) -> Result<(), WaitError> {
    let deadline = Instant::now() + limit;
    let mut watch = Watch::new()?;
    watch.sentinel(deadline, limit)?;
    watch.sentinel(deadline, limit)
}
