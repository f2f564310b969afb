#!/bin/bash
# Boot the netboot environment in qemu (TCG) with user networking, a
# virtio disk with serial=BTYTEST and a decoy disk, against
# a real bty-web on 127.0.0.1 (bty-dev-web, from the test kit, with the
# machine set to flash-once the image); check the agent flashed the disk
# and bty-web recorded one good flash.
#   media/boot-test.sh [--media DIR] [--format img|img.zst] [--append "EXTRA CMDLINE"]
# Without --media, the media of `${BTY_LAB:-bty-lab} media build` (built
# or taken from bty-lab's cache). bty-dev-web is $BTY_DEV_WEB, or built
# here (cargo build -p bty-testkit --features web --bin bty-dev-web). The
# serial log, bty-dev-web's output and the machine's events are left in
# ${TMPDIR:-/tmp}/bty-boot-test.*.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
out=""
format=img.zst
extra=""
while [ $# -gt 0 ]; do
    case "$1" in
        --media) out=$2; shift 2 ;;
        --format) format=$2; shift 2 ;;
        --append) extra=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
command -v qemu-system-x86_64 >/dev/null || { echo "skipping: qemu-system-x86_64 not installed"; exit 0; }
[ -n "$out" ] || out=$("${BTY_LAB:-bty-lab}" media build)
dev_web=${BTY_DEV_WEB:-}
if [ -z "$dev_web" ]; then
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
    cargo build -q -p bty-testkit --features web --bin bty-dev-web --manifest-path "$repo/Cargo.toml"
    dev_web="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/debug/bty-dev-web"
fi
work=$(mktemp -d)
cleanup() { [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mac=52:54:00:12:34:56

# a 64 MiB image: a marker sector, random data, zeroes
python3 - "$work/image.img" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    f.write(b"BTY-MARKER".ljust(512, b"\x55"))
    f.write(os.urandom(8 << 20))
    f.truncate(64 << 20)
PY
case "$format" in
    img) cp "$work/image.img" "$work/serve" ;;
    img.zst) zstd -q -3 "$work/image.img" -o "$work/serve" ;;
    *) echo "format $format not handled here" >&2; exit 2 ;;
esac
truncate -s 256M "$work/disk.img" "$work/decoy.img"
# bty-web, and the image served beside it at http://10.0.2.2:PORT/serve
# (the guest reaches the host's loopback as 10.0.2.2)
"$dev_web" serve --image "$work/serve" --format "$format" --mac "$mac" --serial BTYTEST \
    --mode bty-flash-once --guest-host 10.0.2.2 --port-file "$work/port" > "$work/server.log" 2>&1 &
srv=$!
for _ in $(seq 300); do [ -s "$work/port" ] && break; sleep 0.1; done
[ -s "$work/port" ] || { cat "$work/server.log" >&2; echo "boot-test: bty-dev-web did not start" >&2; exit 1; }
port=$(cat "$work/port")
# qemu boots the kernel directly (no iPXE): make the PXE contact and the
# kernel fetch iPXE would, from 127.0.0.1 as the guest appears too, so the
# agent gets its plan.
"$dev_web" arm --server "http://127.0.0.1:$port" --mac "$mac"

start=$(date +%s.%N)
timeout 300 qemu-system-x86_64 -accel tcg -m 1024 -smp 2 -display none -no-reboot \
    -kernel "$out/bty-netboot-x86_64.vmlinuz" -initrd "$out/bty-netboot-x86_64.initrd" \
    -append "console=tty0 console=ttyS0,115200 bty.server=http://10.0.2.2:$port bty.mac=$mac $extra" \
    -nic "user,model=virtio-net-pci,mac=$mac" \
    -drive "file=$work/disk.img,if=none,id=d0,format=raw" -device virtio-blk-pci,drive=d0,serial=BTYTEST \
    -drive "file=$work/decoy.img,if=none,id=d1,format=raw" -device virtio-blk-pci,drive=d1,serial=DECOY \
    -serial "file:$work/serial.log" || true
end=$(date +%s.%N)
logs="${TMPDIR:-/tmp}/bty-boot-test"
cp "$work/serial.log" "$logs.serial.log"
cp "$work/server.log" "$logs.server.log"
curl -s "http://127.0.0.1:$port/api/events?mac=$mac&limit=500" > "$logs.events.json" 2>/dev/null || true

fail() { echo "boot-test: FAIL: $*" >&2; tail -40 "$work/serial.log" >&2; exit 1; }
grep -q "bty: flash complete; rebooting" "$work/serial.log" || fail "no 'flash complete' on the serial console"
cmp -n $((64 << 20)) "$work/image.img" "$work/disk.img" || fail "disk bytes differ from the image"
cmp -n $((1 << 20)) /dev/zero "$work/decoy.img" || fail "the decoy disk was written"
# one cycle, closed done and ok by one done report, with the image's
# digest read back from the disk
"$dev_web" check --server "http://127.0.0.1:$port" --mac "$mac" \
    --disk-sha256 "$(sha256sum "$work/image.img" | cut -d' ' -f1)" || fail "bty-web did not record one good flash"
agent_at=$(sed -n 's/.*starting agent, uptime \([0-9.]*\)s.*/\1/p' "$work/serial.log" | head -1)
printf 'boot-test: OK (%s): kernel start -> agent start %ss (guest uptime, TCG); qemu start -> flashed + reboot %.1fs\n' \
    "$format" "$agent_at" "$(echo "$end - $start" | bc)"
