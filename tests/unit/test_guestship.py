"""One bundle for the guest (harness/guestship.py): deterministic, laid out as
under GUEST_ROOT, pytest's trees with the host's mtimes for xdist's rsync."""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from harness import guestenv, guestship, guestsuite
from harness.core.deadline import Deadline
from harness.core.errors import InfraError
from harness.guest.kmsg import CheckFacts
from harness.guestsuite import SuiteOutcome
from harness.results import HUNG, PASSED, SKIPPED, CheckResult


def wheels(tmp_path: Path) -> Path:
    d = tmp_path / "wheels"
    d.mkdir()
    with zipfile.ZipFile(d / "demo-1.0-py3-none-any.whl", "w") as z:
        z.writestr("demo/__init__.py", "X = 1\n")
        z.writestr("demo-1.0.dist-info/METADATA", "Name: demo\n")
    return d


def test_the_bundle_is_the_same_bytes_for_the_same_files(tmp_path: Path) -> None:
    args = (wheels(tmp_path), guestsuite.guest_dir(), guestsuite.suite_dir())
    assert guestship.bundle(*args) == guestship.bundle(*args)


def test_the_bundle_holds_site_guest_package_suite_and_pytest(tmp_path: Path) -> None:
    data = guestship.bundle(wheels(tmp_path), guestsuite.guest_dir(), guestsuite.suite_dir())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    for name in ("site/demo/__init__.py", "harness/guest/kmsg.py", "suite/conftest.py",
                 "suite/unionfs/lab.py", "pytest/__init__.py", "_pytest/main.py"):  # fmt: skip
        assert name in members, name
    assert not [n for n in members if n.endswith(".pyc") or "__pycache__" in n]
    assert members["suite/conftest.py"].mtime == guestship.FIXED_MTIME
    host = guestship.pytest_roots()[1] / "main.py"
    assert members["_pytest/main.py"].mtime == host.stat().st_mtime  # rsync finds it current


def test_the_install_script_replaces_the_trees_and_unpacks_the_bytecode_when_cached() -> None:
    plain, cached = guestship.install_script(False), guestship.install_script(True)
    assert plain.startswith("rm -rf /opt/aufs-harness/site ")
    assert f"tar -xzf {guestship.REMOTE_BUNDLE} -C /opt/aufs-harness" in plain
    assert guestship.REMOTE_BYTECODE not in plain and guestship.REMOTE_BYTECODE in cached


def test_a_run_ended_cleanly_without_a_hang_damage_or_a_lost_worker() -> None:
    ok = CheckResult("suite/t.py::a", PASSED, 0.1)
    clean = SuiteOutcome([ok], 1, Path("pytest.log"), [])
    assert guestsuite.ended_cleanly(clean)
    hung = CheckResult("suite/t.py::b", HUNG, 0.1)
    assert not guestsuite.ended_cleanly(SuiteOutcome([ok, hung], None, Path("p"), [], True))
    skipped = CheckResult("suite/t.py::c", SKIPPED, 0.1, kernel=CheckFacts("BUG: x"))
    assert not guestsuite.ended_cleanly(SuiteOutcome([ok, skipped], 1, Path("p"), []))
    oops = CheckResult("suite/t.py::d", PASSED, 0.1, kernel=CheckFacts(lines=["Oops: 0002"]))
    assert not guestsuite.ended_cleanly(SuiteOutcome([oops], 1, Path("p"), []))
    assert not guestsuite.ended_cleanly(SuiteOutcome([ok], 1, Path("p"), ["gw0: died"]))


class NoGuest:
    """A guest whose SSH connection is gone."""

    def run(self, *args: object, **kwargs: object) -> None:
        raise InfraError("SSH connection dropped")


def test_keeping_bytecode_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUFS_HARNESS_CACHE", str(tmp_path))
    shipped = guestship.Shipped("d" * 24, "cpython-39", False)
    guest: Any = NoGuest()
    assert not guestship.save_bytecode(guest, shipped, Deadline(5, "keeping bytecode"))


class RecordingGuest:
    """A guest whose /run marker says `marker`; records uploads and commands."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.puts: list[str] = []
        self.commands: list[list[str]] = []

    def run(self, argv: list[str], deadline: Deadline, check: bool = False) -> Any:
        self.commands.append(argv)
        probe = "cat" in argv[-1].split()[0]  # the marker file ends in a newline, as echo wrote it
        out = f"{self.marker}\n{guestship.PROBE_SEP}\ncpython-39\n" if probe else ""
        return type("R", (), {"stdout": out, "status": 0})()

    def put(self, local: Path, remote: str) -> None:
        self.puts.append(remote)


def test_a_guest_holding_the_same_bundle_since_boot_gets_nothing_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUFS_HARNESS_CACHE", str(tmp_path))
    wheel_dir = wheels(tmp_path)
    monkeypatch.setattr(guestenv, "wheels", lambda deadline: wheel_dir)
    data = guestship.bundle(wheel_dir, guestsuite.guest_dir(), guestsuite.suite_dir())
    digest = hashlib.sha256(data).hexdigest()[:24]
    args = (Deadline(60, "ship"), guestsuite.guest_dir(), guestsuite.suite_dir(), ("/x",))
    same: Any = RecordingGuest(f"{digest} cpython-39 cached")
    shipped = guestship.ship(same, *args)
    assert same.puts == [] and len(same.commands) == 1 and shipped.bytecode_cached
    other: Any = RecordingGuest("0123 cpython-39 cached")
    shipped = guestship.ship(other, *args)
    assert other.puts == [guestship.REMOTE_BUNDLE] and not shipped.bytecode_cached
    assert guestship.MARKER in other.commands[-1][-1]  # the install records the bundle


class PackingGuest:
    """A guest that packs and hands out a bytecode tar."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def run(self, argv: list[str], deadline: Deadline, check: bool = False) -> Any:
        self.commands.append(argv)
        return type("R", (), {"stdout": "", "status": 0})()

    def get(self, remote: str, local: Path) -> None:
        local.write_bytes(b"pyc")


def test_bytecode_is_kept_once_the_first_check_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUFS_HARNESS_CACHE", str(tmp_path / "cache"))
    events = tmp_path / "events.jsonl"
    guest: Any = PackingGuest()
    shipped = guestship.Shipped("e" * 24, "cpython-39", False)
    with guestship.KeepWhenCollected(guest, shipped, events, Deadline(60, "keep")):
        events.write_text('{"event": "collected"}\n')
        time.sleep(1.5)
        assert guest.commands == []  # collecting: not yet
        events.write_text('{"event": "start", "nodeid": "suite/t.py::a"}\n')
        for _ in range(50):
            if guest.commands:
                break
            time.sleep(0.1)
    assert list((tmp_path / "cache" / "guest-bytecode").glob("*/bytecode.tar.gz"))
