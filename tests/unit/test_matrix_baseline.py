"""Baselines: entries match checks by pattern and environment; known failures
keep a cell green, a fix turns it red unless intermittent; the exit code."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.core.errors import UserError
from harness.matrix import baseline
from harness.matrix.baseline import Baseline, Entry, Environment, aufs_version, in_range
from harness.matrix.spec import Cell
from harness.matrix.verdict import apply_baseline, matrix_exit_code
from harness.results import CheckResult, Stage, TargetReport

MTIME = "suite/test_copy_up.py::test_copy_up_keeps_parent_directory_mtimes"
AUFS = Cell(
    name="bullseye-aufs5.10.140-tmpfs", kernel="debian:bullseye=5.10.223-1", distro="bullseye",
    drivers=("aufs", "overlay"), branch_fs=("tmpfs",), aufs_src="/src", aufs_ref="aufs5.10.140",
)  # fmt: skip
SHIPPED = Path(__file__).parents[2] / "harness" / "baselines" / "bullseye-aufs5.10.toml"


def entry(**kw: object) -> Entry:
    base: dict[str, object] = {
        "id": "e", "checks": (f"{MTIME}[aufs-*]",), "reason": "why", "reference": "ref",
    }  # fmt: skip
    return Entry(**{**base, **kw})  # type: ignore[arg-type]


def cell_report(*outcomes: tuple[str, str]) -> TargetReport:
    """A settled report of checks with these outcomes, as the runner leaves it."""
    checks = [CheckResult(nodeid, outcome) for nodeid, outcome in outcomes]
    report = TargetReport(target=AUFS.name, checks=checks, kernel_release="5.10.223")
    report.settle()
    return report


@pytest.mark.parametrize(
    ("version", "spec", "inside"),
    [
        ((5, 10, 140), ">=5.10, <5.11", True),
        ((5, 11), ">=5.10, <5.11", False),
        ((5, 9, 300), ">=5.10", False),
        ((6, 1), "==6.1", True),
        ((6, 1, 5), "!=6.1", False),
    ],
)
def test_aufs_version_ranges(version: tuple[int, ...], spec: str, inside: bool) -> None:
    assert in_range(version, spec) is inside


def test_aufs_versions_from_branches() -> None:
    assert aufs_version("aufs5.10.140") == (5, 10, 140)
    assert aufs_version("aufs6.x-rcN") == (6,)
    assert aufs_version("main") is None


@pytest.mark.parametrize(
    ("when", "applies"),
    [
        ({}, True),
        ({"kernel": "debian:bullseye*"}, True),
        ({"kernel": "debian:bookworm*"}, False),
        ({"kernel_release": "5.10.*"}, True),
        ({"aufs": ">=5.10, <5.11"}, True),
        ({"aufs": ">=6.1"}, False),
        ({"aufs_options": ["XATTR=y"]}, True),
        ({"aufs_options": ["XATTR=n"]}, False),
        ({"branch_fs": ["tmpfs", "xfs"]}, True),
        ({"branch_fs": ["ext4"]}, False),
        ({"cells": ["bullseye-*"]}, True),
        ({"cells": ["bookworm-*"]}, False),
    ],
)
def test_environment_keys(when: dict[str, object], applies: bool) -> None:
    env = Environment(AUFS, kernel_release="5.10.223", aufs_branch=None)
    assert entry(when=when).applies(env) is applies
    assert not entry(when=when, active=False).applies(env)


def test_known_failures_keep_the_cell_green() -> None:
    report = cell_report(
        (f"{MTIME}[aufs-tmpfs-defaults]", "failed"), (f"{MTIME}[overlay-tmpfs]", "passed"),
    )  # fmt: skip
    apply_baseline(report, AUFS, Baseline(None, (entry(),)))
    assert report.verdict == "passed", report.reason
    assert report.checks[0].known == "why (ref)" and report.checks[1].known == ""
    assert report.extra["known"] == 1 and report.extra["fixed"] == []
    assert report.reason == "1 known failure(s) as the baseline expects"


def test_a_report_judged_again_with_a_flipped_baseline_is_red() -> None:
    report = cell_report((f"{MTIME}[aufs-tmpfs-defaults]", "failed"))
    apply_baseline(report, AUFS, Baseline(None, (entry(),)))
    assert report.verdict == "passed"
    apply_baseline(report, AUFS, Baseline(None, (entry(outcomes=("hung",)),)))
    assert (report.verdict, report.reason) == ("failed", "1 failed")
    assert report.checks[0].known == "" and report.extra["known"] == 0


def test_an_unknown_failure_stays_red() -> None:
    report = cell_report(
        (f"{MTIME}[aufs-tmpfs-defaults]", "failed"), ("suite/test_x.py::test_y", "failed"),
    )  # fmt: skip
    apply_baseline(report, AUFS, Baseline(None, (entry(),)))
    assert report.verdict == "failed"


def test_flipping_an_expectation_makes_the_cell_red() -> None:
    report = cell_report((f"{MTIME}[aufs-tmpfs-defaults]", "failed"))
    apply_baseline(report, AUFS, Baseline(None, (entry(outcomes=("error",)),)))
    assert report.verdict == "failed" and report.checks[0].known == ""


def test_a_known_failure_that_passes_is_a_fix_unless_intermittent() -> None:
    nodeid = f"{MTIME}[aufs-tmpfs-defaults]"
    report = cell_report((nodeid, "passed"))
    apply_baseline(report, AUFS, Baseline(None, (entry(),)))
    assert report.verdict == "failed" and report.extra["fixed"] == [nodeid]
    assert report.reason == f"1 known failure(s) now pass: {nodeid}"
    report = cell_report((nodeid, "passed"))
    apply_baseline(report, AUFS, Baseline(None, (entry(intermittent=True),)))
    assert report.verdict == "passed" and report.extra["fixed"] == []


def test_a_failed_stage_is_not_excused_by_known_checks() -> None:
    report = cell_report((f"{MTIME}[aufs-tmpfs-defaults]", "failed"))
    report.stages = [Stage("load", "failed", detail="insmod failed")]
    apply_baseline(report, AUFS, Baseline(None, (entry(),)))
    assert report.verdict == "failed"


def test_hung_and_error_outcomes_can_be_known() -> None:
    report = cell_report(("suite/test_options.py::test_udba[aufs-tmpfs]", "hung"))
    known = entry(checks=("suite/test_options.py::test_udba*",), outcomes=("hung",))
    apply_baseline(report, AUFS, Baseline(None, (known,)))
    assert report.verdict == "passed"


def test_matrix_exit_codes() -> None:
    def r(verdict: str) -> TargetReport:
        return TargetReport("c", verdict=verdict)

    assert matrix_exit_code([r("passed"), r("passed")]) == 0
    assert matrix_exit_code([r("passed"), r("failed")]) == 1
    assert matrix_exit_code([r("failed"), r("error")]) == 2
    assert matrix_exit_code([]) == 2


def test_the_shipped_bullseye_baseline_knows_the_parent_mtime_checks_only() -> None:
    shipped = baseline.load(SHIPPED)
    env = Environment(AUFS, "5.10.223", "aufs5.10.140")
    (known,) = shipped.for_env(env)
    assert known.names(f"{MTIME}[aufs-ext4-docker]")
    assert not known.names(f"{MTIME}[overlay-ext4]")
    assert not known.names(
        "suite/test_options.py::test_udba_notify_sees_a_file_added_behind_its_back[aufs-tmpfs]"
    )
    bookworm = Cell("b", "debian:bookworm", "bookworm", ("aufs",), ("tmpfs",), "/s", "aufs6.1")
    assert shipped.for_env(Environment(bookworm, "6.1.0", "aufs6.1")) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("version = 1\n[[known]]\nid = 'a'\nchecks = ['x']\nreason = 'r'\n",
         "known.0.reference: required"),
        ("version = 1\n[[known]]\nid = 'a'\nchecks = ['x']\nreason = 'r'\nreference = 'f'\n"
         "when = { aufs = '5.10' }\n", "when.aufs: '5.10' is not allowed; an aufs version range"),
        ("version = 1\n[[known]]\nid = 'a'\nchecks = ['x']\nreason = 'r'\nreference = 'f'\n"
         "outcomes = ['skipped']\n", "outcomes.0: 'skipped' is not allowed; use one of: failed"),
        ("version = 1\n[[known]]\nid = 'a'\nchecks = ['x']\nreason = 'r'\nreference = 'f'\n"
         "when = { arch = 'x' }\n", "when.arch: unknown key"),
        ("version = 1\n" + "[[known]]\nid = 'a'\nchecks = ['x']\nreason = 'r'\nreference = 'f'\n"
         * 2,
         "known.id: 'a' is used twice"),
    ],
)  # fmt: skip
def test_each_bad_baseline_is_one_line(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "b.toml"
    path.write_text(textwrap.dedent(body))
    with pytest.raises(UserError) as info:
        baseline.load(path)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value), str(info.value)
