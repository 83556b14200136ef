"""The suite's overlay half on this very host (`aufs-harness suite --local`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.skipif(os.geteuid() != 0, reason="the suite mounts filesystems: needs root")
def test_overlay_half_runs_on_the_host(tmp_path: Path, fact: list[str]) -> None:
    if "overlay" not in Path("/proc/filesystems").read_text():
        pytest.skip("this host's kernel has no overlayfs in /proc/filesystems")
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "suite", "--local", "--driver", "overlay",
         "--results", str(tmp_path), "--workers", "2"],
        capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "latest" / "report.json").read_text())["targets"][0]
    outcomes = [c["outcome"] for c in report["checks"]]
    assert outcomes.count("passed") >= 50
    assert not {"failed", "error", "hung"} & set(outcomes)
    aufs = [c for c in report["checks"] if "aufs" in c["nodeid"]]
    assert all(c["outcome"] == "skipped" for c in aufs)
    fact.append(
        f"suite --local on the host ({report['kernel_release']}): "
        f"{outcomes.count('passed')} overlay checks passed, {len(aufs)} aufs checks skipped"
    )
