"""A small matrix run's results, shaped as part A's `matrix run` writes them
(one TargetReport per cell, extra["cell"], extra["build"], known, fixed), for
the report and history tests."""

from __future__ import annotations

from pathlib import Path

from harness.guest.kmsg import CheckFacts
from harness.results import CheckResult, Stage, TargetReport
from harness.resultsdir import ResultsDir

AUFS = "bullseye-aufs"
STOCK = "bookworm-stock"
MTIME = "suite/test_copy_up.py::test_copy_up_keeps_parent_directory_mtimes[aufs-tmpfs]"
XATTR = "suite/test_copy_up.py::test_setxattr_copies_up[aufs-ext4]"
UDBA = "suite/test_options.py::test_udba_notify[aufs-tmpfs]"
LINK = "suite/test_links.py::test_hardlink[overlay-tmpfs]"
FAILED_DETAILS = """    def test_x(lab):
>       assert not diff, lab.explain("RW/a keeps RO/a's mtime", diff)
E       AssertionError: expected: RW/a keeps RO/a's mtime
E         observed: st_mtime_ns: RW 1796019359662634000 vs RO 1609556645123456789
E         driver aufs, branch fs tmpfs
"""
BUILD = {
    "status": "built",
    "details": ["aufs5-base.patch: offset: fs/dcache.c: hunk 1 offset +5"],
    "kernel": {"spec": "debian:bullseye", "identity": "debian:linux-source-5.10=5.10.223-1"},
    "aufs": {"branch": "aufs5.10.140", "commit": "0c55dd9dcf13d5de98218aca", "reason": "x"},
    "patches": [
        {"name": "aufs5-kbuild.patch", "status": "clean", "summary": "aufs5-kbuild.patch: clean"},
        {
            "name": "aufs5-base.patch",
            "status": "offset",
            "summary": "aufs5-base.patch: offset: fs/dcache.c: hunk 1 offset +5; "
            "include/linux/fs.h: hunk 1 offset +33, hunk 2 offset +98",
        },
    ],
    "log": "/cache/kmod/artifacts/abc/build.log",
    "reproducer": "aufs-harness kmod build --kernel debian:bullseye",
    "rejects": [],
}


def check(nodeid: str, outcome: str, known: str = "", details: str = "") -> CheckResult:
    message = "AssertionError: expected: RW/a keeps RO/a's mtime" if outcome == "failed" else ""
    return CheckResult(nodeid, outcome, 0.5, message, details, CheckFacts(), known)


def aufs_cell(mtime: str = "failed", known: str = "parent mtime (aufs#1)") -> TargetReport:
    """The bullseye aufs cell: the mtime check with `mtime` outcome (known by
    `known`), a failed xattr check, a hung udba check with evidence."""
    r = TargetReport(target=AUFS, verdict="failed", reason="1 failed, 1 hung", started=1000.0)
    r.kernel_release, r.accel, r.seconds = "5.10.223", "tcg", 600.0
    r.stages = [Stage("build", "ok", 300.0, "built 5.10.223"), Stage("suite", "ok", 120.0, "")]
    r.checks = [
        check(MTIME, mtime, known if mtime != "passed" else "", FAILED_DETAILS),
        check(XATTR, "failed", details=FAILED_DETAILS),
        check(UDBA, "hung", details="evidence: /results/run/bullseye-aufs/hang-evidence.txt"),
        check(LINK.replace("overlay", "aufs"), "passed"),
    ]
    r.extra = {"cell": {"kernel": "debian:bullseye", "drivers": ["aufs"]}, "build": BUILD}
    r.extra["vms"] = ["VM 1: test_udba_notify[aufs-tmpfs] hung"]
    return r


def stock_cell() -> TargetReport:
    r = TargetReport(target=STOCK, verdict="passed", started=1000.0)
    r.checks = [check(LINK, "passed"), check(MTIME.replace("aufs", "overlay"), "skipped")]
    r.extra = {"cell": {"kernel": "debian:bookworm", "drivers": ["overlay"]}}
    return r


def write_run(base: Path, name: str, reports: list[TargetReport]) -> ResultsDir:
    """A results directory base/name with `reports` and a console log per cell."""
    results = ResultsDir(base / name)
    for r in reports:
        where = results.target(r.target).vm(1)
        (where.path / "console.log").write_text("[    0.000000] Linux version\n")
        r.console_log = str(where.console_log)
    results.write(reports)
    return results
