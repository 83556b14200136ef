"""One cell's suite over several VMs of the same kernel, through pytest-xdist:
one `--tx` per guest worker, named after its VM (gateway id "vm2w1"), so that
every start and report in the result log says which VM ran it.

`--dist load` shares the checks out among the VMs; `--dist each` runs every
check on every VM (one kernel booted with different memory or CPU counts).

Health and hangs stay per VM: each VM has its own Watchdog over its own console
and its own checks. When one VM's check hangs, only that VM's gateways are cut
(its ssh processes); xdist then shuts the run down gracefully (no worker
restarts), so the other VMs finish the checks they were sent, and
harness.vmgroup replaces the hung VM only. The outcome is split per VM into
the SuiteOutcome a single VM would have given, so resume and the runner's
judging apply unchanged.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import guestenv, guestsuite
from harness.core.deadline import Deadline
from harness.core.errors import UserError
from harness.core.leftovers import owned_temp
from harness.core.logtail import LogTail
from harness.core.procs import kill_group, spawn
from harness.resultlog import ENV as RESULTLOG_ENV
from harness.resultsdir import VMDir

log = logging.getLogger(__name__)

DISTS = ("load", "each")
# The guest's conftest reads this for the number of workers that share its
# kernel (PYTEST_XDIST_WORKER_COUNT counts the workers of every VM).
KERNEL_WORKERS_ENV = "AUFS_HARNESS_KERNEL_WORKERS"
# After a VM's gateways are cut, the others finish what xdist already sent them;
# past this the controller is killed (their checks in flight then go again).
SHUTDOWN_GRACE = 600.0


@dataclass(frozen=True)
class Shape:
    """One VM of a group: CPUs and memory."""

    cpus: int
    memory_mb: int

    def __str__(self) -> str:
        return f"{self.cpus}x{self.memory_mb}"


@dataclass(frozen=True)
class VMGroup:
    """`run --vms` and `--dist`: the shape of each VM, and how they share the checks."""

    shapes: tuple[Shape, ...]
    dist: str = "load"


MAX_CPUS = 64  # as --smp (harness.argcheck.SMP)


def parse_vms(text: str, cpus: int, memory_mb: int) -> tuple[Shape, ...]:
    """`--vms` (or a matrix cell's `vms`): "3" (three VMs of --smp CPUs and
    --memory MB) or "CPUSxMB,..." ("1x512,2x1024"), one shape per VM.
    Raises UserError naming the bad item."""
    text = text.strip()
    if text.isdigit():
        count = int(text)
        if not 1 <= count <= 16:
            raise UserError(f"--vms {text}: give 1 to 16 VMs")
        return (Shape(cpus, memory_mb),) * count
    shapes = []
    for item in text.split(","):
        cpus_s, _, mb_s = item.strip().partition("x")
        if not (
            cpus_s.isdigit() and mb_s.isdigit() and 1 <= int(cpus_s) <= MAX_CPUS
            and int(mb_s) >= 256
        ):  # fmt: skip
            raise UserError(
                f"--vms {text}: {item.strip()!r} is not CPUSxMB (e.g. 2x1024, 1 to {MAX_CPUS} "
                "CPUs and at least 256 MB): give a count or a comma-separated list of CPUSxMB"
            )
        shapes.append(Shape(int(cpus_s), int(mb_s)))
    if len(shapes) > 16:
        raise UserError(f"--vms {text}: give 1 to 16 VMs")
    return tuple(shapes)


@dataclass(frozen=True)
class Member:
    """One VM of a group as the controller sees it."""

    tag: str  # gateway id prefix, e.g. "vm2"
    ssh_config: Path  # rendered per VM (vm.machine)
    host: str  # the Host alias in ssh_config
    console: Path  # its serial console log, watched for kernel damage
    # why QEMU stopped this VM ("" while it runs): asked when the VM goes quiet
    host_stop: Callable[[], str] | None = None


@dataclass
class GroupOutcome:
    """One controller run over several VMs: what each VM would have reported
    alone (in member order), and the shared log."""

    per_vm: list[guestsuite.SuiteOutcome]
    log: Path
    collected: int | None = None  # checks in the run (for each: per VM)


def gateway_id(member: Member, worker: int) -> str:
    return f"{member.tag}w{worker}"


def tx_specs(members: Sequence[Member], workers: int) -> list[str]:
    """xdist's --tx values: `workers` gateways per VM over the VM's own ssh_config,
    each with an id naming the VM and the number of workers on that kernel."""
    return [
        f"ssh=-F {m.ssh_config} {m.host}//id={gateway_id(m, w)}//python=python3"
        f"//chdir={guestenv.GUEST_ROOT}//env:{KERNEL_WORKERS_ENV}={workers}"
        for m in members
        for w in range(1, workers + 1)
    ]


def controller_argv(dist: str, txs: Sequence[str], suite_args: Sequence[str]) -> list[str]:
    """The controller's pytest argv (as guestsuite.run_in_vm's, with several --tx)."""
    if dist not in DISTS:
        raise UserError(f"--dist {dist}: use one of {', '.join(DISTS)}")
    if not txs:
        raise UserError("--dist over VMs needs at least one VM")
    tx_args = [arg for tx in txs for arg in ("--tx", tx)]
    return guestsuite.pytest_argv(
        "-p", "unionfs.options", "--dist", dist, *tx_args, "--max-worker-restart=0",
        "suite", *suite_args,
    )  # fmt: skip


def member_of(worker: str, members: Sequence[Member]) -> int | None:
    """The index of the member whose gateway `worker` is ("vm2w1" -> vm2's)."""
    for i, m in enumerate(members):
        if worker.startswith(m.tag + "w") and worker[len(m.tag) + 1 :].isdigit():
            return i
    return None


def split_events(
    events: Sequence[dict[str, Any]], members: Sequence[Member]
) -> list[list[dict[str, Any]]]:
    """The result log's events per member, by the worker that started or
    reported each check; a worker-down event goes to its own member."""
    per: list[list[dict[str, Any]]] = [[] for _ in members]
    for ev in events:
        at = member_of(str(ev.get("worker", "")), members)
        if at is not None:
            per[at].append(ev)
    return per


class GroupWatch:
    """A guestsuite.Watchdog per member, over that member's running checks."""

    def __init__(self, members: Sequence[Member], check_timeout: float) -> None:
        self.members = members
        self.dogs = [guestsuite.Watchdog(check_timeout, m.console) for m in members]
        self.hung: dict[int, tuple[str, str]] = {}  # member -> (nodeid, why)
        self.host_stop: dict[int, str] = {}  # member -> why QEMU stopped it
        self._probes = [guestsuite.QuietProbe(m.host_stop) if m.host_stop else None
                        for m in members]  # fmt: skip
        self._events_seen = [0 for _ in members]

    def check(self, events: Sequence[dict[str, Any]], now: float) -> list[int]:
        """Members newly given up on (their check hung, their kernel died under it,
        or QEMU stopped the VM: asked, as guestsuite does, once it is quiet for
        guestsuite.QUIET_PROBE s)."""
        newly = []
        for i, evs in enumerate(split_events(events, self.members)):
            if i in self.hung or i in self.host_stop:
                continue
            news = self.dogs[i].read_console(now) > 0 or len(evs) != self._events_seen[i]
            self._events_seen[i] = len(evs)
            probe = self._probes[i]
            why = probe(news) if probe is not None else ""
            if why:
                self.host_stop[i] = why
                newly.append(i)
                continue
            verdict = self.dogs[i].hung(guestsuite.running_in(evs), now)
            if verdict is not None:
                self.hung[i] = verdict
                newly.append(i)
        return newly


def gateway_pids(pgid: int, ssh_config: Path) -> list[int]:
    """The ssh processes of the controller's group (`pgid`) going through `ssh_config`."""
    needle = f"\0{ssh_config}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid and needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def cut_member(proc: subprocess.Popen[bytes], member: Member) -> None:
    """End one VM's gateways: xdist sees its workers go down and shuts the run
    down without restarting them; the VM itself keeps running for the evidence."""
    for pid in gateway_pids(proc.pid, member.ssh_config):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue


@dataclass
class _Run:
    proc: subprocess.Popen[bytes]
    watch: GroupWatch
    tail: LogTail
    events: list[dict[str, Any]] = field(default_factory=list)
    timed_out: bool = False


def _watch(run: _Run, members: Sequence[Member], deadline: Deadline, logfile: Path) -> None:
    """Until the controller exits: progress, per-VM hang handling, the deadline."""
    last = time.monotonic()
    cut_at: float | None = None
    total: int | None = None
    while run.proc.poll() is None:
        if deadline.expired() or (cut_at and time.monotonic() - cut_at > SHUTDOWN_GRACE):
            run.timed_out = deadline.expired()
            kill_group(run.proc)
            return
        time.sleep(0.5)
        if time.monotonic() - last < guestsuite.PROGRESS_EVERY:
            continue
        last = time.monotonic()
        run.events += guestsuite.parse_events(run.tail.new_lines())
        checks, _ = guestsuite.fold_events(run.events)
        total = total or guestsuite.collected_count(logfile)
        running = guestsuite.running_in(run.events)
        log.info("suite: %s", guestsuite.progress_line(checks, total, running, time.time()))
        for i in run.watch.check(run.events, time.time()):
            if i in run.watch.host_stop:
                log.error("suite: %s: %s; cutting that VM off, the others finish what they "
                          "were sent", members[i].tag, run.watch.host_stop[i])  # fmt: skip
            else:
                nodeid, why = run.watch.hung[i]
                log.error("suite: %s on %s %s: declaring it hung; cutting that VM off, the "
                          "others finish what they were sent", nodeid, members[i].tag,
                          why)  # fmt: skip
            cut_member(run.proc, members[i])
            cut_at = cut_at or time.monotonic()


def run_group(
    members: Sequence[Member],
    files: VMDir,
    suite_args: Sequence[str],
    deadline: Deadline,
    dist: str = "load",
    workers: int = 1,
    check_timeout: float = guestsuite.CHECK_TIMEOUT,
) -> GroupOutcome:
    """One controller over `members` (the suite already shipped into each):
    its log and result log in `files`, the outcome split per member."""
    argv = controller_argv(dist, tx_specs(members, workers), suite_args)
    resultlog = files.events.resolve()
    resultlog.unlink(missing_ok=True)
    logfile = files.pytest_log.resolve()
    log.info("suite: --dist %s over %d VMs, %d worker(s) each", dist, len(members), workers)
    with owned_temp("ctl") as tmp, open(logfile, "w") as out:
        Path(tmp, "pytest.ini").write_text("[pytest]\n")  # as guestsuite.run_in_vm's
        env = {"PYTHONPATH": str(guestsuite.suite_dir()), "PYTEST_PLUGINS": "harness.resultlog",
               RESULTLOG_ENV: str(resultlog)}  # fmt: skip
        proc = spawn(argv, env=env, cwd=Path(tmp), stdin=subprocess.DEVNULL, stdout=out,
                     stderr=subprocess.STDOUT)  # fmt: skip
        run = _Run(proc, GroupWatch(members, check_timeout), LogTail(resultlog))
        try:
            _watch(run, members, deadline, logfile)
        except BaseException:
            kill_group(proc)
            raise
    events = guestsuite.read_events(resultlog)
    collected = guestsuite.collected_count(logfile)
    if collected is not None and dist == "each":
        collected //= len(members)  # xdist counts each check once per node
    return GroupOutcome(_per_member(events, members, run, collected, logfile), logfile, collected)


def _per_member(
    events: Sequence[dict[str, Any]],
    members: Sequence[Member],
    run: _Run,
    collected: int | None,
    logfile: Path,
) -> list[guestsuite.SuiteOutcome]:
    """What each VM would have reported alone."""
    outcomes = []
    code = run.proc.returncode if not run.timed_out else None
    for i, evs in enumerate(split_events(events, members)):
        checks, down = guestsuite.fold_events(evs)
        hung = run.watch.hung.get(i)
        host_stop = run.watch.host_stop.get(i, "")
        outcomes.append(
            guestsuite.SuiteOutcome(
                checks,
                None if hung or host_stop else code,
                logfile,
                down,
                timed_out=run.timed_out or hung is not None or bool(host_stop),
                hung_check=hung[0] if hung else None,
                hung_why=hung[1] if hung else "",
                collected=collected,
                host_stop=host_stop,
            )
        )
    return outcomes
