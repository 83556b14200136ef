"""The main job end to end on Debian bookworm's stock kernel."""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness.commands.common import finish
from harness.runner import RunOptions, run_target
from harness.targets import Target
from tests.integration.conftest import qemu_pids
from vm.image import Image


def test_boot_stock_kernel_and_run_suite_over_xdist(
    bookworm: Image, tmp_path: Path, fact: list[str]
) -> None:
    report = run_target(Target(distro="bookworm"), RunOptions(results_dir=tmp_path))
    assert report.verdict == "passed", (
        report.reason,
        [c for c in report.checks if c.outcome != "passed"],
    )
    # The kernel that answered over SSH is the image's own stock kernel.
    assert report.kernel_release == bookworm.kernel_release
    passed = [c for c in report.checks if c.outcome == "passed"]
    assert len(passed) >= 10
    assert any("overlay" in c.nodeid for c in passed)
    # The checks really ran in the guest through xdist workers over SSH.
    events = [
        json.loads(line)
        for line in (tmp_path / "debian-bookworm-stock" / "events.jsonl").read_text().splitlines()
    ]
    workers = {e.get("worker") for e in events if e["event"] == "report"}
    assert workers & {"gw0", "gw1"}, workers
    pytest_log = (tmp_path / "debian-bookworm-stock" / "pytest.log").read_text()
    assert "ssh=" in pytest_log or "gw0" in pytest_log
    assert (tmp_path / "debian-bookworm-stock" / "console.log").stat().st_size > 0
    assert finish([report], tmp_path) == 0
    assert (tmp_path / "junit.xml").exists() and (tmp_path / "report.json").exists()
    assert not qemu_pids(os.environ["AUFS_HARNESS_STATE"]), "QEMU left running after the run"
    fact.append(
        f"booted {report.kernel_release} under {report.accel}, SSH after "
        f"{report.extra['boot_seconds']:.1f}s; {len(passed)} checks passed in the guest via "
        f"xdist workers {sorted(w for w in workers if w)}"
    )
