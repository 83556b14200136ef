"""The VM the runner drives, as a narrow interface (SuiteVM), and its one real
implementation (MachineVM) over vm.machine.Machine, harness.loadstage and
harness.guestsuite.

The runner decides (fresh VM, resume, verdict); a SuiteVM only does. Unit
tests drive the runner with a recording fake of this interface.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from harness import guestenv, guestsuite, multivm
from harness.core.deadline import Deadline
from harness.core.errors import HarnessError, InfraError
from harness.core.paths import state_dir
from harness.loadstage import ensure_module
from harness.resultsdir import VMDir
from harness.targets import Needed
from vm import qmp
from vm.machine import BootSpec, Machine, vms_root
from vm.ssh import Guest

log = logging.getLogger(__name__)

# Blocked tasks (sysrq w) and the kernel log of a guest whose check hung.
HANG_EVIDENCE = "echo w > /proc/sysrq-trigger; sleep 1; dmesg | tail -n 400"


class SuiteVM(Protocol):
    """One disposable VM: boot, load, run the suite, report on itself, stop."""

    @property
    def label(self) -> str:
        """What boots, e.g. "debian bookworm, stock kernel 6.1.0-40-amd64"."""

    @property
    def accel(self) -> str:
        """ "kvm" or "tcg"; known once start() returned."""

    @property
    def boot_seconds(self) -> float:
        """Seconds from start to SSH answering; known once wait_ssh() returned."""

    def start(self, deadline: Deadline) -> None:
        """Start QEMU. Raises HarnessError (InfraError, DeadlineExceeded)."""

    def wait_ssh(self, deadline: Deadline) -> None:
        """Wait until the guest answers over SSH. Raises HarnessError."""

    def kernel_release(self, deadline: Deadline) -> str:
        """`uname -r` in the guest. Raises HarnessError."""

    def load(self, needs: Sequence[Needed]) -> dict[str, dict[str, Any]]:
        """Load what the suite needs, in order; the load results (plain data) by
        module name, leaving out what was built in. Raises TargetFailure when a
        module will not load, InfraError when loading cannot be tried."""

    def run_suite(
        self,
        out: VMDir,
        suite_args: Sequence[str],
        deadline: Deadline,
        workers: int,
        check_timeout: float,
        on_damage: Callable[[], None] | None = None,
    ) -> guestsuite.SuiteOutcome:
        """The suite in the guest with `workers` xdist workers, its logs in `out`;
        a check running `check_timeout` s is declared hung; `on_damage()` is
        called once (from the caller's thread) when the console first shows the
        kernel damaged."""

    def member(self, tag: str, deadline: Deadline) -> multivm.Member:
        """Ship the suite into the guest and name the VM for a controller over
        several VMs (harness.multivm), its gateways tagged `tag`. Raises HarnessError."""

    def ship(self, deadline: Deadline) -> None:
        """Install the suite and its pytest stack in the guest ahead of
        run_suite(), which then finds them there. Raises HarnessError."""

    def run_in_guest(self, argv: Sequence[str], deadline: Deadline) -> tuple[int, str, str]:
        """A command in the guest: (exit status, stdout, stderr). Raises HarnessError."""

    def put_in_guest(self, local: Path, remote: str) -> None:
        """Upload one file to a guest path. Raises HarnessError."""

    def alive(self) -> bool:
        """True while the QEMU process runs."""

    def ended(self) -> str:
        """How QEMU ended ("killed by SIGKILL", "exited 1: ..."); "" while it runs."""

    def answers(self, deadline: Deadline) -> bool:
        """True if the guest still runs a command over SSH; never raises."""

    def hang_evidence(self, deadline: Deadline) -> str:
        """Blocked tasks and the kernel log (HANG_EVIDENCE). Raises HarnessError."""

    def console_evidence(self, deadline: Deadline) -> str:
        """For a guest that no longer answers SSH: blocked tasks asked for through
        QEMU's monitor (sysrq w, l), as the console printed them ("" when it printed
        nothing). Raises HarnessError when the monitor does not answer."""

    def console_log(self) -> Path:
        """The serial console log (it may not exist if QEMU never started)."""

    def stop(self) -> None:
        """Kill QEMU; safe to call twice."""

    def discard(self) -> None:
        """Remove the VM's working directory (disk overlay, keys)."""

    def keep(self) -> str:
        """Let the running VM outlive the harness as a named VM (`vm list`,
        `vm ssh`, `vm down`); returns its name. Raises InfraError for a VM not
        made to be kept (machine_vms(keep_as=None))."""


VMFactory = Callable[[], SuiteVM]


class MachineVM:
    """A SuiteVM over vm.machine.Machine, under the state directory's runs/, or,
    with `keep_as` (--keep-vm), as the named VM vms/NAME that keep() releases."""

    def __init__(
        self, boot: BootSpec, *, accel: str, memory_mb: int, smp: int, keep_as: str | None = None
    ) -> None:
        name = keep_as or f"run-{uuid.uuid4().hex[:8]}"
        self.workdir = vms_root() / name if keep_as else state_dir() / "runs" / name
        self.keep_as = keep_as
        self.machine = Machine(name, boot, self.workdir, accel=accel, memory_mb=memory_mb, smp=smp)

    @property
    def label(self) -> str:
        return self.machine.boot.label

    @property
    def accel(self) -> str:
        assert self.machine.accel is not None, "start() first"
        return self.machine.accel.name

    @property
    def boot_seconds(self) -> float:
        assert self.machine.boot_seconds is not None, "wait_ssh() first"
        return self.machine.boot_seconds

    def start(self, deadline: Deadline) -> None:
        # A VM to keep is detached but held: it dies with us until keep().
        self.machine.start(deadline, detach=self.keep_as is not None, release_when_ready=False)

    def wait_ssh(self, deadline: Deadline) -> None:
        guest = self.machine.wait_ssh(deadline)
        assert self.machine.accel is not None
        log.info("boot: SSH answered after %.1fs (%s: %s)", self.boot_seconds,
                 self.machine.accel.name, self.machine.accel.reason)  # fmt: skip
        # A user's image may lack what the suite runs on: say so before loading.
        version = guestenv.check_python(guest, deadline.sub(30.0, "probing the guest's python3"))
        log.info("boot: the guest's python3 is %s", version)

    def _guest(self) -> Guest:
        if self.machine.guest is None:
            raise InfraError("the VM is not reachable over SSH")
        return self.machine.guest

    def kernel_release(self, deadline: Deadline) -> str:
        return self._guest().run(["uname", "-r"], deadline, check=True).stdout.strip()

    def load(self, needs: Sequence[Needed]) -> dict[str, dict[str, Any]]:
        loaded = {}
        for need in needs:
            result = ensure_module(self._guest(), need.name, need.module, need.fs)
            if result is not None:
                loaded[need.name] = result
        return loaded

    def run_suite(
        self,
        out: VMDir,
        suite_args: Sequence[str],
        deadline: Deadline,
        workers: int,
        check_timeout: float,
        on_damage: Callable[[], None] | None = None,
    ) -> guestsuite.SuiteOutcome:
        return guestsuite.run_in_vm(
            self.machine, out.path, suite_args, deadline, workers=workers,
            check_timeout=check_timeout, on_damage=on_damage,
        )  # fmt: skip

    def member(self, tag: str, deadline: Deadline) -> multivm.Member:
        guestsuite.ship(self._guest(), deadline)
        m = self.machine
        return multivm.Member(
            tag, m.workdir / "ssh_config", m.name, m.console_log(),
            lambda: guestsuite.host_stop(m),
        )  # fmt: skip

    def ship(self, deadline: Deadline) -> None:
        guestsuite.ship(self._guest(), deadline)

    def run_in_guest(self, argv: Sequence[str], deadline: Deadline) -> tuple[int, str, str]:
        r = self._guest().run(list(argv), deadline)
        return r.status, r.stdout, r.stderr

    def put_in_guest(self, local: Path, remote: str) -> None:
        self._guest().put(local, remote)

    def alive(self) -> bool:
        return self.machine.qemu is not None and self.machine.qemu.alive()

    def ended(self) -> str:
        return self.machine.qemu.ended() if self.machine.qemu is not None else ""

    def answers(self, deadline: Deadline) -> bool:
        if self.machine.guest is None:
            return False
        try:
            self.machine.guest.run(["true"], deadline)
        except HarnessError:
            return False
        return True

    def hang_evidence(self, deadline: Deadline) -> str:
        return self._guest().run(["sh", "-c", HANG_EVIDENCE], deadline).stdout

    def console_evidence(self, deadline: Deadline) -> str:
        if self.machine.qemu is None:
            return ""
        socket = self.machine.qemu.spec.qmp_socket
        return qmp.hang_evidence(socket, self.console_log(), self.workdir / "sysrq.txt", deadline)

    def console_log(self) -> Path:
        return self.machine.console_log()

    def stop(self) -> None:
        self.machine.stop()

    def discard(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def keep(self) -> str:
        if self.keep_as is None:
            raise InfraError("this VM was not started to be kept (--keep-vm)")
        self.machine.keep()
        return self.keep_as


def machine_vms(
    boot: BootSpec, *, accel: str, memory_mb: int, smp: int, keep_as: str | None = None
) -> VMFactory:
    """A factory of fresh MachineVMs booting `boot`; with `keep_as`, each is the
    VM of that name, to be kept (the runner boots one VM only then)."""

    def new() -> SuiteVM:
        return MachineVM(boot, accel=accel, memory_mb=memory_mb, smp=smp, keep_as=keep_as)

    return new
