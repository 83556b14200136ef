"""Reading logs that another process is still writing: a tail that hands out
complete lines, and a thread that summarises a quiet command's log every so often."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

log = logging.getLogger("aufs-harness")


class LogTail:
    """The complete lines a growing file gained since the last call (a line
    still being written waits for its newline); a missing file has none yet."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
                self._offset = f.tell()
        except OSError:
            return []
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        return [line.decode(errors="replace") for line in lines]


class LogSummary(Protocol):
    """Reads a growing log line by line and says in one line how far it got."""

    def feed(self, line: str) -> None: ...

    def summary(self) -> str | None: ...


@contextmanager
def watch_log(path: Path, summary: LogSummary, every: float = 30.0) -> Iterator[None]:
    """Log summary's line every `every` seconds while a long, quiet command writes `path`."""
    stop = threading.Event()
    t0 = time.monotonic()
    tail = LogTail(path)

    def loop() -> None:
        while not stop.wait(every):
            for line in tail.new_lines():
                summary.feed(line)
            said = summary.summary()
            if said:
                log.info("%s (%.0fs)", said, time.monotonic() - t0)

    thread = threading.Thread(target=loop, name=f"watch {path.name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
