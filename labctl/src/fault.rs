//! Test hooks at named points of `up` (see the crash-safety trials): a
//! leaf module, so that the low layers (sys, kernel) can name a point
//! without depending on the engine above them.

/// Test hook for the crash-safety tests: when `LABCTL_KILL_AT` names this
/// point, the process sends itself SIGKILL, exactly as a user's `kill -9`
/// at that moment would; when `LABCTL_STOP_AT` does, SIGSTOP, so a test can
/// change the world (a foreign namespace appearing) before it goes on.
pub(crate) fn fault_point(point: &str) {
    use nix::sys::signal::{Signal, raise};
    if std::env::var("LABCTL_KILL_AT").is_ok_and(|p| p == point) {
        let _ = raise(Signal::SIGKILL);
    }
    if std::env::var("LABCTL_STOP_AT").is_ok_and(|p| p == point) {
        let _ = raise(Signal::SIGSTOP);
    }
}
