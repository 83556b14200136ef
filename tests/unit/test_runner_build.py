"""A build that fails is the target's verdict (exit 1), before any VM starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.results import exit_code
from harness.runner import RunOptions, run_target
from harness.targets import Target
from kmod import pipeline
from kmod.pipeline import BuildResult, BuildSpec


def failed(status: str, details: list[str]) -> BuildResult:
    return BuildResult(status=status, details=details,  # type: ignore[arg-type]
                       kernel={"version": "6.1.192"}, aufs={"branch": "aufs6.1"},
                       log=Path("/tmp/build.log"))  # fmt: skip


@pytest.mark.parametrize(
    ("status", "details"),
    [
        ("patch-failed", ["aufs6-mmap.patch: mm/mmap.c: hunks 2, 3, 5 FAILED"]),
        ("build-failed", ["fs/aufs/vfsub.c:123:9: error: too many arguments to vfs_rename"]),
    ],
)
def test_build_failure_is_the_verdict(
    status: str, details: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "run", lambda spec, deadline: failed(status, details))

    def no_vm(*a: object, **k: object) -> None:
        raise AssertionError("no image or VM may be prepared after a failed build")

    monkeypatch.setattr("harness.runner.resolve_boot", no_vm)
    target = Target(build=BuildSpec(kernel="debian:bookworm", aufs_src="/nowhere"))
    report = run_target(target, RunOptions(results_dir=tmp_path))
    assert report.verdict == "failed"
    assert report.reason == f"{status}: {details[0]}"
    assert [(s.name, s.status) for s in report.stages] == [("build", "failed")]
    assert exit_code([report]) == 1
    assert report.target == "debian:bookworm aufs"


def test_image_and_kernel_together_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"QFI\xfb" + b"\0" * 508)  # a qcow2 header: --image accepts it
    assert main(["run", "--image", str(disk), "--kernel", "debian:bullseye"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--image boots your image's own kernel" in err[0]
