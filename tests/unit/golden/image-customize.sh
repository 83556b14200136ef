#!/bin/sh
# mmdebstrap customize hook, rendered by vm/image.py: $1 is the root of the
# new image, every package is installed. Installs the harness init and makes
# the image identical for every VM: per-VM identity comes from the seed disk.
set -eu
root=$1
files=$(dirname "$0")/../hook-files

install -m 0755 "$files/harness-init" "$root/usr/local/sbin/harness-init"
cat > "$root/usr/local/sbin/poweroff" <<'SCRIPT'
#!/bin/sh
# Power the harness VM off: its init (PID 1) syncs and powers off on SIGUSR2.
exec kill -USR2 1
SCRIPT
cat > "$root/usr/local/sbin/reboot" <<'SCRIPT'
#!/bin/sh
# Reboot the harness VM: its init (PID 1) syncs and reboots on SIGINT.
exec kill -INT 1
SCRIPT
chmod 0755 "$root/usr/local/sbin/poweroff" "$root/usr/local/sbin/reboot"

# No host keys in the image: every VM gets its own from the seed disk.
rm -f "$root"/etc/ssh/ssh_host_*
cat > "$root/etc/ssh/sshd_config.d/aufs-harness.conf" <<'CONF'
# aufs-harness: key logins only, with the per-VM host key from the seed disk.
# No PAM and curve25519 key exchange: a login costs a third of the default
# under TCG (sntrup761 and the PAM stack are the slow parts).
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,diffie-hellman-group14-sha256
CONF

# mmdebstrap copied these from the build host: make them the guest's own.
echo aufs-vm > "$root/etc/hostname"
echo "nameserver 10.0.2.3" > "$root/etc/resolv.conf"

# The harness's own initramfs (vm/templates/initramfs-init.sh.j2): the image's
# static busybox and the kernel modules for the root disk, the seed disk and
# the network, in the order `modprobe --show-depends` gives. Compressed
# modules are unpacked here: busybox's insmod reads plain .ko files.
set -- "$root"/boot/vmlinuz-*
[ $# = 1 ] || { echo "E: expected one kernel in /boot, found: $*" >&2; exit 1; }
release=${1##*/vmlinuz-}
tree="$root/tmp/harness-initramfs"
rm -rf "$tree"
mkdir -p "$tree/bin" "$tree/dev" "$tree/proc" "$tree/root" "$tree/lib/modules"
cp "$root/bin/busybox" "$tree/bin/busybox"
install -m 0755 "$files/initramfs-init" "$tree/init"
: > "$tree/modules"
chroot "$root" /sbin/modprobe --set-version "$release" --show-depends -a \
	virtio_pci virtio_blk crc32c_generic ext4 virtio_net vfat nls_cp437 nls_ascii virtio_rng > "$tree/depends"
while read -r kind path _; do
	[ "$kind" = insmod ] || continue
	name=${path##*/}
	case $name in
	*.ko) cp "$root$path" "$tree/lib/modules/$name" ;;
	*.ko.xz)
		name=${name%.xz}
		chroot "$root" /bin/busybox xzcat "$path" > "$tree/lib/modules/$name"
		;;
	*.ko.zst)
		name=${name%.zst}
		zstd -q -d -c "$root$path" > "$tree/lib/modules/$name"
		;;
	*)
		echo "E: cannot unpack kernel module $path" >&2
		exit 1
		;;
	esac
	grep -qxF "$name" "$tree/modules" || echo "$name" >> "$tree/modules"
done < "$tree/depends"
rm "$tree/depends"
[ -s "$tree/modules" ] || echo "W: the initramfs loads no module: the kernel has all of them built in" >&2
(cd "$tree" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) \
	> "$root/boot/harness-initrd.img"
rm -rf "$tree"
