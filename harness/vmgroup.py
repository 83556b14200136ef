"""One target's suite over a group of VMs of the same kernel (`run --vms N
--dist load|each`): the runner's VM loop for several VMs at once.

Each round is one xdist controller over the group (harness.multivm). Its
outcome is split per VM, and each VM is judged and resumed exactly as a single
VM is (runner._judge_suite, harness.resume): a VM whose kernel was damaged or
whose check hung is replaced by a fresh VM of the same shape, the others stay
up and go on with the checks left in the next round.

--dist load: the VMs share one list of checks; their standing results are
one set. --dist each: every VM runs every check; results are keyed per VM
(nodeid + "@vmK"), and a replaced VM's next round runs only its own checks left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from harness import guestsuite, multivm, resume
from harness.core.deadline import Deadline
from harness.multivm import Shape, VMGroup
from harness.progress import stage
from harness.results import CheckResult
from harness.resultsdir import VMDir
from harness.runner import (
    FRESH_VM_MIN_LEFT,
    START_TIMEOUT,
    STOP_NOTES,
    UNAME_TIMEOUT,
    Stop,
    TargetRun,
    _judge_suite,
    _keep_console,
    _summarise,
)
from harness.suitevm import SuiteVM

log = logging.getLogger(__name__)

SHIP_TIMEOUT = 300.0  # installing the suite in one guest


GroupRunner = Callable[..., multivm.GroupOutcome]  # multivm.run_group's signature


@dataclass
class GroupRun:
    run: TargetRun
    group: VMGroup
    new_vm: Callable[[Shape], SuiteVM]  # a fresh VM of that shape
    controller: GroupRunner = multivm.run_group
    booted: list[Slot] = field(default_factory=list)  # every VM started, in order

    @property
    def numbers(self) -> int:
        """VMs booted so far (VM numbers name their results directories vm-N)."""
        return len(self.booted)


@dataclass
class Slot:
    """A place in the group: its shape, and the VM that fills it now."""

    index: int  # 0-based; "vm{index+1}" in gateway ids and in `each` results
    shape: Shape
    number: int
    vm: SuiteVM
    out: VMDir
    standing: list[CheckResult] = field(default_factory=list)  # --dist each: this VM's
    member: multivm.Member | None = None
    retired: bool = False

    @property
    def tag(self) -> str:
        return f"vm{self.index + 1}"


def run_group(g: GroupRun) -> Stop:
    """Boot the group, run rounds until no VM needs replacing (or a Stop says
    why not), leave every VM stopped with its console kept. Returns the Stop."""
    run, opts = g.run, g.run.opts
    suite = run.deadline.sub(opts.suite_timeout, "the suite")
    try:
        slots = _boot(g, list(enumerate(g.group.shapes)))
        return _rounds(g, slots, suite)
    finally:
        for slot in g.booted:
            _retire(run, slot)


def _retire(run: TargetRun, slot: Slot) -> None:
    """Stop the slot's VM and keep its console (once)."""
    if not slot.retired:
        slot.retired = True
        _keep_console(run, slot.vm, slot.out, keep=False)


def _rounds(g: GroupRun, slots: list[Slot], suite: Deadline) -> Stop:
    run, opts, each = g.run, g.run.opts, g.group.dist == "each"
    workers = 1 if each else opts.workers  # xdist's each sends every check to every worker
    shared: list[CheckResult] = []  # --dist load: the standing results of the group
    retried: set[str] = set()
    notes: list[str] = []
    fresh, round_no, batch = 0, 0, list(slots)
    while True:
        round_no += 1
        again: list[CheckResult] = []
        bad: list[tuple[Slot, resume.Split]] = []
        ended = 0  # checks that ended in this round
        collected: dict[int, int | None] = {}  # per bad VM: the checks its run had
        for part in [batch] if round_no == 1 or not each else [[s] for s in batch]:
            standing = shared if not each else part[0].standing
            outcomes = _round(g, part, standing, suite, workers, round_no)
            for slot, outcome in zip(part, outcomes, strict=True):
                _judge_suite(run, slot.vm, outcome, slot.out)
                parts = resume.split(outcome, retried)
                (slot.standing if each else shared).extend(parts.final)
                again += _keyed(parts.again, slot, each)
                ended += len(parts.final)
                if parts.needs_fresh_vm:
                    bad.append((slot, parts))
                    notes.append(f"VM {slot.number}: {parts.why}")
                    collected[slot.index] = outcome.collected
        run.report.checks = [*_standing(slots, shared, each), *again]
        if notes:
            run.report.extra["vms"] = notes
        left = any(
            n is None or len(slots[i].standing if each else shared) < n
            for i, n in collected.items()
        )  # once every VM's results are in: does any check remain for a next round
        stop = _why_stop(g, bad, ended, left, fresh, round_no, suite)
        if stop is not None:
            break
        retried.update(c.nodeid for _, p in bad for c in p.again if resume.ambiguous(c))
        workers = 1 if any(p.suspects for _, p in bad) or each else opts.workers
        batch = _replace(g, slots, [s for s, _ in bad])
        fresh += len(bad)
        run.report.verdict, run.report.reason = "pending", ""
        log.warning("suite: %d VM(s) replaced; the checks left go on in round %d",
                    len(bad), round_no + 1)  # fmt: skip
        if not each:
            batch = slots
    if stop in STOP_NOTES:
        notes.append(STOP_NOTES[stop])
    run.report.extra["vm_group"] = {
        "dist": g.group.dist, "rounds": round_no, "fresh_vms": fresh,
        "vms": {s.tag: str(s.shape) for s in slots},
    }  # fmt: skip
    _summarise(run.report, notes, fresh + 1)
    return stop


def _why_stop(
    g: GroupRun,
    bad: Sequence[tuple[Slot, resume.Split]],
    ended: int,
    left: bool,
    fresh: int,
    round_no: int,
    suite: Deadline,
) -> Stop | None:
    """runner.why_stop for a group: why no VM is replaced, or None when some are."""
    if not bad:
        return Stop.DONE
    if round_no > 1 and not ended:
        return Stop.NO_CHECK_ENDED
    if not left:
        return Stop.NOTHING_LEFT
    if fresh + len(bad) > g.run.opts.fresh_vms:
        return Stop.OUT_OF_FRESH_VMS
    if suite.remaining() < FRESH_VM_MIN_LEFT:
        return Stop.DEADLINE
    return None


def _round(
    g: GroupRun,
    part: Sequence[Slot],
    standing: Sequence[CheckResult],
    suite: Deadline,
    workers: int,
    round_no: int,
) -> list[guestsuite.SuiteOutcome]:
    """One controller over `part`, minus the standing checks; per-VM outcomes."""
    run = g.run
    alone = len(part) == 1 < len(g.group.shapes)
    name = f"suite-round{round_no}" + (f"-{part[0].tag}" if alone else "")
    with stage(run.report, name, f"the suite over {len(part)} VM(s), --dist {g.group.dist}") as h:
        args = [*run.opts.suite_args, *resume.deselect_args(standing)]
        members = _members(run, part)
        files = run.out.vm(1) if round_no == 1 and len(part) == len(g.group.shapes) else None
        files = files or VMDir(run.out.path / name)
        files.path.mkdir(parents=True, exist_ok=True)
        outcome = g.controller(
            members, files, args, suite, dist=g.group.dist, workers=workers,
            check_timeout=run.opts.check_timeout,
        )  # fmt: skip
        counts = zip(part, outcome.per_vm, strict=True)
        h.note(", ".join(f"{s.tag}: {len(o.checks)} checks" for s, o in counts))
    return list(outcome.per_vm)


def _members(run: TargetRun, part: Sequence[Slot]) -> list[multivm.Member]:
    """The controller's view of each VM; the suite is shipped into the new ones
    side by side (threads: paramiko only, nothing spawned)."""
    todo = [s for s in part if s.member is None]

    def ship(slot: Slot) -> multivm.Member:
        return slot.vm.member(slot.tag, run.deadline.sub(SHIP_TIMEOUT, "shipping the suite"))

    with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
        for slot, member in zip(todo, pool.map(ship, todo), strict=True):
            slot.member = member
    return [s.member for s in part if s.member is not None]


def _keyed(checks: Sequence[CheckResult], slot: Slot, each: bool) -> list[CheckResult]:
    """--dist each: the checks of one VM, keyed by it (nodeid@vmK)."""
    return [replace(c, nodeid=f"{c.nodeid}@{slot.tag}") for c in checks] if each else list(checks)


def _standing(slots: Sequence[Slot], shared: list[CheckResult], each: bool) -> list[CheckResult]:
    if not each:
        return list(shared)
    return [c for s in slots for c in _keyed(s.standing, s, each)]


def _boot(g: GroupRun, places: Sequence[tuple[int, Shape]]) -> list[Slot]:
    """Start every VM's QEMU first (from this thread: children die with the
    thread that forked them), then wait for each and load the modules: the
    guests boot side by side."""
    run = g.run
    slots = []
    for index, shape in places:
        number = g.numbers + 1
        slot = Slot(index, shape, number, g.new_vm(shape), run.out.vm(number))
        g.booted.append(slot)
        slots.append(slot)
        vm = slot.vm
        with stage(run.report, f"start#{slot.number}", f"starting {slot.tag} ({shape})"):
            vm.start(run.deadline.sub(START_TIMEOUT, "starting QEMU"))
    for slot in slots:
        _ready(run, slot)
    return slots


def _ready(run: TargetRun, slot: Slot) -> None:
    """Wait for one VM's SSH, then load what the suite needs (as runner._boot and _in_vm)."""
    vm, report = slot.vm, run.report
    with stage(report, f"boot#{slot.number}", f"booting {vm.label} as {slot.tag}") as h:
        vm.wait_ssh(run.deadline.sub(run.opts.boot_timeout, "booting to SSH"))
        report.accel = vm.accel
        h.note(f"SSH answered after {vm.boot_seconds:.1f}s under {vm.accel}")
        report.kernel_release = vm.kernel_release(run.deadline.sub(UNAME_TIMEOUT, "uname"))
        report.extra.setdefault("boot_seconds", vm.boot_seconds)
    with stage(report, f"load#{slot.number}", "loading the union filesystems under test") as h:
        loaded = vm.load(run.target.modules(run.build))
        report.extra.setdefault("load", loaded)
        h.note("; ".join(str(r["reason"]) for r in loaded.values()) or "all built in")


def _replace(g: GroupRun, slots: list[Slot], bad: Sequence[Slot]) -> list[Slot]:
    """Stop the VMs in `bad` (consoles kept) and boot fresh ones in their places."""
    for slot in bad:
        _retire(g.run, slot)
    fresh = _boot(g, [(s.index, s.shape) for s in bad])
    for new in fresh:
        old = slots[new.index]
        new.standing = old.standing
        slots[new.index] = new
    return fresh
