"""A run's reports shaped for reading: the grid (suite modules by cells), each
check's category and evidence, and each cell's build, stages and files.

Plain data only; html.py renders it. A "cell" is one TargetReport: a matrix
cell, or the one target of a plain `aufs-harness run`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.compare import check_key
from harness.results import ERROR, FAILED, HUNG, PASSED, SKIPPED, CheckResult, TargetReport
from harness.resultsdir import CONSOLE_LOG, EVENTS_LOG, HANG_EVIDENCE, PYTEST_LOG, slug

KNOWN, FIXED = "known", "fixed"
# Worst first: a grid cell takes the colour of the worst category among its checks.
# A fixed known failure (it now passes) needs a look, so it ranks above known.
CATEGORIES = (HUNG, ERROR, FAILED, FIXED, KNOWN, PASSED, SKIPPED)
RED = (HUNG, ERROR, FAILED)
VM_FILES = (CONSOLE_LOG, HANG_EVIDENCE, PYTEST_LOG, EVENTS_LOG)

_EXPECTED = re.compile(r"^E?\s*(?:\w+(?:Error|Exception): )?expected: (?P<text>.*)$")
_OBSERVED = re.compile(r"^E?\s*observed: (?P<text>.*)$")
_EVIDENCE = re.compile(r"^evidence: (?P<path>\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class Link:
    """A file to open: `href` relative to the results directory when the file is
    in it, else a file:// URI (the build log lives in the cache)."""

    label: str
    href: str


@dataclass
class CheckView:
    """One check of one cell. category: one of CATEGORIES; since: the history's
    note for a red check ("" without a history)."""

    cell: str
    key: str  # module::name, stable wherever the suite ran
    nodeid: str
    outcome: str
    category: str
    message: str
    details: str
    known: str
    expected: str
    observed: str
    kernel_lines: list[str]
    links: list[Link]
    since: str = ""

    @property
    def anchor(self) -> str:
        """An HTML id for this check in this cell."""
        return "c-" + re.sub(r"[^A-Za-z0-9_-]+", "-", f"{self.cell}--{self.key}")


@dataclass
class GridCell:
    """One module in one cell: counts per category, and the worst ("" when empty)."""

    counts: dict[str, int]
    worst: str

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class GroupRow:
    """A suite module's row of the grid, and its checks (name -> per-cell view)."""

    module: str
    cells: list[GridCell]
    checks: list[tuple[str, list[CheckView | None]]]

    @property
    def worst(self) -> str:
        return worst([c.worst for c in self.cells if c.worst])


@dataclass
class CellView:
    """One cell: its report, its checks' categories and the files it left."""

    report: TargetReport
    slug: str
    axes: dict[str, Any]
    counts: dict[str, int]
    files: list[tuple[str, list[Link]]]  # ("VM 1", [console.log, ...]) ...
    build: dict[str, Any] | None
    build_links: list[Link] = field(default_factory=list)
    patches: list[PatchRow] = field(default_factory=list)
    since: str = ""  # the history's note when the cell is red


@dataclass(frozen=True)
class PatchRow:
    """One patch of a build: its status (clean | offset | fuzz | failed) and a
    line per file naming its hunks' results ("fs/dcache.c: hunk 1 offset +5")."""

    name: str
    status: str
    files: list[str]


def patch_rows(build: dict[str, Any]) -> list[PatchRow]:
    """The patches of a build result (kmod BuildResult.to_json), in order applied."""
    rows = []
    for p in build.get("patches") or []:
        name, status = str(p.get("name", "?")), str(p.get("status", "?"))
        rest = str(p.get("summary", "")).removeprefix(f"{name}: ")
        rest = rest.removeprefix("FAILED: ").removeprefix(f"{status}: ")
        files = [] if rest in ("", "clean") else rest.split("; ")
        rows.append(PatchRow(name, status, files))
    return rows


def worst(categories: list[str]) -> str:
    """The worst of `categories` by CATEGORIES' order; "" for none."""
    ranked = sorted(categories, key=CATEGORIES.index)
    return ranked[0] if ranked else ""


def category(check: CheckResult, fixed: set[str]) -> str:
    """A check's category: its outcome, KNOWN when a baseline expects it, FIXED
    when it passed but was a known failure (`fixed`: nodeids or module::name)."""
    if check.known:
        return KNOWN
    if check.outcome == PASSED and (check.nodeid in fixed or check_key(check) in fixed):
        return FIXED
    return check.outcome


def expected_observed(check: CheckResult) -> tuple[str, str]:
    """The suite's "expected: ..." and "observed: ..." lines of a failed check
    (from its details, else its message); ("", "") when it has none."""
    expected = observed = ""
    for raw in [*check.details.splitlines(), check.message]:
        line = raw.strip()
        if not expected and (m := _EXPECTED.match(line)):
            expected = m["text"]
        elif not observed and (m := _OBSERVED.match(line)):
            observed = m["text"]
    return expected, observed


def href(path: str | Path, root: Path) -> str:
    """How the report (in `root`) links to `path`: relative when under root (also
    when the results directory moved since the path was recorded), else file://."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    if p.is_relative_to(root):
        return p.relative_to(root).as_posix()
    if root.name in p.parts:  # recorded before the directory was moved or copied
        rest = p.parts[p.parts.index(root.name) + 1 :]
        if rest and root.joinpath(*rest).exists():
            return Path(*rest).as_posix()
    return p.as_uri()


def check_view(check: CheckResult, cell: str, fixed: set[str], root: Path) -> CheckView:
    expected, observed = expected_observed(check)
    links = [Link(Path(m["path"]).name, href(m["path"], root))
             for m in _EVIDENCE.finditer(check.details)]  # fmt: skip
    return CheckView(
        cell=cell,
        key=check_key(check),
        nodeid=check.nodeid,
        outcome=check.outcome,
        category=category(check, fixed),
        message=check.message,
        details=check.details,
        known=check.known,
        expected=expected,
        observed=observed,
        kernel_lines=list(check.kernel.lines),
        links=links,
    )


@dataclass
class Page:
    """Everything the HTML report shows, in reading order."""

    title: str
    root: Path
    cells: list[CellView]
    groups: list[GroupRow]
    problems: list[CheckView]  # red and fixed checks, worst first
    known: list[CheckView]  # known failures (a baseline expects them)
    history: str = ""  # where "since" notes came from ("" without a history)

    @property
    def counts(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for cell in self.cells:
            total.update(cell.counts)
        return {c: total[c] for c in CATEGORIES if total[c]}


def build_page(reports: list[TargetReport], root: Path, title: str = "") -> Page:
    """The page for the reports of one results directory `root`."""
    views = {r.target: _check_views(r, root) for r in reports}
    cells = [_cell_view(r, views[r.target], root) for r in reports]
    groups = _groups([r.target for r in reports], views)
    problems = [v for vs in views.values() for v in vs if v.category in (*RED, FIXED)]
    problems.sort(key=lambda v: (CATEGORIES.index(v.category), v.cell, v.key))
    known = [v for vs in views.values() for v in vs if v.category == KNOWN]
    return Page(title or root.name, root, cells, groups, problems, known)


def _check_views(report: TargetReport, root: Path) -> list[CheckView]:
    fixed = {str(f) for f in report.extra.get("fixed", [])}
    return [check_view(c, report.target, fixed, root) for c in report.checks]


def _groups(cells: list[str], views: dict[str, list[CheckView]]) -> list[GroupRow]:
    """One row per suite module, modules and their checks sorted by name."""
    table: dict[str, dict[str, dict[str, CheckView]]] = {}  # module -> key -> cell -> view
    for cell, vs in views.items():
        for v in vs:
            module = v.key.split("::", 1)[0]
            table.setdefault(module, {}).setdefault(v.key, {})[cell] = v
    rows = []
    for module, checks in sorted(table.items()):
        grid = [_grid_cell([c[cell] for c in checks.values() if cell in c]) for cell in cells]
        listed = [(k.split("::", 1)[1], [checks[k].get(cell) for cell in cells])
                  for k in sorted(checks)]  # fmt: skip
        rows.append(GroupRow(module, grid, listed))
    return rows


def _grid_cell(views: list[CheckView]) -> GridCell:
    counts = Counter(v.category for v in views)
    ordered = {c: counts[c] for c in CATEGORIES if counts[c]}
    return GridCell(ordered, worst(list(ordered)))


def _cell_view(report: TargetReport, views: list[CheckView], root: Path) -> CellView:
    counts = Counter(v.category for v in views)
    build = report.extra.get("build")
    return CellView(
        report=report,
        slug=slug(report.target),
        axes=dict(report.extra.get("cell") or {}),
        counts={c: counts[c] for c in CATEGORIES if counts[c]},
        files=_vm_files(report, root),
        build=build if isinstance(build, dict) else None,
        build_links=_build_links(build, root) if isinstance(build, dict) else [],
        patches=patch_rows(build) if isinstance(build, dict) else [],
    )


def _vm_files(report: TargetReport, root: Path) -> list[tuple[str, list[Link]]]:
    """Each VM's files on disk: VM 1's in the cell's directory, VM N's in vm-N/.
    The console log the report names comes first when it is elsewhere."""
    where = root / slug(report.target)
    fresh = sorted(
        (int(d.name.removeprefix("vm-")), d)
        for d in (where.glob("vm-*") if where.is_dir() else [])
        if d.is_dir() and d.name.removeprefix("vm-").isdigit()
    )
    dirs = [(1, where), *fresh]
    out = []
    for number, d in dirs:
        links = [Link(name, href(d / name, root)) for name in VM_FILES if (d / name).is_file()]
        if links:
            out.append((f"VM {number}", links))
    if report.console_log and not any(k.label == CONSOLE_LOG for _, ls in out for k in ls):
        out.insert(0, ("console", [Link(Path(report.console_log).name,
                                        href(report.console_log, root))]))  # fmt: skip
    return out


def _build_links(build: dict[str, Any], root: Path) -> list[Link]:
    """The build log, the kernel config and each kept rejected hunk."""
    links = []
    if build.get("log"):
        links.append(Link("build.log", href(build["log"], root)))
    config = (build.get("artifacts") or {}).get("config")
    if config:
        links.append(Link("kernel config", href(config, root)))
    for hunk in build.get("rejects") or []:
        if hunk.get("kept"):
            label = f"{hunk.get('patch')}: {hunk.get('file')} hunk {hunk.get('hunk')}"
            links.append(Link(label, href(hunk["kept"], root)))
    return links
