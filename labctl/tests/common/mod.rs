//! Shared by the privileged test binaries: run a trial as root, or report it
//! ignored with the reason. `LABCTL_REQUIRE_ALL=1` (set by `./lab test`, so
//! by CI) turns such an ignore into a failure.

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
