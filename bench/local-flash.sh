#!/bin/bash
# Local flash benchmark: `bty-lab flash` (verified: read-back overlapping
# the write, first MiB last) of 1 GiB images onto a loop device, against
#   peer:  cat FILE | [zstd -dc |] dd bs=4M oflag=direct conv=fsync, then a
#          read-back sha256sum (dd iflag=direct): verified, one pass after
#          the other;
#   floor: curl -s URL | [zstd -dc |] dd bs=4M oflag=direct conv=fsync, no
#          verification at all (what "just dd it" costs), the files served
#          by nginx on loopback.
# Plus the network agent (`bty-lab agent`, the same write-and-verify core
# fed over HTTP by a test-kit bty-web) on a dense 512 MiB raw vs the floor.
#
#   bench/local-flash.sh [REPS]          (median of REPS runs, default 3)
#   IMAGES="sparse80.img" bench/local-flash.sh 1
#
# Needs root (loop device), nginx-light curl zstd python3 bc util-linux, a
# release bty-lab (built if missing) and bty-dev-web (built if missing;
# BTY_DEV_WEB=path uses another build).
set -euo pipefail
reps=${1:-3}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
out="$here/out/local-flash"
www="$here/out/flash/www" # shared with bench/flash.sh: same images
mkdir -p "$www" "$out"
for t in nginx curl zstd python3 losetup sha256sum bc; do
    command -v "$t" >/dev/null || { echo "local-flash.sh: $t missing (apt-get install -y nginx-light curl zstd python3 bc)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "local-flash.sh: needs root for the loop device" >&2; exit 1; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
lab="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/bty-lab"
[ -x "$lab" ] || lab="$CARGO_TARGET_DIR/release/bty-lab"
if [ ! -x "$lab" ]; then
    cargo build --release --bin bty-lab --manifest-path "$repo/Cargo.toml"
    lab="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/bty-lab"
    [ -x "$lab" ] || lab="$CARGO_TARGET_DIR/release/bty-lab"
fi
dev_web=${BTY_DEV_WEB:-}
if [ -z "$dev_web" ]; then
    cargo build -q -p bty-testkit --features web --bin bty-dev-web --manifest-path "$repo/Cargo.toml"
    dev_web="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/debug/bty-dev-web"
    [ -x "$dev_web" ] || dev_web="$CARGO_TARGET_DIR/debug/bty-dev-web"
fi

echo "== making images in $www" >&2
python3 "$repo/bench/flash/mkimages.py" "$www"
# zstd writes the content size into the frame header: bty-lab sizes the
# target before the first write.
[ -f "$www/dense.img.zst" ] || zstd -q -T0 -3 "$www/dense.img" -o "$www/dense.img.zst"
[ -f "$www/dense512.img" ] || head -c 512M "$www/dense.img" > "$www/dense512.img"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$out/nginx.conf" <<NGX
daemon off; worker_processes 2; pid $out/nginx.pid; error_log $out/nginx.err;
events { worker_connections 64; }
http { access_log off; sendfile on; tcp_nopush on; default_type application/octet-stream;
  client_body_temp_path $out/tmp; proxy_temp_path $out/tmp; fastcgi_temp_path $out/tmp;
  uwsgi_temp_path $out/tmp; scgi_temp_path $out/tmp;
  server { listen 127.0.0.1:$port; root $www; } }
NGX
mkdir -p "$out/tmp"
nginx -c "$out/nginx.conf" -p "$out" &
pids=("$!")
lo=""
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "$lo" ] && losetup -d "$lo" 2>/dev/null || true
    rm -f "$out/loop-backing.img"
}
trap cleanup EXIT
sleep 0.5
curl -sf -o /dev/null "http://127.0.0.1:$port/dense.img" || { echo "nginx not serving" >&2; exit 1; }
truncate -s 1100M "$out/loop-backing.img"
lo=$(losetup -f --show "$out/loop-backing.img")

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
since() { echo "$(now) - $1" | bc; }
# Every run starts from the same state: the page cache holds the image (it
# was just read or made), the loop device's backing file is fresh.
fresh() {
    losetup -d "$lo"; rm -f "$out/loop-backing.img"
    truncate -s 1100M "$out/loop-backing.img"
    lo=$(losetup -f --show "$out/loop-backing.img")
    cat "$www/$1" > /dev/null
}

bty() { # image
    local t0; t0=$(now)
    "$lab" flash "$www/$1" "$lo" --yes > "$out/bty-$1.log" 2>&1 \
        || { echo "bty-lab flash failed:" >&2; cat "$out/bty-$1.log" >&2; exit 1; }
    since "$t0"
}
peer() { # image decoder size
    local t0; t0=$(now)
    cat "$www/$1" | $2 | dd of="$lo" bs=4M oflag=direct conv=fsync status=none
    dd if="$lo" bs=4M iflag=direct,count_bytes count="$3" status=none | sha256sum > /dev/null
    since "$t0"
}
floor() { # image decoder
    local t0; t0=$(now)
    curl -s "http://127.0.0.1:$port/$1" | $2 | dd of="$lo" bs=4M oflag=direct conv=fsync status=none
    since "$t0"
}
agent() { # image
    local t0
    "$dev_web" arm --server "http://127.0.0.1:$pport" --mac 52:54:00:be:4c:00
    t0=$(now)
    "$lab" agent --server "http://127.0.0.1:$pport" --mac 52:54:00:be:4c:00 --once --no-reboot \
        --target-device "$lo" > "$out/agent-$1.log" 2>&1 \
        || { echo "agent failed:" >&2; cat "$out/agent-$1.log" >&2; exit 1; }
    since "$t0"
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
printf '\n%-16s %8s %8s %8s %10s %9s\n' image "bty s" "peer s" "floor s" floor/bty peer/bty
results=()
for spec in "dense.img cat" "dense.img.zst zstd -dc" "sparse80.img cat"; do
    set -- $spec
    img=$1; shift; dec="$*"
    case " ${IMAGES:-$img} " in *" $img "*) ;; *) continue ;; esac
    size=$(stat -c %s "$www/${img%%.img*}.img")
    : > "$out/b"; : > "$out/p"; : > "$out/f"
    for _ in $(seq "$reps"); do
        fresh "$img"; bty "$img" >> "$out/b"
        cmp -s -n "$size" "$www/${img%%.img*}.img" "$lo" || { echo "$img: device differs after bty-lab flash" >&2; exit 1; }
        fresh "$img"; peer "$img" "$dec" "$size" >> "$out/p"
        fresh "$img"; floor "$img" "$dec" >> "$out/f"
    done
    b=$(median < "$out/b"); p=$(median < "$out/p"); f=$(median < "$out/f")
    printf '%-16s %8.2f %8.2f %8.2f %9.2fx %8.2fx\n' "$img" "$b" "$p" "$f" \
        "$(echo "scale=2; $f / $b" | bc)" "$(echo "scale=2; $p / $b" | bc)"
    results+=("$img bty=$b peer=$p floor=$f")
done

# the network agent on a dense 512 MiB raw vs the floor
case " ${IMAGES:-dense512.img} " in *" dense512.img "*)
    rm -f "$out/pport"
    "$dev_web" serve --image "$www/dense512.img" --image-url "http://127.0.0.1:$port/dense512.img" --format img \
        --mac 52:54:00:be:4c:00 --mode bty-flash-always --port-file "$out/pport" >> "$out/dev-web.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do [ -s "$out/pport" ] && break; sleep 0.2; done
    [ -s "$out/pport" ] || { echo "bty-dev-web did not start:" >&2; cat "$out/dev-web.log" >&2; exit 1; }
    pport=$(cat "$out/pport")
    : > "$out/a"; : > "$out/f"
    for _ in $(seq "$reps"); do
        fresh dense512.img; agent dense512.img >> "$out/a"
        fresh dense512.img; floor dense512.img cat >> "$out/f"
    done
    a=$(median < "$out/a"); f=$(median < "$out/f")
    printf '%-16s %8.2f %8s %8.2f %9.2fx %9s   (network agent)\n' dense512.img "$a" - "$f" \
        "$(echo "scale=2; $f / $a" | bc)" -
    results+=("dense512.img agent=$a floor=$f")
    ;;
esac
printf '%s\n' "${results[@]}" > "$out/results.txt"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "(median of $reps; floor/bty > 0.8 is the aim: verification costing under 20%; results in $out/results.txt)"
