//! Shared by the privileged test binaries: run a trial as root, or report it
//! ignored with the reason. `LABCTL_REQUIRE_ALL=1` (set by `./lab test`, so
//! by CI) turns such an ignore into a failure.

#![allow(
    dead_code,
    reason = "each test binary includes this module and uses a different part of it"
)]

use std::process::{Command, Output};

use libtest_mimic::{Completion, Failed};

pub fn gate(f: impl FnOnce() -> Result<(), Failed>) -> Result<Completion, Failed> {
    if !nix::unistd::geteuid().is_root() {
        if std::env::var("LABCTL_REQUIRE_ALL").is_ok_and(|v| v == "1") {
            return Err("needs root, and LABCTL_REQUIRE_ALL=1 forbids ignoring it".into());
        }
        return Ok(Completion::ignored_with(
            "needs root: creates network namespaces",
        ));
    }
    f().map(|()| Completion::Completed)
}

/// Run a command to completion.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

/// A command's outcome, for failure messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run a command that must succeed.
pub fn ok(cmd: &mut Command) -> Result<Output, Failed> {
    let o = run(cmd);
    if o.status.success() {
        Ok(o)
    } else {
        Err(format!("{cmd:?} failed: {}", text(&o)).into())
    }
}

/// Fail the trial with `msg` unless `cond`.
pub fn ensure(cond: bool, msg: impl Into<String>) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(msg.into().into()) }
}
