//! Compiles `ebpf/programs` for the BPF target with aya-build and leaves the
//! objects at `$OUT_DIR/labctl-lb` (the load balancer) and
//! `$OUT_DIR/labctl-route` (the overlay router), which the crate embeds.
//!
//! Without the BPF toolchain (nightly + rust-src + bpf-linker, installed by
//! `ebpf/setup.sh`), or with `AYA_BUILD_SKIP=1`, an empty placeholder is
//! written instead: the crate still compiles (clippy, docs, the rest of
//! labctl) and loading reports what to install. A toolchain that is present
//! but fails to compile the programs is a hard error.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

const OBJECTS: [&str; 2] = ["labctl-lb", "labctl-route"];
const SKIP_REASON: &str = "LABCTL_LB_SKIP_REASON";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.parent().ok_or("no parent of ebpf/lb")?;
    let programs = ebpf_dir.join("programs");
    let common = ebpf_dir.join("common");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", common.display());
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-env-changed=PATH");

    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let reason = if skip {
        Some("AYA_BUILD_SKIP is set".to_owned())
    } else {
        missing_toolchain()
    };
    if let Some(reason) = reason {
        println!("cargo:warning=eBPF programs not built ({reason}); run ebpf/setup.sh");
        if !skip {
            // PATH unchanged, a bpf-linker installed after this build (by
            // ebpf/setup.sh, into ~/.cargo/bin) would not be noticed and the
            // placeholder kept: watch the directories it would land in
            // (cargo compares the newest file in each).
            for dir in env::split_paths(&env::var_os("PATH").unwrap_or_default()) {
                if dir.is_absolute() && dir.is_dir() {
                    println!("cargo:rerun-if-changed={}", dir.display());
                }
            }
        }
        println!("cargo:rustc-env={SKIP_REASON}={reason}");
        // Always the empty placeholder: an object left in OUT_DIR by an
        // earlier build may be stale and must not be embedded.
        for object in OBJECTS {
            fs::write(out_dir.join(object), [])?;
        }
        return Ok(());
    }
    println!("cargo:rustc-env={SKIP_REASON}=");

    // aya-build runs `cargo build --package ...` in the current directory.
    // The programs crate is excluded from the workspace (it only builds for
    // the BPF target), so run that cargo from its own directory.
    env::set_current_dir(&programs)?;
    let package = aya_build::Package {
        name: "labctl-ebpf-programs",
        root_dir: programs.to_str().ok_or("non-UTF-8 path")?,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
        .map_err(|e| format!("building the eBPF programs failed: {e:#}"))?;
    Ok(())
}

/// Why the BPF toolchain cannot work here, if it cannot.
fn missing_toolchain() -> Option<String> {
    if !on_path("bpf-linker") {
        return Some("bpf-linker is not installed".to_owned());
    }
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    let Some(sysroot) = sysroot else {
        return Some("the nightly toolchain is not installed".to_owned());
    };
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    let core = Path::new(&sysroot).join("lib/rustlib/src/rust/library/core");
    if !core.is_dir() {
        return Some("rust-src is missing from the nightly toolchain".to_owned());
    }
    None
}

fn on_path(program: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
