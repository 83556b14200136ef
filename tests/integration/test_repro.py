"""Reproducing a red cell: kept VMs (vm up --kernel / --from, run --keep-vm),
repro of a recorded check, repro --shell, and a bundle rebuilt elsewhere.

Self-contained: the module records its own small aufs run with the harness
(`aufs-harness run --kernel debian:bullseye=5.10.223-1 ... -- -k SELECTION`,
the bullseye kernel warm in the store), whose cell fails the removexattr check
(harness/baselines/bullseye-aufs5.10.toml: "removexattr(U/f, user.k) after a
copy-up leaves user.k visible"), and the tests reproduce that cell. They need
AUFS_HARNESS_AUFS_SRC (an aufs-standalone clone or bundle) and
AUFS_HARNESS_FIXUP_DIR (the fix-ups that kernel needs), and skip saying so
without them. Every test asserts that no QEMU and no VM directory is left.

The bundle test rebuilds the kernel and the image from an empty cache: a cold
kernel build (see its docstring for the cost).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmod.build import ccache_dir
from tests.integration.conftest import qemu_pids

CHECK = "test_setxattr_copies_up_and_reads_topmost_copy[aufs-ext4-defaults]"
# The recorded run: every variant of the removexattr check (its ext4 ones fail
# on aufs5.10.140) and one whiteout check that passes.
SELECTION = (
    "test_setxattr_copies_up_and_reads_topmost_copy or test_unlink_lower_file_creates_whiteout"
)
AUFS_SRC = os.environ.get("AUFS_HARNESS_AUFS_SRC", "")
FIXUP_DIR = os.environ.get("AUFS_HARNESS_FIXUP_DIR", "")
KERNEL = os.environ.get("AUFS_HARNESS_REPRO_KERNEL", "debian:bullseye=5.10.223-1")
CELL = f"{KERNEL} aufs"  # the run's target label
KEPT_NAME = re.sub(r"[^a-z0-9-]+", "-", CELL.lower()).strip("-")  # its --keep-vm VM's name

needs_aufs = pytest.mark.skipif(
    not (AUFS_SRC and FIXUP_DIR),
    reason="AUFS_HARNESS_AUFS_SRC (an aufs-standalone clone) and AUFS_HARNESS_FIXUP_DIR (the "
    f"fix-ups {KERNEL} needs) must both be set to build and record an aufs cell",
)
pytestmark = needs_aufs


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
    return ["--kernel", KERNEL, "--aufs-src", AUFS_SRC, "--fixup-dir", FIXUP_DIR]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The results directory of a small aufs run this module records itself
    (its own state directory: nothing of it is left running)."""
    base = tmp_path_factory.mktemp("recorded")
    state = tmp_path_factory.mktemp("recorded-state")
    t0 = time.monotonic()
    run = cli("run", *build_args(), "--results", str(base), "--", "-k", SELECTION,
              AUFS_HARNESS_STATE=str(state))  # fmt: skip
    # exit 1: the removexattr check failed, as it does on aufs5.10.140
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    results = (base / "latest").resolve()
    report = json.loads((results / "report.json").read_text())["targets"][0]
    assert report["target"] == CELL, report["target"]
    red = [c["nodeid"] for c in report["checks"] if c["outcome"] == "failed"]
    assert any(n.endswith(CHECK) for n in red), red
    assert not qemu_pids(str(state)), "the recording run left QEMU running"
    FACTS_LINES.append(
        f"recorded {CELL} ({KERNEL}, -k {SELECTION!r}): {len(report['checks'])} checks, "
        f"{len(red)} failed, {time.monotonic() - t0:.0f}s"
    )
    return results


FACTS_LINES: list[str] = []


@pytest.fixture(autouse=True)
def nothing_left(fact: list[str]) -> Iterator[None]:
    fact.extend(FACTS_LINES)
    FACTS_LINES.clear()
    yield
    state = os.environ["AUFS_HARNESS_STATE"]
    cli("vm", "down", "--all", timeout=120)  # whatever a failed test kept
    assert not qemu_pids(state), "QEMU left running"


def assert_one_vm_then_gone(name: str) -> None:
    """Exactly one VM, `name`, runs; vm ssh enters it and sees aufs; vm down removes it all."""
    state = Path(os.environ["AUFS_HARNESS_STATE"])
    listed = cli("vm", "list", timeout=60).stdout.splitlines()
    assert [line.split()[:2] for line in listed] == [[name, "running"]], listed
    assert len(qemu_pids(str(state))) == 1, "not exactly one QEMU"
    inside = cli("vm", "ssh", "--name", name, "--", "grep", "-w", "aufs", "/proc/filesystems",
                 timeout=120)  # fmt: skip
    assert inside.returncode == 0, inside.stderr
    assert cli("vm", "down", "--name", name, timeout=120).returncode == 0
    assert not qemu_pids(str(state)), "vm down left QEMU running"
    assert not any((state / "vms").iterdir()) and not any((state / "runs").glob("*"))
    assert "no VMs" in cli("vm", "list", timeout=60).stdout


def interrupt_when_qemu_runs(argv: list[str], vm_dir: Path) -> subprocess.Popen[str]:
    """Start the harness with `argv`, send it SIGINT (Ctrl-C) once QEMU of the VM
    `vm_dir` runs, and wait for it to end."""
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    end = time.monotonic() + 1800
    while not qemu_pids(str(vm_dir)):  # the build (cached), the image (cached), then QEMU
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"no QEMU for {vm_dir} came up"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    return proc


def assert_nothing_left() -> None:
    state = Path(os.environ["AUFS_HARNESS_STATE"])
    assert not qemu_pids(str(state)), "QEMU left running"
    assert not any((state / "vms").glob("*")), list((state / "vms").glob("*"))
    assert not any((state / "runs").glob("*")), list((state / "runs").glob("*"))
    assert "no VMs" in cli("vm", "list", timeout=60).stdout


def test_vm_up_kernel_boots_the_built_kernel_with_aufs_loaded(fact: list[str]) -> None:
    t0 = time.monotonic()
    up = cli("vm", "up", "--name", "aufs-up", *build_args())
    assert up.returncode == 0, up.stderr
    assert "ssh -F " in up.stdout and "vm down --name aufs-up" in up.stdout
    fact.append(f"vm up --kernel {KERNEL}: {time.monotonic() - t0:.0f}s")
    assert_one_vm_then_gone("aufs-up")


def test_ctrl_c_during_vm_up_kernel_leaves_nothing() -> None:
    state = Path(os.environ["AUFS_HARNESS_STATE"])
    proc = interrupt_when_qemu_runs(["vm", "up", "--name", "ctrlc", *build_args()],
                                    state / "vms" / "ctrlc")  # fmt: skip
    assert proc.returncode != 0
    assert_nothing_left()


def test_vm_up_from_a_cell(recorded: Path, fact: list[str]) -> None:
    t0 = time.monotonic()
    up = cli("vm", "up", "--name", "from-cell", "--from", str(recorded), CELL)
    assert up.returncode == 0, up.stderr
    assert "from the store" in up.stdout, up.stdout
    fact.append(f"vm up --from: {up.stdout.splitlines()[0]} ({time.monotonic() - t0:.0f}s)")
    assert_one_vm_then_gone("from-cell")


def test_ctrl_c_during_vm_up_from_leaves_nothing(recorded: Path) -> None:
    state = Path(os.environ["AUFS_HARNESS_STATE"])
    argv = ["vm", "up", "--name", "from-ctrlc", "--from", str(recorded), CELL]
    proc = interrupt_when_qemu_runs(argv, state / "vms" / "from-ctrlc")
    assert proc.returncode != 0
    assert_nothing_left()


def test_run_keep_vm_keeps_one_named_vm(tmp_path: Path) -> None:
    run = cli("run", *build_args(), "--keep-vm", "--results", str(tmp_path), "--",
              "-k", "test_unlink_lower_file_creates_whiteout and aufs-tmpfs")  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "keeps running (--keep-vm)" in run.stdout
    name = next(line.split()[3] for line in run.stdout.splitlines() if "keeps running" in line)
    assert name == KEPT_NAME
    assert_one_vm_then_gone(name)


def test_ctrl_c_during_run_keep_vm_leaves_nothing(tmp_path: Path) -> None:
    state = Path(os.environ["AUFS_HARNESS_STATE"])
    argv = ["run", *build_args(), "--keep-vm", "--results", str(tmp_path), "--",
            "-k", "test_unlink_lower_file_creates_whiteout and aufs-tmpfs"]  # fmt: skip
    proc = interrupt_when_qemu_runs(argv, state / "vms" / KEPT_NAME)
    assert proc.returncode != 0
    assert_nothing_left()
    # the interrupted run's report is still written, and says so
    report = json.loads(next(tmp_path.glob("*/report.json")).read_text())["targets"][0]
    assert report["verdict"] != "passed", report


def test_repro_reports_the_same_removexattr_failure(
    recorded: Path, tmp_path: Path, fact: list[str]
) -> None:
    t0 = time.monotonic()
    got = cli("repro", str(recorded), CELL, CHECK, "--results", str(tmp_path))
    assert got.returncode == 0, got.stdout + got.stderr
    assert "recorded: failed" in got.stdout and "now:      failed" in got.stdout
    assert "removexattr" in got.stdout and "repro: reproduced" in got.stdout
    # on the same kernel: the recorded build's store entry, the same release
    want = json.loads((recorded / "report.json").read_text())["targets"][0]
    assert f"key {want['extra']['build']['key']}" in got.stdout, got.stdout
    assert f"on {want['kernel_release']}" in got.stdout, got.stdout
    now = json.loads(next(tmp_path.glob("*/report.json")).read_text())["targets"][0]
    assert now["extra"]["image"]["key"] == want["extra"]["image"]["key"]
    fact.append(f"repro {CHECK}: {got.stdout.splitlines()[-1]} ({time.monotonic() - t0:.0f}s)")
    assert not qemu_pids(os.environ["AUFS_HARNESS_STATE"])


def test_repro_shell_leaves_the_union_mounted(recorded: Path, tmp_path: Path) -> None:
    got = cli("repro", str(recorded), CELL, CHECK, "--shell", "--name", "shell",
              "--results", str(tmp_path))  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr
    union = next(line.split()[2] for line in got.stdout.splitlines() if ": union " in line)
    mounts = cli("vm", "ssh", "--name", "shell", "--", "grep", f" {union} aufs ", "/proc/mounts",
                 timeout=120)  # fmt: skip
    assert mounts.returncode == 0, f"{union} not mounted in the guest: {mounts.stderr}"
    ls = cli("vm", "ssh", "--name", "shell", "--", "ls", union, timeout=120)
    assert "f" in ls.stdout.split()
    # the failure itself is there to poke at: removexattr left user.k readable
    xattr = cli("vm", "ssh", "--name", "shell", "--", "python3", "-c",
                f"import os; print(os.listxattr('{union}/f'))", timeout=120)  # fmt: skip
    assert "user.k" in xattr.stdout, xattr.stdout + xattr.stderr
    assert_one_vm_then_gone("shell")


def local_paths(recorded: Path, *more: Path) -> list[str]:
    """Absolute paths of this machine a bundle must not mention."""
    paths = [AUFS_SRC, FIXUP_DIR, str(Path(AUFS_SRC).parent), str(recorded), os.getcwd()]
    paths += [str(Path.home() / ".cache"), os.environ["AUFS_HARNESS_STATE"], *map(str, more)]
    return [p for p in paths if len(Path(p).parts) > 2]


def test_a_bundle_rebuilds_the_same_kernel_elsewhere(
    recorded: Path, tmp_path: Path, fact: list[str]
) -> None:
    """Unpacked in an empty directory with an empty cache (XDG_CACHE_HOME): the
    kernel source package, the aufs commit and the fix-ups the bundle names
    build the same kernel (same store key, same .config), the image is built
    again, and the check reruns and fails as recorded. Cost: a kernel build
    through this machine's compiler cache, plus an image build."""
    made = cli("bundle", str(recorded), CELL, "--out", str(tmp_path))
    assert made.returncode == 0, made.stderr
    tarball = next(tmp_path.glob("*.tar.gz"))
    forbidden = local_paths(recorded, tmp_path)
    with tarfile.open(tarball) as tar:
        for m in tar.getmembers():
            assert not m.name.startswith("/") and ".." not in m.name, m.name
            text = tar.extractfile(m).read().decode(errors="replace")  # type: ignore[union-attr]
            assert "PRIVATE KEY" not in text, m.name
            assert not [p for p in forbidden if p in text], (m.name, forbidden)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        tar.extractall(elsewhere, filter="data")
    top = next(elsewhere.iterdir())
    manifest = json.loads((top / "manifest.json").read_text())
    kernel = manifest["kernel"]
    assert kernel["package"] == "linux-source-5.10" and kernel["pocket"], kernel
    assert len(kernel["sha256"]) == 64, kernel
    members = ["reproduce.sh", "config", "fragment.config", "image-recipe.json",
               "failed-checks.txt", "recorded/report.json"]  # fmt: skip
    assert manifest["failed_checks"] and all((top / name).is_file() for name in members)
    assert {f["name"] for f in manifest["fixups"]} == {
        p.name for p in Path(FIXUP_DIR).glob("*.patch")
    }
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "AUFS_HARNESS_CACHE"}
    env.update(XDG_CACHE_HOME=str(cache), PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    # Only the compiler cache is shared with this machine's: every object is
    # still compiled from the bundle's sources (a hit is keyed by the
    # preprocessed input), and a cold ccache would make this one test cost 17-50
    # minutes of make on a 2-core machine.
    env.setdefault("AUFS_HARNESS_CCACHE", str(ccache_dir()))
    t0 = time.monotonic()
    got = subprocess.run([str(top / "reproduce.sh"), AUFS_SRC, CHECK], capture_output=True,
                         text=True, timeout=7200, check=False, env=env, cwd=elsewhere)  # fmt: skip
    took = time.monotonic() - t0
    out = got.stdout + got.stderr
    assert "was evicted: rebuilt" in out and "as key" not in out, out[-3000:]
    report = json.loads(next((top / "results").glob("*/report.json")).read_text())["targets"][0]
    build = report["extra"]["build"]
    assert build["key"] == manifest["build_key"] and not build["cached"], out[-2000:]
    assert build["aufs"]["commit"] == manifest["aufs"]["commit"]
    assert build["kernel"]["sha256"] == kernel["sha256"]
    config = Path(build["artifacts"]["config"])
    assert config.is_relative_to(cache), config  # built in the empty cache, not found
    assert hashlib.sha256(config.read_bytes()).hexdigest() == manifest["config_sha256"]
    assert "repro: reproduced" in out and got.returncode == 0, out[-3000:]
    timings = build.get("timings", {})
    fact.append(
        f"bundle rebuilt elsewhere from an empty cache in {took:.0f}s (kernel build "
        f"{timings.get('total', 0):.0f}s: make {timings.get('build', 0):.0f}s), key "
        f"{build['key']}, .config {manifest['config_sha256'][:16]}, load "
        f"{os.getloadavg()[0]:.1f}"
    )
