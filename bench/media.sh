#!/usr/bin/env bash
# `bty-lab media build` timings and the initramfs size, side by side with
# the shell pipeline it replaced.
#
#   cold       empty media cache, the .debs already in bty-lab's cache
#              (what deploy/serve/upgrade hit after a new binary)
#   download   empty cache: the .debs come through apt-get download first
#   warm       the same binary again: a cache hit
#
# Peer: media/build.sh as of 5c48285 (with its /init and udhcpc hook, taken
# from git), given the same agent binary (--agent, this release bty-lab)
# and the same .debs in its cache; it has no cache of its own, so "warm"
# is a full rebuild for it. Ratios are peer / bty-lab (above 1: bty-lab is
# faster). Times are medians of RUNS runs in one session (absolute times
# drift on these shared machines; compare the ratios).
#
# Usage: bench/media.sh [RUNS]      (default 3)
# Needs: apt (Debian), kmod cpio file (the peer's tools), network to the
# Debian archive for the download rows; a static release bty-lab in
# BTY_LAB_STATIC_BIN (built with `cargo build --release` if unset).
# Output: bench/out/media.txt
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
runs=${1:-3}
out=bench/out
mkdir -p "$out"

bin=${BTY_LAB_STATIC_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release -p bty-lab >&2
  bin=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/bty-lab
fi
bin=$(realpath "$bin")
work=$(mktemp -d /tmp/bty-bench-media.XXXXXX)
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
ratio() { awk -v p="$1" -v o="$2" 'BEGIN{ if (o > 0) printf "%.1fx", p/o; else print "-" }'; }
mib() { awk -v n="$(stat -c %s "$1")" 'BEGIN{printf "%.1f MiB", n/1048576}'; }

echo "downloading the .debs once (not timed)..." >&2
"$bin" media download --out "$work/debs" >/dev/null

# bty-lab: a fresh cache per run, the .debs linked into it.
ours_cold=() ours_warm=() ours_dl=()
for i in $(seq 1 "$runs"); do
  c="$work/ours-$i"
  mkdir -p "$c/debs"
  ln "$work/debs"/*.deb "$c/debs/"
  t=$(now); "$bin" media build --cache "$c" >/dev/null 2>"$work/ours.log"; ours_cold+=("$(since "$t")")
  t=$(now); "$bin" media build --cache "$c" >/dev/null 2>>"$work/ours.log"; ours_warm+=("$(since "$t")")
  grep -q "using the cached media" "$work/ours.log" || { echo "no cache hit" >&2; exit 1; }
  t=$(now); "$bin" media build --cache "$work/ours-dl-$i" >/dev/null 2>>"$work/ours.log"; ours_dl+=("$(since "$t")")
done
media=$("$bin" media build --cache "$work/ours-1" 2>/dev/null)

# The peer, from git, in a directory of its own.
peer="$work/peer/media"
mkdir -p "$peer"
for f in build.sh init udhcpc.script; do
  git -C "$repo" show "5c48285:media/$f" > "$peer/$f"
done
chmod +x "$peer/build.sh" "$peer/init" "$peer/udhcpc.script"
peer_cold=() peer_dl=()
for i in $(seq 1 "$runs"); do
  rm -rf "$peer/cache" "$work/peer-out"
  mkdir -p "$peer/cache"
  ln "$work/debs"/*.deb "$peer/cache/"
  t=$(now); bash "$peer/build.sh" --agent "$bin" --out "$work/peer-out" >/dev/null 2>"$work/peer.log"; peer_cold+=("$(since "$t")")
  rm -rf "$peer/cache" "$work/peer-out"
  t=$(now); bash "$peer/build.sh" --agent "$bin" --out "$work/peer-out" >/dev/null 2>>"$work/peer.log"; peer_dl+=("$(since "$t")")
done

oc=$(median "${ours_cold[@]}") ow=$(median "${ours_warm[@]}") od=$(median "${ours_dl[@]}")
pc=$(median "${peer_cold[@]}") pd=$(median "${peer_dl[@]}")
{
  echo "bty-lab media build ($(basename "$bin") $("$bin" --version | awk '{print $2}'), agent $(mib "$bin"), $runs runs, medians; $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg))"
  printf '  %-44s %9s %9s %7s\n' "" "bty-lab" "build.sh" "ratio"
  printf '  %-44s %8ss %8ss %7s\n' "cold (empty media cache, .debs cached)" "$oc" "$pc" "$(ratio "$pc" "$oc")"
  printf '  %-44s %8ss %8ss %7s\n' "cold with a fresh apt download" "$od" "$pd" "$(ratio "$pd" "$od")"
  printf '  %-44s %8ss %8ss %7s\n' "warm (bty-lab: cache hit; build.sh: rebuild)" "$ow" "$pc" "$(ratio "$pc" "$ow")"
  printf '  runs (s): cold %s | download %s | warm %s | peer cold %s | peer download %s\n' \
    "${ours_cold[*]}" "${ours_dl[*]}" "${ours_warm[*]}" "${peer_cold[*]}" "${peer_dl[*]}"
  printf '  initramfs: bty-lab %s (gzip -6, zlib-rs), build.sh %s (gzip -9)\n' \
    "$(mib "$media/bty-netboot-x86_64.initrd")" "$(mib "$work/peer-out/bty-netboot-x86_64.initrd")"
  printf '  kernel:    %s\n' "$(mib "$media/bty-netboot-x86_64.vmlinuz")"
} | tee "$out/media.txt"
