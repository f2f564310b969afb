#!/usr/bin/env bash
# Run every test of the workspace on this machine, as root:
# installs what the tests need, starts the services they drive, then runs
# the whole suite. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

# Packages, dockerd and the Podman API socket (scripts/engines.sh).
scripts/setup.sh

# Tests that need an external tool fail (instead of skipping) when it is
# missing, so a green run means everything really ran.
export BTY_REQUIRE_TOOLS=1
export CARGO_TERM_COLOR=never

step() { printf '\n=== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

step "rustfmt"
cargo fmt --all -- --check

# A static bty-lab, built with its own target dir so it never invalidates
# the test build: it is the entrypoint of the FROM-scratch images the
# engine tests build, and the agent in the netboot initramfs the VM tests
# boot (`bty-lab media build`). A debug build (no debuginfo): a release
# build of the whole stack takes far longer than the tests it serves.
static="$repo/target/static"
step "static bty-lab (debug) for the container images and the netboot media"
CARGO_PROFILE_DEV_DEBUG=0 RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build -p bty-lab --target x86_64-unknown-linux-gnu --target-dir "$static"
export BTY_ENGINE_TESTS=docker,podman
export BTY_LAB_STATIC_BIN="$static/x86_64-unknown-linux-gnu/debug/bty-lab"

step "the netboot media (Debian packages through apt, that bty-lab as the agent)"
"$BTY_LAB_STATIC_BIN" media build --out "$repo/target/media" >/dev/null
export BTY_E2E_MEDIA="$repo/target/media"

step "fuzz the TFTP packet parser (bounded)"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# cargo fuzz passes nightly-only flags (-Zsanitizer); RUSTC_BOOTSTRAP lets
# the stable toolchain accept them.
(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run packet -- -max_total_time=45)

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "tests"
cargo test --workspace --no-fail-fast
