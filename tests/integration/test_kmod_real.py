"""Real kernel builds: Debian's kernel sources with a real aufs-standalone.

Needs AUFS_HARNESS_AUFS_SRC (a URL or a clone of aufs-standalone); the
bullseye build also needs AUFS_HARNESS_FIXUP_DIR, your fix-ups for Debian's
5.10.223 (vfs_rename() takes struct renamedata *, fsnotify_alloc_group()
takes flags). The kernel is pinned to 5.10.223-1, the version those fix-ups
are for: plain debian:bullseye follows the security pocket (5.10.262 today,
whose mm/mmap.c needs one more fix-up). Downloads, trees and ccache live in the user's cache dir, so
only the first run pays for a cold build (about 4-5 minutes on 2 cores).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness.bootspec import resolve_boot
from harness.core.deadline import Deadline
from harness.loadstage import ensure_module
from harness.progress import StageHandle
from harness.results import Stage
from harness.targets import Target
from kmod import pipeline
from kmod.pipeline import BuildResult, BuildSpec
from tests.integration.conftest import qemu_pids
from vm.machine import Machine

pytestmark = [pytest.mark.integration, pytest.mark.needs_aufs]

AUFS_SRC = os.environ.get("AUFS_HARNESS_AUFS_SRC", "")
FIXUP_DIR = os.environ.get("AUFS_HARNESS_FIXUP_DIR", "")
BULLSEYE = "debian:bullseye=5.10.223-1"


def aufs_src() -> str:
    if not AUFS_SRC:
        pytest.skip("AUFS_HARNESS_AUFS_SRC is unset: point it at aufs-standalone (URL or clone)")
    return AUFS_SRC


def bullseye_spec() -> BuildSpec:
    src = aufs_src()
    if not FIXUP_DIR:
        pytest.skip(
            "AUFS_HARNESS_FIXUP_DIR is unset: aufs5.10.140 needs your fix-ups to compile on "
            "Debian's 5.10.223"
        )
    return BuildSpec(kernel=BULLSEYE, aufs_src=src, fixup_dir=Path(FIXUP_DIR))


def test_bullseye_builds_with_fixups(fact: list[str]) -> None:
    result = pipeline.run(bullseye_spec(), Deadline(3 * 3600, "bullseye build"))
    assert result.status == "built", "\n".join(result.details)
    assert result.aufs["branch"] == "aufs5.10.140"
    assert result.kernel_release == "5.10.223"
    assert result.vermagic is not None
    assert result.vermagic.split()[0] == result.kernel_release
    assert result.artifacts["bzImage"].stat().st_size > 1_000_000
    assert result.artifacts["aufs.ko"].is_file()
    fact.append(
        f"kmod: bullseye {result.kernel_release} + {result.aufs['branch']} "
        f"{'cached' if result.cached else 'built'} in {result.timings.get('total', 0):.0f}s: "
        f"{result.artifacts['bzImage']}"
    )


def test_bullseye_without_fixups_fails_in_vfsub(fact: list[str]) -> None:
    spec = BuildSpec(kernel=BULLSEYE, aufs_src=aufs_src())
    result = pipeline.run(spec, Deadline(3 * 3600, "bullseye build"))
    assert result.status == "build-failed"
    assert any(d.startswith("fs/aufs/vfsub.c:") and "vfs_rename" in d for d in result.details)
    fact.append(f"kmod: bullseye without fix-ups: {result.details[0]}")


def test_bookworm_aufs61_patch_fails_in_mmap(fact: list[str]) -> None:
    spec = BuildSpec(kernel="debian:bookworm", aufs_src=aufs_src())
    result = pipeline.run(spec, Deadline(1800, "bookworm patch"))
    assert result.status == "patch-failed"
    assert result.aufs["branch"] == "aufs6.1"
    assert any("aufs6-mmap.patch" in d and "mm/mmap.c: hunk" in d for d in result.details)
    fact.append(f"kmod: bookworm + aufs6.1: {'; '.join(result.details)}")


def test_built_kernel_boots_smp_loads_aufs_and_powers_off(tmp_path: Path, fact: list[str]) -> None:
    """The lean guest kernel (no ACPI) still finds both CPUs, loads aufs.ko, and its
    power-off ends QEMU (a reboot under -no-reboot) instead of halting forever."""
    build: BuildResult = pipeline.run(bullseye_spec(), Deadline(3 * 3600, "bullseye build"))
    assert build.status == "built", "\n".join(build.details)
    target = Target(distro="bookworm", build=bullseye_spec())
    boot = resolve_boot(target, Deadline(1800, "image"), StageHandle(Stage("image", "ok")), build)
    machine = Machine("aufs-kernel", boot, tmp_path / "vm", accel="tcg", smp=2)
    with machine:
        machine.start(Deadline(60, "start"))
        guest = machine.wait_ssh(Deadline(300, "boot"))
        probe = guest.run(["sh", "-c", "uname -r; nproc"], Deadline(30, "probe"), check=True)
        assert probe.stdout.split() == [build.kernel_release, "2"]
        loaded = ensure_module(guest, "aufs", build.artifacts["aufs.ko"], "aufs")
        assert loaded is not None and loaded["status"] == "loaded" and loaded["uevent_seen"]
        guest.run(["poweroff"], Deadline(30, "poweroff"))
        assert machine.qemu is not None
        t0 = time.monotonic()
        while machine.qemu.alive() and time.monotonic() - t0 < 60:
            time.sleep(0.2)
        off = time.monotonic() - t0
        assert not machine.qemu.alive(), "QEMU still running 60 s after poweroff in the guest"
    assert not qemu_pids(str(tmp_path))
    fact.append(
        f"kmod: {build.kernel_release} booted under TCG in {machine.boot_seconds:.1f}s with "
        f"2 CPUs, aufs loaded ({loaded['reason']}), poweroff ended QEMU in {off:.1f}s"
    )
