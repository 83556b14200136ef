from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from harness.results import (
    CheckResult,
    Stage,
    TargetReport,
    exit_code,
    read_json,
)
from harness.resultsdir import ResultsDir


def test_verdicts_and_exit_codes() -> None:
    ok = TargetReport("a", checks=[CheckResult("t.py::x", "passed")])
    ok.settle()
    bad = TargetReport("b", checks=[CheckResult("t.py::x", "failed")])
    bad.settle()
    empty = TargetReport("c")
    empty.settle()
    assert (ok.verdict, bad.verdict, empty.verdict) == ("passed", "failed", "error")
    assert exit_code([ok]) == 0
    assert exit_code([ok, bad]) == 1
    assert exit_code([ok, bad, empty]) == 2


def test_json_round_trip_and_junit(tmp_path: Path) -> None:
    checks = [
        CheckResult("s/test_a.py::test_x[overlay]", "failed", 0.2, "why", "E why"),
        CheckResult("s/test_a.py::test_y", "skipped", 0.0, "no aufs"),
    ]
    stages = [Stage("boot", "ok", 9.5), Stage("build", "failed", 1.0, "vfsub.c")]
    r = TargetReport(
        "debian:bookworm stock", kernel_release="6.1.0", accel="tcg", stages=stages, checks=checks
    )
    r.settle()
    results = ResultsDir(tmp_path)
    results.write([r])
    assert read_json(tmp_path / "report.json")[0] == r
    root = ET.parse(tmp_path / "junit.xml").getroot()
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("failures") == "1" and suite.get("skipped") == "1"
    names = [c.get("name") for c in suite.iter("testcase")]
    assert names == ["boot", "build", "test_x[overlay]", "test_y"]
    build = next(c for c in suite.iter("testcase") if c.get("name") == "build")
    assert build.find("failure") is not None
