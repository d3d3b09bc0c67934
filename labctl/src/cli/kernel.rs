//! `labctl kernel`: the kernels labs can run on.

use comfy_table::{Table, presets::NOTHING};
use labctl::{features, vm};

use super::{Exit, Failure, Result};

/// Install, list and check kernels for the VM runtime.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Fetch and unpack a distro kernel for the VM runtime (idempotent).
    Install {
        /// Which distro's kernel: `debian` (the package linux-image-amd64
        /// depends on, through apt).
        distro: String,
        /// Say nothing when the kernel is already installed (for scripts
        /// that run this every time, like `./lab`).
        #[arg(short, long)]
        quiet: bool,
    },
    /// List the kernels labs can run on: the host's own and the installed
    /// VM kernels.
    List,
    /// Check which kernel features labs use the running kernel has.
    Features,
}

pub fn run(args: Args) -> Result {
    match args.command {
        Sub::Install { distro, quiet } => {
            if distro != "debian" {
                return Err(Failure::new(
                    Exit::Usage,
                    format!("unknown distro `{distro}`; supported: debian"),
                ));
            }
            let fetched = std::cell::Cell::new(false);
            let k = vm::install_debian(&|msg| {
                let present = msg.ends_with("is already installed");
                fetched.set(fetched.get() || !present);
                if !(quiet && present) {
                    eprintln!("labctl: {msg}");
                }
            })
            .map_err(|e| Failure::new(Exit::Failed, e))?;
            if !quiet || fetched.get() {
                println!("installed kernel {} ({})", k.release, k.vmlinuz.display());
            }
            Ok(())
        }
        Sub::List => {
            let mut t = Table::new();
            t.load_style(NOTHING)
                .set_header(["RELEASE", "RUNTIME", "IMAGE"]);
            t.add_row([
                features::kernel_release(),
                "host (running)".to_string(),
                String::new(),
            ]);
            for k in vm::kernels() {
                t.add_row([k.release, "vm".into(), k.vmlinuz.display().to_string()]);
            }
            println!("{t}");
            Ok(())
        }
        Sub::Features => {
            let all = features::Feature::ALL.into_iter().collect();
            let probes = features::probe(&all).map_err(|e| {
                Failure::new(
                    Exit::Environment,
                    format!("probe kernel features: {e} (needs root)"),
                )
            })?;
            let mut t = Table::new();
            t.load_style(NOTHING)
                .set_header(["FEATURE", "PRESENT", "CONFIG", "DETAIL"]);
            for p in probes {
                let (config, _) = p.feature.module();
                t.add_row([
                    p.feature.to_string(),
                    if p.present { "yes" } else { "no" }.to_string(),
                    config.to_string(),
                    p.reason.unwrap_or_default(),
                ]);
            }
            println!("kernel {}", features::kernel_release());
            println!("{t}");
            Ok(())
        }
    }
}
