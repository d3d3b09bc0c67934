//! The stream channel between the host and the agent in a VM
//! ([`crate::vm`]): live stdin, stdout, stderr, signals, window size and
//! the exit code of one command per session, where the file protocol can
//! only hand back a finished command's output.
//!
//! The VM has [`PORTS`] virtio-serial ports named `labctl.N`. On the host
//! each is a Unix socket `DIR/chN.sock` that QEMU listens on
//! (`-chardev socket,server=on`), in labctl's own VM directory (root's,
//! so only root connects); in the VM it is a character device
//! `/dev/vportXpY` that the agent serves. virtio-serial rather than vsock:
//! QEMU's vhost-vsock-pci needs `/dev/vhost-vsock` on the host, which this
//! project's build machines do not have, while a chardev socket needs
//! nothing from the host kernel.
//!
//! A session takes one port: the host `flock`s `DIR/chN.lock`, connects,
//! sends [`Kind::Open`] and reads frames until [`Kind::Exit`]. A port is a
//! byte stream that outlives its host connections (the VM's writes wait
//! in virtio-serial for the next host), so every frame carries a random
//! session id and each side drops frames of other sessions; bytes that do
//! not start a valid frame (the tail of one cut off by a host that died)
//! are skipped up to the next [`MAGIC`]. When the host goes away the agent
//! kills the session's command, as a terminal hangup would.
//!
//! Outside sessions a port also carries [`Kind::Wake`]: a host that has
//! posted a request file for the agent's file protocol ([`poke`]) takes a
//! free port, sends that one frame and leaves, and the agent's request
//! loop looks at once.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::{Reply, VmError};

/// How many sessions a VM serves at once. A shared VM serves every lab in
/// it: with four, the test binaries run two at a time (a `labctl run`
/// per topology file and the objects trials' one long run beside other
/// binaries' VM labs) took all of them, and a `labctl status` waited its
/// 30 s for a port and listed its lab's namespaces as `?`.
pub const PORTS: usize = 8;

/// The first bytes of every frame.
pub const MAGIC: [u8; 4] = *b"LCh1";

/// Magic, kind, session id, payload length.
const HEADER: usize = 4 + 1 + 8 + 4;

/// The largest payload a frame may carry; a header claiming more is junk.
const MAX_PAYLOAD: u32 = 1 << 20;

/// What a frame says. Host to VM: `Open` .. `Wake`; VM to host: the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Start a command: an [`OpenRequest`] as JSON.
    Open = 1,
    /// Bytes for the command's stdin.
    Stdin = 2,
    /// The host's stdin ended: close the command's.
    StdinEof = 3,
    /// New window size: rows and columns, `u16` little-endian each.
    Resize = 4,
    /// Send this signal (`i32` little-endian) to the command.
    Signal = 5,
    /// A request file is posted ([`crate::vm::Vm::call`]): look for it
    /// now. Outside any session; the host sends it and leaves.
    Wake = 6,
    /// The command runs.
    Started = 16,
    Stdout = 17,
    Stderr = 18,
    /// The command ended with this exit code (`i32` little-endian).
    Exit = 19,
    /// The command could not start: the reason, as text.
    Failed = 20,
}

impl Kind {
    const ALL: [Kind; 11] = [
        Kind::Open,
        Kind::Stdin,
        Kind::StdinEof,
        Kind::Resize,
        Kind::Signal,
        Kind::Wake,
        Kind::Started,
        Kind::Stdout,
        Kind::Stderr,
        Kind::Exit,
        Kind::Failed,
    ];

    fn from_code(code: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u8 == code)
    }
}

/// One message on a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub session: u64,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: Kind, session: u64, payload: impl Into<Vec<u8>>) -> Frame {
        Frame {
            kind,
            session,
            payload: payload.into(),
        }
    }

    /// The frame's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.payload.len());
        out.extend_from_slice(&MAGIC);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.session.to_le_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    fn int(&self) -> Option<i32> {
        Some(i32::from_le_bytes(self.payload.get(..4)?.try_into().ok()?))
    }
}

/// What the host asks the agent to run: `labctl ARGV...`, on a pty of
/// `tty` (rows, columns) when given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenRequest {
    pub argv: Vec<String>,
    pub tty: Option<(u16, u16)>,
    pub term: Option<String>,
}

/// Write one frame in one `write`, so frames of two threads never mix.
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> io::Result<()> {
    w.write_all(&frame.encode())?;
    w.flush()
}

/// The next frame, or `None` at the end of the stream. Bytes that do not
/// start a valid header are skipped one at a time.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut head = [0u8; HEADER];
    if !fill(r, &mut head)? {
        return Ok(None);
    }
    loop {
        let len = u32::from_le_bytes(head[13..17].try_into().expect("4 bytes"));
        if head[..4] == MAGIC
            && len <= MAX_PAYLOAD
            && let Some(kind) = Kind::from_code(head[4])
        {
            let session = u64::from_le_bytes(head[5..13].try_into().expect("8 bytes"));
            let mut payload = vec![0; len as usize];
            if !fill(r, &mut payload)? {
                return Ok(None);
            }
            return Ok(Some(Frame {
                kind,
                session,
                payload,
            }));
        }
        head.copy_within(1.., 0);
        if !fill(r, &mut head[HEADER - 1..])? {
            return Ok(None);
        }
    }
}

/// `read_exact`, false at the end of the stream.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

type Shared<W> = Arc<Mutex<W>>;

fn send<W: Write>(w: &Shared<W>, frame: &Frame) -> io::Result<()> {
    let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
    write_frame(&mut *w, frame)
}

fn session_id() -> u64 {
    let mut b = [0u8; 8];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u64::from_le_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
}

// ---------------------------------------------------------------- host --

/// The socket of port `n` in a VM directory.
pub fn socket_path(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("ch{n}.sock"))
}

/// QEMU's arguments for the ports, as one shell-quoted string for
/// virtme-ng's `--qemu-opts` (which hands it to a shell). `None` when a
/// socket path would not fit in `sun_path`: the VM then has the file
/// protocol only.
pub fn qemu_args(dir: &Path) -> Option<String> {
    let mut args = vec![
        "-device".to_string(),
        "virtio-serial-pci,id=labctl-serial".to_string(),
    ];
    for n in 0..PORTS {
        let path = socket_path(dir, n).into_os_string().into_string().ok()?;
        // sun_path holds 108 bytes with the terminating NUL.
        if path.len() > 107 {
            return None;
        }
        // QEMU's option syntax doubles a comma inside a value.
        let path = path.replace(',', ",,");
        args.extend([
            "-chardev".into(),
            format!("socket,id=labctl{n},path={path},server=on,wait=off"),
            "-device".into(),
            format!("virtserialport,bus=labctl-serial.0,chardev=labctl{n},name=labctl.{n}"),
        ]);
    }
    Some(
        args.iter()
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// A port taken for one session.
pub struct Port {
    stream: UnixStream,
    // Held for the session: the port is ours while it is locked.
    _lock: nix::fcntl::Flock<File>,
}

/// Take a free port of the VM in `dir`, waiting up to `wait` for one;
/// `None` when the VM has no ports (booted by a labctl without them).
pub fn connect(dir: &Path, wait: Duration) -> Result<Option<Port>, VmError> {
    use nix::fcntl::{Flock, FlockArg};
    let t = Instant::now();
    loop {
        let mut any = false;
        for n in 0..PORTS {
            let sock = socket_path(dir, n);
            // QEMU made it: a socket, never a link someone put there.
            if !fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket()) {
                continue;
            }
            any = true;
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(dir.join(format!("ch{n}.lock")))
                .map_err(|source| VmError::Io {
                    what: format!("lock port {n} of the VM"),
                    source,
                })?;
            let Ok(lock) = Flock::lock(lock, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            let stream = UnixStream::connect(&sock).map_err(|source| VmError::Io {
                what: format!("connect to {}", sock.display()),
                source,
            })?;
            return Ok(Some(Port {
                stream,
                _lock: lock,
            }));
        }
        if !any {
            return Ok(None);
        }
        if t.elapsed() > wait {
            return Err(VmError::Busy {
                ports: PORTS,
                secs: wait.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Tell the agent of the VM in `dir` that a request file is posted
/// ([`Kind::Wake`]) through a free port, so it looks at once rather than
/// at its next look; nothing when every port is taken or the VM has none.
pub fn poke(dir: &Path) {
    if let Ok(Some(mut port)) = connect(dir, Duration::ZERO) {
        let _ = write_frame(&mut port.stream, &Frame::new(Kind::Wake, 0, []));
    }
}

/// The agent's request loop's wait, cut short by a [`Kind::Wake`] that
/// came on any port.
#[derive(Default)]
pub struct Wake {
    posted: Mutex<bool>,
    signal: std::sync::Condvar,
}

impl Wake {
    pub fn notify(&self) {
        *self.posted.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.signal.notify_all();
    }

    /// Until a wake (one since the last wait counts) or `limit`.
    pub fn wait(&self, limit: Duration) {
        let posted = self.posted.lock().unwrap_or_else(|e| e.into_inner());
        let (mut posted, _) = self
            .signal
            .wait_timeout_while(posted, limit, |p| !*p)
            .unwrap_or_else(|e| e.into_inner());
        *posted = false;
    }
}

/// How a session's standard streams are wired on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Collect the output into the [`Reply`]; no stdin.
    Capture,
    /// Write output as it comes; forward stdin when `stdin` (else the
    /// command's stdin is empty). SIGINT, SIGTERM, SIGHUP and SIGQUIT are
    /// forwarded to the command.
    Stream { stdin: bool },
    /// stdin is a terminal: it is put in raw mode (restored on every way
    /// out), the command gets a pty of the same size in the VM, and window
    /// size changes follow it.
    Terminal,
}

enum Event {
    Frame(Frame),
    Closed,
    Signalled(Signal),
}

/// After the host forwarded a SIGTERM or SIGHUP, how long the command
/// gets to end before the host stops waiting for it.
const SIGNAL_GRACE: Duration = Duration::from_secs(5);

/// Puts a terminal in raw mode and back on drop.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> io::Result<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = io::stdin();
        let saved = tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        // TCSANOW, not TCSAFLUSH: what was typed ahead is kept for the command.
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Run `labctl ARGV...` in the VM on a taken port. `deadline` bounds the
/// whole session, `pickup` the wait for the agent to start the command;
/// `log` is the console to point at when the VM goes away.
///
/// In [`Mode::Stream`] and [`Mode::Terminal`] the calling thread blocks
/// those signals for good (a thread of this session takes them with
/// `sigwait`): call it from a command that ends when it returns.
pub fn run(
    port: Port,
    argv: &[String],
    mode: Mode,
    deadline: Option<Duration>,
    pickup: Duration,
    log: &Path,
) -> Result<Reply, VmError> {
    let io_err = |what: &str| {
        let what = what.to_string();
        move |source| VmError::Io { what, source }
    };
    let gone = || VmError::Gone {
        log: log.to_path_buf(),
        last: super::console_tail(log),
    };
    let t = Instant::now();
    let session = session_id();
    let (tx, rx) = mpsc::channel::<Event>();
    if mode != Mode::Capture {
        forward_signals(mode, tx.clone());
    }
    let writer = Arc::new(Mutex::new(
        port.stream.try_clone().map_err(io_err("clone the port"))?,
    ));
    let mut reader = BufReader::new(port.stream.try_clone().map_err(io_err("clone the port"))?);
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            while let Ok(Some(frame)) = read_frame(&mut reader) {
                if frame.session == session && tx.send(Event::Frame(frame)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::Closed);
        });
    }
    let tty = (mode == Mode::Terminal).then(|| {
        crate::sys::window_size(io::stdin())
            .filter(|&(r, c)| r > 0 && c > 0)
            .unwrap_or((24, 80))
    });
    let open = OpenRequest {
        argv: argv.to_vec(),
        tty,
        term: tty.and(std::env::var("TERM").ok()),
    };
    let json = serde_json::to_vec(&open).expect("a request is JSON");
    send(&writer, &Frame::new(Kind::Open, session, json)).map_err(|_| gone())?;
    // Wait for the agent to start it.
    loop {
        let left = pickup.saturating_sub(t.elapsed());
        match rx.recv_timeout(left) {
            Ok(Event::Frame(f)) if f.kind == Kind::Started => break,
            Ok(Event::Frame(f)) if f.kind == Kind::Failed => {
                return Err(VmError::Command {
                    what: format!("start `labctl {}` in the VM", argv.join(" ")),
                    detail: String::from_utf8_lossy(&f.payload).into_owned(),
                });
            }
            Ok(Event::Frame(_)) => {}
            Ok(Event::Closed) => return Err(gone()),
            Ok(Event::Signalled(s)) => return Ok(Reply::code(128 + s as i32)),
            Err(_) => {
                return Err(VmError::AgentSilent {
                    secs: pickup.as_secs(),
                    log: log.to_path_buf(),
                });
            }
        }
    }
    // From here the terminal is raw until the guard drops, whatever ends
    // the session.
    let _raw = match mode {
        Mode::Terminal => Some(RawMode::enter().map_err(io_err("put the terminal in raw mode"))?),
        _ => None,
    };
    match mode {
        Mode::Terminal | Mode::Stream { stdin: true } => forward_stdin(writer.clone(), session),
        _ => {
            let _ = send(&writer, &Frame::new(Kind::StdinEof, session, []));
        }
    }
    let mut reply = Reply::code(0);
    let mut signals = 0;
    let mut grace: Option<(Instant, Signal)> = None;
    loop {
        let mut wait = Duration::from_secs(3600);
        if let Some(d) = deadline {
            wait = wait.min(d.saturating_sub(t.elapsed()));
        }
        if let Some((since, _)) = grace {
            wait = wait.min(SIGNAL_GRACE.saturating_sub(since.elapsed()));
        }
        match rx.recv_timeout(wait) {
            Ok(Event::Frame(f)) => match f.kind {
                Kind::Stdout | Kind::Stderr if mode == Mode::Capture => {
                    let buf = if f.kind == Kind::Stdout {
                        &mut reply.stdout
                    } else {
                        &mut reply.stderr
                    };
                    buf.extend_from_slice(&f.payload);
                }
                Kind::Stdout => {
                    let mut out = io::stdout().lock();
                    let _ = out.write_all(&f.payload);
                    let _ = out.flush();
                }
                Kind::Stderr => {
                    let _ = io::stderr().write_all(&f.payload);
                }
                Kind::Exit => {
                    reply.code = f.int().unwrap_or(1);
                    return Ok(reply);
                }
                _ => {}
            },
            Ok(Event::Closed) => return Err(gone()),
            Ok(Event::Signalled(Signal::SIGWINCH)) => {
                if let Some((rows, cols)) = crate::sys::window_size(io::stdin()) {
                    let mut size = rows.to_le_bytes().to_vec();
                    size.extend_from_slice(&cols.to_le_bytes());
                    let _ = send(&writer, &Frame::new(Kind::Resize, session, size));
                }
            }
            Ok(Event::Signalled(s)) => {
                let on = match s {
                    Signal::SIGTERM | Signal::SIGHUP if mode == Mode::Terminal => Signal::SIGHUP,
                    s => s,
                };
                let _ = send(
                    &writer,
                    &Frame::new(Kind::Signal, session, (on as i32).to_le_bytes()),
                );
                signals += 1;
                // A command that ignores the signal: the third one, or the
                // grace after SIGTERM/SIGHUP, ends the wait.
                if signals >= 3 {
                    return Ok(Reply::code(128 + s as i32));
                }
                if matches!(s, Signal::SIGTERM | Signal::SIGHUP) {
                    grace.get_or_insert((Instant::now(), s));
                }
            }
            Err(_) => {
                if let Some((since, s)) = grace
                    && since.elapsed() >= SIGNAL_GRACE
                {
                    return Ok(Reply::code(128 + s as i32));
                }
                if deadline.is_some_and(|d| t.elapsed() >= d) {
                    let kill = (Signal::SIGKILL as i32).to_le_bytes();
                    let _ = send(&writer, &Frame::new(Kind::Signal, session, kill));
                    return Err(VmError::Deadline {
                        what: argv.first().cloned().unwrap_or_default(),
                        secs: deadline.unwrap_or_default().as_secs(),
                    });
                }
            }
        }
    }
}

/// Forward the host's stdin to the session until it ends.
fn forward_stdin(writer: Shared<UnixStream>, session: u64) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match io::stdin().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if send(&writer, &Frame::new(Kind::Stdin, session, &buf[..n])).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = send(&writer, &Frame::new(Kind::StdinEof, session, []));
    });
}

/// Take SIGINT, SIGTERM, SIGHUP, SIGQUIT (and SIGWINCH for a terminal)
/// with `sigwait` on a thread of their own, for [`run`] to send on:
/// SIGWINCH as the new window size, the others to the command (for a
/// terminal SIGTERM and SIGHUP as SIGHUP, the terminal's hangup, which a
/// shell obeys where it ignores SIGTERM).
fn forward_signals(mode: Mode, events: mpsc::Sender<Event>) {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(s);
    }
    if mode == Mode::Terminal {
        set.add(Signal::SIGWINCH);
    }
    // Blocked here, and so in every thread spawned from here on.
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    std::thread::spawn(move || {
        while let Ok(sig) = set.wait() {
            let _ = events.send(Event::Signalled(sig));
        }
    });
}

// ----------------------------------------------------------------- VM --

/// The agent's ports: `/dev/vportXpY` for each virtio-serial port named
/// `labctl.N`.
pub fn guest_ports() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir("/sys/class/virtio-ports")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            fs::read_to_string(e.path().join("name")).is_ok_and(|n| n.trim().starts_with("labctl."))
        })
        .map(|e| Path::new("/dev").join(e.file_name()))
        .collect();
    out.sort();
    out
}

/// A command running for a session.
struct Running {
    session: u64,
    child: Arc<Mutex<Child>>,
    /// The command leads its own session and process group (a pty).
    group: bool,
    stdin: mpsc::Sender<Option<Vec<u8>>>,
    pty: Option<Arc<OwnedFd>>,
}

impl Running {
    /// Send `sig` to the command (its process group on a pty) while it
    /// is not reaped, so its pid cannot have been reused.
    fn signal(&self, sig: Signal) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(child.try_wait(), Ok(None)) {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = if self.group {
                nix::sys::signal::killpg(pid, sig)
            } else {
                nix::sys::signal::kill(pid, sig)
            };
        }
    }
}

/// Serve sessions on the port `dev` for as long as the agent runs:
/// `exe ARGV...` per [`Kind::Open`].
pub fn serve(dev: &Path, exe: &Path, wake: &Wake) -> io::Result<()> {
    let port = OpenOptions::new().read(true).write(true).open(dev)?;
    let out = Arc::new(Mutex::new(port.try_clone()?));
    let host = HostWait::new(&port);
    let mut input = BufReader::new(port);
    let mut current: Option<Running> = None;
    loop {
        match read_frame(&mut input) {
            Ok(Some(frame)) if frame.kind == Kind::Wake => wake.notify(),
            Ok(Some(frame)) => handle(frame, &mut current, &out, exe),
            // A virtio-serial read ends at once while no host is connected:
            // the session's host is gone.
            Ok(None) | Err(_) => {
                if let Some(r) = current.take() {
                    r.signal(Signal::SIGKILL);
                }
                host.wait();
            }
        }
    }
}

/// Waiting, between sessions, for a port's host to send something. While
/// no host is connected a read of the port ends at once and `poll` says
/// readable (and hung up), so neither can wait; the port's wait queue is
/// woken when a host connects or leaves and when data comes. An
/// edge-triggered epoll reports exactly those wakeups that leave the port
/// readable or hung up: nothing while it stays idle. (Reading again every
/// 20 ms instead kept the idle shared VM's QEMU at 55 % of a host core
/// under emulation, against 7 % for a VM running `sleep`.) A wakeup
/// missed between a read and the wait is not lost: the epoll set keeps
/// it. Still a read at least every second, and a plain 20 ms sleep if
/// epoll fails.
struct HostWait(Option<nix::sys::epoll::Epoll>);

impl HostWait {
    fn new(port: &File) -> Self {
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .ok()
            .filter(|e| {
                e.add(
                    port,
                    EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 0),
                )
                .is_ok()
            });
        Self(epoll)
    }

    fn wait(&self) {
        self.wait_at_most(Duration::from_secs(1));
    }

    /// Until the port is woken readable or hung up, at most `limit`.
    fn wait_at_most(&self, limit: Duration) {
        match &self.0 {
            Some(epoll) => {
                let mut events = [nix::sys::epoll::EpollEvent::empty()];
                let ms = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX);
                let _ = epoll.wait(&mut events, ms);
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn handle(frame: Frame, current: &mut Option<Running>, out: &Shared<File>, exe: &Path) {
    if frame.kind == Kind::Open {
        if let Some(r) = current.take() {
            r.signal(Signal::SIGKILL);
        }
        let started = serde_json::from_slice::<OpenRequest>(&frame.payload)
            .map_err(|e| e.to_string())
            .and_then(|req| start(&req, frame.session, out, exe).map_err(|e| e.to_string()));
        match started {
            Ok(r) => *current = Some(r),
            Err(e) => {
                let _ = send(out, &Frame::new(Kind::Failed, frame.session, e));
            }
        }
        return;
    }
    let Some(r) = current.as_ref().filter(|r| r.session == frame.session) else {
        return;
    };
    match frame.kind {
        Kind::Stdin => {
            let _ = r.stdin.send(Some(frame.payload));
        }
        Kind::StdinEof => {
            let _ = r.stdin.send(None);
        }
        Kind::Resize => {
            if let (Some(pty), &[a, b, c, d, ..]) = (&r.pty, &frame.payload[..]) {
                let rows = u16::from_le_bytes([a, b]);
                let cols = u16::from_le_bytes([c, d]);
                let _ = crate::sys::set_window_size(pty.as_fd(), rows, cols);
            }
        }
        Kind::Signal => {
            if let Some(sig) = frame.int().and_then(|s| Signal::try_from(s).ok()) {
                r.signal(sig);
            }
        }
        _ => {}
    }
}

/// Start `exe ARGV...` for a session, on a pty when asked, and the threads
/// that carry its streams; [`Kind::Exit`] follows its last output.
fn start(req: &OpenRequest, session: u64, out: &Shared<File>, exe: &Path) -> io::Result<Running> {
    let mut cmd = Command::new(exe);
    cmd.args(&req.argv);
    let mut pumps = Vec::new();
    let (stdin_tx, stdin_rx) = mpsc::channel::<Option<Vec<u8>>>();
    let (child, pty, mut stdin): (Child, Option<Arc<OwnedFd>>, Box<dyn Write + Send>) =
        match req.tty {
            Some((rows, cols)) => {
                let size = nix::pty::Winsize {
                    ws_row: rows,
                    ws_col: cols,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                let pty = nix::pty::openpty(Some(&size), None)?;
                for fd in [&pty.master, &pty.slave] {
                    // Not into the commands of other sessions: a pty ends
                    // (EIO on the master) only when every slave fd is closed.
                    nix::fcntl::fcntl(
                        fd,
                        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                    )?;
                }
                cmd.stdin(pty.slave.try_clone()?)
                    .stdout(pty.slave.try_clone()?)
                    .stderr(pty.slave);
                if let Some(term) = &req.term {
                    cmd.env("TERM", term);
                }
                crate::sys::spawn_with_controlling_tty(&mut cmd);
                let child = cmd.spawn()?;
                // The parent's copies of the slave go with `cmd`.
                drop(cmd);
                let master = Arc::new(pty.master);
                let reader = File::from(master.try_clone()?);
                pumps.push(pump(reader, Kind::Stdout, session, out.clone()));
                (
                    child,
                    Some(master.clone()),
                    Box::new(File::from(master.try_clone()?)),
                )
            }
            None => {
                cmd.stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                let mut child = cmd.spawn()?;
                let stdout = child.stdout.take().expect("piped");
                let stderr = child.stderr.take().expect("piped");
                pumps.push(pump(stdout, Kind::Stdout, session, out.clone()));
                pumps.push(pump(stderr, Kind::Stderr, session, out.clone()));
                let stdin = child.stdin.take().expect("piped");
                (child, None, Box::new(stdin))
            }
        };
    let on_pty = pty.is_some();
    let child = Arc::new(Mutex::new(child));
    // Started before any output: the pumps wait for this frame's lock.
    send(out, &Frame::new(Kind::Started, session, []))?;
    std::thread::spawn(move || {
        for msg in stdin_rx {
            match msg {
                Some(bytes) => {
                    if stdin.write_all(&bytes).is_err() {
                        return;
                    }
                }
                // A pty has no end of input but ^D, which the line
                // discipline turns into one.
                None if on_pty => {
                    let _ = stdin.write_all(&[4]);
                }
                None => return,
            }
        }
    });
    let waited = child.clone();
    let out = out.clone();
    std::thread::spawn(move || {
        for p in pumps {
            let _ = p.join();
        }
        let code = wait_exit(&waited);
        let _ = send(&out, &Frame::new(Kind::Exit, session, code.to_le_bytes()));
    });
    Ok(Running {
        session,
        child,
        group: on_pty,
        stdin: stdin_tx,
        pty,
    })
}

/// Wait for the child to end without holding its lock (so signals reach
/// it meanwhile), then reap it: its exit code, or 128 + the signal.
fn wait_exit(child: &Mutex<Child>) -> i32 {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    let pid = child.lock().unwrap_or_else(|e| e.into_inner()).id();
    let _ = waitid(
        Id::Pid(nix::unistd::Pid::from_raw(pid as i32)),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
    );
    let status = child.lock().unwrap_or_else(|e| e.into_inner()).wait();
    match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code()
                .or_else(|| s.signal().map(|n| 128 + n))
                .unwrap_or(1)
        }
        Err(_) => 1,
    }
}

/// Copy a stream of the command into frames of `kind` until it ends (EIO
/// on a pty master whose slave is closed).
fn pump(
    mut from: impl Read + Send + 'static,
    kind: Kind,
    session: u64,
    out: Shared<File>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if send(&out, &Frame::new(kind, session, &buf[..n])).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request loop's wait ends at once for a wake posted before it,
    /// waits out its limit otherwise (the wake is used up), and ends
    /// early for a wake from another thread.
    #[test]
    fn a_wake_cuts_the_request_loops_wait_short() {
        let wake = Arc::new(Wake::default());
        let long = Duration::from_secs(10);
        wake.notify();
        let t = Instant::now();
        wake.wait(long);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "missed a wake posted before"
        );
        let short = Duration::from_millis(200);
        let t = Instant::now();
        wake.wait(short);
        assert!(t.elapsed() >= short, "the wake was not used up");
        let other = wake.clone();
        let poster = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            other.notify();
        });
        let t = Instant::now();
        wake.wait(long);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "slept through the wake"
        );
        poster.join().expect("poster");
    }

    /// The agent's wait between sessions sleeps while nothing happens,
    /// wakes when data comes, and, edge-triggered, does not wake again for
    /// the same unread data (a level-triggered wait or a plain sleep would
    /// spin).
    #[test]
    fn host_wait_sleeps_until_something_happens() {
        let (ours, theirs) = UnixStream::pair().expect("socket pair");
        let port = File::from(OwnedFd::from(ours));
        let host = HostWait::new(&port);
        assert!(host.0.is_some(), "epoll set up");
        let quiet = Duration::from_millis(300);
        let t = Instant::now();
        host.wait_at_most(quiet);
        assert!(
            t.elapsed() >= quiet - Duration::from_millis(50),
            "woke while idle"
        );
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            (&theirs).write_all(b"x").expect("write");
            theirs
        });
        let t = Instant::now();
        host.wait_at_most(Duration::from_secs(10));
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "slept through the data"
        );
        let _theirs = writer.join().expect("writer");
        let t = Instant::now();
        host.wait_at_most(quiet);
        assert!(
            t.elapsed() >= quiet - Duration::from_millis(50),
            "woke again for the same data"
        );
    }

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::new(Kind::Open, 7, b"{}".to_vec()),
            Frame::new(Kind::Stdout, u64::MAX, vec![0; 70_000]),
            Frame::new(Kind::Exit, 1, 3i32.to_le_bytes()),
            Frame::new(Kind::StdinEof, 2, []),
            Frame::new(Kind::Wake, 0, []),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut r = &wire[..];
        for f in &frames {
            assert_eq!(read_frame(&mut r).unwrap().as_ref(), Some(f));
        }
        assert_eq!(read_frame(&mut r).unwrap(), None);
        assert_eq!(frames[2].int(), Some(3));
    }

    #[test]
    fn junk_before_a_frame_is_skipped() {
        // The tail of a frame cut off, then a frame.
        let good = Frame::new(Kind::Stderr, 9, b"hi".to_vec());
        let mut wire = Frame::new(Kind::Stdout, 8, vec![b'L'; 40]).encode()[..30].to_vec();
        wire.extend_from_slice(b"LCh");
        wire.extend(good.encode());
        let mut r = &wire[1..];
        assert_eq!(read_frame(&mut r).unwrap(), Some(good));
    }

    #[test]
    fn a_header_claiming_too_much_is_junk() {
        let mut wire = MAGIC.to_vec();
        wire.push(Kind::Stdout as u8);
        wire.extend_from_slice(&1u64.to_le_bytes());
        wire.extend_from_slice(&u32::MAX.to_le_bytes());
        let good = Frame::new(Kind::Exit, 1, 0i32.to_le_bytes());
        wire.extend(good.encode());
        assert_eq!(read_frame(&mut &wire[..]).unwrap(), Some(good));
    }

    #[test]
    fn a_cut_frame_is_the_end() {
        let wire = Frame::new(Kind::Stdout, 1, b"hello".to_vec()).encode();
        assert_eq!(read_frame(&mut &wire[..wire.len() - 1]).unwrap(), None);
        assert_eq!(read_frame(&mut &b""[..]).unwrap(), None);
    }

    #[test]
    fn qemu_args_quote_for_the_shell_and_escape_commas() {
        let a = qemu_args(Path::new("/var/lib/lab,ctl/vm/it's")).unwrap();
        assert!(
            a.starts_with("'-device' 'virtio-serial-pci,id=labctl-serial' "),
            "{a}"
        );
        assert!(
            a.contains(
                r"'socket,id=labctl0,path=/var/lib/lab,,ctl/vm/it'\''s/ch0.sock,server=on,wait=off'"
            ),
            "{a}"
        );
        assert_eq!(a.matches("virtserialport").count(), PORTS);
        assert!(qemu_args(&Path::new("/").join("x".repeat(100))).is_none());
    }
}
