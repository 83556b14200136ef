"""Where a run's results go: the one module that decides the layout, and
writes every file it owns atomically (harness.core.atomic).

    <base>/<YYYYmmdd-HHMMSS>/      ResultsDir (<base>/latest links to the newest)
        report.json, junit.xml     every target of the run
        <target-slug>/             TargetDir, e.g. debian-bookworm-stock/
            console.log, hang-evidence.txt, pytest.log, events.jsonl   (VM 1)
            vm-N/                  the same files for the Nth VM (fresh VMs, N >= 2)

pytest.log and events.jsonl are streamed while the suite runs (so a killed run
keeps them), hence not atomic; this module only names them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.core.atomic import write_atomic
from harness.results import TargetReport, junit_xml, to_json

REPORT_JSON = "report.json"
JUNIT_XML = "junit.xml"
CONSOLE_LOG = "console.log"
HANG_EVIDENCE = "hang-evidence.txt"
PYTEST_LOG = "pytest.log"
EVENTS_LOG = "events.jsonl"
LATEST = "latest"


def slug(label: str) -> str:
    """A target label as a directory name: "debian:bookworm stock" -> "debian-bookworm-stock"."""
    return label.replace(":", "-").replace(" ", "-").replace("/", "-")


@dataclass(frozen=True)
class VMDir:
    """The files of one VM's suite run (VM 1's live in the target directory itself)."""

    path: Path

    @property
    def console_log(self) -> Path:
        return self.path / CONSOLE_LOG

    @property
    def hang_evidence(self) -> Path:
        return self.path / HANG_EVIDENCE

    @property
    def pytest_log(self) -> Path:
        return self.path / PYTEST_LOG

    @property
    def events(self) -> Path:
        return self.path / EVENTS_LOG

    def save_console(self, console: Path) -> Path:
        """Copy the VM's serial console log here; returns where it went."""
        write_atomic(self.console_log, console.read_bytes())
        return self.console_log

    def save_hang_evidence(self, text: str) -> Path:
        write_atomic(self.hang_evidence, text)
        return self.hang_evidence


@dataclass(frozen=True)
class TargetDir:
    """One target's directory: VM 1's files, and vm-N/ for each fresh VM."""

    path: Path

    def vm(self, number: int) -> VMDir:
        """The directory of VM `number` (1-based), created if missing."""
        where = VMDir(self.path if number == 1 else self.path / f"vm-{number}")
        where.path.mkdir(parents=True, exist_ok=True)
        return where


@dataclass(frozen=True)
class ResultsDir:
    """One run's results directory (absolute: the suite's controller runs elsewhere)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", self.root.resolve())

    @classmethod
    def new(cls, base: Path) -> ResultsDir:
        """A fresh <base>/<timestamp>/ directory, with <base>/latest pointing at it
        (unless `latest` is a real file or directory of the user's)."""
        base = base.resolve()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (base / stamp).mkdir(parents=True, exist_ok=True)
        latest = base / LATEST
        if latest.is_symlink() or not latest.exists():
            latest.unlink(missing_ok=True)
            latest.symlink_to(stamp)
        return cls(base / stamp)

    @property
    def report_json(self) -> Path:
        return self.root / REPORT_JSON

    @property
    def junit_xml(self) -> Path:
        return self.root / JUNIT_XML

    def target(self, label: str) -> TargetDir:
        """The directory of the target labelled `label`, created if missing."""
        where = TargetDir(self.root / slug(label))
        where.path.mkdir(parents=True, exist_ok=True)
        return where

    def write(self, reports: list[TargetReport]) -> None:
        """Write report.json and junit.xml for `reports`, each atomically."""
        write_atomic(self.report_json, to_json(reports))
        write_atomic(self.junit_xml, junit_xml(reports))

    @contextmanager
    def kept_on_interrupt(
        self,
        reports: list[TargetReport],
        before: Callable[[BaseException], None] | None = None,
    ) -> Iterator[None]:
        """Whatever ends the body early (Ctrl-C, SIGTERM, an error) the reports
        so far are written before it goes on up; `before(exc)` may complete
        them first."""
        try:
            yield
        except BaseException as exc:
            if before is not None:
                before(exc)
            self.write(reports)
            raise
