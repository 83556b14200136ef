#!/bin/sh
# mmdebstrap essential hook, rendered by vm/image.py: $1 is the root of the new
# image. It runs before linux-image and initramfs-tools are installed, so the
# kernel's one and only initramfs is built with the harness's configuration.
set -eu
root=$1
files=$(dirname "$0")/../hook-files
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/etc/initramfs-tools/hooks"
cat > "$root/etc/initramfs-tools/conf.d/aufs-harness.conf" <<'CONF'
# aufs-harness: only the listed drivers (see hooks/aufs-harness), no resume
# device, lz4 (decompresses several times faster than gzip under TCG).
MODULES=list
COMPRESS=lz4
RESUME=none
CONF
install -m 0755 "$files/initramfs-hook" "$root/etc/initramfs-tools/hooks/aufs-harness"
