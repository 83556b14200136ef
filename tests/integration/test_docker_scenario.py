"""The docker scenario end to end: docker.io 20.10.5 on a bullseye image, dockerd
with --storage-driver=aufs, on the stock kernel (refused, named) and on a built
aufs kernel (every Docker check passes, copy-up measured).

The aufs test needs AUFS_HARNESS_AUFS_SRC (an aufs-standalone URL or clone) and,
for bullseye's 5.10.223, AUFS_HARNESS_FIXUP_DIR; without the source it is
skipped with the reason. The first run builds the docker image (~3 min) and the
kernel with the docker fragment (10+ min on 2 cores); later runs reuse both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import scenario as scenarios
from harness.runner import RunOptions, run_target
from harness.targets import Target
from kmod.pipeline import BuildSpec
from tests.integration.conftest import qemu_pids

AUFS_SRC = os.environ.get("AUFS_HARNESS_AUFS_SRC", "")
FIXUP_DIR = os.environ.get("AUFS_HARNESS_FIXUP_DIR", "")
KERNEL = "debian:bullseye=5.10.223-1"


def test_stock_kernel_fails_naming_the_missing_aufs(tmp_path: Path, fact: list[str]) -> None:
    argv = [sys.executable, "-m", "harness.cli", "run", "--scenario", "docker",
            "--distro", "bullseye", "--results", str(tmp_path)]  # fmt: skip
    r = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stdout + r.stderr
    (path,) = {p.resolve() for p in tmp_path.glob("*/report.json")}  # and latest/
    report = json.loads(path.read_text())
    reason = report["targets"][0]["reason"]
    assert reason.startswith("dockerd refused --storage-driver=aufs: aufs is not in this kernel")
    assert "\n" not in reason and "storage-driver=aufs: aufs is not in" in r.stdout + r.stderr
    assert not qemu_pids(os.environ["AUFS_HARNESS_STATE"]), "QEMU left running after the run"
    fact.append(f"docker scenario on the stock bullseye kernel: failed: {reason}")


def test_aufs_kernel_passes_every_docker_check(tmp_path: Path, fact: list[str]) -> None:
    if not AUFS_SRC:
        pytest.skip("AUFS_HARNESS_AUFS_SRC is unset: point it at aufs-standalone (URL or clone)")
    if not os.environ.get("AUFS_HARNESS_DOCKER_AUFS"):
        # A kernel of its own (the docker fragment: ~20 min cold on 2 cores) plus
        # ~8 min of Docker in the guest: opt in rather than lengthen every make test.
        pytest.skip("AUFS_HARNESS_DOCKER_AUFS is unset: set it to 1 to build the docker kernel")
    spec = BuildSpec(
        kernel=KERNEL, aufs_src=AUFS_SRC, fixup_dir=Path(FIXUP_DIR) if FIXUP_DIR else None
    )
    target = Target(distro="bullseye", build=scenarios.with_fragment(spec), scenario="docker")
    opts = RunOptions(results_dir=tmp_path, memory_mb=scenarios.DOCKER_MEMORY_MB)
    report = run_target(target, opts)
    failing = [(c.nodeid, c.outcome, c.message) for c in report.checks if c.outcome != "passed"]
    assert report.verdict == "passed", (report.reason, failing)
    names = {c.name.split("[")[0] for c in report.checks}
    assert len(names) >= 9 and all("test_docker_engine" in c.nodeid for c in report.checks)
    assert report.extra["docker"]["driver"] == "aufs"
    rows = report.extra["docker_copy_up"]["rows"]
    assert [r["size_mib"] for r in rows] == [1, 64, 512]
    for r in rows:  # a whole-file copy-up, once
        assert r["copied_bytes"] >= r["size_mib"] * 2**20 and r["copied_again_bytes"] == 0
    assert not qemu_pids(os.environ["AUFS_HARNESS_STATE"]), "QEMU left running after the run"
    fact.append(
        f"docker scenario on {report.kernel_release}: {len(report.checks)} checks passed; "
        + scenarios.copy_up_table(report.extra["docker_copy_up"]).replace("\n", " | ")
    )
