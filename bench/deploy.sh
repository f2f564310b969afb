#!/usr/bin/env bash
# Time from `bty-lab deploy` (images already built) to every service
# healthy, and the peak memory of each container at idle.
#
# Usage: bench/deploy.sh [docker|podman] [runs]
# Needs: a running engine (scripts/engines.sh), root, and a static bty-lab
# in BTY_LAB_STATIC_BIN (built here if unset). Output: bench/out/deploy.txt
#
# Peer: the Python bty-lab cannot deploy here (its images live on ghcr.io,
# unreachable), so the side-by-side figure is the Python services' idle RSS,
# run natively from PyPI (bty-lab[web]==0.77.2, withcache==0.13.3), when
# BENCH_PEER=1.
set -euo pipefail
cd "$(dirname "$0")/.."
engine=${1:-docker}
runs=${2:-5}
out=bench/out
mkdir -p "$out"
sock=/var/run/docker.sock
[ "$engine" = podman ] && sock=/run/podman/podman.sock

bin=${BTY_LAB_STATIC_BIN:-}
if [ -z "$bin" ]; then
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p bty-lab \
    --target x86_64-unknown-linux-gnu >&2
  bin=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/bty-lab
fi
dest=$(mktemp -d /tmp/bty-bench.XXXXXX)/lab
common=(--engine "$engine" --host-addr 127.0.0.1 --registry bty.bench/local
        --port-web 18280 --port-cache 13200 --tftp-port 16970)

api() { curl -fsS --unix-socket "$sock" "http://x$1"; }

echo "building images once (not timed)..." >&2
"$bin" deploy "$dest" --images local -y "${common[@]}" >/dev/null 2>"$out/deploy-build.log"
"$bin" purge "$dest" --engine "$engine" --yes >/dev/null 2>&1

times=()
for i in $(seq 1 "$runs"); do
  t0=$(date +%s.%N)
  "$bin" deploy "$dest" --images present -y --engine "$engine" >/dev/null 2>"$out/deploy-run.log"
  t1=$(date +%s.%N)
  times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')")
  [ "$i" -lt "$runs" ] && "$bin" purge "$dest" --engine "$engine" --yes >/dev/null 2>&1
done

sleep 10 # idle
project=$(basename "$dest")
mem_line() { # container name -> "peak KiB"
  local name=$1 id pid cg peak
  id=$(api "/containers/$name/json" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["Id"], d["State"]["Pid"])')
  pid=${id#* }
  cg=$(awk -F: '$1=="0"{print $3}' "/proc/$pid/cgroup" 2>/dev/null || true)
  if [ -n "$cg" ] && [ -f "/sys/fs/cgroup$cg/memory.peak" ]; then
    peak=$(cat "/sys/fs/cgroup$cg/memory.peak")
  else
    memcg=$(awk -F: '$2 ~ /memory/{print $3}' "/proc/$pid/cgroup")
    peak=$(cat "/sys/fs/cgroup/memory$memcg/memory.max_usage_in_bytes" 2>/dev/null || echo 0)
  fi
  rss=$(awk '/VmHWM/{print $2}' "/proc/$pid/status")
  echo "$((peak / 1024)) $rss"
}

{
  echo "bty-lab deploy -> all healthy ($engine, images present, $runs runs):"
  printf '  %ss\n' "${times[@]}"
  printf '  median: %ss\n' "$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')"
  echo "idle memory after 10 s (cgroup peak KiB / process VmHWM KiB):"
  for svc in bty-web withcache bty-tftp; do
    read -r peak hwm < <(mem_line "$project-$svc")
    printf '  %-10s cgroup peak %6s KiB   VmHWM %6s KiB\n' "$svc" "$peak" "$hwm"
  done
  ls -l "$bin" | awk '{printf "image payload (static bty-lab): %.1f MiB\n", $5/1048576}'
} | tee "$out/deploy.txt"

if [ "${BENCH_PEER:-0}" = 1 ]; then
  venv=$out/peer-venv
  [ -x "$venv/bin/bty-web" ] || { python3 -m venv "$venv" && "$venv/bin/pip" -q install "bty-lab[web]==0.77.2" "withcache==0.13.3"; }
  st=$(mktemp -d)
  BTY_PATHS_STATE_DIR=$st BTY_SERVER_PORT=18380 "$venv/bin/bty-web" >/dev/null 2>&1 & p1=$!
  "$venv/bin/withcache-server" --port 13300 --data-dir "$st/wc" >/dev/null 2>&1 & p2=$!
  sleep 15
  {
    echo "peer (Python, native, idle 15 s) VmHWM KiB:"
    printf '  bty-web    %s\n' "$(awk '/VmHWM/{print $2}' /proc/$p1/status)"
    printf '  withcache  %s\n' "$(awk '/VmHWM/{print $2}' /proc/$p2/status)"
  } | tee -a "$out/deploy.txt"
  kill $p1 $p2
fi

"$bin" purge "$dest" --engine "$engine" --all --yes >/dev/null 2>&1 || true
