#!/usr/bin/env bash
# Benchmark: the same file served by nginx (sendfile on), by the Python
# withcache 0.13.3 and by this withcache, with curl single-stream and 16
# concurrent streams; plus 32 concurrent cold-miss clients vs one plain
# fetch of the origin. Everything runs on 127.0.0.1.
#
# Needs: nginx-light, curl, python3-venv, cargo. PyPI for the peer
# (pip install withcache==0.13.3, cached in bench/out/withcache/venv).
#
# Knobs (env): SIZE_MB (2048), STREAMS (16), RUNS (5 single-stream rounds),
# CRUNS (2 rounds of STREAMS concurrent streams), COLD_MB (256), COLD_CLIENTS (32), COLD_RATE (nginx
# limit_rate for the cold origin, default 64m = 64 MiB/s per connection:
# a WAN-like origin; "0" = unlimited), SKIP_PY=1 to skip the Python peer.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out="$root/bench/out/withcache"
SIZE_MB=${SIZE_MB:-2048}
STREAMS=${STREAMS:-16}
RUNS=${RUNS:-5}
CRUNS=${CRUNS:-2}
COLD_MB=${COLD_MB:-256}
COLD_CLIENTS=${COLD_CLIENTS:-32}
COLD_RATE=${COLD_RATE:-64m}
P_NGINX=${P_NGINX:-18180}
P_COLD=${P_COLD:-18181}
P_PY=${P_PY:-18182}
P_RS=${P_RS:-18183}
P_RS_COLD=${P_RS_COLD:-18184}

mkdir -p "$out/www" "$out/logs"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -f "$out/nginx.pid" ]; then kill "$(cat "$out/nginx.pid")" 2>/dev/null || true; fi
}
trap cleanup EXIT

log() { printf '%s\n' "$*" >&2; }

# ---- data: random blocks, not sparse ----------------------------------------
make_file() { # path size_mb
    local path=$1 mb=$2
    if [ -f "$path" ] && [ "$(stat -c %s "$path")" -eq $((mb << 20)) ]; then return; fi
    log "making $path ($mb MiB of random blocks)"
    local blk="$out/block.bin"
    [ -f "$blk" ] || head -c $((64 << 20)) /dev/urandom >"$blk"
    : >"$path.tmp"
    local left=$mb
    while [ "$left" -ge 64 ]; do cat "$blk" >>"$path.tmp"; left=$((left - 64)); done
    [ "$left" -gt 0 ] && head -c $((left << 20)) "$blk" >>"$path.tmp"
    mv "$path.tmp" "$path"
}
make_file "$out/www/image.bin" "$SIZE_MB"
make_file "$out/www/cold.bin" "$COLD_MB"
SIZE=$(stat -c %s "$out/www/image.bin")
COLD_SIZE=$(stat -c %s "$out/www/cold.bin")

# ---- nginx: the origin and the reference ------------------------------------
rate_line=""
[ "$COLD_RATE" != "0" ] && rate_line="limit_rate $COLD_RATE;"
cat >"$out/nginx.conf" <<EOF
worker_processes 2;
pid $out/nginx.pid;
error_log $out/logs/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 30;
    default_type application/octet-stream;
    server { listen 127.0.0.1:$P_NGINX; root $out/www; }
    server { listen 127.0.0.1:$P_COLD; root $out/www; $rate_line }
}
EOF
nginx -c "$out/nginx.conf" -p "$out" -g 'daemon on;'
ORIGIN="http://127.0.0.1:$P_NGINX/image.bin"
COLD_ORIGIN="http://127.0.0.1:$P_COLD/cold.bin"
b64() { python3 -c 'import base64,sys;print(base64.urlsafe_b64encode(sys.argv[1].encode()).decode().rstrip("="))' "$1"; }

wait_http() { # url
    for _ in $(seq 1 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
    log "timed out waiting for $1"; return 1
}
wait_catalog() { # base name
    for _ in $(seq 1 1200); do
        if curl -fs "$1/catalog" | python3 -c 'import json,sys;d=json.load(sys.stdin);sys.exit(0 if any(e["name"]==sys.argv[1] for e in d["entries"]) else 1)' "$2"; then return 0; fi
        sleep 0.25
    done
    log "timed out waiting for $2 to be cached at $1"; return 1
}

# ---- this withcache ---------------------------------------------------------
# The origins are on 127.0.0.1, which withcache refuses by default (issue
# 12): WITHCACHE_ALLOW_PRIVATE_ORIGINS=1 below is the documented opt-out.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
(cd "$root" && cargo build --release -p withcache >&2)
WC_BIN="$CARGO_TARGET_DIR/release/withcache"
rm -rf "$out/rs-data" "$out/rs-cold"
env -u WITHCACHE_ADMIN_PASSWORD -u WITHCACHE_ADMIN_PASSWORD_HASH WITHCACHE_LOG=warn WITHCACHE_ALLOW_PRIVATE_ORIGINS=1 \
    "$WC_BIN" --listen 127.0.0.1:$P_RS --data-dir "$out/rs-data" >"$out/logs/rs.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$P_RS/healthz"
curl -fs -X POST -H 'content-type: application/json' \
    -d "{\"name\":\"image\",\"src\":\"$ORIGIN\"}" "http://127.0.0.1:$P_RS/catalog/entries" >/dev/null
curl -fs -X POST "http://127.0.0.1:$P_RS/catalog/entries/image/download" >/dev/null
wait_catalog "http://127.0.0.1:$P_RS" image
RS_URL="http://127.0.0.1:$P_RS/b/$(b64 "$ORIGIN")/image.bin"

# ---- the Python withcache 0.13.3 --------------------------------------------
PY_URL=""
if [ "${SKIP_PY:-0}" != 1 ]; then
    if [ ! -x "$out/venv/bin/withcache-server" ]; then
        python3 -m venv "$out/venv"
        "$out/venv/bin/pip" install -q "withcache==0.13.3" >&2
    fi
    # Pin its catalog to a local file so it never reaches for the internet.
    printf 'version = 1\n[[images]]\nname = "image"\nsrc = "%s"\nformat = "img"\n' "$ORIGIN" \
        >"$out/www/catalog.toml"
    rm -rf "$out/py-data"
    env -u WITHCACHE_ADMIN_PASSWORD WITHCACHE_CATALOG_URL="http://127.0.0.1:$P_NGINX/catalog.toml" \
        "$out/venv/bin/withcache-server" --host 127.0.0.1 --port $P_PY --data-dir "$out/py-data" \
        >"$out/logs/py.log" 2>&1 &
    pids+=($!)
    wait_http "http://127.0.0.1:$P_PY/healthz"
    # The pinned catalog loads in the background; (re)add the entry if needed.
    sleep 1
    curl -s -X POST -H 'content-type: application/json' \
        -d "{\"name\":\"image\",\"src\":\"$ORIGIN\"}" "http://127.0.0.1:$P_PY/catalog/entries" >/dev/null || true
    curl -fs -X POST "http://127.0.0.1:$P_PY/catalog/entries/image/download" >/dev/null
    wait_catalog "http://127.0.0.1:$P_PY" image
    PY_URL="http://127.0.0.1:$P_PY/b/$(b64 "$ORIGIN")/image.bin"
fi

# ---- measurements -----------------------------------------------------------
# Warm the page cache so every server reads from memory.
cat "$out/www/image.bin" >/dev/null
cat "$out"/rs-data/blobs/sha256/* >/dev/null
[ -n "$PY_URL" ] && cat "$out"/py-data/blobs/* >/dev/null 2>&1 || true

one() { # url -> GB/s of one transfer
    local t
    t=$(curl -fs -o /dev/null -w '%{time_total}' "$1")
    python3 -c "import sys;print($SIZE/float(sys.argv[1])/1e9)" "$t"
}
concurrent() { # url n -> aggregate GB/s (total bytes / wall time)
    local start end i cp=()
    start=$(date +%s.%N)
    for i in $(seq 1 "$2"); do curl -fs -o /dev/null "$1" & cp+=($!); done
    for i in "${cp[@]}"; do wait "$i"; done
    end=$(date +%s.%N)
    python3 -c "print($2*$SIZE/($end-$start)/1e9)"
}
ratio() { python3 -c "import sys;print('%.2f' % (float(sys.argv[1])/float(sys.argv[2])))" "$1" "$2"; }
stat2() { # "v1 v2 ..." -> "best median"
    python3 -c "import sys,statistics as s;v=[float(x) for x in sys.argv[1:]];print(max(v), s.median(v))" $1
}

servers=(nginx withcache-rs)
declare -A URL=([nginx]=$ORIGIN [withcache-rs]=$RS_URL)
if [ -n "$PY_URL" ]; then servers+=(withcache-py); URL[withcache-py]=$PY_URL; fi
# Rounds are interleaved (nginx, rs, py, nginx, ...) so load drift on a
# shared machine hits every server alike; best and median are reported.
log "single stream: $RUNS interleaved rounds; $STREAMS streams: $CRUNS rounds; $SIZE bytes each"
declare -A SV CV S SM C CM
for r in $(seq 1 "$RUNS"); do
    for who in "${servers[@]}"; do SV[$who]="${SV[$who]:-} $(one "${URL[$who]}")"; done
done
for r in $(seq 1 "$CRUNS"); do
    for who in "${servers[@]}"; do CV[$who]="${CV[$who]:-} $(concurrent "${URL[$who]}" "$STREAMS")"; done
done
for who in "${servers[@]}"; do
    read -r S[$who] SM[$who] <<<"$(stat2 "${SV[$who]}")"
    read -r C[$who] CM[$who] <<<"$(stat2 "${CV[$who]}")"
done

# ---- cold misses: COLD_CLIENTS clients on an entry nobody fetched yet -------
log "cold: one plain fetch of $COLD_SIZE bytes from the origin (limit_rate ${COLD_RATE})"
t_plain=$(curl -fs -o /dev/null -w '%{time_total}' "$COLD_ORIGIN")
env -u WITHCACHE_ADMIN_PASSWORD -u WITHCACHE_ADMIN_PASSWORD_HASH WITHCACHE_LOG=warn WITHCACHE_ALLOW_PRIVATE_ORIGINS=1 \
    "$WC_BIN" --listen 127.0.0.1:$P_RS_COLD --data-dir "$out/rs-cold" >"$out/logs/rs-cold.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$P_RS_COLD/healthz"
curl -fs -X POST -H 'content-type: application/json' \
    -d "{\"name\":\"cold\",\"src\":\"$COLD_ORIGIN\"}" "http://127.0.0.1:$P_RS_COLD/catalog/entries" >/dev/null
COLD_URL="http://127.0.0.1:$P_RS_COLD/b/$(b64 "$COLD_ORIGIN")/cold.bin"
want=$(sha256sum "$out/www/cold.bin" | cut -d' ' -f1)
# Bodies go to /dev/null (writing 32 copies would measure the disk); curl
# -f exits non-zero on a short body, and the sizes are checked.
rm -rf "$out/cold-sizes"; mkdir -p "$out/cold-sizes"
start=$(date +%s.%N)
cold_pids=()
for i in $(seq 1 "$COLD_CLIENTS"); do
    curl -fs -o /dev/null -w '%{size_download}' "$COLD_URL" >"$out/cold-sizes/$i" & cold_pids+=($!)
done
fails=0
for job in "${cold_pids[@]}"; do wait "$job" || fails=$((fails + 1)); done
end=$(date +%s.%N)
t_cold=$(python3 -c "print($end-$start)")
bad=0
for f in "$out"/cold-sizes/*; do [ "$(cat "$f")" = "$COLD_SIZE" ] || bad=$((bad + 1)); done
rm -rf "$out/cold-sizes"
sleep 0.5
stored=$(sha256sum "$out"/rs-cold/blobs/sha256/* | cut -d' ' -f1)
origin_gets=$(curl -fs "http://127.0.0.1:$P_RS_COLD/metrics" | awk '/^withcache_downloads_started_total/{print $2}')

# ---- report -----------------------------------------------------------------
{
    echo "withcache benchmark $(date -u +%FT%TZ) on $(nproc) cores; file $SIZE bytes (random, not sparse)"
    echo "GB/s, best of rounds (median in brackets); ratios are best/best and median/median"
    printf '%-13s %20s %14s %22s %14s\n' server "1 stream" "x nginx" "$STREAMS streams" "x nginx"
    for who in "${servers[@]}"; do
        printf '%-13s %8.2f [%8.2f] %6s [%5s] %10.2f [%8.2f] %6s [%5s]\n' "$who" \
            "${S[$who]}" "${SM[$who]}" "$(ratio "${S[$who]}" "${S[nginx]}")" "$(ratio "${SM[$who]}" "${SM[nginx]}")" \
            "${C[$who]}" "${CM[$who]}" "$(ratio "${C[$who]}" "${C[nginx]}")" "$(ratio "${CM[$who]}" "${CM[nginx]}")"
    done
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "cold: $COLD_CLIENTS clients x $COLD_SIZE bytes through withcache-rs: ${t_cold}s; one plain origin fetch: ${t_plain}s; ratio $(ratio "$t_cold" "$t_plain") (origin limit_rate $COLD_RATE)"
    echo "cold: origin downloads started: $origin_gets; failed clients: $fails; wrong sizes: $bad; stored sha256 ok: $([ "$stored" = "$want" ] && echo yes || echo NO)"
} | tee "$out/report.txt"
