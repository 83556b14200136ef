"""aufs-standalone: mirror a clone or URL, pick the branch for a kernel, export it.

Branch names follow upstream: aufsX.Y per kernel series, point branches
aufsX.Y.Z for API changes inside a stable series (for X.Y.Z and later), and
aufsX.x-rcN for kernels newer than every series branch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from harness.core import procs
from harness.core.deadline import Deadline
from harness.core.errors import UserError
from kmod.source import kmod_cache, mirror_fetch, resolve_commit
from kmod.version import KernelVersion

log = logging.getLogger(__name__)

UPSTREAM_URL = "https://github.com/sfjro/aufs-standalone.git"
_BRANCH = re.compile(r"^aufs(\d+)\.(\d+)(?:\.(\d+))?(\+)?$")
_RC_BRANCH = re.compile(r"^aufs(\d+)\.x-rcN$")
_READY = ".aufs-harness-ready"


@dataclass(frozen=True)
class AufsChoice:
    """The aufs-standalone commit a build uses, and why it was chosen."""

    url: str
    branch: str
    commit: str
    reason: str
    tree: Path
    distance: str = ""

    @property
    def major(self) -> int:
        """The "5" of aufs5-base.patch, read from the exported tree."""
        for p in self.tree.glob("aufs*-base.patch"):
            m = re.match(r"aufs(\d+)-base\.patch$", p.name)
            if m:
                return int(m[1])
        raise UserError(
            f"aufs source {self.url} at {self.branch} has no aufsN-base.patch: "
            "is it an aufs-standalone repository?"
        )


@dataclass(frozen=True)
class _Branch:
    name: str
    series: tuple[int, int]
    point: int | None


def parse_branches(names: list[str]) -> tuple[list[_Branch], dict[int, str]]:
    """Series/point branches, and the rcN branch per major version."""
    branches: list[_Branch] = []
    rc: dict[int, str] = {}
    for name in names:
        m = _BRANCH.match(name)
        if m:
            point = int(m[3]) if m[3] is not None else None
            branches.append(_Branch(name, (int(m[1]), int(m[2])), point))
            continue
        m = _RC_BRANCH.match(name)
        if m:
            rc[int(m[1])] = name
    return branches, rc


def choose_branch(names: list[str], kernel: KernelVersion) -> tuple[str, str]:
    """(branch, reason) for `kernel` among branch `names`; UserError when none fits."""
    branches, rc = parse_branches(names)
    same = [b for b in branches if b.series == kernel.series]
    points = [b for b in same if b.point is not None]
    series = [b for b in same if b.point is None]
    fitting = [b for b in points if b.point is not None and b.point <= kernel.sublevel]
    if fitting:
        best = max(fitting, key=lambda b: (b.point or 0, b.name.endswith("+")))
        return best.name, f"highest point branch <= {kernel}"
    if series:
        if points:
            lowest = min(b.point or 0 for b in points)
            why = f"series branch: every point branch is newer than {kernel} (lowest .{lowest})"
        else:
            why = f"series branch for {kernel.version}.{kernel.patchlevel}"
        return series[0].name, why
    newest = max((b.series for b in branches), default=None)
    if (newest is None or kernel.series > newest) and kernel.version in rc:
        shown = f"{newest[0]}.{newest[1]}" if newest else "none"
        return rc[kernel.version], f"{kernel} is newer than every series branch (newest {shown})"
    known = ", ".join(sorted({f"{b.series[0]}.{b.series[1]}" for b in branches}, key=_vkey))
    raise UserError(
        f"no aufs branch fits Linux {kernel} (series branches: {known or 'none'}; "
        f"rc branches: {', '.join(sorted(rc.values())) or 'none'}): pass --aufs-ref"
    )


def branch_base(name: str) -> KernelVersion | None:
    """The kernel a branch name targets: aufs6.1 -> 6.1.0, aufs5.10.140 -> 5.10.140,
    aufs5.2.5+ -> 5.2.5; None for aufsN.x-rcN and refs that are no branch name."""
    m = _BRANCH.match(name)
    if not m:
        return None
    return KernelVersion(int(m[1]), int(m[2]), int(m[3] or 0))


def distance(branch: str, kernel: KernelVersion) -> str:
    """How far the kernel is from what the branch was written for, in one phrase:
    "aufs6.1 targets 6.1.0; kernel is 6.1.192 (192 stable releases later)"."""
    base = branch_base(branch)
    if base is None:
        return f"{branch} names no kernel release; kernel is {kernel}"
    text = f"{branch} targets {base}; kernel is {kernel}"
    if base.series != kernel.series:
        return f"{text} (another series)"
    later = kernel.sublevel - base.sublevel
    if later > 0:
        return f"{text} ({later} stable release{'s' if later != 1 else ''} later)"
    if later < 0:
        return f"{text} (the kernel is older than the branch)"
    return text


def _vkey(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def _is_local(src: str) -> bool:
    return "://" not in src and not re.match(r"^[\w.-]+@[\w.-]+:", src)


def mirror_path(src: str) -> Path:
    key = os.path.abspath(os.path.expanduser(src)) if _is_local(src) else src
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return kmod_cache() / "aufs" / "mirrors" / f"{digest}.git"


def sync(src: str, deadline: Deadline) -> Path:
    """Clone or fetch `src` (URL or local clone) into a bare mirror under the cache."""
    if _is_local(src):
        local = Path(src).expanduser()
        if not local.exists():
            raise UserError(f"aufs source {src} does not exist: give a clone's path or a git URL")
        src = str(local.resolve())
    mirror = mirror_path(src)
    mirror_fetch(src, mirror, deadline)
    return mirror


def branch_names(mirror: Path, deadline: Deadline) -> list[str]:
    """Branch names: local heads first, then remote-tracking ones a clone carries."""
    res = procs.run(
        ["git", "-C", mirror, "for-each-ref", "--format=%(refname)", "refs/heads", "refs/remotes"],
        deadline=deadline,
    )
    names: list[str] = []
    for ref in res.stdout.split():
        if ref.startswith("refs/heads/"):
            name = ref[len("refs/heads/") :]
        else:
            parts = ref.split("/", 3)
            if len(parts) < 4 or parts[3] == "HEAD":
                continue
            name = parts[3]
        if name not in names:
            names.append(name)
    return names


def export(mirror: Path, commit: str, deadline: Deadline) -> Path:
    """The files of `commit`, extracted once under the cache (read-only by convention)."""
    dest = kmod_cache() / "aufs" / "trees" / commit
    if (dest / _READY).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if not (dest / _READY).is_file():
            _export_locked(mirror, commit, dest, deadline)
    return dest


def _export_locked(mirror: Path, commit: str, dest: Path, deadline: Deadline) -> None:
    tmp = dest.with_name(f".tmp-{commit}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        archive = tmp / "export.tar"
        procs.run(
            ["git", "-C", mirror, "archive", "--format=tar", "-o", archive, commit],
            deadline=deadline,
        )
        procs.run(["tar", "-xf", archive, "-C", tmp], deadline=deadline)
        archive.unlink()
        (tmp / _READY).write_text(commit + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def select(
    src: str, kernel: KernelVersion, deadline: Deadline, ref: str | None = None
) -> AufsChoice:
    """Sync `src`, pick the branch for `kernel` (or `ref`), and export that commit."""
    mirror = sync(src, deadline)
    if ref:
        branch, reason = ref, "given with --aufs-ref"
    else:
        branch, reason = choose_branch(branch_names(mirror, deadline), kernel)
    commit = resolve_commit(mirror, branch, deadline)
    tree = export(mirror, commit, deadline)
    far = distance(branch, kernel)
    log.info("aufs %s (%s) at %s; %s", branch, reason, commit[:12], far)
    return AufsChoice(url=src, branch=branch, commit=commit, reason=reason, tree=tree, distance=far)
