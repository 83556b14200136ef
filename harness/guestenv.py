"""The guest's pytest stack: the host's exact versions, as pure-Python wheels.

pytest-xdist copies the host's own pytest into the guest's working directory,
where it shadows anything installed there, so pytest's dependencies in the
guest must be the host's versions too. We download those wheels once from the
package registry (cached, keyed by the versions), upload them, and unpack
them into a site directory the guest's python3 finds through a .pth file.
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys
from pathlib import Path

from harness.core.deadline import Deadline
from harness.core.errors import InfraError
from harness.core.paths import cache_dir
from harness.core.procs import run
from harness.core.store import Store
from vm.ssh import Guest

log = logging.getLogger(__name__)

# What pytest and xdist import at run time in the guest.
HOST_PINNED = ("pytest", "pluggy", "iniconfig", "packaging", "pygments", "execnet", "pytest-xdist")
# Needed only by guests older than Python 3.11 (bullseye's 3.9); not on the host.
BACKPORTS = {"exceptiongroup": "1.3.2", "tomli": "2.5.0", "typing-extensions": "4.16.0"}

# The suite and the module loader run on the guest's python3 (harness/guest/).
MIN_PYTHON = (3, 9)
GUEST_ROOT = "/opt/aufs-harness"
GUEST_SITE = f"{GUEST_ROOT}/site"

_INSTALL = r"""
import os, site, sys, zipfile
root, site_dir, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
os.makedirs(site_dir, exist_ok=True)
for name in sorted(os.listdir(root)):
    if name.endswith(".whl"):
        zipfile.ZipFile(os.path.join(root, name)).extractall(site_dir)
pth = os.path.join(site.getsitepackages()[0], "aufs-harness.pth")
os.makedirs(os.path.dirname(pth), exist_ok=True)
open(pth, "w").write("".join(p + "\n" for p in [site_dir, *extra]))
print(pth)
"""


# Prints the guest python's version, then whether pyudev imports; runs on any Python.
_PROBE = """
import sys
print("%d.%d.%d" % sys.version_info[:3])
try:
    import pyudev
    print("pyudev")
except Exception:
    print("no-pyudev")
"""


def python_problem(status: int, stdout: str, stderr: str) -> str | None:
    """What in the guest's Python stops the suite, from the probe's result, or None."""
    lines = stdout.split()
    if status == 127 or not lines:
        why = (stderr.strip().splitlines() or ["no output"])[-1]
        need = ".".join(map(str, MIN_PYTHON))
        return (
            f"the image has no working python3 ({why}), the suite needs Python {need} "
            "or newer: install python3 in the image"
        )
    found = lines[0]
    try:
        version = tuple(int(x) for x in found.split(".")[:2])
    except ValueError:
        return f"the image's python3 printed {found!r} as its version: install CPython 3 in it"
    need = ".".join(map(str, MIN_PYTHON))
    if version < MIN_PYTHON:
        return (
            f"the image's python3 is {found}, the suite needs Python {need} or newer: "
            "use an image with a newer python3 (Debian bullseye or later)"
        )
    if "pyudev" not in lines[1:]:
        return (
            f"the image's python3 {found} has no pyudev, which the module loader needs: "
            "install it in the image (Debian: python3-pyudev)"
        )
    return None


def check_python(guest: Guest, deadline: Deadline) -> str:
    """The guest python3's version; InfraError with the one-line reason when the
    suite cannot run on it (too old, missing, or without pyudev)."""
    result = guest.run(["python3", "-c", _PROBE], deadline)
    problem = python_problem(result.status, result.stdout, result.stderr)
    if problem:
        raise InfraError(problem)
    return result.stdout.split()[0]


def pins() -> dict[str, str]:
    versions = {name: importlib.metadata.version(name) for name in HOST_PINNED}
    return {**versions, **BACKPORTS}


def wheels(deadline: Deadline) -> Path:
    """A directory of py3-none-any wheels for the pinned stack (cached)."""
    wanted = pins()

    def download(tmp: Path) -> dict[str, object]:
        log.info("downloading the guest's pytest stack (%d wheels)", len(wanted))
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--implementation",
                "py",
                "--abi",
                "none",
                "--platform",
                "any",
                "--python-version",
                "3.9",
                "--dest",
                tmp,
                *(f"{k}=={v}" for k, v in sorted(wanted.items())),
            ],
            deadline=deadline,
        )
        return {"wheels": sorted(p.name for p in tmp.glob("*.whl"))}

    entry = Store(cache_dir() / "guest-wheels").get_or_build({"pins": wanted, "v": 1}, download)
    return entry.path


def install(guest: Guest, deadline: Deadline, paths: tuple[str, ...] = ()) -> None:
    """Upload and unpack the stack in the guest (idempotent); `paths` go on sys.path too."""
    wheel_dir = wheels(deadline)
    remote = f"{GUEST_ROOT}/wheels"
    guest.run(["rm", "-rf", remote, GUEST_SITE], deadline, check=True)
    guest.run(["mkdir", "-p", remote], deadline, check=True)
    for whl in sorted(wheel_dir.glob("*.whl")):
        guest.put(whl, f"{remote}/{whl.name}")
    guest.run(["python3", "-c", _INSTALL, remote, GUEST_SITE, *paths], deadline, check=True)
