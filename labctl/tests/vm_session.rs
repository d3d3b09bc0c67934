//! Live sessions with a lab in the VM runtime, from the host: one VM lab
//! (the Terway IPVLAN + eBPF lab, which needs ipvlan and so the VM on this
//! project's build machines; `--kernel` puts it there on any host) is
//! brought up once for the whole binary, and every trial talks to it
//! through `labctl` on the host:
//!
//! - `labctl exec LAB POD -- sh` on a pty answers typed commands (the
//!   pod's address, `$((6*7))`, the window size before and after a
//!   resize), ends with the shell's `exit 3` code and leaves the terminal
//!   as it found it;
//! - without a terminal stdin is forwarded to its end (`echo hi | labctl
//!   exec LAB POD -- cat`), stdout and stderr stay apart, the exit code
//!   comes back;
//! - `labctl status` lists the lab's namespaces, read in the VM;
//! - `labctl monitor LAB` prints translations while it runs, and SIGINT
//!   (Ctrl-C) ends it, in the VM too.
//!
//! Without root the trials are ignored; without a VM kernel too, with the
//! reason (a failure under `LABCTL_REQUIRE_ALL=1`).

use std::io::{BufRead, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use common::{ensure, labctl, ok, run, text, unique};
use libtest_mimic::{Arguments, Failed, Trial};

mod common;

const POD: &str = "centos-znkl8";
const POD_ADDRESS: &str = "10.0.3.5";
const SCENARIO: &str = "t5-cluster-ip-same-eni";

fn topology() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/terway-ipvlan-ebpf.yaml")
}

/// The VM lab of this run: brought up by the first trial that needs it,
/// taken down when the trials are done.
static LAB: OnceLock<Result<String, String>> = OnceLock::new();

fn lab() -> Result<&'static str, Failed> {
    LAB.get_or_init(|| {
        let kernel = kernel()?;
        let lab = unique("vms");
        let t = Instant::now();
        let o = run(labctl()
            .args(["up", "-q", "--kernel", &kernel, "--name", &lab])
            .arg(topology()));
        if !o.status.success() {
            let _ = run(labctl().args(["down", "-q", &lab]));
            return Err(format!("up in the VM: {}", text(&o)));
        }
        eprintln!("lab {lab} up in a VM with {kernel} in {:.1?}", t.elapsed());
        Ok(lab)
    })
    .as_deref()
    .map_err(|e| e.clone().into())
}

fn kernel() -> Result<String, String> {
    labctl::vm::choose(std::env::var("LABCTL_KERNEL").ok().as_deref())
        .map(|k| k.release)
        .map_err(|e| format!("VM sessions need a VM kernel: {e}"))
}

/// A child on the slave side of a pty, and what it wrote there.
struct OnPty {
    child: Child,
    master: std::fs::File,
    seen: mpsc::Receiver<Vec<u8>>,
    text: String,
}

impl OnPty {
    fn spawn(cmd: &mut Command, rows: u16, cols: u16) -> Result<OnPty, Failed> {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None)?;
        let slave: OwnedFd = pty.slave;
        cmd.stdin(slave.try_clone()?)
            .stdout(slave.try_clone()?)
            .stderr(slave);
        let child = cmd.spawn()?;
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone()?;
        let (tx, seen) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the last slave fd is closed.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        Ok(OnPty {
            child,
            master,
            seen,
            text: String::new(),
        })
    }

    fn type_line(&mut self, line: &str) -> Result<(), Failed> {
        // Enter on a raw terminal is a carriage return.
        self.master.write_all(format!("{line}\r").as_bytes())?;
        Ok(())
    }

    /// Wait until what appeared after `from` contains `needle`; the
    /// offset after it.
    fn expect(&mut self, from: usize, needle: &str, limit: Duration) -> Result<usize, Failed> {
        let t = Instant::now();
        loop {
            if let Some(i) = self.text[from..].find(needle) {
                return Ok(from + i + needle.len());
            }
            let Some(left) = limit.checked_sub(t.elapsed()) else {
                return Err(format!(
                    "no {needle:?} within {limit:?}; the terminal showed:\n{}",
                    self.text
                )
                .into());
            };
            if let Ok(bytes) = self.seen.recv_timeout(left) {
                self.text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }

    fn wait(&mut self, limit: Duration) -> Result<std::process::ExitStatus, Failed> {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if t.elapsed() > limit {
                let _ = self.child.kill();
                return Err(format!(
                    "still running after {limit:?}; the terminal showed:\n{}",
                    self.text
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OnPty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `labctl exec LAB POD -- sh` on a terminal: a shell in the pod, in the
/// VM, that answers what is typed.
fn exec_shell_on_a_terminal() -> Result<(), Failed> {
    let lab = lab()?;
    let mut sh = OnPty::spawn(labctl().args(["exec", lab, POD, "--", "sh"]), 33, 101)?;
    let limit = Duration::from_secs(60);
    // dash's prompt for root.
    let mut at = sh.expect(0, "# ", limit)?;
    sh.type_line("ip -o addr show eth0")?;
    at = sh.expect(at, &format!("inet {POD_ADDRESS}/"), limit)?;
    sh.type_line("echo $((6*7))")?;
    // The answer, not the echoed command (which says `$((6*7))`); typed
    // ahead, the echo and the prompt may come in either order.
    at = sh.expect(at, "42\r\n", limit)?;
    // The terminal's size came along, and follows a resize (SIGWINCH).
    sh.type_line("stty size")?;
    at = sh.expect(at, "33 101\r\n", limit)?;
    labctl::sys::set_window_size(&sh.master, 40, 120)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sh.child.id() as i32),
        nix::sys::signal::Signal::SIGWINCH,
    )?;
    // The resize races the next line; ask until it shows.
    let t = Instant::now();
    loop {
        sh.type_line("stty size")?;
        match sh.expect(at, "40 120\r\n", Duration::from_secs(3)) {
            Ok(next) => {
                at = next;
                break;
            }
            Err(e) if t.elapsed() > limit => return Err(e),
            Err(_) => {}
        }
    }
    let _ = at;
    sh.type_line("exit 3")?;
    let status = sh.wait(limit)?;
    ensure(
        status.code() == Some(3),
        format!(
            "exit code {status:?}, not 3; the terminal showed:\n{}",
            sh.text
        ),
    )?;
    // Raw mode is gone again: the pty echoes and reads lines as before.
    use nix::sys::termios::{LocalFlags, tcgetattr};
    let flags = tcgetattr(&sh.master)?.local_flags;
    ensure(
        flags.contains(LocalFlags::ECHO | LocalFlags::ICANON),
        format!("the terminal was left raw: {flags:?}"),
    )
}

/// Without a terminal: stdin to its end, stdout and stderr apart, the
/// command's exit code.
fn exec_forwards_stdin_and_the_exit_code() -> Result<(), Failed> {
    let lab = lab()?;
    let mut cat = labctl()
        .args(["exec", lab, POD, "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    cat.stdin.take().expect("piped").write_all(b"hi\n")?;
    let o = cat.wait_with_output()?;
    ensure(
        o.status.success() && o.stdout == b"hi\n",
        format!("echo hi | labctl exec {lab} {POD} -- cat: {}", text(&o)),
    )?;
    let o = run(labctl()
        .args([
            "exec",
            lab,
            POD,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ])
        .stdin(Stdio::null()));
    ensure(
        o.status.code() == Some(7) && o.stdout == b"out\n" && o.stderr == b"err\n",
        format!(
            "want exit 7, `out` on stdout, `err` on stderr: {}",
            text(&o)
        ),
    )
}

/// `labctl status` of the VM lab: every namespace the topology declares,
/// read in the VM, with its interfaces.
fn status_lists_the_vm_labs_namespaces() -> Result<(), Failed> {
    let lab = lab()?;
    let model = labctl_topology::load(&topology(), &Default::default())?;
    let mut want: Vec<String> = model.nodes.iter().map(|n| n.name.clone()).collect();
    want.extend(model.pods.iter().map(|p| p.name.clone()));
    want.extend(model.clients.iter().map(|c| c.name.clone()));
    want.push("vpc".into());
    want.sort();
    let o = ok(labctl().args(["status", lab, "-o", "json"]))?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let mut got: Vec<String> = v["namespaces"]
        .as_array()
        .ok_or_else(|| format!("no namespaces: {v}"))?
        .iter()
        .filter(|ns| {
            ns["present"] == true && !ns["interfaces"].as_array().is_none_or(Vec::is_empty)
        })
        .filter_map(|ns| ns["entity"].as_str().map(String::from))
        .collect();
    got.sort();
    ensure(
        got == want,
        format!("status lists {got:?}, the topology declares {want:?}"),
    )?;
    ensure(
        v["runtime"].as_str().is_some_and(|r| r.starts_with("vm ")),
        format!("runtime: {}", v["runtime"]),
    )?;
    let o = ok(labctl().args(["status", lab]))?;
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    ensure(
        table.contains(POD) && table.contains(&format!("{POD_ADDRESS}/")),
        format!("the table has no {POD} with {POD_ADDRESS}:\n{table}"),
    )?;
    let o = ok(labctl().arg("status"))?;
    let listing = String::from_utf8_lossy(&o.stdout).into_owned();
    let row = listing
        .lines()
        .find(|l| l.split_whitespace().next() == Some(lab))
        .ok_or_else(|| format!("no row for {lab}:\n{listing}"))?;
    ensure(
        row.split_whitespace().nth(1) == Some(want.len().to_string().as_str()),
        format!(
            "the listing does not count {} namespaces: {row}",
            want.len()
        ),
    )
}

/// `labctl monitor LAB` with neither `--count` nor `--timeout`: its lines
/// arrive while it runs, and SIGINT (what Ctrl-C sends) ends it.
fn monitor_streams_until_ctrl_c() -> Result<(), Failed> {
    let lab = lab()?;
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut monitor = Kill(
        labctl()
            .args(["monitor", lab])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let lines = |pipe: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        rx
    };
    let out = lines(Box::new(monitor.0.stdout.take().expect("piped")));
    let err = lines(Box::new(monitor.0.stderr.take().expect("piped")));
    let listening = err
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| "monitor said nothing on stderr within 60 s")?;
    ensure(
        listening.starts_with("listening on"),
        format!("monitor said {listening:?}"),
    )?;
    let r = ok(labctl()
        .args(["run", "--name", lab])
        .arg(topology())
        .arg(SCENARIO))?;
    print!("{}", String::from_utf8_lossy(&r.stdout));
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let l = out
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| format!("monitor printed {seen:?} while running, want 2 translations"))?;
        println!("monitor: {l}");
        seen.push(l);
    }
    ensure(
        seen[0].contains(" translated to ") && seen[1].contains(" translated from "),
        format!("not a translation and its reply: {seen:?}"),
    )?;
    // Ctrl-C.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let t = Instant::now();
    let status = loop {
        if let Some(s) = monitor.0.try_wait()? {
            break s;
        }
        ensure(
            t.elapsed() < Duration::from_secs(15),
            "monitor still runs 15 s after SIGINT",
        )?;
        std::thread::sleep(Duration::from_millis(50));
    };
    // Ended by SIGINT in the VM: 128 + 2, as a shell reports it.
    ensure(
        status.code() == Some(130),
        format!("monitor ended with {status:?}, not 130"),
    )?;
    // Nothing of it is left running in the VM (a pod shares the VM's pids).
    let o = run(labctl()
        .args([
            "exec",
            lab,
            POD,
            "--",
            "pgrep",
            "-f",
            &format!("[m]onitor {lab}$"),
        ])
        .stdin(Stdio::null()));
    ensure(
        o.status.code() == Some(1),
        format!("a monitor still runs in the VM: {}", text(&o)),
    )
}

/// One trial against the shared VM lab.
type TrialFn = fn() -> Result<(), Failed>;

fn main() {
    let args = Arguments::from_args();
    let kind = kernel().map_or("nowhere".into(), |k| format!("vm {k}"));
    let trials: [(&str, TrialFn); 4] = [
        ("exec_shell_on_a_terminal", exec_shell_on_a_terminal),
        (
            "exec_forwards_stdin_and_the_exit_code",
            exec_forwards_stdin_and_the_exit_code,
        ),
        (
            "status_lists_the_vm_labs_namespaces",
            status_lists_the_vm_labs_namespaces,
        ),
        ("monitor_streams_until_ctrl_c", monitor_streams_until_ctrl_c),
    ];
    let trials = trials
        .into_iter()
        .map(|(name, f)| {
            Trial::ignorable_test(name, move || match kernel() {
                Err(why) if nix::unistd::geteuid().is_root() => common::ignored(why),
                _ => common::gate(f),
            })
            .with_kind(kind.clone())
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(Ok(lab)) = LAB.get() {
        let _ = run(labctl().args(["down", "-q", lab]));
    }
    conclusion.exit();
}
