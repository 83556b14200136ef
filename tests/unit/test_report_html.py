"""harness/report: the page model (grid, categories, evidence, links) and its HTML."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.cli import main
from harness.commands.common import finish
from harness.report.html import render, render_reports
from harness.report.model import (
    FIXED,
    KNOWN,
    build_page,
    expected_observed,
    href,
    patch_rows,
)
from harness.results import CheckResult
from tests.unit.report_samples import (
    AUFS,
    BUILD,
    FAILED_DETAILS,
    MTIME,
    STOCK,
    XATTR,
    aufs_cell,
    stock_cell,
    write_run,
)


def test_the_grid_has_a_row_per_module_and_a_column_per_cell(tmp_path: Path) -> None:
    page = build_page([aufs_cell(), stock_cell()], tmp_path)
    assert [g.module for g in page.groups] == ["test_copy_up", "test_links", "test_options"]
    copy_up = page.groups[0]
    # aufs: one new failure, one known failure; stock: the overlay check was skipped
    assert copy_up.cells[0].counts == {"failed": 1, KNOWN: 1}
    assert copy_up.cells[0].worst == "failed"
    assert copy_up.cells[1].worst == "skipped"
    assert page.groups[2].cells[1].worst == ""  # no test_options check on the stock cell
    assert copy_up.worst == "failed"


def test_known_failures_are_apart_and_a_fixed_one_needs_a_look(tmp_path: Path) -> None:
    page = build_page([aufs_cell()], tmp_path)
    assert [v.key for v in page.known] == ["test_copy_up::" + MTIME.split("::")[1]]
    assert [v.category for v in page.problems] == ["hung", "failed"]  # worst first
    fixed = aufs_cell(mtime="passed")
    fixed.extra["fixed"] = [MTIME]
    page = build_page([fixed], tmp_path)
    assert [v.category for v in page.problems] == ["hung", "failed", FIXED]
    assert page.cells[0].counts == {"hung": 1, "failed": 1, FIXED: 1, "passed": 1}


def test_expected_and_observed_come_from_the_suites_explain_lines() -> None:
    c = CheckResult(XATTR, "failed", details=FAILED_DETAILS)
    assert expected_observed(c) == (
        "RW/a keeps RO/a's mtime",
        "st_mtime_ns: RW 1796019359662634000 vs RO 1609556645123456789",
    )
    assert expected_observed(CheckResult(XATTR, "failed", message="boom")) == ("", "")


def test_links_are_relative_inside_the_results_directory(tmp_path: Path) -> None:
    root = tmp_path / "20261130-060727"
    (root / "cell").mkdir(parents=True)
    (root / "cell" / "console.log").write_text("x")
    assert href(root / "cell" / "console.log", root) == "cell/console.log"
    # recorded under another base (the directory was copied): still relative
    assert href("/elsewhere/20261130-060727/cell/console.log", root) == "cell/console.log"
    assert href("/cache/build.log", root) == "file:///cache/build.log"


def test_patch_rows_list_each_file_with_its_hunks() -> None:
    rows = patch_rows(BUILD)
    assert [(r.name, r.status) for r in rows] == [
        ("aufs5-kbuild.patch", "clean"),
        ("aufs5-base.patch", "offset"),
    ]
    assert rows[0].files == []
    assert rows[1].files == [
        "fs/dcache.c: hunk 1 offset +5",
        "include/linux/fs.h: hunk 1 offset +33, hunk 2 offset +98",
    ]
    failed = {"name": "p", "status": "failed", "summary": "p: FAILED: fs/a.c: hunk 2 of 3 FAILED"}
    assert patch_rows({"patches": [failed]})[0].files == ["fs/a.c: hunk 2 of 3 FAILED"]


class _Collect(HTMLParser):
    """Tags with their ids and every link's href, from rendered HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if tag == "a" and found.get("href"):
            self.hrefs.append(str(found["href"]))
        self.scripts += tag == "script"


def test_the_page_has_the_grid_cells_evidence_and_relative_links(tmp_path: Path) -> None:
    results = write_run(tmp_path, "run", [aufs_cell(), stock_cell()])
    text = render(build_page([aufs_cell(), stock_cell()], results.root))
    parsed = _Collect()
    parsed.feed(text)
    assert {"grid", "cells", "problems", "known", f"cell-{AUFS}", f"cell-{STOCK}"} <= parsed.ids
    assert f"{AUFS}/console.log" in parsed.hrefs
    assert "file:///cache/kmod/artifacts/abc/build.log" in parsed.hrefs
    assert all(h.startswith(("#", "file://")) or not h.startswith("/") for h in parsed.hrefs)
    assert parsed.scripts == 1
    assert "st_mtime_ns: RW 1796019359662634000" in text  # observed, for the failed check
    assert "include/linux/fs.h: hunk 1 offset +33" in text  # per patch and hunk
    assert "parent mtime (aufs#1)" in text  # the known failure's reason
    assert "http://" not in text and "https://" not in text  # self-contained


def test_check_output_is_escaped(tmp_path: Path) -> None:
    cell = stock_cell()
    cell.checks[0] = CheckResult(cell.checks[0].nodeid, "failed", message="<script>x</script>")
    text = render_reports([cell], tmp_path)
    assert "<script>x</script>" not in text
    assert "&lt;script&gt;x&lt;/script&gt;" in text


def test_a_plain_run_without_cell_axes_or_build_renders(tmp_path: Path) -> None:
    cell = stock_cell()
    cell.extra = {}
    text = render_reports([cell], tmp_path)
    assert STOCK in text and 'id="grid"' in text


def test_report_html_writes_index_html_beside_report_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = write_run(tmp_path, "run", [aufs_cell(), stock_cell()])
    assert main(["report", "html", str(results.root)]) == 0
    assert (results.root / "index.html").read_text().count('id="grid"') == 1
    assert capsys.readouterr().out.strip() == f"report: {results.root / 'index.html'}"
    assert main(["report", "html", str(tmp_path / "missing")]) == 2


def test_cell_axes_read_as_words(tmp_path: Path) -> None:
    cell = aufs_cell()
    cell.extra["cell"] = {"drivers": ["aufs", "overlay"], "timeouts": {"check": 60}, "x": None}
    text = render_reports([cell], tmp_path)
    assert "<dd>aufs, overlay</dd>" in text and "<dd>check=60</dd>" in text
    assert "<dd>-</dd>" in text


def test_every_run_writes_its_html_report_beside_report_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert finish([stock_cell()], tmp_path) == 0
    assert (tmp_path / "index.html").is_file() and (tmp_path / "report.json").is_file()
    assert str(tmp_path / "index.html") in capsys.readouterr().out


def test_a_docker_cell_shows_dockerd_and_the_copy_up_table(tmp_path: Path) -> None:
    cell = aufs_cell()
    cell.extra["docker"] = {
        "ok": True, "reason": "", "driver": "aufs", "server_version": "20.10.5+dfsg1",
        "cgroup_driver": "cgroupfs", "driver_status": [["Dirperm1 Supported", "true"]],
    }  # fmt: skip
    cell.extra["docker_copy_up"] = {"rows": [
        {"size_mib": 64, "first_write_s": 0.896, "second_write_s": 0.00006,
         "volume_write_s": 0.00002, "copied_bytes": 64 * 2**20, "copied_again_bytes": 0},
    ]}  # fmt: skip
    text = render_reports([cell], tmp_path)
    assert "storage driver aufs, cgroup driver cgroupfs" in text
    assert "<dt>Dirperm1 Supported</dt><dd>true</dd>" in text
    row = "<tr><td>64 MiB</td><td>896.0 ms</td><td>0.060 ms</td><td>0.020 ms</td>"
    assert row + "<td>64.0 MiB, then 0.0 MiB</td></tr>" in text
    assert "Copy-up" not in render_reports([aufs_cell()], tmp_path)  # only a docker cell's
