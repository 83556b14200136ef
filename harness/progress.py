"""Progress for long work: every stage logs its start and its elapsed time,
and lands in the report whether it succeeded or not."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from harness.core.errors import HarnessError, TargetFailure, interrupting_signal, interruption
from harness.results import Stage, TargetReport

log = logging.getLogger("aufs-harness")

_T0 = time.monotonic()


class ElapsedFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        elapsed = time.monotonic() - _T0
        return f"[{elapsed:7.1f}s] {record.getMessage()}"


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ElapsedFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("filelock", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# Called when a stage starts (done False) and ends (done True), e.g. by the
# matrix's progress reporter; listeners must not raise.
StageListener = Callable[[TargetReport, Stage, bool], None]
_listeners: list[StageListener] = []


@contextmanager
def listening(listener: StageListener) -> Iterator[None]:
    """Call `listener` for every stage started and ended inside the block."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def _tell(report: TargetReport, st: Stage, done: bool) -> None:
    for listener in list(_listeners):
        listener(report, st, done)


@dataclass
class StageHandle:
    stage: Stage

    def cached(self, detail: str = "") -> None:
        self.stage.status = "cached"
        self.stage.detail = detail or self.stage.detail

    def note(self, detail: str) -> None:
        self.stage.detail = detail


@contextmanager
def stage(report: TargetReport, name: str, what: str) -> Iterator[StageHandle]:
    """Time one pipeline stage and record it in `report`, even when it raises."""
    log.info("%s: %s ...", name, what)
    st = Stage(name, "ok")
    handle = StageHandle(st)
    t0 = time.monotonic()
    _tell(report, st, False)
    try:
        yield handle
    except TargetFailure as exc:
        st.status, st.detail = "failed", str(exc)
        raise
    except HarnessError as exc:
        st.status, st.detail = "error", str(exc)
        raise
    except BaseException as exc:  # Ctrl-C, bugs: still recorded before unwinding
        st.status, st.detail = "error", _interrupted_or_bug(exc)
        raise
    finally:
        st.seconds = time.monotonic() - t0
        report.stages.append(st)
        extra = f" ({st.detail.splitlines()[0]})" if st.detail and st.status != "ok" else ""
        log.info("%s: %s in %.1fs%s", name, st.status, st.seconds, extra)
        _tell(report, st, True)


def _interrupted_or_bug(exc: BaseException) -> str:
    """A stage's detail for what was not a HarnessError: the signal, or the bug."""
    if interrupting_signal(exc) is not None:
        return interruption(exc)
    return f"{type(exc).__name__}: {exc}"
