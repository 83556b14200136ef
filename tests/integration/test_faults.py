"""SIGKILL of the harness: its QEMU dies with it, and the next start cleans the rest."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.conftest import qemu_pids
from vm.image import Image


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


def _wait_state(pattern: str, seconds: float = 180) -> Path:
    state = Path(os.environ["AUFS_HARNESS_STATE"])
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        found = sorted(state.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no {pattern} under {state} within {seconds}s")


def _gone(marker: str, seconds: float = 10) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not qemu_pids(marker):
            return True
        time.sleep(0.1)
    return False


def test_sigkill_of_run_kills_qemu_and_next_start_cleans(
    bookworm: Image, tmp_path: Path, fact: list[str]
) -> None:
    proc = _start("run", "--accel", "tcg", "--results", str(tmp_path / "results"))
    state = _wait_state("runs/run-*/state.json")
    workdir = state.parent
    pid = json.loads(state.read_text())["pid"]
    assert qemu_pids(str(workdir)) == [pid]
    assert json.loads((workdir / "owner.json").read_text())["owner"].startswith(f"{proc.pid}:")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _gone(str(workdir)), "QEMU outlived the SIGKILLed harness"
    assert workdir.exists(), "nothing to clean: the test proves nothing"
    # The next start: a booting command whose inputs are good sweeps first (a
    # refused one changes nothing); this one then stops at its taken SSH port.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        nxt = subprocess.run(
            [sys.executable, "-m", "harness.cli", "vm", "up", "--name", "next",
             "--ssh-port", str(port)],
            capture_output=True,
            text=True,
            env=os.environ.copy(),
            check=False,
            timeout=120,
        )  # fmt: skip
    assert nxt.returncode == 2, nxt.stderr
    assert f"SSH port {port} on 127.0.0.1 is already taken" in nxt.stderr
    assert "cleaned what a dead run left" in nxt.stderr and "VM state dir" in nxt.stderr
    assert not workdir.exists()
    fact.append(
        f"SIGKILL of run: QEMU {pid} died with it; next start: {nxt.stderr.splitlines()[0]}"
    )


def test_sigkill_of_vm_up_while_booting_kills_qemu(bookworm: Image) -> None:
    proc = _start("vm", "up", "--name", "killed", "--accel", "tcg")
    state = _wait_state("vms/killed/state.json")
    assert qemu_pids(str(state.parent))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _gone(str(state.parent)), "a vm up killed before SSH answered left its QEMU"
