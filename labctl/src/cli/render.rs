//! `labctl render`: the topology after templating.

use std::path::PathBuf;

use super::{Result, Vars};

/// Print the topology file after its templates are expanded.
#[derive(clap::Args)]
pub struct Args {
    /// Topology file (YAML with minijinja templates).
    file: PathBuf,
    #[command(flatten)]
    vars: Vars,
}

pub fn run(args: Args) -> Result {
    print!("{}", labctl_topology::render(&args.file, &args.vars.map())?);
    Ok(())
}
