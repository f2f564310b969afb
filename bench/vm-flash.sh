#!/usr/bin/env bash
# VM power-on -> flashed -> booted-from-disk seconds for one BIOS flash
# (issue 6's benchmark line; target < 30 s for 256 MiB under KVM).
#
# Runs the e2e test readme_serve_bios_one_bootfile_flashes_and_boots with
# BTY_E2E_IMAGE_MIB set: the README's path, whole and real (the bty-lab the
# README builds, `bty-lab serve --bind ... --tftp-port 69` with no --netboot, so it
# brings its own netboot media; `bty-lab image add`; SeaBIOS, qemu's iPXE
# ROM, DHCP handing out undionly.kpxe alone, bty-tftp's chain script,
# withcache, the agent writing a virtio disk, reboot, sanboot) and
# extracts the timing line it prints.
#
# Usage: bench/vm-flash.sh [MiB ...]          (default: 6 256)
# Needs: root, the e2e packages (docs/testing-e2e.md). The bty-lab is
# $BTY_LAB_README_BIN, else the README's `cargo install --locked --path .`
# into target/readme (a release build: minutes the first time).
# Output: bench/out/vm-flash.txt
#
# The VM always runs under TCG (qemu's software CPU): on this host a Linux
# kernel stalls under KVM (crates/bty-e2e/src/vm.rs), so the figures are
# TCG figures, several times slower than KVM would be; the output says so.
# There is no peer to run side by side: the Python bty has no VM flow that
# runs here.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out
mkdir -p "$out"
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(6 256)
if [ -z "${BTY_LAB_README_BIN:-}" ]; then
  cargo install --locked --path . --root target/readme >&2
  export BTY_LAB_README_BIN=$PWD/target/readme/bin/bty-lab
fi
echo "bty-lab: $BTY_LAB_README_BIN ($("$BTY_LAB_README_BIN" --version))" >&2
accel="tcg (qemu software CPU; /dev/kvm $([ -e /dev/kvm ] && echo present but not used: kernels stall under KVM here || echo absent))"
{
  echo "# bench/vm-flash.sh $(date -u +%FT%TZ) $(nproc) cores, accel: $accel"
  echo "# bty-lab: $BTY_LAB_README_BIN ($("$BTY_LAB_README_BIN" --version)), the README's build and path"
  echo "# image MiB | power-on -> flash script s | -> flashed s | -> booted from disk s | MiB / (flashed - script) s, kernel boot included"
} >"$out/vm-flash.txt"
for mib in "${sizes[@]}"; do
  log="$out/vm-flash-$mib.log"
  echo "flashing a $mib MiB image in a VM (TCG: minutes)..." >&2
  if ! BTY_E2E_IMAGE_MIB=$mib BTY_REQUIRE_TOOLS=1 cargo test -p bty-e2e --test flash \
      readme_serve_bios_one_bootfile_flashes_and_boots -- --exact --nocapture >"$log" 2>&1; then
    echo "the $mib MiB run failed; see $log" >&2
    exit 1
  fi
  line=$(grep -m1 'bty-e2e timing:' "$log") || { echo "no timing line in $log" >&2; exit 1; }
  # "... power-on -> flash script A s -> flashed B s -> booted from disk C s"
  read -r a b c < <(sed -E 's/.*flash script ([0-9.]+) s -> flashed ([0-9.]+) s -> booted from disk ([0-9.]+) s.*/\1 \2 \3/' <<<"$line")
  rate=$(awk -v m="$mib" -v a="$a" -v b="$b" 'BEGIN { d = b - a; printf "%.1f", (d > 0 ? m / d : 0) }')
  printf '%9s | %26s | %12s | %20s | %s\n' "$mib" "$a" "$b" "$c" "$rate" >>"$out/vm-flash.txt"
done
cat "$out/vm-flash.txt"
# The same figures as one line per size, power-on first.
while IFS='|' read -r mib a b c _; do
  case $mib in \#*) continue ;; esac
  printf 'image %s MiB: power-on -> flashed %s s -> booted from disk %s s (flash script at %s s)\n' \
    "$(echo $mib)" "$(echo $b)" "$(echo $c)" "$(echo $a)"
done <"$out/vm-flash.txt"
echo "target (issue 6): 256 MiB power-on -> booted from disk < 30 s under KVM; these are TCG figures"
