//! `labctl exec`: run a command inside a node, pod, client or the VPC.

use std::io::IsTerminal;
use std::os::unix::process::CommandExt;

use labctl::sys;

use super::{Exit, Failure, Result};

/// Run a command inside a namespace of a lab, like `ip netns exec`. The
/// command is run directly (argv), never through a shell.
///
/// In a lab in the VM runtime the command runs in the VM with the same
/// stdin, stdout and stderr: when stdin is a terminal it gets a terminal
/// of its own there (`labctl exec LAB POD -- sh` is an interactive shell),
/// else stdin is forwarded to its end. The exit code is the command's.
#[derive(clap::Args)]
pub struct Args {
    /// Lab name.
    lab: String,
    /// Node, pod or client name (or `vpc`).
    name: String,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn run(args: Args) -> Result {
    let record = super::record(&args.lab)?;
    if let Some(vm) = &record.vm {
        let mut argv = vec![
            "exec".into(),
            args.lab.clone(),
            args.name.clone(),
            "--".into(),
        ];
        argv.extend(args.command.iter().cloned());
        let mode = if std::io::stdin().is_terminal() {
            labctl::vm::Mode::Terminal
        } else {
            labctl::vm::Mode::Stream { stdin: true }
        };
        return super::session(vm, argv, mode);
    }
    let Some(ns) = record.netns_of(&args.name) else {
        let known: Vec<&str> = record
            .namespaces
            .iter()
            .map(|n| n.entity.as_str())
            .collect();
        return Err(Failure::new(
            Exit::Usage,
            format!(
                "lab `{}` has no node, pod or client `{}`; it has: {}",
                args.lab,
                args.name,
                known.join(", ")
            ),
        ));
    };
    sys::enter_netns_for_exec(&ns.name).map_err(|e| {
        let code = if sys::is_root() {
            Exit::Failed
        } else {
            Exit::Environment
        };
        Failure::new(
            code,
            format!(
                "cannot enter namespace {}: {e} (labctl exec needs root)",
                ns.name
            ),
        )
    })?;
    let err = std::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .exec();
    Err(Failure::new(
        Exit::Failed,
        format!("cannot run `{}`: {err}", args.command[0]),
    ))
}
