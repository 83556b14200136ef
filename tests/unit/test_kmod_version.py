"""KernelVersion: parsing a tree's Makefile and ordering."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.core.errors import UserError
from kmod.version import KernelVersion, compare_debian, debian_kernel_version
from tests.unit.kmod_fakes import make_kernel_tree


def test_from_makefile(tmp_path: Path) -> None:
    v = KernelVersion.from_makefile(make_kernel_tree(tmp_path / "k", "5.10.223"))
    assert (v.version, v.patchlevel, v.sublevel, v.extraversion) == (5, 10, 223, "")
    assert str(v) == "5.10.223"
    assert v.series == (5, 10)


def test_rc_makefile(tmp_path: Path) -> None:
    v = KernelVersion.from_makefile(make_kernel_tree(tmp_path / "k", "6.13.0-rc3"))
    assert v.rc == 3
    assert str(v) == "6.13.0-rc3"  # as the kernel's own KERNELVERSION


def test_not_a_tree(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no readable top Makefile"):
        KernelVersion.from_makefile(tmp_path)
    (tmp_path / "Makefile").write_text("all:\n\ttrue\n")
    with pytest.raises(UserError, match="VERSION/PATCHLEVEL"):
        KernelVersion.from_makefile(tmp_path)


def test_order() -> None:
    p = KernelVersion.parse
    assert p("5.10.140") < p("5.10.223") < p("6.1") < p("6.13-rc3") < p("6.13") < p("6.13.1")
    assert p("v6.1") == p("6.1.0")
    assert max([p("5.4.3"), p("5.10.1"), p("5.9.20")]) == p("5.10.1")


def test_bad_text() -> None:
    with pytest.raises(UserError, match="not a kernel version"):
        KernelVersion.parse("linux")


DEBIAN_ORDER = [
    "5.10.223-1", "6.1.9-1", "6.1.10-1", "6.1.176-1", "6.1.192-2", "6.1.192-3",
    "6.12.117-1~deb12u1", "6.12.117-1", "6.12.117-1+b1", "6.13~rc3-1~exp1", "6.13~rc3-1",
    "6.13-1", "1:1.0-1",
]  # fmt: skip


def test_debian_version_order() -> None:
    for i, a in enumerate(DEBIAN_ORDER):
        for j, b in enumerate(DEBIAN_ORDER):
            got = compare_debian(a, b)
            assert (got > 0) - (got < 0) == (i > j) - (i < j), (a, b)


def test_debian_order_agrees_with_dpkg() -> None:
    if not shutil.which("dpkg"):
        pytest.skip("dpkg is not installed")
    for a in DEBIAN_ORDER[::2]:
        for b in DEBIAN_ORDER[1::2]:
            op = "lt" if compare_debian(a, b) < 0 else "gt"
            res = subprocess.run(["dpkg", "--compare-versions", a, op, b], check=False)
            assert res.returncode == 0, (a, op, b)


@pytest.mark.parametrize(
    ("package_version", "kernel"),
    [("6.1.192-3", "6.1.192"), ("6.12.117-1~deb12u1", "6.12.117"),
     ("6.13~rc3-1~exp1", "6.13.0-rc3"), ("7.2.13-1", "7.2.13"), ("1:5.10-1", "5.10.0")],
)  # fmt: skip
def test_debian_kernel_version(package_version: str, kernel: str) -> None:
    assert str(debian_kernel_version(package_version)) == kernel
