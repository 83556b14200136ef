from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.guestsuite import parse_resultlog
from harness.results import (
    CheckResult,
    Stage,
    TargetReport,
    exit_code,
    read_json,
)
from harness.resultsdir import ResultsDir


def events(path: Path, *evs: dict[str, object]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in evs))
    return path


def rep(nodeid: str, when: str, outcome: str, longrepr: str = "") -> dict[str, object]:
    return {
        "event": "report",
        "nodeid": nodeid,
        "when": when,
        "outcome": outcome,
        "duration": 0.1,
        "longrepr": longrepr,
    }


def test_fold_events_into_outcomes(tmp_path: Path) -> None:
    log = events(
        tmp_path / "e.jsonl",
        {"event": "start", "nodeid": "t.py::ok"},
        rep("t.py::ok", "setup", "passed"),
        rep("t.py::ok", "call", "passed"),
        rep("t.py::ok", "teardown", "passed"),
        {"event": "start", "nodeid": "t.py::bad"},
        rep("t.py::bad", "setup", "passed"),
        rep("t.py::bad", "call", "failed", "def x():\nE   AssertionError: RW/f missing\nmore"),
        {"event": "start", "nodeid": "t.py::skip"},
        rep("t.py::skip", "setup", "skipped", "Skipped: aufs not in /proc/filesystems"),
        {"event": "start", "nodeid": "t.py::hang"},
        rep("t.py::hang", "setup", "passed"),
    )
    with log.open("a") as f:
        f.write('{"event": "rep')  # a line cut short by a kill
    checks, down = parse_resultlog(log)
    got = {c.name: (c.outcome, c.message) for c in checks}
    assert got["ok"] == ("passed", "")
    assert got["bad"] == ("failed", "AssertionError: RW/f missing")
    assert got["skip"] == ("skipped", "aufs not in /proc/filesystems")
    assert got["hang"][0] == "hung"
    assert down == []


def test_started_but_never_reported_is_hung(tmp_path: Path) -> None:
    log = events(
        tmp_path / "e.jsonl",
        {"event": "start", "nodeid": "t.py::x"},
        {"event": "worker-down", "worker": "gw0", "error": "crashed"},
    )
    checks, down = parse_resultlog(log)
    assert [c.outcome for c in checks] == ["hung"]
    assert down == ["gw0: crashed"]


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


def test_running_checks_and_collected_count(tmp_path: Path) -> None:
    from harness.guestsuite import collected_count, read_events, running_in

    log = events(
        tmp_path / "e.jsonl",
        {"event": "start", "nodeid": "t.py::done", "t": 1.0},
        rep("t.py::done", "teardown", "passed"),
        {"event": "start", "nodeid": "t.py::running", "t": 2.0},
    )
    assert running_in(read_events(log)) == {"t.py::running": 2.0}
    pytest_log = tmp_path / "pytest.log"
    pytest_log.write_text("created: 2/2 workers\n2 workers [680 items]\n")
    assert collected_count(pytest_log) == 680
    assert collected_count(tmp_path / "missing.log") is None


def test_report_names_each_fresh_vm_and_where_its_logs_are(tmp_path: Path) -> None:
    from rich.console import Console

    from harness.table import print_report

    report = TargetReport(
        "debian:bullseye aufs",
        verdict="failed",
        reason="VM 1: test_n hung (and 1 more, see report.json); 2 fresh VM(s) ran the checks left",
        console_log=str(tmp_path / "t" / "console.log"),
        extra={"vms": ["VM 1: test_n hung", "VM 2: the kernel was damaged (Busy inodes)"]},
        checks=[
            CheckResult(
                "suite/test_options.py::test_n[aufs-tmpfs]", "hung", 30.0,
                "the kernel logged '[   42.0] kernel BUG at fs/aufs/hfsnotify.c:173!'",
            )
        ],
    )  # fmt: skip
    console = Console(record=True, width=300)
    print_report([report], console)
    text = console.export_text()
    assert "  VM 2: the kernel was damaged (Busy inodes)" in text
    assert f"  fresh VMs' logs: {tmp_path / 't'}/vm-N/" in text
    # rich must not eat a check's parameters or a kernel line's timestamp as markup
    assert "test_n[aufs-tmpfs]" in text and "'[   42.0] kernel BUG at" in text
