#!/usr/bin/env bash
# A flash-once and three flash-always cycles against a running bty-web,
# with curl alone: the same requests iPXE and the bty agent make.
#
#   BTY_URL=http://127.0.0.1:8080 examples/curl-walkthrough.sh
#
# Environment (all optional):
#   BTY_URL        bty-web base URL            (http://127.0.0.1:8080)
#   BTY_USER       admin user                  (bty-lab)
#   BTY_PASSWORD   admin password; unset = the server runs in open mode
#   MAC            the pretend machine         (52:54:00:12:34:56)
#   IMAGE          a catalog entry name        (debian-12)
#   SERIAL         the target disk serial      (BTYTEST)
#   KERNEL         netboot kernel file name    (bty-netboot-x86_64.vmlinuz)
set -euo pipefail

BTY_URL=${BTY_URL:-http://127.0.0.1:8080}
BTY_USER=${BTY_USER:-bty-lab}
MAC=${MAC:-52:54:00:12:34:56}
IMAGE=${IMAGE:-debian-12}
SERIAL=${SERIAL:-BTYTEST}
KERNEL=${KERNEL:-bty-netboot-x86_64.vmlinuz}

auth=()
if [[ -n ${BTY_PASSWORD:-} ]]; then
    auth=(--user "$BTY_USER:$BTY_PASSWORD")
fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

# The operator binds the machine to an image and a disk.
put_machine() { # mode
    curl -fsS "${auth[@]}" -X PUT "$BTY_URL/api/machines/$MAC" \
        -H 'content-type: application/json' \
        -d "{\"boot_mode\":\"$1\",\"image\":\"$IMAGE\",\"target_disk_serial\":\"$SERIAL\"}"
    echo
}

# iPXE asks what to boot.
pxe() { curl -fsS "$BTY_URL/pxe/$MAC"; }

# One flash, as iPXE and the agent do it.
flash_cycle() {
    local script plan token
    script=$(pxe)
    echo "$script"
    [[ $script == *"kernel http://"*"bty.mac=$MAC"* ]] || fail "expected the flash chain"
    # iPXE fetches the netboot kernel with ?mac=: the cycle is "booted".
    curl -fsS -o /dev/null "$BTY_URL/boot/$KERNEL?mac=$MAC"
    # The agent takes its plan: the cycle is "flashing".
    plan=$(curl -fsS "$BTY_URL/pxe/$MAC/plan")
    echo "$plan"
    [[ $plan =~ \"token\":\"([0-9a-f]+)\" ]] || fail "no token in the plan"
    token=${BASH_REMATCH[1]}
    for done_bytes in 0 524288 1048576; do
        curl -fsS -X POST "$BTY_URL/pxe/$MAC/progress" -H 'content-type: application/json' \
            -d "{\"token\":\"$token\",\"bytes_done\":$done_bytes,\"bytes_total\":1048576,\"phase\":\"writing\",\"rate\":5e7}"
        echo
    done
    curl -fsS -X POST "$BTY_URL/pxe/$MAC/done" -H 'content-type: application/json' \
        -d "{\"token\":\"$token\",\"ok\":true,\"duration_s\":2.5}"
    echo
    # A replayed done is acknowledged and changes nothing.
    local again
    again=$(curl -fsS -X POST "$BTY_URL/pxe/$MAC/done" -H 'content-type: application/json' \
        -d "{\"token\":\"$token\",\"ok\":true}")
    [[ $again == *'"recorded":false'* ]] || fail "replayed done was recorded: $again"
}

expect_local() {
    local script
    script=$(pxe)
    echo "$script"
    [[ $script == *"sanboot --no-describe --drive"* ]] || fail "expected the local boot"
}

say "health"
curl -fsS "$BTY_URL/healthz"; echo

say "flash-once: register $MAC"
put_machine bty-flash-once
say "flash-once: one cycle"
flash_cycle
say "flash-once: every later boot is the local disk"
expect_local
expect_local

say "flash-always: re-arm"
put_machine bty-flash-always
for i in 1 2 3; do
    say "flash-always: cycle $i (flash)"
    flash_cycle
    say "flash-always: cycle $i (local disk)"
    expect_local
done

say "history"
curl -fsS "${auth[@]}" "$BTY_URL/api/machines/$MAC/cycles"; echo
echo
echo "walkthrough OK"
