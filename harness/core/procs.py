"""Run external programs as argv lists, under a deadline, leaving nothing behind.

Every child runs in its own process group so a timeout or Ctrl-C kills the
whole tree (make -j, qemu helpers), not just the direct child.

And every child dies with the harness, even a SIGKILLed one (spawn()):
- the kernel sends it SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG, set
  in the child before exec). The signal fires when the *thread* that forked the
  child exits: the harness spawns from its main thread only (logtail's threads
  read, never spawn), so that is when the process ends;
- it carries AUFS_HARNESS_OWNER=<pid>:<start time> in its environment, inherited
  by its own children (sub-makes, compilers, xdist's ssh), so the next start's
  sweep (harness.core.leftovers) can prove what a dead harness left and kill it,
  surviving pid reuse. A VM detached on purpose (`vm up`) carries "detached".
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from harness.core import paths
from harness.core.deadline import Deadline
from harness.core.errors import DeadlineExceeded, InfraError, UserError

log = logging.getLogger(__name__)

OWNER_ENV = "AUFS_HARNESS_OWNER"
DETACHED = "detached"
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: the child only calls it


def start_time(pid: int) -> int | None:
    """A process's start time (clock ticks since boot, /proc/PID/stat field 22),
    or None if it is gone or a zombie. With the pid, it names a process uniquely."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def owner_token(pid: int | None = None) -> str:
    """ "PID:START" of this (or the given) process: what its children carry."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{start_time(pid) or 0}"


def token_alive(token: str) -> bool:
    """True if the process a token names still runs (pid alive, same start time).
    The DETACHED token and anything malformed count as alive: never ours to kill."""
    pid_s, _, start_s = token.partition(":")
    if not (pid_s.isdigit() and start_s.isdigit()):
        return True
    return start_time(int(pid_s)) == int(start_s)


def child_env(env: Mapping[str, str] | None = None, *, detached: bool = False) -> dict[str, str]:
    """The environment for a child: os.environ, then `env`, then the owner token."""
    return {
        **os.environ,
        **(env or {}),
        OWNER_ENV: DETACHED if detached else owner_token(),
    }


def _die_with(parent: int) -> None:
    """preexec_fn: SIGKILL this child when the harness dies (or is already gone)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the harness died between fork and prctl
        os._exit(1)


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    detached: bool = False,
    env: Mapping[str, str] | None = None,
    **popen: Any,
) -> subprocess.Popen[Any]:
    """Popen(argv) in a new session, tied to the harness (see the module doc).

    `detached`: survive the harness (a `vm up` VM); no parent-death signal and
    the DETACHED owner token. `popen` passes stdin/stdout/stderr/cwd/text.
    Raises FileNotFoundError / OSError like Popen.
    """
    args = [os.fspath(a) for a in argv]
    return subprocess.Popen(
        args,
        env=child_env(env, detached=detached),
        start_new_session=True,
        preexec_fn=None if detached else functools.partial(_die_with, os.getpid()),  # noqa: PLW1509
        **popen,
    )


# After stdin closed: the orderly stop (SIGINT: VMs stopped, results written)
# gets this long before the process kills itself (its children die with it).
TIED_GRACE = 60.0


def tie_to_stdin(stream: IO[bytes] | None = None) -> threading.Thread:
    """End this process when `stream` (default: stdin) reaches end of file: a
    caller over SSH holds it open, and its going away (the connection dropped,
    sshd killed) closes it, where no signal reaches a command run without a
    terminal. SIGINT first (an orderly Ctrl-C), then SIGKILL after TIED_GRACE s;
    children spawned here die with it (spawn's parent-death signal)."""
    source = stream if stream is not None else sys.stdin.buffer

    def wait() -> None:
        while source.read(65536):
            pass
        log.error("standard input closed: the caller is gone; stopping the run and its VMs")
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(TIED_GRACE)
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=wait, name="tied-to-stdin", daemon=True)
    thread.start()
    return thread


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
    tree: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run argv to completion within `deadline`.

    With `logfile`, stdout and stderr go there (appended) and the result holds
    no output; otherwise both are captured as text. With `check`, a non-zero
    exit raises InfraError naming the command and its last stderr line.
    `tree`: the child forks a tree of its own (make's sub-makes and compilers,
    mmdebstrap's apt and dpkg). The parent-death signal reaches the child
    alone, so a Guard kills its whole group if the harness dies.
    A child that failed saying "No space left on device" raises InfraError
    naming the full directory, even with check=False (a full disk is never the
    target's failure).
    """
    args = [os.fspath(a) for a in argv]
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
        proc = spawn(
            args,
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            text=True,
        )
    except FileNotFoundError as exc:
        raise UserError(f"{args[0]} not found: install it (make deps)") from exc
    guard = Guard(proc.pid) if tree else None
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
        if guard is not None:
            guard.release()
        if logf is not None:
            logf.close()
    result = subprocess.CompletedProcess(args, proc.returncode, stdout or "", stderr or "")
    if proc.returncode != 0:
        _raise_if_disk_full(args, cwd, stderr or "", logfile)
    if check and proc.returncode != 0:
        tail = (stderr or "").strip().splitlines()
        where = f"; log: {logfile}" if logfile else ""
        last = f": {tail[-1]}" if tail else ""
        raise InfraError(f"{shlex.join(args)[:160]} exited {proc.returncode}{last}{where}")
    return result


def _raise_if_disk_full(
    args: Sequence[str], cwd: Path | None, stderr: str, logfile: Path | None
) -> None:
    """A child that failed saying ENOSPC (pip, mmdebstrap, qemu-img, make writing
    in the cache): InfraError in the one line a full disk gets (paths.disk_full),
    naming the directory, instead of the child's last line."""
    tail = stderr[-4000:]
    if logfile is not None:
        with contextlib.suppress(OSError), open(logfile, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4000))
            tail += f.read().decode(errors="replace")
    if "No space left on device" not in tail and "Disk quota exceeded" not in tail:
        return
    candidates = [a.split("=", 1)[-1] for a in args[1:]] + [str(cwd or Path.cwd())]
    target = paths.fullest(candidates)
    if target is not None:
        what = "no space left" if "No space left" in tail else "quota exceeded"
        raise InfraError(f"{paths.disk_full(target, what)} ({Path(args[0]).name} said so)")


# A guard process for a child that must outlive the harness only once it is
# ready (a `vm up` VM), or whose own children must die with it (run(tree=True)):
# while the harness holds the guard's stdin open, nothing happens; when the
# harness dies (any way: SIGKILL too), the pipe reaches EOF and the guard kills
# the child's process group. release() disarms it.
_GUARD = """
import os, signal, sys
pgid = int(sys.argv[1])
if sys.stdin.read() != "release":
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
"""


class Guard:
    """Kills process group `pgid` if the harness dies before release()."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.proc: subprocess.Popen[str] = subprocess.Popen(
            [sys.executable, "-c", _GUARD, str(pgid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )

    def release(self) -> None:
        """The child may now outlive the harness: the guard exits and does nothing."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.write("release")
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def fire(self) -> None:
        """Kill the group now (what the harness's death would do)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
