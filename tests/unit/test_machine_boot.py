"""vm/machine.py's boot-failure table: the console line that ends a boot at once;
and what is refused before QEMU starts."""

from __future__ import annotations

import shutil

import pytest

from harness.core.errors import InfraError
from harness.core.paths import state_dir
from vm import machine
from vm.machine import boot_failure

INITRAMFS = """\
[    3.1] Begin: Running /scripts/local-block ... done.
Gave up waiting for root file system device.  Common problems:
 - Boot args (cat /proc/cmdline)
   - Check rootdelay= (did the system wait long enough?)
 - Missing modules (cat /proc/modules; ls /dev)
ALERT!  /dev/nonexistent does not exist.  Dropping to a shell!
"""


def test_the_initramfs_reason_names_the_missing_root_device() -> None:
    assert (
        boot_failure(INITRAMFS) == "ALERT!  /dev/nonexistent does not exist.  Dropping to a shell!"
    )


def test_firmware_and_kernel_failures_are_their_own_line() -> None:
    assert boot_failure(
        "SeaBIOS (version 1.16)\nBooting from Hard Disk...\nNo bootable device.\n"
    ) == ("No bootable device.")
    panic = "[ 1.2] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"
    assert boot_failure(f"[ 1.1] x\n{panic}\n") == panic.split("] ", 1)[1]
    assert boot_failure("[ 1.0] Linux version 6.1\n[ 2.0] Run /init as init process\n") is None


def test_a_full_state_dir_is_one_line_before_qemu_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 2 MB tmpfs as the state dir let QEMU start, then pause the guest on
    ENOSPC in its overlay: the run ended on a guest command timing out (fault campaign)."""
    free = {"mb": 2}
    monkeypatch.setattr(shutil, "disk_usage", lambda p: _usage(free["mb"]))
    with pytest.raises(InfraError) as exc:
        machine.check_state_space()
    (line,) = str(exc.value).splitlines()
    assert line.startswith(f"the state directory {state_dir()} is full (2 MB free;")
    assert "AUFS_HARNESS_STATE" in line
    free["mb"] = machine.MIN_STATE_FREE_MB
    machine.check_state_space()


def _usage(free_mb: int) -> shutil._ntuple_diskusage:
    return shutil._ntuple_diskusage(1 << 40, 0, free_mb << 20)
