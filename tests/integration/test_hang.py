"""A check that hangs becomes a verdict with evidence; nothing is left running."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from harness import guestsuite
from harness.runner import RunOptions, run_target
from harness.targets import Target
from tests.integration.conftest import qemu_pids
from vm.image import Image


def test_a_hung_check_is_a_verdict_with_evidence(
    bookworm: Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fact: list[str]
) -> None:
    suite = tmp_path / "suite"
    (suite / "unionfs").mkdir(parents=True)
    (suite / "unionfs" / "__init__.py").write_text("")
    (suite / "unionfs" / "options.py").write_text("def pytest_addoption(parser):\n    pass\n")
    (suite / "conftest.py").write_text('pytest_plugins = ("unionfs.options",)\n')
    (suite / "test_hang.py").write_text(
        textwrap.dedent(
            """
            import time

            def test_before():
                pass

            def test_hangs():
                time.sleep(3600)
            """
        )
    )
    monkeypatch.setattr(guestsuite, "suite_dir", lambda: suite)
    results = tmp_path / "results"
    opts = RunOptions(results_dir=results, check_timeout=20, workers=1)
    report = run_target(Target(distro="bookworm"), opts)
    assert report.verdict == "failed", report.reason
    assert report.reason.startswith("suite/test_hang.py::test_hangs hung")
    outcomes = {c.name: c for c in report.checks}
    assert outcomes["test_before"].outcome == "passed"
    assert outcomes["test_hangs"].outcome == "hung"
    assert "the guest still answers" in outcomes["test_hangs"].message
    evidence = results / "debian-bookworm-stock" / "hang-evidence.txt"
    assert "sysrq: Show Blocked State" in evidence.read_text()
    assert not qemu_pids(os.environ["AUFS_HARNESS_STATE"]), "QEMU left running after a hung check"
    fact.append(f"hung check: {report.reason}; evidence {evidence.stat().st_size} bytes")
