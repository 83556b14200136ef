"""A replacement VM booted ahead: while a damaged VM is still being judged.

A check that kills or damages the guest kernel costs a fresh VM for the checks
left. Booting it used to start only once the damaged VM had been judged: the
watchdog's grace after the kernel's oops (DAMAGED_GRACE), the hang evidence,
the SSH probes; then boot, load, shipping. A Spare starts the next VM's QEMU
as soon as the damage shows (the suite's watchdog calls prepare() from the
main thread, which alone may spawn: harness.core.procs) and waits for its SSH
in a thread, then loads the modules and ships the suite there (get_ready),
so all of that overlaps the judging. The runner's next new_vm()
hands that VM out and wait_booted() stands in for its start and wait_ssh; a
spare nobody takes is stopped and discarded by close(). A VM booted ahead has
run nothing: it is as fresh as one booted later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.core.deadline import Deadline
from harness.core.errors import DeadlineExceeded, HarnessError
from harness.suitevm import SuiteVM, VMFactory

log = logging.getLogger(__name__)


@dataclass
class _Boot:
    """One VM booting ahead: its thread, and what its wait_ssh raised."""

    vm: SuiteVM
    thread: threading.Thread | None = None
    done: threading.Event = field(default_factory=threading.Event)  # SSH answered or failed
    ready: threading.Event = field(default_factory=threading.Event)  # get_ready() ended
    error: list[BaseException] = field(default_factory=list)


class Spare:
    """At most one VM booted ahead for the run's next new_vm().

    `new_vm` makes VMs; `start_deadline()` and `boot_deadline()` give the
    deadlines of starting QEMU and of waiting for SSH (cut from the run's)."""

    def __init__(
        self,
        new_vm: VMFactory,
        start_deadline: Callable[[], Deadline],
        boot_deadline: Callable[[], Deadline],
        get_ready: Callable[[SuiteVM], None] | None = None,
    ) -> None:
        self._new_vm = new_vm
        self._start_deadline = start_deadline
        self._boot_deadline = boot_deadline
        # after SSH answers, in the thread: what else the VM can do ahead (load,
        # ship); best effort, since the runner's own steps redo what is missing
        self._get_ready = get_ready
        self._ready: _Boot | None = None  # booting, not handed out yet
        self._handed: list[_Boot] = []

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
        boot, deadline = _Boot(vm), self._boot_deadline()

        def wait() -> None:
            try:
                vm.wait_ssh(deadline)
            except BaseException as exc:  # raised to the runner by wait_booted()
                boot.error.append(exc)
                boot.done.set()
                return
            boot.done.set()
            if self._get_ready is not None:
                try:
                    self._get_ready(vm)
                except Exception as exc:  # the runner's load and shipping redo it
                    log.debug("getting the VM booted ahead ready: %s", exc)
                finally:
                    boot.ready.set()

        boot.thread = threading.Thread(target=wait, name="spare-vm-boot", daemon=True)
        boot.thread.start()
        self._ready = boot
        log.info("suite: the kernel is damaged: booting the next VM ahead")

    def new_vm(self) -> SuiteVM:
        """The VM booted ahead if there is one, else a new one."""
        boot, self._ready = self._ready, None
        if boot is None:
            return self._new_vm()
        self._handed.append(boot)
        return boot.vm

    def wait_booted(self, vm: SuiteVM, deadline: Deadline) -> bool:
        """For a VM this Spare booted ahead: wait for its SSH (at most until
        `deadline`), raise what its boot raised, and return True. False for any
        other VM (the caller starts and boots it itself)."""
        boot = next((b for b in self._handed if b.vm is vm), None)
        if boot is None:
            return False
        if not boot.done.wait(timeout=max(0.0, deadline.remaining())):
            vm.stop()  # the thread's wait_ssh then fails and ends
            raise DeadlineExceeded(f"the VM booted ahead did not answer SSH ({deadline.what})")
        if boot.error:
            raise boot.error[0]
        if self._get_ready is not None:  # the load and shipping under way: let them end
            boot.ready.wait(timeout=max(0.0, deadline.remaining()))
        return True

    def was_ahead(self, vm: SuiteVM) -> bool:
        """Whether `vm` is one this Spare booted ahead."""
        return any(b.vm is vm for b in self._handed)

    def close(self) -> None:
        """Stop and discard a VM booted ahead that nobody took; end the threads."""
        boot, self._ready = self._ready, None
        if boot is not None:
            boot.vm.stop()
            boot.vm.discard()
            self._handed.append(boot)
        for b in self._handed:
            if b.thread is not None:
                b.thread.join(timeout=30.0)
        self._handed.clear()
