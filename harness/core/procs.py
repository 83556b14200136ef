"""Run external programs as argv lists, under a deadline, leaving nothing behind.

Every child runs in its own process group so a timeout or Ctrl-C kills the
whole tree (make -j, qemu helpers), not just the direct child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from harness.core.deadline import Deadline
from harness.core.errors import DeadlineExceeded, InfraError, UserError

log = logging.getLogger(__name__)


def which(program: str, package: str) -> str:
    """The path of `program`, or a UserError naming the Debian package to install."""
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if not path:
        raise UserError(f"{program} not found: install the Debian package {package} (make deps)")
    return path


def kill_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float = 3.0) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    deadline: Deadline,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    logfile: Path | None = None,
    check: bool = True,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv to completion within `deadline`.

    With `logfile`, stdout and stderr go there (appended) and the result holds
    no output; otherwise both are captured as text. With `check`, a non-zero
    exit raises InfraError naming the command and its last stderr line.
    """
    args = [os.fspath(a) for a in argv]
    full_env = {**os.environ, **env} if env is not None else None
    log.debug("run: %s", shlex.join(args))
    out: IO[str] | int
    logf: IO[str] | None = None
    if logfile is not None:
        logfile.parent.mkdir(parents=True, exist_ok=True)
        logf = open(logfile, "a")  # noqa: SIM115 - closed in finally
        out = logf
        err: IO[str] | int = subprocess.STDOUT
    else:
        out = subprocess.PIPE
        err = subprocess.PIPE
    try:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise UserError(f"{args[0]} not found: install it (make deps)") from exc
    try:
        stdout, stderr = proc.communicate(input=stdin, timeout=deadline.remaining() or 0.001)
    except subprocess.TimeoutExpired as exc:
        kill_group(proc)
        raise DeadlineExceeded(
            f"{shlex.join(args)[:200]}: still running after {deadline.seconds:.0f}s "
            f"({deadline.what})"
        ) from exc
    except BaseException:
        kill_group(proc)
        raise
    finally:
        if logf is not None:
            logf.close()
    result = subprocess.CompletedProcess(args, proc.returncode, stdout or "", stderr or "")
    if check and proc.returncode != 0:
        tail = (stderr or "").strip().splitlines()
        where = f"; log: {logfile}" if logfile else ""
        last = f": {tail[-1]}" if tail else ""
        raise InfraError(f"{shlex.join(args)[:160]} exited {proc.returncode}{last}{where}")
    return result
