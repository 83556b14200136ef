"""The exception taxonomy and the exit codes CI can trust.

0: every check passed. 1: a target failed (a test, a patch, a build, a load).
2: the harness could not give a verdict (bad input, broken infrastructure).
"""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2


class HarnessError(Exception):
    """Base of every error the CLI turns into one line and an exit code."""

    exit_code = EXIT_ERROR
    kind = "error"


class UserError(HarnessError):
    """Bad input. The message names the cause and the fix."""

    kind = "usage error"


class InfraError(HarnessError):
    """The machinery failed (QEMU, SSH, apt, disk): no verdict on the target."""

    kind = "infrastructure error"


class DeadlineExceeded(InfraError):
    """A wait ran past its deadline."""

    kind = "timeout"


class TargetFailure(HarnessError):
    """The target itself failed: patch, build, load or a check."""

    exit_code = EXIT_FAILED
    kind = "failed"


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived. A KeyboardInterrupt, so every path that cleans up after
    Ctrl-C (VMs stopped, reports written) does the same for it."""

    signum = signal.SIGTERM


def interrupting_signal(exc: BaseException) -> signal.Signals | None:
    """The signal behind `exc`: SIGINT for KeyboardInterrupt (Python raises it
    for SIGINT), SIGTERM for Terminated, None for anything else."""
    if isinstance(exc, Terminated):
        return exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return signal.SIGINT
    return None


def interruption(exc: BaseException) -> str:
    """What ended a run, for a verdict: "interrupted by SIGINT (Ctrl-C)",
    "interrupted by SIGTERM", or "interrupted (EOFError)" for anything else."""
    sig = interrupting_signal(exc)
    if sig is signal.SIGINT:
        return "interrupted by SIGINT (Ctrl-C)"
    if sig is not None:
        return f"interrupted by {sig.name}"
    return f"interrupted ({type(exc).__name__})"


def interrupt_exit_code(exc: BaseException) -> int:
    """128 + the signal's number, as a shell reports a process a signal ended
    (SIGINT: 130, SIGTERM: 143); EXIT_ERROR when no signal was behind `exc`."""
    sig = interrupting_signal(exc)
    return 128 + int(sig) if sig is not None else EXIT_ERROR
