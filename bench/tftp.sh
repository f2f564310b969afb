#!/usr/bin/env bash
# Benchmark: a 1 MiB boot file fetched with atftp from tftpd-hpa and from
# bty-tftp (release build), side by side in one run:
#   1. loopback;
#   2. across a veth pair between two network namespaces this script makes;
#   3. the same through a delaying UDP relay (1 ms each way; the kernel has
#      no netem), where windowsize matters.
# Each case: plain (512-byte lock-step), blksize 1428, blksize 1428 +
# windowsize 8. Prints medians and tftpd-hpa/bty-tftp ratios (>1 = bty-tftp
# faster). Needs root, atftp, tftpd-hpa (in.tftpd), iproute2, python3.
# Output also goes to bench/out/tftp.txt.
set -euo pipefail

cd "$(dirname "$0")/.."
REPS=${REPS:-7}
DELAY_MS=${DELAY_MS:-1}
OUT=bench/out
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/bty-tftp-bench.XXXXXX)
chmod 755 "$WORK"
NS_C=btyb-tftp-c-$$
NS_S=btyb-tftp-s-$$
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del "$NS_C" 2>/dev/null || true
    ip netns del "$NS_S" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

for tool in atftp in.tftpd ip python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y atftp tftpd-hpa iproute2 python3)"; exit 1; }
done

BIN=${BTY_TFTP_BIN:-}
if [ -z "$BIN" ]; then
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
    cargo build --release -q -p bty-tftp
    BIN=$CARGO_TARGET_DIR/release/bty-tftp
fi

ROOT=$WORK/root
mkdir -p "$ROOT"
head -c 1048576 /dev/urandom > "$ROOT/ipxe.efi"
chmod 755 "$ROOT"; chmod 644 "$ROOT/ipxe.efi"

# start_servers NETNS-PREFIX ADDR HPA_PORT BTY_PORT
start_servers() {
    local pre=$1 addr=$2 hpa=$3 bty=$4
    # -L foreground, -s chroot to the root; tftpd-hpa's max blksize is 65464.
    $pre in.tftpd -L -a "$addr:$hpa" -s "$ROOT" &
    PIDS+=($!)
    RUST_LOG=warn $pre "$BIN" --listen "$addr:$bty" --root "$ROOT" &
    PIDS+=($!)
    sleep 0.5
}

# fetch PREFIX HOST PORT OPTIONS... → prints seconds
fetch() {
    local pre=$1 host=$2 port=$3; shift 3
    local args=()
    for o in "$@"; do args+=(--option "$o"); done
    local dst=$WORK/got.$$
    local t0 t1
    t0=$(date +%s%N)
    $pre atftp "${args[@]}" --get -r ipxe.efi -l "$dst" "$host" "$port" >/dev/null 2>&1
    t1=$(date +%s%N)
    cmp -s "$dst" "$ROOT/ipxe.efi" || { echo "corrupt transfer from $host:$port $*" >&2; exit 1; }
    rm -f "$dst"
    echo $(( (t1 - t0) / 1000 ))
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# run_case LABEL PREFIX HOST HPA_PORT BTY_PORT
run_case() {
    local label=$1 pre=$2 host=$3 hpa=$4 bty=$5
    local name opts
    for name in plain blksize1428 "blksize1428+windowsize8"; do
        case $name in
            plain) opts=() ;;
            blksize1428) opts=("blksize 1428") ;;
            *) opts=("blksize 1428" "windowsize 8") ;;
        esac
        local h=() b=() i
        for ((i = 0; i < REPS; i++)); do
            # Interleave the servers so machine drift hits both alike.
            h+=("$(fetch "$pre" "$host" "$hpa" "${opts[@]}")")
            b+=("$(fetch "$pre" "$host" "$bty" "${opts[@]}")")
        done
        local mh mb
        mh=$(printf '%s\n' "${h[@]}" | median)
        mb=$(printf '%s\n' "${b[@]}" | median)
        awk -v l="$label" -v n="$name" -v h="$mh" -v b="$mb" \
            'BEGIN { printf "%-26s %-24s %10.1f %10.1f %8.2fx\n", l, n, h / 1000, b / 1000, h / b }'
    done
}

{
echo "bty-tftp vs tftpd-hpa: 1 MiB file, atftp client, median of $REPS, ms"
echo "(ratio = tftpd-hpa time / bty-tftp time; >1 means bty-tftp is faster)"
echo "tftpd-hpa: $(in.tftpd -V 2>&1 | head -1)   bty-tftp: $BIN"
printf '%-26s %-24s %10s %10s %9s\n' path options tftpd-hpa bty-tftp ratio

# 1. Loopback.
start_servers "" 127.0.0.1 16901 16902
run_case loopback "" 127.0.0.1 16901 16902

# 2. veth between two namespaces: client in NS_C, servers in NS_S.
ip netns add "$NS_C"
ip netns add "$NS_S"
ip link add btyb-c$$ netns "$NS_C" type veth peer name btyb-s$$ netns "$NS_S"
ip -n "$NS_C" addr add 10.231.77.1/24 dev btyb-c$$
ip -n "$NS_S" addr add 10.231.77.2/24 dev btyb-s$$
for ns in "$NS_C" "$NS_S"; do
    ip -n "$ns" link set lo up
done
ip -n "$NS_C" link set btyb-c$$ up
ip -n "$NS_S" link set btyb-s$$ up
C="ip netns exec $NS_C"
S="ip netns exec $NS_S"
start_servers "$S" 10.231.77.2 69 6902
run_case veth "$C" 10.231.77.2 69 6902

# 3. veth + delaying relay in the client namespace, one per server.
$C python3 bench/tftp/relay.py --listen 127.0.0.1:7001 --upstream 10.231.77.2:69 --delay-ms "$DELAY_MS" &
PIDS+=($!)
$C python3 bench/tftp/relay.py --listen 127.0.0.1:7002 --upstream 10.231.77.2:6902 --delay-ms "$DELAY_MS" &
PIDS+=($!)
sleep 0.5
run_case "veth+${DELAY_MS}ms-each-way" "$C" 127.0.0.1 7001 7002
} | tee "$OUT/tftp.txt"
