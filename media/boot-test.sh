#!/bin/bash
# Boot the netboot environment in qemu (TCG) with user networking, a
# virtio disk with serial=BTYTEST and a decoy disk, against
# media/plan-server.py on 127.0.0.1; check the agent flashed the disk.
#   media/boot-test.sh [--media DIR] [--format img|img.zst] [--append "EXTRA CMDLINE"]
# Without --media, the media of `${BTY_LAB:-bty-lab} media build` (built
# or taken from bty-lab's cache). The serial log and the reports are left
# in ${TMPDIR:-/tmp}/bty-boot-test.*.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
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
python3 "$here/plan-server.py" --listen 127.0.0.1:0 --port-file "$work/port" --image "$work/serve" \
    --format "$format" --mac "$mac" --log "$work/reports.jsonl" --advertise "http://10.0.2.2:PORT" &
srv=$!
for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")

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
cp "$work/reports.jsonl" "$logs.reports.jsonl" 2>/dev/null || true

fail() { echo "boot-test: FAIL: $*" >&2; tail -40 "$work/serial.log" >&2; exit 1; }
grep -q "bty: flash complete; rebooting" "$work/serial.log" || fail "no 'flash complete' on the serial console"
cmp -n $((64 << 20)) "$work/image.img" "$work/disk.img" || fail "disk bytes differ from the image"
cmp -n $((1 << 20)) /dev/zero "$work/decoy.img" || fail "the decoy disk was written"
grep -q '"kind": "done"' "$work/reports.jsonl" || fail "no done report"
[ "$(grep -c '"kind": "done"' "$work/reports.jsonl")" = 1 ] || fail "done reported more than once"
agent_at=$(sed -n 's/.*starting agent, uptime \([0-9.]*\)s.*/\1/p' "$work/serial.log" | head -1)
printf 'boot-test: OK (%s): kernel start -> agent start %ss (guest uptime, TCG); qemu start -> flashed + reboot %.1fs\n' \
    "$format" "$agent_at" "$(echo "$end - $start" | bc)"
