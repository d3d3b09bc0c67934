//! `labctl up`: build a lab from a topology file.

use std::io::IsTerminal;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use labctl::engine::{self, Progress};

use super::{Exit, Failure, Result, Vars, Where, load, vm_argv};

/// Build the lab described by a topology file from real kernel objects.
#[derive(clap::Args)]
pub struct Args {
    /// Topology file (YAML).
    file: PathBuf,
    #[command(flatten)]
    vars: Vars,
    /// Run the lab under another name than the file's `name:`, so the same
    /// topology can be up twice at once.
    #[arg(long, value_name = "LAB")]
    name: Option<String>,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    place: Where,
}

/// A progress bar on stderr, shown only on a terminal.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn stage(&self, what: &str, total: usize) {
        self.0.set_message(what.to_string());
        self.0.set_length(total as u64);
        self.0.set_position(0);
    }
    fn advance(&self, n: usize) {
        self.0.inc(n as u64);
    }
}

pub fn run(args: Args) -> Result {
    let mut lab = load(&args.file, &args.vars)?;
    if let Some(name) = args.name {
        labctl_topology::check_lab_name(&name)
            .map_err(|e| Failure::new(Exit::Usage, format!("--name: {e}")))?;
        lab.name = name;
    }
    engine::preflight(&lab)?;
    if let Some(kernel) = args.place.decide(&lab)? {
        let t = std::time::Instant::now();
        let mut argv = vm_argv("up", &args.file, &args.vars, &lab.name);
        argv.insert(1, "-q".into());
        let bar = if args.quiet {
            indicatif::ProgressBar::hidden()
        } else {
            super::spinner(super::vm_up_message(&lab.name, &kernel))
        };
        let vm = engine::up_in_vm(&lab.name, &args.file, &argv, &kernel);
        bar.finish_and_clear();
        let vm = vm?;
        if !args.quiet {
            println!(
                "lab `{}` is up in {} (kernel {}) in {:.1?}; status, exec, run and down reach into it",
                lab.name,
                if vm.shared { "the shared VM" } else { "a VM" },
                vm.release(),
                t.elapsed()
            );
        }
        return Ok(());
    }
    let bar = if !args.quiet && std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg:>10} [{bar:30}] {pos}/{len}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let report = engine::up(&lab, Some(&args.file), &Bar(bar.clone()));
    bar.finish_and_clear();
    let report = report?;
    if !args.quiet {
        println!(
            "lab `{}` is up: {} namespaces, {} kernel actions in {:.2?}",
            lab.name, report.namespaces, report.actions, report.elapsed
        );
        if let Some(pod) = lab.pods.first() {
            println!(
                "  try: labctl exec {} {} -- ip addr     then: labctl down {}",
                lab.name, pod.name, lab.name
            );
        }
    }
    Ok(())
}
