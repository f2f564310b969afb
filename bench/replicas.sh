#!/usr/bin/env bash
# bty-web on SQLite vs PostgreSQL, one replica vs two, side by side in one
# run (issue 15):
#
#   a  one bty-web on SQLite (the default store)
#   b  one bty-web on PostgreSQL 15
#   c  two bty-web processes on one PostgreSQL, wrk driving both at once
#
# Two workloads on each:
#   plan  GET /pxe/{mac}/plan of one registered flash-always machine (the
#         same request and wrk settings as bench/web-plan.sh)
#   pxe   GET /pxe/{mac} walking NMACS distinct machines in ipxe-exit mode:
#         every decision writes (a `pxe.offered` event, last_seen), with
#         `[pxe] repeat_window_secs = 0` so no answer comes from the
#         repeat cache (bench/replicas/walk.lua)
#
#   bench/replicas.sh     # DURATION=10s CONNS=50 THREADS=2 NMACS=2000
#
# In c each replica gets its own wrk with half the connections and threads
# (the same 50 connections in all), and the pxe walk splits the MACs
# between the replicas, as the chart's sessionAffinity would.
#
# PostgreSQL runs privately: Debian's postgresql-15 binaries, a temp data
# dir, a free 127.0.0.1 port, default durability (fsync on; set
# PG_SYNC_COMMIT=off to trade it, the output says which). Run as root, the
# server runs as the postgres user. Needs: cargo, wrk, curl, postgresql-15.
# Everything listens on 127.0.0.1 only. Output: bench/out/replicas.txt.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/bench/out
WORK=$(mktemp -d /tmp/bty-replicas-bench.XXXXXX)
DURATION=${DURATION:-10s}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}
NMACS=${NMACS:-2000}
PG_SYNC_COMMIT=${PG_SYNC_COMMIT:-on}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
POOL=${POOL:-8}
MAC=52:54:00:be:4c:01
SERIAL=BENCHDISK
PW=bench-pw
P_ORIGIN=${P_ORIGIN:-18611}
P_A=${P_A:-18612}
P_B=${P_B:-18613}
P_C1=${P_C1:-18614}
P_C2=${P_C2:-18615}
mkdir -p "$OUT"
PGDIR=
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ -n $PGDIR ]]; then
        # The postgres process is among pids (killed above: SIGTERM is a
        # smart shutdown); pg_ctl makes sure it is gone before the rm.
        as_pg "$PG_BIN/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$PGDIR"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install -y wrk)"; exit 1; }
[[ -x $PG_BIN/postgres ]] || { echo "no PostgreSQL 15 at $PG_BIN (apt-get install -y postgresql-15)"; exit 1; }

# PostgreSQL refuses to run as root.
as_pg() {
    if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

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
# .cargo/config.toml names the build target, so the binary is under it.
BIN=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/bty-web
[[ -x $BIN ]] || BIN=$CARGO_TARGET_DIR/release/bty-web

echo "== PostgreSQL 15 (private, synchronous_commit=$PG_SYNC_COMMIT)"
PGDIR=$(mktemp -d /tmp/bty-replicas-pg.XXXXXX)
[[ $(id -u) == 0 ]] && chown postgres: "$PGDIR"
PG_PORT=$(free_port)
as_pg "$PG_BIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust -E UTF8 >"$WORK/initdb.log" 2>&1 \
    || { cat "$WORK/initdb.log"; exit 1; }
as_pg "$PG_BIN/postgres" -D "$PGDIR/data" -h 127.0.0.1 -p "$PG_PORT" -k "$PGDIR" \
    -c synchronous_commit="$PG_SYNC_COMMIT" >"$WORK/pg.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
    sleep 0.1
done
"$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || { cat "$WORK/pg.log"; exit 1; }
for db in bty_b bty_c; do
    "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db"
done

echo "== origin and catalog"
mkdir -p "$WORK/origin"
head -c 65536 /dev/zero | gzip >"$WORK/origin/bench.img.gz"
(cd "$WORK/origin" && exec python3 -m http.server --bind 127.0.0.1 "$P_ORIGIN") >"$WORK/origin.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$P_ORIGIN/bench.img.gz"
# A static catalog with sha256 and size: the plan is a flash plan without a
# withcache (web-plan.sh's plan carries withcache's blob URL instead of the
# origin's; the work bty-web does is the same).
cat >"$WORK/catalog.toml" <<TOML
version = 1
[[images]]
name = "bench"
src = "http://127.0.0.1:$P_ORIGIN/bench.img.gz"
sha256 = "$(sha256sum "$WORK/origin/bench.img.gz" | cut -d' ' -f1)"
size = $(stat -c %s "$WORK/origin/bench.img.gz")
format = "img.gz"
TOML
# A plan is handed out only after the machine PXE-booted and fetched its
# cycle's netboot kernel: any bytes do for that.
mkdir -p "$WORK/boot"
echo kernel >"$WORK/boot/bty-netboot-x86_64.vmlinuz"
echo initrd >"$WORK/boot/bty-netboot-x86_64.initrd"

start_web() { # name port [database-url]
    local dir=$WORK/$1
    mkdir -p "$dir"
    {
        echo "[server]"
        echo "listen = \"127.0.0.1:$2\""
        echo "state_dir = \"$dir\""
        if [[ -n ${3:-} ]]; then
            echo "database = \"$3\""
            echo "database_pool = $POOL"
            echo "session_secret = \"bench-session-secret-the-same-on-every-replica\""
        fi
        echo "[boot]"
        echo "dir = \"$WORK/boot\""
        echo "[images]"
        echo "catalog = \"$WORK/catalog.toml\""
        echo "[pxe]"
        echo "repeat_window_secs = 0"
        echo "[admin]"
        echo "password = \"$PW\""
    } >"$dir/bty.toml"
    RUST_LOG=warn "$BIN" --config "$dir/bty.toml" >"$WORK/$1.log" 2>&1 &
    pids+=($!)
    wait_http "http://127.0.0.1:$2/healthz"
}

# MAC number i (0-based) of the pxe walk.
walk_mac() { printf '52:54:01:%02x:%02x:%02x' $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)); }

register() { # port: the flash machine and the NMACS ipxe-exit machines
    local base=http://127.0.0.1:$1
    for _ in $(seq 1 100); do
        curl -fs -u "bty-lab:$PW" "$base/api/images" | grep -q '"name":"bench"' && break
        sleep 0.1
    done
    curl -fsS -u "bty-lab:$PW" -X PUT "$base/api/machines/$MAC" -H 'content-type: application/json' \
        -d "{\"boot_mode\":\"bty-flash-always\",\"image\":\"bench\",\"target_disk_serial\":\"$SERIAL\"}" >/dev/null
    local cfg=$WORK/register-$1.cfg i
    : >"$cfg"
    for ((i = 0; i < NMACS; i++)); do
        printf 'url = "%s/api/machines/%s"\noutput = "/dev/null"\n' "$base" "$(walk_mac "$i")" >>"$cfg"
    done
    # One curl, 8 PUTs in flight: 2000 machines in a few seconds.
    curl -fsS --no-progress-meter --parallel --parallel-max 8 -u "bty-lab:$PW" -X PUT -H 'content-type: application/json' \
        -d '{"boot_mode":"ipxe-exit"}' -K "$cfg"
    local plan n
    curl -fsS -o /dev/null "$base/pxe/$MAC"
    curl -fsS -o /dev/null "$base/boot/bty-netboot-x86_64.vmlinuz?mac=$MAC"
    plan=$(curl -fsS "$base/pxe/$MAC/plan")
    [[ $plan == *'"mode":"flash"'* ]] || { echo "not a flash plan on :$1: $plan"; exit 1; }
    n=$(curl -fsS -u "bty-lab:$PW" "$base/api/machines" | grep -o '"boot_mode":"ipxe-exit"' | wc -l)
    [[ $n == "$NMACS" ]] || { echo "registered $n ipxe-exit machines on :$1, wanted $NMACS"; exit 1; }
    curl -fsS "$base/pxe/$(walk_mac 0)" | grep -q exit || { echo "ipxe-exit machine did not get exit on :$1"; exit 1; }
}

# The walk's MACs, split in two halves for c.
half=$((NMACS / 2))
for part in all lo hi; do
    from=0 to=$NMACS
    [[ $part == lo ]] && to=$half
    [[ $part == hi ]] && from=$half
    {
        echo "macs = {"
        for ((i = from; i < to; i++)); do echo "\"$(walk_mac "$i")\","; done
        echo "}"
        cat "$ROOT/bench/replicas/walk.lua"
    } >"$WORK/walk-$part.lua"
done

echo "== bty-web: a (SQLite), b (PostgreSQL), c1 + c2 (PostgreSQL, shared)"
PG_URL=postgres://postgres@127.0.0.1:$PG_PORT
start_web a "$P_A"
start_web b "$P_B" "$PG_URL/bty_b"
start_web c1 "$P_C1" "$PG_URL/bty_c"
start_web c2 "$P_C2" "$PG_URL/bty_c"
echo "== registering 1 flash + $NMACS ipxe-exit machines on a, b and c"
register "$P_A"
register "$P_B"
register "$P_C1"
curl -fsS "http://127.0.0.1:$P_C2/pxe/$MAC/plan" | grep -q '"mode":"flash"' \
    || { echo "replica c2 does not see c1's machines"; exit 1; }

to_ms() { # wrk latency like 1.23ms / 450.00us / 1.20s -> ms
    local v=$1
    case $v in
        *us) awk -v x="${v%us}" 'BEGIN {printf "%.3f", x / 1000}' ;;
        *ms) awk -v x="${v%ms}" 'BEGIN {printf "%.3f", x}' ;;
        *s) awk -v x="${v%s}" 'BEGIN {printf "%.3f", x * 1000}' ;;
        *) echo "$v" ;;
    esac
}
parse_wrk() { # file -> "rps p99_ms"
    local rps p99 non2xx errs
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$1")
    p99=$(awk '$1 == "99%" {print $2}' "$1")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$1")
    errs=$(awk '/Socket errors/' "$1")
    [[ -z $non2xx ]] || echo "WARNING: $(basename "$1") had $non2xx non-2xx answers" >&2
    [[ -z $errs ]] || echo "WARNING: $(basename "$1"): $errs" >&2
    echo "$rps $(to_ms "$p99")"
}
wrk_args() { # workload port walk-part -> wrk arguments
    if [[ $1 == plan ]]; then
        echo "http://127.0.0.1:$2/pxe/$MAC/plan"
    else
        echo "-s $WORK/walk-$3.lua http://127.0.0.1:$2"
    fi
}

declare -A R
for w in plan pxe; do
    for s in a b; do
        port=$P_A; [[ $s == b ]] && port=$P_B
        echo "== wrk $w on $s ($CONNS connections, $DURATION)"
        # shellcheck disable=SC2046
        wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency $(wrk_args "$w" "$port" all) >"$WORK/wrk-$w-$s.txt"
        R[$w-$s]=$(parse_wrk "$WORK/wrk-$w-$s.txt")
    done
    echo "== wrk $w on c1 + c2 at once ($((CONNS / 2)) connections each, $DURATION)"
    t=$((THREADS / 2 > 0 ? THREADS / 2 : 1))
    # shellcheck disable=SC2046
    wrk -t"$t" -c$((CONNS / 2)) -d"$DURATION" --latency $(wrk_args "$w" "$P_C1" lo) >"$WORK/wrk-$w-c1.txt" &
    w1=$!
    # shellcheck disable=SC2046
    wrk -t"$t" -c$((CONNS - CONNS / 2)) -d"$DURATION" --latency $(wrk_args "$w" "$P_C2" hi) >"$WORK/wrk-$w-c2.txt" &
    w2=$!
    wait "$w1" "$w2"
    R[$w-c1]=$(parse_wrk "$WORK/wrk-$w-c1.txt")
    R[$w-c2]=$(parse_wrk "$WORK/wrk-$w-c2.txt")
done

{
    echo "bty-web stores and replicas ($(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)," \
        "wrk -t$THREADS -c$CONNS -d$DURATION; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')," \
        "synchronous_commit=$PG_SYNC_COMMIT, pool $POOL per replica; pxe walk over $NMACS ipxe-exit MACs)"
    printf '%-5s %-28s %10s %8s %12s\n' work setup req/s x_a p99_ms
    for w in plan pxe; do
        read -r arps ap99 <<<"${R[$w-a]}"
        read -r brps bp99 <<<"${R[$w-b]}"
        read -r c1rps c1p99 <<<"${R[$w-c1]}"
        read -r c2rps c2p99 <<<"${R[$w-c2]}"
        awk -v w="$w" -v a="$arps" -v ap="$ap99" -v b="$brps" -v bp="$bp99" \
            -v c1="$c1rps" -v c1p="$c1p99" -v c2="$c2rps" -v c2p="$c2p99" 'BEGIN {
                f = "%-5s %-28s %10.0f %7.2fx %12s\n"
                printf f, w, "a  SQLite, 1 bty-web", a, 1, ap
                printf f, w, "b  PostgreSQL, 1 bty-web", b, b / a, bp
                printf f, w, "c  PostgreSQL, 2 bty-web", c1 + c2, (c1 + c2) / a, c1p " / " c2p
            }'
    done
} | tee "$OUT/replicas.txt"
