//! `labctl plan`: what `up` would do, without doing it.

use std::path::PathBuf;

use super::{Exit, Failure, Result, Vars, load};

/// Print the kernel actions `up` would run, as iproute2 commands.
#[derive(clap::Args)]
pub struct Args {
    /// Topology file (YAML).
    file: PathBuf,
    #[command(flatten)]
    vars: Vars,
    /// Plan the lab under another name (as `labctl up --name`).
    #[arg(long, value_name = "LAB")]
    name: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    output: Format,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum Format {
    /// One iproute2 command per action, in phase order, quoted for the shell.
    Text,
    /// A runnable bash script doing the same with `ip` (the benchmark baseline).
    Script,
    Json,
}

pub fn run(args: Args) -> Result {
    let mut lab = load(&args.file, &args.vars)?;
    if let Some(name) = args.name {
        labctl_topology::check_lab_name(&name)
            .map_err(|e| Failure::new(Exit::Usage, format!("--name: {e}")))?;
        lab.name = name;
    }
    let plan = labctl::plan::plan(&lab);
    match args.output {
        // The same commands as the script, quoted the same way.
        Format::Text => print!("{}", plan.to_commands()),
        Format::Script => print!("{}", plan.to_script()),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&plan).expect("plan is JSON")
        ),
    }
    Ok(())
}
