"""Run one target end to end: build -> image -> VMs (boot, load, suite) -> report.

Whatever happens, the target ends with a verdict and its console log: a VM
that never boots or dies mid-run is an "error" verdict with the evidence, not
a gap in the report. One run-wide Deadline is passed down; every step's own
deadline is cut from it (Deadline.sub), so no step outlives the run.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from harness import guestsuite, keptvm, resume
from harness import scenario as scenarios
from harness.bootspec import IMAGE_TIMEOUT, image_facts, preflight, resolve_boot
from harness.core.deadline import Deadline
from harness.core.errors import HarnessError, TargetFailure, UserError
from harness.guest.kmsg import collapse_hung_reports
from harness.multivm import Shape, VMGroup
from harness.progress import StageHandle, stage
from harness.results import ERROR, FAILED, HUNG, CheckResult, TargetReport
from harness.resultsdir import ResultsDir, TargetDir, VMDir
from harness.sparevm import Spare
from harness.suitevm import SuiteVM, VMFactory, machine_vms
from harness.targets import Target
from kmod import pipeline as kmod_pipeline
from kmod.pipeline import BuildResult, BuildSpec
from vm.machine import vms_root

log = logging.getLogger(__name__)

# Each step's budget, in seconds; the step gets min(budget, the run's time left).
BUILD_TIMEOUT = 3 * 3600.0  # a kernel + aufs build (a cold one takes ~8 min on 2 cores)
START_TIMEOUT = 120.0  # QEMU up with its console open (the boot itself: --boot-timeout)
UNAME_TIMEOUT = 30.0  # one command over an SSH connection that just answered
EVIDENCE_TIMEOUT = 60.0  # sysrq w, a second's sleep and dmesg in a guest with a hung check
ANSWER_TIMEOUT = 15.0  # does the guest still run `true` over SSH after the suite
LOAD_BUDGET = 3 * 60.0  # loading the modules, with the probes around each load
SHIP_TIMEOUT = 300.0  # the suite and its pytest stack into a guest (as guestsuite's)
# No fresh VM with less of the suite's time left than this: it could not boot
# and run anything before the suite's deadline.
FRESH_VM_MIN_LEFT = 60.0


# On the bullseye aufs kernel the suite holds 4 kernel-killing checks and a few
# that damage it (busy inodes): 8 VMs in all. 6 fresh VMs left 315 of 978 checks
# unrun; every VM costs a boot (~10 s) and only runs when a check killed the last.
FRESH_VMS = 12


@dataclass(frozen=True)
class RunOptions:
    results_dir: Path  # the run's results directory (harness.resultsdir.ResultsDir)
    accel: str = "auto"
    memory_mb: int = 1024
    smp: int = 2
    workers: int = 2
    boot_timeout: float = 180.0
    suite_timeout: float = 1800.0  # shared by every VM of the target
    check_timeout: float = 300.0
    suite_args: Sequence[str] = field(default_factory=tuple)
    keep_vm: bool = False
    fresh_vms: int = FRESH_VMS  # VMs to boot for the checks a kernel-killing check cost
    run_timeout: float | None = None  # the whole target; None: run_budget()
    copy_up: bool = True  # the docker scenario's copy-up measurement (repro leaves it out)
    group: VMGroup | None = None  # several VMs at once (--vms, --dist): harness.vmgroup


def run_budget(opts: RunOptions) -> float:
    """Seconds the whole target may take when no run_timeout is given: every
    step's budget added up, for the first VM and each fresh one, so that the
    run's deadline never cuts a step shorter than its own budget."""
    per_vm = START_TIMEOUT + opts.boot_timeout + UNAME_TIMEOUT + LOAD_BUDGET
    per_vm += ANSWER_TIMEOUT + EVIDENCE_TIMEOUT
    vms = opts.fresh_vms + (len(opts.group.shapes) if opts.group else 1)
    return BUILD_TIMEOUT + IMAGE_TIMEOUT + opts.suite_timeout + vms * per_vm


@dataclass
class TargetRun:
    """One target's run as the VM loop sees it: what it tests, where it writes,
    how it gets a VM, and the run's deadline."""

    target: Target
    build: BuildResult | None
    opts: RunOptions
    report: TargetReport
    out: TargetDir
    new_vm: VMFactory
    deadline: Deadline  # the whole run's
    # boots the next VM ahead once the kernel shows damage (harness.sparevm)
    spare: Spare | None = None

    def next_vm(self) -> SuiteVM:
        """The VM booted ahead, if any, else a new one."""
        return self.spare.new_vm() if self.spare is not None else self.new_vm()


@dataclass(frozen=True)
class VMPlan:
    """What one VM of the run does."""

    number: int  # 1: the whole suite; 2, 3, ...: fresh VMs for the checks left
    standing: tuple[CheckResult, ...]  # results that stand: deselected on this VM
    workers: int  # xdist workers in the guest
    suite: Deadline  # the suite's deadline, shared by every VM

    @property
    def tag(self) -> str:
        """The suffix of this VM's stage names: "" for VM 1, "#2" for VM 2."""
        return "" if self.number == 1 else f"#{self.number}"


class Stop(Enum):
    """Why the run boots no further VM, and what the report then says."""

    DONE = "no check needs a fresh VM: the report stands as the VM left it"
    NO_CHECK_ENDED = "a fresh VM ended no check: noted, the skips stay"
    NOTHING_LEFT = "the check that hung was the last one: nothing left to run"
    KEEP_VM = "--keep-vm keeps the damaged VM: the skips stay, the damage named"
    OUT_OF_FRESH_VMS = "--fresh-vms used up: the skips stay, the damage named"
    DEADLINE = "too little of the suite's time left for a fresh VM: the skips stay"


STOP_NOTES = {Stop.NO_CHECK_ENDED: "no check ended on that VM: stopped"}


def run_target(
    target: Target, opts: RunOptions, sink: list[TargetReport] | None = None
) -> TargetReport:
    """Run one target. The report is appended to `sink` at once, so a caller
    interrupted mid-run (Ctrl-C, SIGTERM) still has it to write out. Raises
    UserError for bad input (the report then an error saying why) and
    re-raises what interrupted the run; any other failure is the report's verdict."""
    report = TargetReport(target=target.label)
    if sink is not None:
        sink.append(report)
    t0 = time.monotonic()
    out = ResultsDir(opts.results_dir).target(target.label)
    deadline = Deadline(opts.run_timeout or run_budget(opts), "the run")
    try:
        _stages(target, opts, report, out, deadline)
    except UserError as exc:  # found mid-run (a pin the mirror lacks): the report says so
        report.verdict, report.reason = ERROR, str(exc).splitlines()[0]
        raise
    except TargetFailure as exc:
        report.verdict, report.reason = FAILED, str(exc).splitlines()[0]
        log.error("%s: %s", target.label, exc)
    except HarnessError as exc:
        report.verdict, report.reason = ERROR, str(exc).splitlines()[0]
        log.error("%s: %s", target.label, exc)
    except BaseException as exc:  # Ctrl-C, SIGTERM: the report still says so
        report.interrupted(exc)
        raise
    finally:
        report.seconds = time.monotonic() - t0
    report.settle()
    return report


def _stages(
    target: Target, opts: RunOptions, report: TargetReport, out: TargetDir, deadline: Deadline
) -> None:
    """Build (when the target names a kernel), image, then the VMs."""
    build: BuildResult | None = None
    preflight(target, opts.accel, deadline)
    if target.build is not None:
        with stage(report, "build", f"building {target.build.kernel} with aufs") as h:
            budget = deadline.sub(BUILD_TIMEOUT, "building the kernel")
            build = build_kernel(target.build, report, h, budget)
    with stage(report, "image", "preparing the image") as h:
        boot = resolve_boot(target, deadline.sub(IMAGE_TIMEOUT, "building the image"), h, build)
    report.extra["image"] = image_facts(target)  # what repro boots again
    report.kernel_release = boot.kernel_release
    keep_as = keptvm.name_for(target.label) if opts.keep_vm else None
    vms = machine_vms(boot, accel=opts.accel, memory_mb=opts.memory_mb, smp=opts.smp,
                      keep_as=keep_as)  # fmt: skip
    run = TargetRun(target, build, opts, report, out, vms, deadline)
    if opts.group is None:
        if not opts.keep_vm and opts.fresh_vms > 0:  # a kept VM has one name: never two at once
            run.spare = Spare(
                vms,
                lambda: deadline.sub(START_TIMEOUT, "starting QEMU"),
                lambda: deadline.sub(opts.boot_timeout, "booting to SSH"),
                lambda vm: _get_ready_ahead(run, vm),
            )
        try:
            run_vms(run)
        finally:
            if run.spare is not None:
                run.spare.close()
        return
    from harness import vmgroup  # it builds on this module's steps

    def shaped(shape: Shape) -> SuiteVM:
        return machine_vms(boot, accel=opts.accel, memory_mb=shape.memory_mb, smp=shape.cpus)()

    vmgroup.run_group(vmgroup.GroupRun(run, opts.group, shaped))


def run_vms(run: TargetRun) -> Stop:
    """Boot, load and run the suite; after a check hangs or damages the kernel,
    run the checks it cost on fresh VMs (up to opts.fresh_vms), so they are
    results rather than skips. Returns why no further VM was booted."""
    suite = run.deadline.sub(run.opts.suite_timeout, "the suite")
    plan = VMPlan(1, (), run.opts.workers, suite)
    retried: set[str] = set()  # ambiguous checks that already went to a fresh VM
    notes: list[str] = []
    while True:
        outcome = one_vm(run, plan)
        # Until the next VM reports, this VM's results are the report: a
        # fresh VM that fails to boot loses nothing.
        run.report.checks = [*plan.standing, *outcome.checks]
        parts = resume.split(outcome, retried)
        if parts.needs_fresh_vm:
            notes.append(f"VM {plan.number}: {parts.why}")
            run.report.extra["vms"] = notes  # now: kept even if the next VM never boots
        stop = why_stop(run.opts, plan, outcome, parts)
        if stop is not None:
            break
        retried.update(c.nodeid for c in parts.again if resume.ambiguous(c))
        log.warning("suite: %s; running the checks left on a fresh VM", parts.why)
        run.report.verdict, run.report.reason = "pending", ""  # the next VM judges again
        plan = _next_plan(run.opts, plan, parts)
    if stop in STOP_NOTES:
        notes.append(STOP_NOTES[stop])
    log.debug("suite: no further VM: %s", stop.value)
    _summarise(run.report, notes, plan.number)
    return stop


def why_stop(
    opts: RunOptions, plan: VMPlan, outcome: guestsuite.SuiteOutcome, parts: resume.Split
) -> Stop | None:
    """Why no fresh VM follows this one, or None when one should."""
    if not parts.needs_fresh_vm:
        return Stop.DONE
    if plan.number > 1 and not parts.final:
        return Stop.NO_CHECK_ENDED
    if outcome.collected is not None and outcome.collected <= len(parts.final):
        return Stop.NOTHING_LEFT
    if opts.keep_vm:
        return Stop.KEEP_VM
    if plan.number > opts.fresh_vms:
        return Stop.OUT_OF_FRESH_VMS
    if plan.suite.remaining() < FRESH_VM_MIN_LEFT:
        return Stop.DEADLINE
    return None


def _next_plan(opts: RunOptions, plan: VMPlan, parts: resume.Split) -> VMPlan:
    """The fresh VM's plan: this VM's standing results join the deselected ones;
    one worker when a suspect goes again, so the kernel log has one author."""
    workers = 1 if parts.suspects else opts.workers
    return VMPlan(plan.number + 1, (*plan.standing, *parts.final), workers, plan.suite)


def _summarise(report: TargetReport, notes: list[str], vms: int) -> None:
    """A check that hung or damaged the kernel is a finding about the target:
    name the first such event, and how many fresh VMs ran the checks left."""
    if not notes:
        return
    summary = notes[0] + (f" (and {len(notes) - 1} more, see report.json)" if notes[1:] else "")
    if vms > 1:
        summary += f"; {vms - 1} fresh VM(s) ran the checks left"
    if report.verdict == ERROR:
        report.reason = f"{report.reason} (VM {vms}); {summary}"
    elif vms > 1:
        report.verdict, report.reason = FAILED, summary


def one_vm(run: TargetRun, plan: VMPlan) -> guestsuite.SuiteOutcome:
    """One VM: boot, load, the suite minus the checks in `plan.standing`; judged,
    and its console log kept in its results directory whatever happens."""
    out = run.out.vm(plan.number)
    vm = run.next_vm()
    keep = False  # Ctrl-C or SIGTERM: never kept
    try:
        outcome = _in_vm(run, plan, vm, out)
        keep = run.opts.keep_vm
        return outcome
    except Exception:
        keep = run.opts.keep_vm  # a module that will not load, say: the VM stays for a look
        raise
    finally:
        _keep_console(run, vm, out, keep)


def _in_vm(run: TargetRun, plan: VMPlan, vm: SuiteVM, out: VMDir) -> guestsuite.SuiteOutcome:
    """What one_vm does in the VM: boot, load, suite, judged."""
    report = run.report
    _boot(run, plan, vm)
    with stage(report, f"load{plan.tag}", "loading the union filesystems under test") as h:
        loaded = vm.load(run.target.modules(run.build))
        report.extra.setdefault("load", loaded)
        early = run.spare is not None and run.spare.was_ahead(vm)
        nothing = "loaded ahead, while the previous VM was judged" if early else "all built in"
        h.note("; ".join(str(r["reason"]) for r in loaded.values()) or nothing)
    if run.target.docker:
        _start_dockerd(run, plan, vm)
    with stage(report, f"suite{plan.tag}", "running the union suite in the guest over xdist") as h:
        args = [*run.opts.suite_args, *resume.deselect_args(plan.standing)]
        workers = plan.workers
        if run.target.docker:
            args, workers = [*scenarios.DOCKER_SUITE_ARGS, *args], scenarios.DOCKER_WORKERS
        ahead = _boot_ahead(run, plan)
        outcome = vm.run_suite(out, args, plan.suite, workers, run.opts.check_timeout, ahead)
        if ahead is not None and not guestsuite.ended_cleanly(outcome) and not outcome.host_stop:
            ahead()  # the next VM boots while this one is judged
        _judge_suite(run, vm, outcome, out)
        h.note(f"{len(outcome.checks)} checks; log {outcome.log}")
    if run.target.docker and run.opts.copy_up and plan.number == 1 and vm.alive():
        _copy_up_bench(run, vm)
    return outcome


def _get_ready_ahead(run: TargetRun, vm: SuiteVM) -> None:
    """A VM booted ahead loads the modules and receives the suite while the
    previous one is judged; the runner's load stage then finds them loaded (and
    says so) and run_suite finds the suite in place."""
    vm.load(run.target.modules(run.build))
    vm.ship(run.deadline.sub(SHIP_TIMEOUT, "installing the suite in the guest"))


def _boot_ahead(run: TargetRun, plan: VMPlan) -> Callable[[], None] | None:
    """What starts the next VM ahead, when a fresh VM may still follow this one."""
    if run.spare is None or plan.number > run.opts.fresh_vms:
        return None
    return run.spare.prepare


def _start_dockerd(run: TargetRun, plan: VMPlan, vm: SuiteVM) -> None:
    """The docker scenario: dockerd with --storage-driver=aufs in the guest. Its
    refusal or fallback is the target's failure, named (scenario.start_dockerd)."""
    with stage(
        run.report, f"docker{plan.tag}", "starting dockerd with the aufs storage driver"
    ) as h:
        budget = run.deadline.sub(scenarios.START_TIMEOUT, "starting dockerd")
        info = scenarios.start_dockerd(vm.run_in_guest, vm.put_in_guest, budget)
        run.report.extra.setdefault("docker", info)
        h.note(f"dockerd {info.get('server_version')}: storage driver {info.get('driver')}")


def _copy_up_bench(run: TargetRun, vm: SuiteVM) -> None:
    """The docker scenario's copy-up measurement, into the report's extra."""
    with stage(run.report, "copy-up", "measuring aufs copy-up cost in the guest") as h:
        budget = run.deadline.sub(scenarios.BENCH_TIMEOUT, "measuring copy-up")
        bench = scenarios.copy_up_bench(vm.run_in_guest, vm.put_in_guest, budget)
        run.report.extra["docker_copy_up"] = bench
        table = scenarios.copy_up_table(bench)
        log.info("docker: copy-up cost in the guest:\n%s", table)
        h.note(f"{len(bench.get('rows', []))} sizes measured")


def _boot(run: TargetRun, plan: VMPlan, vm: SuiteVM) -> None:
    """Start the VM and wait for SSH, recording accel, boot time and kernel release."""
    report = run.report
    with stage(report, f"boot{plan.tag}", f"booting {vm.label}") as h:
        boot = run.deadline.sub(run.opts.boot_timeout, "booting to SSH")
        ahead = run.spare is not None and run.spare.wait_booted(vm, boot)
        if not ahead:
            vm.start(run.deadline.sub(START_TIMEOUT, "starting QEMU"))
            vm.wait_ssh(boot)
        report.accel = vm.accel
        when = f" (booted ahead while VM {plan.number - 1} was judged)" if ahead else ""
        h.note(f"SSH answered after {vm.boot_seconds:.1f}s under {vm.accel}{when}")
        report.kernel_release = vm.kernel_release(run.deadline.sub(UNAME_TIMEOUT, "uname"))
        report.extra.setdefault("boot_seconds", vm.boot_seconds)


def _keep_console(run: TargetRun, vm: SuiteVM, out: VMDir, keep: bool) -> None:
    """Keep its console log; then keep the VM running (`keep` and it still runs:
    report.extra["kept_vm"] = {"name", "ssh_config"}), or stop it and discard
    its disk."""
    kept = keep and vm.alive()
    if not kept:
        vm.stop()
    console = vm.console_log()
    if console.exists():
        saved = out.save_console(console)
        run.report.console_log = run.report.console_log or str(saved)
    if kept:
        name = vm.keep()
        run.report.extra["kept_vm"] = {
            "name": name,
            "ssh_config": str(vms_root() / name / "ssh_config"),
        }
        log.info(
            "--keep-vm: VM %s keeps running (`aufs-harness vm down --name %s` stops it)", name, name
        )
    else:
        vm.discard()


def build_kernel(
    spec: BuildSpec, report: TargetReport, handle: StageHandle, deadline: Deadline
) -> BuildResult:
    """Run the kmod pipeline; a patch or compile failure is this target's verdict
    (TargetFailure: status and first detail, the other details, the log)."""
    result = kmod_pipeline.run(spec, deadline)
    report.extra["build"] = result.to_json()
    report.kernel_release = result.kernel_release or ""
    for patch in result.patches:
        log.info("build: %s", patch["summary"])
    if not result.ok:
        raise TargetFailure(
            "\n".join(
                [f"{result.status}: {result.details[0]}", *result.details[1:], f"log: {result.log}"]
            )
        )
    if result.cached:
        handle.cached(f"kernel {result.kernel_release} and aufs.ko reused (key {result.key})")
        log.info("build: cached: nothing rebuilt (%s)", result.key)
    else:
        handle.note(f"built {result.kernel_release}")
    return result


def hang_evidence(vm: SuiteVM, out: VMDir, deadline: Deadline) -> str:
    """Collect the blocked tasks and kernel log of a guest that still answers
    into hang-evidence.txt; returns what blocked, or why nothing was collected."""
    try:
        text = collapse_hung_reports(vm.hang_evidence(deadline))
    except HarnessError as exc:
        return f"(could not collect evidence: {exc})"
    out.save_hang_evidence(text)
    return blocked_tasks(text)


def console_evidence(vm: SuiteVM, out: VMDir, deadline: Deadline) -> tuple[str, bool]:
    """For a guest that no longer answers SSH: sysrq through QEMU's monitor into
    hang-evidence.txt. Returns (what blocked, whether evidence was saved)."""
    try:
        text = collapse_hung_reports(vm.console_evidence(deadline))
    except HarnessError as exc:
        return f"(no evidence through QMP: {exc})", False
    if not text.strip():
        return "", False
    out.save_hang_evidence(text)
    return blocked_tasks(text), True


def blocked_tasks(evidence: str) -> str:
    """ "task blocked in work_fn; ..." from sysrq w output ("" when none is in D state).
    A task's "Workqueue:" line follows its task line (sched_show_task()); a task seen
    twice (its hung-task report and sysrq w) is named once, by pid."""
    found: dict[str, list[str]] = {}  # pid (or running number) -> [comm, queue]
    last: list[str] | None = None
    for line in evidence.splitlines():
        task = re.search(r"task:(\S+)\s+state:(\S)(?:.*?\bpid:\s*(\d+))?", line)
        if task:
            last = None
            if task.group(2) == "D":
                key = task.group(3) or f"#{len(found)}"
                last = found.setdefault(key, [task.group(1), ""])
            continue
        queue = re.search(r"Workqueue: \S+ (\S+)", line)
        if queue and last is not None and not last[1]:
            last[1] = queue.group(1)
    return "; ".join(
        f"{comm} blocked" + (f" in {queue}" if queue else "") for comm, queue in found.values()
    )


def _judge_suite(run: TargetRun, vm: SuiteVM, outcome: guestsuite.SuiteOutcome, out: VMDir) -> None:
    """Tell a failing check from a hung test, a hung kernel, a dead VM and a VM
    QEMU stopped."""
    report = run.report
    if outcome.host_stop:
        _judge_host_stop(report, outcome)
        return
    alive = vm.alive()
    after = run.deadline.sub(ANSWER_TIMEOUT, "checking the guest after the suite")
    ssh_ok = alive and vm.answers(after)
    in_flight = [c for c in outcome.checks if c.outcome == HUNG]
    died = guestsuite.kernel_death(vm.console_log()) if not ssh_ok else ""
    # A check that panicked the kernel is also declared hung once the console
    # shows it (DAMAGED_GRACE later): the death, not the hang, is the verdict.
    if died and in_flight:
        _judge_death(report, outcome, in_flight, died)
        return
    if outcome.timed_out:
        _judge_hang(run, vm, outcome, out, ssh_ok)
        return
    if not alive:
        how = vm.ended()
        report.verdict = ERROR
        report.reason = "the VM died during the suite" + (f": QEMU {how}" if how else "")
        report.reason += " (see console.log)"
    elif outcome.workers_down:
        report.verdict = ERROR
        report.reason = f"xdist worker crashed: {outcome.workers_down[0][:200]}"
    elif outcome.returncode not in (0, 1) and not outcome.checks:
        report.verdict = ERROR
        report.reason = f"pytest exited {outcome.returncode} with no result (see {outcome.log})"
    if not ssh_ok and alive:
        report.verdict, report.reason = ERROR, "SSH to the guest dropped during the suite"


def _judge_host_stop(report: TargetReport, outcome: guestsuite.SuiteOutcome) -> None:
    """QEMU stopped the guest (its disk overlay met ENOSPC on the host, say): an
    infrastructure error, not a finding. The checks in flight are errors saying
    so, not hangs (so no fresh VM runs them again on the same full disk)."""
    for c in outcome.checks:
        if c.outcome == HUNG:
            c.outcome, c.message = ERROR, f"not finished: {outcome.host_stop}"
    not_run = (outcome.collected or 0) - len(outcome.checks)
    report.verdict = ERROR
    report.reason = f"infrastructure: {outcome.host_stop}"
    report.reason += f"; {not_run} checks not run" if not_run > 0 else ""


def _judge_hang(
    run: TargetRun, vm: SuiteVM, outcome: guestsuite.SuiteOutcome, out: VMDir, ssh_ok: bool
) -> None:
    """The suite was stopped: a check hung (a finding, exit 1) or, with no check
    to blame, the suite's deadline passed (an error)."""
    deadline = run.deadline.sub(EVIDENCE_TIMEOUT, "hang evidence")
    if ssh_ok:
        evidence, saved = hang_evidence(vm, out, deadline), True
        cause = "the guest still answers" + (f"; {evidence}" if evidence else "")
    else:
        evidence, saved = console_evidence(vm, out, deadline)
        cause = "the guest kernel no longer answers (see console.log)"
        cause += f"; {evidence}" if evidence else ""
    for c in outcome.checks:
        if c.outcome == HUNG:
            why = f" ({outcome.hung_why})" if c.nodeid == outcome.hung_check else ""
            c.message = f"{c.message}{why}: {cause}"
            c.details = f"evidence: {out.hang_evidence}" if saved else ""
    not_run = (outcome.collected or 0) - len(outcome.checks)
    what = f"{outcome.hung_check} hung" if outcome.hung_check else "suite deadline passed"
    report = run.report
    report.verdict = FAILED if outcome.hung_check else ERROR
    report.reason = what + (f"; {not_run} checks not run" if not_run > 0 else "")
    report.extra["hang"] = {"check": outcome.hung_check, "cause": cause, "not_run": not_run}


def _judge_death(
    report: TargetReport,
    outcome: guestsuite.SuiteOutcome,
    in_flight: list[CheckResult],
    died: str,
) -> None:
    """The kernel went down under the checks in flight: a finding about the target."""
    outcome.kernel_died = died
    alone = len(in_flight) == 1
    for c in in_flight:
        c.message = f"{c.message}: the kernel logged {died!r} and stopped answering"
        if not alone:
            c.message += f" ({len(in_flight)} checks were running)"
    report.verdict = FAILED
    culprit = in_flight[0].nodeid if alone else f"one of {len(in_flight)} checks"
    report.reason = f"the guest kernel died under {culprit}: {died}"
