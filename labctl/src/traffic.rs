//! Built-in traffic for lab namespaces: small TCP/HTTP and UDP echo servers,
//! and clients that ping, connect, fetch and echo, each run inside a named
//! namespace. A lab needs no curl, nginx or python: the server answers HTTP
//! with the namespace it runs in and the client address it saw, which is how
//! a scenario proves which backend served and whether the source was
//! masqueraded.
//!
//! Written by hand on std, socket2 and nix for the same reason as
//! the capture module (CRATES.md: the packet crates are stale or lack what we
//! need). Sockets are made on a thread that entered the namespace with
//! [`NetnsGuard`]; a socket stays in the namespace it was made in, so it may
//! be used after the thread leaves. Ping uses a raw ICMP socket: the
//! unprivileged ICMP datagram socket is off in a fresh namespace
//! (`net.ipv4.ping_group_range` is "1 0"). Clients and servers run on one
//! CPU ([`sys::pin_traffic_thread`]), so their segments are never reordered
//! between two CPUs' queues.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::{Deserialize, Serialize, Serializer};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::sys;

/// Transport of a server port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    Tcp,
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// How often server loops look at the stop flag.
const TICK: Duration = Duration::from_millis(100);
/// A server connection idle this long is closed.
const IDLE: Duration = Duration::from_secs(10);
/// Largest HTTP response a client reads.
const MAX_RESPONSE: usize = 1 << 20;
/// How long a TCP client waits for the server's FIN after sending its own
/// (see [`close`]): what a scenario used to wait after every client.
const CLOSE_WAIT: Duration = Duration::from_millis(300);

/// Servers listening in one namespace; see [`Servers::start`].
pub struct Servers {
    netns: String,
    ports: Vec<(u16, Proto)>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<SocketAddr>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// Listen on `0.0.0.0:PORT` in `netns` for each port. TCP ports answer an
    /// HTTP request (`GET ...`) with `200 OK` and the body
    /// `served-by=NETNS client=IP:PORT server=IP:PORT\n`, and echo anything
    /// else; UDP ports echo each datagram. Port 0 picks a free port (see
    /// [`Servers::ports`]). The sockets are bound when this returns.
    pub fn start(netns: &str, ports: &[(u16, Proto)]) -> io::Result<Servers> {
        let sockets = bind_in(netns, ports)?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut bound = Vec::new();
        let mut threads = Vec::new();
        for socket in sockets {
            let ctx = Ctx {
                netns: netns.to_string(),
                stop: Arc::clone(&stop),
                seen: Arc::clone(&seen),
            };
            let (port, proto, thread) = match socket {
                Bound::Tcp(l) => {
                    let port = l.local_addr()?.port();
                    let t = std::thread::Builder::new()
                        .name(format!("labctl-tcp-{port}"))
                        .spawn(move || serve_tcp(l, ctx))?;
                    (port, Proto::Tcp, t)
                }
                Bound::Udp(s) => {
                    let port = s.local_addr()?.port();
                    let t = std::thread::Builder::new()
                        .name(format!("labctl-udp-{port}"))
                        .spawn(move || serve_udp(s, ctx))?;
                    (port, Proto::Udp, t)
                }
            };
            bound.push((port, proto));
            threads.push(thread);
        }
        Ok(Servers {
            netns: netns.to_string(),
            ports: bound,
            stop,
            seen,
            threads,
        })
    }

    /// The namespace the servers run in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The ports actually bound, in the order asked.
    pub fn ports(&self) -> &[(u16, Proto)] {
        &self.ports
    }

    /// Every client address the servers saw, in order of arrival (one entry
    /// per TCP connection or UDP datagram).
    pub fn seen_clients(&self) -> Vec<SocketAddr> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stop listening and wait for the server threads (at most about
    /// [`TICK`] for each open connection to notice).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.shutdown();
    }
}

enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// What a server thread shares.
struct Ctx {
    netns: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Ctx {
    fn record(&self, client: SocketAddr) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(client);
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Bind every port on a thread inside `netns`.
fn bind_in(netns: &str, ports: &[(u16, Proto)]) -> io::Result<Vec<Bound>> {
    sys::in_netns(netns, || {
        ports
            .iter()
            .map(|&(port, proto)| {
                let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
                let bound = match proto {
                    // std sets SO_REUSEADDR on listeners.
                    Proto::Tcp => Bound::Tcp(TcpListener::bind(addr)?),
                    Proto::Udp => Bound::Udp(UdpSocket::bind(addr)?),
                };
                Ok(bound)
            })
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| io::Error::new(e.kind(), format!("bind in netns {netns}: {e}")))
    })?
}

/// Wait until `fd` is readable or [`TICK`] passes.
fn readable(fd: impl AsFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::from(TICK.as_millis() as u16)), Ok(n) if n > 0)
}

fn serve_tcp(listener: TcpListener, ctx: Ctx) {
    // Its connections' threads are spawned here and stay on its CPU too.
    sys::pin_traffic_thread();
    let ctx = Arc::new(ctx);
    let _ = listener.set_nonblocking(true);
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !ctx.stopping() {
        if !readable(&listener) {
            continue;
        }
        match listener.accept() {
            Ok((stream, client)) => {
                ctx.record(client);
                let ctx = Arc::clone(&ctx);
                if let Ok(t) = std::thread::Builder::new()
                    .name("labctl-conn".into())
                    .spawn(move || {
                        let _ = serve_conn(stream, client, &ctx);
                    })
                {
                    conns.push(t);
                }
                conns.retain(|t| !t.is_finished());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => std::thread::sleep(TICK),
        }
    }
    for t in conns {
        let _ = t.join();
    }
}

/// One server connection: HTTP if it starts like a request, echo otherwise.
fn serve_conn(mut stream: TcpStream, client: SocketAddr, ctx: &Ctx) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(TICK))?;
    stream.set_write_timeout(Some(IDLE))?;
    let server = stream.local_addr()?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut have = 0;
    let mut last = Instant::now();
    let mut http = None;
    loop {
        if ctx.stopping() || last.elapsed() > IDLE {
            return Ok(());
        }
        let n = match stream.read(&mut buf[have..]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        last = Instant::now();
        have += n;
        let is_http = *http.get_or_insert_with(|| looks_like_http(&buf[..have]));
        if !is_http {
            stream.write_all(&buf[..have])?;
            have = 0;
            continue;
        }
        // Answer once the request head is complete (or the buffer is full).
        if buf[..have].windows(4).any(|w| w == b"\r\n\r\n") || have == buf.len() {
            let body = format!("served-by={} client={client} server={server}\n", ctx.netns);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                 Server: labctl\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes())?;
            let _ = stream.shutdown(std::net::Shutdown::Write);
            return Ok(());
        }
    }
}

fn looks_like_http(start: &[u8]) -> bool {
    const METHODS: [&[u8]; 5] = [b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE "];
    METHODS.iter().any(|m| start.starts_with(m))
}

fn serve_udp(socket: UdpSocket, ctx: Ctx) {
    sys::pin_traffic_thread();
    let _ = socket.set_read_timeout(Some(TICK));
    let mut buf = vec![0u8; 65536];
    while !ctx.stopping() {
        match socket.recv_from(&mut buf) {
            Ok((n, client)) => {
                ctx.record(client);
                let _ = socket.send_to(&buf[..n], client);
            }
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            // ICMP errors from earlier replies surface here; keep serving.
            Err(_) => {}
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// What a client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// ICMP echo request, like `ping -c 1 -W TIMEOUT`.
    Ping,
    /// TCP three-way handshake, then close.
    TcpConnect,
    /// `GET /` over HTTP/1.1, like `curl -s http://TARGET/`.
    HttpGet,
    /// One UDP datagram that must come back unchanged.
    Udp,
}

/// One client probe; see [`run_client`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Where to send; the port is ignored for [`Kind::Ping`].
    pub target: SocketAddr,
    pub kind: Kind,
    /// For each attempt.
    #[serde(rename = "timeout_ms", with = "millis")]
    pub timeout: Duration,
    /// Tries until one succeeds (at least one).
    pub attempts: u32,
    /// Bind to this local address first, like `ping -I` / `curl --interface`.
    pub source: Option<IpAddr>,
}

impl Request {
    /// A single attempt with a 2 s timeout.
    pub fn new(kind: Kind, target: SocketAddr) -> Request {
        Request {
            target,
            kind,
            timeout: Duration::from_secs(2),
            attempts: 1,
            source: None,
        }
    }

    /// Ping `ip`.
    pub fn ping(ip: IpAddr) -> Request {
        Request::new(Kind::Ping, SocketAddr::new(ip, 0))
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Request {
        self.timeout = timeout;
        self
    }

    pub fn with_attempts(mut self, attempts: u32) -> Request {
        self.attempts = attempts;
        self
    }

    pub fn with_source(mut self, source: IpAddr) -> Request {
        self.source = Some(source);
        self
    }
}

/// What a client probe got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Attempts made (the last one decided the result).
    pub attempts: u32,
    #[serde(serialize_with = "result_repr")]
    pub result: Result<Success, Failure>,
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        self.result.is_ok()
    }
}

/// A probe that worked.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Success {
    /// Ping: request to reply. TCP: the handshake. HTTP: connect to the end
    /// of the response. UDP: datagram out to echo back.
    #[serde(rename = "rtt_ms", serialize_with = "millis_f64")]
    pub rtt: Duration,
    /// The client's own address and port (what an un-NATed server sees).
    pub local: Option<SocketAddr>,
    /// Who answered a ping (the echo reply's source).
    pub replied_by: Option<IpAddr>,
    /// HTTP status code.
    pub status: Option<u16>,
    /// HTTP response body.
    pub body: Option<String>,
    /// From a labctl server's body: the namespace that served.
    pub served_by: Option<String>,
    /// From a labctl server's body: the client address the server saw.
    pub client_seen: Option<SocketAddr>,
    /// UDP: the echoed datagram (lossy UTF-8).
    pub echo: Option<String>,
    /// TCP and HTTP: segments the client's socket retransmitted
    /// (`tcpi_total_retrans`), SYNs included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retransmits: Option<u32>,
}

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, thiserror::Error)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    /// TCP RST in answer to the SYN, or ICMP port unreachable for UDP.
    #[error("connection refused")]
    Refused,
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// The connection was reset after it was established.
    #[error("connection reset")]
    Reset,
    /// An ICMP error, or a local route that rejects (blackhole,
    /// unreachable, prohibit); the text says which.
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Other(String),
}

/// Run one probe from inside `netns`, like `ip netns exec NETNS ping|curl|nc`.
/// Never blocks longer than about `attempts * timeout`.
pub fn run_client(netns: &str, req: &Request) -> Outcome {
    // On the servers' CPU: see `sys::pin_traffic_thread`. The thread is
    // this probe's own and ends with it.
    let probe = || {
        sys::pin_traffic_thread();
        attempts(req)
    };
    match sys::in_netns(netns, probe) {
        Ok(outcome) => outcome,
        Err(e) => Outcome {
            attempts: 0,
            result: Err(Failure::Other(e.to_string())),
        },
    }
}

fn attempts(req: &Request) -> Outcome {
    let total = req.attempts.max(1);
    let mut last = Failure::Other("no attempt made".into());
    for n in 1..=total {
        let started = Instant::now();
        let result = match req.kind {
            Kind::Ping => ping(req, n),
            Kind::TcpConnect => tcp_connect(req),
            Kind::HttpGet => http_get(req),
            Kind::Udp => udp_echo(req, n),
        };
        match result {
            Ok(success) => {
                return Outcome {
                    attempts: n,
                    result: Ok(success),
                };
            }
            Err(f) => last = f,
        }
        // A quick failure (refused, unreachable) would retry at once; give a
        // server or route that is still coming up a moment.
        if n < total {
            std::thread::sleep(Duration::from_millis(100).saturating_sub(started.elapsed()));
        }
    }
    Outcome {
        attempts: total,
        result: Err(last),
    }
}

/// Map a socket error to what the caller wants to know.
fn failure(e: &io::Error) -> Failure {
    use nix::libc;
    match e.kind() {
        io::ErrorKind::ConnectionRefused => return Failure::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => return Failure::Timeout,
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
            return Failure::Reset;
        }
        _ => {}
    }
    // What the kernel means by these when sending to a valid address.
    let hint = match e.raw_os_error() {
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::ENETDOWN | libc::EHOSTDOWN) => "",
        Some(libc::EINVAL) => "blackhole route: ",
        Some(libc::EACCES) => "prohibit route: ",
        Some(libc::EPERM) => "dropped by local netfilter: ",
        _ => return Failure::Other(e.to_string()),
    };
    Failure::Unreachable(format!("{hint}{e}"))
}

fn new_socket(req: &Request, ty: Type, protocol: Protocol) -> Result<Socket, Failure> {
    let socket = Socket::new(Domain::for_address(req.target), ty, Some(protocol))
        .map_err(|e| failure(&e))?;
    if let Some(source) = req.source {
        socket
            .bind(&SockAddr::from(SocketAddr::new(source, 0)))
            .map_err(|e| Failure::Other(format!("bind to {source}: {e}")))?;
    }
    Ok(socket)
}

fn connect(req: &Request) -> Result<(TcpStream, Duration), Failure> {
    let socket = new_socket(req, Type::STREAM, Protocol::TCP)?;
    let t0 = Instant::now();
    socket
        .connect_timeout(&req.target.into(), req.timeout)
        .map_err(|e| failure(&e))?;
    Ok((socket.into(), t0.elapsed()))
}

fn tcp_connect(req: &Request) -> Result<Success, Failure> {
    let (stream, rtt) = connect(req)?;
    let success = Success {
        rtt,
        local: stream.local_addr().ok(),
        retransmits: sys::tcp_total_retrans(&stream).ok(),
        ..Success::default()
    };
    close(stream);
    Ok(success)
}

/// Close a connection the client is done with, and return once the
/// server has closed its side too (or after [`CLOSE_WAIT`]).
///
/// The segments are those of `close()`: our FIN, then the server's ACK and
/// FIN, then our last ACK, which the kernel sends as the FIN arrives
/// (RFC 9293 3.6, `tcp_fin`). Unread data keeps `close()`'s answer, a RST.
/// Waiting for the server's FIN is what lets a scenario end its capture
/// on an event: that FIN leaves only when the server's program has read
/// our FIN and closed (until then the kernel delays its ACK, up to 40 ms
/// and more), and once the client has it, it has crossed every hop; only
/// our last ACK, sent by the kernel at once, is left in flight.
fn close(stream: TcpStream) {
    let mut probe = [0u8; 1];
    let unread =
        stream.set_nonblocking(true).is_ok() && stream.peek(&mut probe).is_ok_and(|n| n > 0);
    if unread
        || stream.set_nonblocking(false).is_err()
        || stream.shutdown(std::net::Shutdown::Write).is_err()
    {
        return;
    }
    let deadline = Instant::now() + CLOSE_WAIT;
    let mut stream = stream;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // EOF (the server's FIN) or an error; data after our FIN, which
            // no labctl server sends, ends the wait too.
            Ok(_) | Err(_) => return,
        }
    }
}

fn http_get(req: &Request) -> Result<Success, Failure> {
    let t0 = Instant::now();
    let (mut stream, _) = connect(req)?;
    let deadline = t0 + req.timeout;
    let local = stream.local_addr().ok();
    stream
        .set_write_timeout(Some(req.timeout))
        .map_err(|e| failure(&e))?;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUser-Agent: labctl\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        req.target
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| failure(&e))?;
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Timeout);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| failure(&e))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                if response.len() > MAX_RESPONSE {
                    return Err(Failure::Other("http response over 1 MiB".into()));
                }
                if http_complete(&response) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(failure(&e)),
        }
    }
    let (status, body) = parse_http(&response).ok_or_else(|| {
        if response.is_empty() {
            Failure::Other("connection closed without a response".into())
        } else {
            Failure::Other("malformed http response".into())
        }
    })?;
    let (served_by, client_seen) = parse_served_body(&body).unzip();
    let success = Success {
        retransmits: sys::tcp_total_retrans(&stream).ok(),
        rtt: t0.elapsed(),
        local,
        status: Some(status),
        served_by,
        client_seen,
        body: Some(body),
        ..Success::default()
    };
    close(stream);
    Ok(success)
}

/// Whether a response holds its head and `Content-Length` bytes of body.
fn http_complete(response: &[u8]) -> bool {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| response.len() >= end + 4 + len)
}

/// Status code and body of an HTTP/1.x response.
fn parse_http(response: &[u8]) -> Option<(u16, String)> {
    let end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..end]).ok()?;
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    Some((
        status,
        String::from_utf8_lossy(&response[end + 4..]).into_owned(),
    ))
}

/// `served-by=NETNS client=IP:PORT ...` as a labctl server writes it.
pub fn parse_served_body(body: &str) -> Option<(String, SocketAddr)> {
    let mut served_by = None;
    let mut client = None;
    for field in body.split_whitespace() {
        if let Some(v) = field.strip_prefix("served-by=") {
            served_by = Some(v.to_string());
        } else if let Some(v) = field.strip_prefix("client=") {
            client = v.parse().ok();
        }
    }
    Some((served_by?, client?))
}

fn udp_echo(req: &Request, n: u32) -> Result<Success, Failure> {
    let socket = new_socket(req, Type::DGRAM, Protocol::UDP)?;
    // Connected, so ICMP port unreachable comes back as ECONNREFUSED.
    socket
        .connect(&req.target.into())
        .map_err(|e| failure(&e))?;
    let socket: UdpSocket = socket.into();
    let payload = format!("labctl udp probe {} {n}", std::process::id());
    let t0 = Instant::now();
    socket.send(payload.as_bytes()).map_err(|e| failure(&e))?;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = req.timeout.saturating_sub(t0.elapsed());
        if left.is_zero() {
            return Err(Failure::Timeout);
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| failure(&e))?;
        match socket.recv(&mut buf) {
            // Anything else is a stale answer to an earlier attempt.
            Ok(len) if &buf[..len] == payload.as_bytes() => {
                return Ok(Success {
                    rtt: t0.elapsed(),
                    local: socket.local_addr().ok(),
                    echo: Some(payload),
                    ..Success::default()
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(failure(&e)),
        }
    }
}

/// Identifier for our echo requests: the process and a counter, so that
/// concurrent pings in one namespace do not take each other's replies.
fn next_ping_id() -> u16 {
    static COUNTER: AtomicU16 = AtomicU16::new(0);
    (std::process::id() as u16) ^ COUNTER.fetch_add(0x1001, Ordering::Relaxed)
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request with a valid checksum.
fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut packet = vec![8, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(b"labctl ping payload 0123456789ab");
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// What an ICMP packet received on the raw socket means for our request.
#[derive(Debug, PartialEq, Eq)]
enum IcmpAnswer {
    Reply(Ipv4Addr),
    Error { from: Ipv4Addr, type_: u8, code: u8 },
    Unrelated,
}

/// Read an IPv4 packet from a raw ICMP socket: our echo reply, an ICMP
/// error quoting our request, or something else.
fn classify(packet: &[u8], target: Ipv4Addr, id: u16, seq: u16) -> IcmpAnswer {
    let ip_header = |p: &[u8]| -> Option<(usize, u8, Ipv4Addr, Ipv4Addr)> {
        let ihl = usize::from(p.first()? & 0x0f) * 4;
        let src = Ipv4Addr::new(*p.get(12)?, p[13], *p.get(14)?, p[15]);
        let dst = Ipv4Addr::new(*p.get(16)?, p[17], *p.get(18)?, *p.get(19)?);
        (ihl >= 20 && p.len() >= ihl).then_some((ihl, p[9], src, dst))
    };
    let ours =
        |icmp: &[u8]| icmp.get(4..8) == Some(&[id.to_be_bytes(), seq.to_be_bytes()].concat()[..]);
    let Some((ihl, 1, src, _)) = ip_header(packet) else {
        return IcmpAnswer::Unrelated;
    };
    let icmp = &packet[ihl..];
    match icmp.first() {
        Some(0) if src == target && ours(icmp) => IcmpAnswer::Reply(src),
        // Destination unreachable, time exceeded, parameter problem: they
        // quote the IP header and first 8 bytes of what we sent.
        Some(&type_ @ (3 | 11 | 12)) => {
            let quoted = icmp.get(8..).unwrap_or_default();
            match ip_header(quoted) {
                Some((qihl, 1, _, qdst))
                    if qdst == target && quoted.get(qihl) == Some(&8) && ours(&quoted[qihl..]) =>
                {
                    IcmpAnswer::Error {
                        from: src,
                        type_,
                        code: icmp.get(1).copied().unwrap_or(0),
                    }
                }
                _ => IcmpAnswer::Unrelated,
            }
        }
        _ => IcmpAnswer::Unrelated,
    }
}

fn ping(req: &Request, n: u32) -> Result<Success, Failure> {
    let IpAddr::V4(target) = req.target.ip() else {
        return Err(Failure::Other("ping supports IPv4 targets only".into()));
    };
    let socket = new_socket(req, Type::RAW, Protocol::ICMPV4)?;
    // Connected, the socket only gets packets from the target, and ICMP
    // errors about packets to it (from a router, or the local "host
    // unreachable" when ARP fails) come back as the recv error, as ping's
    // IP_RECVERR does; concurrent pings to other hosts do not disturb it.
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv4RecvErr, &true)
        .map_err(|e| failure(&e.into()))?;
    socket
        .connect(&SocketAddr::new(target.into(), 0).into())
        .map_err(|e| failure(&e))?;
    let (id, seq) = (next_ping_id(), n as u16);
    let t0 = Instant::now();
    socket
        .send(&echo_request(id, seq))
        .map_err(|e| failure(&e))?;
    // std's UdpSocket gives recv with a read timeout on any datagram fd.
    let socket: UdpSocket = socket.into();
    let mut buf = vec![0u8; 65536];
    loop {
        let left = req.timeout.saturating_sub(t0.elapsed());
        if left.is_zero() {
            return Err(Failure::Timeout);
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| failure(&e))?;
        // A raw ICMP socket gets every ICMP packet of the namespace, IP
        // header included.
        let len = match socket.recv(&mut buf) {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failure(&e)),
        };
        match classify(&buf[..len], target, id, seq) {
            IcmpAnswer::Reply(from) => {
                return Ok(Success {
                    rtt: t0.elapsed(),
                    replied_by: Some(from.into()),
                    ..Success::default()
                });
            }
            IcmpAnswer::Error { from, type_, code } => {
                return Err(Failure::Unreachable(format!(
                    "{} from {from}",
                    icmp_name(type_, code)
                )));
            }
            IcmpAnswer::Unrelated => {}
        }
    }
}

fn result_repr<S: Serializer>(r: &Result<Success, Failure>, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    #[serde(rename_all = "kebab-case")]
    enum Repr<'a> {
        Ok(&'a Success),
        Failed(&'a Failure),
    }
    match r {
        Ok(v) => Repr::Ok(v).serialize(s),
        Err(e) => Repr::Failed(e).serialize(s),
    }
}

fn millis_f64<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_micros() as f64) / 1000.0)
}

/// `Duration` as whole milliseconds.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// tcpdump's words for the ICMP types labs meet.
pub fn icmp_name(type_: u8, code: u8) -> String {
    match (type_, code) {
        (0, _) => "echo reply".into(),
        (8, _) => "echo request".into(),
        (3, 0) => "net unreachable".into(),
        (3, 1) => "host unreachable".into(),
        (3, 3) => "port unreachable".into(),
        (3, 4) => "need to frag".into(),
        (3, 13) => "administratively prohibited".into(),
        (3, c) => format!("unreachable code {c}"),
        (11, _) => "time exceeded in-transit".into(),
        (t, c) => format!("type {t} code {c}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksum_verifies() {
        let packet = echo_request(0x1234, 7);
        assert_eq!(checksum(&packet), 0);
        assert_eq!(&packet[4..8], &[0x12, 0x34, 0, 7]);
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn reply_and_error_are_matched_to_the_request() {
        let target = Ipv4Addr::new(10, 0, 0, 2);
        let mut reply = echo_request(9, 1);
        reply[0] = 0;
        let got = classify(&ipv4([10, 0, 0, 2], [10, 0, 0, 1], &reply), target, 9, 1);
        assert_eq!(got, IcmpAnswer::Reply(target));
        assert_eq!(
            classify(&ipv4([10, 0, 0, 2], [10, 0, 0, 1], &reply), target, 9, 2),
            IcmpAnswer::Unrelated
        );
        let quoted = ipv4([10, 0, 0, 1], [10, 0, 0, 2], &echo_request(9, 1)[..8]);
        let mut err = vec![3, 1, 0, 0, 0, 0, 0, 0];
        err.extend_from_slice(&quoted);
        assert_eq!(
            classify(&ipv4([10, 0, 0, 1], [10, 0, 0, 1], &err), target, 9, 1),
            IcmpAnswer::Error {
                from: Ipv4Addr::new(10, 0, 0, 1),
                type_: 3,
                code: 1
            }
        );
    }

    #[test]
    fn http_response_is_parsed() {
        let body = "served-by=b client=10.0.0.1:4000 server=10.0.0.2:80\n";
        let r = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert!(http_complete(r.as_bytes()));
        assert!(!http_complete(&r.as_bytes()[..r.len() - 1]));
        let (status, body) = parse_http(r.as_bytes()).unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            parse_served_body(&body),
            Some(("b".to_string(), "10.0.0.1:4000".parse().unwrap()))
        );
    }

    #[test]
    fn outcome_serializes_kebab() {
        let o = Outcome {
            attempts: 1,
            result: Err(Failure::Unreachable("x".into())),
        };
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"attempts":1,"result":{"failed":{"unreachable":"x"}}}"#
        );
    }
}
