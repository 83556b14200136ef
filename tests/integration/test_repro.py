"""Reproducing a red cell: kept VMs (vm up --kernel / --from, run --keep-vm),
repro of a recorded check, repro --shell, and a bundle rebuilt elsewhere.

These need a recorded aufs run and its kernel: AUFS_HARNESS_REPRO_RESULTS (a
results directory whose cell AUFS_HARNESS_REPRO_CELL, default "debian:bullseye
aufs", failed test_setxattr_copies_up_and_reads_topmost_copy[aufs-ext4-defaults]),
and for the builds AUFS_HARNESS_AUFS_SRC (and AUFS_HARNESS_FIXUP_DIR). Each is
skipped with the reason when its input is unset. Every test asserts that no
QEMU and no VM directory is left.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import qemu_pids

CHECK = "test_setxattr_copies_up_and_reads_topmost_copy[aufs-ext4-defaults]"
RESULTS = os.environ.get("AUFS_HARNESS_REPRO_RESULTS", "")
CELL = os.environ.get("AUFS_HARNESS_REPRO_CELL", "debian:bullseye aufs")
AUFS_SRC = os.environ.get("AUFS_HARNESS_AUFS_SRC", "")
FIXUP_DIR = os.environ.get("AUFS_HARNESS_FIXUP_DIR", "")
KERNEL = os.environ.get("AUFS_HARNESS_REPRO_KERNEL", "debian:bullseye=5.10.223-1")

needs_results = pytest.mark.skipif(
    not RESULTS, reason="AUFS_HARNESS_REPRO_RESULTS (a recorded aufs run) is not set"
)
needs_aufs = pytest.mark.skipif(
    not AUFS_SRC, reason="AUFS_HARNESS_AUFS_SRC (an aufs-standalone clone) is not set"
)


def cli(*args: str, timeout: float = 3600, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        check=False,
    )


def build_args() -> list[str]:
    args = ["--kernel", KERNEL, "--aufs-src", AUFS_SRC]
    return args + (["--fixup-dir", FIXUP_DIR] if FIXUP_DIR else [])


@pytest.fixture(autouse=True)
def nothing_left() -> Iterator[None]:
    yield
    state = os.environ["AUFS_HARNESS_STATE"]
    cli("vm", "down", "--all", timeout=120)  # whatever a failed test kept
    assert not qemu_pids(state), "QEMU left running"


def assert_one_vm_then_gone(name: str) -> None:
    """Exactly one VM, `name`, runs; vm ssh enters it and sees aufs; vm down removes it all."""
    state = Path(os.environ["AUFS_HARNESS_STATE"])
    listed = cli("vm", "list", timeout=60).stdout.splitlines()
    assert [line.split()[:2] for line in listed] == [[name, "running"]], listed
    inside = cli("vm", "ssh", "--name", name, "--", "grep", "-w", "aufs", "/proc/filesystems",
                 timeout=120)  # fmt: skip
    assert inside.returncode == 0, inside.stderr
    assert cli("vm", "down", "--name", name, timeout=120).returncode == 0
    assert not qemu_pids(str(state)), "vm down left QEMU running"
    assert not any((state / "vms").iterdir()) and not any((state / "runs").glob("*"))


@needs_aufs
def test_vm_up_kernel_boots_the_built_kernel_with_aufs_loaded(fact: list[str]) -> None:
    t0 = time.monotonic()
    up = cli("vm", "up", "--name", "aufs-up", *build_args())
    assert up.returncode == 0, up.stderr
    assert "ssh -F " in up.stdout and "vm down --name aufs-up" in up.stdout
    fact.append(f"vm up --kernel {KERNEL}: {time.monotonic() - t0:.0f}s")
    assert_one_vm_then_gone("aufs-up")


@needs_aufs
def test_ctrl_c_during_vm_up_kernel_leaves_nothing() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "vm", "up", "--name", "ctrlc", *build_args()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    state = Path(os.environ["AUFS_HARNESS_STATE"]) / "vms" / "ctrlc"
    end = time.monotonic() + 1800
    while not (state / "console.log").exists() and time.monotonic() < end:
        time.sleep(0.2)  # the build (cached), then QEMU starts
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert not state.exists() and not qemu_pids(str(state))
    assert "no VMs" in cli("vm", "list", timeout=60).stdout


@needs_results
def test_vm_up_from_a_cell(fact: list[str]) -> None:
    up = cli("vm", "up", "--name", "from-cell", "--from", RESULTS, CELL)
    assert up.returncode == 0, up.stderr
    assert "from the store" in up.stdout or "rebuilt" in up.stdout
    fact.append(f"vm up --from: {up.stdout.splitlines()[0]}")
    assert_one_vm_then_gone("from-cell")


@needs_aufs
def test_run_keep_vm_keeps_one_named_vm(tmp_path: Path) -> None:
    run = cli("run", *build_args(), "--keep-vm", "--results", str(tmp_path), "--",
              "-k", "test_whiteout and aufs-tmpfs")  # fmt: skip
    assert run.returncode in (0, 1), run.stderr
    assert "keeps running (--keep-vm)" in run.stdout
    name = next(line.split()[3] for line in run.stdout.splitlines() if "keeps running" in line)
    assert_one_vm_then_gone(name)


@needs_results
def test_repro_reports_the_same_removexattr_failure(tmp_path: Path, fact: list[str]) -> None:
    got = cli("repro", RESULTS, CELL, CHECK, "--results", str(tmp_path))
    assert got.returncode == 0, got.stdout + got.stderr
    assert "recorded: failed" in got.stdout and "now:      failed" in got.stdout
    assert "removexattr" in got.stdout and "repro: reproduced" in got.stdout
    fact.append(f"repro {CHECK}: {got.stdout.splitlines()[0]}")
    assert not qemu_pids(os.environ["AUFS_HARNESS_STATE"])


@needs_results
def test_repro_shell_leaves_the_union_mounted(tmp_path: Path) -> None:
    got = cli("repro", RESULTS, CELL, CHECK, "--shell", "--name", "shell",
              "--results", str(tmp_path))  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr
    union = next(line.split()[2] for line in got.stdout.splitlines() if ": union " in line)
    mounts = cli("vm", "ssh", "--name", "shell", "--", "grep", f" {union} aufs ", "/proc/mounts",
                 timeout=120)  # fmt: skip
    assert mounts.returncode == 0, f"{union} not mounted in the guest: {mounts.stderr}"
    ls = cli("vm", "ssh", "--name", "shell", "--", "ls", union, timeout=120)
    assert "f" in ls.stdout.split()
    assert cli("vm", "down", "--name", "shell", timeout=120).returncode == 0


@needs_aufs
@needs_results
def test_a_bundle_rebuilds_the_same_kernel_elsewhere(tmp_path: Path) -> None:
    """Unpacked in an empty directory with a fresh cache: the same aufs commit and
    .config, and the check rerun. (A cell recorded by an older harness has an
    older fragment: its .config cannot match, and repro says so.)"""
    made = cli("bundle", RESULTS, CELL, "--out", str(tmp_path))
    assert made.returncode == 0, made.stderr
    tarball = next(tmp_path.glob("*.tar.gz"))
    with tarfile.open(tarball) as tar:
        for m in tar.getmembers():
            text = tar.extractfile(m).read().decode(errors="replace")  # type: ignore[union-attr]
            assert "PRIVATE KEY" not in text and str(Path.home()) + "/." not in text, m.name
        tar.extractall(tmp_path / "elsewhere", filter="data")
    top = next((tmp_path / "elsewhere").iterdir())
    manifest = json.loads((top / "manifest.json").read_text())
    got = subprocess.run(
        [str(top / "reproduce.sh"), AUFS_SRC, CHECK], capture_output=True, text=True,
        timeout=7200, check=False,
        env={**os.environ, "AUFS_HARNESS_CACHE": str(tmp_path / "cache"),
             "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )  # fmt: skip
    out = got.stdout + got.stderr
    assert "was evicted: rebuilt" in out, out[-3000:]
    report = json.loads(next((top / "results").glob("*/report.json")).read_text())
    build = report["targets"][0]["extra"]["build"]
    assert build["aufs"]["commit"] == manifest["aufs"]["commit"]
    config = Path(build["artifacts"]["config"]).read_bytes()
    assert hashlib.sha256(config).hexdigest() == manifest["config_sha256"], out[-2000:]
    assert got.returncode == 0, out[-3000:]
