"""Carry on after a kernel-killing check: which results stand, which checks go to a fresh VM.

A check that hangs the guest kernel, or oopses it, leaves the rest of the run
without a trustworthy kernel: the suite skips every later check ("kernel
damaged earlier in this run") and the watchdog stops a hung run with checks
never started. Those are not results about the target, so the runner boots a
fresh VM and runs exactly those checks there (kirk does the same for LTP).
Every decision reads the facts the guest recorded per check (CheckResult.kernel,
harness/guest/kmsg.py CheckFacts), never the wording of a message.
What stands: every check that really ran to a verdict, and the check that
hung; what goes again: checks skipped for the damage, checks that were in
flight beside the hung one, and checks never started. A check that failed
only on kernel health while another worker's check ran beside it may be the
innocent one of the pair: it goes again once, on a VM with one worker so that
the kernel's complaint has one author, and that result stands.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass, field

from harness.guestsuite import SuiteOutcome
from harness.results import ERROR, FAILED, HUNG, SKIPPED, CheckResult


@dataclass
class Split:
    final: list[CheckResult] = field(default_factory=list)  # results that stand
    again: list[CheckResult] = field(default_factory=list)  # placeholders for a fresh VM
    why: str = ""  # why a fresh VM is needed; "" when it is not
    suspects: int = 0  # checks blamed beside another worker's check: rerun them alone

    @property
    def needs_fresh_vm(self) -> bool:
        return bool(self.why)


def ambiguous(check: CheckResult) -> bool:
    """Failed on kernel health alone, with checks of other workers beside it
    (the guest's facts: harness.guest.kmsg.CheckFacts)."""
    facts = check.kernel
    return check.outcome in (FAILED, ERROR) and facts.health_only and facts.shared_kernel


def split(outcome: SuiteOutcome, retried: Set[str] = frozenset()) -> Split:
    """Sort one VM's results into those that stand and those to run again;
    `retried` are checks that already went again for ambiguity."""
    result = Split()
    damage = ""
    suspects = 0
    in_flight = sum(c.outcome == HUNG for c in outcome.checks)
    for check in outcome.checks:
        if check.outcome == SKIPPED and check.kernel.damaged:
            damage = damage or check.kernel.damaged
            result.again.append(check)
        elif check.outcome == HUNG and outcome.kernel_died and not outcome.hung_check:
            if in_flight == 1:
                result.final.append(check)  # the kernel died under this check alone
            else:
                suspects += 1  # one of them killed it: each goes again, alone
                result.again.append(check)
        elif check.outcome == HUNG and check.nodeid != outcome.hung_check:
            result.again.append(check)  # in flight on another worker when the run was stopped
        elif ambiguous(check) and check.nodeid not in retried:
            suspects += 1
            result.again.append(check)
        else:
            result.final.append(check)
    if outcome.kernel_died and not outcome.hung_check:
        result.why = f"the kernel died ({outcome.kernel_died})"
    elif outcome.hung_check:
        result.why = f"{outcome.hung_check.rsplit('::', 1)[-1]} hung"
    elif damage:
        result.why = f"the kernel was damaged ({damage})"
    elif suspects:
        result.why = f"{suspects} check(s) failed on kernel health beside another check"
    result.suspects = suspects
    return result


def deselect_args(done: Sequence[CheckResult]) -> list[str]:
    """pytest arguments that leave out every check with a standing result."""
    return [f"--deselect={c.nodeid}" for c in done]
