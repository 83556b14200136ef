"""A replacement VM booted ahead: while a damaged VM is still being judged.

A check that kills or damages the guest kernel costs a fresh VM for the checks
left. Booting it used to start only once the damaged VM had been judged: the
watchdog's grace after the kernel's oops (DAMAGED_GRACE), the hang evidence,
the SSH probes; then boot, load, shipping. A Spare starts the next VM's QEMU
as soon as the damage shows (the suite's watchdog calls prepare() from the
main thread, which alone may spawn: harness.core.procs) and waits for its SSH
in a thread, so the boot overlaps the judging. The runner's next new_vm()
hands that VM out, already booted; a spare nobody takes is stopped and
discarded by close(). A booted-ahead VM is a VM that ran nothing: it is as
fresh as one booted later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness import guestsuite
from harness.core.deadline import Deadline
from harness.core.errors import DeadlineExceeded, HarnessError
from harness.resultsdir import VMDir
from harness.suitevm import SuiteVM, VMFactory
from harness.targets import Needed

log = logging.getLogger(__name__)


class BootedAhead:
    """A SuiteVM whose start() and wait_ssh() already ran (in a Spare): they
    return at once, or raise what the boot raised; everything else is the VM's."""

    def __init__(self, vm: SuiteVM, booted: threading.Event, error: list[BaseException]) -> None:
        self.vm = vm
        self._booted = booted
        self._error = error

    def start(self, deadline: Deadline) -> None:
        pass  # started by Spare.prepare()

    def wait_ssh(self, deadline: Deadline) -> None:
        """Wait for the boot thread, at most until `deadline`; raise its error."""
        if not self._booted.wait(timeout=max(0.0, deadline.remaining())):
            self.vm.stop()  # the thread's wait_ssh then fails and ends
            self._booted.wait(timeout=30.0)
            raise DeadlineExceeded(f"the VM booted ahead did not answer SSH ({deadline.what})")
        if self._error:
            raise self._error[0]

    @property
    def label(self) -> str:
        return self.vm.label

    @property
    def accel(self) -> str:
        return self.vm.accel

    @property
    def boot_seconds(self) -> float:
        return self.vm.boot_seconds

    def kernel_release(self, deadline: Deadline) -> str:
        return self.vm.kernel_release(deadline)

    def load(self, needs: Sequence[Needed]) -> dict[str, dict[str, Any]]:
        return self.vm.load(needs)

    def run_suite(
        self,
        out: VMDir,
        suite_args: Sequence[str],
        deadline: Deadline,
        workers: int,
        check_timeout: float,
        on_damage: Callable[[], None] | None = None,
    ) -> guestsuite.SuiteOutcome:
        return self.vm.run_suite(out, suite_args, deadline, workers, check_timeout, on_damage)

    def run_in_guest(self, argv: Sequence[str], deadline: Deadline) -> tuple[int, str, str]:
        return self.vm.run_in_guest(argv, deadline)

    def put_in_guest(self, local: Path, remote: str) -> None:
        self.vm.put_in_guest(local, remote)

    def alive(self) -> bool:
        return self.vm.alive()

    def answers(self, deadline: Deadline) -> bool:
        return self.vm.answers(deadline)

    def hang_evidence(self, deadline: Deadline) -> str:
        return self.vm.hang_evidence(deadline)

    def console_evidence(self, deadline: Deadline) -> str:
        return self.vm.console_evidence(deadline)

    def console_log(self) -> Path:
        return self.vm.console_log()

    def stop(self) -> None:
        self.vm.stop()

    def discard(self) -> None:
        self.vm.discard()

    def keep(self) -> str:
        return self.vm.keep()


class Spare:
    """At most one VM booted ahead for the run's next new_vm().

    `new_vm` makes VMs; `start_deadline()` and `boot_deadline()` give the
    deadlines of starting QEMU and of waiting for SSH (cut from the run's)."""

    def __init__(
        self,
        new_vm: VMFactory,
        start_deadline: Callable[[], Deadline],
        boot_deadline: Callable[[], Deadline],
    ) -> None:
        self._new_vm = new_vm
        self._start_deadline = start_deadline
        self._boot_deadline = boot_deadline
        self._ready: BootedAhead | None = None
        self._thread: threading.Thread | None = None

    def prepare(self) -> None:
        """Start the next VM now (main thread only); its boot goes on in a
        thread. A second call while one is waiting does nothing; a failure to
        start is logged and leaves the next VM to be booted as before."""
        if self._ready is not None:
            return
        vm = self._new_vm()
        try:
            vm.start(self._start_deadline())
        except HarnessError as exc:
            log.warning("could not boot a VM ahead (%s); the next VM boots when needed", exc)
            vm.stop()
            vm.discard()
            return
        booted, error = threading.Event(), []
        deadline, t0 = self._boot_deadline(), time.monotonic()

        def wait() -> None:
            try:
                vm.wait_ssh(deadline)
            except BaseException as exc:  # handed to the runner by BootedAhead.wait_ssh
                error.append(exc)
            finally:
                booted.set()
                log.debug("VM booted ahead: %.1fs", time.monotonic() - t0)

        self._thread = threading.Thread(target=wait, name="spare-vm-boot", daemon=True)
        self._thread.start()
        self._ready = BootedAhead(vm, booted, error)
        log.info("suite: the kernel is damaged: booting the next VM ahead")

    def new_vm(self) -> SuiteVM:
        """The VM booted ahead if there is one, else a new one."""
        ready, self._ready = self._ready, None
        return ready if ready is not None else self._new_vm()

    def close(self) -> None:
        """Stop and discard a VM booted ahead that nobody took."""
        ready, self._ready = self._ready, None
        if ready is not None:
            ready.stop()
            ready.discard()
        if self._thread is not None:
            self._thread.join(timeout=30.0)
            self._thread = None
