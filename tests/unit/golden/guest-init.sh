#!/bin/sh
# aufs-harness guest init: PID 1 of a harness VM, booted with
# init=/usr/local/sbin/harness-init. Rendered by vm/image.py; do not edit in the guest.
#
# Instead of systemd (about 9 s of units under TCG) it does only what a test VM
# needs: mounts, a static address for QEMU user networking, the per-VM SSH
# material from the seed disk (vfat, label cidata: harness/authorized_keys,
# harness/ssh_host_ed25519_key{,.pub}, harness/hostname), sshd, and
# systemd-udevd as a daemon (no trigger, no settle). Then it reaps orphans
# until SIGUSR2/SIGTERM (power off) or SIGINT (reboot): /usr/local/sbin/poweroff.
# Console lines start with "harness-init:"; "sshd listening" means a
# client can connect now.
# Every external command costs tens of milliseconds under TCG: builtins first.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 022

say() {
	read -r up _ < /proc/uptime
	echo "harness-init: $* (${up}s)"
}

# -- filesystems (the initramfs already moved /proc, /sys, /dev and /run here)
[ -r /proc/self/mounts ] || mount -t proc -o nosuid,nodev,noexec proc /proc
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

# -- drivers the initramfs did not load (a kernel booted without one)
[ -e /sys/module/virtio_net ] && [ -e /sys/module/vfat ] ||
	modprobe -qa virtio_net vfat nls_cp437 nls_ascii

# -- per-VM identity from the seed disk (kept mounted read-only, root only)
copy() {  # copy SRC DST UMASK, without forking a cp
	(umask "$3" && while IFS= read -r line || [ -n "$line" ]; do
		printf '%s\n' "$line"
	done < "$1" > "$2")
}
hostname=aufs-vm
seed=/run/harness/seed
if mount -t vfat -o ro,umask=077 LABEL=CIDATA "$seed" 2>/dev/null ||
	mount -t vfat -o ro,umask=077 LABEL=cidata "$seed" 2>/dev/null ||
	mount -t vfat -o ro,umask=077 /dev/vdb "$seed"; then
	mkdir -p -m 0700 /root/.ssh
	copy "$seed/harness/authorized_keys" /root/.ssh/authorized_keys 077
	copy "$seed/harness/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key 077
	copy "$seed/harness/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub 022
	[ -s "$seed/harness/hostname" ] && read -r hostname < "$seed/harness/hostname"
else
	say "ERROR: no seed disk (vfat, label cidata): sshd has no keys"
fi
echo "$hostname" > /proc/sys/kernel/hostname
echo "$hostname" > /etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
	"$hostname" > /etc/hosts

# -- network: QEMU user networking, static (no DHCP round trip)
nic=
for dev in /sys/class/net/*; do
	[ "${dev##*/}" = lo ] || { nic=${dev##*/}; break; }
done
if [ -n "$nic" ]; then
	ip -batch - <<EOT
link set lo up
link set $nic up
address add 10.0.2.15/24 dev $nic
route add default via 10.0.2.2
EOT
else
	ip link set lo up
	say "ERROR: no network interface"
fi
say "seed and network ($nic) ready"

# -- sshd. -r: no re-exec per connection (a login costs a third less under
# TCG); an sshd without that option gets a second try without it.
if /usr/sbin/sshd -r -E /var/log/sshd.log 2>/dev/null || /usr/sbin/sshd -E /var/log/sshd.log; then
	# sshd daemonizes before it binds: announce a listening socket only.
	listening=
	for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25; do
		while read -r _ local _ state _; do
			[ "$local" = 00000000:0016 ] && [ "$state" = 0A ] && listening=y
		done < /proc/net/tcp
		[ -n "$listening" ] && break
		sleep 0.1
	done
	if [ -n "$listening" ]; then
		say "sshd listening"
	else
		say "ERROR: sshd is not listening on port 22 (see /var/log/sshd.log)"
	fi
else
	say "ERROR: sshd failed to start (see /var/log/sshd.log)"
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
