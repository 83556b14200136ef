#!/bin/sh
# aufs-harness initramfs hook (/etc/initramfs-tools/hooks/aufs-harness),
# rendered by vm/image.py. The guest is a QEMU VM whose root is /dev/vda
# (virtio-blk, ext4): the initramfs loads exactly the drivers it needs with
# one modprobe, and runs no udev (a trigger and settle cost seconds under TCG).
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in
prereqs)
	prereqs
	exit 0
	;;
esac
. /usr/share/initramfs-tools/hook-functions

modules="virtio_pci virtio_mmio virtio_blk ext4 virtio_net vfat nls_cp437 nls_ascii"
# shellcheck disable=SC2086
manual_add_modules $modules
# load_modules runs "modprobe $line" unquoted: one line, one modprobe for all.
echo "-a $modules" >> "$DESTDIR/conf/modules"

# No udev, no btrfs device scan (it loads btrfs and benchmarks raid6).
rm -f "$DESTDIR/scripts/init-top/udev" "$DESTDIR/scripts/local-premount/btrfs"
# udev's init-bottom script without udev: hand /dev over to the real root.
cat > "$DESTDIR/scripts/init-bottom/udev" <<'SCRIPT'
#!/bin/sh
[ "$1" = prereqs ] && exit 0
mount -n -o move /dev "${rootmnt:?}/dev"
nuke /dev 2>/dev/null || rm -rf /dev
ln -s "${rootmnt}/dev" /dev
SCRIPT
chmod 0755 "$DESTDIR/scripts/init-bottom/udev"
touch "$DESTDIR/conf/aufs-harness"
