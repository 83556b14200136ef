"""The docker scenario end to end: docker.io 20.10.5 on a bullseye image, dockerd
with --storage-driver=aufs, on the stock kernel (refused, named) and on a built
aufs kernel (every Docker check passes, copy-up measured).

The aufs test runs the shipped docker matrix (harness/matrices/docker.toml)
through `aufs-harness matrix run`; it needs AUFS_HARNESS_AUFS_SRC (an
aufs-standalone URL or clone) and AUFS_HARNESS_FIXUP_DIR (the fix-ups for
bullseye's 5.10.223), and is skipped with the reason without them. The first run
builds the docker image (~3 min) and the kernel with the docker fragment (19 min
cold on 2 cores, 43 min at load 15-30); later runs reuse both: the cell then took
9 min at load 3-13 (25 min at load 20-25), repro and vm up --from 1 min more.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest

from harness import scenario as scenarios
from harness.matrix import schema
from tests.integration.conftest import qemu_pids

AUFS_SRC = os.environ.get("AUFS_HARNESS_AUFS_SRC", "")
FIXUP_DIR = os.environ.get("AUFS_HARNESS_FIXUP_DIR", "")
DOCKER_MATRIX = Path(__file__).parents[2] / "harness" / "matrices" / "docker.toml"
CELL = "bullseye-aufs5.10.140-docker"


def test_stock_kernel_fails_naming_the_missing_aufs(tmp_path: Path, fact: list[str]) -> None:
    argv = [sys.executable, "-m", "harness.cli", "run", "--scenario", "docker",
            "--distro", "bullseye", "--results", str(tmp_path)]  # fmt: skip
    r = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stdout + r.stderr
    (path,) = {p.resolve() for p in tmp_path.glob("*/report.json")}  # and latest/
    report = json.loads(path.read_text())
    reason = report["targets"][0]["reason"]
    assert reason.startswith("dockerd refused --storage-driver=aufs: aufs is not in this kernel")
    assert "\n" not in reason and "storage-driver=aufs: aufs is not in" in r.stdout + r.stderr
    assert not qemu_pids(os.environ["AUFS_HARNESS_STATE"]), "QEMU left running after the run"
    fact.append(f"docker scenario on the stock bullseye kernel: failed: {reason}")


class _Grid(HTMLParser):
    """index.html's grid: the cells of its header, and per module row the class
    of each cell's square."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0  # tables open inside and including the grid
        self.head: list[str] = []
        self.rows: dict[str, list[str]] = {}
        self._where = ""  # "head" or a module row's "module"/"squares"
        self._row: list[str] = []
        self._module = ""
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table" and (self.depth or found.get("id") == "grid"):
            self.depth += 1
        if self.depth != 1:
            return
        if tag == "thead":
            self._where = "head"
        elif tag == "tr" and found.get("class") == "group":
            self._where, self._row, self._text = "module", [], ""
        elif tag == "td" and self._where == "squares":
            self._row.append(str(found.get("class")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.depth:
            self.depth -= 1
        if self.depth != 1:
            return
        if tag == "th" and self._where == "head":
            self.head.append(self._text.strip())
            self._text = ""
        elif tag == "th" and self._where == "module":
            self._module, self._where = self._text.strip("▸ \n"), "squares"
        elif tag == "thead" or (tag == "tr" and self._where == "squares"):
            if self._where == "squares":
                self.rows[self._module] = self._row
            self._where = ""

    def handle_data(self, data: str) -> None:
        if self.depth == 1 and self._where in ("head", "module"):
            self._text += data


@dataclass(frozen=True)
class MatrixRun:
    root: Path  # the results directory
    returncode: int
    log: str  # matrix run's progress lines
    seconds: float


@pytest.fixture(scope="module")
def docker_matrix(tmp_path_factory: pytest.TempPathFactory) -> MatrixRun:
    """The shipped docker matrix (harness/matrices/docker.toml) run once through
    `aufs-harness matrix run`, in a state directory of its own."""
    if not (AUFS_SRC and FIXUP_DIR):
        pytest.skip(
            "the docker cell needs AUFS_HARNESS_AUFS_SRC (aufs-standalone) and "
            "AUFS_HARNESS_FIXUP_DIR (the fix-ups for bullseye's 5.10.223)"
        )
    tmp = tmp_path_factory.mktemp("docker-matrix")
    state = tmp / "state"
    argv = [sys.executable, "-m", "harness.cli", "matrix", "run", str(DOCKER_MATRIX),
            "--results", str(tmp / "results"), "--quiet", "--no-history"]  # fmt: skip
    t0 = time.monotonic()
    with (tmp / "progress.log").open("w+") as progress:
        # kernel (20+ min cold) + image + Docker checks + the copy-up bench
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=progress, text=True,
                           timeout=7200, check=False,
                           env={**os.environ, "AUFS_HARNESS_STATE": str(state)})  # fmt: skip
        progress.seek(0)
        log_text = progress.read()
    assert not qemu_pids(str(state)), "QEMU left running after the matrix run"
    (root,) = {p.parent.resolve() for p in (tmp / "results").glob("*/report.json")}
    return MatrixRun(root, r.returncode, log_text, time.monotonic() - t0)


def test_docker_matrix_cell_passes_every_docker_check(
    docker_matrix: MatrixRun, fact: list[str]
) -> None:
    """The docker cell passes every Docker check, its report is schema-valid,
    index.html's grid has the cell, and the copy-up table is in both."""
    root, log_text = docker_matrix.root, docker_matrix.log
    assert "Traceback" not in log_text
    report = json.loads((root / "report.json").read_text())
    jsonschema.validate(report, schema.load_schema(schema.REPORT))
    (cell,) = report["targets"]
    assert cell["target"] == CELL and cell["extra"]["cell"]["scenario"] == "docker"
    failing = [(c["nodeid"], c["outcome"], c["message"][:200]) for c in cell["checks"]
               if c["outcome"] != "passed"]  # fmt: skip
    assert docker_matrix.returncode == 0 and cell["verdict"] == "passed", (
        cell["reason"], failing, log_text[-3000:])  # fmt: skip
    names = {c["nodeid"].split("::")[1].split("[")[0] for c in cell["checks"]}
    assert len(names) >= 10 and all("test_docker_engine" in c["nodeid"] for c in cell["checks"])
    docker = cell["extra"]["docker"]
    assert docker["driver"] == "aufs"
    assert ["Dirperm1 Supported", "true"] in docker["driver_status"]
    rows = cell["extra"]["docker_copy_up"]["rows"]
    assert [row["size_mib"] for row in rows] == [1, 64, 512]
    for row in rows:  # a whole-file copy-up, once
        assert row["copied_bytes"] >= row["size_mib"] * 2**20 and row["copied_again_bytes"] == 0
    grid = _Grid()
    page = (root / "index.html").read_text()
    grid.feed(page)
    assert grid.head == ["module", CELL], grid.head
    assert grid.rows["test_docker_engine"] == ["g k-passed"], grid.rows
    assert "<h3>Copy-up in the guest</h3>" in page and "<td>512 MiB</td>" in page
    stages = {s["name"]: round(s["seconds"]) for s in cell["stages"]}
    fact.append(
        f"docker matrix cell {CELL} on {cell['kernel_release']}: {len(cell['checks'])} checks "
        f"passed, matrix run {docker_matrix.seconds:.0f}s (stages, s: {stages}); "
        + scenarios.copy_up_table(cell["extra"]["docker_copy_up"]).replace("\n", " | ")
    )


def cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


def test_repro_and_vm_up_from_the_docker_cell_start_dockerd(
    docker_matrix: MatrixRun, tmp_path: Path, fact: list[str]
) -> None:
    """repro of one Docker check and vm up --from of the docker cell boot its
    kernel and image from the store and start dockerd with the aufs driver."""
    t0 = time.monotonic()
    # the first Docker check: it ran even when a later one hung
    r = cli("repro", str(docker_matrix.root), CELL, "test_docker_info_reports_aufs_driver",
            "--results", str(tmp_path))  # fmt: skip
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    assert "aufs.ko from the store" in r.stdout  # kernel and image as the cell had them
    assert re.search(r"^image [0-9a-f]{24} from the store$", r.stdout, re.MULTILINE), r.stdout
    assert "test_docker_info_reports_aufs_driver" in r.stdout and "-> reproduced" in r.stdout
    (again,) = json.loads(next(tmp_path.glob("*/report.json")).read_text())["targets"]
    assert [s["name"] for s in again["stages"]] == ["boot", "load", "docker", "suite"]
    repro_seconds = time.monotonic() - t0
    t0 = time.monotonic()
    up = cli("vm", "up", "--name", "docker-from", "--from", str(docker_matrix.root), CELL)
    try:
        assert up.returncode == 0, up.stderr[-2000:]
        assert "running, storage driver aufs" in up.stdout, up.stdout
        info = cli("vm", "ssh", "--name", "docker-from", "--", "docker", "info", "--format",
                   "{{.Driver}} {{.KernelVersion}}", timeout=120)  # fmt: skip
        assert info.returncode == 0 and info.stdout.split()[0] == "aufs", info
    finally:
        assert cli("vm", "down", "--name", "docker-from", timeout=120).returncode == 0
    assert not qemu_pids(os.environ["AUFS_HARNESS_STATE"]), "QEMU left running"
    fact.append(
        f"docker cell: repro of test_docker_info_reports_aufs_driver reproduced in "
        f"{repro_seconds:.0f}s; vm up --from with dockerd ({info.stdout.strip()}) in "
        f"{time.monotonic() - t0:.0f}s"
    )
