#!/usr/bin/env bash
# UEFI netboot, Secure Boot off, side by side in one run: the signed chain
# every UEFI PXE machine now takes (shim -> GRUB -> kernel and initrd over
# TFTP, relayed by bty-tftp to bty-web) against the iPXE chain it replaced
# (snponly.efi by HTTP Boot -> iPXE -> kernel and initrd over HTTP). Issue
# 14 asks whether sending every UEFI machine down the signed path costs
# anything measurable; this is the measurement.
#
# Runs two e2e tests on the same machine, the same media and the same
# documented DHCP setup, and extracts their timing lines:
#   uefi_flash_once_then_the_esp_boots              (OVMF PXE: shim, GRUB)
#   uefi_http_boot_flash_once_then_the_esp_boots    (OVMF HTTP Boot: iPXE)
# each a flash-once of a 6 MiB image, the reboot and the flashed disk's
# boot. Prints power-on -> agent, -> flashed, -> booted from disk, and
# iPXE/signed ratios (> 1: the signed chain is faster).
#
# Usage: bench/uefi-netboot.sh [RUNS]        (default 1)
# Needs: root, the e2e packages (docs/testing-e2e.md). The bty-lab is
# $BTY_LAB_README_BIN, else the README's `cargo install --locked --path .`
# into target/readme. Output: bench/out/uefi-netboot.txt
#
# The VMs run under TCG (qemu's software CPU; see bench/vm-flash.sh): TFTP
# and HTTP both cost CPU in the guest's firmware, so on hardware the
# absolute figures and maybe the ratio differ; the output says so.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out
mkdir -p "$out"
runs=${1:-1}
if [ -z "${BTY_LAB_README_BIN:-}" ]; then
  cargo install --locked --path . --root target/readme >&2
  export BTY_LAB_README_BIN=$PWD/target/readme/bin/bty-lab
fi
export BTY_LAB_STATIC_BIN=${BTY_LAB_STATIC_BIN:-$BTY_LAB_README_BIN}
{
  echo "# bench/uefi-netboot.sh $(date -u +%FT%TZ) $(nproc) cores, accel: tcg (qemu software CPU)"
  echo "# bty-lab: $BTY_LAB_README_BIN ($("$BTY_LAB_README_BIN" --version)); OVMF, Secure Boot off, 6 MiB image"
  echo "# run | chain | power-on -> agent s | -> flashed s | -> booted from disk s"
} >"$out/uefi-netboot.txt"
declare -A sum ratio
for run in $(seq "$runs"); do
  for t in uefi_flash_once_then_the_esp_boots uefi_http_boot_flash_once_then_the_esp_boots; do
    log="$out/uefi-netboot-$t-$run.log"
    echo "run $run: $t (TCG: about a minute)..." >&2
    if ! BTY_REQUIRE_TOOLS=1 cargo test -p bty-e2e --test flash "$t" -- --exact --nocapture >"$log" 2>&1; then
      echo "$t failed; see $log" >&2
      exit 1
    fi
    line=$(grep -m1 'bty-e2e timing:' "$log") || { echo "no timing line in $log" >&2; exit 1; }
    read -r a b c < <(sed -E 's/.*agent ([0-9.]+) s -> flashed ([0-9.]+) s -> booted from disk ([0-9.]+) s.*/\1 \2 \3/' <<<"$line")
    chain=$([ "$t" = uefi_flash_once_then_the_esp_boots ] && echo signed || echo ipxe)
    printf '%5s | %-6s | %20s | %12s | %20s\n' "$run" "$chain" "$a" "$b" "$c" >>"$out/uefi-netboot.txt"
    sum[$chain.a]=$(awk -v x="${sum[$chain.a]:-0}" -v y="$a" 'BEGIN { print x + y }')
    sum[$chain.b]=$(awk -v x="${sum[$chain.b]:-0}" -v y="$b" 'BEGIN { print x + y }')
    sum[$chain.c]=$(awk -v x="${sum[$chain.c]:-0}" -v y="$c" 'BEGIN { print x + y }')
  done
done
for k in a b c; do
  ratio[$k]=$(awk -v i="${sum[ipxe.$k]}" -v s="${sum[signed.$k]}" 'BEGIN { printf "%.2f", (s > 0 ? i / s : 0) }')
done
echo "# iPXE/signed (> 1: the signed chain is faster): agent ${ratio[a]}x, flashed ${ratio[b]}x, booted from disk ${ratio[c]}x" >>"$out/uefi-netboot.txt"
cat "$out/uefi-netboot.txt"
