#!/bin/bash
# Build the bty netboot environment: Debian's kernel + an initramfs with the
# NIC and disk modules, busybox, the static `bty` agent and an /init that
# brings up the NIC named by bty.mac= and runs the agent.
#
#   media/build.sh [--agent PATH] [--out DIR]
#
# Everything comes from Debian packages (apt-get download): the kernel of
# the running release (linux-image-amd64's dependency) and busybox-static;
# depmod/modprobe from the host's kmod resolve module dependencies. Without
# --agent the static agent is built with cargo. Output (in --out, default
# media/out):
#   bty-netboot-x86_64.vmlinuz / .initrd          the names bty-web serves
#   bty-netboot-x86_64-<version>.vmlinuz / .initrd versioned copies
#   VERSION, SHA256SUMS
# Reproducible: fixed mtimes (SOURCE_DATE_EPOCH, default the last commit),
# sorted cpio entries with --reproducible, gzip -n.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
out="$here/out"
agent=""
while [ $# -gt 0 ]; do
    case "$1" in
        --agent) agent=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

# NICs and disks common in labs, plus what qemu emulates.
MODULES="virtio_pci virtio_net e1000 e1000e igb ixgbe i40e ice r8169 tg3 bnxt_en mlx5_core
virtio_blk virtio_scsi ahci nvme sd_mod af_packet"

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
export LC_ALL=C TZ=UTC

for tool in apt-get dpkg-deb depmod modprobe cpio gzip; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing (apt-get install -y kmod cpio)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cache="$here/cache"
mkdir -p "$cache" "$out"

# 1. the static agent
if [ -z "$agent" ]; then
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p bty-agent \
        --target x86_64-unknown-linux-gnu --manifest-path "$repo/Cargo.toml" >&2
    agent="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/bty"
fi
if ! file "$agent" | grep -q 'statically linked\|static-pie linked'; then
    echo "build.sh: $agent is not a static binary" >&2; exit 1
fi
agent_version=$("$agent" --version | awk '{print $2}')

# 2. Debian packages: the release's current kernel and busybox-static
kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$kpkg" ] || { echo "build.sh: cannot resolve linux-image-amd64 (run apt-get update)" >&2; exit 1; }
kver=${kpkg#linux-image-}
(cd "$cache" && for p in "$kpkg" busybox-static; do
    ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download "$p" >&2
done)
kdeb=$(ls "$cache/${kpkg}"_*.deb | sort | tail -1)
bdeb=$(ls "$cache"/busybox-static_*.deb | sort | tail -1)
dpkg-deb -x "$kdeb" "$work/kernel"
dpkg-deb -x "$bdeb" "$work/busybox"
depmod -b "$work/kernel" "$kver"

# 3. the initramfs tree
root="$work/root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,run,tmp,etc,root,var/run,usr/bin,usr/sbin,lib/modules/"$kver"}
install -m 0755 "$work/busybox/bin/busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
install -m 0755 "$agent" "$root/bin/bty"
install -m 0755 "$here/init" "$root/init"
install -m 0755 "$here/udhcpc.script" "$root/etc/udhcpc.script"

# modules with their dependency closures; compressed ones are unpacked so
# busybox modprobe can load them
: > "$work/mods"
for m in $MODULES; do
    if ! modprobe -d "$work/kernel" -S "$kver" --show-depends "$m" >> "$work/mods" 2>/dev/null; then
        echo "build.sh: module $m not in $kpkg, skipped" >&2
    fi
done
awk '$1 == "insmod" {print $2}' "$work/mods" | sort -u | while read -r ko; do
    rel=${ko#"$work/kernel"}
    dest="$root${rel%.xz}"
    dest="${dest%.zst}"
    mkdir -p "$(dirname "$dest")"
    case "$ko" in
        *.xz) xz -dc "$ko" > "$dest" ;;
        *.zst) zstd -qdc "$ko" > "$dest" ;;
        *) cp "$ko" "$dest" ;;
    esac
done
cp "$work/kernel/lib/modules/$kver/modules.builtin" "$work/kernel/lib/modules/$kver/modules.builtin.modinfo" \
    "$work/kernel/lib/modules/$kver/modules.order" \
    "$root/lib/modules/$kver/" 2>/dev/null || true
depmod -b "$root" "$kver"
echo "$MODULES" | tr ' ' '\n' | sed '/^$/d' > "$root/etc/bty-modules"
version="${agent_version}-k${kver}"
echo "$version" > "$root/etc/bty-netboot-version"

# 4. pack it: sorted, fixed mtimes, no owners
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
initrd="$work/initrd"
(cd "$root" && find . -mindepth 1 | sort | cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -n -9 > "$initrd"

name=bty-netboot-x86_64
cp "$work/kernel/boot/vmlinuz-$kver" "$out/$name.vmlinuz"
cp "$initrd" "$out/$name.initrd"
cp "$out/$name.vmlinuz" "$out/$name-$version.vmlinuz"
cp "$out/$name.initrd" "$out/$name-$version.initrd"
echo "$version" > "$out/VERSION"
(cd "$out" && sha256sum "$name.vmlinuz" "$name.initrd" > SHA256SUMS)
echo "built $name $version in $out:" >&2
ls -l "$out/$name.vmlinuz" "$out/$name.initrd" >&2
