"""The load stage: make sure the kernel has the union filesystems under test.

A module load is proven by the guest package's module loader (uevent, /proc/filesystems,
dmesg, taint); a module that will not load is a target failure with the lines
that explain it, never a gap.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from harness.core.deadline import Deadline
from harness.core.errors import InfraError, TargetFailure
from harness.guest.records import LoadResult
from harness.guestload import Put, Run, load_in_guest
from vm.ssh import Guest

log = logging.getLogger(__name__)

LOAD_TIMEOUT = 60.0


def _runner(guest: Guest) -> Run:
    def run(argv: list[str], timeout: float) -> tuple[int, str, str]:
        r = guest.run(argv, Deadline(timeout, f"running {argv[0]} in the guest"))
        return r.status, r.stdout, r.stderr

    return run


def _putter(guest: Guest) -> Put:
    def put(local: Path, remote: str) -> None:
        guest.put(local, remote)

    return put


def filesystems(guest: Guest) -> set[str]:
    text = guest.run(
        ["cat", "/proc/filesystems"], Deadline(30, "reading /proc/filesystems"), check=True
    ).stdout
    return {line.split()[-1] for line in text.splitlines() if line.strip()}


def present(guest: Guest, name: str) -> bool:
    """True if module `name` is loaded or built in (/sys/module/NAME exists)."""
    return guest.run(["test", "-d", f"/sys/module/{name}"], Deadline(30, "checking a module")).ok


def ensure_module(
    guest: Guest, name: str, module: Path | str, fs: str | None
) -> dict[str, Any] | None:
    """Load `module` (a .ko path to insmod, or a name to modprobe) unless the
    kernel already has it (for a filesystem: `fs` in /proc/filesystems).
    Returns the load result as plain data, or None when nothing was loaded."""
    if fs is not None and fs in filesystems(guest):
        log.info("load: %s is already in /proc/filesystems (built in or loaded)", fs)
        return None
    if fs is None and present(guest, name):
        log.info("load: %s is already loaded or built in", name)
        return None
    result: LoadResult = load_in_guest(_runner(guest), _putter(guest), module, fs, LOAD_TIMEOUT)
    data: dict[str, Any] = json.loads(result.to_json())
    if result.status == "loaded":
        log.info("load: %s", result.reason)
        return data
    dmesg = "\n".join(result.dmesg[-10:])
    if result.status == "load-failed":
        raise TargetFailure(f"load-failed: {result.reason}" + (f"\n{dmesg}" if dmesg else ""))
    raise InfraError(f"cannot load modules in the guest: {result.reason}")
