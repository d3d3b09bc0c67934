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
}

pub fn run(args: Args) -> Result {
    let lab = lab_name(&args.lab, &args.vars)?;
    let in_vm = labctl::state::load(&lab)
        .ok()
        .flatten()
        .and_then(|r| r.vm.map(|vm| (vm.kernel.release, vm.shared)));
    let report = engine::down(&lab)?;
    super::warn_left(&report.left);
    if !args.quiet {
        match in_vm {
            Some((release, true)) => {
                println!("lab `{lab}` is down: the shared VM (kernel {release}) stays up")
            }
            Some((release, false)) => {
                println!("lab `{lab}` is down: its VM (kernel {release}) stopped")
            }
            None => println!("lab `{lab}` is down: {} namespaces removed", report.removed),
        }
    }
    Ok(())
}
