"""--dist load / each over several VMs: one --tx per VM."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import multivm
from harness.core.errors import UserError


def vm(name: str) -> multivm.Member:
    return multivm.Member(name, Path(f"/s/{name}/ssh_config"), name, Path(f"/s/{name}/console"))


def test_one_tx_per_worker_named_after_its_vm_with_its_own_ssh_config() -> None:
    txs = multivm.tx_specs([vm("vm1"), vm("vm2")], workers=2)
    tail = "//python=python3//chdir=/opt/aufs-harness//env:AUFS_HARNESS_KERNEL_WORKERS=2"
    assert txs == [
        f"ssh=-F /s/vm1/ssh_config vm1//id=vm1w1{tail}",
        f"ssh=-F /s/vm1/ssh_config vm1//id=vm1w2{tail}",
        f"ssh=-F /s/vm2/ssh_config vm2//id=vm2w1{tail}",
        f"ssh=-F /s/vm2/ssh_config vm2//id=vm2w2{tail}",
    ]


def test_events_split_by_the_vm_of_their_worker() -> None:
    members = [vm("vm1"), vm("vm10")]  # vm1's prefix must not take vm10's workers
    events = [
        {"event": "start", "nodeid": "t::a", "worker": "vm1w1"},
        {"event": "start", "nodeid": "t::b", "worker": "vm10w1"},
        {"event": "report", "nodeid": "t::a", "worker": "vm1w1", "when": "setup"},
        {"event": "worker-down", "worker": "vm10w1", "error": "EOF"},
        {"event": "start", "nodeid": "t::c", "worker": ""},  # no worker known: nobody's
    ]
    per = multivm.split_events(events, members)
    assert [len(p) for p in per] == [2, 2]
    assert {e["nodeid"] for e in per[1] if "nodeid" in e} == {"t::b"}


def test_a_hung_check_is_blamed_on_its_own_vm(tmp_path: Path) -> None:
    members = [vm("vm1"), vm("vm2")]
    watch = multivm.GroupWatch(members, check_timeout=100.0)
    events = [
        {"event": "start", "nodeid": "t::quick", "worker": "vm1w1", "t": 990.0},
        {"event": "start", "nodeid": "t::stuck", "worker": "vm2w1", "t": 850.0},
    ]
    assert watch.check(events, 1000.0) == [1]
    assert watch.hung[1][0] == "t::stuck"
    assert watch.check(events, 1100.0) == [0]  # later, vm1's own check; vm2 is not named twice


@pytest.mark.parametrize("dist", ["load", "each"])
def test_controller_argv(dist: str) -> None:
    argv = multivm.controller_argv(dist, ["T1", "T2"], ["-k", "x"])
    at = argv.index("--dist")
    assert argv[at : at + 6] == ["--dist", dist, "--tx", "T1", "--tx", "T2"]
    assert argv[-3:] == ["suite", "-k", "x"]


def test_bad_dist_is_one_line() -> None:
    with pytest.raises(UserError, match="--dist loadfile: use one of load, each"):
        multivm.controller_argv("loadfile", ["T"], [])


def test_a_quiet_vm_qemu_stopped_is_cut_off_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VM silent for QUIET_PROBE s is asked why (QMP through Member.host_stop);
    QEMU's answer gives that VM up, the talkative one is not asked."""
    from harness import guestsuite

    monkeypatch.setattr(guestsuite, "QUIET_PROBE", 0.0)
    asked: list[str] = []

    def paused() -> str:
        asked.append("vm1")
        return "QEMU paused the guest on a disk error (virtio0: nospace): ..."

    def running() -> str:
        asked.append("vm2")
        return ""

    members = [
        multivm.Member("vm1", Path("/s/vm1/ssh_config"), "vm1", tmp_path / "c1", paused),
        multivm.Member("vm2", Path("/s/vm2/ssh_config"), "vm2", tmp_path / "c2", running),
    ]
    watch = multivm.GroupWatch(members, check_timeout=100.0)
    events = [{"event": "start", "nodeid": "t::fill", "worker": "vm1w1", "t": 990.0}]
    busy = [
        {"event": "start", "nodeid": f"t::{i}", "worker": "vm2w1", "t": 990.0} for i in range(2)
    ]
    assert watch.check(events + busy[:1], 1000.0) == [] and asked == []  # both had news
    assert watch.check(events + busy, 1001.0) == [0]  # vm1 quiet, asked; vm2 had news
    assert watch.host_stop == {0: "QEMU paused the guest on a disk error (virtio0: nospace): ..."}
    assert watch.hung == {} and asked == ["vm1"]
    assert watch.check(events + busy, 1002.0) == []  # vm1 not given up twice; vm2 quiet: asked
    assert asked == ["vm1", "vm2"]
