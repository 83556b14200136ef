"""The static HTML report of a results directory: index.html beside report.json.

Self-contained (inline CSS, a few lines of plain JS, no network). Rendered
with its own jinja2 Environment with autoescape ON: check output, kernel lines
and patch text are untrusted text. (harness.core.render's Environment renders
config files and argv with autoescape off; it is not for HTML.)
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import jinja2

from harness.core.atomic import write_atomic
from harness.report.model import CATEGORIES, RED, Page, build_page
from harness.results import TargetReport
from harness.resultsdir import ResultsDir

log = logging.getLogger(__name__)

INDEX_HTML = "index.html"
TEMPLATE = "report.html.j2"


@functools.cache
def environment() -> jinja2.Environment:
    """The HTML Environment over harness/report/templates (autoescape on, strict)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness.report", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["seconds"] = _seconds
    env.filters["when"] = _when
    env.filters["plain"] = _plain
    env.globals.update(CATEGORIES=CATEGORIES, RED=RED)
    return env


def render(page: Page) -> str:
    """index.html's text for `page`."""
    return environment().get_template(TEMPLATE).render(page=page)


def render_reports(reports: list[TargetReport], root: Path) -> str:
    """index.html's text for the reports of results directory `root` (no history)."""
    return render(build_page(reports, root))


def write_html(results: ResultsDir, page: Page) -> Path:
    """Write `page` as results.root/index.html (atomically); returns its path."""
    path = results.root / INDEX_HTML
    write_atomic(path, render(page))
    log.debug("report: wrote %s", path)
    return path


def _seconds(value: float) -> str:
    """1346.0 -> "22m26s"; 6.7 -> "6.7s"."""
    if value < 60:
        return f"{value:.1f}s"
    minutes, secs = divmod(round(value), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _plain(value: object) -> str:
    """A cell axis for people: lists joined with ", ", dicts as "k=v", None as "-"."""
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items()) or "-"
    return str(value)


def _when(epoch: float) -> str:
    """A Unix time as local "YYYY-mm-dd HH:MM"."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))
