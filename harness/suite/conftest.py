"""Fixtures and options of the union filesystem conformance suite.

Runs as root, inside a test guest (over pytest-xdist) or directly on a host:

    pytest harness/suite [--driver overlay,aufs] [--branch-fs tmpfs,ext4,xfs,btrfs,mixed]

Each check that takes the `lab` fixture runs once per (driver, branch fs)
pair, on branch filesystems made fresh for it; a check that takes only
`driver` runs once per driver. A driver whose filesystem is not in
/proc/filesystems, or a branch filesystem this machine cannot make, is skipped
with the reason printed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from unionfs import lab as lab_mod
from unionfs import sysapi
from unionfs.drivers import DRIVERS, UnionDriver
from unionfs.lab import Lab

DEFAULT_DRIVERS = "overlay,aufs"
DEFAULT_BRANCH_FS = "tmpfs,ext4"


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("unionfs", "union filesystem conformance suite")
    group.addoption(
        "--driver",
        default=DEFAULT_DRIVERS,
        help="comma-separated union drivers to check: overlay, aufs "
        f"(default {DEFAULT_DRIVERS}; one missing from /proc/filesystems is skipped)",
    )
    group.addoption(
        "--branch-fs",
        default=DEFAULT_BRANCH_FS,
        help="comma-separated branch filesystems: tmpfs, ext4, xfs, btrfs, mixed "
        "(= ext4+tmpfs+ext4), or A+B+C for RW on A, RO on B, RO2 on C "
        f"(default {DEFAULT_BRANCH_FS})",
    )
    group.addoption(
        "--suite-tmp",
        default=None,
        help="directory for per-check temporary directories (default: the system temp dir)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "only_drivers(*names): run this check only for these drivers"
    )
    config.addinivalue_line(
        "markers", "only_branch_fs(*specs): run this check only on these branch filesystems"
    )
    for name in _csv(config.getoption("--driver")):
        if name not in DRIVERS:
            raise pytest.UsageError(f"--driver: unknown driver {name!r}; know {sorted(DRIVERS)}")
    for spec in _csv(config.getoption("--branch-fs")):
        try:
            lab_mod.parse_fs_spec(spec)
        except ValueError as exc:
            raise pytest.UsageError(f"--branch-fs: {exc}") from None


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = []
    for name in _csv(config.getoption("--driver")):
        drv = DRIVERS[name]
        state = "available" if drv.available() else f"SKIPPED: {drv.unavailable_reason()}"
        lines.append(f"unionfs driver {name}: {state}")
    for spec in _csv(config.getoption("--branch-fs")):
        reason = lab_mod.fs_unavailable_reason(spec)
        lines.append(f"unionfs branch fs {spec}: {'SKIPPED: ' + reason if reason else 'available'}")
    return lines


@dataclass(frozen=True)
class Case:
    driver: str
    fs: str | None = None

    @property
    def id(self) -> str:
        return self.driver if self.fs is None else f"{self.driver}-{self.fs}"


def _marker_args(metafunc: pytest.Metafunc, name: str) -> set[str] | None:
    marker = metafunc.definition.get_closest_marker(name)
    return set(marker.args) if marker is not None else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    drivers = _csv(metafunc.config.getoption("--driver"))
    only = _marker_args(metafunc, "only_drivers")
    if only is not None:
        drivers = [d for d in drivers if d in only]
    if "lab" in metafunc.fixturenames:
        specs: list[str | None] = list(_csv(metafunc.config.getoption("--branch-fs")))
        only_fs = _marker_args(metafunc, "only_branch_fs")
        if only_fs is not None:
            specs = [s for s in specs if s in only_fs] or [sorted(only_fs)[0]]
    else:
        specs = [None]
    cases = [Case(d, s) for d in drivers for s in specs]
    metafunc.parametrize("case", cases, ids=[c.id for c in cases], indirect=True)


@pytest.fixture
def case(request: pytest.FixtureRequest) -> Case:
    if os.geteuid() != 0:
        pytest.skip("the union filesystem suite needs root (mount(2), loop devices)")
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def driver(case: Case) -> UnionDriver:
    drv = DRIVERS[case.driver]
    if not drv.available():
        pytest.skip(drv.unavailable_reason())
    return drv


@pytest.fixture
def lab(case: Case, driver: UnionDriver, request: pytest.FixtureRequest) -> Iterator[Lab]:
    assert case.fs is not None
    reason = lab_mod.fs_unavailable_reason(case.fs)
    if reason:
        pytest.skip(reason)
    the_lab = Lab(driver, case.fs, base=request.config.getoption("--suite-tmp"))
    try:
        the_lab.setup()
        yield the_lab
    finally:
        the_lab.cleanup()


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Safety net for interrupted runs: detach whatever a lab could not undo.
    for m in sorted(lab_mod.leaked_mounts(), key=lambda m: -len(m.target)):
        with contextlib.suppress(OSError):
            sysapi.umount(m.target, sysapi.MNT_DETACH)
