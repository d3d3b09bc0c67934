//! `labctl validate`: check a topology file without building it.

use std::path::PathBuf;

use super::{Result, Vars, load};

/// Check a topology file and report every error with its location.
#[derive(clap::Args)]
pub struct Args {
    /// Topology file (YAML).
    file: PathBuf,
    #[command(flatten)]
    vars: Vars,
}

pub fn run(args: Args) -> Result {
    let lab = load(&args.file, &args.vars)?;
    println!(
        "{}: ok: lab `{}`, {} nodes, {} pods, {} clients ({} namespaces)",
        args.file.display(),
        lab.name,
        lab.nodes.len(),
        lab.pods.len(),
        lab.clients.len(),
        lab.entities().len()
    );
    Ok(())
}
