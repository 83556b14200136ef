"""harness/compare.py and `report compare`: two runs check by check."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.compare import compare, load_reports, render
from harness.core.errors import UserError
from harness.results import CheckResult, TargetReport
from harness.resultsdir import ResultsDir


def run_with(*checks: tuple[str, str]) -> list[TargetReport]:
    report = TargetReport(target="debian:bullseye aufs")
    report.checks = [CheckResult(nodeid, outcome) for nodeid, outcome in checks]
    return [report]


def test_checks_match_by_module_and_name_wherever_the_suite_ran() -> None:
    before = run_with(("suite/test_a.py::test_x[aufs-tmpfs]", "passed"))
    after = run_with(("harness/guest/suite/test_a.py::test_x[aufs-tmpfs]", "passed"))
    result = compare(before, after)
    assert result.same
    assert render(result)[-1] == "same verdict for every check"


def test_two_single_target_runs_compare_whatever_their_labels() -> None:
    before = run_with(("suite/test_a.py::x", "passed"))
    after = run_with(("suite/test_a.py::x", "failed"))
    after[0].target = "debian:bullseye=5.10.223-1 aufs"
    (change,) = compare(before, after).changes
    assert (change.check, change.before, change.after) == ("test_a::x", "passed", "failed")


def test_changed_missing_and_new_checks_are_named() -> None:
    before = run_with(("s/test_a.py::x", "passed"), ("s/test_a.py::gone", "failed"))
    after = run_with(("s/test_a.py::x", "failed"), ("s/test_a.py::new", "skipped"))
    result = compare(before, after)
    assert [(c.check, c.before, c.after) for c in result.changes] == [
        ("test_a::gone", "failed", ""),
        ("test_a::new", "", "skipped"),
        ("test_a::x", "passed", "failed"),
    ]
    text = render(result)
    assert "  A: 1 passed, 1 failed, 0 error, 0 hung, 0 skipped (2 checks)" in text
    assert "  debian:bullseye aufs: test_a::x: passed -> failed" in text


def test_the_command_exits_by_whether_anything_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ResultsDir(tmp_path / "a").write(run_with(("s/test_a.py::x", "passed")))
    ResultsDir(tmp_path / "b").write(run_with(("s/test_a.py::x", "passed")))
    ResultsDir(tmp_path / "c").write(run_with(("s/test_a.py::x", "hung")))
    assert main(["report", "compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert (
        main(["report", "compare", str(tmp_path / "a"), str(tmp_path / "c" / "report.json")]) == 1
    )
    assert "test_a::x: passed -> hung" in capsys.readouterr().out
    assert main(["report", "compare", str(tmp_path / "a"), str(tmp_path / "nothing")]) == 2


def test_an_unreadable_report_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(UserError, match="not an aufs-harness report"):
        load_reports(tmp_path)
