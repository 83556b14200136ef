"""`run --image` on a real cloud image: a partitioned disk booted by its own
bootloader (SYSLINUX), the stock Debian kernel, systemd, and cloud-init reading
the harness's NoCloud seed. And the verdict when the image has no cloud-init.

The fixture images are built once per machine (a few minutes each, root) and
cached under the user's cache directory (tests/fixtures/cloudimage.py). A
cloud-init boot takes over a minute under TCG, so each test boots one VM.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.core.deadline import Deadline
from harness.runner import RunOptions, run_target
from harness.targets import Target
from tests.fixtures.cloudimage import CloudImage, CloudImageRecipe, build_cloud_image
from tests.integration.conftest import qemu_pids

BUILD = 2400.0  # a cold fixture build on a loaded 2-core machine
# systemd + cloud-init under TCG: ~72 s alone, several minutes on a loaded host.
BOOT_TIMEOUT = 900.0


def _fixture(recipe: CloudImageRecipe, fact: list[str]) -> CloudImage:
    if os.geteuid() != 0:
        pytest.skip("building the cloud image fixture needs root (mmdebstrap), as CI runs")
    image = build_cloud_image(recipe, Deadline(BUILD, f"building {recipe.name}"))
    fact.append(
        f"{recipe.name} {'cached' if image.cached else 'built'}: {image.disk} "
        f"(kernel {image.kernel_release}, build {image.build_seconds:.0f}s)"
    )
    return image


def test_run_image_boots_a_cloud_image_through_cloud_init_and_the_suite_passes(
    tmp_path: Path, fact: list[str]
) -> None:
    image = _fixture(CloudImageRecipe(suite="bookworm"), fact)
    opts = RunOptions(results_dir=tmp_path, boot_timeout=BOOT_TIMEOUT, fresh_vms=0)
    report = run_target(Target(image=image.disk), opts)
    assert report.verdict == "passed", (
        report.reason,
        [(c.nodeid, c.outcome, c.message) for c in report.checks if c.outcome == "failed"],
    )
    # The image's own kernel answered, booted by its own bootloader.
    assert report.kernel_release == image.kernel_release
    passed = [c for c in report.checks if c.outcome == "passed"]
    assert any("overlay" in c.nodeid for c in passed)
    aufs = [c for c in report.checks if "aufs" in c.nodeid]
    assert all(c.outcome == "skipped" and c.message for c in aufs), aufs[:3]
    # cloud-init ran from the seed: the NoCloud datasource, on the console.
    console = Path(report.console_log).read_text(errors="replace")
    assert "SYSLINUX" in console
    assert "DataSourceNoCloud" in console, console[-3000:]
    assert not qemu_pids(os.environ["AUFS_HARNESS_STATE"]), "QEMU left running after the run"
    data = json.loads(json.dumps(report.extra, default=str))
    fact.append(
        f"{image.disk.parent.name}: SSH after {data['boot_seconds']:.1f}s under "
        f"{report.accel}; {len(passed)} passed, {len(aufs)} aufs checks skipped"
    )


def test_an_image_without_cloud_init_is_named_in_one_line(tmp_path: Path, fact: list[str]) -> None:
    image = _fixture(CloudImageRecipe(suite="bookworm", cloud_init=False), fact)
    opts = RunOptions(results_dir=tmp_path, boot_timeout=BOOT_TIMEOUT, fresh_vms=0)
    report = run_target(Target(image=image.disk), opts)
    assert report.verdict == "error"
    assert "no cloud-init ran" in report.reason, report.reason
    assert "install cloud-init in the image" in report.reason
    assert report.reason.count("cloud-init ran") == 1
    assert "\n" not in report.reason
    assert report.console_log and Path(report.console_log).stat().st_size > 0
    assert not qemu_pids(os.environ["AUFS_HARNESS_STATE"]), "QEMU left running after the run"
    fact.append(f"no-cloud-init image: {report.reason}")
