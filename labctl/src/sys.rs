//! Namespaces and the few raw system calls labctl needs. All `unsafe` in the
//! crate lives here.
//!
//! Namespaces are made the way iproute2's `ip netns add` makes them, so that
//! `ip netns list`, `ip netns exec` and tcpdump see them: a thread unshares
//! its network namespace and bind-mounts `/proc/thread-self/ns/net` onto
//! `/run/netns/NAME`. Only the calling thread ever changes namespace, never
//! the process, and [`NetnsGuard`] puts it back on every path out.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Where iproute2 keeps named network namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// The bind mount that names a namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// How many threads work on namespaces at once (creating them, opening
/// sockets in them): one per core this process may run on. Their work is
/// nearly all kernel time under global locks (`rtnl`, the mount lock, the
/// sysctl lock), so threads beyond the cores only wait on each other.
pub fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Wait until the taps of every stopped capture are closed.
///
/// Closing an AF_PACKET socket waits for an RCU grace period
/// (`packet_release` calls `synchronize_net`), about 12 ms here: 33 taps
/// closed one by one took 400 ms. A stopped capture closes its taps each
/// on a thread of its own, so the grace periods overlap (22-30 ms for 33),
/// and returns its packets without waiting for that. Only its own taps are
/// ever read, so a capture started meanwhile never sees another's packets;
/// a tap still open keeps its namespace alive, so `down` calls this first.
pub fn wait_closed() {
    let closing = std::mem::take(&mut *CLOSING.lock().unwrap_or_else(|e| e.into_inner()));
    for t in closing {
        let _ = t.join();
    }
}

/// The threads closing stopped captures' taps; see [`wait_closed`]. Kept
/// here, below every layer, so that `down` (the engine) waits for them
/// without depending on the capture module (observation) that starts them.
pub(crate) static CLOSING: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// `f` for each of `names`, results in their order, on [`workers`] threads
/// of our own, each taking its share one after another (a thread per name,
/// started and joined in turn, cost `down` most of its time at 5,000
/// pods). `f` may enter a namespace with [`NetnsGuard`]: the thread is
/// ours and ends after.
pub fn on_workers<T: Send>(names: &[&str], f: impl Fn(&str) -> T + Sync) -> Vec<T> {
    let chunk = names.len().div_ceil(workers()).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let shares: Vec<_> = names
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|n| f(n)).collect::<Vec<_>>()))
            .collect();
        shares
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Open a named namespace (`/run/netns/NAME`).
pub fn open_netns(name: &str) -> io::Result<OwnedFd> {
    Ok(File::open(netns_path(name))?.into())
}

/// Moves the current thread into a network namespace and back on drop.
///
/// `!Send`: the namespace belongs to this thread, so the guard must not move
/// to another one.
pub struct NetnsGuard {
    original: OwnedFd,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl NetnsGuard {
    /// Enter `ns`; the guard returns the thread to where it was.
    pub fn enter(ns: impl AsFd) -> io::Result<Self> {
        let original: OwnedFd = File::open("/proc/thread-self/ns/net")?.into();
        setns(ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        Ok(NetnsGuard {
            original,
            _not_send: std::marker::PhantomData,
        })
    }

    /// Move the thread into a new, unnamed namespace (`unshare`); the
    /// guard returns it to where it was.
    pub fn unshare() -> io::Result<Self> {
        let original: OwnedFd = File::open("/proc/thread-self/ns/net")?.into();
        // Should this fail the thread is still where it was: no guard.
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        Ok(NetnsGuard {
            original,
            _not_send: std::marker::PhantomData,
        })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.original, CloneFlags::CLONE_NEWNET) {
            // A thread stranded in a lab namespace would do the rest of its
            // work in the wrong place; stopping is the only safe answer.
            eprintln!("labctl: cannot return a thread to its network namespace: {e}");
            std::process::abort();
        }
    }
}

/// Keep the calling thread on one CPU, the lowest it may run on, so that
/// every packet of a lab's traffic is made and forwarded on that CPU.
///
/// A packet a veth sends is queued on the backlog of the CPU that sent it
/// (`netif_rx`), and each CPU empties its own; so two segments of one
/// connection sent from two CPUs (a server's ACK, made in the softirq that
/// read the client's FIN, and its own FIN, sent by its thread) can cross
/// on the way when one CPU is held up, as a VM's virtual CPU is whenever
/// the host runs something else. Caught once in 40 runs of the Flannel
/// file in a loaded VM: the server's ACK arrived after its FIN, the
/// client's TIME_WAIT answered the stale ACK, and the server, closed by
/// then, sent a RST that no cluster would show. With the clients and
/// servers on one CPU, what they send and every segment the kernel makes
/// in answer (in the softirq of that CPU's backlog) go through one queue
/// in the order they were made. The path is the kernel's all the same:
/// which CPU runs it changes no route, rule or translation.
///
/// Best effort: a thread that cannot be pinned runs where it may.
pub fn pin_traffic_thread() {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    let Ok(allowed) = sched_getaffinity(Pid::from_raw(0)) else {
        return;
    };
    let Some(cpu) = (0..CpuSet::count()).find(|&c| allowed.is_set(c).unwrap_or(false)) else {
        return;
    };
    let mut one = CpuSet::new();
    if one.set(cpu).is_ok() {
        let _ = sched_setaffinity(Pid::from_raw(0), &one);
    }
}

/// Make `/run/netns` a shared mount point, as `ip netns add` does, so
/// namespaces mounted there are visible from other mount namespaces.
pub fn prepare_run_dir() -> io::Result<()> {
    fs::create_dir_all(NETNS_RUN_DIR)?;
    let shared = |flags| {
        mount(
            None::<&str>,
            NETNS_RUN_DIR,
            None::<&str>,
            flags,
            None::<&str>,
        )
    };
    match shared(MsFlags::MS_SHARED | MsFlags::MS_REC) {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it onto itself first.
        Err(nix::errno::Errno::EINVAL) => {
            mount(
                Some(NETNS_RUN_DIR),
                NETNS_RUN_DIR,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            shared(MsFlags::MS_SHARED | MsFlags::MS_REC).map_err(io::Error::from)
        }
        Err(e) => Err(e.into()),
    }
}

/// The mode of the files labctl makes under /run/netns, different from
/// iproute2's 0 so that an unwritten one is still recognised as ours
/// (by the owner module).
pub const PLACEHOLDER_MODE: u32 = 0o444;

/// A namespace just created, with what the executor keeps of it: one
/// descriptor, its socket.
pub struct NewNetns {
    pub name: String,
    /// A NETLINK_ROUTE socket bound inside the namespace.
    pub socket: netlink_sys::Socket,
}

/// The files under /run/netns one thread mounts its namespaces on: the
/// first a file of its own holding the lab's mark, each next one a hard
/// link to it. A name is all a bind mount needs, and a link costs the
/// filesystem a directory entry where a file costs an inode: on a
/// filesystem without a journal (this machine's /run), ext4 skips every
/// inode freed in the last minute or more when it allocates one
/// (`find_inode_bit`, `recently_deleted`), so after a `down` the next `up`
/// paid a scan per namespace, 17-25 % of its time in profiles of 1,000 and
/// 5,000 pods. `down` unlinks each name as `ip netns delete` does; the
/// file goes with its last name.
#[derive(Default)]
pub struct Placeholders {
    first: Option<File>,
}

impl Placeholders {
    /// Make `path` (never over an existing name: `O_EXCL`, or `linkat`'s
    /// `EEXIST`), holding `mark`.
    fn make(&mut self, path: &Path, mark: &str) -> io::Result<()> {
        use nix::fcntl::{AT_FDCWD, AtFlags};
        use std::io::Write;
        if let Some(first) = &self.first {
            // The descriptor's own file, even with a namespace mounted over
            // its name.
            let from = format!("/proc/self/fd/{}", first.as_raw_fd());
            match nix::unistd::linkat(
                AT_FDCWD,
                from.as_str(),
                AT_FDCWD,
                path,
                AtFlags::AT_SYMLINK_FOLLOW,
            ) {
                Ok(()) => return Ok(()),
                // Too many links (ext4 allows 65,000): start another file.
                Err(nix::errno::Errno::EMLINK) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PLACEHOLDER_MODE)
            .open(path)?;
        file.write_all(mark.as_bytes())?;
        self.first = Some(file);
        Ok(())
    }
}

/// Create `/run/netns/NAME` like `ip netns add NAME` and open a netlink
/// socket inside it. Runs on the calling thread, which ends where it began.
///
/// The lab's `mark` goes into the placeholder file before the namespace is
/// mounted over it, and `mark_inside` puts it inside the namespace (over a
/// socket bound there) before it gets its name: whatever a crash leaves,
/// `down` can tell it is the lab's (by the owner module's checks).
pub fn create_netns(
    name: &str,
    mark: &str,
    placeholders: &mut Placeholders,
    mark_inside: impl FnOnce(&mut netlink_sys::Socket) -> io::Result<()>,
) -> io::Result<NewNetns> {
    let path = netns_path(name);
    placeholders.make(&path, mark)?;
    crate::fault::fault_point("netns-file");
    let _back = NetnsGuard::unshare()?;
    let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
    socket.bind_auto()?;
    mark_inside(&mut socket)?;
    mount(
        Some("/proc/thread-self/ns/net"),
        &path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    // Many requests are in flight per namespace; room for their answers.
    socket.set_rx_buf_sz(4 << 20)?;
    Ok(NewNetns {
        name: name.to_string(),
        socket,
    })
}

/// Run `f` on a short-lived thread of our own that enters the named
/// namespace first, like `ip netns exec NAME`: no runtime or caller thread
/// ever changes namespace. Sockets `f` opens stay in that namespace; a
/// child it spawns starts there. Opening or entering the namespace fails
/// with an `io::Error`; `f`'s own result comes back as it is.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let ns = open_netns(name)
        .map_err(|e| io::Error::new(e.kind(), format!("open netns {name}: {e}")))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            let _back = NetnsGuard::enter(&ns)
                .map_err(|e| io::Error::new(e.kind(), format!("enter netns {name}: {e}")))?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| panic!("thread inside network namespace {name} panicked"))
    })
}

/// Run `f` on a short-lived thread of our own inside a new, unnamed
/// network namespace, like `unshare -n`; the thread returns to where it
/// was and ends. The namespace lives on only while something `f` returns
/// holds it (a socket opened inside, [`open_own_netns`]'s handle).
pub fn in_new_netns<T: Send>(f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let _back = NetnsGuard::unshare()?;
            f()
        })
        .join()
        .unwrap_or_else(|_| panic!("thread inside a new network namespace panicked"))
    })
}

/// A handle on the calling thread's network namespace.
pub fn open_own_netns() -> io::Result<OwnedFd> {
    Ok(File::open("/proc/thread-self/ns/net")?.into())
}

/// Open a NETLINK_ROUTE socket inside an existing named namespace.
pub fn netlink_socket_in(name: &str) -> io::Result<netlink_sys::Socket> {
    in_netns(name, || {
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
        socket.bind_auto()?;
        Ok(socket)
    })?
}

/// Remove a named namespace like `ip netns delete NAME`. A missing name is
/// not an error (teardown after a crash finds things half made).
pub fn delete_netns(name: &str) -> io::Result<()> {
    let path = netns_path(name);
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The identity of a namespace: nsfs device and inode, which
/// `/run/netns/NAME`, every `/proc/TID/ns/net` of a thread inside and every
/// open descriptor of it share. It outlives the name.
pub type NsId = (u64, u64);

fn ns_id(path: &Path) -> Option<NsId> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The identities of the named namespaces that exist (are mounted), our
/// own namespace never among them.
pub fn ns_ids(names: &[&str]) -> std::collections::HashSet<NsId> {
    let Some(own) = ns_id(Path::new("/proc/self/ns/net")) else {
        return Default::default();
    };
    names
        .iter()
        .filter_map(|n| ns_id(&netns_path(n)))
        // A name that is not a mounted namespace is its placeholder file on
        // /run's filesystem (another device than nsfs): nobody is in it.
        .filter(|&id| id != own && id.0 == own.0)
        .collect()
}

/// Processes with at least one thread in one of the named namespaces, like
/// `ip netns pids NAME` but looking at every thread, not only the main one:
/// `labctl __serve` keeps its main thread in the host's namespace and its
/// servers in the lab's. Never lists this process, nor anything in our own
/// namespace; a name that is not a mounted namespace matches nothing.
pub fn pids_in_netns(names: &[&str]) -> Vec<u32> {
    pids_holding(&ns_ids(names))
}

/// The pids of the processes alive now (those /proc lists; none when it
/// cannot be read).
pub fn pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
}

/// Processes that are in one of the namespaces `ids` (a thread inside) or
/// hold one open (a descriptor of it, as a process has between opening a
/// namespace and entering it). Works after the names are gone: a namespace
/// kept alive by a process still has its identity. Never this process.
pub fn pids_holding(ids: &std::collections::HashSet<NsId>) -> Vec<u32> {
    if ids.is_empty() {
        return Vec::new();
    }
    let me = std::process::id();
    let holds = |dir: PathBuf, sub: Option<&str>| {
        fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let path = match sub {
                    Some(sub) => e.path().join(sub),
                    None => e.path(),
                };
                ns_id(&path).is_some_and(|id| ids.contains(&id))
            })
        })
    };
    let mut pids: Vec<u32> = pids()
        .filter(|&pid| pid != me)
        .filter(|pid| {
            // Threads and descriptors come and go while we look; a
            // vanished one is skipped.
            holds(PathBuf::from(format!("/proc/{pid}/task")), Some("ns/net"))
                || holds(PathBuf::from(format!("/proc/{pid}/fd")), None)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Send SIGKILL to a process, like `kill -9 PID`, and reap it if it is our
/// child. A process that is already gone is not an error.
pub fn kill_process(pid: u32) -> io::Result<()> {
    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    match kill(pid, Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => return Err(e.into()),
    }
    // ECHILD for anyone else's process: nothing to reap.
    let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
    Ok(())
}

/// Whether a process exists and has not exited (a zombie has).
pub fn process_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses and
        // may itself hold spaces or parentheses.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Write a sysctl (`net.ipv4.ip_forward`) inside a namespace, like
/// `ip netns exec NS sysctl -w KEY=VALUE`.
///
/// Only `net.*` keys, which the kernel keeps per network namespace, are
/// written (the topology checks this too; this is the last line): a key's
/// parts are plain names, never `..`. As sysctl(8) reads them, a key with
/// a `/` uses `/` between its parts and `.` inside them
/// (`net/ipv4/conf/eth0.100/rp_filter`), one without uses `.`.
pub fn write_sysctl_in(ns: impl AsFd, key: &str, value: &str) -> io::Result<()> {
    let path = sysctl_path(key)?;
    let _back = NetnsGuard::enter(ns)?;
    fs::write(&path, value)
}

/// Read a sysctl inside a namespace, like `ip netns exec NS sysctl -n KEY`
/// (what a scenario's sysctl change puts back), without the line break.
/// The same keys as [`write_sysctl_in`].
pub fn read_sysctl_in(ns: impl AsFd, key: &str) -> io::Result<String> {
    let path = sysctl_path(key)?;
    let _back = NetnsGuard::enter(ns)?;
    Ok(fs::read_to_string(&path)?
        .trim_end_matches('\n')
        .to_string())
}

/// The /proc/sys path of a network sysctl; see [`write_sysctl_in`].
fn sysctl_path(key: &str) -> io::Result<PathBuf> {
    let parts: Vec<&str> = if key.contains('/') {
        key.split('/').collect()
    } else {
        key.split('.').collect()
    };
    let plain = |p: &&str| {
        !p.is_empty()
            && *p != "."
            && *p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    };
    if parts.first() != Some(&"net") || parts.len() < 2 || !parts.iter().all(plain) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{key}` is not a network sysctl: only net.* is written, inside a lab"),
        ));
    }
    Ok(parts
        .iter()
        .fold(PathBuf::from("/proc/sys"), |p, part| p.join(part)))
}

/// Wrap a netlink socket for tokio. Must run inside a tokio runtime.
/// A single-threaded runtime: every netlink socket lives on it, and the
/// namespace work happens on threads of our own.
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
}

pub fn tokio_socket(socket: netlink_sys::Socket) -> netlink_sys::TokioSocket {
    let fd = socket.into_raw_fd();
    // SAFETY: `fd` was just released by `into_raw_fd`, so it is an open
    // netlink socket that nothing else owns.
    unsafe { netlink_sys::TokioSocket::from_raw_fd(fd) }
}

/// Raise the open-file limit to its hard maximum: a big lab keeps a netlink
/// socket per namespace open while it is built, and `down` holds each
/// namespace for a moment. Only this process's soft limit changes. Returns
/// the limit now in force.
pub fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => u64::MAX,
    }
}

/// The capabilities labs need, as (bit, name): namespaces and mounts,
/// netlink configuration, files in root's /run and /proc/sys, killing and
/// looking into processes that are inside a lab, the built-in servers'
/// ports below 1024, the taps' packet sockets and ICMP.
pub const LAB_CAPS: [(u32, &str); 7] = [
    (21, "CAP_SYS_ADMIN"),
    (12, "CAP_NET_ADMIN"),
    (1, "CAP_DAC_OVERRIDE"),
    (5, "CAP_KILL"),
    (19, "CAP_SYS_PTRACE"),
    (10, "CAP_NET_BIND_SERVICE"),
    (13, "CAP_NET_RAW"),
];

/// The capabilities of [`LAB_CAPS`] this process lacks (none for root).
pub fn missing_caps() -> Vec<&'static str> {
    let effective = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0);
    LAB_CAPS
        .iter()
        .filter(|(bit, _)| effective & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect()
}

/// Whether the process may build labs: root, or a user holding every
/// capability of [`LAB_CAPS`].
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root() || missing_caps().is_empty()
}

/// Turn the current process into one living in namespace `name`, like
/// `ip netns exec` does before it runs the command: the network namespace,
/// plus a private mount namespace with /sys remounted so that tools reading
/// /sys/class/net see the namespace's own interfaces.
pub fn enter_netns_for_exec(name: &str) -> io::Result<()> {
    let ns = open_netns(name)?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(io::Error::from)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )?;
    // Best effort, as iproute2: without a fresh /sys only sysfs readers suffer.
    if umount2("/sys", MntFlags::MNT_DETACH).is_ok() {
        let _ = mount(
            Some(name),
            "/sys",
            Some("sysfs"),
            MsFlags::empty(),
            None::<&str>,
        );
    }
    Ok(())
}

/// The `sockaddr_ll` that binds an AF_PACKET socket to one interface and
/// protocol (host order; `ETH_P_ALL` for everything), as libpcap does for
/// `tcpdump -i IFNAME`. nix has no safe constructor for [`LinkAddr`].
///
/// [`LinkAddr`]: nix::sys::socket::LinkAddr
pub fn packet_bind_addr(ifindex: u32, protocol: u16) -> nix::sys::socket::LinkAddr {
    use nix::libc;
    use nix::sys::socket::{LinkAddr, SockaddrLike};
    let sll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: protocol.to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `sll` is a fully initialised `sockaddr_ll` on the stack, the
    // pointer is valid for `len` bytes and `from_raw` copies it out.
    unsafe { LinkAddr::from_raw((&raw const sll).cast::<libc::sockaddr>(), Some(len)) }
        .expect("a sockaddr_ll with family AF_PACKET is a LinkAddr")
}

/// `SOL_PACKET`/`PACKET_AUXDATA` (linux/if_packet.h).
pub const PACKET_AUXDATA: i32 = 8;

/// Ask an AF_PACKET socket for a `PACKET_AUXDATA` control message with
/// every frame (a `tpacket_auxdata`: the VLAN tag the kernel took out of
/// the frame, among others), as libpcap does. nix has no option for it.
pub fn packet_auxdata_on(fd: impl AsFd) -> io::Result<()> {
    use nix::libc;
    let on: libc::c_int = 1;
    // SAFETY: `on` is a live c_int and its size is passed with it; the
    // kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_AUXDATA,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Every segment a TCP socket retransmitted (`tcpi_total_retrans` of its
/// `TCP_INFO`), like `ss -ti`'s `retrans:N/TOTAL`.
pub fn tcp_total_retrans(socket: impl AsFd) -> io::Result<u32> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain integers, for which all zeroes is a value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the buffer is a tcp_info of `len` bytes that outlives the
    // call, and the kernel writes at most `len` bytes into it.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.tcpi_total_retrans)
}

/// A terminal's window size in rows and columns (`TIOCGWINSZ`), or `None`
/// when `fd` is not a terminal.
pub fn window_size(fd: impl AsFd) -> Option<(u16, u16)> {
    use nix::libc;
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which
    // points at a live, initialised `winsize` on the stack.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &raw mut ws) };
    (rc == 0).then_some((ws.ws_row, ws.ws_col))
}

/// Set a terminal's window size (`TIOCSWINSZ`, as `stty rows R cols C`);
/// the kernel sends SIGWINCH to its foreground process group.
pub fn set_window_size(fd: impl AsFd, rows: u16, cols: u16) -> io::Result<()> {
    use nix::libc;
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which
    // points at a live, initialised `winsize` on the stack.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &raw const ws) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Make the command, once spawned, the leader of a new session whose
/// controlling terminal is its stdin (a pty slave), as `login_tty(3)` and
/// `setsid --ctty` do: job control and Ctrl-C then work in a shell on it.
pub fn spawn_with_controlling_tty(cmd: &mut std::process::Command) {
    use nix::libc;
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and calls only
    // setsid(2) and ioctl(2), both async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Bring `lo` of the calling thread's namespace up (`SIOCSIFFLAGS`, as
/// `ifconfig lo up`): a scratch namespace then has 127.0.0.1, with no
/// netlink socket to open.
pub fn loopback_up() -> io::Result<()> {
    use nix::libc;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is a name and a union of plain integers and addresses,
    // for which all zeroes is a value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // The loopback flag is fixed by the driver; only UP changes.
    req.ifr_ifru.ifru_flags = libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads one `ifreq` through the pointer, which
    // points at a live, initialised `ifreq` on the stack.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const req) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An exclusive `flock` on `file`, retried every 10 ms until `grace` has
/// passed.
pub fn lock_within(
    mut file: File,
    grace: std::time::Duration,
) -> Result<nix::fcntl::Flock<File>, nix::Error> {
    let deadline = std::time::Instant::now() + grace;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(locked) => return Ok(locked),
            Err((back, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                file = back;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err((_, e)) => return Err(e),
        }
    }
}

pub fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFn = unsafe extern "C" fn(*mut c_void);
type CtxInt = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxText = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type CtxFlags = unsafe extern "C" fn(*mut c_void, c_uint);
type CtxRun = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// libnftables, the library `nft` is the front end of, loaded with
/// `dlopen(3)` the first time it is asked for (`None` where it is not
/// installed: the caller then runs `nft`). Under emulation (a VM without
/// KVM) starting `nft` costs more than a second, most of it the dynamic
/// linker; a command run in-process costs milliseconds.
struct LibNftables {
    ctx_new: CtxNew,
    ctx_free: CtxFn,
    buffer_output: CtxInt,
    buffer_error: CtxInt,
    output_buffer: CtxText,
    error_buffer: CtxText,
    set_output_flags: CtxFlags,
    run_from_buffer: CtxRun,
}

/// `NFT_CTX_OUTPUT_JSON` in `<nftables/libnftables.h>`.
const NFT_CTX_OUTPUT_JSON: c_uint = 1 << 4;

impl LibNftables {
    fn load() -> Option<Self> {
        use nix::libc;
        // SAFETY: dlopen with a constant, NUL-terminated name; the handle
        // is never closed, so the symbols below stay valid for the process.
        let lib = unsafe { libc::dlopen(c"libnftables.so.1".as_ptr(), libc::RTLD_NOW) };
        if lib.is_null() {
            return None;
        }
        let sym = |name: &std::ffi::CStr| {
            // SAFETY: a live handle and a NUL-terminated name.
            let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
            (!p.is_null()).then_some(p)
        };
        // SAFETY: each symbol is the libnftables function of that name,
        // whose C signature (libnftables.h, the same since nftables 0.9.3)
        // its fn pointer type spells.
        unsafe {
            Some(Self {
                ctx_new: std::mem::transmute::<*mut c_void, CtxNew>(sym(c"nft_ctx_new")?),
                ctx_free: std::mem::transmute::<*mut c_void, CtxFn>(sym(c"nft_ctx_free")?),
                buffer_output: std::mem::transmute::<*mut c_void, CtxInt>(sym(
                    c"nft_ctx_buffer_output",
                )?),
                buffer_error: std::mem::transmute::<*mut c_void, CtxInt>(sym(
                    c"nft_ctx_buffer_error",
                )?),
                output_buffer: std::mem::transmute::<*mut c_void, CtxText>(sym(
                    c"nft_ctx_get_output_buffer",
                )?),
                error_buffer: std::mem::transmute::<*mut c_void, CtxText>(sym(
                    c"nft_ctx_get_error_buffer",
                )?),
                set_output_flags: std::mem::transmute::<*mut c_void, CtxFlags>(sym(
                    c"nft_ctx_output_set_flags",
                )?),
                run_from_buffer: std::mem::transmute::<*mut c_void, CtxRun>(sym(
                    c"nft_run_cmd_from_buffer",
                )?),
            })
        }
    }
}

/// Run `commands` (what `nft -f -` would read; with `json`, output as
/// `nft -j`) through libnftables on the calling thread, so in its network
/// namespace: the context, and with it the netlink socket, is made and
/// freed here. `None` when libnftables cannot be loaded; otherwise what
/// nft would print on stdout, or on stderr when it refuses.
pub fn nft_in_process(commands: &str, json: bool) -> Option<Result<String, String>> {
    static LIB: std::sync::OnceLock<Option<LibNftables>> = std::sync::OnceLock::new();
    // libxtables, which libnftables initialises per context, keeps global
    // state: one context at a time.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if std::env::var_os("LABCTL_NFT").is_some_and(|v| v == "process") {
        return None;
    }
    let lib = LIB.get_or_init(LibNftables::load).as_ref()?;
    let Ok(commands) = std::ffi::CString::new(commands) else {
        return Some(Err("a NUL byte in the ruleset".into()));
    };
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the functions are libnftables' (see `load`); the context is
    // used only on this thread, between its creation and its free, and the
    // buffers it returns are copied out before it is freed.
    unsafe {
        let ctx = (lib.ctx_new)(0);
        if ctx.is_null() {
            return Some(Err("nft_ctx_new failed".into()));
        }
        (lib.buffer_output)(ctx);
        (lib.buffer_error)(ctx);
        if json {
            (lib.set_output_flags)(ctx, NFT_CTX_OUTPUT_JSON);
        }
        let rc = (lib.run_from_buffer)(ctx, commands.as_ptr());
        let text = |p: *const c_char| {
            if p.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        let out = if rc == 0 {
            Ok(text((lib.output_buffer)(ctx)))
        } else {
            Err(text((lib.error_buffer)(ctx)).trim().to_string())
        };
        (lib.ctx_free)(ctx);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A traffic thread ends up allowed on one CPU, the lowest of those
    /// it was allowed on, whichever CPU it started on; other threads keep
    /// theirs.
    #[test]
    fn traffic_threads_run_on_the_lowest_allowed_cpu() {
        use nix::sched::{CpuSet, sched_getaffinity};
        use nix::unistd::Pid;
        let allowed = |set: &CpuSet| -> Vec<usize> {
            (0..CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap_or(false))
                .collect()
        };
        let before = allowed(&sched_getaffinity(Pid::from_raw(0)).unwrap());
        let pinned = std::thread::spawn(|| {
            pin_traffic_thread();
            sched_getaffinity(Pid::from_raw(0)).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(allowed(&pinned), vec![before[0]]);
        assert_eq!(
            allowed(&sched_getaffinity(Pid::from_raw(0)).unwrap()),
            before
        );
    }

    /// Refused before the namespace is entered or anything is written, so
    /// this needs no root and touches nothing.
    #[test]
    fn only_network_sysctls_are_written() {
        let here = File::open("/proc/self/ns/net").expect("own namespace");
        for key in [
            "fs.lease-break-time",
            "kernel.core_pattern",
            "net",
            "net..ipv4",
            "net/../kernel/core_pattern",
            "net/ipv4/../../kernel/core_pattern",
            "net.ipv4.conf.all.rp_filter x",
        ] {
            let e = write_sysctl_in(&here, key, "1").expect_err(key);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{key}: {e}");
        }
    }
}
