"""VMs kept running for a person: named directories under the state dir's
vms/, so `vm list` shows them, `vm ssh` enters them and `vm down` removes them.

A kept VM is started detached but held (it dies with the harness, and the next
start's sweep removes its directory) until it is ready: booted, SSH answering,
its modules loaded. Only then is it released (vm.machine.Machine.keep), so a
Ctrl-C or a failure before that leaves nothing behind.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.deadline import Deadline
from harness.core.errors import UserError
from harness.loadstage import ensure_module
from harness.targets import Needed
from vm.machine import NAME_RE, BootSpec, Machine, is_running, list_states, vms_root
from vm.ssh import Guest

log = logging.getLogger(__name__)

# QEMU up with its console open (the boot itself has its own deadline).
START_TIMEOUT = 120.0
MAX_NAME = 41  # vm.machine.NAME_RE


@dataclass(frozen=True)
class BootOptions:
    """How to boot a kept VM: the `vm up` options (seconds, MB, CPUs)."""

    accel: str = "auto"
    memory_mb: int = 1024
    smp: int = 2
    ssh_port: int | None = None
    boot_timeout: float = 180.0


def name_for(label: str) -> str:
    """A free VM name derived from a target label or slug: "debian:bullseye aufs"
    -> "debian-bullseye-aufs"; "-2", "-3"... when a running VM has it. A dead
    VM's leftover directory of that name is removed."""
    base = re.sub(r"[^a-z0-9-]+", "-", label.lower()).strip("-")[: MAX_NAME - 3] or "vm"
    for n in range(1, 100):
        name = base if n == 1 else f"{base}-{n}"
        if claim(name, quiet=True):
            return name
    raise UserError(f"too many VMs named {base}-N: stop some with `aufs-harness vm down --all`")


def claim(name: str, quiet: bool = False) -> bool:
    """True when `name` is free for a new VM (a dead VM's directory of that name
    is removed). A running VM of that name: False, or with quiet=False a
    UserError saying how to stop it."""
    if not NAME_RE.match(name):
        raise UserError(f"bad VM name {name!r}: use lowercase letters, digits and dashes")
    for state in list_states():
        if state.name == name and is_running(state):
            if quiet:
                return False
            raise UserError(f"VM {name!r} is already running: `aufs-harness vm down --name {name}`")
    shutil.rmtree(vms_root() / name, ignore_errors=True)
    return True


def enter_lines(name: str, workdir: Path) -> list[str]:
    """What to print for a kept VM: how to enter and how to stop it."""
    return [
        f"  enter: aufs-harness vm ssh --name {name}",
        f"     or: ssh -F {workdir / 'ssh_config'} {name}",
        f"   stop: aufs-harness vm down --name {name}",
    ]


def boot_kept(
    name: str,
    boot: BootSpec,
    opts: BootOptions,
    needs: Sequence[Needed] = (),
    ready: Callable[[Guest], None] | None = None,
) -> tuple[Machine, dict[str, dict[str, Any]]]:
    """Boot `boot` as the kept VM `name` (claimed first), wait for SSH, load
    `needs` in order (each proven by harness.loadstage), run `ready` in it (a
    docker cell's dockerd: harness.scenario), then release it.
    Returns the machine (its guest connection closed) and the load results by
    module name. Raises what booting or loading raises (UserError, InfraError,
    TargetFailure, DeadlineExceeded); then, as on Ctrl-C, the VM is killed and
    its directory removed."""
    claim(name)
    machine = Machine(
        name, boot, vms_root() / name, accel=opts.accel, ssh_port=opts.ssh_port,
        memory_mb=opts.memory_mb, smp=opts.smp,
    )  # fmt: skip
    loaded: dict[str, dict[str, Any]] = {}
    try:
        machine.start(Deadline(START_TIMEOUT, "starting QEMU"), detach=True,
                      release_when_ready=False)  # fmt: skip
        guest = machine.wait_ssh(Deadline(opts.boot_timeout, "booting to SSH"))
        for need in needs:
            result = ensure_module(guest, need.name, need.module, need.fs)
            if result is not None:
                loaded[need.name] = result
        if ready is not None:
            ready(guest)
        machine.keep()
    except BaseException:
        machine.stop()  # a VM that did not come up is not left behind
        shutil.rmtree(machine.workdir, ignore_errors=True)
        raise
    guest.close()
    return machine, loaded
