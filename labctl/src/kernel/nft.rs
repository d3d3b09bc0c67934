//! nftables rulesets: the payload of [`Action::Nftables`], its text (`nft
//! -f -` with the ruleset in a heredoc) and what `ip netns exec NETNS nft
//! -f -` does with the step's script on standard input, and `nft list
//! ruleset` for reading back. Both run on a thread of our own inside the
//! namespace, through libnftables in-process where it is installed (the
//! library `nft` itself is a front end for: same parser, same netlink
//! batch, same output), else through an `nft` child started there. Under
//! TCG each `nft` process costs ~1.4 s, one per node and per scenario;
//! the library call costs milliseconds. `LABCTL_NFT=process` forces the
//! child.
//!
//! [`Action::Nftables`]: crate::kernel::step::Action::Nftables

use std::fmt;
use std::io::Write as _;
use std::process::{Command, Stdio};

use serde::Serialize;

use super::step::Step;
use super::{KernelError, Netlink, first_line};

/// `nft -f -` with this script inside the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nftables {
    pub ruleset: String,
}

impl Nftables {
    /// The command in namespace `ns` (already quoted), the ruleset in a
    /// heredoc.
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A quoted delimiter: the shell expands nothing in the body, which
        // ends at the first line equal to the delimiter, so the delimiter
        // is one no line of the ruleset is.
        let ruleset = &self.ruleset;
        let delimiter = heredoc_delimiter(ruleset);
        let newline = if ruleset.ends_with('\n') { "" } else { "\n" };
        write!(
            f,
            "ip netns exec {ns} nft -f - <<'{delimiter}'\n{ruleset}{newline}{delimiter}"
        )
    }

    pub(super) async fn apply(&self, _nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        // libnftables (or nft) on a thread of our own inside the namespace.
        let (netns, ruleset) = (step.netns.clone(), self.ruleset.clone());
        let what = first_line(step);
        tokio::task::spawn_blocking(move || apply(&netns, &ruleset, &what))
            .await
            .map_err(|e| KernelError::new(first_line(step), e))?
    }
}

/// A heredoc delimiter that is no line of `body`: `EOF`, else `EOF1`,
/// `EOF2`, ... A line of the body equal to the delimiter would end the
/// heredoc there and the lines after it would run as commands.
pub(crate) fn heredoc_delimiter(body: &str) -> String {
    let taken = |d: &str| body.lines().any(|l| l.trim_end() == d);
    let mut delimiter = "EOF".to_string();
    let mut n = 0;
    while taken(&delimiter) {
        n += 1;
        delimiter = format!("EOF{n}");
    }
    delimiter
}

/// Why `nft -f -` failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nft not found: install the nftables package (./lab does)")]
    NotFound,
    #[error("enter namespace {netns}: {source}")]
    Netns {
        netns: String,
        source: std::io::Error,
    },
    #[error("run nft: {0}")]
    Run(std::io::Error),
    #[error("nft -f: {0}")]
    Refused(String),
}

/// Run `ruleset` with `nft -f -` inside the named lab namespace. Blocking:
/// run it on a thread of our own, never a runtime thread. `what` names
/// the step in errors.
pub fn apply(netns: &str, ruleset: &str, what: &str) -> Result<(), KernelError> {
    crate::sys::in_netns(netns, || nft(ruleset))
        .map_err(|source| NftError::Netns {
            netns: netns.to_string(),
            source,
        })
        .and_then(|r| r)
        .map_err(|e| KernelError::new(what, e))
}

/// `nft list ruleset` (with `json`, `nft -j list ruleset`) inside the named
/// lab namespace: what a person would read there. Blocking.
pub fn list(netns: &str, json: bool) -> Result<String, NftError> {
    crate::sys::in_netns(netns, || {
        if let Some(done) = crate::sys::nft_in_process("list ruleset", json) {
            return done.map_err(NftError::Refused);
        }
        let mut cmd = Command::new("nft");
        if json {
            cmd.arg("-j");
        }
        let out = cmd
            .args(["list", "ruleset"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => NftError::NotFound,
                _ => NftError::Run(e),
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(NftError::Refused(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    })
    .map_err(|source| NftError::Netns {
        netns: netns.to_string(),
        source,
    })?
}

/// `nft -f -` with `ruleset` on its standard input, or its equivalent in
/// libnftables.
fn nft(ruleset: &str) -> Result<(), NftError> {
    if let Some(done) = crate::sys::nft_in_process(ruleset, false) {
        return done.map(drop).map_err(NftError::Refused);
    }
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => NftError::NotFound,
            _ => NftError::Run(e),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(ruleset.as_bytes()).map_err(NftError::Run)?;
    }
    let out = child.wait_with_output().map_err(NftError::Run)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}
