"""A check that hangs becomes a verdict with evidence; nothing is left running."""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from harness import guestsuite
from harness.results import TargetReport
from harness.runner import RunOptions, run_target
from harness.targets import Target
from tests.integration.conftest import qemu_pids
from vm.image import Image

# The real suite's option names (harness/guest/suite/unionfs/options.py), which
# runs and matrix cells pass, without the real suite's helpers behind them.
FAKE_OPTIONS = """
def pytest_addoption(parser):
    for name in ("--driver", "--branch-fs", "--option-set", "--suite-tmp", "--keep-lab"):
        parser.addoption(name, default=None)
    for flag in ("--continue-after-kernel-damage", "--no-kernel-health"):
        parser.addoption(flag, action="store_true")
"""


def fake_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checks: str) -> None:
    """Ship a guest package whose suite is a tiny one of `checks` instead of the union suite."""
    suite = tmp_path / "guest" / "suite"
    (suite / "unionfs").mkdir(parents=True)
    (suite / "unionfs" / "__init__.py").write_text("")
    (suite / "unionfs" / "options.py").write_text(FAKE_OPTIONS)
    (suite / "conftest.py").write_text('pytest_plugins = ("unionfs.options",)\n')
    (suite / "test_hang.py").write_text(textwrap.dedent(checks))
    monkeypatch.setattr(guestsuite, "guest_dir", lambda: suite.parent)


def run_fake_suite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checks: str, **opts: Any
) -> tuple[TargetReport, Path]:
    """Run `checks` as the suite of a bookworm stock target; no QEMU may be left.
    Returns the report and the target's results directory."""
    fake_suite(tmp_path, monkeypatch, checks)
    results = tmp_path / "results"
    report = run_target(Target(distro="bookworm"), RunOptions(results_dir=results, **opts))
    assert not qemu_pids(os.environ["AUFS_HARNESS_STATE"]), "QEMU left running"
    return report, results / "debian-bookworm-stock"


def test_a_hung_check_is_a_verdict_with_evidence(
    bookworm: Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fact: list[str]
) -> None:
    report, out = run_fake_suite(
        tmp_path,
        monkeypatch,
        """
        import time

        def test_before():
            pass

        def test_hangs():
            time.sleep(3600)
        """,
        check_timeout=20,
        workers=1,
    )
    assert report.verdict == "failed", report.reason
    assert report.reason.startswith("suite/test_hang.py::test_hangs hung")
    outcomes = {c.name: c for c in report.checks}
    assert outcomes["test_before"].outcome == "passed"
    assert outcomes["test_hangs"].outcome == "hung"
    assert "the guest still answers" in outcomes["test_hangs"].message
    evidence = out / "hang-evidence.txt"
    assert "sysrq: Show Blocked State" in evidence.read_text()
    fact.append(f"hung check: {report.reason}; evidence {evidence.stat().st_size} bytes")


def test_checks_after_a_hung_one_run_on_a_fresh_vm(
    bookworm: Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fact: list[str]
) -> None:
    # One worker runs the checks in file order: the hang leaves two never started.
    report, out = run_fake_suite(
        tmp_path,
        monkeypatch,
        """
        import os, time

        def test_before():
            pass

        def test_hangs():
            time.sleep(3600)

        def test_after():
            assert os.path.exists("/proc/version")

        def test_last():
            pass
        """,
        check_timeout=20,
        workers=1,
        fresh_vms=1,
    )
    outcomes = {c.name: c.outcome for c in report.checks}
    assert outcomes == {
        "test_before": "passed", "test_hangs": "hung", "test_after": "passed",
        "test_last": "passed",
    }  # fmt: skip
    assert report.verdict == "failed"
    assert report.reason == ("VM 1: test_hangs hung; 1 fresh VM(s) ran the checks left"), (
        report.reason
    )
    assert [s.name for s in report.stages if s.name.endswith("#2")] == [
        "boot#2",
        "load#2",
        "suite#2",
    ]
    vm2 = out / "vm-2"
    assert (vm2 / "console.log").exists() and (vm2 / "events.jsonl").exists()
    assert "test_before" not in (vm2 / "events.jsonl").read_text()  # it was not run again
    fact.append(f"fresh VM after a hung check: {report.reason}; outcomes {outcomes}")


def test_a_check_that_panics_the_kernel_is_the_verdict_and_the_rest_run_on_a_fresh_vm(
    bookworm: Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fact: list[str]
) -> None:
    # The xdist worker's SSH dies with the kernel; the watchdog's own 30 s
    # after the panic line (unit-tested) must not race it here.
    monkeypatch.setattr(guestsuite, "DAMAGED_GRACE", 600.0)
    report, out = run_fake_suite(
        tmp_path,
        monkeypatch,
        """
        def test_before():
            pass

        def test_panics():
            with open("/proc/sysrq-trigger", "w") as f:
                f.write("c")

        def test_after():
            pass
        """,
        workers=1,
        fresh_vms=1,
    )
    checks = {c.name: c for c in report.checks}
    assert {n: c.outcome for n, c in checks.items()} == {
        "test_before": "passed", "test_panics": "hung", "test_after": "passed",
    }  # fmt: skip
    message = checks["test_panics"].message
    assert "Kernel panic - not syncing: sysrq triggered crash" in message, message
    assert message.endswith("and stopped answering"), message
    assert report.verdict == "failed"
    assert report.reason.startswith("VM 1: the kernel died ("), report.reason
    assert report.reason.endswith("; 1 fresh VM(s) ran the checks left"), report.reason
    assert "Kernel panic" in (out / "console.log").read_text()
    fact.append(f"panicking check: {message[:160]}")


def test_a_guest_paused_on_a_full_state_disk_is_an_infrastructure_error(
    bookworm: Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fact: list[str]
) -> None:
    """The VM's disk overlay meets ENOSPC on the host mid-suite: QEMU pauses the
    guest (werror=enospc), which from outside looks like a hang. The run stops
    once the guest has been silent QUIET_PROBE s and QEMU says why: an
    infrastructure error naming the full directory, not a hung check."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the state directory needs root")
    small = tmp_path / "small-state"
    small.mkdir()
    # 128 MB must be free before QEMU starts (vm.machine.MIN_STATE_FREE_MB); the
    # check then writes more than is left through the guest's root disk.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=176M", "tmpfs", small], check=True)
    try:
        monkeypatch.setenv("AUFS_HARNESS_STATE", str(small))
        t0 = time.monotonic()
        report, _ = run_fake_suite(
            tmp_path,
            monkeypatch,
            """
            import subprocess

            def test_before():
                pass

            def test_fills_the_disk():
                subprocess.run(["dd", "if=/dev/urandom", "of=/var/tmp/fill", "bs=1M",
                                "count=400", "conv=fsync"], check=True)
            """,
            workers=1,
        )
        seconds = time.monotonic() - t0
    finally:
        subprocess.run(["umount", "-l", small], check=False)
    assert report.verdict == "error", report.reason
    assert report.reason.startswith("infrastructure: QEMU paused the guest on a disk error ("), (
        report.reason
    )
    assert f"the state directory {small.resolve()} is full (no space left" in report.reason
    outcomes = {c.name: c for c in report.checks}
    assert outcomes["test_before"].outcome == "passed"
    assert outcomes["test_fills_the_disk"].outcome == "error"
    assert outcomes["test_fills_the_disk"].message.startswith("not finished: QEMU paused")
    assert [s.name for s in report.stages].count("boot") == 1  # no fresh VM on the full disk
    fact.append(f"paused guest: {report.reason[:120]}... in {seconds:.0f}s")
