"""Run a matrix: every cell through harness.runner.run_target, one results
directory, known failures from a baseline, live progress.

A cell whose patch, build, boot or load fails is red with its reason and the
run goes on; a cell's bad input (a kernel no aufs branch fits, say) is an error
of that cell. Ctrl-C or SIGTERM stops the run: the cells not run are errors
saying so, the report is written, and the runner has stopped every VM.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness import scenario as scenarios
from harness.core.atomic import write_atomic
from harness.core.deadline import Deadline
from harness.core.errors import HarnessError, UserError, interruption
from harness.hosts import Host
from harness.matrix import placement
from harness.matrix.baseline import Baseline
from harness.matrix.reporter import Reporter
from harness.matrix.spec import Cell, Matrix
from harness.matrix.verdict import apply_baseline, matrix_exit_code
from harness.multivm import VMGroup, parse_vms
from harness.progress import listening
from harness.results import ERROR, Stage, TargetReport, junit_xml
from harness.resultsdir import JUNIT_XML, ResultsDir
from harness.runner import BUILD_TIMEOUT, RunOptions, run_budget, run_target
from harness.targets import Target
from kmod import config
from kmod import pipeline as kmod_pipeline
from kmod.pipeline import BuildSpec

log = logging.getLogger(__name__)

CORES_PER_BUILD = 4  # a kernel build below this many cores gains nothing from company


@dataclass(frozen=True)
class MachineOptions:
    """The VM settings every cell shares."""

    accel: str = "auto"
    memory_mb: int = 1024
    smp: int = 2


def build_slots(cores: int | None = None) -> int:
    """How many kernels to build at once: one per CORES_PER_BUILD cores, at
    least one (on 2 cores: one at a time)."""
    return max(1, (cores or os.cpu_count() or 1) // CORES_PER_BUILD)


def build_spec(cell: Cell, jobs: int | None = None) -> BuildSpec | None:
    """The aufs kernel build a cell names (None for a stock kernel)."""
    if cell.stock:
        return None
    spec = BuildSpec(
        kernel=cell.kernel,
        aufs_src=cell.aufs_src or "",
        aufs_ref=cell.aufs_ref,
        fixup_dir=Path(cell.fixup_dir) if cell.fixup_dir else None,
        aufs_options=cell.aufs_options,
        branch_fs=config.branch_filesystems(",".join(cell.branch_fs)),
    )
    if cell.scenario == scenarios.DOCKER:  # its kernel options, for docker cells only
        spec = scenarios.with_fragment(spec)
    return dataclasses.replace(spec, jobs=jobs) if jobs else spec


def target_of(cell: Cell) -> Target:
    """The runner's target for a cell, named after it."""
    return Target(
        distro=cell.distro, build=build_spec(cell), name=cell.name,
        cmdline_extra=cell.kernel_cmdline, scenario=cell.scenario,
    )  # fmt: skip


def suite_args(cell: Cell) -> tuple[str, ...]:
    """The suite's arguments: drivers, branch filesystems, option sets, then the cell's own."""
    args = [f"--driver={','.join(cell.drivers)}", f"--branch-fs={','.join(cell.branch_fs)}"]
    if cell.option_sets is not None:
        args.append(f"--option-set={','.join(cell.option_sets)}")
    return (*args, *cell.suite_args)


def memory_mb(cell: Cell, machine: MachineOptions) -> int:
    """The guest memory of a cell: a docker cell gets at least DOCKER_MEMORY_MB."""
    return scenarios.guest_memory(cell.scenario, machine.memory_mb)


def run_options(cell: Cell, results: ResultsDir, machine: MachineOptions) -> RunOptions:
    """The runner's options for a cell."""
    t = cell.timeouts
    return RunOptions(
        results_dir=results.root, accel=machine.accel, memory_mb=memory_mb(cell, machine),
        smp=machine.smp, workers=cell.workers, boot_timeout=t.boot, suite_timeout=t.suite,
        check_timeout=t.check, suite_args=suite_args(cell), fresh_vms=cell.fresh_vms,
        run_timeout=t.cell, group=vm_group(cell, machine),
    )  # fmt: skip


def vm_group(cell: Cell, machine: MachineOptions) -> VMGroup | None:
    """A cell's `vms`/`dist` as the runner's VMGroup (None: one VM, as `run`)."""
    shapes = parse_vms(cell.vms, machine.smp, memory_mb(cell, machine))
    if len(shapes) == 1 and cell.dist == "load":
        return None
    if cell.scenario != scenarios.SUITE:
        raise UserError(f"cell {cell.name}: scenario {cell.scenario} runs on one VM: drop vms/dist")
    return VMGroup(shapes, cell.dist)


def prebuild(cells: tuple[Cell, ...], slots: int) -> None:
    """With more than one build slot, build the cells' distinct kernels in
    parallel first (each with its share of the cores); the cells then find them
    in the artifact store. A failure here is left for the cell to report."""
    specs = {s for c in cells if (s := build_spec(c, (os.cpu_count() or 1) // slots))}
    if slots < 2 or len(specs) < 2:
        return
    log.info("building %d kernels, %d at a time", len(specs), slots)

    def one(spec: BuildSpec) -> None:
        try:
            kmod_pipeline.run(spec, Deadline(BUILD_TIMEOUT, f"building {spec.kernel}"))
        except HarnessError as exc:
            log.warning("prebuild of %s: %s (the cell reports it)", spec.kernel, exc)

    with ThreadPoolExecutor(max_workers=slots) as pool:
        list(pool.map(one, specs))


def run_matrix(
    matrix: Matrix,
    baseline: Baseline,
    results: ResultsDir,
    reporter: Reporter,
    machine: MachineOptions | None = None,
    hosts: tuple[Host, ...] = (),
) -> list[TargetReport]:
    """Run every cell of `matrix` in order (or, with `hosts`, spread over those
    hosts: harness.matrix.placement), writing report.json and junit.xml after
    each cell (so a killed run keeps what it did). Returns one report per cell,
    in the matrix's order; re-raises what interrupted the run after writing the
    report."""
    machine = machine or MachineOptions()
    reports: list[TargetReport] = []
    reporter.matrix_started(matrix)
    if hosts:
        return _run_on_hosts(matrix, baseline, results, reporter, machine, hosts, reports)
    prebuild(matrix.cells, build_slots())
    stopped = _not_run_marker(matrix, reports)
    with results.kept_on_interrupt(reports, before=stopped), listening(_listener(reporter)):
        for cell in matrix.cells:
            reporter.cell_started(cell)
            report = run_cell(cell, matrix, baseline, results, machine, reports)
            reporter.cell_finished(report)
            results.write(reports)
    reporter.matrix_finished(reports, matrix_exit_code(reports))
    return reports


def _run_on_hosts(
    matrix: Matrix,
    baseline: Baseline,
    results: ResultsDir,
    reporter: Reporter,
    machine: MachineOptions,
    hosts: tuple[Host, ...],
    reports: list[TargetReport],
) -> list[TargetReport]:
    """The cells on the hosts; each finished one judged here as a local cell is."""
    lock = threading.Lock()

    def finish(cell: Cell, report: TargetReport) -> None:
        with lock:
            finish_cell(report, cell, matrix, baseline, results)
            reports.append(report)
            reporter.cell_finished(report)
            results.write(reports)

    def budget(cell: Cell) -> float:
        return run_budget(run_options(cell, results, machine))

    run = placement.HostRun(
        matrix, results, reporter, machine.accel, machine.memory_mb, machine.smp, finish, budget
    )
    with results.kept_on_interrupt(reports, before=_not_run_marker(matrix, reports)):
        placement.run_cells_on_hosts(run, hosts)
    order = {c.name: i for i, c in enumerate(matrix.cells)}
    reports.sort(key=lambda r: order.get(r.target, len(order)))
    results.write(reports)
    reporter.matrix_finished(reports, matrix_exit_code(reports))
    return reports


def run_cell(
    cell: Cell,
    matrix: Matrix,
    baseline: Baseline,
    results: ResultsDir,
    machine: MachineOptions,
    sink: list[TargetReport],
) -> TargetReport:
    """One cell: run_target, then its matrix facts, the baseline's judgement and
    its own junit.xml. A UserError of the cell is that cell's error verdict."""
    before = len(sink)
    try:
        report = run_target(target_of(cell), run_options(cell, results, machine), sink)
    except UserError as exc:
        if len(sink) == before:
            sink.append(TargetReport(target=cell.name))
        report = sink[-1]
        report.verdict, report.reason = ERROR, str(exc).splitlines()[0]
        log.error("%s: %s", cell.name, exc)
    finish_cell(report, cell, matrix, baseline, results)
    return report


def finish_cell(
    report: TargetReport, cell: Cell, matrix: Matrix, baseline: Baseline, results: ResultsDir
) -> None:
    """A cell's report, wherever it ran: its matrix facts, the baseline's
    judgement, its own junit.xml."""
    annotate(report, cell, matrix, baseline)
    apply_baseline(report, cell, baseline)
    cell_dir = results.target(cell.name).path
    write_atomic(cell_dir / JUNIT_XML, junit_xml([report]))
    report.extra["junit"] = str(cell_dir / JUNIT_XML)


def annotate(report: TargetReport, cell: Cell, matrix: Matrix, baseline: Baseline) -> None:
    """The contract with the report's readers: extra["cell"] (the axes) and
    extra["matrix"] (file, name, baseline)."""
    report.extra["cell"] = cell.axes()
    report.extra["matrix"] = {
        "path": str(matrix.path),
        "name": matrix.name,
        "baseline": str(baseline.path) if baseline.path else None,
    }
    report.extra.setdefault("fixed", [])
    report.extra.setdefault("known", 0)


def _listener(reporter: Reporter) -> Callable[[TargetReport, Stage, bool], None]:
    def on_stage(report: TargetReport, st: Stage, done: bool) -> None:
        reporter.stage(report, st.name, st.status if done else "started", st.seconds)

    return on_stage


def _not_run_marker(matrix: Matrix, reports: list[TargetReport]) -> Callable[[BaseException], None]:
    """What completes the reports when the run is interrupted: the cell in
    flight and every cell not started are errors naming the interruption."""

    def mark(exc: BaseException) -> None:
        done = {r.target for r in reports}
        why = f"not run: the matrix was {interruption(exc)}"
        for cell in matrix.cells:
            if cell.name not in done:
                report = TargetReport(target=cell.name, verdict=ERROR, reason=why)
                annotate(report, cell, matrix, Baseline(None))
                reports.append(report)
        cells = {c.name: c for c in matrix.cells}
        for report in reports:
            if report.verdict == "pending":
                report.interrupted(exc)
            if "cell" not in report.extra and report.target in cells:
                annotate(report, cells[report.target], matrix, Baseline(None))

    return mark
