#!/usr/bin/env bash
# `bty-lab deploy` to all-healthy on the default path (`--images auto`, no
# flag), with the release build the README installs, netboot media
# included:
#   media: `bty-lab media build` once, so the media cache holds this
#         binary's media (timed: a build from the .debs apt cached, and the
#         cache hit every deploy below pays);
#   cold: a fresh DEST and none of the stack's images in the engine, so the
#         pull is tried, fails, and the images are built from the binary
#         with its media (a cache hit); bty-web places the media into the
#         fresh boot dir at start;
#   warm: deploy again with the same binary: the media is a cache hit, the
#         images are reused (their boot-files label matches), the
#         containers recreated, and bty-web finds the media in place.
# Each deploy must end serving this binary's media (`media status DEST`).
# Then the peak memory of each container at idle.
#
# Usage: bench/deploy.sh [docker|podman] [runs]
# Needs: a running engine (scripts/engines.sh), root and apt (or the .debs
# in the media cache already). Builds the release bty-lab (`cargo build
# --release`, static by default) unless BTY_LAB_BIN names one. Output:
# bench/out/deploy.txt. Targets: warm < 10 s, cold < 60 s (media cache
# filled).
#
# No registry is reachable on these machines and the bench must not send
# traffic off the host, so the registry prefix is a closed loopback port
# (BENCH_REGISTRY overrides): the pull fails at once with "connection
# refused", as ghcr.io fails at once with "no such host" on an air-gapped
# host.
#
# Peer: the Python bty-lab cannot deploy here (its images live on ghcr.io,
# unreachable), so the side-by-side figure is the Python services' idle RSS,
# run natively from PyPI (bty-lab[web]==0.77.2, withcache==0.13.3), when
# BENCH_PEER=1.
set -euo pipefail
cd "$(dirname "$0")/.."
engine=${1:-docker}
runs=${2:-3}
out=bench/out
mkdir -p "$out"
sock=/var/run/docker.sock
[ "$engine" = podman ] && sock=/run/podman/podman.sock

bin=${BTY_LAB_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release -p bty-lab >&2
  bin=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/bty-lab
fi
bin=$(readlink -f "$bin")
registry=${BENCH_REGISTRY:-127.0.0.1:9/bty-bench}
work=$(mktemp -d /tmp/bty-bench.XXXXXX)
common=(--engine "$engine" --host-addr 127.0.0.1 --registry "$registry"
        --port-web 18280 --port-cache 13200 --tftp-port 16970)

api() { curl -fsS --unix-socket "$sock" "http://x$1"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
images_line() { grep -m1 -o 'images: .*' "$1" || echo "(no images line)"; }
purge_all() { "$bin" purge "$1" --all --images --yes >/dev/null 2>&1 || true; }

# The media cache for this binary: a build now (timed; the .debs come from
# apt's download cache), then the cache hit each deploy pays.
t0=$(date +%s.%N)
"$bin" media build --force >/dev/null 2>"$out/media-build.log" \
  || { cat "$out/media-build.log" >&2; exit 1; }
t1=$(date +%s.%N)
media_build=$(secs "$t0" "$t1")
t0=$(date +%s.%N)
"$bin" media build >/dev/null 2>&1
t1=$(date +%s.%N)
media_hit=$(secs "$t0" "$t1")
media_size=$(grep -o 'initramfs: [0-9.]* [KM]iB' "$out/media-build.log" | head -1)

# Each deploy must end serving this binary's media.
check_media() { # dest log
  "$bin" media status "$1" --json | python3 -c '
import json, sys
d = json.load(sys.stdin).get("deploy") or {}
if not d.get("matches"):
    sys.exit("the deploy does not serve this binary media: " + d.get("summary", "(none)"))
' || { cat "$2" >&2; exit 1; }
}
media_line() { grep -m1 -o 'media: .* serves .*' "$1" || echo "(no media line)"; }

cold=() warm=()
dest=
for i in $(seq 1 "$runs"); do
  [ -n "$dest" ] && purge_all "$dest"
  dest=$work/lab$i
  # Cold: no images under these tags (removed by the purge above, or by
  # this one on the first run, for leftovers of an earlier bench).
  for svc in withcache bty-web bty-tftp; do
    curl -fsS -X DELETE --unix-socket "$sock" \
      "http://x/images/$registry/$svc:$("$bin" --version | awk '{print $2}')?force=true" >/dev/null 2>&1 || true
  done
  t0=$(date +%s.%N)
  "$bin" deploy "$dest" -y "${common[@]}" >/dev/null 2>"$out/deploy-cold.log" \
    || { cat "$out/deploy-cold.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  cold+=("$(secs "$t0" "$t1")")
  cold_line=$(images_line "$out/deploy-cold.log")
  check_media "$dest" "$out/deploy-cold.log"
  cold_media=$(media_line "$out/deploy-cold.log")
  t0=$(date +%s.%N)
  "$bin" deploy "$dest" -y >/dev/null 2>"$out/deploy-warm.log" \
    || { cat "$out/deploy-warm.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  warm+=("$(secs "$t0" "$t1")")
  warm_line=$(images_line "$out/deploy-warm.log")
  check_media "$dest" "$out/deploy-warm.log"
  case "$warm_line" in
    *"reused the ones"*) ;;
    *) echo "warm deploy did not reuse the images: $warm_line" >&2; exit 1 ;;
  esac
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

verdict() { # value target
  awk -v v="$1" -v t="$2" 'BEGIN{ if (v < t) print "ok, target < " t " s"; else print "OVER the target of " t " s" }'
}

{
  echo "bty-lab deploy -> all healthy ($engine, --images auto, release build, $runs runs):"
  echo "  binary: $bin ($(ls -l "$bin" | awk '{printf "%.1f MiB", $5/1048576}'))"
  echo "  media: built in $media_build s ($media_size); a cache hit: $media_hit s"
  echo "  cold (fresh DEST, no images, media cache filled): ${cold[*]} s"
  echo "    median $(median "${cold[@]}") s ($(verdict "$(median "${cold[@]}")" 60))"
  echo "    $cold_line"
  echo "    $cold_media"
  echo "  warm (same binary, images present): ${warm[*]} s"
  echo "    median $(median "${warm[@]}") s ($(verdict "$(median "${warm[@]}")" 10))"
  echo "    $warm_line"
  echo "idle memory after 10 s (cgroup peak KiB / process VmHWM KiB):"
  for svc in bty-web withcache bty-tftp; do
    read -r peak hwm < <(mem_line "$project-$svc")
    printf '  %-10s cgroup peak %6s KiB   VmHWM %6s KiB\n' "$svc" "$peak" "$hwm"
  done
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

purge_all "$dest"
rm -rf "$work"
