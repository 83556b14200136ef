"""A content-addressed store: same inputs, same key, never built twice.

Entries are directories published by rename once complete, so a crash leaves
only a temporary directory behind, and a file lock per key serialises
concurrent producers of the same entry.

The store checks what it hands out: meta.json records every file's size and
sha256 at publish time ("files": {relpath: [size, sha256]}). lookup() checks
sizes always and checksums of files up to HASH_ALWAYS bytes always; larger
files (disk images, never written after publish) are re-hashed when their mtime
differs from the recorded one. A corrupted or truncated entry is removed with
one log line and rebuilt, never handed out. An entry from before checksums is
sealed (hashed and recorded) on its first lookup.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

META = "meta.json"
HASH_ALWAYS = 64 << 20  # bytes


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's content, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(root: Path) -> dict[str, list[Any]]:
    """{relpath: [size, sha256, mtime_ns]} of every regular file under root but META."""
    files: dict[str, list[Any]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name != META:
            st = path.stat()
            files[str(path.relative_to(root))] = [st.st_size, file_sha256(path), st.st_mtime_ns]
    return files


def verify(root: Path, files: Mapping[str, Sequence[Any]]) -> str | None:
    """None if every recorded file is intact, else what is wrong with the first
    that is not (missing, truncated, checksum mismatch)."""
    for rel, (size, digest, *rest) in files.items():
        path = root / rel
        try:
            st = path.stat()
        except OSError:
            return f"{rel} is missing"
        if st.st_size != size:
            return f"{rel} is {st.st_size} bytes, {size} when stored (truncated or overwritten)"
        mtime = rest[0] if rest else None
        if (size <= HASH_ALWAYS or st.st_mtime_ns != mtime) and file_sha256(path) != digest:
            return f"{rel} does not match its checksum"
    return None


@contextlib.contextmanager
def locked(path: Path, waiting: str) -> Iterator[None]:
    """Hold the file lock at `path`. When another process holds it first (a
    concurrent run building the same kernel or image: waits can be minutes),
    log `waiting` + "; waiting for it" once, so a wait is never silent."""
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("%s; waiting for it", waiting)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


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
        """The published entry, checked (module doc); a corrupted one is removed
        and None returned, so the caller rebuilds it."""
        return self._checked(key)

    def _checked(self, key: str, locked: bool = False) -> Entry | None:
        final = self.path(key)
        meta_path = final / META
        if not meta_path.is_file():
            return None
        try:
            meta: dict[str, Any] = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta, problem = {}, f"{META} is unreadable"
        else:
            files = meta.get("files")
            if files is None:  # stored before checksums: seal it now
                self._seal(final, meta)
                return Entry(key, final, hit=True)
            problem = verify(final, files) or ""
        if not problem:
            return Entry(key, final, hit=True)
        if not locked:
            # Look again under the lock before removing anything: what looked
            # corrupted may be another run removing it, and by the time we hold
            # the lock that run may have published a good entry (seen in the
            # fault campaign: the waiting run deleted the fresh image, and the
            # run that built it could not boot it).
            with self._locked(key):
                return self._checked(key, locked=True)
        log.warning(
            "%s: entry %s is corrupted (%s): removed, it will be rebuilt",
            self.root.name,
            key,
            problem,
        )
        shutil.rmtree(final, ignore_errors=True)
        return None

    def _seal(self, final: Path, meta: dict[str, Any]) -> None:
        meta["files"] = fingerprint(final)
        tmp = final / f".{META}.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
            os.replace(tmp, final / META)
        except OSError as exc:  # a read-only cache still hands out the entry
            tmp.unlink(missing_ok=True)
            log.debug("could not seal %s: %s", final, exc)

    def discard(self, key: str, keep: Callable[[Entry], bool] | None = None) -> None:
        """Remove an entry (e.g. found incomplete), under its lock; with `keep`,
        only when the entry seen under the lock still fails it: another run may
        have replaced it with a good one while this one waited for the lock."""
        with self._locked(key):
            found = self._checked(key, locked=True)
            if found is not None and keep is not None and keep(found):
                return
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
            found = self._checked(key, locked=True)
            if found:  # another process built it while we waited
                return found
            tmp = self.root / f".tmp-{key}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            self._sweep(key)
            tmp.mkdir()
            try:
                extra = build(tmp) or {}
                meta = {"key": key, "inputs": dict(inputs), **extra, "files": fingerprint(tmp)}
                (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
                final = self.path(key)
                shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return Entry(key, self.path(key), hit=False)

    def _locked(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Hold the key's lock, saying so when another process holds it first."""
        return locked(
            self.root / f".{key}.lock", f"{self.root.name}: another process is producing {key}"
        )

    def _sweep(self, key: str) -> None:
        """Remove temporaries of dead producers of this key (we hold its lock)."""
        for stale in self.root.glob(f".tmp-{key}-*"):
            log.debug("removing stale %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
