"""Fakes shared by the runner's and resume's unit tests: check results as the
guest reports them, and a recording fake of harness.suitevm.SuiteVM."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.deadline import Deadline
from harness.core.errors import InfraError
from harness.guest.kmsg import CheckFacts
from harness.guestsuite import SuiteOutcome
from harness.multivm import GroupOutcome, Member, Shape
from harness.results import FAILED, SKIPPED, CheckResult
from harness.resultsdir import VMDir
from harness.suitevm import SuiteVM
from harness.targets import Needed

BUG_LINE = "[   42.0] kernel BUG at fs/aufs/hfsnotify.c:173!"
DAMAGE = (
    f"kernel damaged earlier in this run ({BUG_LINE}); "
    "its results would not be trustworthy: boot a fresh kernel"
)


def outcome(*checks: CheckResult, hung: str | None = None) -> SuiteOutcome:
    return SuiteOutcome(list(checks), None if hung else 1, Path("pytest.log"), [], bool(hung), hung)


def c(nodeid: str, result: str, message: str = "") -> CheckResult:
    return CheckResult(f"suite/t.py::{nodeid}", result, 0.1, message)


def damaged(nodeid: str, line: str = BUG_LINE, message: str = DAMAGE) -> CheckResult:
    """A check the guest skipped because the kernel was damaged: the fact, and
    the suite's sentence (which resume must not need)."""
    return CheckResult(f"suite/t.py::{nodeid}", SKIPPED, 0.1, message, kernel=CheckFacts(line))


HEALTH = (
    "kernel health (call) of suite/t.py::x:\nsuspicious kernel lines:\n"
    "  [   23.9] VFS: Busy inodes after unmount of tmpfs.\n"
    "(2 xdist workers share this kernel: a concurrent check may be the cause)"
)


def health_failure(name: str, alone: bool = False) -> CheckResult:
    details = HEALTH.split("\n(", maxsplit=1)[0] if alone else HEALTH
    facts = CheckFacts(health_only=True, workers=1 if alone else 2)
    return CheckResult(
        f"suite/t.py::{name}", FAILED, 0.1, details.splitlines()[-1], details, kernel=facts
    )


@dataclass
class Script:
    """How one fake VM behaves: its suite's outcome (None: it never boots) and
    what it says about itself afterwards."""

    outcome: SuiteOutcome | None
    alive: bool = True  # QEMU still runs after the suite
    ended: str = ""  # how QEMU ended, when not alive ("killed by SIGKILL")
    answers: bool = True  # SSH still runs a command after the suite
    console: str = "[    0.0] Linux version 6.1.0-fake\n"
    evidence: str = ""  # what sysrq w and dmesg print
    console_evidence: str = ""  # what sysrq through QMP made the console print
    damage_shows: bool = False  # the console shows damage while the suite runs (on_damage)
    boots: bool = True  # False: SSH never answers


@dataclass
class Fleet:
    """A VMFactory of scripted fake VMs, one script per VM booted, recording
    what the runner asked of each."""

    consoles: Path
    scripts: list[Script]
    booted: int = 0
    deselected: list[list[str]] = field(default_factory=list)  # check names, per VM
    workers: list[int] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)
    suite_deadlines: list[float] = field(default_factory=list)  # seconds left, per VM
    stopped: int = 0
    discarded: int = 0
    kept: int = 0
    shipped_ahead: int = 0
    loaded: int = 0
    # The guest's answers to `python3 .../dockerd.py ACTION` (the docker scenario), by action.
    guest_answers: dict[str, str] = field(default_factory=dict)
    guest_calls: list[list[str]] = field(default_factory=list)
    # Several VMs at once (harness.vmgroup): each controller run's per-VM
    # outcomes, in member order, and what each run was asked.
    rounds: list[list[SuiteOutcome]] = field(default_factory=list)
    group_calls: list[dict[str, Any]] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)  # of the VMs booted through shaped()

    def shaped(self, shape: Shape) -> SuiteVM:
        self.shapes.append(str(shape))
        return self()

    def run_group(
        self, members: Sequence[Member], files: VMDir, suite_args: Sequence[str],
        deadline: Deadline, dist: str = "load", workers: int = 1, check_timeout: float = 300.0,
    ) -> GroupOutcome:  # fmt: skip
        names = [a.rsplit("::", 1)[-1] for a in suite_args if a.startswith("--deselect=")]
        self.group_calls.append(
            {"vms": [m.tag for m in members], "deselected": names, "workers": workers,
             "dist": dist, "files": files.path}
        )  # fmt: skip
        if not self.rounds:
            raise AssertionError(f"round {len(self.group_calls)} ran, but none was scripted")
        per_vm = self.rounds.pop(0)
        assert len(per_vm) == len(members), (len(per_vm), [m.tag for m in members])
        return GroupOutcome(per_vm, files.pytest_log)

    def __call__(self) -> SuiteVM:
        if not self.scripts:
            raise AssertionError(f"VM {self.booted + 1} booted, but no outcome was scripted for it")
        self.booted += 1
        return FakeVM(self, self.scripts.pop(0), self.consoles / f"console-{self.booted}.log")


def scripted(consoles: Path, *outcomes: SuiteOutcome | Script) -> Fleet:
    """A fleet whose VMs end their suites with `outcomes`, in order."""
    scripts = [o if isinstance(o, Script) else Script(o) for o in outcomes]
    consoles.mkdir(parents=True, exist_ok=True)
    return Fleet(consoles, scripts)


class FakeVM:
    """A SuiteVM that boots instantly and ends its suite as scripted."""

    label = "a fake VM"
    accel = "tcg"
    boot_seconds = 1.5

    def __init__(self, fleet: Fleet, script: Script, console: Path) -> None:
        self.fleet, self.script, self.console = fleet, script, console

    def start(self, deadline: Deadline) -> None:
        if self.script.outcome is None:
            raise InfraError("QEMU exited before SSH answered")
        self.console.write_text(self.script.console)

    def wait_ssh(self, deadline: Deadline) -> None:
        if not self.script.boots:
            raise InfraError("the VM never answered SSH within 1s")

    def kernel_release(self, deadline: Deadline) -> str:
        return "6.1.0-fake"

    def load(self, needs: Sequence[Needed]) -> dict[str, dict[str, Any]]:
        self.fleet.loaded += 1
        return {}

    def run_suite(
        self, out: VMDir, suite_args: Sequence[str], deadline: Deadline, workers: int,
        check_timeout: float, on_damage: Callable[[], None] | None = None,
    ) -> SuiteOutcome:  # fmt: skip
        names = [a.rsplit("::", 1)[-1] for a in suite_args if a.startswith("--deselect=")]
        self.fleet.deselected.append(names)
        self.fleet.workers.append(workers)
        self.fleet.dirs.append(out.path)
        self.fleet.suite_deadlines.append(deadline.remaining())
        if self.script.damage_shows and on_damage is not None:
            on_damage()
        assert self.script.outcome is not None
        return self.script.outcome

    def member(self, tag: str, deadline: Deadline) -> Member:
        return Member(tag, self.console.parent / f"ssh_config.{tag}", tag, self.console)

    def ship(self, deadline: Deadline) -> None:
        self.fleet.shipped_ahead += 1

    def run_in_guest(self, argv: Sequence[str], deadline: Deadline) -> tuple[int, str, str]:
        self.fleet.guest_calls.append(list(argv))
        return 0, self.fleet.guest_answers.get(argv[-1], ""), ""

    def put_in_guest(self, local: Path, remote: str) -> None:
        pass

    def alive(self) -> bool:
        return self.script.alive

    def ended(self) -> str:
        return "" if self.script.alive else self.script.ended

    def answers(self, deadline: Deadline) -> bool:
        return self.script.answers

    def hang_evidence(self, deadline: Deadline) -> str:
        return self.script.evidence

    def console_evidence(self, deadline: Deadline) -> str:
        return self.script.console_evidence

    def console_log(self) -> Path:
        return self.console

    def stop(self) -> None:
        self.fleet.stopped += 1

    def discard(self) -> None:
        self.fleet.discarded += 1

    def keep(self) -> str:
        self.fleet.kept += 1
        return "kept-vm"
