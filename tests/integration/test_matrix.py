"""The matrix on real QEMU: a cell whose patch fails, a cell whose kernel cannot
boot and a cell with a check that hangs each get their verdict while the other
cells complete, nothing is left running; and the bullseye aufs baseline keeps
the known parent-mtime failures green, while a flipped expectation is red.

The patch-failed cell and the aufs cell need AUFS_HARNESS_AUFS_SRC (the aufs
cell also AUFS_HARNESS_FIXUP_DIR); without them those parts skip and say why.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import jsonschema
import pytest

from harness.matrix import baseline, schema, spec
from harness.matrix.reporter import Reporter
from harness.matrix.run import run_matrix
from harness.matrix.verdict import apply_baseline, matrix_exit_code
from harness.results import TargetReport
from harness.resultsdir import ResultsDir
from tests.integration.conftest import qemu_pids
from tests.integration.test_hang import fake_suite
from vm.image import Image

AUFS_SRC = os.environ.get("AUFS_HARNESS_AUFS_SRC", "")
FIXUP_DIR = os.environ.get("AUFS_HARNESS_FIXUP_DIR", "")
SHIPPED_BASELINE = Path(__file__).parents[2] / "harness" / "baselines" / "bullseye-aufs5.10.toml"
MTIME = "suite/test_copy_up.py::test_copy_up_keeps_parent_directory_mtimes"

FAULTS = """
    version = 1
    name = "faults"
    [defaults]
    workers = 1
    fresh_vms = 0
    timeouts = { check = 20, boot = 120 }
    [[include]]
    name = "completes"
    suite_args = ["-k", "before"]
    [[include]]
    name = "hangs"
    [[include]]
    name = "cannot-boot"
    kernel_cmdline = ["root=/dev/nonexistent", "rootdelay=1"]
"""
PATCH_FAILS = """
    [[include]]
    name = "patch-fails"
    kernel = "debian:bookworm"
    aufs_ref = "aufs6.1"
    drivers = ["aufs"]
"""


def run(path: Path, tmp_path: Path, known: Path | None = None) -> tuple[list[TargetReport], Path]:
    """Run the matrix at `path`; no QEMU may be left; the report is schema-valid."""
    results = ResultsDir.new(tmp_path / "results")
    base = baseline.load(known) if known else baseline.Baseline(None)
    reports = run_matrix(spec.load(path), base, results, Reporter(plain=True))
    assert not qemu_pids(os.environ["AUFS_HARNESS_STATE"]), "QEMU left running"
    jsonschema.validate(
        json.loads(results.report_json.read_text()), schema.load_schema(schema.REPORT)
    )
    return reports, results.root


def test_each_faulty_cell_gets_its_verdict_and_the_others_complete(
    bookworm: Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fact: list[str]
) -> None:
    fake_suite(tmp_path, monkeypatch, """
        import time

        def test_before():
            pass

        def test_hangs():
            time.sleep(3600)
    """)  # fmt: skip
    path = tmp_path / "faults.toml"
    path.write_text(textwrap.dedent(FAULTS) + (textwrap.dedent(PATCH_FAILS) if AUFS_SRC else ""))
    reports, root = run(path, tmp_path)
    got = {r.target: r for r in reports}
    assert got["completes"].verdict == "passed", got["completes"].reason
    assert got["hangs"].verdict == "failed"
    assert got["hangs"].reason.startswith("suite/test_hang.py::test_hangs hung"), got[
        "hangs"
    ].reason
    assert got["cannot-boot"].verdict == "error"
    assert "/dev/nonexistent" in got["cannot-boot"].reason, got["cannot-boot"].reason
    if AUFS_SRC:
        assert got["patch-fails"].verdict == "failed"
        assert got["patch-fails"].reason.startswith("patch-failed"), got["patch-fails"].reason
    assert matrix_exit_code(reports) == 2  # a boot that cannot succeed is an error
    for name in got:
        assert (root / name / "junit.xml").exists()
    fact.append(
        "matrix faults: " + "; ".join(f"{r.target}: {r.verdict} ({r.reason[:90]})" for r in reports)
    )
    if not AUFS_SRC:
        pytest.skip("the patch-failed cell needs AUFS_HARNESS_AUFS_SRC (the rest passed)")


def aufs_cell(tmp_path: Path) -> Path:
    if not (AUFS_SRC and FIXUP_DIR):
        pytest.skip("the aufs cell needs AUFS_HARNESS_AUFS_SRC and AUFS_HARNESS_FIXUP_DIR")
    path = tmp_path / "aufs.toml"
    path.write_text(textwrap.dedent("""
        version = 1
        name = "bullseye-aufs-baseline"
        [[include]]
        name = "bullseye-{aufs_ref}-tmpfs"
        kernel = "debian:bullseye=5.10.223-1"
        aufs_ref = "aufs5.10.140"
        fixup_dir = "${AUFS_HARNESS_FIXUP_DIR}"
        distro = "bullseye"
        drivers = ["aufs"]
        branch_fs = ["tmpfs"]
        suite_args = ["-k", "copy_up"]
    """))  # fmt: skip
    return path


def test_the_bullseye_baseline_keeps_the_known_failures_green_and_a_flip_is_red(
    tmp_path: Path, fact: list[str]
) -> None:
    path = aufs_cell(tmp_path)
    (report,), _ = run(path, tmp_path / "known", SHIPPED_BASELINE)
    known = [c.nodeid for c in report.checks if c.known]
    assert known and all(n.startswith(f"{MTIME}[aufs-tmpfs-") for n in known), known
    assert report.verdict == "passed", report.reason
    # Flip one expectation and judge the same run again: it is red.
    flipped = tmp_path / "flipped.toml"
    text = SHIPPED_BASELINE.read_text()
    flipped.write_text(text.replace('outcomes = ["failed"]', 'outcomes = ["error"]'))
    apply_baseline(report, spec.load(path).cells[0], baseline.load(flipped))
    assert report.verdict == "failed" and not any(c.known for c in report.checks)
    fact.append(f"aufs baseline: {len(known)} known, green; flipped: {report.reason}")
