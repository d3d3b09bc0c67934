//! Sysctls of a namespace: the payload of [`Action::Sysctl`], its
//! iproute2 text and its write (through /proc/sys, by a thread that
//! enters the namespace: [`crate::sys`]).
//!
//! [`Action::Sysctl`]: crate::kernel::step::Action::Sysctl

use std::fmt;

use serde::Serialize;

use super::step::{Step, shell_quote as q};
use super::{KernelError, Netlink};
use crate::sys;

/// `sysctl -w KEY=VALUE` inside the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sysctl {
    pub key: String,
    pub value: String,
}

impl Sysctl {
    /// The command in namespace `ns` (already quoted).
    pub fn command(&self, ns: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = format!("{}={}", self.key, self.value);
        write!(f, "ip netns exec {ns} sysctl -qw {}", q(&word))
    }

    pub(super) async fn apply(&self, nl: &Netlink, step: &Step) -> Result<(), KernelError> {
        // Entering a namespace is for a thread of our own, never a
        // runtime thread.
        let fd = nl.netns_fd(step, &step.netns)?;
        let (key, value) = (self.key.clone(), self.value.clone());
        tokio::task::spawn_blocking(move || sys::write_sysctl_in(fd, &key, &value))
            .await
            .map_err(|e| KernelError::new(step.to_string(), e))?
            .map_err(|e| KernelError::new(step.to_string(), e))
    }
}
