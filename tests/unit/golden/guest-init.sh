#!/bin/busybox sh
# aufs-harness guest init: PID 1 of a harness VM, booted with
# init=/usr/local/sbin/harness-init. Rendered by vm/image.py; do not edit in the guest.
#
# Instead of systemd (about 9 s of units under TCG) it does only what a test VM
# needs: mounts, the per-VM SSH material from the seed disk (vfat, label
# cidata: harness/authorized_keys, harness/ssh_host_ed25519_key{,.pub},
# harness/hostname), sshd, a static address for QEMU user networking (set while
# sshd starts: it listens on any address), and systemd-udevd as a daemon (no
# trigger, no settle). Then it reaps orphans until SIGUSR2/SIGTERM (power off)
# or SIGINT (reboot): /usr/local/sbin/poweroff.
# Console lines start with "harness-init:"; "sshd listening" means a
# client can connect now.
# Every dynamically linked program costs tens of milliseconds under TCG: the
# static busybox runs this script and its commands (mount, ip, sleep...) as
# applets; sshd, udevd and kmod's modprobe are the only other programs.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 022

say() {
	read -r up _ < /proc/uptime
	echo "harness-init: $* (${up}s)"
}

# -- filesystems (the initramfs moved /proc and /dev here; a kernel booted
# without one mounted its devtmpfs)
# (busybox runs applets through /proc/self/exe: /proc first, by name)
[ -r /proc/self/mounts ] || /bin/busybox mount -t proc -o nosuid,nodev,noexec proc /proc
mounts=
rootopts=
while read -r _ dir _ opts _; do
	mounts="$mounts $dir "
	[ "$dir" = / ] && rootopts=$opts
done < /proc/self/mounts
mnt() {
	case "$mounts" in
	*" $3 "*) ;;
	*) mount -t "$1" -o "$2" "$1" "$3" ;;
	esac
}
mnt sysfs nosuid,nodev,noexec /sys
mnt devtmpfs nosuid,mode=0755 /dev
mnt tmpfs nosuid,nodev,mode=0755 /run
mkdir -p /dev/pts /dev/shm /run/sshd /run/harness/seed
mnt devpts nosuid,noexec,gid=5,mode=0620,ptmxmode=000 /dev/pts
mnt tmpfs nosuid,nodev,mode=1777 /dev/shm
mnt tmpfs nosuid,nodev,mode=1777 /tmp
case ",$rootopts," in *,ro,*) mount -o remount,rw / ;; esac
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
say "filesystems mounted"

# -- drivers the initramfs did not load (a kernel booted without one and
# without them built in: a built-in vfat has no /sys/module entry)
case "$(cat /proc/filesystems)" in
*vfat*) [ -e /sys/module/virtio_net ] ;;
*) false ;;
esac || /sbin/modprobe -qa virtio_net vfat nls_cp437 nls_ascii

# -- per-VM identity from the seed disk (kept mounted read-only, root only).
# The harness's QEMU command line makes it /dev/vdb: try that first (a
# label lookup reads every block device), the label only if it is not there.
hostname=aufs-vm
seed=/run/harness/seed
seeded() {
	mount -t vfat -o ro,umask=077 "$1" "$seed" 2>/dev/null || return 1
	[ -f "$seed/harness/authorized_keys" ] && return 0
	umount "$seed"
	return 1
}
if seeded /dev/vdb || seeded LABEL=CIDATA || seeded LABEL=cidata; then
	mkdir -p -m 0700 /root/.ssh
	(umask 077 && cat "$seed/harness/authorized_keys" > /root/.ssh/authorized_keys &&
		cat "$seed/harness/ssh_host_ed25519_key" > /etc/ssh/ssh_host_ed25519_key)
	cat "$seed/harness/ssh_host_ed25519_key.pub" > /etc/ssh/ssh_host_ed25519_key.pub
	[ -s "$seed/harness/hostname" ] && read -r hostname < "$seed/harness/hostname"
else
	say "ERROR: no seed disk (vfat, /dev/vdb or label cidata): sshd has no keys"
fi
echo "$hostname" > /proc/sys/kernel/hostname
echo "$hostname" > /etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
	"$hostname" > /etc/hosts

# -- sshd, in the background: it binds any address, so the network is set up
# while it starts, and its socket is awaited below. -r: no re-exec per
# connection (a login costs a third less under TCG); an sshd without that
# option gets a second try without it.
rm -f /run/harness/sshd-failed
{
	/usr/sbin/sshd -r -E /var/log/sshd.log 2>/dev/null || /usr/sbin/sshd -E /var/log/sshd.log ||
		: > /run/harness/sshd-failed
} &

# -- network: QEMU user networking, static (no DHCP round trip)
nic=
for dev in /sys/class/net/*; do
	[ "${dev##*/}" = lo ] || { nic=${dev##*/}; break; }
done
ip link set lo up
if [ -n "$nic" ]; then
	ip link set "$nic" up
	ip address add 10.0.2.15/24 dev "$nic"
	ip route add default via 10.0.2.2
else
	say "ERROR: no network interface"
fi
say "seed and network ($nic) ready"

listening=
for _ in $(seq 500); do
	while read -r _ local _ state _; do
		[ "$local" = 00000000:0016 ] && [ "$state" = 0A ] && listening=y
	done < /proc/net/tcp
	[ -n "$listening" ] || [ -e /run/harness/sshd-failed ] && break
	sleep 0.01
done
if [ -n "$listening" ]; then
	say "sshd listening"
elif [ -e /run/harness/sshd-failed ]; then
	say "ERROR: sshd failed to start (see /var/log/sshd.log)"
else
	say "ERROR: sshd is not listening on port 22 (see /var/log/sshd.log)"
fi

# -- udevd for uevent consumers (pyudev); existing devices are not replayed
for udevd in /usr/lib/systemd/systemd-udevd /lib/systemd/systemd-udevd; do
	if [ -x "$udevd" ]; then
		if "$udevd" --daemon; then
			say "udevd started"
		else
			say "ERROR: udevd failed to start"
		fi
		break
	fi
done

# -- PID 1: reap orphans (wait reaps any child), power off on request
halt_with() {
	trap '' USR1 USR2 TERM INT
	say "$1"
	sleep 0.5  # let the SSH session that asked report its exit status
	kill -TERM -1 2>/dev/null
	sleep 1
	kill -KILL -1 2>/dev/null
	sync
	umount "$seed" 2>/dev/null
	mount -o remount,ro / 2>/dev/null
	echo "$2" > /proc/sysrq-trigger
	while :; do sleep 60; done
}
# A kernel without ACPI (the harness's own aufs kernels) cannot power off, and
# sysrq "o" would only halt it: reboot instead, which QEMU's -no-reboot turns
# into an exit, just like a power-off.
off=o
[ -d /sys/firmware/acpi ] || off=b
trap 'halt_with "powering off" $off' USR2 TERM
trap 'halt_with "rebooting" b' INT
while :; do
	sleep 3600 &
	wait $!
done
