"""The results directory: its layout, atomic writes, and the reports kept on an interrupt."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.core.atomic import write_atomic
from harness.results import CheckResult, TargetReport
from harness.resultsdir import ResultsDir


def test_new_is_absolute_even_from_a_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = ResultsDir.new(Path("results")).root
    assert out.is_absolute() and out.parent == tmp_path / "results"
    assert (tmp_path / "results" / "latest").resolve() == out


def test_the_layout_users_and_tests_read(tmp_path: Path) -> None:
    results = ResultsDir(tmp_path)
    assert results.report_json == tmp_path / "report.json"
    assert results.junit_xml == tmp_path / "junit.xml"
    target = results.target("debian:bookworm stock")
    assert target.path == tmp_path / "debian-bookworm-stock" and target.path.is_dir()
    first, third = target.vm(1), target.vm(3)
    assert first.path == target.path
    assert third.path == target.path / "vm-3" and third.path.is_dir()
    assert [p.name for p in (first.console_log, first.hang_evidence)] == [
        "console.log", "hang-evidence.txt",
    ]  # fmt: skip
    assert (third.pytest_log, third.events) == (
        target.path / "vm-3" / "pytest.log", target.path / "vm-3" / "events.jsonl",
    )  # fmt: skip
    console = tmp_path / "qemu-console"
    console.write_bytes(b"[ 1.0] Linux version\n")
    assert third.save_console(console).read_bytes() == b"[ 1.0] Linux version\n"
    assert third.save_hang_evidence("sysrq").read_text() == "sysrq"


def test_an_interrupt_still_writes_the_reports(tmp_path: Path) -> None:
    results = ResultsDir(tmp_path)
    report = TargetReport("t", checks=[CheckResult("t.py::x", "passed")])
    with pytest.raises(KeyboardInterrupt), results.kept_on_interrupt([report], report.interrupted):
        raise KeyboardInterrupt
    (written,) = json.loads(results.report_json.read_text())["targets"]
    assert (written["verdict"], written["reason"]) == ("error", "interrupted by SIGINT (Ctrl-C)")
    assert results.junit_xml.exists()


def test_an_atomic_write_leaves_the_old_file_whole_on_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "report.json"
    write_atomic(path, "old")

    def no_rename(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left
