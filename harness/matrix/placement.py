"""A matrix over several VM hosts (harness.hosts): cells placed by the
resources they need, each run there by `aufs-harness run`, its results copied
back into the one results directory.

No scheduler: every host gets as many worker threads as VMs fit on it
(Host.slots: its cores over the guest's CPUs, its memory over the guest's
memory plus QEMU's), and each worker takes the next cell from one shared queue.
A host that does not answer before a cell starts is marked down and the cell
goes back to the queue for the other hosts; a host that drops while it runs a
cell turns that cell into an error verdict with evidence (host-evidence.txt),
and its other workers stop taking cells. When every host is down, the cells
left are errors saying so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.atomic import write_atomic
from harness.core.deadline import Deadline
from harness.core.errors import HarnessError, InfraError, UserError
from harness.hosts import FETCH_TIMEOUT, Host, HostSession
from harness.matrix.reporter import Reporter
from harness.matrix.spec import Cell, Matrix
from harness.results import ERROR, TargetReport, read_json
from harness.resultsdir import REPORT_JSON, ResultsDir, slug

log = logging.getLogger(__name__)

HOST_EVIDENCE = "host-evidence.txt"
REMOTE_REPORT = "host-report.json"


def remote_args(cell: Cell, accel: str, memory_mb: int, smp: int) -> list[str]:
    """`aufs-harness run`'s arguments for a cell (after `run --results DIR`)."""
    t = cell.timeouts
    args = [
        "--distro", cell.distro, "--accel", accel, "--memory", str(memory_mb),
        "--smp", str(smp), "--boot-timeout", str(t.boot), "--workers", str(cell.workers),
        "--suite-timeout", str(t.suite), "--check-timeout", str(t.check),
        "--fresh-vms", str(cell.fresh_vms), "--branch-fs", ",".join(cell.branch_fs),
        "--vms", cell.vms, "--dist", cell.dist,
    ]  # fmt: skip
    if cell.kernel_cmdline:
        raise UserError(f"cell {cell.name}: kernel_cmdline cannot yet be run on a remote host")
    if not cell.stock:
        args += ["--kernel", cell.kernel, "--aufs-src", cell.aufs_src or ""]
        args += ["--aufs-ref", cell.aufs_ref] if cell.aufs_ref else []
        args += ["--fixup-dir", cell.fixup_dir] if cell.fixup_dir else []
        for option in cell.aufs_options:
            args += ["--aufs-option", option]
    suite = [f"--driver={','.join(cell.drivers)}"]
    if cell.option_sets is not None:
        suite.append(f"--option-set={','.join(cell.option_sets)}")
    return [*args, "--", *suite, *cell.suite_args]


def place(
    cells: tuple[Cell, ...], hosts: tuple[Host, ...], smp: int, memory_mb: int
) -> dict[str, int]:
    """Each host's worker count (the VMs that fit on it at once). Raises
    UserError when no host can carry a cell's VM."""
    slots = {h.name: h.slots(smp, memory_mb) for h in hosts}
    if cells and not any(slots.values()):
        raise UserError(
            f"no host can run a VM of {smp} CPUs and {memory_mb} MB: give hosts with more "
            "cores or memory_mb, or a smaller --smp/--memory"
        )
    return slots


@dataclass
class _Queue:
    """The cells not started yet, and the hosts known to be down (shared by the workers)."""

    cells: deque[Cell]
    down: dict[str, str] = field(default_factory=dict)  # host -> why
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: bool = False

    def take(self, host: str) -> Cell | None:
        with self.lock:
            if self.stop or host in self.down or not self.cells:
                return None
            return self.cells.popleft()

    def give_back(self, cell: Cell, host: str, why: str) -> None:
        with self.lock:
            self.down.setdefault(host, why)
            self.cells.appendleft(cell)


@dataclass
class HostRun:
    """One matrix's run over hosts: what every worker shares."""

    matrix: Matrix
    results: ResultsDir
    reporter: Reporter
    accel: str
    memory_mb: int
    smp: int
    finish: Callable[[Cell, TargetReport], None]  # the baseline, junit, report.json
    budget: Callable[[Cell], float]  # the remote run's own budget (runner.run_budget)


def run_cells_on_hosts(run: HostRun, hosts: tuple[Host, ...]) -> dict[str, str]:
    """Run every cell of the matrix on the hosts; each finished cell goes to
    run.finish. Returns the hosts that went down, with why; the cells no host
    could run are finished as errors saying so."""
    slots = place(run.matrix.cells, hosts, run.smp, run.memory_mb)
    queue = _Queue(deque(run.matrix.cells))
    workers = [
        threading.Thread(
            target=_worker, args=(run, host, queue), daemon=True, name=f"host-{host.name}-{i}"
        )
        for host in hosts
        for i in range(slots[host.name])
    ]
    log.info("hosts: %s", ", ".join(f"{h.name} x{slots[h.name]}" for h in hosts))
    try:
        for w in workers:
            w.start()
        while any(w.is_alive() for w in workers):
            for w in workers:
                w.join(0.5)
    except BaseException:
        queue.stop = True
        raise
    why = "; ".join(f"{h}: {w}" for h, w in queue.down.items()) or "no host could run it"
    for cell in queue.cells:
        report = TargetReport(
            cell.name, verdict=ERROR, reason=f"not run: every host is down ({why})"
        )
        run.finish(cell, report)
    return dict(queue.down)


def _worker(run: HostRun, host: Host, queue: _Queue) -> None:
    while (cell := queue.take(host.name)) is not None:
        session = HostSession(host)
        try:
            session.connect(Deadline(60.0, f"connecting to {host.name}"))
        except InfraError as exc:
            log.error("host %s is down, its cells go to the other hosts: %s", host.name, exc)
            queue.give_back(cell, host.name, str(exc).splitlines()[0])
            return
        try:
            run.reporter.cell_started(cell)
            report = run_on_host(run, session, cell)
            if report.extra.get("host_dropped"):
                with queue.lock:
                    queue.down.setdefault(host.name, report.reason)
            run.finish(cell, report)
        finally:
            session.close()


def run_on_host(run: HostRun, session: HostSession, cell: Cell) -> TargetReport:
    """One cell on one host: `aufs-harness run` there, its report and its
    directory copied back under the cell's name. A connection lost on the way
    is the cell's error verdict with host-evidence.txt."""
    host = session.host
    cell_dir = run.results.target(cell.name).path
    base = f"{host.workdir}/{run.results.root.name}/{slug(cell.name)}"
    t0 = time.monotonic()
    budget = (cell.timeouts.cell or run.budget(cell)) + FETCH_TIMEOUT
    deadline = Deadline(budget, f"cell {cell.name} on host {host.name}")
    args = remote_args(cell, run.accel, run.memory_mb, run.smp)
    try:
        remote = session.run_harness(args, base, deadline)
        if remote.results is None:
            last = (remote.output.splitlines() or ["(no output)"])[-1]
            raise InfraError(f"aufs-harness run exited {remote.status} with no results: {last}")
        local_report = cell_dir / REMOTE_REPORT
        write_atomic(local_report, session.read_text(f"{remote.results}/{REPORT_JSON}"))
        report = read_json(local_report)[0]
        remote_dir = f"{remote.results}/{slug(report.target)}"
        count = session.fetch_tree(remote_dir, cell_dir, deadline)
    except HarnessError as exc:
        return _dropped(cell, host, cell_dir, args, exc, time.monotonic() - t0)
    log.info("%s: %d files back from %s:%s", cell.name, count, host.name, remote_dir)
    report.extra["host"] = {"name": host.name, "target": report.target, "results": remote.results}
    report.target = cell.name
    report.console_log = report.console_log.replace(remote_dir, str(cell_dir))
    for st in report.stages:
        st.detail = st.detail.replace(remote_dir, str(cell_dir))
    return report


def _dropped(
    cell: Cell, host: Host, cell_dir: Path, argv: list[str], exc: HarnessError, seconds: float
) -> TargetReport:
    """The cell a host could not finish: an error with the evidence of why."""
    first = str(exc).splitlines()[0]
    evidence = cell_dir / HOST_EVIDENCE
    write_atomic(
        evidence,
        f"host: {host.name} ({host.user}@{host.address}:{host.port})\n"
        f"cell: {cell.name}\nafter: {seconds:.1f}s\n"
        f"command: {' '.join(argv)}\nerror: {type(exc).__name__}: {exc}\n",
    )
    report = TargetReport(cell.name, verdict=ERROR, seconds=seconds)
    report.reason = f"infrastructure: host {host.name} failed during the cell: {first}"
    report.extra["host"] = {"name": host.name, "evidence": str(evidence)}
    report.extra["host_dropped"] = True
    log.error("%s: %s", cell.name, report.reason)
    return report
