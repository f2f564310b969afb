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

step "shape: no module cycles, function p90 (scripts/check-shape.sh)"
scripts/check-shape.sh

# The product, built exactly as the README tells a user to
# (`cargo install --locked --path .`: one static bty-lab, see
# .cargo/config.toml), installed under target/readme instead of ~/.cargo so
# the run leaves the host's own tools alone. The end-to-end tests of the
# README path run this binary with deploy's and serve's defaults; the
# engine tests build their images from it too.
step "bty-lab as the README installs it (cargo install --locked --path .)"
cargo install --locked --path . --root "$repo/target/readme"
export BTY_LAB_README_BIN="$repo/target/readme/bin/bty-lab"
export BTY_LAB_STATIC_BIN="$BTY_LAB_README_BIN"
export BTY_ENGINE_TESTS=docker,podman

# The netboot media of that binary (Debian packages through apt, cached in
# /var/cache/bty): the README-path tests get it from deploy/serve
# themselves; the other VM tests take this directory.
step "the netboot media (bty-lab media build)"
"$BTY_LAB_README_BIN" media build --out "$repo/target/media" >/dev/null
export BTY_E2E_MEDIA="$repo/target/media"

# Every parser that reads what the LAN sends: TFTP packets, the agent's
# qcow2 header and cluster map, the agent's reports and inventory as
# bty-web reads them, the catalog TOML, Range headers. Built once, then
# each run bounded (6 x 20 s: the stage stays around 2 minutes past the
# build).
step "fuzz build (all targets)"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# cargo fuzz passes nightly-only flags (-Zsanitizer); RUSTC_BOOTSTRAP lets
# the stable toolchain accept them.
(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build)
for t in packet qcow2 reports inventory catalog range; do
    step "fuzz $t (bounded, 20 s)"
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -max_total_time=20)
done

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "tests"
cargo test --workspace --no-fail-fast

# bty-web's whole suite again with PostgreSQL as its store: the test kit
# starts a private PostgreSQL 15 (postgresql-15) for the test process and
# gives each test a fresh database (BTY_TEST_DB, see docs/testing.md).
step "bty-web on PostgreSQL (BTY_TEST_DB=postgres)"
BTY_TEST_DB=postgres cargo test -p bty-web --no-fail-fast
