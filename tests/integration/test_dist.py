"""One cell's suite over two VMs of the stock kernel (`run --vms 2 --dist load`):
the checks are shared out and run once each; a check that hangs on one VM
costs that VM only, the other keeps its checks, and nothing is left running."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from harness.multivm import Shape, VMGroup
from harness.runner import RunOptions, run_target
from harness.targets import Target
from tests.integration.conftest import qemu_pids
from tests.integration.test_hang import run_fake_suite
from vm.image import Image

TWO = VMGroup((Shape(1, 768),) * 2, "load")


def test_dist_load_shares_a_selection_over_two_vms(
    bookworm: Image, tmp_path: Path, fact: list[str]
) -> None:
    opts = RunOptions(results_dir=tmp_path, memory_mb=768, smp=1, workers=1, group=TWO,
                      suite_args=("--branch-fs=tmpfs", "-k", "whiteout and overlay"))  # fmt: skip
    report = run_target(Target(distro="bookworm"), opts)
    assert report.verdict == "passed", (report.reason, report.extra.get("vms"))
    assert not qemu_pids(os.environ["AUFS_HARNESS_STATE"]), "QEMU left running"
    ids = Counter(c.nodeid for c in report.checks)
    assert len(ids) >= 10 and set(ids.values()) == {1}, "each check runs once"
    out = tmp_path / "debian-bookworm-stock"
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    per_vm = Counter(e["worker"] for e in events if e["event"] == "start")
    assert set(per_vm) == {"vm1w1", "vm2w1"}, per_vm  # both VMs ran checks, each start named
    assert report.extra["vm_group"]["rounds"] == 1
    assert (out / "console.log").stat().st_size and (out / "vm-2" / "console.log").stat().st_size
    suite = [round(s.seconds) for s in report.stages if s.name.startswith("suite")]
    fact.append(f"--dist load over 2 VMs: {len(ids)} checks, per VM {dict(per_vm)}, suite {suite}s")


def test_a_hang_on_one_vm_replaces_that_vm_only(
    bookworm: Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fact: list[str]
) -> None:
    quick = "".join(f"\ndef test_quick_{i}():\n    time.sleep(1)\n" for i in range(8))
    report, out = run_fake_suite(
        tmp_path, monkeypatch, "import time\n\ndef test_hangs():\n    time.sleep(3600)\n" + quick,
        check_timeout=20, workers=1, memory_mb=768, smp=1, fresh_vms=2, group=TWO,
    )  # fmt: skip
    outcomes = {c.name: c.outcome for c in report.checks}
    assert outcomes.pop("test_hangs") == "hung", report.checks
    assert outcomes == {f"test_quick_{i}": "passed" for i in range(8)}, outcomes
    group = report.extra["vm_group"]
    assert group["fresh_vms"] <= 1, group  # the hung VM only was replaced (if checks were left)
    assert report.reason.startswith("suite/test_hang.py::test_hangs hung") or report.extra["vms"][
        0
    ].endswith("test_hangs hung"), report.reason
    evidence = list(out.rglob("hang-evidence.txt"))
    assert len(evidence) == 1 and "sysrq" in evidence[0].read_text(), evidence
    fact.append(f"hang on one of 2 VMs: {group}; {report.extra.get('vms')}; {report.reason}")


def test_dist_each_runs_every_check_on_every_vm(
    bookworm: Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fact: list[str]
) -> None:
    """Two shapes of one kernel: a check that holds on 2 CPUs only fails on the 1-CPU VM."""
    checks = """
    import os

    def test_two_cpus():
        assert os.cpu_count() == 2

    def test_anywhere():
        pass
    """
    report, _ = run_fake_suite(
        tmp_path, monkeypatch, checks, workers=2, fresh_vms=0,
        group=VMGroup((Shape(1, 512), Shape(2, 768)), "each"),
    )  # fmt: skip
    keyed = {c.nodeid.rsplit("::", 1)[1]: c.outcome for c in report.checks}
    expected = {"test_two_cpus@vm1": "failed", "test_two_cpus@vm2": "passed",
                "test_anywhere@vm1": "passed", "test_anywhere@vm2": "passed"}  # fmt: skip
    assert keyed == expected, keyed
    assert report.extra["vm_group"]["vms"] == {"vm1": "1x512", "vm2": "2x768"}
    fact.append(f"--dist each over 1x512 and 2x768: {keyed}")


def test_a_vm_qemu_paused_on_a_full_state_disk_is_cut_off_not_hung(
    bookworm: Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fact: list[str]
) -> None:
    """As test_hang.py's paused guest, over two VMs: the VM whose overlay met
    ENOSPC is asked about once quiet and given up as an infrastructure error
    (the other VM, sharing the full directory, may meet it too); no check is
    called hung and no fresh VM is booted onto the full disk."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the state directory needs root")
    small = tmp_path / "small-state"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=224M", "tmpfs", small], check=True)
    fill = (
        "import subprocess, time\n\ndef test_fills_the_disk():\n"
        "    subprocess.run(['dd', 'if=/dev/urandom', 'of=/var/tmp/fill', 'bs=1M', 'count=400',"
        " 'conv=fsync'], check=True)\n"
    )
    quick = "".join(f"\ndef test_quick_{i}():\n    time.sleep(1)\n" for i in range(4))
    try:
        monkeypatch.setenv("AUFS_HARNESS_STATE", str(small))
        report, _ = run_fake_suite(
            tmp_path, monkeypatch, fill + quick, workers=1, memory_mb=768, smp=1,
            fresh_vms=2, group=TWO,
        )  # fmt: skip
    finally:
        subprocess.run(["umount", "-l", small], check=False)
    outcomes = {c.name: c for c in report.checks}
    assert report.verdict == "error", report.reason
    assert "infrastructure: QEMU paused the guest on a disk error (" in report.reason
    assert outcomes["test_fills_the_disk"].outcome == "error"
    assert outcomes["test_fills_the_disk"].message.startswith("not finished: QEMU paused")
    assert not [c.name for c in report.checks if c.outcome == "hung"]
    assert report.extra["vm_group"]["fresh_vms"] == 0
    fact.append(f"paused VM of 2: {report.reason[:100]}...; {len(report.checks)} checks")
