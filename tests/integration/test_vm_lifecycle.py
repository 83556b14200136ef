"""vm up / ssh / down through the CLI, and no QEMU left after down, error or Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.core.deadline import Deadline
from harness.core.errors import InfraError
from tests.integration.conftest import qemu_pids
from vm.image import Image
from vm.machine import BootSpec, Machine


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
        check=False,
    )


def test_vm_up_ssh_down(bookworm: Image, fact: list[str]) -> None:
    up = cli("vm", "up", "--name", "itest")
    assert up.returncode == 0, up.stderr
    state_dir = Path(os.environ["AUFS_HARNESS_STATE"]) / "vms" / "itest"
    try:
        assert qemu_pids(str(state_dir)), "vm up left no QEMU running"
        listed = cli("vm", "list")
        assert "itest" in listed.stdout and "running" in listed.stdout
        ssh = cli("vm", "ssh", "--name", "itest", "--", "uname", "-r")
        assert ssh.returncode == 0, ssh.stderr
        assert ssh.stdout.strip() == bookworm.kernel_release
        status = cli("vm", "ssh", "--name", "itest", "--", "sh", "-c", "exit 7")
        assert status.returncode == 7
    finally:
        down = cli("vm", "down", "--name", "itest")
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    assert not qemu_pids(str(state_dir)), "QEMU still running after vm down"
    assert not state_dir.exists()
    fact.append(f"vm up/ssh/down: `uname -r` in the VM printed {ssh.stdout.strip()}")


def test_kernel_panic_fails_fast_and_leaves_no_qemu(bookworm: Image, tmp_path: Path) -> None:
    # No initrd and a root device that does not exist: the kernel panics.
    boot = BootSpec(
        disk=bookworm.rootfs,
        disk_format="raw",
        label="no root",
        kernel=bookworm.vmlinux or bookworm.vmlinuz,
        cmdline=("console=ttyS0", "root=/dev/nonexistent", "panic=0"),
    )
    machine = Machine("panic", boot, tmp_path / "vm", accel="tcg")
    t0 = time.monotonic()
    with pytest.raises(InfraError, match="Kernel panic") as exc, machine:
        machine.start(Deadline(60, "start"))
        machine.wait_ssh(Deadline(300, "boot"))
    assert time.monotonic() - t0 < 120, "a panic must not wait out the whole deadline"
    assert "console.log" in str(exc.value)
    assert not qemu_pids(str(tmp_path)), "QEMU still running after a boot error"


def test_initramfs_rescue_shell_fails_fast(bookworm: Image, tmp_path: Path) -> None:
    # An init that does not exist: Debian's initramfs drops to its shell.
    boot = BootSpec(
        disk=bookworm.rootfs,
        disk_format="raw",
        label="broken init",
        kernel=bookworm.vmlinux or bookworm.vmlinuz,
        initrd=bookworm.initrd,
        cmdline=(*bookworm.cmdline, "init=/no/such/init"),
    )
    machine = Machine("rescue", boot, tmp_path / "vm", accel="tcg")
    t0 = time.monotonic()
    with pytest.raises(InfraError, match="doesn't have requested /no/such/init"), machine:
        machine.start(Deadline(60, "start"))
        machine.wait_ssh(Deadline(300, "boot"))
    assert time.monotonic() - t0 < 120
    assert not qemu_pids(str(tmp_path))


def test_no_qemu_left_after_ctrl_c(bookworm: Image) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "vm", "up", "--name", "ctrlc"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    state = Path(os.environ["AUFS_HARNESS_STATE"]) / "vms" / "ctrlc" / "state.json"
    end = time.monotonic() + 120
    while not state.exists() and time.monotonic() < end:
        time.sleep(0.1)
    assert state.exists(), "vm up never started QEMU"
    pid = json.loads(state.read_text())["pid"]
    assert qemu_pids(str(state.parent)) == [pid]
    proc.send_signal(signal.SIGINT)  # Ctrl-C while waiting for SSH
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "interrupted" in err
    time.sleep(0.5)
    assert not qemu_pids(str(state.parent)), "QEMU survived Ctrl-C"
