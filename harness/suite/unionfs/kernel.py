"""Kernel health around each check: /dev/kmsg markers, new log lines, taint.

A KernelWatch is started before a check: it writes a marker line into the
kernel log, remembers the taint mask and positions a /dev/kmsg reader at the
end of the log. Afterwards it yields every kernel line logged since, the
suspicious ones (oops, WARN, BUG, lockdep...), and the taint bits that
appeared. With several xdist workers in one kernel, lines and taint from a
concurrent check land in every running check's window; reports say so.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import time
from pathlib import Path

TAINT_FLAGS = (
    "PFSRMBUDAWCIOELKXTN"  # bit i -> letter, as in Documentation/admin-guide/tainted-kernels
)
_SUSPICIOUS = re.compile(
    r"Oops|BUG:|kernel BUG|WARNING:|general protection fault|Call Trace:|"
    r"lockdep|possible circular locking|possible recursive locking|DEBUG_LOCKS_WARN_ON|"
    r"INFO: task .* blocked|Kernel panic|rcu.*stall|UBSAN:|KASAN:|KFENCE:|"
    r"refcount_t:|list_(add|del) corruption|stack-protector|Unable to handle kernel|"
    r"Busy inodes after unmount|EXT4-fs error|XFS \(.*\): (Corruption|metadata I/O error)|"
    r"BTRFS (error|critical)"
)


def read_taint() -> int | None:
    try:
        return int(Path("/proc/sys/kernel/tainted").read_text().strip())
    except (OSError, ValueError):
        return None


def taint_letters(mask: int) -> str:
    return "".join(
        TAINT_FLAGS[i] if i < len(TAINT_FLAGS) else f"[{i}]"
        for i in range(mask.bit_length())
        if mask >> i & 1
    )


def write_marker(text: str) -> bool:
    """Write one line into the kernel log (root only); False if that is impossible."""
    try:
        fd = os.open("/dev/kmsg", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, (text.replace("\n", " ")[:900] + "\n").encode("utf-8", "replace"))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class KmsgReader:
    """Non-blocking reader of /dev/kmsg records, starting at the log's current end."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.error = ""
        try:
            self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError as exc:
            self.error = f"/dev/kmsg unreadable: {exc.strerror}"
            self.close()

    def read_new(self) -> list[str]:
        lines: list[str] = []
        if self.fd is None:
            return lines
        while True:
            try:
                rec = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records overwritten before we read them
                    lines.append("[unionfs-suite: kernel log overrun, lines lost]")
                    continue
                if exc.errno == errno.EINVAL:
                    continue
                raise
            if not rec:
                break
            text = rec.decode("utf-8", "replace")
            header, _, rest = text.partition(";")
            message = rest.split("\n", 1)[0]
            fields = header.split(",")
            stamp = ""
            if len(fields) >= 3 and fields[2].isdigit():
                usec = int(fields[2])
                stamp = f"[{usec // 1_000_000:5d}.{usec % 1_000_000:06d}] "
            lines.append(stamp + message)
        return lines

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


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
        return [line for line in lines if _SUSPICIOUS.search(line)]

    def close(self) -> None:
        self.reader.close()


def full_log() -> tuple[list[str], int | None]:
    """Every record still in the kernel log buffer, and the sequence number of the
    oldest one (above 0 means older records were overwritten)."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return [], None
    lines: list[str] = []
    first_seq: int | None = None
    try:
        while True:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue
                raise
            if not rec:
                break
            header, _, rest = rec.decode("utf-8", "replace").partition(";")
            fields = header.split(",")
            if first_seq is None and len(fields) > 1 and fields[1].isdigit():
                first_seq = int(fields[1])
            lines.append(rest.split("\n", 1)[0])
    finally:
        os.close(fd)
    return lines, first_seq


_BUSY_LOOP = re.compile(r"Busy inodes after unmount of loop(\d+)")
#: events after which the kernel cannot be trusted any more (memory may be
#: corrupted): a later check's result would say nothing about the driver
_DAMAGE = re.compile(
    r"Oops|BUG:|kernel BUG|general protection fault|Unable to handle kernel|"
    r"Busy inodes after unmount|list_(add|del) corruption|Kernel panic|"
    r"EXT4-fs error|XFS \(.*\): Corruption|BTRFS critical"
)


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
            m = _BUSY_LOOP.search(line)
            if m:
                self.loops.add(int(m.group(1)))
            if during_run and self.damage is None and _DAMAGE.search(line):
                self.damage = line.strip()

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
