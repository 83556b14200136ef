"""Run one target end to end: image -> boot -> suite -> report.

Whatever happens, the target ends with a verdict and its console log: a VM
that never boots or dies mid-run is an "error" verdict with the evidence, not
a gap in the report.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import guestsuite, resume
from harness.bootspec import IMAGE_TIMEOUT, resolve_boot
from harness.core.deadline import Deadline
from harness.core.errors import HarnessError, TargetFailure, UserError
from harness.core.paths import state_dir
from harness.loadstage import ensure_module
from harness.progress import StageHandle, stage
from harness.results import ERROR, FAILED, HUNG, CheckResult, TargetReport
from harness.resultsdir import ResultsDir, TargetDir, VMDir
from harness.targets import Target
from kmod import pipeline as kmod_pipeline
from kmod.pipeline import BuildResult, BuildSpec
from vm.machine import BootSpec, Machine

log = logging.getLogger(__name__)

BUILD_TIMEOUT = 3 * 3600.0


@dataclass(frozen=True)
class RunOptions:
    results_dir: Path
    accel: str = "auto"
    memory_mb: int = 1024
    smp: int = 2
    workers: int = 2
    boot_timeout: float = 180.0
    suite_timeout: float = 1800.0
    check_timeout: float = 300.0
    suite_args: Sequence[str] = field(default_factory=tuple)
    keep_vm: bool = False
    fresh_vms: int = 6  # VMs to boot for the checks a kernel-killing check cost


def run_target(
    target: Target, opts: RunOptions, sink: list[TargetReport] | None = None
) -> TargetReport:
    """Run one target. The report is appended to `sink` at once, so a caller
    interrupted mid-run (Ctrl-C, SIGTERM) still has it to write out."""
    report = TargetReport(target=target.label)
    if sink is not None:
        sink.append(report)
    t0 = time.monotonic()
    out = ResultsDir(opts.results_dir).target(target.label)
    build: BuildResult | None = None
    try:
        if target.build is not None:
            with stage(report, "build", f"building {target.build.kernel} with aufs") as h:
                build = build_kernel(target.build, report, h)
        with stage(report, "image", "preparing the image") as h:
            boot = resolve_boot(target, Deadline(IMAGE_TIMEOUT, "building the image"), h, build)
        report.kernel_release = boot.kernel_release
        _run_suite_on_vms(target, boot, build, opts, report, out)
    except UserError:
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


def _run_suite_on_vms(
    target: Target,
    boot: BootSpec,
    build: BuildResult | None,
    opts: RunOptions,
    report: TargetReport,
    out: TargetDir,
) -> None:
    """Boot, load and run the suite; after a check hangs or damages the kernel,
    run the checks it cost on fresh VMs (up to opts.fresh_vms), so they are
    results rather than skips."""
    deadline = Deadline(opts.suite_timeout, "the suite")
    standing: list[CheckResult] = []
    retried: set[str] = set()  # ambiguous checks that already went to a fresh VM
    notes: list[str] = []
    vm = 1
    workers = opts.workers
    while True:
        vm_out = out.vm(vm)
        outcome = _one_vm(
            target, boot, build, opts, report, vm, vm_out, standing, deadline, workers
        )
        # Until the next VM reports, this VM's results are the report: a
        # fresh VM that fails to boot loses nothing.
        report.checks = [*standing, *outcome.checks]
        parts = resume.split(outcome, retried)
        if not parts.needs_fresh_vm:
            break
        notes.append(f"VM {vm}: {parts.why}")
        report.extra["vms"] = notes  # now: kept even if the next VM never boots
        if vm > 1 and not parts.final:
            notes.append("no check ended on that VM: stopped")
            break
        if outcome.collected is not None and outcome.collected <= len(parts.final):
            break  # the check that hung was the last one: nothing left to run
        if opts.keep_vm or vm > opts.fresh_vms or deadline.remaining() < 60:
            break  # the skips stay in the report, with the damage named
        standing += parts.final
        retried.update(c.nodeid for c in parts.again if resume.ambiguous(c))
        # One worker when a suspect goes again: then the kernel log has one author.
        workers = 1 if parts.suspects else opts.workers
        log.warning("suite: %s; running the checks left on a fresh VM", parts.why)
        report.verdict, report.reason = "pending", ""  # the next VM judges again
        vm += 1
    if notes:
        # A check that hung or damaged the kernel is a finding about the target.
        summary = notes[0] + (f" (and {len(notes) - 1} more, see report.json)" if notes[1:] else "")
        if vm > 1:
            summary += f"; {vm - 1} fresh VM(s) ran the checks left"
        if report.verdict == ERROR:
            report.reason = f"{report.reason} (VM {vm}); {summary}"
        elif vm > 1:
            report.verdict, report.reason = FAILED, summary


def _one_vm(
    target: Target,
    boot: BootSpec,
    build: BuildResult | None,
    opts: RunOptions,
    report: TargetReport,
    vm: int,
    out: VMDir,
    standing: Sequence[CheckResult],
    deadline: Deadline,
    workers: int,
) -> guestsuite.SuiteOutcome:
    """One VM: boot, load, the suite minus the checks in `standing`; judged, and
    its console log kept in `out` whatever happens."""
    tag = "" if vm == 1 else f"#{vm}"
    name = f"run-{uuid.uuid4().hex[:8]}"
    workdir = state_dir() / "runs" / name
    machine = Machine(name, boot, workdir, accel=opts.accel, memory_mb=opts.memory_mb, smp=opts.smp)
    try:
        with stage(report, f"boot{tag}", f"booting {boot.label}") as h:
            machine.start(Deadline(120, "starting QEMU"))
            assert machine.accel is not None
            report.accel = machine.accel.name
            guest = machine.wait_ssh(Deadline(opts.boot_timeout, "booting to SSH"))
            h.note(f"SSH answered after {machine.boot_seconds:.1f}s under {machine.accel.name}")
            log.info(
                "boot: SSH answered after %.1fs (%s: %s)",
                machine.boot_seconds,
                machine.accel.name,
                machine.accel.reason,
            )
            uname = guest.run(["uname", "-r"], Deadline(30, "uname"), check=True)
            report.kernel_release = uname.stdout.strip()
            report.extra.setdefault("boot_seconds", machine.boot_seconds)
        with stage(report, f"load{tag}", "loading the union filesystems under test") as h:
            loaded = {}
            for need in target.modules(build):
                result = ensure_module(guest, need.name, need.module, need.fs)
                if result is not None:
                    loaded[need.name] = result
            report.extra.setdefault("load", loaded)
            h.note("; ".join(str(r["reason"]) for r in loaded.values()) or "all built in")
        with stage(report, f"suite{tag}", "running the union suite in the guest over xdist") as h:
            outcome = guestsuite.run_in_vm(
                machine,
                out.path,
                [*opts.suite_args, *resume.deselect_args(standing)],
                deadline,
                workers=workers,
                check_timeout=opts.check_timeout,
            )
            _judge_suite(report, machine, outcome, out)
            h.note(f"{len(outcome.checks)} checks; log {outcome.log}")
        return outcome
    finally:
        if not opts.keep_vm:
            machine.stop()
        console = machine.console_log()
        if console.exists():
            saved = out.save_console(console)
            report.console_log = report.console_log or str(saved)
        if not opts.keep_vm:
            shutil.rmtree(workdir, ignore_errors=True)


def build_kernel(spec: BuildSpec, report: TargetReport, handle: StageHandle) -> BuildResult:
    """Run the kmod pipeline; a patch or compile failure is this target's verdict."""
    result = kmod_pipeline.run(spec, Deadline(BUILD_TIMEOUT, "building the kernel"))
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


HANG_EVIDENCE = "echo w > /proc/sysrq-trigger; sleep 1; dmesg | tail -n 400"


def hang_evidence(machine: Machine, out: VMDir) -> str:
    """Blocked tasks (sysrq w) and the kernel log of a guest that still answers."""
    assert machine.guest is not None
    try:
        text = machine.guest.run(["sh", "-c", HANG_EVIDENCE], Deadline(60, "hang evidence")).stdout
    except HarnessError as exc:
        return f"(could not collect evidence: {exc})"
    out.save_hang_evidence(text)
    blocked = re.findall(r"task:(\S+)\s+state:D", text)
    queues = re.findall(r"Workqueue: \S+ (\S+)", text)
    return "; ".join(
        f"{task} blocked" + (f" in {queue}" if queue else "")
        for task, queue in zip(blocked, [*queues, *[""] * len(blocked)], strict=False)
    )


def _judge_suite(
    report: TargetReport, machine: Machine, outcome: guestsuite.SuiteOutcome, out: VMDir
) -> None:
    """Tell a failing check from a hung test, a hung kernel and a dead VM."""
    alive = machine.qemu is not None and machine.qemu.alive()
    ssh_ok = False
    if alive and machine.guest is not None:
        try:
            machine.guest.run(["true"], Deadline(15, "checking the guest after the suite"))
            ssh_ok = True
        except HarnessError:
            ssh_ok = False
    if outcome.timed_out:
        if ssh_ok:
            evidence = hang_evidence(machine, out)
            cause = "the guest still answers" + (f"; {evidence}" if evidence else "")
        else:
            cause = "the guest kernel no longer answers (see console.log)"
        for c in outcome.checks:
            if c.outcome == HUNG:
                why = f" ({outcome.hung_why})" if c.nodeid == outcome.hung_check else ""
                c.message = f"{c.message}{why}: {cause}"
                c.details = f"evidence: {out.hang_evidence}" if ssh_ok else ""
        not_run = (outcome.collected or 0) - len(outcome.checks)
        what = f"{outcome.hung_check} hung" if outcome.hung_check else "suite deadline passed"
        # A check that hangs the guest is a finding about the target (exit 1);
        # only a deadline with no check to blame leaves us without a verdict.
        report.verdict = FAILED if outcome.hung_check else ERROR
        report.reason = what + (f"; {not_run} checks not run" if not_run > 0 else "")
        report.extra["hang"] = {"check": outcome.hung_check, "cause": cause, "not_run": not_run}
        return
    in_flight = [c for c in outcome.checks if c.outcome == HUNG]
    died = guestsuite.kernel_death(machine.console_log()) if not ssh_ok else ""
    if died and in_flight:
        # The kernel went down under these checks: a finding about the target.
        outcome.kernel_died = died
        alone = len(in_flight) == 1
        for c in in_flight:
            c.message = f"{c.message}: the kernel logged {died!r} and stopped answering"
            if not alone:
                c.message += f" ({len(in_flight)} checks were running)"
        report.verdict = FAILED
        culprit = in_flight[0].nodeid if alone else f"one of {len(in_flight)} checks"
        report.reason = f"the guest kernel died under {culprit}: {died}"
        return
    if not alive:
        report.verdict, report.reason = ERROR, "the VM died during the suite (see console.log)"
    elif outcome.workers_down:
        report.verdict = ERROR
        report.reason = f"xdist worker crashed: {outcome.workers_down[0][:200]}"
    elif outcome.returncode not in (0, 1) and not outcome.checks:
        report.verdict = ERROR
        report.reason = f"pytest exited {outcome.returncode} with no result (see {outcome.log})"
    if not ssh_ok and not outcome.timed_out and alive:
        report.verdict, report.reason = ERROR, "SSH to the guest dropped during the suite"
