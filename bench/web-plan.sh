#!/usr/bin/env bash
# bty-web (Rust) vs the Python bty-web 0.77.2, side by side in one run:
# wrk -c50 against GET /pxe/{mac}/plan (a registered flash-always machine
# with its image in withcache) and GET /pxe-bootstrap.ipxe.
#
#   bench/web-plan.sh            # DURATION=10s CONNS=50 THREADS=2 by default
#
# Needs: cargo, wrk, python3-venv (pip reaches PyPI once for the peer).
# Everything listens on 127.0.0.1 only. Output: bench/out/web-plan.txt.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/bench/out
WORK=$(mktemp -d /tmp/bty-web-bench.XXXXXX)
DURATION=${DURATION:-10s}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}
MAC=52:54:00:be:4c:01
SERIAL=BENCHDISK
PW=bench-pw
P_ORIGIN=${P_ORIGIN:-18601}
P_WC=${P_WC:-18602}
P_PY=${P_PY:-18603}
P_RS=${P_RS:-18604}
mkdir -p "$OUT"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install -y wrk)"; exit 1; }

wait_http() { # url
    for _ in $(seq 1 300); do
        curl -fs -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "timed out waiting for $1" >&2
    exit 1
}

echo "== building bty-web (release)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/targets/web}
(cd "$ROOT" && cargo build --release -p bty-web -q)
# .cargo/config.toml names the build target, so release builds land under it.
RS_BIN=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/bty-web

VENV=${VENV:-$OUT/pyvenv}
if [[ ! -x $VENV/bin/bty-web ]]; then
    echo "== installing the Python peer into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "bty-lab[web]==0.77.2" "withcache==0.13.3"
fi

echo "== origin, withcache (Python), both bty-webs"
mkdir -p "$WORK/origin"
head -c 65536 /dev/zero | gzip > "$WORK/origin/bench.img.gz"
(cd "$WORK/origin" && exec python3 -m http.server --bind 127.0.0.1 "$P_ORIGIN") >"$WORK/origin.log" 2>&1 &
pids+=($!)
WITHCACHE_ADMIN_PASSWORD=$PW "$VENV/bin/withcache-server" --host 127.0.0.1 --port "$P_WC" \
    --data-dir "$WORK/wc" >"$WORK/wc.log" 2>&1 &
pids+=($!)
mkdir -p "$WORK/py"
BTY_PATHS_STATE_DIR=$WORK/py BTY_SERVER_HOST=127.0.0.1 BTY_SERVER_PORT=$P_PY \
    BTY_WITHCACHE_URL=http://127.0.0.1:$P_WC BTY_ADMIN_PASSWORD=$PW \
    "$VENV/bin/bty-web" >"$WORK/py.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$P_ORIGIN/bench.img.gz"
wait_http "http://127.0.0.1:$P_WC/healthz"
wait_http "http://127.0.0.1:$P_PY/healthz"
"$VENV/bin/python" "$ROOT/bench/web-plan/python_setup.py" "http://127.0.0.1:$P_WC" \
    "http://127.0.0.1:$P_PY" "http://127.0.0.1:$P_ORIGIN" "$MAC" "$SERIAL" "$PW" >"$WORK/py-plan.json"

mkdir -p "$WORK/rs" "$WORK/rs-boot"
# The plan is handed only to the machine that fetched its cycle's netboot
# kernel: any bytes do for that.
echo kernel >"$WORK/rs-boot/bty-netboot-x86_64.vmlinuz"
echo initrd >"$WORK/rs-boot/bty-netboot-x86_64.initrd"
cat >"$WORK/rs/bty.toml" <<TOML
[server]
listen = "127.0.0.1:$P_RS"
state_dir = "$WORK/rs"
[boot]
dir = "$WORK/rs-boot"
[withcache]
url = "http://127.0.0.1:$P_WC"
[admin]
password = "$PW"
TOML
RUST_LOG=warn "$RS_BIN" --config "$WORK/rs/bty.toml" >"$WORK/rs.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$P_RS/healthz"
for _ in $(seq 1 100); do
    curl -fs -u "bty-lab:$PW" "http://127.0.0.1:$P_RS/api/images" | grep -q '"name":"bench"' && break
    sleep 0.1
done
curl -fsS -u "bty-lab:$PW" -X PUT "http://127.0.0.1:$P_RS/api/machines/$MAC" \
    -H 'content-type: application/json' \
    -d "{\"boot_mode\":\"bty-flash-always\",\"image\":\"bench\",\"target_disk_serial\":\"$SERIAL\"}" >/dev/null
curl -fsS -o /dev/null "http://127.0.0.1:$P_RS/pxe/$MAC"
curl -fsS -o /dev/null "http://127.0.0.1:$P_RS/boot/bty-netboot-x86_64.vmlinuz?mac=$MAC"
RS_PLAN=$(curl -fsS "http://127.0.0.1:$P_RS/pxe/$MAC/plan")
[[ $RS_PLAN == *'"mode":"flash"'* ]] || { echo "Rust plan is not a flash plan: $RS_PLAN"; exit 1; }
echo "python plan: $(cat "$WORK/py-plan.json")"
echo "rust plan:   $RS_PLAN"

run_wrk() { # name url -> "rps p99_ms"
    local out
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$2")
    echo "$out" >"$WORK/wrk-$1.txt"
    local rps p99 non2xx
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    [[ -z $non2xx ]] || echo "WARNING: $1 had $non2xx non-2xx answers" >&2
    echo "$rps $(to_ms "$p99")"
}
to_ms() { # wrk latency like 1.23ms / 450.00us / 1.20s -> ms
    local v=$1
    case $v in
        *us) awk -v x="${v%us}" 'BEGIN {printf "%.3f", x / 1000}' ;;
        *ms) awk -v x="${v%ms}" 'BEGIN {printf "%.3f", x}' ;;
        *s) awk -v x="${v%s}" 'BEGIN {printf "%.3f", x * 1000}' ;;
        *) echo "$v" ;;
    esac
}

declare -A R
for target in plan bootstrap; do
    for impl in python rust; do
        port=$P_PY; [[ $impl == rust ]] && port=$P_RS
        path="/pxe/$MAC/plan"; [[ $target == bootstrap ]] && path="/pxe-bootstrap.ipxe"
        echo "== wrk $impl $target ($CONNS connections, $DURATION)"
        R[$impl-$target]=$(run_wrk "$impl-$target" "http://127.0.0.1:$port$path")
    done
done

{
    echo "bty-web plan/bootstrap benchmark ($(date -u +%FT%TZ), $(nproc) cores, wrk -t$THREADS -c$CONNS -d$DURATION)"
    printf '%-10s %-8s %12s %10s\n' endpoint impl req/s p99_ms
    for target in plan bootstrap; do
        for impl in python rust; do
            read -r rps p99 <<<"${R[$impl-$target]}"
            printf '%-10s %-8s %12s %10s\n' "$target" "$impl" "$rps" "$p99"
        done
    done
    for target in plan bootstrap; do
        read -r prps pp99 <<<"${R[python-$target]}"
        read -r rrps rp99 <<<"${R[rust-$target]}"
        awk -v t="$target" -v p="$prps" -v r="$rrps" -v pp="$pp99" -v rp="$rp99" \
            'BEGIN {printf "%-10s throughput ratio rust/python = %.1fx, p99 python %s ms vs rust %s ms\n", t, r / p, pp, rp}'
    done
} | tee "$OUT/web-plan.txt"
