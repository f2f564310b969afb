#!/usr/bin/env bash
# Install everything the test suite and the benchmarks need on a fresh
# Debian 12 machine (run as root). Idempotent: a second run only checks.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

# Packages the tests drive for real:
#   qemu/ipxe/ovmf/seabios/dnsmasq  - PXE end-to-end tests in VMs
#   atftp tftp-hpa tftpd-hpa        - TFTP clients and the peer server
#   nginx-light wrk python3-venv    - benchmark peers and load
#   busybox-static cpio kmod        - building the netboot initramfs
#   dosfstools mtools               - the UEFI test images' ESP (no mount)
#   syslinux syslinux-common systemd-boot-efi fdisk e2fsprogs
#                                   - `bty-lab usb build` (boot loaders,
#                                     GPT, the stick's ext4 data partition)
#   zstd xz-utils bzip2 pigz        - making compressed test images
#   chromium chromium-driver        - operator UI tests in a real browser
#   isc-dhcp-server kea-dhcp4-server - check the DHCP snippets bty-web hands out
#   e2fsprogs bsdutils coreutils fdisk - local flash and wizard tests: a
#                                     mounted ext4 loop device (the wizard's
#                                     BTY-DATA stick), the prompt on a pty
#                                     (script), / in a chroot, a partition
#                                     (sfdisk; util-linux: losetup,
#                                     lsblk, unshare)
#   shim-signed grub-efi-amd64-signed - the Secure Boot bootfiles (the
#                                     media's signed-PE check runs on the
#                                     host's copies; builds take the .debs;
#                                     bty-e2e's Secure Boot disk image is
#                                     the signed shim + disk GRUB, GPT by
#                                     sfdisk from fdisk; OVMF's secboot
#                                     code and .ms variables from ovmf)
#   sbsigntool                      - sbverify, reading the media's signatures
#   grub-common                     - grub-script-check, parsing the GRUB
#                                     configs bty-web serves
#   golang-go                       - Go's text/template, executing the Helm
#                                     chart as Helm would (no Helm here;
#                                     tests/it/gotemplate, standard library)
#   postgresql-15                   - bty-web's PostgreSQL store: its tests
#                                     start a private server per test
#                                     process (bty-testkit's `pg`). The
#                                     package's own `main` cluster is left
#                                     unused and, with the policy below,
#                                     never started (nothing binds 5432)
# qemu-utils comes preinstalled from a backport that conflicts with
# bookworm's qemu-system; pin both to bookworm.
PKGS=(
  qemu-system-x86 qemu-utils/bookworm qemu-block-extra/bookworm
  ipxe ovmf seabios dnsmasq-base
  atftp tftp-hpa tftpd-hpa
  nginx-light wrk python3-venv curl
  busybox-static cpio kmod file iproute2 util-linux dosfstools mtools
  syslinux syslinux-common systemd-boot-efi fdisk e2fsprogs
  zstd xz-utils bzip2 pigz sqlite3 ca-certificates
  chromium chromium-driver
  isc-dhcp-server kea-dhcp4-server bc python3
  bsdutils coreutils
  shim-signed grub-efi-amd64-signed sbsigntool grub-common
  golang-go
  postgresql-15
)

need=0
for p in "${PKGS[@]}"; do
  dpkg -s "${p%%/*}" >/dev/null 2>&1 || need=1
done
if [ "$need" = 1 ]; then
  apt-get update
  # Packages such as tftpd-hpa, isc-dhcp-server and nginx would start their
  # daemons on install and hold ports the tests use; keep them stopped.
  rc=/usr/sbin/policy-rc.d
  made_rc=0
  if [ ! -e "$rc" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$rc"
    chmod +x "$rc"
    made_rc=1
    trap 'rm -f "$rc"' EXIT
  fi
  apt-get install -y --allow-downgrades --no-install-recommends "${PKGS[@]}"
  if [ "$made_rc" = 1 ]; then
    rm -f "$rc"
    trap - EXIT
  fi
fi

# Container engines for bty-lab's deploy tests (installs and starts dockerd
# and the Podman API socket; no systemd on these machines).
if [ -x scripts/engines.sh ]; then
  scripts/engines.sh
fi

# kubernetes-validate (PyPI; ships the Kubernetes API schemas, so it checks
# offline): tests/it/kubernetes.rs validates the manifests `bty-lab init
# --kubernetes` renders from deploy/helm/bty. A venv keeps it off the
# system Python.
KV_VERSION=1.37.0
if ! /opt/bty-kube-venv/bin/kubernetes-validate --version 2>/dev/null | grep -q "$KV_VERSION"; then
  python3 -m venv /opt/bty-kube-venv
  /opt/bty-kube-venv/bin/pip install --quiet "kubernetes-validate==$KV_VERSION"
fi
ln -sf /opt/bty-kube-venv/bin/kubernetes-validate /usr/local/bin/kubernetes-validate
