//! `labctl completions` and `labctl man`: shell completions and a man page,
//! generated from the clap command itself (clap_complete, clap_mangen) so
//! they never drift from `--help`.

use std::io::Write;

use clap::CommandFactory;

use super::{Cli, Exit, Failure, Result};

/// Print shell completions for labctl.
#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell, e.g. `bash` (then: `labctl completions bash >
    /// /etc/bash_completion.d/labctl`).
    shell: clap_complete::Shell,
}

/// Print labctl's man page (roff), e.g. `labctl man | man -l -`.
#[derive(clap::Args)]
pub struct ManArgs {}

pub fn completions(args: CompletionsArgs) -> Result {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "labctl", &mut out);
    write_out(&out)
}

pub fn man(_: ManArgs) -> Result {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .map_err(|e| Failure::new(Exit::Failed, format!("render the man page: {e}")))?;
    write_out(&out)
}

fn write_out(bytes: &[u8]) -> Result {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        // `labctl man | head`: a closed pipe is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::new(Exit::Failed, format!("write to stdout: {e}"))),
    }
}
