#!/usr/bin/env bash
# The Rust tests for 64-bit ARM Linux (the release workflow's aarch64 wheel), run here on
# x86-64 under qemu-user. CPU heavy (a few minutes on 2 cores). The pytest suite against the
# aarch64 wheel: scripts/test_aarch64_python.sh.
#
# Needs (Debian/Ubuntu):  apt-get install qemu-user gcc-aarch64-linux-gnu
#                         rustup target add aarch64-unknown-linux-gnu
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v qemu-aarch64 >/dev/null || missing+=("qemu-aarch64 (apt-get install qemu-user)")
command -v aarch64-linux-gnu-gcc >/dev/null \
    || missing+=("aarch64-linux-gnu-gcc (apt-get install gcc-aarch64-linux-gnu)")
rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu \
    || missing+=("the Rust target (rustup target add aarch64-unknown-linux-gnu)")
if ((${#missing[@]})); then
    printf 'test_aarch64.sh: missing %s\n' "${missing[@]}" >&2
    exit 2
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
exec cargo test --target aarch64-unknown-linux-gnu "$@"
