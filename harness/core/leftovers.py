"""What a dead harness left behind, found and cleaned at the next start.

sweep() runs at the start of every command that boots or builds and logs one
line saying what it cleaned (and what it could not). It only touches what it can
prove belongs to a harness process that is gone:

- processes whose environment carries AUFS_HARNESS_OWNER=PID:START (procs.spawn)
  naming a dead process (pid gone, or reused: another start time): QEMU, make
  and its sub-makes and compilers, xdist's ssh. The DETACHED token is left alone;
- VM directories under the state dir's runs/ and vms/ whose owner.json names a
  dead owner: their QEMU (pid in state.json, only if that pid is still a QEMU
  of that directory) is killed and the directory removed. A directory without
  owner.json (an older harness) is removed when its QEMU is gone or orphaned
  (re-parented to init) and it is older than STALE_SECONDS;
- temporary directories named aufs-harness-*-PID_START-* of dead owners, and
  store temporaries (.tmp-KEY-PID) of dead pids;
- mounts and loop devices of host suite labs ($TMPDIR/unionfs-*) that no live
  process uses and that are older than STALE_SECONDS.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.paths import cache_dir, state_dir
from harness.core.procs import DETACHED, OWNER_ENV, owner_token, start_time, token_alive

log = logging.getLogger(__name__)

STALE_SECONDS = 1800.0
TEMP_RE = re.compile(r"^aufs-harness-[a-z]+-(\d+)_(\d+)-")


@contextlib.contextmanager
def owned_temp(what: str) -> Iterator[str]:
    """owned_tempdir() as a context manager: removed on exit, by the sweep if we die."""
    path = owned_tempdir(what)
    try:
        yield str(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def owned_tempdir(what: str) -> Path:
    """A temporary directory whose name proves its owner (this process), so the
    sweep can remove it if we die: $TMPDIR/aufs-harness-WHAT-PID_START-XXXX."""
    pid, _, start = owner_token().partition(":")
    return Path(tempfile.mkdtemp(prefix=f"aufs-harness-{what}-{pid}_{start}-"))


@dataclass
class Swept:
    """What one sweep found: counts per kind cleaned, and what could not be."""

    killed: Counter[str] = field(default_factory=Counter)  # process name -> count
    dirs: int = 0
    temps: int = 0
    mounts: int = 0
    loops: int = 0
    failed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{n} {name}" for name, n in sorted(self.killed.items())]
        if self.dirs:
            parts.append(f"{self.dirs} VM state dir(s)")
        if self.temps:
            parts.append(f"{self.temps} temp dir(s)")
        if self.mounts:
            parts.append(f"{self.mounts} mount(s)")
        if self.loops:
            parts.append(f"{self.loops} loop device(s)")
        text = "cleaned what a dead run left: " + ", ".join(parts) if parts else ""
        if self.failed:
            text += ("; " if text else "") + "could not clean: " + "; ".join(self.failed)
        return text


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _owner_of(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = OWNER_ENV.encode() + b"="
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def orphaned_processes() -> list[tuple[int, str]]:
    """(pid, name) of live processes whose harness owner is dead."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        owner = _owner_of(pid)
        if owner is None or owner == DETACHED or token_alive(owner):
            continue
        if start_time(pid) is None:  # zombie
            continue
        found.append((pid, _comm(pid)))
    return found


def _kill_orphans(swept: Swept) -> None:
    for pid, name in orphaned_processes():
        try:
            os.kill(pid, signal.SIGKILL)
            swept.killed[_kind(name)] += 1
        except ProcessLookupError:
            continue
        except PermissionError:
            swept.failed.append(f"{name} pid {pid} (not ours to kill)")


def _kind(comm: str) -> str:
    if comm.startswith("qemu-system"):
        return "QEMU"
    if comm == "make":
        return "make"
    if comm == "ssh":
        return "ssh"
    return "other process(es)"


def _qemu_of(workdir: Path) -> int | None:
    """The pid in workdir/state.json if it is still a QEMU of that directory."""
    try:
        pid = int(json.loads((workdir / "state.json").read_text())["pid"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if b"qemu-system" in cmdline and str(workdir).encode() in cmdline and start_time(pid):
        return pid
    return None


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _dead_vm_dir(workdir: Path) -> bool:
    """True if workdir belongs to a harness that is gone (see the module doc)."""
    try:
        owner = str(json.loads((workdir / "owner.json").read_text())["owner"])
    except FileNotFoundError:
        owner = ""
    except (OSError, ValueError, KeyError, TypeError):
        owner = "?"  # unreadable record: judge like an old directory
    if owner and owner != "?":
        return owner != DETACHED and not token_alive(owner)
    try:
        age = time.time() - workdir.stat().st_mtime
    except OSError:
        return False
    qemu = _qemu_of(workdir)
    if qemu is not None:
        return _ppid(qemu) == 1 and age > STALE_SECONDS  # re-parented to init
    return age > STALE_SECONDS


def _clean_vm_dirs(swept: Swept) -> None:
    for root in (state_dir() / "runs", state_dir() / "vms"):
        if not root.is_dir():
            continue
        for workdir in sorted(root.iterdir()):
            if not workdir.is_dir() or not _dead_vm_dir(workdir):
                continue
            qemu = _qemu_of(workdir)
            if qemu is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(qemu, signal.SIGKILL)
                swept.killed["QEMU"] += 1
            shutil.rmtree(workdir, ignore_errors=True)
            if workdir.exists():
                swept.failed.append(f"{workdir} (could not be removed)")
            else:
                swept.dirs += 1


def _clean_temps(swept: Swept) -> None:
    tmp = Path(tempfile.gettempdir())
    for path in tmp.glob("aufs-harness-*"):
        m = TEMP_RE.match(path.name)
        if m is None or token_alive(f"{m[1]}:{m[2]}"):
            continue
        shutil.rmtree(path, ignore_errors=True)
        swept.temps += not path.exists()
    cache = cache_dir()
    for pattern in ("*/.tmp-*-*", "*/*/.tmp-*-*", "*/*.tmp"):
        for path in cache.glob(pattern):
            pid = path.name.rsplit("-", 1)[-1].split(".")[0]
            if pid.isdigit() and start_time(int(pid)) is None:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                swept.temps += not path.exists()


def _lab_in_use(lab: str) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(entry / "cwd").startswith(lab):
                return True
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd).startswith(lab):
                        return True
    return False


def _clean_labs(swept: Swept) -> None:
    """Mounts and loop devices of host suite labs nobody uses any more."""
    base = tempfile.gettempdir().rstrip("/") + "/unionfs-"
    labs = set()
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            target = line.split()[4].replace("\\040", " ")
            if target.startswith(base):
                mounts.append(target)
                labs.add(base + target[len(base) :].split("/", 1)[0])
    loops = []
    with contextlib.suppress(OSError):
        for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
            path = backing.read_text().strip()
            if path.startswith(base):
                loops.append(backing.parent.parent.name)
                labs.add(base + path[len(base) :].split("/", 1)[0])
    stale = set()
    for lab in labs:
        try:
            old = time.time() - Path(lab).stat().st_mtime > STALE_SECONDS
        except OSError:
            old = True
        if old and not _lab_in_use(lab):
            stale.add(lab)
    for target in sorted(mounts, key=len, reverse=True):  # innermost first
        if not any(target.startswith(lab) for lab in stale):
            continue
        res = subprocess.run(["umount", "-l", target], capture_output=True, text=True, check=False)
        if res.returncode == 0:
            swept.mounts += 1
        else:
            swept.failed.append(f"mount {target}: {res.stderr.strip()[:80]}")
    for loop in loops:
        backing = Path(f"/sys/block/{loop}/loop/backing_file")
        with contextlib.suppress(OSError):
            if not any(backing.read_text().startswith(lab) for lab in stale):
                continue
        res = subprocess.run(
            ["losetup", "-d", f"/dev/{loop}"], capture_output=True, text=True, check=False
        )
        if res.returncode == 0:
            swept.loops += 1
        else:
            swept.failed.append(f"/dev/{loop}: {res.stderr.strip()[:80]}")


def sweep() -> Swept:
    """Clean what dead harness processes left (module doc); log one line if
    anything was found. Never raises for what it cannot clean: it reports it."""
    swept = Swept()
    for step in (_kill_orphans, _clean_vm_dirs, _clean_temps, _clean_labs):
        try:
            step(swept)
        except OSError as exc:
            swept.failed.append(f"{step.__name__.strip('_')}: {exc}")
    text = swept.summary()
    if text:
        (log.warning if swept.failed else log.info)("%s", text)
    return swept
