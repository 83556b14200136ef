"""Results of one target: plain data, written as JSON and JUnit XML, shown as a table.

Every outcome a user can meet is a value here, so nothing is ever lost to a
traceback: a check that hung, a VM that died (with its console log), a patch
that failed to apply.
"""

from __future__ import annotations

import io
import json
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.core.errors import EXIT_ERROR, EXIT_FAILED, EXIT_OK, interruption
from harness.guest.kmsg import CheckFacts

PASSED, FAILED, SKIPPED, ERROR, HUNG = "passed", "failed", "skipped", "error", "hung"


@dataclass
class CheckResult:
    nodeid: str
    outcome: str  # passed | failed | skipped | error | hung
    duration: float = 0.0
    message: str = ""  # one line
    details: str = ""  # the full report
    kernel: CheckFacts = field(default_factory=CheckFacts)  # recorded by the guest
    # The baseline entry that expects this outcome ("reason (reference)"), "" when
    # none does: a known failure shows as known and does not turn its cell red.
    known: str = ""

    @property
    def name(self) -> str:
        return self.nodeid.split("::", 1)[-1]

    @property
    def module(self) -> str:
        return self.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")


@dataclass
class Stage:
    """One step of the pipeline (image, build, boot, load, suite) and how it went."""

    name: str
    status: str  # ok | cached | failed | error | skipped
    seconds: float = 0.0
    detail: str = ""


@dataclass
class TargetReport:
    target: str  # e.g. "debian:bookworm stock"
    verdict: str = "pending"  # passed | failed | error
    reason: str = ""  # one line when not passed
    kernel_release: str = ""
    accel: str = ""
    console_log: str = ""
    started: float = field(default_factory=time.time)
    seconds: float = 0.0
    stages: list[Stage] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> Counter[str]:
        return Counter(c.outcome for c in self.checks)

    def settle(self) -> None:
        """Derive the verdict from the checks, unless a stage already decided it."""
        if self.verdict in (FAILED, ERROR):
            return
        counts = self.counts()
        if counts[HUNG] or counts[FAILED] or counts[ERROR]:
            self.verdict = FAILED
            self.reason = self.reason or ", ".join(
                f"{counts[k]} {k}" for k in (FAILED, ERROR, HUNG) if counts[k]
            )
        elif not self.checks or counts[PASSED] == 0:
            self.verdict = ERROR
            self.reason = self.reason or "no check ran"
        else:
            self.verdict = PASSED

    def interrupted(self, exc: BaseException) -> None:
        """Ctrl-C, SIGTERM or a bug ended the run: the report says which, and in
        which stage ("interrupted by SIGINT (Ctrl-C) in the boot stage")."""
        where = next((s.name for s in reversed(self.stages) if s.status == "error"), "")
        self.verdict, self.reason = (
            ERROR,
            interruption(exc) + (f" in the {where} stage" if where else ""),
        )

    def exit_code(self) -> int:
        return {PASSED: EXIT_OK, FAILED: EXIT_FAILED}.get(self.verdict, EXIT_ERROR)


def exit_code(reports: list[TargetReport]) -> int:
    codes = [r.exit_code() for r in reports]
    if EXIT_ERROR in codes:
        return EXIT_ERROR
    return EXIT_FAILED if EXIT_FAILED in codes else EXIT_OK


def to_json(reports: list[TargetReport]) -> str:
    """report.json's text: {"version": 1, "targets": [every report as plain data]}."""
    return json.dumps({"version": 1, "targets": [asdict(r) for r in reports]}, indent=2)


def read_json(path: Path) -> list[TargetReport]:
    data = json.loads(path.read_text())
    reports = []
    for raw in data["targets"]:
        raw["stages"] = [Stage(**s) for s in raw["stages"]]
        raw["checks"] = [_check_from_dict(c) for c in raw["checks"]]
        reports.append(TargetReport(**raw))
    return reports


def _check_from_dict(raw: dict[str, Any]) -> CheckResult:
    kernel = CheckFacts.from_dict(raw.pop("kernel", {}))
    return CheckResult(**raw, kernel=kernel)


def junit_xml(reports: list[TargetReport]) -> bytes:
    """junit.xml's bytes: one testsuite per target, its stages and checks as testcases."""
    suites = ET.Element("testsuites")
    for r in reports:
        counts = r.counts()
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=r.target,
            tests=str(len(r.checks) + len(r.stages)),
            failures=str(counts[FAILED] + counts[HUNG]),
            errors=str(counts[ERROR]),
            skipped=str(counts[SKIPPED]),
            time=f"{r.seconds:.3f}",
        )
        props = ET.SubElement(suite, "properties")
        for k, v in (
            ("kernel", r.kernel_release),
            ("accel", r.accel),
            ("verdict", r.verdict),
            ("console_log", r.console_log),
        ):
            ET.SubElement(props, "property", name=k, value=v)
        for st in r.stages:  # stages are testcases too, so a build failure shows in CI
            _stage_case(suite, st)
        for c in r.checks:
            _check_case(suite, c)
    out = io.BytesIO()
    ET.ElementTree(suites).write(out, encoding="utf-8", xml_declaration=True)
    return out.getvalue()


def _stage_case(suite: ET.Element, st: Stage) -> None:
    case = ET.SubElement(
        suite, "testcase", classname="stage", name=st.name, time=f"{st.seconds:.3f}"
    )
    if st.status in ("failed", "error"):
        el = ET.SubElement(
            case,
            "failure" if st.status == "failed" else "error",
            message=st.detail.splitlines()[0] if st.detail else st.status,
        )
        el.text = st.detail
    elif st.status == "skipped":
        ET.SubElement(case, "skipped", message=st.detail)


def _check_case(suite: ET.Element, c: CheckResult) -> None:
    case = ET.SubElement(
        suite, "testcase", classname=c.module, name=c.name, time=f"{c.duration:.3f}"
    )
    if c.outcome in (FAILED, HUNG):
        el = ET.SubElement(case, "failure", message=c.message or c.outcome)
        el.text = c.details
    elif c.outcome == ERROR:
        el = ET.SubElement(case, "error", message=c.message or "error")
        el.text = c.details
    elif c.outcome == SKIPPED:
        ET.SubElement(case, "skipped", message=c.message)
