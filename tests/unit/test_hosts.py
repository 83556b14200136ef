"""The host inventory, placement by resources, and the cells of a host that drops."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from harness.core.deadline import Deadline
from harness.core.errors import InfraError, UserError
from harness.hosts import Host, RemoteRun, load_inventory
from harness.matrix import placement
from harness.matrix.reporter import Reporter
from harness.matrix.spec import Cell, Matrix
from harness.results import TargetReport
from harness.resultsdir import ResultsDir

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE"


def inventory(tmp_path: Path, body: str) -> Path:
    (tmp_path / "key").write_text("k")
    path = tmp_path / "hosts.toml"
    path.write_text(body.replace("KEY", str(tmp_path / "key")))
    return path


GOOD = f"""
[[host]]
name = "h1"
address = "10.200.1.2"
key = "KEY"
host_key = "{HOST_KEY}"
cores = 4
memory_mb = 4096
harness = ["/venv/bin/aufs-harness"]
workdir = "/var/tmp/cells"
"""


def test_inventory_loads_with_defaults(tmp_path: Path) -> None:
    (host,) = load_inventory(inventory(tmp_path, GOOD))
    assert (host.name, host.port, host.user, host.cores) == ("h1", 22, "root", 4)
    assert host.harness == ("/venv/bin/aufs-harness",)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("cores = 4", "cores = 0"), "cores: 0 is not a positive integer"),
        (('workdir = "/var/tmp/cells"', 'workdir = "cells"'), "is not an absolute path"),
        (('harness = ["/venv/bin/aufs-harness"]', 'harness = "aufs-harness"'), "list of strings"),
        (("cores = 4", "cores = 4\nspeed = 1"), "unknown key 'speed'"),
        ((f'host_key = "{HOST_KEY}"', ""), "host_key is missing"),
    ],
)
def test_inventory_errors_are_one_line(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        load_inventory(inventory(tmp_path, GOOD.replace(*edit)))
    assert "\n" not in str(info.value) and "host h1" in str(info.value)


def host(name: str, cores: int = 2, memory_mb: int = 4096) -> Host:
    return Host(name, "10.200.0.1", Path("/k"), HOST_KEY, cores, memory_mb, ("ah",), "/w")


def test_slots_are_cores_over_cpus_and_memory_over_vm_size() -> None:
    assert host("a", cores=8, memory_mb=16384).slots(smp=2, memory_mb=1024) == 4
    assert host("a", cores=8, memory_mb=3000).slots(smp=2, memory_mb=1024) == 1
    assert host("a", cores=1).slots(smp=2, memory_mb=1024) == 0


def test_no_host_big_enough_is_a_user_error() -> None:
    cells = (cell("c1"),)
    with pytest.raises(UserError, match="no host can run a VM of 4 CPUs"):
        placement.place(cells, (host("a"),), smp=4, memory_mb=1024)


def cell(name: str, **kw: Any) -> Cell:
    return Cell(name=name, kernel="stock", distro="bookworm", drivers=("overlay",),
                branch_fs=("tmpfs",), **kw)  # fmt: skip


def test_remote_args_are_run_options_then_the_suite_after_dashes() -> None:
    args = placement.remote_args(cell("c", suite_args=("-k", "x")), "tcg", 768, 1)
    assert args[:4] == ["--distro", "bookworm", "--accel", "tcg"]
    assert args[args.index("--branch-fs") + 1] == "tmpfs"
    assert args[args.index("--vms") :][:4] == ["--vms", "1", "--dist", "load"]
    assert args[args.index("--") :] == ["--", "--driver=overlay", "-k", "x"]
    aufs = Cell(name="a", kernel="debian:bullseye", distro="bullseye", drivers=("aufs",),
                branch_fs=("tmpfs",), aufs_src="/src", aufs_options=("SHWH=n",))  # fmt: skip
    args = placement.remote_args(aufs, "tcg", 768, 1)
    at = args.index("--kernel")
    assert args[at : at + 4] == ["--kernel", "debian:bullseye", "--aufs-src", "/src"]
    assert "--aufs-option" in args and "SHWH=n" in args


class FakeSession:
    """A HostSession whose host behaves as `behaviour[host]` says."""

    behaviour: ClassVar[dict[str, str]] = {}
    ran: ClassVar[list[tuple[str, str]]] = []
    # With a meeting, each host's first cell waits until every host has one, so
    # that one fast host cannot take every cell before the other starts.
    meeting: ClassVar[threading.Barrier | None] = None

    def __init__(self, h: Host) -> None:
        self.host = h

    def connect(self, deadline: Deadline) -> None:
        if self.behaviour.get(self.host.name) == "down":
            raise InfraError(f"host {self.host.name} does not answer SSH")

    def close(self) -> None:
        pass

    def run_harness(self, args: list[str], base: str, deadline: Deadline) -> RemoteRun:
        first = all(h != self.host.name for h, _ in self.ran)
        self.ran.append((self.host.name, base))
        if first and self.meeting is not None:
            self.meeting.wait(timeout=30)
        if self.behaviour.get(self.host.name) == "drops":
            raise InfraError("SSH connection dropped while running aufs-harness run")
        return RemoteRun(0, "", f"{base}/20250101-000000")

    def read_text(self, remote: str) -> str:
        report = TargetReport("debian-bookworm-stock", verdict="passed", console_log="/r/c.log")
        return json.dumps({"version": 1, "targets": [report.__dict__]})

    def fetch_tree(self, remote: str, local: Path, deadline: Deadline) -> int:
        (local / "console.log").write_text("boot\n")
        return 1


def host_run(tmp_path: Path, cells: tuple[Cell, ...], got: dict[str, TargetReport]) -> Any:
    def finish(c: Cell, r: TargetReport) -> None:
        got[c.name] = r

    return placement.HostRun(
        Matrix(tmp_path / "m.toml", "m", cells), ResultsDir(tmp_path / "results"),
        Reporter(plain=True), "tcg", 1024, 2, finish, lambda c: 60.0,
    )  # fmt: skip


@pytest.fixture
def fake_hosts(monkeypatch: pytest.MonkeyPatch) -> type[FakeSession]:
    monkeypatch.setattr(placement, "HostSession", FakeSession)
    FakeSession.behaviour, FakeSession.ran, FakeSession.meeting = {}, [], None
    return FakeSession


def test_cells_land_on_every_host(tmp_path: Path, fake_hosts: type[FakeSession]) -> None:
    fake_hosts.meeting = threading.Barrier(2)
    got: dict[str, TargetReport] = {}
    cells = tuple(cell(f"c{i}") for i in range(4))
    down = placement.run_cells_on_hosts(host_run(tmp_path, cells, got), (host("a"), host("b")))
    assert not down and set(got) == {"c0", "c1", "c2", "c3"}
    assert {h for h, _ in fake_hosts.ran} == {"a", "b"}
    assert all(r.verdict == "passed" for r in got.values())
    assert got["c0"].target == "c0" and got["c0"].extra["host"]["target"] == "debian-bookworm-stock"
    assert (tmp_path / "results" / "c0" / "console.log").exists()


def test_a_host_down_before_a_cell_gives_its_cells_to_the_others(
    tmp_path: Path, fake_hosts: type[FakeSession]
) -> None:
    fake_hosts.behaviour = {"a": "down"}
    got: dict[str, TargetReport] = {}
    cells = tuple(cell(f"c{i}") for i in range(3))
    down = placement.run_cells_on_hosts(host_run(tmp_path, cells, got), (host("a"), host("b")))
    assert set(down) == {"a"}
    assert {h for h, _ in fake_hosts.ran} == {"b"}
    assert all(r.verdict == "passed" for r in got.values()) and len(got) == 3


def test_a_host_that_drops_mid_cell_is_that_cells_error_with_evidence(
    tmp_path: Path, fake_hosts: type[FakeSession]
) -> None:
    fake_hosts.behaviour = {"a": "drops"}
    fake_hosts.meeting = threading.Barrier(2)
    got: dict[str, TargetReport] = {}
    cells = tuple(cell(f"c{i}") for i in range(3))
    placement.run_cells_on_hosts(host_run(tmp_path, cells, got), (host("a"), host("b")))
    dropped = [r for r in got.values() if r.verdict == "error"]
    assert len(dropped) == 1 and len(got) == 3  # a ran one cell, b ran the rest
    assert dropped[0].reason.startswith("infrastructure: host a failed during the cell")
    evidence = Path(dropped[0].extra["host"]["evidence"]).read_text()
    assert "SSH connection dropped" in evidence


def test_every_host_down_leaves_the_cells_as_errors(
    tmp_path: Path, fake_hosts: type[FakeSession]
) -> None:
    fake_hosts.behaviour = {"a": "down"}
    got: dict[str, TargetReport] = {}
    placement.run_cells_on_hosts(host_run(tmp_path, (cell("c0"),), got), (host("a"),))
    assert got["c0"].verdict == "error" and "every host is down" in got["c0"].reason
