"""The spec: a Target is plain data, and bad input is one line naming cause and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.core.errors import UserError
from harness.targets import Target
from kmod.pipeline import BuildSpec


def test_image_and_kernel_together_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"QFI\xfb" + b"\0" * 508)  # a qcow2 header: --image accepts it
    assert main(["run", "--image", str(disk), "--kernel", "debian:bullseye"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--image boots your image's own kernel" in err[0]


def test_bad_input_is_refused_in_the_constructor(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown distribution 'jessie': use one of"):
        Target(distro="jessie")
    with pytest.raises(UserError, match="does not exist: give an existing image path"):
        Target(image=tmp_path / "missing.qcow2")


def test_labels_and_modules() -> None:
    assert Target().label == "debian:bookworm stock"
    assert [n.name for n in Target().modules()] == ["overlay", "loop"]
    aufs = Target(build=BuildSpec(kernel="debian:bullseye", aufs_src="/a"))
    assert aufs.label == "debian:bullseye aufs"
