"""Bad input gets one clear line naming cause and fix, and exit code 2."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from harness.cli import main


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_unknown_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--distro", "buster"]) == 2
    line = one_line_error(capsys)
    assert "unknown distribution 'buster'" in line and "bookworm" in line


def test_missing_qemu(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("shutil.which", lambda *a, **k: None)
    assert main(["run"]) == 2
    line = one_line_error(capsys)
    assert "qemu-system-x86_64 not found" in line and "qemu-system-x86" in line


def test_branch_fs_after_the_separator(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--", "-k", "whiteout", "--branch-fs=xfs"]) == 2
    line = one_line_error(capsys)
    assert "give it to run itself (before --)" in line and "--branch-fs" in line


def test_unknown_branch_fs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--branch-fs", "tmpfs,zfs"]) == 2
    assert "unknown branch filesystem 'zfs'" in one_line_error(capsys)


def test_image_path_that_does_not_exist(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--image", "/nonexistent/disk.qcow2"]) == 2
    assert "image /nonexistent/disk.qcow2 does not exist" in one_line_error(capsys)


def test_ssh_port_already_taken(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["vm", "up", "--name", "porttest", "--ssh-port", str(port)]) == 2
    line = one_line_error(capsys)
    assert f"SSH port {port} on 127.0.0.1 is already taken" in line and "--ssh-port" in line


def test_ssh_into_unknown_vm(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vm", "ssh", "--name", "nope"]) == 2
    assert "no VM named 'nope'" in one_line_error(capsys)


def test_bad_vm_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vm", "down", "--name", "Bad Name"]) == 2
    assert "bad VM name" in one_line_error(capsys)


def test_help_reads_well(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "vm", "suite", "kmod"):
        assert command in out
    assert "Exit codes" in out


def test_vm_list_empty(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vm", "list"]) == 0
    assert "no VMs" in capsys.readouterr().out


def test_branch_fs_reaches_the_suite_first() -> None:
    import argparse

    from harness.commands.run import suite_args_for

    args = argparse.Namespace(branch_fs="tmpfs,xfs", suite_args=["-k", "whiteout"])
    assert suite_args_for(args) == ("--branch-fs=tmpfs,xfs", "-k", "whiteout")


def test_default_results_dir_in_a_directory_the_user_cannot_write(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A user running from a checkout root owns gets one line, not a traceback."""
    real_access = os.access
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        "os.access", lambda p, mode: False if Path(p) == Path(".") else real_access(p, mode)
    )
    assert main(["run"]) == 2
    line = one_line_error(capsys)
    assert "argument --results: results: . is not writable" in line
    assert not (tmp_path / "results").exists()
