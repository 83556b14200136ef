"""Run the union-filesystem suite: in a VM through pytest-xdist over SSH, or
locally on this host.

The host pytest is only the xdist controller; the checks run in the guest.
Results stream into a JSON-lines log (harness.resultlog) as they happen, so a
hang or a dead VM still leaves every earlier verdict, and the check that was
running when it happened is reported as hung.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from harness import guestenv, guestship
from harness.core.deadline import Deadline
from harness.core.errors import InfraError, UserError
from harness.core.leftovers import owned_temp
from harness.core.logtail import LogTail
from harness.core.procs import kill_group, spawn
from harness.guest.kmsg import (
    DAMAGE,
    FACTS,
    FATAL,
    HUNG_TASK,
    BlockedTask,
    CheckFacts,
    blocked_tasks,
    death_line,
    oops_task,
)
from harness.resultlog import ENV as RESULTLOG_ENV
from harness.results import ERROR, FAILED, HUNG, PASSED, SKIPPED, CheckResult
from harness.resultsdir import VMDir
from vm import qmp
from vm.machine import Machine
from vm.qmp import QmpError
from vm.ssh import Guest

log = logging.getLogger(__name__)

# The guest package's modules go where the guest's python3 finds them as
# harness.guest (GUEST_ROOT is on its path), so the suite imports the shared
# kmsg module by the same name as the host does. The suite itself goes to
# GUEST_ROOT/suite, which keeps check ids "suite/test_x.py::..." as they were.
GUEST_PACKAGE = f"{guestenv.GUEST_ROOT}/harness/guest"
GUEST_SUITE = f"{guestenv.GUEST_ROOT}/suite"
PROGRESS_EVERY = 15.0
WATCH_EVERY = 1.0  # how often the console and the check events are read
CHECK_TIMEOUT = 300.0  # one check running longer than this is declared hung
SLOW_CHECK = 60.0  # progress names a check running longer than this
# Once the guest kernel has logged a FATAL line on its console, a check still
# running DAMAGED_GRACE seconds later is not going to end: declare it hung then
# instead of after the full CHECK_TIMEOUT.
DAMAGED_GRACE = 30.0
# An oops or BUG report names the task it happened in: when that task is the worker
# of a running check, the check is the culprit and is not going to end; the few
# seconds left let the worker's own crash report arrive first (a better verdict).
OOPS_NAMED_GRACE = 5.0
# A guest silent this long (no check event, no console line) is asked about
# through QEMU's monitor, at most once per interval: QEMU pauses a guest whose
# disk overlay meets ENOSPC on the host, and a paused guest only looks hung.
QUIET_PROBE = 15.0


def guest_dir() -> Path:
    """The guest package shipped with the tool (harness/guest: suite, loader, kmsg)."""
    return Path(str(resources.files("harness") / "guest"))


def suite_dir() -> Path:
    """The suite shipped with the tool (package data)."""
    path = guest_dir() / "suite"
    if not (path / "conftest.py").exists():
        raise InfraError(f"the suite is missing from the installation: {path}")
    return path


@dataclass
class SuiteOutcome:
    checks: list[CheckResult]
    returncode: int | None  # None: killed at the deadline
    log: Path
    workers_down: list[str]
    timed_out: bool = False
    hung_check: str | None = None  # the check the watchdog gave up on
    hung_why: str = ""  # and why, e.g. "still running after 301s"
    collected: int | None = None  # how many checks the run had, when known
    kernel_died: str = ""  # the console line, when the guest kernel died under the checks
    host_stop: str = ""  # why QEMU stopped the guest (a full disk on the host, say)


def _first_error_line(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("E "):
            return line[1:].strip()[:300]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def parse_events(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The result log's events; a line cut short by a kill is left out."""
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def read_events(path: Path) -> list[dict[str, Any]]:
    return parse_events(path.read_text().splitlines()) if path.exists() else []


def parse_resultlog(path: Path) -> tuple[list[CheckResult], list[str]]:
    """Fold start/report events into one CheckResult per test, in start order."""
    return fold_events(read_events(path))


def fold_events(events: Iterable[dict[str, Any]]) -> tuple[list[CheckResult], list[str]]:
    """One CheckResult per test in start order, and the workers that went down."""
    order: list[str] = []
    phases: dict[str, dict[str, dict[str, Any]]] = {}
    down: list[str] = []
    for ev in events:
        if ev["event"] in ("start", "report") and ev["nodeid"] not in phases:
            order.append(ev["nodeid"])
            phases[ev["nodeid"]] = {}
        if ev["event"] == "report":
            phases[ev["nodeid"]][ev["when"]] = ev
        elif ev["event"] == "worker-down" and ev.get("error"):
            down.append(f"{ev['worker']}: {ev['error']}")
    checks = []
    for nodeid in order:
        check = _fold_check(nodeid, phases[nodeid])
        for phase in phases[nodeid].values():
            facts = phase.get("properties", {}).get(FACTS)
            check.kernel = check.kernel.merge(CheckFacts.from_dict(facts))
        checks.append(check)
    return checks, down


def _fold_check(nodeid: str, ph: dict[str, dict[str, Any]]) -> CheckResult:
    """The verdict of one check from its setup, call and teardown reports."""
    setup, call, teardown = ph.get("setup"), ph.get("call"), ph.get("teardown")
    duration = sum(float(str(p.get("duration", 0.0))) for p in ph.values())
    if setup is None and call is None:
        return CheckResult(nodeid, HUNG, 0.0, "started but never reported")
    if setup and setup["outcome"] == "skipped":
        reason = str(setup["longrepr"])
        return CheckResult(nodeid, SKIPPED, duration, reason.removeprefix("Skipped: "))
    if setup and setup["outcome"] == "failed":
        text = str(setup["longrepr"])
        return CheckResult(nodeid, ERROR, duration, _first_error_line(text), text)
    if call is None:
        return CheckResult(nodeid, HUNG, duration, "set up, but the check never ended")
    if call["outcome"] == "failed":
        text = str(call["longrepr"])
        return CheckResult(nodeid, FAILED, duration, _first_error_line(text), text)
    if call["outcome"] == "skipped":
        reason = str(call["longrepr"]).removeprefix("Skipped: ")
        return CheckResult(nodeid, SKIPPED, duration, reason)
    if teardown and teardown["outcome"] == "failed":
        text = str(teardown["longrepr"])
        message = "teardown: " + _first_error_line(text)
        return CheckResult(nodeid, ERROR, duration, message, text)
    return CheckResult(nodeid, PASSED, duration)


def running_in(events: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Checks that started and have not finished yet, with their start times."""
    started: dict[str, float] = {}
    for ev in events:
        if ev["event"] == "start":
            started[ev["nodeid"]] = float(ev["t"])
        elif ev["event"] == "report" and ev["when"] == "teardown":
            started.pop(ev["nodeid"], None)
    return started


def collected_count(pytest_log: Path) -> int | None:
    """How many checks xdist had to run (from "N workers [M items]")."""
    if not pytest_log.exists():
        return None
    found = re.search(r"\[(\d+) items?\]", pytest_log.read_text(errors="replace"))
    return int(found.group(1)) if found else None


def _progress(
    checks: Sequence[CheckResult], total: int | None, running: dict[str, float], now: float
) -> str:
    """'659 of 924 checks reported, 10 failed; test_x[aufs-tmpfs] running for 150s'."""
    failed = sum(c.outcome in (FAILED, ERROR) for c in checks)
    of = f" of {total}" if total else ""
    line = f"{len(checks)}{of} checks reported, {failed} failed"
    if running:
        nodeid, t0 = min(running.items(), key=lambda item: item[1])
        if now - t0 >= SLOW_CHECK:  # say which check holds the run up
            line += f"; {nodeid.rsplit('::', 1)[-1]} running for {now - t0:.0f}s"
    return line


def kernel_death(console: Path) -> str:
    """The line that says why a guest kernel stopped: its panic, else its first
    BUG or oops; "" when the console shows neither."""
    try:
        return death_line(console.read_text(errors="replace"))
    except OSError:
        return ""


class Watchdog:
    """Decides when a running check is hung: after `check_timeout`, or sooner,
    DAMAGED_GRACE after the guest kernel logged an oops, BUG, panic or hung-task
    report on its console (a check in flight then rarely ends). A hung-task report
    names the blocked task's pid (and its parent's): the check whose worker has that
    pid is blamed, else the longest-running one. An oops or BUG report names the task
    it happened in (kmsg.oops_task): the check whose worker that is is blamed
    OOPS_NAMED_GRACE after it, since it will not end."""

    def __init__(
        self,
        check_timeout: float,
        console: Path | None = None,
        on_damage: Callable[[], None] | None = None,
    ) -> None:
        self.check_timeout = check_timeout
        self.damage_at: float | None = None
        self.damage_line = ""
        self.blocked: dict[int, BlockedTask] = {}
        self.oops_pid: int | None = None
        self._seen: list[str] = []
        self._tail = LogTail(console) if console is not None else None
        # called once, on the first line showing the kernel damaged or dying
        self._on_damage = on_damage

    def read_console(self, now: float) -> int:
        """Read the console's new lines; returns how many there were."""
        if self._tail is None:
            return 0
        fresh = [raw.strip() for raw in self._tail.new_lines()]
        # after a hung-task report, keep its task line (the parent pid) in view
        self._seen = (self._seen + fresh)[-200:]
        for pid, task in blocked_tasks(self._seen).items():
            if task.ppid or pid not in self.blocked:
                self.blocked[pid] = task
        if self.damage_at is not None and self.oops_pid is None:
            self.oops_pid = oops_task(self._seen)
        notify = self._on_damage
        if notify is not None and any(FATAL.search(x) or DAMAGE.search(x) for x in fresh):
            self._on_damage = None
            notify()
        if self.damage_at is not None:
            return len(fresh)
        for line in fresh:
            if FATAL.search(line):
                self.damage_at, self.damage_line = now, line
                self.oops_pid = oops_task(self._seen)
                log.warning("suite: the guest kernel logged %r; a check still running in "
                            "%.0fs will be declared hung", line, DAMAGED_GRACE)  # fmt: skip
                break
        return len(fresh)

    def culprit(self, running: dict[str, float], owners: dict[str, int]) -> str | None:
        """The running check whose worker pid is a blocked task or its parent, or
        None (no report names one, or the worker is not known)."""
        if self.oops_pid is not None:
            hits = [n for n in running if owners.get(n) == self.oops_pid]
            return min(hits, key=lambda n: running[n]) if hits else None
        if not HUNG_TASK.search(self.damage_line):
            return None
        pids = {t.pid for t in self.blocked.values()} | {
            t.ppid for t in self.blocked.values() if t.ppid
        }
        hits = [n for n in running if owners.get(n) in pids]
        return min(hits, key=lambda n: running[n]) if hits else None

    def hung(
        self, running: dict[str, float], now: float, owners: dict[str, int] | None = None
    ) -> tuple[str, str] | None:
        """(nodeid, why) of a check to give up on, or None. owners: the worker pid
        running each check, where known (worker_pids())."""
        if not running:
            return None
        nodeid, t0 = min(running.items(), key=lambda item: item[1])
        if now - t0 > self.check_timeout:
            return nodeid, f"still running after {now - t0:.0f}s"
        if self.damage_at is None:
            return None
        named = self.culprit(running, owners or {})
        if named is not None:
            nodeid, t0 = named, running[named]
        oops_named = named is not None and self.oops_pid is not None
        grace = OOPS_NAMED_GRACE if oops_named else DAMAGED_GRACE
        if now - max(t0, self.damage_at) > grace:
            whose = ""
            if named is not None:
                task = "the task it names" if oops_named else "the blocked task"
                whose = f" (its worker is {task})"
            return nodeid, (
                f"still running {now - self.damage_at:.0f}s after the kernel logged "
                f"{self.damage_line!r}{whose}"
            )
        return None


def worker_pids(events: Iterable[dict[str, Any]], running: Iterable[str]) -> dict[str, int]:
    """The guest pid of the worker running each of `running`, where the events tell:
    a check's own reports name its worker (the setup report arrives before the check
    body runs), any report of that worker carries its pid (CheckFacts.pid). A check
    with no report yet (hung in setup) gets the one worker with a known pid that
    runs nothing else, if there is exactly one."""
    worker_of: dict[str, str] = {}
    pid_of: dict[str, int] = {}
    for ev in events:
        if ev.get("event") != "report" or not ev.get("worker"):
            continue
        worker_of[ev["nodeid"]] = ev["worker"]
        pid = CheckFacts.from_dict(ev.get("properties", {}).get(FACTS)).pid
        if pid:
            pid_of[ev["worker"]] = pid
    running = list(running)
    owners = {n: pid_of[worker_of[n]] for n in running if worker_of.get(n) in pid_of}
    busy = {worker_of[n] for n in owners}
    idle = [w for w in pid_of if w not in busy]
    unknown = [n for n in running if n not in owners]
    if len(unknown) == 1 and len(idle) == 1:
        owners[unknown[0]] = pid_of[idle[0]]
    return owners


class QuietProbe:
    """Asks `ask()` why QEMU stopped a guest once the guest has said nothing (no
    check event, no console line) for QUIET_PROBE s, and at most once per
    QUIET_PROBE s after that; `ask()` returns "" while the guest runs."""

    def __init__(self, ask: Callable[[], str]) -> None:
        self._ask = ask
        self._since = self._asked = time.monotonic()

    def __call__(self, news: bool) -> str:
        """`news`: the guest said something since the last call. Returns why
        QEMU stopped the guest, "" when it did not (or it was not asked)."""
        now = time.monotonic()
        if news:
            self._since = now
            return ""
        if now - max(self._since, self._asked) < QUIET_PROBE:
            return ""
        self._asked = now
        return self._ask()


@dataclass
class _Ended:
    """How the controller ended: its exit code (None: killed), whether it was
    stopped early, the check given up on and why, why QEMU stopped the guest."""

    returncode: int | None
    stopped: bool = False
    hung: tuple[str, str] | None = None
    host_stop: str = ""


def _run_controller(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    logfile: Path,
    resultlog: Path,
    deadline: Deadline,
    watchdog: Watchdog,
    host_stop: Callable[[], str] | None = None,
) -> _Ended:
    """Run the pytest controller, logging progress; kill it at the deadline, when
    the watchdog gives up on a check, or when `host_stop()` (asked after
    QUIET_PROBE s without a check event or a console line) says why QEMU
    stopped the guest."""
    log.debug("suite argv: %s", argv)
    with open(logfile, "w") as out:
        proc = spawn(  # dies with the harness; its ssh children carry the owner token
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        last = time.monotonic()
        # The result log and pytest's log grow for the whole run: read each
        # new event once, and pytest's log only until it gave the check count.
        tail = LogTail(resultlog)
        events: list[dict[str, Any]] = []
        total: int | None = None
        probe = QuietProbe(host_stop) if host_stop is not None else None
        try:
            while proc.poll() is None:
                if deadline.expired():
                    kill_group(proc)
                    return _Ended(None, stopped=True)
                time.sleep(WATCH_EVERY)
                # The console and the events are read at every tick, progress is
                # logged every PROGRESS_EVERY: the watchdog's graces (and the VM
                # booted ahead) start when the kernel logs damage, not up to a
                # progress interval later.
                fresh = parse_events(tail.new_lines())
                events += fresh
                running = running_in(events)
                now = time.time()
                news = watchdog.read_console(now) > 0 or bool(fresh)
                why = probe(news) if probe is not None else ""
                if why:
                    log.error("suite: %s", why)
                    kill_group(proc)
                    return _Ended(None, stopped=True, host_stop=why)
                if time.monotonic() - last >= PROGRESS_EVERY:
                    last = time.monotonic()
                    checks, _ = fold_events(events)
                    total = total or collected_count(logfile)
                    log.info("suite: %s", _progress(checks, total, running, now))
                hung = watchdog.hung(running, now, worker_pids(events, running))
                if hung is not None:
                    log.error("suite: %s %s: declaring it hung", *hung)
                    kill_group(proc)
                    return _Ended(None, stopped=True, hung=hung)
        except BaseException:
            kill_group(proc)
            raise
    return _Ended(proc.returncode)


def _run_pytest(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    results_dir: Path,
    deadline: Deadline,
    check_timeout: float = CHECK_TIMEOUT,
    console: Path | None = None,
    on_damage: Callable[[], None] | None = None,
    host_stop: Callable[[], str] | None = None,
) -> SuiteOutcome:
    """Run pytest with the host-side result log and fold what it streamed;
    `console` is the guest's console log, watched for kernel damage
    (`on_damage()` is called once, from this thread, when it first shows);
    `host_stop()`: why QEMU stopped the guest, "" while it has not."""
    files = VMDir(results_dir.resolve())  # pytest may run in another directory
    resultlog, pytest_log = files.events, files.pytest_log
    resultlog.unlink(missing_ok=True)  # a previous run's events are not this run's
    env = {**env, "PYTEST_PLUGINS": "harness.resultlog", RESULTLOG_ENV: str(resultlog)}
    watchdog = Watchdog(check_timeout, console, on_damage)
    ended = _run_controller(argv, env, cwd, pytest_log, resultlog, deadline, watchdog, host_stop)
    checks, down = parse_resultlog(resultlog)
    return SuiteOutcome(
        checks,
        ended.returncode,
        pytest_log,
        down,
        ended.stopped,
        ended.hung[0] if ended.hung else None,
        ended.hung[1] if ended.hung else "",
        collected_count(pytest_log),
        host_stop=ended.host_stop,
    )


def _pytest(*args: str) -> list[str]:
    """This interpreter's pytest, verbose with every outcome summarised, no cache dir."""
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-rA", *args]


def _ship(guest: Guest, step: Deadline) -> guestship.Shipped:
    """Install the pytest stack and a fresh copy of the guest package and the
    suite in the guest, in one upload (harness.guestship)."""
    # on the guest's path: harness.guest, and the suite's own `unionfs` package
    paths = (guestenv.GUEST_ROOT, GUEST_SUITE)
    return guestship.ship(guest, step, guest_dir(), suite_dir(), paths)


def ended_cleanly(outcome: SuiteOutcome) -> bool:
    """The run ended by itself with verdicts, no worker lost, no check hung and
    no kernel damage seen (otherwise a fresh VM may follow: the runner boots it
    ahead)."""
    return (
        outcome.returncode in (0, 1)
        and not outcome.timed_out
        and not outcome.workers_down
        and not any(c.outcome == HUNG or c.kernel.damaged for c in outcome.checks)
        and not any(DAMAGE.search(line) for c in outcome.checks for line in c.kernel.lines)
    )


def run_in_vm(
    machine: Machine,
    results_dir: Path,
    suite_args: Sequence[str],
    deadline: Deadline,
    workers: int = 2,
    check_timeout: float = CHECK_TIMEOUT,
    on_damage: Callable[[], None] | None = None,
) -> SuiteOutcome:
    """Ship the suite and the pytest stack into the guest and run it there;
    `on_damage()` is called once when the console shows the kernel damaged."""
    guest = machine.guest
    if guest is None:
        raise InfraError("the VM is not reachable over SSH")
    shipped = _ship(guest, deadline.sub(300.0, "installing the suite in the guest"))
    results_dir.mkdir(parents=True, exist_ok=True)
    ssh_config = machine.workdir / "ssh_config"
    tx = (
        f"{workers}*ssh=-F {ssh_config} {machine.name}//python=python3//chdir={guestenv.GUEST_ROOT}"
    )
    with owned_temp("ctl") as tmp:
        # An empty ini in an empty directory: the controller must not pick up
        # any project's pytest configuration, and "suite" must not exist here so
        # xdist passes it through to the guest as a guest path.
        Path(tmp, "pytest.ini").write_text("[pytest]\n")
        argv = _pytest(
            "-p", "unionfs.options", "--dist", "load", "--tx", tx, "--max-worker-restart=0",
            "suite", *suite_args,
        )  # fmt: skip
        env = {"PYTHONPATH": str(suite_dir())}  # the controller loads unionfs.options
        events = VMDir(results_dir.resolve()).events
        events.unlink(missing_ok=True)  # the keeper must not see an earlier run's start
        keep = guestship.KeepWhenCollected(guest, shipped, events, deadline)
        with keep:
            outcome = _run_pytest(
                argv, env, Path(tmp), results_dir, deadline, check_timeout,
                machine.console_log(), on_damage, lambda: host_stop(machine),
            )  # fmt: skip
    return outcome


def host_stop(machine: Machine) -> str:
    """Why QEMU stopped this guest (vm.qmp.stop_reason), "" while it runs or when
    its monitor does not answer (then the watchdog judges as before)."""
    qemu = machine.qemu
    if qemu is None:
        return ""
    try:
        state = qmp.run_state(qemu.spec.qmp_socket, Deadline(5.0, "QMP query-status"))
    except QmpError as exc:
        log.debug("suite: no run state from QEMU: %s", exc)
        return ""
    return qmp.stop_reason(state, qemu.spec.disk)


def check_local_root() -> None:
    """UserError unless root: the suite on this host mounts filesystems."""
    if os.geteuid() != 0:
        raise UserError("the suite mounts filesystems: run `aufs-harness suite --local` as root")


def run_local(
    results_dir: Path, suite_args: Sequence[str], deadline: Deadline, workers: int = 0
) -> SuiteOutcome:
    """Run the suite on this host (root: it mounts filesystems)."""
    check_local_root()
    results_dir.mkdir(parents=True, exist_ok=True)
    argv = _pytest("--rootdir", str(suite_dir()), str(suite_dir()), *suite_args)
    if workers:
        argv += ["-n", str(workers), "--max-worker-restart=0"]
    return _run_pytest(argv, {}, results_dir, results_dir, deadline)


# For harness.multivm (one controller over several VMs): the same argv, shipping
# and controller as run_in_vm's.
pytest_argv = _pytest
ship = _ship
run_controller = _run_pytest
progress_line = _progress
