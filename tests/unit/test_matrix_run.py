"""Running a matrix (run_target faked): one report per cell, schema-valid,
per-cell JUnit, a cell's failure does not stop the others, Ctrl-C marks the
cells not run, progress lines."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import jsonschema
import pytest

from harness.core.errors import UserError
from harness.matrix import run as matrix_run
from harness.matrix import schema, spec
from harness.matrix.baseline import Baseline, Entry
from harness.matrix.reporter import Reporter
from harness.results import CheckResult, TargetReport, read_json
from harness.resultsdir import ResultsDir
from harness.runner import RunOptions
from harness.targets import Target

MATRIX = """
    version = 1
    name = "t"
    [[include]]
    name = "{distro}-stock"
    vary.distro = ["bookworm", "trixie", "bullseye"]
    [[include]]
    name = "aufs"
    kernel = "debian:bullseye=5.10.223-1"
    aufs_src = "https://example.org/aufs-standalone.git"
    drivers = ["aufs"]
    suite_args = ["-k", "copy_up"]
    kernel_cmdline = ["panic=1"]
    timeouts = { cell = 600 }
"""
MTIME = "suite/test_copy_up.py::test_copy_up_keeps_parent_directory_mtimes[aufs-tmpfs]"


def fake_run_target(
    target: Target, opts: RunOptions, sink: list[TargetReport] | None = None
) -> TargetReport:
    """bookworm passes, trixie fails a check, bullseye's kernel raises a
    UserError, the aufs cell fails only a known check."""
    assert sink is not None
    report = TargetReport(target=target.label)
    sink.append(report)
    ResultsDir(opts.results_dir).target(target.label)
    if target.distro == "bullseye" and target.build is None:
        raise UserError("kernel debian:sid: no aufs branch fits 7.0")
    if target.build is not None:
        assert target.cmdline_extra == ("panic=1",) and opts.run_timeout == 600
        assert opts.suite_args == ("--driver=aufs", "--branch-fs=tmpfs,ext4", "-k", "copy_up")
        report.checks = [CheckResult(MTIME, "failed"), CheckResult("suite/a.py::b", "passed")]
    else:
        outcome = "failed" if target.distro == "trixie" else "passed"
        report.checks = [CheckResult("suite/a.py::b", outcome, message="expected x")]
    report.settle()
    return report


@pytest.fixture
def matrix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> spec.Matrix:
    monkeypatch.setattr(matrix_run, "run_target", fake_run_target)
    path = tmp_path / "m.toml"
    path.write_text(textwrap.dedent(MATRIX))
    return spec.load(path, env={})


def run(matrix: spec.Matrix, tmp_path: Path, plain: bool = True) -> tuple[list[TargetReport], Path]:
    results = ResultsDir.new(tmp_path / "results")
    known = Entry("mtime", ("suite/test_copy_up.py::*",), "aufs keeps copy-up times", "cpup.c")
    reports = matrix_run.run_matrix(
        matrix, Baseline(Path("b.toml"), (known,)), results, Reporter(plain)
    )
    return reports, results.root


def test_every_cell_has_its_verdict_and_the_report_is_schema_valid(
    matrix: spec.Matrix, tmp_path: Path
) -> None:
    reports, root = run(matrix, tmp_path)
    verdicts = {r.target: (r.verdict, r.reason) for r in reports}
    assert verdicts == {
        "bookworm-stock": ("passed", ""),
        "trixie-stock": ("failed", "1 failed"),
        "bullseye-stock": ("error", "kernel debian:sid: no aufs branch fits 7.0"),
        "aufs": ("passed", "1 known failure(s) as the baseline expects"),
    }
    document = json.loads((root / "report.json").read_text())
    jsonschema.validate(document, schema.load_schema(schema.REPORT))
    assert schema.errors(schema.REPORT, document) == []
    back = {r.target: r for r in read_json(root / "report.json")}
    assert back["aufs"].extra["cell"]["kernel"] == "debian:bullseye=5.10.223-1"
    assert back["aufs"].extra["matrix"] == {
        "path": str(matrix.path),
        "name": "t",
        "baseline": "b.toml",
    }
    assert back["aufs"].checks[0].known == "aufs keeps copy-up times (cpup.c)"
    for name in verdicts:
        assert (root / name / "junit.xml").exists(), name
    assert (root / "junit.xml").exists()


def test_the_report_schema_rejects_a_report_without_its_cell(
    matrix: spec.Matrix, tmp_path: Path
) -> None:
    _, root = run(matrix, tmp_path)
    document = json.loads((root / "report.json").read_text())
    del document["targets"][0]["extra"]["cell"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schema.load_schema(schema.REPORT))


def test_ctrl_c_marks_the_cells_not_run_and_writes_the_report(
    matrix: spec.Matrix, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(target: Target, opts: RunOptions, sink: list[TargetReport]) -> TargetReport:
        if target.distro == "trixie":
            sink.append(TargetReport(target=target.label))
            sink[-1].interrupted(KeyboardInterrupt())
            raise KeyboardInterrupt
        return fake_run_target(target, opts, sink)

    monkeypatch.setattr(matrix_run, "run_target", interrupted)
    results = ResultsDir.new(tmp_path / "results")
    with pytest.raises(KeyboardInterrupt):
        matrix_run.run_matrix(matrix, Baseline(None), results, Reporter(True))
    document = json.loads(results.report_json.read_text())
    jsonschema.validate(document, schema.load_schema(schema.REPORT))
    reasons = {t["target"]: (t["verdict"], t["reason"]) for t in document["targets"]}
    assert reasons["bookworm-stock"] == ("passed", "")
    assert reasons["trixie-stock"] == ("error", "interrupted by SIGINT (Ctrl-C)")
    assert reasons["aufs"] == ("error", "not run: the matrix was interrupted by SIGINT (Ctrl-C)")


def test_progress_lines(
    matrix: spec.Matrix, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aufs-harness.matrix")
    run(matrix, tmp_path, plain=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "aufs-harness.matrix"]
    assert lines[0].startswith("matrix event=matrix-started cell=- matrix=t cells=4")
    assert any(
        line.startswith("matrix event=cell-finished cell=trixie-stock verdict=failed")
        and "checks='1 failed'" in line
        for line in lines
    ), lines
    caplog.clear()
    run(matrix, tmp_path, plain=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "aufs-harness.matrix"]
    assert any(
        "[4/4] aufs: PASSED in 0s: 1 passed, 1 failed (1 known)" in line for line in lines
    ), lines


def test_build_slots_and_the_cells_build() -> None:
    assert matrix_run.build_slots(2) == 1
    assert matrix_run.build_slots(16) == 4
    cell = spec.Cell(
        "c", "debian:bookworm", "bookworm", ("aufs",), ("mixed",), "/s", fixup_dir="/f"
    )
    build = matrix_run.build_spec(cell)
    assert (
        build is not None and build.branch_fs == ("ext4", "tmpfs") and str(build.fixup_dir) == "/f"
    )
    assert (
        matrix_run.build_spec(spec.Cell("s", "stock", "bookworm", ("overlay",), ("tmpfs",))) is None
    )
