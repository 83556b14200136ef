"""A content-addressed store: same inputs, same key, never built twice.

Entries are directories published by rename once complete, so a crash leaves
only a temporary directory behind, and a file lock per key serialises
concurrent producers of the same entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

META = "meta.json"


def key_of(inputs: Mapping[str, Any]) -> str:
    """A stable digest of a JSON-serialisable description of every input."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Entry:
    key: str
    path: Path
    hit: bool

    def meta(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / META).read_text())
        return data


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key

    def lookup(self, key: str) -> Entry | None:
        final = self.path(key)
        if (final / META).is_file():
            return Entry(key, final, hit=True)
        return None

    def discard(self, key: str) -> None:
        """Remove an entry (e.g. found incomplete), under its lock."""
        with self._locked(key):
            shutil.rmtree(self.path(key), ignore_errors=True)

    def get_or_build(
        self,
        inputs: Mapping[str, Any],
        build: Callable[[Path], Mapping[str, Any] | None],
    ) -> Entry:
        """Return the entry for `inputs`, calling `build(tmpdir)` only on a miss.

        `build` fills tmpdir and may return extra metadata to record.
        """
        key = key_of(inputs)
        found = self.lookup(key)
        if found:
            return found
        with self._locked(key):
            found = self.lookup(key)
            if found:  # another process built it while we waited
                return found
            tmp = self.root / f".tmp-{key}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            self._sweep(key)
            tmp.mkdir()
            try:
                extra = build(tmp) or {}
                meta = {"key": key, "inputs": dict(inputs), **extra}
                (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
                final = self.path(key)
                shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return Entry(key, self.path(key), hit=False)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """Hold the key's lock; say so when another process holds it first
        (a concurrent run building the same kernel or image): waits can be long."""
        lock = FileLock(str(self.root / f".{key}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("%s: another process is producing %s; waiting for it", self.root.name, key)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def _sweep(self, key: str) -> None:
        """Remove temporaries of dead producers of this key (we hold its lock)."""
        for stale in self.root.glob(f".tmp-{key}-*"):
            log.debug("removing stale %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
