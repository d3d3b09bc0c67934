#!/usr/bin/env bash
# Installs what building the eBPF programs (ebpf/programs) needs, and nothing
# else; idempotent, so ./lab can run it every time:
#   - a nightly toolchain with rust-src (the BPF target has no prebuilt core,
#     so core is built with -Z build-std);
#   - bpf-linker, linked against the nightly toolchain's own libLLVM, so the
#     bitcode rustc emits and the LLVM that links it are the same version.
#     That avoids installing a separate LLVM: the sysroot already ships one.
# Needs rustup, cargo, a C/C++ toolchain (gcc, g++) and internet access.
set -euo pipefail

log() { echo "ebpf/setup.sh: $*" >&2; }

if ! command -v rustup >/dev/null; then
  log "rustup not found; install Rust from https://rustup.rs first"
  exit 1
fi

# 1. nightly + rust-src
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  log "installing the nightly toolchain with rust-src"
  rustup toolchain install nightly --profile minimal --component rust-src
elif ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  log "adding rust-src to the nightly toolchain"
  rustup component add rust-src --toolchain nightly
fi

# 2. bpf-linker. A binary that starts is linked to a libLLVM that still
# exists; when nightly moves to another LLVM, the old library is gone, the
# binary no longer starts and we rebuild it.
sysroot=$(rustup run nightly rustc --print sysroot)
lib=$(cd "$sysroot/lib" && ls libLLVM-*-rust-*.so 2>/dev/null | head -n1 || true)
if [ -z "$lib" ]; then
  log "no libLLVM-*.so in $sysroot/lib; cannot build bpf-linker against it"
  exit 1
fi
# libLLVM-22-rust-1.97.0-nightly.so -> LLVM-22-rust-1.97.0-nightly, major 22
libname=${lib#lib}
libname=${libname%.so}
major=${libname#LLVM-}
major=${major%%-*}

if command -v bpf-linker >/dev/null && bpf-linker --version >/dev/null 2>&1 &&
  [ "$(cat "${CARGO_HOME:-$HOME/.cargo}/.bpf-linker-llvm" 2>/dev/null)" = "$libname" ]; then
  # Already in place: say nothing (./lab runs this on every call).
  exit 0
fi

# The feature names the llvm-sys crate matching the LLVM major version.
features=$(cd "${TMPDIR:-/tmp}" && cargo info bpf-linker 2>/dev/null | sed -n 's/^ *+\{0,1\}\(llvm-[0-9][0-9]*\) *=.*/\1/p' || true)
if [ -n "$features" ] && ! grep -qx "llvm-$major" <<<"$features"; then
  log "bpf-linker offers no llvm-$major feature (has: $(echo $features)); nightly's LLVM is $major"
  exit 1
fi

log "building bpf-linker against $libname (several minutes)"
RUSTFLAGS="-L $sysroot/lib -l dylib=$libname -C link-arg=-Wl,-rpath,$sysroot/lib" \
  cargo install --force bpf-linker --no-default-features --features "llvm-$major,no-llvm-linking"
bpf-linker --version >/dev/null
echo "$libname" >"${CARGO_HOME:-$HOME/.cargo}/.bpf-linker-llvm"
log "bpf-linker installed"
