#!/bin/bash
# Flash benchmark: the bty agent vs the Python agent's pipeline
# (curl | tee >(sha256sum) | <decompressor> | dd bs=4M oflag=direct
# conv=fsync, then a read-back sha256sum), side by side in one run, on
# 1 GiB images served by nginx on loopback, into a file and a loop device.
# Verification is included on both sides.
#
#   bench/flash.sh [REPS]        (median of REPS runs, default 3)
#   IMAGES="sparse80.img" bench/flash.sh 1   (only these images)
#
# Needs: nginx-light curl zstd gzip python3 util-linux (losetup), root for
# the loop device, and a release static agent (built if missing).
set -euo pipefail
reps=${1:-3}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
out="$here/out/flash"
www="$out/www"
mkdir -p "$www"
for t in nginx curl zstd gzip python3 losetup sha256sum; do
    command -v "$t" >/dev/null || { echo "flash.sh: $t missing (apt-get install -y nginx-light curl zstd python3)" >&2; exit 1; }
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
bty="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/bty"
if [ ! -x "$bty" ]; then
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p bty-agent \
        --target x86_64-unknown-linux-gnu --manifest-path "$repo/Cargo.toml"
fi
# the plan: a real bty-web (the test kit's bty-dev-web), the machine in
# bty-flash-always, armed again before each agent run
dev_web=${BTY_DEV_WEB:-}
if [ -z "$dev_web" ]; then
    cargo build -q -p bty-testkit --features web --bin bty-dev-web --manifest-path "$repo/Cargo.toml"
    dev_web="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/debug/bty-dev-web"
fi

echo "== making images in $www" >&2
python3 "$here/flash/mkimages.py" "$www"
[ -f "$www/dense.img.zst" ] || zstd -q -T0 -3 "$www/dense.img" -o "$www/dense.img.zst"
[ -f "$www/dense.img.gz" ] || gzip -6 -c "$www/dense.img" > "$www/dense.img.gz"

# nginx on loopback
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
ngx=$!
pids=("$ngx")
lo=""
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "$lo" ] && losetup -d "$lo" 2>/dev/null || true
    rm -f "$out/target.img" "$out/loop-backing.img"
}
trap cleanup EXIT
sleep 0.5
curl -sf -o /dev/null "http://127.0.0.1:$port/dense.img" || { echo "nginx not serving" >&2; exit 1; }

# the loop device (needs root)
targets="file"
if [ "$(id -u)" = 0 ]; then
    truncate -s 1100M "$out/loop-backing.img"
    lo=$(losetup -f --show "$out/loop-backing.img")
    targets="file loop"
fi

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

prepare() { # target kind → path; a fresh, empty target for both sides
    if [ "$1" = file ]; then
        rm -f "$out/target.img"; : > "$out/target.img"; echo "$out/target.img"
    else
        echo "$lo"
    fi
}

peer() { # image decompressor target size
    local url="http://127.0.0.1:$port/$1" dec=$2 tgt=$3 size=$4 t0 t1
    t0=$(now)
    curl -s "$url" | tee >(sha256sum > "$out/peer.dl.sha") | $dec | dd of="$tgt" bs=4M oflag=direct conv=fsync status=none
    # read back what landed (the Python agent does not; we include it so
    # both sides verify the same things)
    dd if="$tgt" bs=4M iflag=direct,count_bytes count="$size" status=none | sha256sum > "$out/peer.rb.sha"
    t1=$(now)
    echo "$t1 - $t0" | bc
}

ours() { # image format target-kind target
    local img=$1 fmt=$2 kind=$3 tgt=$4 t0 t1 flag
    [ "$kind" = file ] && flag=(--target-file "$tgt") || flag=(--target-device "$tgt")
    "$dev_web" arm --server "http://127.0.0.1:$pport" --mac 52:54:00:be:4c:00
    t0=$(now)
    # status lines with a timestamp each, to see where the time goes
    "$bty" --server "http://127.0.0.1:$pport" --mac 52:54:00:be:4c:00 --once --no-reboot "${flag[@]}" 2>&1 \
        | while IFS= read -r l; do echo "$(date +%s.%N) $l"; done > "$out/agent-$img-$kind.log"
    [ "${PIPESTATUS[0]}" = 0 ] || { echo "agent failed:" >&2; cat "$out/agent-$img-$kind.log" >&2; exit 1; }
    t1=$(now)
    echo "$t1 - $t0" | bc
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
printf '\n%-18s %-5s %10s %10s %8s\n' image target "peer s" "bty s" ratio
results=()
for spec in "dense.img img cat" "dense.img.zst img.zst zstd -dc" "dense.img.gz img.gz gzip -dc" "sparse80.img img cat"; do
    set -- $spec
    img=$1 fmt=$2; shift 2; dec="$*"
    case " ${IMAGES:-$img} " in *" $img "*) ;; *) continue ;; esac
    size=$(stat -c %s "$www/${img%%.img*}.img")
    # a bty-web per image (bty-dev-web hashes the image once at start)
    rm -f "$out/pport"
    "$dev_web" serve --image "$www/$img" --image-url "http://127.0.0.1:$port/$img" --format "$fmt" \
        --mac 52:54:00:be:4c:00 --mode bty-flash-always --port-file "$out/pport" >> "$out/dev-web.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do [ -s "$out/pport" ] && break; sleep 0.2; done
    [ -s "$out/pport" ] || { echo "bty-dev-web did not start:" >&2; cat "$out/dev-web.log" >&2; exit 1; }
    pport=$(cat "$out/pport")
    for kind in $targets; do
        : > "$out/peer.times"; : > "$out/ours.times"
        for _ in $(seq "$reps"); do
            tgt=$(prepare "$kind"); peer "$img" "$dec" "$tgt" "$size" >> "$out/peer.times"
            tgt=$(prepare "$kind"); ours "$img" "$fmt" "$kind" "$tgt" >> "$out/ours.times"
        done
        # sanity: what the agent left is the image
        cmp -s -n "$size" "$www/${img%%.img*}.img" "$tgt" || { echo "target differs from image after bty run" >&2; exit 1; }
        p=$(median < "$out/peer.times"); o=$(median < "$out/ours.times")
        r=$(echo "scale=2; $p / $o" | bc)
        printf '%-18s %-5s %10.2f %10.2f %7sx\n' "$img" "$kind" "$p" "$o" "$r"
        results+=("$img $kind $p $o $r")
    done
    kill "${pids[-1]}" 2>/dev/null || true
done
printf '%s\n' "${results[@]}" > "$out/results.txt"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "(median of $reps; ratio = peer time / bty time, > 1 means bty is faster; results in $out/results.txt)"
