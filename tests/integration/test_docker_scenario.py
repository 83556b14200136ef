"""The docker scenario end to end: docker.io 20.10.5 on a bullseye image, dockerd
with --storage-driver=aufs, on the stock kernel (refused, named) and on a built
aufs kernel (every Docker check passes, copy-up measured).

The aufs test runs the shipped docker matrix (harness/matrices/docker.toml)
through `aufs-harness matrix run`; it needs AUFS_HARNESS_AUFS_SRC (an
aufs-standalone URL or clone) and AUFS_HARNESS_FIXUP_DIR (the fix-ups for
bullseye's 5.10.223), and is skipped with the reason without them. The first run
builds the docker image (~3 min) and the kernel with the docker fragment (~20 min
cold on 2 cores); later runs reuse both, and the cell then takes ~10 min.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


def test_docker_matrix_cell_passes_every_docker_check(tmp_path: Path, fact: list[str]) -> None:
    """The shipped docker matrix (harness/matrices/docker.toml) through `matrix
    run`: the docker cell passes every Docker check, its report is schema-valid,
    index.html's grid has the cell, and the copy-up table is in both."""
    if not (AUFS_SRC and FIXUP_DIR):
        pytest.skip(
            "the docker cell needs AUFS_HARNESS_AUFS_SRC (aufs-standalone) and "
            "AUFS_HARNESS_FIXUP_DIR (the fix-ups for bullseye's 5.10.223)"
        )
    argv = [sys.executable, "-m", "harness.cli", "matrix", "run", str(DOCKER_MATRIX),
            "--results", str(tmp_path), "--quiet", "--no-history"]  # fmt: skip
    t0 = time.monotonic()
    with (tmp_path / "progress.log").open("w+") as progress:
        # kernel (20+ min cold) + image + Docker checks + the copy-up bench
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=progress, text=True,
                           timeout=5400, check=False)  # fmt: skip
        progress.seek(0)
        log_text = progress.read()
    seconds = time.monotonic() - t0
    assert "Traceback" not in log_text
    (root,) = {p.parent.resolve() for p in tmp_path.glob("*/report.json")}  # and latest/
    report = json.loads((root / "report.json").read_text())
    jsonschema.validate(report, schema.load_schema(schema.REPORT))
    (cell,) = report["targets"]
    assert cell["target"] == CELL and cell["extra"]["cell"]["scenario"] == "docker"
    failing = [(c["nodeid"], c["outcome"], c["message"][:200]) for c in cell["checks"]
               if c["outcome"] != "passed"]  # fmt: skip
    assert r.returncode == 0 and cell["verdict"] == "passed", (cell["reason"], failing,
                                                                log_text[-3000:])  # fmt: skip
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
    assert not qemu_pids(os.environ["AUFS_HARNESS_STATE"]), "QEMU left running after the run"
    stages = {s["name"]: round(s["seconds"]) for s in cell["stages"]}
    fact.append(
        f"docker matrix cell {CELL} on {cell['kernel_release']}: {len(cell['checks'])} checks "
        f"passed in {seconds:.0f}s (stages, s: {stages}); "
        + scenarios.copy_up_table(cell["extra"]["docker_copy_up"]).replace("\n", " | ")
    )
