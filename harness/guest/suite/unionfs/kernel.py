"""Kernel health around each check: /dev/kmsg markers, new log lines, taint.

A KernelWatch is started before a check: it writes a marker line into the
kernel log, remembers the taint mask and positions a /dev/kmsg reader at the
end of the log (harness/guest/kmsg.py, shared with the host). Afterwards it
yields every kernel line logged since, the suspicious ones (oops, WARN, BUG,
lockdep...), and the taint bits that appeared. With several xdist workers in
one kernel, lines and taint from a concurrent check land in every running
check's window; reports say so.
"""

from __future__ import annotations

import functools
import os
import re
import time

from harness.guest.kmsg import (
    BUSY_LOOP,
    DAMAGE,
    SUSPICIOUS,
    KmsgReader,
    first_match,
    full_log,
    read_taint,
    write_marker,
)


class KernelWatch:
    """Everything the kernel said, and the taint it gained, while one check ran."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.reader = KmsgReader()
        self.taint_before = read_taint()
        self.marked = write_marker(f"unionfs-suite: BEGIN {name}")
        self._lines: list[str] = []
        self._reported = 0

    def lines(self) -> list[str]:
        """All kernel lines logged since the check began (marker included)."""
        self._lines.extend(self.reader.read_new())
        return list(self._lines)

    def wait_for(self, pattern: str, timeout: float = 2.0) -> list[str]:
        """Kernel lines since the check began that match pattern (regex), waiting
        up to timeout seconds for at least one to appear."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        flushed = False
        while True:
            found = [line for line in self.lines() if rx.search(line)]
            if found or time.monotonic() >= deadline:
                return found
            if not flushed:
                # a message printed without a trailing newline stays in the kernel's
                # continuation buffer until the next record: force one
                flushed = write_marker("unionfs-suite: flush")
            time.sleep(0.05)

    def new_lines(self) -> list[str]:
        """Lines not yet handed out by a previous call (one call per test phase)."""
        everything = self.lines()
        fresh = everything[self._reported :]
        self._reported = len(everything)
        return fresh

    def new_taint(self) -> int:
        now = read_taint()
        if now is None or self.taint_before is None:
            return 0
        return now & ~self.taint_before

    @staticmethod
    def suspicious(lines: list[str]) -> list[str]:
        return [line for line in lines if SUSPICIOUS.search(line)]

    def close(self) -> None:
        self.reader.close()


class SessionLog:
    """This process's own reader of the whole kernel log for the run.

    Every process (xdist worker) drains the log on its own, so each sees every
    line however the checks are spread over workers. It remembers loop devices
    that must not be reused ("VFS: Busy inodes after unmount of loopN": a
    superblock outlived its umount and may still write to loopN) and the first
    line showing the kernel damaged during the run.
    """

    def __init__(self) -> None:
        self.loops: set[int] = set()
        lines, _ = full_log()
        self._scan(lines, during_run=False)
        self.damage: str | None = None
        self.reader = KmsgReader()

    def _scan(self, lines: list[str], during_run: bool = True) -> None:
        for line in lines:
            m = BUSY_LOOP.search(line)
            if m:
                self.loops.add(int(m.group(1)))
        if during_run and self.damage is None:
            self.damage = first_match(DAMAGE, lines) or None

    def drain(self) -> SessionLog:
        self._scan(self.reader.read_new())
        return self


@functools.cache
def session_log() -> SessionLog:
    return SessionLog()


def quarantined_loops() -> set[int]:
    return set(session_log().drain().loops)


def damage_seen() -> str | None:
    """The first kernel line of this run showing the kernel damaged, if any."""
    return session_log().drain().damage


def kernel_workers() -> int:
    """How many xdist workers share this kernel: the host says so per VM
    (harness.multivm.KERNEL_WORKERS_ENV) when one run spans several VMs, where
    PYTEST_XDIST_WORKER_COUNT counts the workers of every VM."""
    count = os.environ.get("AUFS_HARNESS_KERNEL_WORKERS") or os.environ.get(
        "PYTEST_XDIST_WORKER_COUNT"
    )
    return int(count or 1)
