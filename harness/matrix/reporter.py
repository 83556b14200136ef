"""Live progress of a matrix run: one line per event (matrix started, cell
started, stage started/ended, cell finished with its counts, matrix finished),
each with the elapsed time, through logging.

Two shapes: for a terminal, a readable line ("[  41.2s] [2/3] trixie-stock-overlay:
boot ok in 8.1s"); with --quiet or when stderr is not a terminal (CI), a plain
key=value line ("matrix event=stage cell=trixie-stock-overlay stage=boot
status=ok seconds=8.1 elapsed=41.2") that a log reader can grep.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from harness.matrix.spec import Cell, Matrix
from harness.results import TargetReport

log = logging.getLogger("aufs-harness.matrix")


def counts_text(report: TargetReport) -> str:
    """ "648 passed, 13 failed (6 known), 35 skipped": the cell's check counts."""
    counts: Counter[str] = report.counts()
    known: Counter[str] = Counter(c.outcome for c in report.checks if c.known)
    parts = []
    for outcome in ("passed", "failed", "error", "hung", "skipped"):
        if counts[outcome]:
            more = f" ({known[outcome]} known)" if known[outcome] else ""
            parts.append(f"{counts[outcome]} {outcome}{more}")
    return ", ".join(parts) or "no checks"


@dataclass
class Reporter:
    """Writes the progress lines; `plain` picks the key=value shape."""

    plain: bool
    total: int = 0
    t0: float = field(default_factory=time.monotonic)
    index: dict[str, int] = field(default_factory=dict)  # cell name -> 1-based position

    def _emit(self, event: str, cell: str, human: str, **kv: object) -> None:
        elapsed = time.monotonic() - self.t0
        if self.plain:
            fields = " ".join(f"{k}={_value(v)}" for k, v in kv.items())
            log.info("matrix event=%s cell=%s %s elapsed=%.1f", event, cell, fields, elapsed)
        else:
            where = f"[{self.index.get(cell, 0)}/{self.total}] {cell}: " if cell != "-" else ""
            log.info("[%7.1fs] %s%s", elapsed, where, human)

    def matrix_started(self, matrix: Matrix) -> None:
        self.total = len(matrix.cells)
        self.index = {c.name: i for i, c in enumerate(matrix.cells, 1)}
        for line in matrix.left_out:
            log.warning("%s", line)
        self._emit(
            "matrix-started", "-", f"matrix {matrix.name}: {self.total} cell(s) from "
            f"{matrix.path}", matrix=matrix.name, cells=self.total,
        )  # fmt: skip

    def cell_started(self, cell: Cell) -> None:
        self._emit("cell-started", cell.name, f"started ({cell.kernel} on {cell.distro}, "
                   f"{'+'.join(cell.drivers)})", kernel=cell.kernel)  # fmt: skip

    def stage(self, report: TargetReport, name: str, status: str, seconds: float) -> None:
        if status == "started":
            self._emit("stage", report.target, f"{name} ...", stage=name, status=status)
            return
        self._emit("stage", report.target, f"{name} {status} in {seconds:.1f}s",
                   stage=name, status=status, seconds=f"{seconds:.1f}")  # fmt: skip

    def cell_finished(self, report: TargetReport) -> None:
        text = counts_text(report)
        why = f" ({report.reason})" if report.reason else ""
        self._emit("cell-finished", report.target,
                   f"{report.verdict.upper()} in {report.seconds:.0f}s: {text}{why}",
                   verdict=report.verdict, seconds=f"{report.seconds:.1f}", checks=text,
                   reason=report.reason)  # fmt: skip

    def matrix_finished(self, reports: list[TargetReport], code: int) -> None:
        verdicts: Counter[str] = Counter(r.verdict for r in reports)
        text = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
        self._emit("matrix-finished", "-", f"matrix done: {text}; exit {code}",
                   verdicts=text, exit=code)  # fmt: skip


def _value(v: object) -> str:
    text = str(v)
    return repr(text) if (" " in text or not text) else text
