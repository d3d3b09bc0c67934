//! `labctl down`: remove a lab and everything it made.

use labctl::engine;

use super::{Result, Vars, lab_name};

/// Remove a lab: every namespace it made, even after an interrupted `up`.
#[derive(clap::Args)]
pub struct Args {
    /// Topology file or lab name.
    lab: String,
    #[command(flatten)]
    vars: Vars,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Then wait until the kernel has released the lab's namespaces (run
    /// their cleanup: devices, tables), not only queued them, so that
    /// what follows does not share the machine with it; at most 60 s,
    /// after which it fails saying how many are left.
    #[arg(long)]
    wait: bool,
}

/// How long `--wait` waits for the kernel.
const WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

pub fn run(args: Args) -> Result {
    let lab = lab_name(&args.lab, &args.vars)?;
    let in_vm = labctl::state::load(&lab)
        .ok()
        .flatten()
        .and_then(|r| r.vm.map(|vm| (vm.kernel.release, vm.shared)));
    let report = engine::down(&lab, args.wait.then_some(WAIT_LIMIT))?;
    super::warn_left(&report.left);
    if !args.quiet {
        match (in_vm, report.released) {
            (Some((release, true)), _) => {
                println!("lab `{lab}` is down: the shared VM (kernel {release}) stays up")
            }
            (Some((release, false)), _) => {
                println!("lab `{lab}` is down: its VM (kernel {release}) stopped")
            }
            (None, Some(after)) => println!(
                "lab `{lab}` is down: {} namespaces removed and released by the kernel {:.2?} later",
                report.removed, after
            ),
            (None, None) => println!("lab `{lab}` is down: {} namespaces removed", report.removed),
        }
    }
    Ok(())
}
