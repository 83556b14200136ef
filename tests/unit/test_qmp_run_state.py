"""QEMU's view of a guest it stopped (vm.qmp.RunState), and the watchdog that
asks for it when the guest goes quiet (harness.guestsuite)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from harness import guestsuite
from harness.core.deadline import Deadline
from vm import qmp

# Answers of QEMU 7.2 (qapi/run-state.json, qapi/block.json), trimmed.
PAUSED = {"status": "io-error", "singlestep": False, "running": False}
BLOCK = [
    {"device": "virtio0", "io-status": "nospace", "locked": False, "removable": False},
    {"device": "virtio1", "io-status": "ok", "locked": False, "removable": False},
    {"device": "floppy0", "locked": False, "removable": True},  # no io-status at all
]


def test_a_guest_paused_on_enospc_names_the_disk_and_the_full_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUFS_HARNESS_STATE", str(tmp_path))
    state = qmp.parse_run_state(PAUSED, BLOCK)
    assert state == qmp.RunState("io-error", False, {"virtio0": "nospace"})
    assert state.stopped_by_qemu
    why = qmp.stop_reason(state, tmp_path / "vms" / "x" / "disk.qcow2")
    assert why.startswith("QEMU paused the guest on a disk error (virtio0: nospace): ")
    assert f"the state directory {tmp_path.resolve()} is full (no space left" in why
    assert "AUFS_HARNESS_STATE" in why and "half-written" not in why
    assert "\n" not in why


def test_other_io_errors_and_states() -> None:
    failed = qmp.parse_run_state(PAUSED, [{"device": "virtio0", "io-status": "failed"}])
    assert qmp.stop_reason(failed, Path("/s/disk.qcow2")) == (
        "QEMU paused the guest on a disk error (virtio0: failed) writing /s/disk.qcow2: "
        "check the host's disk and its kernel log (dmesg)"
    )
    for status, running in (("running", True), ("paused", False), ("shutdown", False)):
        state = qmp.parse_run_state({"status": status, "running": running}, BLOCK)
        assert not state.stopped_by_qemu and qmp.stop_reason(state, Path("/d")) == ""
    internal = qmp.parse_run_state({"status": "internal-error", "running": False}, [])
    assert qmp.stop_reason(internal, Path("/d")).startswith("QEMU stopped the guest (internal")


def test_a_missing_monitor_is_a_qmp_error(tmp_path: Path) -> None:
    with pytest.raises(qmp.QmpError, match="does not exist"):
        qmp.run_state(tmp_path / "qmp.sock", Deadline(1.0, "t"))


def test_a_quiet_guest_that_qemu_stopped_ends_the_suite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No event and no console line for QUIET_PROBE s: QEMU is asked; its answer
    stops the controller at once (not after the check timeout)."""
    monkeypatch.setattr(guestsuite, "WATCH_EVERY", 0.05)
    monkeypatch.setattr(guestsuite, "QUIET_PROBE", 0.3)
    asked: list[float] = []

    def host_stop() -> str:
        asked.append(time.monotonic())
        return "QEMU paused the guest" if len(asked) >= 2 else ""

    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    t0 = time.monotonic()
    ended = guestsuite._run_controller(
        argv, {}, tmp_path, tmp_path / "pytest.log", tmp_path / "events.jsonl",
        Deadline(60, "suite"), guestsuite.Watchdog(300.0), host_stop,
    )  # fmt: skip
    assert ended == guestsuite._Ended(None, stopped=True, host_stop="QEMU paused the guest")
    assert len(asked) == 2 and asked[1] - asked[0] >= 0.3  # at most once per interval
    assert time.monotonic() - t0 < 10


def test_a_guest_that_keeps_reporting_is_not_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guestsuite, "WATCH_EVERY", 0.05)
    monkeypatch.setattr(guestsuite, "QUIET_PROBE", 2.0)  # generous: a loaded CI machine
    events = tmp_path / "events.jsonl"
    events.write_text('{"event": "x", "i": -1}\n')  # read at the first tick, before the child runs
    chatty = (
        "import json, time\n"
        "for i in range(50):\n"
        f"    open({str(events)!r}, 'a').write(json.dumps({{'event': 'x', 'i': i}}) + '\\n')\n"
        "    time.sleep(0.05)\n"
    )
    asked: list[str] = []

    def host_stop() -> str:
        asked.append("?")
        return ""

    ended = guestsuite._run_controller(
        [sys.executable, "-c", chatty], {}, tmp_path, tmp_path / "pytest.log", events,
        Deadline(60, "suite"), guestsuite.Watchdog(300.0), host_stop,
    )  # fmt: skip
    assert ended == guestsuite._Ended(0) and asked == []
