"""Every VM template rendered against a golden file."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from tests.unit.golden import check_golden
from vm import templates
from vm.qemu import LaunchSpec, kernel_firmware
from vm.seed import SeedInput, render_files

SEED = SeedInput(
    name="vm1",
    authorized_key="ssh-ed25519 AAAACLIENT aufs-harness@vm1",
    host_private=(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\nBBBB\n-----END OPENSSH PRIVATE KEY-----\n"
    ),
    host_public="ssh-ed25519 AAAAHOST root@vm1",
)


def spec(**over: object) -> LaunchSpec:
    base: dict[str, object] = dict(
        name="vm1",
        accel="tcg",
        cpu="max",
        disk=Path("/w/disk.qcow2"),
        console_log=Path("/w/console.log"),
        qmp_socket=Path("/w/qmp.sock"),
        pidfile=Path("/w/qemu.pid"),
        ssh_port=2222,
        kernel=Path("/i/vmlinuz"),
        initrd=Path("/i/initrd.img"),
        cmdline=("root=/dev/vda", "console=ttyS0"),
        seed=Path("/w/seed.img"),
    )
    base.update(over)
    return LaunchSpec(**base)  # type: ignore[arg-type]


def test_qemu_argv_direct_kernel_boot() -> None:
    argv = spec().argv("qemu-system-x86_64")
    check_golden("qemu.argv.kernel", "\n".join(argv) + "\n")
    assert argv[argv.index("-append") + 1] == "root=/dev/vda console=ttyS0"
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in argv[argv.index("-netdev") + 1]


def test_qemu_argv_disk_boot_has_no_kernel() -> None:
    argv = spec(kernel=None, initrd=None, cmdline=()).argv("qemu-system-x86_64")
    check_golden("qemu.argv.disk", "\n".join(argv) + "\n")
    assert "-kernel" not in argv and "-append" not in argv


def test_qemu_argv_firmware_only_when_given() -> None:
    argv = spec(firmware=Path("/usr/share/qemu/qboot.rom")).argv("qemu-system-x86_64")
    assert argv[argv.index("-bios") + 1] == "/usr/share/qemu/qboot.rom"
    assert "-bios" not in spec().argv("qemu-system-x86_64")
    # No iPXE ROM in any boot: nothing boots from the network.
    assert "virtio-net-pci,netdev=net0,romfile=" in spec().argv("qemu-system-x86_64")


def test_kernel_firmware_is_qboot_when_qemu_has_it(tmp_path: Path) -> None:
    assert kernel_firmware((tmp_path,)) is None
    (tmp_path / "qboot.rom").write_bytes(b"rom")
    assert kernel_firmware((tmp_path / "none", tmp_path)) == tmp_path / "qboot.rom"


def test_qemu_argv_custom_kernel_without_initrd() -> None:
    argv = spec(initrd=None).argv("qemu-system-x86_64")
    assert "-kernel" in argv and "-initrd" not in argv


def test_seed_files_golden() -> None:
    files = render_files(SEED)
    for name in ("meta-data",):  # instance-id is random per VM
        assert files[name].startswith("instance-id: vm1-")
    check_golden("user-data", files["user-data"])
    check_golden("network-config", files["network-config"])
    assert files["harness/authorized_keys"] == SEED.authorized_key + "\n"
    assert files["harness/ssh_host_ed25519_key"] == SEED.host_private


def test_user_data_is_cloud_config_with_pinned_host_key() -> None:
    text = render_files(SEED)["user-data"]
    assert text.startswith("#cloud-config\n")
    assert "    -----BEGIN OPENSSH PRIVATE KEY-----\n    AAAA\n" in text
    assert "ed25519_public: ssh-ed25519 AAAAHOST root@vm1" in text


def test_ssh_config_pins_host_key() -> None:
    text = templates.render(
        "ssh_config.j2",
        name="vm1",
        port=2222,
        user="root",
        identity="/w/id_ed25519",
        known_hosts="/w/known_hosts",
    )
    check_golden("ssh_config", text)
    assert "StrictHostKeyChecking yes" in text
    assert "StrictHostKeyChecking no" not in text


def test_missing_template_variable_fails_loudly() -> None:
    with pytest.raises(jinja2.UndefinedError):
        templates.render("ssh_config.j2", name="vm1")


def test_render_argv_drops_blank_lines() -> None:
    argv = templates.render_argv("known_hosts.j2", name="a", host_key="ssh-ed25519 K")
    assert argv == ["a ssh-ed25519 K"]


def test_paths_with_commas_are_escaped_for_qemu() -> None:
    argv = spec(disk=Path("/w/a,b/disk.qcow2")).argv("qemu-system-x86_64")
    drive = next(a for a in argv if a.startswith("file=/w/a"))
    assert drive.startswith("file=/w/a,,b/disk.qcow2,if=virtio")
