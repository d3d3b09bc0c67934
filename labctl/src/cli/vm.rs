//! `labctl vm`: shared VMs, one warm VM per kernel release that labs
//! needing that kernel live in instead of booting their own
//! ([`labctl::vm::shared`]).

use std::path::PathBuf;

use comfy_table::{Table, presets::NOTHING};
use labctl::vm::{self, shared};
use serde::Serialize;

use super::{Exit, Failure, Result, TableFormat as Format};

/// Start, stop and list shared VMs. While a shared VM is up, `up` and
/// `run` of a lab needing its kernel put the lab in it (as namespaces of
/// its own, beside the other labs there) instead of booting a VM, and
/// `down` takes the lab down inside and leaves the VM up.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Boot the shared VM of a kernel and wait for it to serve (does
    /// nothing when it is up already). It runs until `labctl vm stop`.
    Start {
        /// The kernel, by release (default: the newest installed; env
        /// LABCTL_KERNEL).
        #[arg(long, value_name = "RELEASE", env = "LABCTL_KERNEL")]
        kernel: Option<String>,
        /// Print nothing but errors.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Stop a shared VM; the labs in it go with it.
    Stop {
        /// The kernel, by release (default: the newest installed; env
        /// LABCTL_KERNEL).
        #[arg(
            long,
            value_name = "RELEASE",
            env = "LABCTL_KERNEL",
            conflicts_with = "all"
        )]
        kernel: Option<String>,
        /// Stop every shared VM.
        #[arg(long)]
        all: bool,
        /// Print nothing but errors.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Run a command as root in a shared VM, outside any lab (for test
    /// binaries that need its kernel): argv as given, no shell; output as
    /// it comes, the exit code its own. Exits 3 when no shared VM of the
    /// kernel is up and ready.
    Exec {
        /// The kernel, by release (default: the newest installed; env
        /// LABCTL_KERNEL).
        #[arg(long, value_name = "RELEASE", env = "LABCTL_KERNEL")]
        kernel: Option<String>,
        /// Kill the command after this many seconds.
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Where KVM is not usable, fetch the newer QEMU of the host's Debian
    /// release's backports into labctl's own directory, for VMs to boot
    /// with (under software emulation it starts processes about 1.5 times
    /// as fast); idempotent. Nothing
    /// is fetched when KVM is usable, the host is not Debian or the
    /// system's QEMU is as new. `LABCTL_QEMU=system` boots with the
    /// system's QEMU anyway.
    InstallQemu {
        /// Say nothing unless something was fetched (for scripts that run
        /// this every time, like `./lab`).
        #[arg(short, long)]
        quiet: bool,
    },
    /// List the shared VMs, their health and the labs in them.
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}

pub fn run(args: Args) -> Result {
    match args.command {
        Sub::Start { kernel, quiet } => start(kernel.as_deref(), quiet),
        Sub::Stop { kernel, all, quiet } => stop(kernel.as_deref(), all, quiet),
        Sub::Exec {
            kernel,
            timeout,
            command,
        } => exec(kernel.as_deref(), timeout, command),
        Sub::Status { output } => status(output),
        Sub::InstallQemu { quiet } => install_qemu(quiet),
    }
}

fn install_qemu(quiet: bool) -> Result {
    need_root()?;
    let said = |msg: &str| {
        if !quiet {
            eprintln!("labctl: {msg}");
        }
    };
    match vm::qemu::install(&said).map_err(|e| Failure::new(Exit::Failed, e))? {
        vm::qemu::Choice::System(why) => {
            if !quiet {
                println!("VMs boot with the system's QEMU: {why}");
            }
        }
        vm::qemu::Choice::Own { version, fetched } => {
            if !quiet || fetched {
                println!(
                    "VMs boot with QEMU {version} in {}{}",
                    vm::qemu::ROOT,
                    if fetched { "" } else { " (installed already)" }
                );
                if vm::qemu::binary().is_none() {
                    println!("(but with the system's while LABCTL_QEMU=system)");
                }
            }
        }
    }
    Ok(())
}

fn exec(kernel: Option<&str>, timeout: Option<u64>, command: Vec<String>) -> Result {
    need_root()?;
    let kernel = vm::choose(kernel).map_err(|e| Failure::new(Exit::Environment, e))?;
    let Some(shared) = shared::find(&kernel.release) else {
        return Err(Failure::new(
            Exit::State,
            format!(
                "no shared VM (kernel {}) is up and ready; `labctl vm start` boots one",
                kernel.release
            ),
        ));
    };
    let mut argv = vec!["__exec".to_string(), "--".into()];
    argv.extend(command);
    let reply = shared
        .session(
            &argv,
            vm::Mode::Stream { stdin: false },
            timeout.map(std::time::Duration::from_secs),
        )
        .map_err(|e| Failure::new(Exit::Failed, e))?;
    if reply.code != 0 {
        std::process::exit(reply.code);
    }
    Ok(())
}

fn need_root() -> Result {
    if labctl::sys::is_root() {
        Ok(())
    } else {
        Err(labctl::engine::EngineError::NotRoot.into())
    }
}

fn start(kernel: Option<&str>, quiet: bool) -> Result {
    need_root()?;
    let kernel = vm::choose(kernel).map_err(|e| Failure::new(Exit::Environment, e))?;
    // One that cannot take labs (stopped, another labctl build) is
    // replaced: stopped here first, so the labs it had are forgotten too.
    if shared::look(&kernel.release).is_some_and(|(_, h)| h != shared::Health::Ready) {
        super::warn_left(&labctl::engine::stop_shared(&kernel.release)?);
    }
    let t = std::time::Instant::now();
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        super::spinner(format!("booting the shared VM (kernel {})", kernel.release))
    };
    let started = shared::start(&kernel);
    bar.finish_and_clear();
    let (rec, new) = started.map_err(|e| Failure::new(Exit::Failed, e))?;
    if !quiet {
        if new {
            println!(
                "shared VM (kernel {}) is up in {:.1?}: labs needing it run inside until `labctl vm stop`",
                rec.vm.kernel.release,
                t.elapsed()
            );
        } else {
            println!(
                "shared VM (kernel {}) was up already",
                rec.vm.kernel.release
            );
        }
    }
    Ok(())
}

fn stop(kernel: Option<&str>, all: bool, quiet: bool) -> Result {
    need_root()?;
    let releases: Vec<String> = if all {
        shared::list().into_iter().map(|(r, _)| r).collect()
    } else {
        // A shared VM of a kernel uninstalled since is still stopped by
        // its exact release.
        let release = match kernel {
            Some(k) if shared::list().iter().any(|(r, _)| r == k) => k.to_string(),
            k => {
                vm::choose(k)
                    .map_err(|e| Failure::new(Exit::Environment, e))?
                    .release
            }
        };
        vec![release]
    };
    for release in releases {
        let up = shared::look(&release).is_some();
        let left = labctl::engine::stop_shared(&release)?;
        super::warn_left(&left);
        if !quiet {
            if up {
                println!("shared VM (kernel {release}) stopped");
            } else {
                println!("no shared VM (kernel {release}) was up");
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct View {
    release: String,
    pid: Option<u32>,
    /// The program its QEMU runs (labctl's own or the system's).
    qemu: Option<PathBuf>,
    health: String,
    ready: bool,
    started: Option<u64>,
    labs: Vec<String>,
}

fn status(output: Format) -> Result {
    let records = labctl::state::list().map_err(super::state_failure)?;
    let views: Vec<View> = shared::list()
        .into_iter()
        .map(|(release, seen)| {
            let dir = shared::dir_for(&release);
            let labs = records
                .iter()
                .filter(|r| {
                    r.vm.as_ref()
                        .is_some_and(|vm| vm.shared && Some(&vm.dir) == dir.as_ref())
                })
                .map(|r| r.lab.clone())
                .collect();
            match seen {
                Some((rec, health)) => View {
                    release,
                    pid: Some(rec.vm.pid),
                    qemu: rec.vm.qemu_exe(),
                    ready: health == shared::Health::Ready,
                    health: health.to_string(),
                    started: Some(rec.started),
                    labs,
                },
                None => View {
                    release,
                    pid: None,
                    qemu: None,
                    ready: false,
                    health: "no record (a start was interrupted; `labctl vm stop` removes it)"
                        .into(),
                    started: None,
                    labs,
                },
            }
        })
        .collect();
    if output == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&views).expect("views are JSON")
        );
        return Ok(());
    }
    if views.is_empty() {
        println!("no shared VM is up (`labctl vm start` boots one)");
        return Ok(());
    }
    let mut t = Table::new();
    t.load_style(NOTHING)
        .set_header(["KERNEL", "PID", "QEMU", "HEALTH", "LABS"]);
    for v in views {
        t.add_row([
            v.release,
            v.pid.map_or("-".into(), |p| p.to_string()),
            match &v.qemu {
                Some(q) if q.starts_with(labctl::vm::qemu::ROOT) => "labctl's".into(),
                Some(_) => "system's".into(),
                None => "-".into(),
            },
            v.health,
            if v.labs.is_empty() {
                "-".into()
            } else {
                v.labs.join(" ")
            },
        ]);
    }
    println!("{t}");
    Ok(())
}
