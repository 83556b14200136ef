"""KernelVersion: parsing a tree's Makefile and ordering."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.errors import UserError
from kmod.version import KernelVersion
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
