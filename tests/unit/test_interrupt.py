"""A signal that ends a run is named in the verdict and the exit code (128 + N)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.errors import Terminated, interrupt_exit_code, interruption
from harness.progress import stage
from harness.results import TargetReport
from vm.qemu import QemuProcess


@pytest.mark.parametrize(
    ("exc", "said", "code"),
    [
        (KeyboardInterrupt(), "interrupted by SIGINT (Ctrl-C)", 130),
        (Terminated(), "interrupted by SIGTERM", 143),
        (EOFError(), "interrupted (EOFError)", 2),
    ],
)
def test_the_signal_is_named(exc: BaseException, said: str, code: int) -> None:
    assert interruption(exc) == said
    assert interrupt_exit_code(exc) == code


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), Terminated()])
def test_the_report_names_the_signal_and_the_stage(exc: BaseException) -> None:
    report = TargetReport("t")
    with pytest.raises(KeyboardInterrupt), stage(report, "boot", "booting"):
        raise exc
    report.interrupted(exc)
    assert report.verdict == "error"
    assert report.reason == f"{interruption(exc)} in the boot stage"
    assert report.stages[-1].detail == interruption(exc)


# A subcommand that receives a signal mid-way (in a child: SIGTERM must not
# reach the test worker).
SIGNALLED = """
import os, signal, sys, time
from harness import cli
signal.signal(signal.SIGINT, signal.default_int_handler)  # not a background job's SIG_IGN
def dispatch(args):
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    time.sleep(30)
    return 0
cli._dispatch = dispatch
sys.exit(cli.main(["vm", "list"]))
"""


@pytest.mark.parametrize(
    ("sig", "code", "line"),
    [
        ("SIGTERM", 143, "aufs-harness: interrupted by SIGTERM; VMs stopped"),
        ("SIGINT", 130, "aufs-harness: interrupted by SIGINT (Ctrl-C); VMs stopped"),
    ],
)
def test_a_signal_ends_the_cli_with_its_line_and_code(sig: str, code: int, line: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SIGNALLED, sig],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr.strip()) == (code, line)


def test_how_qemu_ended_is_named(tmp_path: Path) -> None:
    """QEMU SIGKILLed from outside (fault campaign): 'killed by SIGKILL'."""
    proc = subprocess.Popen(["sleep", "60"])
    qemu = QemuProcess(spec=None, proc=proc, stderr_log=tmp_path / "none")  # type: ignore[arg-type]
    assert qemu.ended() == ""
    proc.kill()
    proc.wait()
    assert qemu.ended() == "killed by SIGKILL"
    log = tmp_path / "qemu.log"
    log.write_text("qemu: could not open disk\n")
    done = subprocess.Popen(["sh", "-c", "exit 1"])
    done.wait()
    assert QemuProcess(None, done, log).ended() == "exited 1: qemu: could not open disk"  # type: ignore[arg-type]
