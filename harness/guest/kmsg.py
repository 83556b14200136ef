"""The kernel's own account of itself, shared by host and guest: /dev/kmsg
records, the taint mask, and which log lines mean what.

This is the one module both sides import. The guest (the suite's kernel
watch, the module loader) reads /dev/kmsg and /proc/sys/kernel/tainted with
it; the host (the suite watchdog, the resume logic) reads the guest's serial
console with the same line patterns and reads the check facts the guest
recorded under FACTS (pytest user_properties, carried through the result log).

Shipped into guests: standard library only, Python 3.9+.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

KMSG = Path("/dev/kmsg")
TAINTED = Path("/proc/sys/kernel/tainted")

# Documentation/admin-guide/tainted-kernels.rst: bit, letter, meaning.
TAINT_FLAGS: tuple[tuple[int, str, str], ...] = (
    (0, "P", "proprietary module"),
    (1, "F", "module force-loaded"),
    (2, "S", "out-of-spec system"),
    (3, "R", "module force-unloaded"),
    (4, "M", "machine check"),
    (5, "B", "bad page"),
    (6, "U", "taint requested by userspace"),
    (7, "D", "kernel died recently (oops/BUG)"),
    (8, "A", "ACPI table overridden"),
    (9, "W", "kernel warning"),
    (10, "C", "staging driver"),
    (11, "I", "firmware bug workaround"),
    (12, "O", "out-of-tree module"),
    (13, "E", "unsigned module"),
    (14, "L", "soft lockup"),
    (15, "K", "live patched"),
    (16, "X", "auxiliary (distribution) taint"),
    (17, "T", "struct randomization plugin"),
    (18, "N", "in-kernel test run"),
    (19, "J", "fwctl mutating debug operation"),
)

#: Lines that make a check's kernel health fail: the kernel complained while it ran.
SUSPICIOUS = re.compile(
    r"Oops|BUG:|kernel BUG|WARNING:|general protection fault|Call Trace:|"
    r"lockdep|possible circular locking|possible recursive locking|DEBUG_LOCKS_WARN_ON|"
    r"INFO: task .* blocked|Kernel panic|rcu.*stall|UBSAN:|KASAN:|KFENCE:|"
    r"refcount_t:|list_(add|del) corruption|stack-protector|Unable to handle kernel|"
    r"Busy inodes after unmount|EXT4-fs error|XFS \(.*\): (Corruption|metadata I/O error)|"
    r"BTRFS (error|critical)"
)

#: Lines after which the kernel cannot be trusted any more (memory may be
#: corrupted): a later check's result would say nothing about the driver.
DAMAGE = re.compile(
    r"Oops|BUG:|kernel BUG|general protection fault|Unable to handle kernel|"
    r"Busy inodes after unmount|list_(add|del) corruption|Kernel panic|"
    r"EXT4-fs error|XFS \(.*\): Corruption|BTRFS critical"
)

#: Lines after which a check in flight rarely ends: the host's watchdog gives up
#: on it soon after. ("Busy inodes after unmount" is damage, but the kernel runs
#: on and checks still end: not listed.) The hung-task detector's report
#: (kernel/hung_task.c: "INFO: task <comm>:<pid> blocked for more than <n> seconds.")
#: names a task stuck in D state for the detector's whole timeout: a deadlock,
#: whose check never ends either. It is not damage: the kernel is intact.
FATAL = re.compile(
    r"kernel BUG at|BUG: unable to handle|general protection fault|Oops: |Kernel panic|"
    r"INFO: task \S.* blocked for more than \d+ seconds"
)

#: kernel/hung_task.c check_hung_task(): "INFO: task <comm>:<pid> blocked for more than
#: <n> seconds." It repeats for the same task at every check interval while the task
#: stays blocked (up to kernel.hung_task_warnings times, 10 by default).
HUNG_TASK = re.compile(
    r"INFO: task (?P<comm>.+):(?P<pid>\d+) blocked for more than (?P<secs>\d+) seconds"
)
#: sched_show_task(), printed right after it: "task:<comm> state:D stack:... pid:<pid>
#: ppid:<ppid> flags:..." (5.10 and 6.x; the numbers are padded with spaces).
TASK_STATE = re.compile(
    r"task:(?P<comm>.*?)\s+state:(?P<state>\S).*?\bpid:\s*(?P<pid>\d+)\s+ppid:\s*(?P<ppid>\d+)"
)
#: where a line's kernel timestamp ends: "[   54.179340] "
_STAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
#: lines that continue a task report after its INFO line: indented lines (stack
#: frames, "Not tainted"), and the fixed headings of sched_show_task()/show_regs()
_REPORT_PART = re.compile(
    r"^(\s|Not tainted|Tainted:|\"echo 0|task:|Call Trace:|</?TASK>|RIP:|RSP:|RAX:|RDX:|RBP:|"
    r"R10:|R13:|Code:)"
)


@dataclass(frozen=True)
class BlockedTask:
    """A task the hung-task detector reported: its comm, pid and, when the report's
    sched_show_task() line was seen, its parent's pid (0 when not)."""

    comm: str
    pid: int
    ppid: int = 0


def blocked_tasks(lines: list[str]) -> dict[int, BlockedTask]:
    """Every task hung-task reports in these kernel lines name, once per pid, with
    the parent pid from the report's task line when present."""
    found: dict[int, BlockedTask] = {}
    for line in lines:
        m = HUNG_TASK.search(line)
        if m:
            pid = int(m.group("pid"))
            found.setdefault(pid, BlockedTask(m.group("comm"), pid))
            continue
        t = TASK_STATE.search(line)
        if t and int(t.group("pid")) in found:
            pid = int(t.group("pid"))
            found[pid] = BlockedTask(found[pid].comm, pid, int(t.group("ppid")))
    return found


#: The task line of an oops or BUG report (lib/dump_stack.c dump_stack_print_info(),
#: printed by show_regs() right after "Oops: ..." / "kernel BUG at ..." / "invalid
#: opcode"): "CPU: 1 PID: 107 Comm: python3 Not tainted 5.10.223 #1".
OOPS_TASK = re.compile(r"CPU: \d+ PID: (?P<pid>\d+) Comm: (?P<comm>\S+)")
#: how many lines after the FATAL line the report's task line may come
_OOPS_TASK_WITHIN = 4


def oops_task(lines: list[str]) -> int | None:
    """The pid of the task an oops or BUG report (not a hung-task report) in these
    kernel lines names, from the report's first "CPU: N PID: P Comm: C" line within
    a few lines of its FATAL line; None when there is no such report or its task
    line has not arrived yet."""
    for i, line in enumerate(lines):
        if FATAL.search(line) and not HUNG_TASK.search(line):
            for later in lines[i + 1 : i + 1 + _OOPS_TASK_WITHIN]:
                m = OOPS_TASK.search(later)
                if m:
                    return int(m.group("pid"))
            return None
    return None


def collapse_hung_reports(text: str) -> str:
    """The kernel log with each task's repeated hung-task reports collapsed into its
    first: the later reports of the same pid (INFO line, task line, stack,
    registers) are left out, and one line after the first report's INFO line says
    how often and up to how many seconds it was reported. Other lines stay as they
    are, in order."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    first_at: dict[int, int] = {}  # pid -> index in out of its first INFO line
    repeats: dict[int, tuple[int, str]] = {}  # pid -> (times again, last seconds)
    skipping = False
    for line in lines:
        m = HUNG_TASK.search(line)
        if m:
            pid = int(m.group("pid"))
            if pid in first_at:
                times, _ = repeats.get(pid, (0, ""))
                repeats[pid] = (times + 1, m.group("secs"))
                skipping = True
                continue
            first_at[pid] = len(out)
            skipping = False
            out.append(line)
            continue
        if skipping and _REPORT_PART.match(_STAMP.sub("", line, count=1)):
            continue
        skipping = False
        out.append(line)
    for pid, index in sorted(first_at.items(), key=lambda item: -item[1]):
        if pid in repeats:
            times, secs = repeats[pid]
            note = (
                f"(the same hung-task report for pid {pid} repeated {times} more "
                f"time{'s' if times > 1 else ''}, up to {secs} seconds blocked: left out)\n"
            )
            out.insert(index + 1, note)
    return "".join(out)


#: "VFS: Busy inodes after unmount of loopN": that loop device must not be reused.
BUSY_LOOP = re.compile(r"Busy inodes after unmount of loop(\d+)")

#: The user_properties name under which the suite records a check's kernel facts.
FACTS = "kernel"


@dataclass
class CheckFacts:
    """What the kernel did around one check, recorded by the guest as data.

    damaged: the line showing the kernel damaged earlier in the run, set on a
        check skipped for it ("" otherwise).
    health_only: the check failed on kernel health alone (new taint or suspicious
        lines while its own assertions passed).
    workers: xdist workers sharing the kernel when it ran (above 1, another
        check may be the author of the kernel's complaint).
    pid: the process id of the worker that ran the check (0: not recorded), which
        the host matches against the task a hung-task report names.
    lines: the suspicious kernel lines; taint_added: letters of new taint bits.
    """

    damaged: str = ""
    health_only: bool = False
    workers: int = 1
    lines: list[str] = field(default_factory=list)
    taint_added: str = ""
    pid: int = 0

    @property
    def shared_kernel(self) -> bool:
        return self.workers > 1

    def to_dict(self) -> dict[str, object]:
        return {
            "damaged": self.damaged,
            "health_only": self.health_only,
            "workers": self.workers,
            "lines": list(self.lines),
            "taint_added": self.taint_added,
            "pid": self.pid,
        }

    @classmethod
    def from_dict(cls, data: object) -> CheckFacts:
        """Facts from a dict as recorded (unknown keys ignored, missing ones default)."""
        if not isinstance(data, dict):
            return cls()
        return cls(
            damaged=str(data.get("damaged", "")),
            health_only=bool(data.get("health_only", False)),
            workers=int(data.get("workers", 1) or 1),
            lines=[str(x) for x in data.get("lines", [])],
            taint_added=str(data.get("taint_added", "")),
            pid=int(data.get("pid", 0) or 0),
        )

    def merge(self, other: CheckFacts) -> CheckFacts:
        """The facts of two phases (setup, call, teardown) of one check."""
        return CheckFacts(
            damaged=self.damaged or other.damaged,
            health_only=self.health_only or other.health_only,
            workers=max(self.workers, other.workers),
            lines=self.lines + [x for x in other.lines if x not in self.lines],
            taint_added="".join(sorted(set(self.taint_added + other.taint_added))),
            pid=self.pid or other.pid,
        )


@dataclass
class Taint:
    """/proc/sys/kernel/tainted decoded: letters as the kernel prints them."""

    value: int = 0
    letters: str = ""
    names: list[str] = field(default_factory=list)


def decode_taint(value: int) -> Taint:
    """Bits to letters and names; bit 0 clear on a tainted kernel prints "G"."""
    letters: list[str] = []
    names: list[str] = []
    known = 0
    for bit, letter, name in TAINT_FLAGS:
        known |= 1 << bit
        if value & (1 << bit):
            letters.append(letter)
            names.append(name)
        elif bit == 0 and value:
            letters.append("G")
    for bit in range(64):
        if value & (1 << bit) and not known & (1 << bit):
            letters.append("?")
            names.append(f"unknown taint bit {bit}")
    return Taint(value=value, letters="".join(letters), names=names)


def taint_letters(mask: int) -> str:
    """The letters of the bits set in `mask` (no "G"): what a check added."""
    return decode_taint(mask).letters.replace("G", "")


def read_taint(path: Path = TAINTED) -> int | None:
    """The kernel's taint mask, or None when it cannot be read."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


_RECORD = re.compile(r"^(\d+),(\d+),(\d+),[^;]*;(.*)$")


def format_record(record: str, stamp: bool = True) -> str:
    """A /dev/kmsg record as dmesg prints it ("[    1.234567] text"), or its
    text alone (`stamp=False`); continuation (key=value) lines give ""."""
    if not record or record.startswith(" "):
        return ""
    m = _RECORD.match(record.split("\n", 1)[0])
    if not m:
        return record.split("\n", 1)[0]
    if not stamp:
        return m.group(4)
    usec = int(m.group(3))
    return f"[{usec // 1_000_000:5d}.{usec % 1_000_000:06d}] {m.group(4)}"


def write_marker(text: str, path: Path = KMSG) -> bool:
    """Write one line into the kernel log (root only); False if that is impossible."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
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
    """Non-blocking reader of kernel log records, from the log's end at construction
    (or its start, `from_start=True`), formatted as dmesg prints them.

    /dev/kmsg returns one record per read and EAGAIN when drained; a regular
    file (tests) returns b"" at its end. Both are handled. A reader that cannot
    open the log has no lines and says why in `error`.
    """

    LOST = "[kernel log overrun: records lost]"

    def __init__(self, path: Path = KMSG, from_start: bool = False, stamps: bool = True) -> None:
        self.path = path
        self.stamps = stamps
        self.error = ""
        self.first_seq: int | None = None  # sequence number of the first record read
        self._fd: int | None = None
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            if not from_start:
                os.lseek(self._fd, 0, os.SEEK_END)
        except OSError as exc:
            self.error = f"cannot read {path}: {exc.strerror}"
            self.close()

    def read_new(self, limit: int = 100_000) -> list[str]:
        """The records logged since the last call (at most `limit` reads)."""
        if self._fd is None:
            return []
        records: list[str] = []
        for _ in range(limit):  # bounded: the log is finite and reads never block
            try:
                chunk = os.read(self._fd, 16384)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records overwritten before we read them
                    records.append(self.LOST)
                    continue
                if exc.errno == errno.EINVAL:
                    continue
                raise
            if not chunk:
                break
            records.extend(chunk.decode("utf-8", "replace").splitlines())
        if self.first_seq is None:
            self.first_seq = _first_seq(records)
        lines = (format_record(record, self.stamps) for record in records)
        return [line for line in lines if line]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _first_seq(records: list[str]) -> int | None:
    for record in records:
        m = _RECORD.match(record)
        if m:
            return int(m.group(2))
    return None


def full_log(path: Path = KMSG) -> tuple[list[str], int | None]:
    """The text of every record still in the kernel log buffer (no timestamps),
    and the sequence number of the oldest one (above 0: older ones were overwritten)."""
    reader = KmsgReader(path, from_start=True, stamps=False)
    try:
        return reader.read_new(), reader.first_seq
    finally:
        reader.close()


def first_match(pattern: re.Pattern[str], lines: list[str]) -> str:
    """The first of `lines` that `pattern` finds, stripped; "" when none."""
    for line in lines:
        if pattern.search(line):
            return line.strip()
    return ""


def death_line(console: str) -> str:
    """The line that says why a kernel stopped: its panic, else its first FATAL
    line; "" when the text shows neither."""
    lines = console.splitlines()
    panic = [line.strip() for line in lines if "Kernel panic" in line]
    return panic[0] if panic else first_match(FATAL, lines)
