//! `labctl monitor`: the eBPF load balancer's translations as they happen,
//! read from its ring buffer, like `cilium monitor`.

use std::time::{Duration, Instant};

use super::show::lb_exit;
use super::{Exit, Failure, Result};

/// Print every service translation of a lab's eBPF load balancer as it
/// happens, like `cilium monitor`: one line per packet,
/// `CLIENT -> SERVICE translated to BACKEND` for a request and
/// `BACKEND -> CLIENT translated from SERVICE` for its reply.
///
/// Shows translations from the moment it says `listening` (on stderr); runs
/// until Ctrl-C, `--count` events or `--timeout`. Only for labs whose
/// topology has `ebpf:`. For a lab in the VM runtime it runs in the VM and
/// its lines come as they happen there; Ctrl-C stops it there too.
#[derive(clap::Args)]
pub struct Args {
    /// Lab name.
    lab: String,
    /// Stop after N events (exit 1 if the timeout comes first).
    #[arg(short = 'n', long, value_name = "N")]
    count: Option<u64>,
    /// Stop after SECONDS.
    #[arg(short, long, value_name = "SECONDS")]
    timeout: Option<f64>,
}

pub fn run(args: Args) -> Result {
    let timeout = match args.timeout {
        None => None,
        Some(t) => Some(Duration::try_from_secs_f64(t).map_err(|_| {
            Failure::new(
                Exit::Usage,
                format!("--timeout {t}: not a number of seconds"),
            )
        })?),
    };
    let record = super::record(&args.lab)?;
    if let Some(vm) = &record.vm {
        let mut argv: Vec<String> = vec!["monitor".into(), args.lab.clone()];
        if let Some(n) = args.count {
            argv.extend(["--count".into(), n.to_string()]);
        }
        if let Some(t) = args.timeout {
            argv.extend(["--timeout".into(), t.to_string()]);
        }
        return super::session(vm, argv, labctl::vm::Mode::Stream { stdin: false });
    }
    let mut maps = labctl::lb::open(&args.lab).map_err(|e| Failure::new(lb_exit(&e), e))?;
    // Like `cilium monitor`, from now on: drop what earlier translations
    // left in the ring buffer.
    while maps.try_next_event().is_some() {}
    // Like tcpdump's "listening on": from here no translation is missed.
    eprintln!("listening on lab `{}` (Ctrl-C to stop)", args.lab);
    let start = Instant::now();
    let mut seen = 0u64;
    loop {
        if args.count.is_some_and(|n| seen >= n) {
            return Ok(());
        }
        let wait = match timeout {
            None => None,
            Some(t) => match t.checked_sub(start.elapsed()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => break,
            },
        };
        let event =
            labctl::lb::next_event(&mut maps, wait).map_err(|e| Failure::new(lb_exit(&e), e))?;
        let Some(event) = event else { continue };
        println!("{event}");
        seen += 1;
    }
    match args.count {
        Some(n) => Err(Failure::new(
            Exit::Failed,
            format!(
                "{seen} of {n} events in {:.1?} (--timeout)",
                timeout.unwrap_or_default()
            ),
        )),
        None => Ok(()),
    }
}
