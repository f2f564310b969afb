#!/usr/bin/env bash
# `bty-lab backup` and `bty-lab restore` of a lab with NMACHINES machines
# (two labels each) and NEVENTS events (issue 16), side by side in one run
# with the by-hand way an operator would do it without them:
#
#   backup   bty-lab backup DIR --out F, while `bty-lab serve` runs on DIR
#   peer     sqlite3 .backup of both databases (the consistent way to copy
#            a live SQLite file), then tar | zstd -3 of the copies
#   restore  bty-lab restore F DIR2 (serve stopped): every member checked
#            against the manifest's sha256, the schema checked, open cycles
#            failed, files moved in with the owner and mode they replace
#   peer     zstd -d | tar -x, then mv of both databases into place (no
#            check at all)
#
#   bench/backup.sh     # NMACHINES=10000 NEVENTS=100000 RUNS=3
#
# The lab is written straight into bty-web's schema (sqlite3) with serve
# stopped, as months of PXE contacts would have left it, then serve runs
# again for the backups. Times are the median of RUNS. Needs: cargo,
# sqlite3, zstd, curl, python3. Everything listens on 127.0.0.1 only.
# Output: bench/out/backup.txt.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/bench/out
WORK=$(mktemp -d /tmp/bty-backup-bench.XXXXXX)
NMACHINES=${NMACHINES:-10000}
NEVENTS=${NEVENTS:-100000}
RUNS=${RUNS:-3}
PW=bench-pw
P_WEB=${P_WEB:-18621}
P_CACHE=${P_CACHE:-18622}
mkdir -p "$OUT"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

for t in sqlite3 zstd curl python3; do
    command -v "$t" >/dev/null || { echo "$t is not installed"; exit 1; }
done

echo "== building bty-lab (release)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/targets/web}
(cd "$ROOT" && cargo build --release -p bty-lab -q)
# .cargo/config.toml names the build target, so the binary is under it.
BIN=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/bty-lab
[[ -x $BIN ]] || BIN=$CARGO_TARGET_DIR/release/bty-lab

# Any bytes do for the netboot media: nothing boots here.
mkdir -p "$WORK/media"
echo kernel >"$WORK/media/bty-netboot-x86_64.vmlinuz"
echo initrd >"$WORK/media/bty-netboot-x86_64.initrd"

serve_pid=
start_serve() { # data dir
    echo "$PW" | RUST_LOG=warn "$BIN" serve --password-stdin --data-dir "$1" \
        --port-web "$P_WEB" --port-cache "$P_CACHE" --netboot "$WORK/media" \
        >>"$WORK/serve.log" 2>&1 &
    serve_pid=$!
    pids+=("$serve_pid")
    for _ in $(seq 1 300); do
        curl -fs -o /dev/null "http://127.0.0.1:$P_WEB/healthz" && return 0
        sleep 0.1
    done
    echo "serve did not start:"; tail -20 "$WORK/serve.log"; exit 1
}
stop_serve() {
    kill "$serve_pid"
    wait "$serve_pid" 2>/dev/null || true
}
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
mib() { awk -v b="$1" 'BEGIN{printf "%.1f MiB", b/1048576}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2fx", a/b}'; }

A=$WORK/a
echo "== a lab of $NMACHINES machines and $NEVENTS events"
start_serve "$A"
stop_serve
DB=$A/web/state.db
[[ -f $DB ]] || { echo "no $DB: has serve's layout changed?"; exit 1; }
python3 - "$DB" "$NMACHINES" "$NEVENTS" <<'PY'
import sqlite3, sys
db, n, ne = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = sqlite3.connect(db)
ts = "2026-11-01T08:00:00Z"
def mac(i): return "52:54:02:%02x:%02x:%02x" % (i >> 16 & 255, i >> 8 & 255, i & 255)
with c:
    c.executemany(
        "INSERT INTO machines (mac, name, boot_mode, target_disk_serial, last_seen_at, "
        "last_seen_ip, created_at, updated_at) VALUES (?, ?, 'ipxe-exit', ?, ?, ?, ?, ?)",
        ((mac(i), f"rack{i // 40:03}-node{i % 40:02}", f"SERIAL{i:08}", ts,
          f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", ts, ts) for i in range(n)))
    c.executemany("INSERT INTO machine_labels (mac, label) VALUES (?, ?)",
                  ((mac(i), l) for i in range(n) for l in (f"rack{i // 40:03}", "lab")))
    c.executemany(
        "INSERT INTO events (ts, kind, mac, summary, details) VALUES (?, 'pxe.offered', ?, ?, ?)",
        ((ts, mac(j % n), f"offered ipxe-exit to {mac(j % n)}",
          '{"ip":"10.0.%d.%d","mode":"ipxe-exit","arch":"x86_64-efi"}' % (j >> 8 & 255, j & 255))
         for j in range(ne)))
PY
start_serve "$A"
got=$(curl -fsS -u "bty-lab:$PW" "http://127.0.0.1:$P_WEB/api/machines" \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[[ $got == "$NMACHINES" ]] || { echo "serve lists $got machines, wanted $NMACHINES"; exit 1; }
db_size=$(stat -c %s "$DB")

echo "== backup while serve runs (x$RUNS), and the by-hand peer"
bt=() pt=()
for r in $(seq 1 "$RUNS"); do
    rm -f "$WORK/b.tar.zst"
    t0=$(now)
    "$BIN" backup "$A" --out "$WORK/b.tar.zst" >"$WORK/backup.log" 2>&1 \
        || { cat "$WORK/backup.log"; exit 1; }
    bt+=("$(secs "$t0" "$(now)")")
    rm -rf "$WORK/peer" "$WORK/p.tar.zst"
    mkdir -p "$WORK/peer/web" "$WORK/peer/withcache"
    t0=$(now)
    sqlite3 "$DB" ".backup '$WORK/peer/web/state.db'"
    sqlite3 "$A/withcache/withcache.db" ".backup '$WORK/peer/withcache/withcache.db'"
    tar -C "$WORK/peer" -cf - web withcache | zstd -q -3 -o "$WORK/p.tar.zst"
    pt+=("$(secs "$t0" "$(now)")")
done
b_size=$(stat -c %s "$WORK/b.tar.zst")
p_size=$(stat -c %s "$WORK/p.tar.zst")
stop_serve

echo "== restore into a fresh serve dir (x$RUNS), and the by-hand peer"
R=$WORK/r
start_serve "$R"
stop_serve
rt=() qt=()
for r in $(seq 1 "$RUNS"); do
    t0=$(now)
    "$BIN" restore "$WORK/b.tar.zst" "$R" >"$WORK/restore.log" 2>&1 \
        || { cat "$WORK/restore.log"; exit 1; }
    rt+=("$(secs "$t0" "$(now)")")
    # restore keeps what it replaced beside the data; the bench does not.
    rm -f "$R"/web/state.db.pre-restore-* "$R"/withcache/withcache.db.pre-restore-*
    rm -rf "$WORK/q" && mkdir -p "$WORK/q/data/web" "$WORK/q/data/withcache"
    t0=$(now)
    zstd -q -dc "$WORK/p.tar.zst" | tar -C "$WORK/q" -xf -
    mv "$WORK/q/web/state.db" "$WORK/q/data/web/state.db"
    mv "$WORK/q/withcache/withcache.db" "$WORK/q/data/withcache/withcache.db"
    qt+=("$(secs "$t0" "$(now)")")
done
start_serve "$R"
got=$(curl -fsS -u "bty-lab:$PW" "http://127.0.0.1:$P_WEB/api/machines" \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
stop_serve
[[ $got == "$NMACHINES" ]] || { echo "the restored serve lists $got machines, wanted $NMACHINES"; exit 1; }
events=$(sqlite3 "$R/web/state.db" "SELECT count(*) FROM events")
[[ $events -ge $NEVENTS ]] || { echo "the restored db holds $events events, wanted $NEVENTS"; exit 1; }

b=$(median "${bt[@]}") p=$(median "${pt[@]}") r=$(median "${rt[@]}") q=$(median "${qt[@]}")
{
    echo "# bench/backup.sh $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, release build"
    echo "# $NMACHINES machines (2 labels each), $NEVENTS events; state.db $(mib "$db_size"); median of $RUNS"
    printf '%-44s %8s %12s\n' "" "seconds" "archive"
    printf '%-44s %8s %12s\n' "bty-lab backup (serve running)" "$b" "$(mib "$b_size")"
    printf '%-44s %8s %12s\n' "peer: sqlite3 .backup x2 + tar | zstd -3" "$p" "$(mib "$p_size")"
    printf '%-44s %8s\n' "bty-lab restore (checked, cycles failed)" "$r"
    printf '%-44s %8s\n' "peer: zstd -d | tar -x + mv (no check)" "$q"
    echo "backup: bty-lab takes $(ratio "$b" "$p") the peer's time; restore: $(ratio "$r" "$q")"
    echo "restored serve lists $got machines and holds $events events"
} | tee "$OUT/backup.txt"
