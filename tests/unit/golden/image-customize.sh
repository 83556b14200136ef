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

for initrd in "$root"/boot/initrd.img-*; do
	# grep reads everything (no -q): an early exit would kill lsinitramfs mid-listing
	if ! chroot "$root" lsinitramfs "/boot/${initrd##*/}" | grep -x conf/aufs-harness >/dev/null; then
		echo "E: ${initrd##*/} was built without the aufs-harness initramfs hook" >&2
		exit 1
	fi
done
