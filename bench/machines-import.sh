#!/usr/bin/env bash
# Registering 1 000 machines: one `POST /api/machines/import` (one CSV,
# one transaction) vs the peer, the only way before it: 1 000
# `PUT /api/machines/{mac}` one after another (one curl process, one
# kept-alive connection, so the client's own cost is small). Same release
# bty-web, same run, fresh machines each time (both paths create 1 000).
#
#   bench/machines-import.sh          # RUNS=3 N=1000 by default
#   DB=postgres bench/machines-import.sh   # on a throwaway PostgreSQL 15
#
# Needs: cargo, curl (and for DB=postgres, postgresql-15, run as root).
# Listens on 127.0.0.1 only. Output: bench/out/machines-import-$DB.txt.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/bench/out
WORK=$(mktemp -d /tmp/bty-import-bench.XXXXXX)
RUNS=${RUNS:-3}
N=${N:-1000}
DB=${DB:-sqlite}
PW=bench-pw
PORT=${PORT:-18611}
PG_PORT=${PG_PORT:-18612}
BASE=http://127.0.0.1:$PORT
mkdir -p "$OUT"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ $DB == postgres && -d $WORK/pg ]]; then
        runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_http() { # url
    for _ in $(seq 1 300); do
        curl -fs -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "timed out waiting for $1" >&2
    exit 1
}
now_ns() { date +%s%N; }

echo "== building bty-web (release)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$ROOT" && cargo build --release -p bty-web -q)
# .cargo/config.toml names the build target, so release builds land under it.
BIN=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/bty-web

DATABASE=
if [[ $DB == postgres ]]; then
    echo "== PostgreSQL 15 on 127.0.0.1:$PG_PORT"
    mkdir -p "$WORK/pg" && chown postgres "$WORK" "$WORK/pg"
    runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D "$WORK/pg" -A trust -U bty >/dev/null
    runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$WORK/pg" -l "$WORK/pg.log" \
        -o "-k $WORK/pg -h 127.0.0.1 -p $PG_PORT" start >/dev/null
    DATABASE="database = \"postgres://bty@127.0.0.1:$PG_PORT/postgres\"
session_secret = \"bench-session-secret-0123456789abcdef\""
fi

mkdir -p "$WORK/state" "$WORK/boot"
echo kernel >"$WORK/boot/bty-netboot-x86_64.vmlinuz"
echo initrd >"$WORK/boot/bty-netboot-x86_64.initrd"
cat >"$WORK/catalog.toml" <<TOML
version = 1
[[images]]
name = "debian-12"
src = "https://images.example/debian-12.img.zst"
TOML
cat >"$WORK/bty.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
state_dir = "$WORK/state"
$DATABASE
[boot]
dir = "$WORK/boot"
[images]
catalog = "$WORK/catalog.toml"
[admin]
password = "$PW"
TOML
RUST_LOG=warn "$BIN" --config "$WORK/bty.toml" >"$WORK/web.log" 2>&1 &
pids+=($!)
wait_http "$BASE/healthz"

# The same N machines both ways: a flash mode with image and disk, a name
# and two labels (every table a PUT writes is written).
mac() { printf '52:54:00:be:%02x:%02x' $(($1 >> 8)) $(($1 & 255)); }
{
    echo "mac,name,boot_mode,image,target_disk_serial,sanboot_drive,labels"
    for i in $(seq 0 $((N - 1))); do
        echo "$(mac "$i"),node-$i,bty-flash-once,debian-12,DISK$i,,rack$((i % 8));bench"
    done
} >"$WORK/machines.csv"
{
    for i in $(seq 0 $((N - 1))); do
        echo "url = \"$BASE/api/machines/$(mac "$i")\""
        echo "user = \"bty-lab:$PW\""
        echo "request = \"PUT\""
        echo "header = \"content-type: application/json\""
        echo "data = \"{\\\"name\\\":\\\"node-$i\\\",\\\"boot_mode\\\":\\\"bty-flash-once\\\",\\\"image\\\":\\\"debian-12\\\",\\\"target_disk_serial\\\":\\\"DISK$i\\\",\\\"labels\\\":[\\\"rack$((i % 8))\\\",\\\"bench\\\"]}\""
        echo "output = \"/dev/null\""
        echo "write-out = \"%{http_code}\\\\n\""
        [[ $i -lt $((N - 1)) ]] && echo "next"
    done
} >"$WORK/puts.curl"
{
    for i in $(seq 0 $((N - 1))); do
        echo "url = \"$BASE/api/machines/$(mac "$i")\""
        echo "user = \"bty-lab:$PW\""
        echo "request = \"DELETE\""
        echo "output = \"/dev/null\""
        [[ $i -lt $((N - 1)) ]] && echo "next"
    done
} >"$WORK/deletes.curl"

count() { curl -fsS -u "bty-lab:$PW" "$BASE/api/machines" | grep -o '"mac":' | wc -l; }
purge() {
    # `next` resets options: each block of the config carries its login.
    curl -sS -K "$WORK/deletes.curl" >/dev/null
    [[ $(count) == 0 ]] || { echo "purge left machines" >&2; exit 1; }
}

declare -a T_IMPORT T_PUT
for r in $(seq 1 "$RUNS"); do
    echo "== run $r: import of $N in one request"
    t0=$(now_ns)
    code=$(curl -sS -o "$WORK/report.json" -w '%{http_code}' -u "bty-lab:$PW" \
        -H 'content-type: text/csv' --data-binary "@$WORK/machines.csv" "$BASE/api/machines/import")
    t1=$(now_ns)
    [[ $code == 200 ]] || { echo "import answered $code: $(head -c 300 "$WORK/report.json")" >&2; exit 1; }
    grep -q "\"created\":$N" "$WORK/report.json" || { echo "import did not create $N" >&2; exit 1; }
    T_IMPORT+=($(((t1 - t0) / 1000000)))
    purge
    echo "== run $r: $N PUTs one after another"
    t0=$(now_ns)
    codes=$(curl -sS -K "$WORK/puts.curl")
    t1=$(now_ns)
    ok=$(grep -c '^201$' <<<"$codes" || true)
    [[ $ok == "$N" ]] || { echo "only $ok of $N PUTs answered 201" >&2; exit 1; }
    [[ $(count) == "$N" ]] || { echo "PUTs did not leave $N machines" >&2; exit 1; }
    T_PUT+=($(((t1 - t0) / 1000000)))
    purge
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
MI=$(median "${T_IMPORT[@]}")
MP=$(median "${T_PUT[@]}")
{
    echo "registering $N machines on bty-web ($DB), $(date -u +%FT%TZ), $(nproc) cores, $RUNS runs, median"
    printf '%-34s %10s   %s\n' way ms "runs (ms)"
    printf '%-34s %10s   %s\n' "POST /api/machines/import (1 CSV)" "$MI" "${T_IMPORT[*]}"
    printf '%-34s %10s   %s\n' "$N x PUT /api/machines/{mac}" "$MP" "${T_PUT[*]}"
    awk -v i="$MI" -v p="$MP" -v n="$N" 'BEGIN {
        printf "ratio PUTs/import = %.1fx; import %.0f machines/s, PUTs %.0f machines/s\n",
            p / (i > 0 ? i : 1), n * 1000 / (i > 0 ? i : 1), n * 1000 / (p > 0 ? p : 1) }'
} | tee "$OUT/machines-import-$DB.txt"
