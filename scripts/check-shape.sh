#!/usr/bin/env bash
# The shape rules a script can check, for every crate at once:
#   - no module import cycle in any crate (scripts/check-module-cycles.py);
#   - non-test function length p90 under 30 lines in the server crates and
#     bty-lab (scripts/code-size.py --p90).
# Exits 1 naming what to fix; scripts/test.sh runs it after rustfmt.
set -uo pipefail
cd "$(dirname "$0")/.."

P90_LIMIT=30
P90_DIRS=(crates/bty-web/src crates/withcache/src crates/bty-tftp/src src)
failed=0

if ! python3 scripts/check-module-cycles.py crates/*/src src; then
    echo "check-shape: FAILED: a module import cycle (above). Break it: move what both sides need into a module below them, or turn one import around." >&2
    failed=1
fi

for dir in "${P90_DIRS[@]}"; do
    if ! out=$(python3 scripts/code-size.py --p90 "$P90_LIMIT" "$dir"); then
        printf '%s:\n%s\n' "$dir" "$(printf '%s\n' "$out" | sed -n '/^non-test fns/,$p')" >&2
        echo "check-shape: FAILED: $dir: non-test function p90 must be under $P90_LIMIT lines. Split the longest functions listed above into named steps (see python3 scripts/code-size.py $dir)." >&2
        failed=1
    else
        printf '%s\n' "$out" | grep '^non-test fns' | sed "s|^|$dir: |"
    fi
done

if [ "$failed" -ne 0 ]; then
    exit 1
fi
echo "check-shape: ok"
