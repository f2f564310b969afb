#!/usr/bin/env bash
# Run every test of the workspace on this machine, as root:
# installs what the tests need, starts the services they drive, then runs
# the whole suite. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

# Tests that need an external tool fail (instead of skipping) when it is
# missing, so a green run means everything really ran.
export BTY_REQUIRE_TOOLS=1
export CARGO_TERM_COLOR=never

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
