"""Building as a normal user: what mmdebstrap's unshare mode needs, checked up front.

The image is built with `mmdebstrap --mode=unshare` by everyone. As root that
is a private mount (and pid, uts, ipc) namespace; as a normal user it is also a
user namespace whose root is the first of the user's subordinate ids (mmdebstrap
reads the user's first line of /etc/subuid and /etc/subgid, by name). The tree
it leaves is then owned, seen from outside, by those subordinate ids; every
later step that reads or removes it runs through `mmdebstrap --unshare-helper`,
which enters a namespace with the same mapping, so it sees exactly what root
would see.

check() says in one line what a user lacks and how to grant it, in well under
a second, before anything slow starts.
"""

from __future__ import annotations

import getpass
import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.core.deadline import Deadline
from harness.core.errors import UserError
from harness.core.procs import run

# Debian packages own ids up to 65534 (nobody/nogroup): the namespace must map them.
NEEDED_IDS = 65536
SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")
PROC_SYS = Path("/proc/sys")
# The first subordinate id `useradd` hands out (SUB_UID_MIN in /etc/login.defs).
FIRST_SUBID = 100000
PROBE_SECONDS = 10.0
# The helper's commands run from /: the namespace's root cannot enter a 0700
# home, and find(1) fails when it cannot return to its starting directory.
HELPER_CWD = Path("/")


@dataclass(frozen=True)
class IdRange:
    start: int
    count: int


def user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return getpass.getuser()


def subids(path: Path, user: str) -> IdRange | None:
    """The user's range in /etc/subuid or /etc/subgid as mmdebstrap reads it:
    the first line whose name is the user's (None when there is none)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] == user:
            try:
                return IdRange(int(parts[1]), int(parts[2]))
            except ValueError:
                return None
    return None


def free_range(paths: tuple[Path, ...]) -> IdRange:
    """A block of NEEDED_IDS ids nobody has in `paths`: the one to suggest."""
    end = FIRST_SUBID
    for path in paths:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                end = max(end, int(parts[1]) + int(parts[2]))
    return IdRange(end, NEEDED_IDS)


def _sysctl(name: str, root: Path) -> int | None:
    try:
        return int((root / name.replace(".", "/")).read_text().strip())
    except (OSError, ValueError):
        return None


def sysctl_reason(root: Path) -> str | None:
    """Why this kernel refuses unprivileged user namespaces, with the fix; or None."""
    fixes = (
        ("kernel.unprivileged_userns_clone", 0, 1),  # Debian's own switch (before 6.x)
        ("user.max_user_namespaces", 0, 15000),
        ("kernel.apparmor_restrict_unprivileged_userns", 1, 0),  # Ubuntu 23.10+
    )
    for name, bad, good in fixes:
        if _sysctl(name, root) == bad:
            return (
                f"unprivileged user namespaces are disabled ({name} = {bad}): run "
                f"`sudo sysctl -w {name}={good}` (and put it in /etc/sysctl.d/ to keep it)"
            )
    return None


def static_reason(
    user: str,
    subuid: Path | None = None,
    subgid: Path | None = None,
    proc_sys: Path | None = None,
) -> str | None:
    """Why `user` cannot build in a user namespace, from files alone; or None."""
    subuid, subgid = subuid or SUBUID, subgid or SUBGID
    reason = sysctl_reason(proc_sys or PROC_SYS)
    if reason:
        return reason
    for tool in ("newuidmap", "newgidmap"):
        if find_tool(tool) is None:
            return (
                f"{tool} is missing (it maps the subordinate ids): install the Debian "
                "package uidmap (`sudo apt-get install uidmap`, or `make deps`)"
            )
    free = free_range((subuid, subgid))
    grant = (
        f"run `sudo usermod --add-subuids {free.start}-{free.start + free.count - 1} "
        f"--add-subgids {free.start}-{free.start + free.count - 1} {user}`"
    )
    for path, kind in ((subuid, "uids"), (subgid, "gids")):
        found = subids(path, user)
        if found is None:
            return f"no subordinate {kind} for {user} in {path}: {grant}"
        if found.count < NEEDED_IDS:
            return (
                f"{user} has only {found.count} subordinate {kind} in {path} (its first line "
                f"for {user} counts, and the image needs {NEEDED_IDS}): {grant}"
            )
    return None


def find_tool(name: str) -> str | None:
    return shutil.which(name)


def check(mmdebstrap: str, deadline: Deadline) -> None:
    """Raise UserError naming what is missing when this user cannot build the
    image in a user namespace. Root needs nothing; a user needs the sysctls,
    uidmap and subordinate ids, then one probe through mmdebstrap itself."""
    if os.geteuid() == 0:
        return
    user = user_name()
    reason = static_reason(user)
    if reason is None:
        probe = run(
            helper(mmdebstrap, ["true"]),
            cwd=HELPER_CWD,
            deadline=deadline.sub(PROBE_SECONDS, "entering a user namespace"),
            check=False,
        )
        if probe.returncode != 0:
            said = [ln.strip() for ln in (probe.stderr or "").splitlines() if ln.strip()]
            reason = (
                f"cannot enter a user namespace with {user}'s subordinate ids "
                f"({(said or ['no message'])[0][:200]}): check /etc/subuid, /etc/subgid and "
                "that newuidmap/newgidmap are setuid root (Debian package uidmap)"
            )
    if reason:
        raise UserError(f"building the guest image as {user}: {reason}")


def helper(mmdebstrap: str, argv: list[str | os.PathLike[str]]) -> list[str | os.PathLike[str]]:
    """argv run in a namespace that sees an unshare-mode tree as root does."""
    return [mmdebstrap, "--unshare-helper", *argv]


def traversable_by_others(path: Path) -> bool:
    """Whether a subordinate id (an 'other' user) can reach `path`: every
    directory on the way is executable by others."""
    for part in [path, *path.parents]:
        try:
            if not part.stat().st_mode & 0o001:
                return False
        except OSError:
            return False
    return True
