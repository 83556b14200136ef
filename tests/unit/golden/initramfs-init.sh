#!/bin/busybox sh
# aufs-harness initramfs /init, rendered by vm/image.py and packed at image
# build time with the image's own busybox (static) and kernel modules.
#
# Debian's initramfs-tools spends seconds under TCG on shell scripts and
# dynamically linked tools; and while its /sbin/modprobe exists, every module
# request the kernel makes at boot (the crypto self-tests') execs it. Here:
# one static busybox, no modprobe, the listed modules in dependency order
# (/modules, from `modprobe --show-depends` at build time), mount the root,
# switch_root to init=. Busybox runs mount, insmod and sleep as applets.
# Console lines start with "harness-initramfs:"; the failures are worded as
# Debian's, so vm/machine.py's boot-failure table ends the boot at once.
export PATH=/bin
# Busybox runs an applet that is not a shell builtin through /proc/self/exe:
# /proc first, by name.
/bin/busybox mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev

say() {
	read -r up _ < /proc/uptime
	echo "harness-initramfs: $* (${up}s)"
}

root= mode=rw fstype=ext4 init=/sbin/init
for arg in $(cat /proc/cmdline); do
	case $arg in
	root=*) root=${arg#root=} ;;
	rootfstype=*) fstype=${arg#rootfstype=} ;;
	init=*) init=${arg#init=} ;;
	ro | rw) mode=$arg ;;
	esac
done

while read -r module; do
	insmod "/lib/modules/$module" || echo "harness-initramfs: insmod $module failed"
done < /modules
say "modules loaded"

# virtio_blk probes in the background: wait for the node, at most 10 s.
tries=0
while [ ! -b "$root" ]; do
	tries=$((tries + 1))
	if [ $tries -gt 1000 ]; then
		echo "ALERT!  ${root:-(no root= on the command line)} does not exist.  Dropping to a shell!"
		exec sh
	fi
	sleep 0.01
done
if ! mount -t "$fstype" -o "$mode" "$root" /root; then
	echo "harness-initramfs: FATAL: cannot mount $root ($fstype, $mode) on /root.  Dropping to a shell!"
	exec sh
fi
if [ ! -x "/root$init" ] && [ ! -L "/root$init" ]; then
	echo "Target filesystem doesn't have requested $init."
	exec sh
fi
say "root $root mounted"
mount -o move /dev /root/dev
mount -o move /proc /root/proc
exec /bin/busybox switch_root /root "$init"  # /proc moved: by name
