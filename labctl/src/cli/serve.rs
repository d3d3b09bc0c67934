//! `labctl __serve` (hidden): the lab's long-lived built-in servers, started
//! by `up` and killed by `down`; see [`labctl::serve`].

use labctl::serve::{self, Served};

use super::{Exit, Failure, Result};

/// Serve the given ports in the given namespaces until killed. Prints
/// `ready` on stdout once every port listens.
#[derive(clap::Args)]
pub struct Args {
    /// The lab (for `ps`; what to serve is in the specs).
    lab: String,
    /// What to serve, `NETNS=80/tcp,53/udp` per namespace.
    #[arg(value_name = "NETNS=PORTS", required = true)]
    served: Vec<Served>,
}

pub fn run(args: Args) -> Result {
    serve::serve(&args.served, std::io::stdout())
        .map_err(|e| Failure::new(Exit::Failed, format!("lab `{}`: {e}", args.lab)))
}
