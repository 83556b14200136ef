"""The exception taxonomy and the exit codes CI can trust.

0: every check passed. 1: a target failed (a test, a patch, a build, a load).
2: the harness could not give a verdict (bad input, broken infrastructure).
"""

from __future__ import annotations

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
