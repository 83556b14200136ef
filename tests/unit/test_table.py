"""The tables printed at the end of a run (harness.table)."""

from __future__ import annotations

from pathlib import Path

from harness.results import CheckResult, TargetReport


def test_report_names_each_fresh_vm_and_where_its_logs_are(tmp_path: Path) -> None:
    from rich.console import Console

    from harness.table import print_report

    report = TargetReport(
        "debian:bullseye aufs",
        verdict="failed",
        reason="VM 1: test_n hung (and 1 more, see report.json); 2 fresh VM(s) ran the checks left",
        console_log=str(tmp_path / "t" / "console.log"),
        extra={"vms": ["VM 1: test_n hung", "VM 2: the kernel was damaged (Busy inodes)"]},
        checks=[
            CheckResult(
                "suite/test_options.py::test_n[aufs-tmpfs]", "hung", 30.0,
                "the kernel logged '[   42.0] kernel BUG at fs/aufs/hfsnotify.c:173!'",
            )
        ],
    )  # fmt: skip
    console = Console(record=True, width=300)
    print_report([report], console)
    text = console.export_text()
    assert "  VM 2: the kernel was damaged (Busy inodes)" in text
    assert f"  fresh VMs' logs: {tmp_path / 't'}/vm-N/" in text
    # rich must not eat a check's parameters or a kernel line's timestamp as markup
    assert "test_n[aufs-tmpfs]" in text and "'[   42.0] kernel BUG at" in text


def test_the_summary_counts_each_bad_outcome_apart() -> None:
    from rich.console import Console

    from harness.table import summary_table

    outcomes = ["passed", "failed", "failed", "error", "hung", "skipped"]
    report = TargetReport("cell", verdict="failed")
    report.checks = [CheckResult(f"suite/t.py::c{i}", o) for i, o in enumerate(outcomes)]
    console = Console(record=True, width=200)
    console.print(summary_table([report]))
    lines = console.export_text().splitlines()
    header = next(ln for ln in lines if ln.startswith("┃"))
    row = next(ln for ln in lines if ln.startswith("│"))
    cells = [c.strip() for c in row.split("│")[1:-1]]
    names = [c.strip() for c in header.split("┃")[1:-1]]
    counts = dict(zip(names, cells, strict=False))
    assert [counts[k] for k in ("passed", "failed", "error", "hung", "skipped")] == [
        "1", "2", "1", "1", "1",
    ]  # fmt: skip
