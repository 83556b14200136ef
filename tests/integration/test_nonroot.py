"""aufs-harness as a normal user: root only for installing packages.

CI runs as root, so these tests create throwaway users (useradd), give one of
them subordinate ids (usermod --add-subuids/--add-subgids) and run the harness
as them (runuser), with an empty cache in their own home (mode 0700, as Debian's
adduser makes it). The user's python imports this checkout: the repository's
.venv when the user can run it, else a venv of the system python that sees the
.venv's site-packages (the same X.Y), so no test needs the network for Python
packages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.core.store import key_of
from vm import userns
from vm.image import ImageRecipe

REPO = Path(__file__).resolve().parents[2]
AUFS_SRC = os.environ.get("AUFS_HARNESS_AUFS_SRC", "")
FIXUP_DIR = os.environ.get("AUFS_HARNESS_FIXUP_DIR", "")
# The kernel build as a user is a cold build (5-10 min on 2 loaded cores).
AUFS_KERNEL = os.environ.get("AUFS_HARNESS_NONROOT_KERNEL", "")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="creates users: run as root (as CI does)"),
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("useradd", "usermod", "userdel", "runuser")),
        reason="needs useradd, usermod, userdel and runuser (Debian: passwd, util-linux)",
    ),
]


@dataclass
class User:
    name: str
    home: Path
    python: str

    def env(self, **extra: str) -> dict[str, str]:
        env = {"PATH": PATH, "HOME": str(self.home), "LANG": "C.UTF-8", "USER": self.name}
        for name in ("AUFS_HARNESS_DEBIAN_MIRROR", "AUFS_HARNESS_DEBIAN_SECURITY_MIRROR"):
            if name in os.environ:
                env[name] = os.environ[name]
        return {**env, **extra}

    def harness(
        self, args: list[str], timeout: float, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """`aufs-harness ARGS` as this user, from its home, with a clean environment."""
        argv = ["runuser", "-u", self.name, "--", "env", "-i"]
        argv += [f"{k}={v}" for k, v in self.env(**env).items()]
        argv += [self.python, "-m", "harness.cli", *args]
        return subprocess.run(
            argv, cwd=self.home, capture_output=True, text=True, timeout=timeout, check=False
        )


def _python_for(name: str, home: Path) -> str:
    """A python the user can run that imports this checkout."""
    venv_python = REPO / ".venv" / "bin" / "python"
    probe = ["runuser", "-u", name, "--", "env", "-i", f"PATH={PATH}"]
    ok = subprocess.run([*probe, str(venv_python), "-c", "import harness.cli"],
                        capture_output=True, check=False)  # fmt: skip
    if ok.returncode == 0:
        return str(venv_python)
    system = shutil.which("python3", path=PATH)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = REPO / ".venv" / "lib" / version / "site-packages"
    if system is None or not site.is_dir():
        pytest.skip(f"{name} cannot run {venv_python} and there is no system python3")
    venv = home / "venv"
    subprocess.run([*probe, system, "-m", "venv", "--without-pip", str(venv)], check=True)
    same = subprocess.run([*probe, str(venv / "bin" / "python"), "-c",
                           "import sys; print(sys.version_info[:2])"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    if same.stdout.strip() != str(tuple(sys.version_info[:2])):
        pytest.skip(f"the system python3 is not {version}: make a venv {name} can run")
    pth = venv / "lib" / version / "site-packages" / "aufs-harness-checkout.pth"
    pth.write_text(f"import site; site.addsitedir({str(site)!r})\n")
    shutil.chown(pth, name, name)
    return str(venv / "bin" / "python")


@pytest.fixture
def make_user() -> Iterator[object]:
    made: list[str] = []

    def make(subids: bool) -> User:
        name = f"ahnr{uuid.uuid4().hex[:8]}"
        home = Path("/home") / name  # pytest's own tmp_path is root's, mode 0700
        # -r: a system user, to whom useradd hands out no subordinate ids
        argv = ["useradd", "-m", "-d", str(home), "-s", "/bin/sh"] + ([] if subids else ["-r"])
        subprocess.run([*argv, name], check=True)
        made.append(name)
        home.chmod(0o700)  # as Debian's adduser makes it: the subordinate ids cannot enter
        have = userns.subids(userns.SUBUID, name)
        if subids and (have is None or have.count < userns.NEEDED_IDS):
            free = userns.free_range((userns.SUBUID, userns.SUBGID))
            span = f"{free.start}-{free.start + free.count - 1}"
            subprocess.run(["usermod", "--add-subuids", span, "--add-subgids", span, name],
                           check=True)  # fmt: skip
        if not subids:
            assert userns.subids(userns.SUBUID, name) is None
        return User(name, home, _python_for(name, home))

    yield make
    for name in made:
        subprocess.run(["pkill", "-KILL", "-u", name], check=False)
        subprocess.run(["userdel", "-r", name], capture_output=True, check=False)


def test_without_subordinate_ids_the_run_stops_at_once_saying_how_to_grant_them(
    make_user: object, fact: list[str]
) -> None:
    assert callable(make_user)
    user: User = make_user(subids=False)
    start = time.monotonic()
    res = user.harness(["run", "--distro", "trixie"], timeout=60)
    seconds = time.monotonic() - start
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and lines, res.stderr
    assert f"no subordinate uids for {user.name} in /etc/subuid: run `sudo usermod" in lines[-1]
    assert "--add-subgids " in lines[-1] and lines[-1].endswith(f" {user.name}`"), lines[-1]
    assert not list((user.home / ".cache").rglob("rootfs.img"))
    # Python's start and the harness's imports included; the check itself is milliseconds.
    assert seconds < 5, f"took {seconds:.1f}s"
    fact.append(f"no subordinate ids: exit 2 after {seconds:.2f}s: {lines[-1]}")


@pytest.mark.skipif(
    shutil.which("newuidmap") is None, reason="needs newuidmap (Debian package uidmap)"
)
def test_a_user_runs_the_main_job_from_an_empty_cache(make_user: object, fact: list[str]) -> None:
    assert callable(make_user)
    reason = userns.sysctl_reason(userns.PROC_SYS)
    if reason:
        pytest.skip(reason)
    user: User = make_user(subids=True)
    tmpdir = Path(tempfile.mkdtemp(prefix="aufs-nonroot-tmp-"))
    shutil.chown(tmpdir, user.name, user.name)
    tmpdir.chmod(0o755)
    results = user.home / "results"
    start = time.monotonic()
    try:
        res = user.harness(["run", "--results", str(results)], timeout=2700, TMPDIR=str(tmpdir))
        left = sorted(p.name for p in tmpdir.iterdir())
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)  # as root: even a tree of subordinate ids
    seconds = time.monotonic() - start
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((results / "latest" / "report.json").read_text())
    target = report["targets"][0] if "targets" in report else report
    checks = target["checks"]
    overlay = [c for c in checks if "overlay" in c["nodeid"] and c["outcome"] == "passed"]
    assert overlay and all(c["outcome"] in ("passed", "skipped", "xfailed") for c in checks)
    # The image is the user's own, under the user's XDG cache, with the very key
    # a root build of the same recipe has.
    images = user.home / ".cache" / "aufs-harness" / "images"
    key = key_of(ImageRecipe(suite="bookworm").inputs())
    rootfs = images / key / "rootfs.img"
    assert rootfs.is_file() and rootfs.stat().st_uid == int(_id(user.name))
    # Ownership inside the image is the guest's, not the host's subordinate ids.
    shadow = subprocess.run(["debugfs", "-R", "stat /etc/shadow", str(rootfs)],
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert "User:     0   Group:    42" in shadow.stdout, shadow.stdout[:400]
    assert not left, f"the build left {left} in its TMPDIR"
    fact.append(
        f"as {user.name} (subordinate ids, home 0700, empty cache): image built and "
        f"{len(overlay)} overlay checks passed in {seconds:.0f}s"
    )


def _id(name: str) -> str:
    return subprocess.run(["id", "-u", name], capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(
    not (AUFS_SRC and AUFS_KERNEL),
    reason="set AUFS_HARNESS_AUFS_SRC and AUFS_HARNESS_NONROOT_KERNEL (e.g. "
    "debian:bullseye=5.10.223-1) to build an aufs kernel as a user (a cold 5-10 min build)",
)
def test_a_user_builds_an_aufs_kernel(make_user: object, fact: list[str]) -> None:
    assert callable(make_user)
    user: User = make_user(subids=False)  # a kernel build needs no namespace at all
    args = ["kmod", "build", "--kernel", AUFS_KERNEL, "--aufs-src", AUFS_SRC]
    if FIXUP_DIR:
        args += ["--fixup-dir", FIXUP_DIR]
    start = time.monotonic()
    res = user.harness(args, timeout=3600)
    seconds = time.monotonic() - start
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-2000:])
    built = list((user.home / ".cache" / "aufs-harness").rglob("aufs.ko"))
    assert built, res.stdout[-2000:]
    fact.append(f"as {user.name}: aufs kernel {AUFS_KERNEL} built in {seconds:.0f}s")
