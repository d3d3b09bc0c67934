//! The lab's long-lived built-in servers. Pods declare the ports they serve
//! (as nginx does in the articles); from `up` to `down` one detached process,
//! `labctl __serve`, keeps a [`Servers`] listening on them in every such pod,
//! so that a user can reach a pod or a service by hand with curl or nc.
//!
//! `up` passes what to serve on the command line, waits for one readiness
//! line on a pipe and records the pid. Each pod's servers run on threads that
//! live in the pod's namespace, so `down` finds the process by scanning the
//! lab's namespaces ([`crate::sys::pids_in_netns`]) even when `up` died
//! before it could record the pid.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use labctl_topology::{Lab, Protocol};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::plan::NsSpec;
use crate::state;
use crate::sys::{self, NetnsGuard};
use crate::traffic::{Proto, Servers};

/// How long `up` waits for the servers to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The line `__serve` prints once every port listens.
const READY: &str = "ready";

pub use crate::state::Served;

/// What a lab serves: one entry per pod that declares ports, in pod order.
pub fn specs(lab: &Lab, namespaces: &[NsSpec]) -> Vec<Served> {
    // Pods and the low-level layer's bare namespaces serve alike.
    let pods = lab.pods.iter().map(|p| (&p.name, &p.ports));
    let bare = lab.objects.namespaces.iter().map(|n| (&n.name, &n.ports));
    pods.chain(bare)
        .filter(|(_, ports)| !ports.is_empty())
        .filter_map(|(name, served)| {
            let ns = namespaces.iter().find(|n| &n.entity == name)?;
            let mut ports: Vec<(u16, Proto)> = served
                .iter()
                .map(|p| {
                    let proto = match p.protocol {
                        Protocol::Tcp => Proto::Tcp,
                        Protocol::Udp => Proto::Udp,
                    };
                    (p.port, proto)
                })
                .collect();
            let mut seen = HashSet::new();
            ports.retain(|p| seen.insert(*p));
            Some(Served {
                netns: ns.name.clone(),
                ports,
            })
        })
        .collect()
}

/// Why the built-in servers did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("start the built-in servers (`labctl __serve`): {0}")]
    Spawn(io::Error),
    #[error("start the built-in servers: {message} (log: {})", log.display())]
    Failed { message: String, log: PathBuf },
}

/// The log of a lab's `__serve` process.
pub fn log_path(lab: &str) -> PathBuf {
    state::state_dir().join(format!("{lab}.serve.log"))
}

/// Start `labctl __serve LAB SPEC...` (this same executable), detached from
/// our terminal and session, and wait until every port listens. Returns its
/// pid; the process runs until killed.
pub fn spawn(lab: &str, served: &[Served]) -> Result<u32, ServeError> {
    let log = log_path(lab);
    let log_file = File::create(&log).map_err(ServeError::Spawn)?;
    let exe = std::env::current_exe().map_err(ServeError::Spawn)?;
    let mut child = Command::new(exe)
        .arg("__serve")
        .arg(lab)
        .args(served.iter().map(Served::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(ServeError::Spawn)?;
    match wait_ready(&mut child) {
        Ok(()) => Ok(child.id()),
        Err(message) => {
            let _ = child.kill();
            let _ = child.wait();
            let logged = std::fs::read_to_string(&log).unwrap_or_default();
            let message = logged
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map_or(message, str::to_string);
            Err(ServeError::Failed { message, log })
        }
    }
}

/// Read the child's stdout until the readiness line, EOF or the timeout.
fn wait_ready(child: &mut Child) -> Result<(), String> {
    let mut out = child.stdout.take().ok_or("no pipe to the child")?;
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.contains(&b'\n') {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("not listening after {READY_TIMEOUT:?}"));
        }
        let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("wait for readiness: {e}")),
        }
        match out.read(&mut buf) {
            Ok(0) => return Err("exited before listening".into()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read readiness: {e}")),
        }
    }
    if String::from_utf8_lossy(&got).trim() == READY {
        Ok(())
    } else {
        Err(format!(
            "unexpected output {:?}",
            String::from_utf8_lossy(&got)
        ))
    }
}

/// The body of `labctl __serve`: leave the caller's session, start servers
/// in every namespace, write the readiness line to `ready`, then serve until
/// killed. Each namespace gets a thread that enters it and starts the
/// servers from there, so the server threads it spawns live in the
/// namespace too (a new thread inherits its creator's) and `down` finds them.
pub fn serve(served: &[Served], mut ready: impl Write) -> io::Result<()> {
    // No terminal: Ctrl-C or a hang-up aimed at the `up` that started us
    // must not reach us. Fails only if we already lead a session.
    let _ = nix::unistd::setsid();
    let (tx, rx) = std::sync::mpsc::channel();
    for s in served {
        let s = s.clone();
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("serve-{}", s.netns))
            .spawn(move || {
                let started = sys::open_netns(&s.netns)
                    .and_then(|ns| NetnsGuard::enter(&ns))
                    .map_err(|e| io::Error::new(e.kind(), format!("enter netns {}: {e}", s.netns)))
                    .and_then(|guard| Ok((guard, Servers::start(&s.netns, &s.ports)?)));
                match started {
                    // Keep the servers, and this thread in the namespace,
                    // until the process is killed.
                    Ok((_inside, _servers)) => {
                        let _ = tx.send(Ok(()));
                        eprintln!("labctl: serving in {s}");
                        loop {
                            std::thread::park();
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })?;
    }
    drop(tx);
    for result in rx.iter().take(served.len()) {
        result?;
    }
    // Nobody may read this (a killed `up`); keep serving regardless.
    let _ = writeln!(ready, "{READY}").and_then(|()| ready.flush());
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_round_trips_on_the_command_line() {
        let s = Served {
            netns: "lab-nginx".into(),
            ports: vec![(80, Proto::Tcp), (53, Proto::Udp)],
        };
        assert_eq!(s.to_string(), "lab-nginx=80/tcp,53/udp");
        assert_eq!(s.to_string().parse::<Served>(), Ok(s));
        assert!("lab-nginx".parse::<Served>().is_err());
        assert!("lab-nginx=80/sctp".parse::<Served>().is_err());
    }
}
