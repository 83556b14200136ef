"""Ship everything the suite runs on into a guest in one upload, with its bytecode.

A VM used to receive the pytest wheels, the guest package and the suite file
by file (about 60 SFTP uploads and 6 commands, 18 s under TCG), and then each
xdist worker compiled pytest, its plugins and the suite to bytecode on import
(the same work once per worker, 20-40 s under TCG). Now:

- the host packs one deterministic tar (`bundle`): the unpacked wheels (site/),
  the guest package (harness/guest/), the suite (suite/), and the host's own
  pytest and _pytest, which pytest-xdist would otherwise rsync into the
  worker's directory (they carry the host's mtimes and modes, so xdist's rsync
  finds them current and sends nothing);
- one command in the guest unpacks it and writes the .pth file (INSTALL);
- the bytecode the guest's workers wrote (pytest's rewritten test modules
  included) is fetched back after a run that ended cleanly (`save_bytecode`)
  and kept in the cache, keyed by the bundle's digest and the guest Python's
  cache tag; the next VM with the same bundle and Python unpacks it with the
  bundle and compiles nothing. Python checks each .pyc against its source's
  mtime and size (pytest's rewritten ones too), and every bundled file has a
  fixed mtime (FIXED_MTIME, pytest's own: the host's), so a .pyc from the cache
  matches its source exactly when the bundle is the same.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import shlex
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import _pytest
import pytest

from harness import guestenv
from harness.core.deadline import Deadline
from harness.core.errors import HarnessError
from harness.core.leftovers import owned_temp
from harness.core.paths import cache_dir
from harness.core.store import Store, key_of
from vm.ssh import CACHE_DIRS, Guest

log = logging.getLogger(__name__)

#: mtime of every bundled file but pytest's own: the bundle's bytes, and so its
#: digest, depend on the files' contents only.
FIXED_MTIME = 1_600_000_000
#: the top-level names under GUEST_ROOT that the bundle replaces
TOPS = ("site", "harness", "suite", "pytest", "_pytest", "wheels")
REMOTE_BUNDLE = f"{guestenv.GUEST_ROOT}.bundle.tar.gz"
REMOTE_BYTECODE = f"{guestenv.GUEST_ROOT}.pyc.tar.gz"
#: "DIGEST CACHE_TAG cached|compiled" of the bundle installed since this boot
#: (/run is a tmpfs): a VM booted ahead is shipped to once, not again.
MARKER = "/run/aufs-harness.bundle"
SAVE_TIMEOUT = 120.0  # packing and fetching the guest's bytecode
PROBE_SEP = "::aufs-harness::"  # between the marker and the cache tag in the probe's output

# Runs on the guest's python3 (3.9 or newer, stdlib only): writes the .pth file
# that puts the bundled trees on its path, prints its bytecode cache tag.
PREPARE = r"""
import os, site, sys
pth = os.path.join(site.getsitepackages()[0], "aufs-harness.pth")
os.makedirs(os.path.dirname(pth), exist_ok=True)
with open(pth, "w") as f:
    f.write("".join(p + "\n" for p in sys.argv[1:]))
print(sys.implementation.cache_tag)
"""


def install_script(with_bytecode: bool) -> str:
    """The shell command that replaces the bundled trees under GUEST_ROOT with
    the uploaded bundle (and bytecode). GNU or busybox tar: python's tarfile
    takes three times as long under TCG."""
    root = guestenv.GUEST_ROOT
    old = " ".join(shlex.quote(f"{root}/{top}") for top in TOPS)
    steps = [f"rm -rf {old}", f"mkdir -p {root}", f"tar -xzf {REMOTE_BUNDLE} -C {root}",
             f"rm -f {REMOTE_BUNDLE}"]  # fmt: skip
    if with_bytecode:
        steps += [f"tar -xzf {REMOTE_BYTECODE} -C {root}", f"rm -f {REMOTE_BYTECODE}"]
    return " && ".join(steps)


# Packs every .pyc under the bundled trees (guest side, from GUEST_ROOT).
PACK_BYTECODE = (
    "cd {root} && find {tops} -path '*/__pycache__/*.pyc' -type f 2>/dev/null | sort"
    " | tar -czf {out} -T -"
)


@dataclass(frozen=True)
class Shipped:
    """What one shipping did: the bundle's digest, the guest's cache tag, and
    whether its bytecode came from the cache."""

    digest: str
    cache_tag: str
    bytecode_cached: bool


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, mode  # pax keeps a float mtime
    tar.addfile(info, io.BytesIO(data))


def _tree(local: Path) -> Iterator[Path]:
    """The files under `local` in name order, tool caches and bytecode left out."""
    for path in sorted(local.rglob("*")):
        rel = path.relative_to(local).parts
        if path.is_file() and not CACHE_DIRS.intersection(rel) and path.suffix != ".pyc":
            yield path


def pytest_roots() -> list[Path]:
    """The host's pytest package directories that pytest-xdist rsyncs into a
    remote worker's directory (xdist NodeManager._getrsyncdirs)."""
    return [Path(pytest.__file__).parent, Path(_pytest.__file__).parent]


def bundle(wheel_dir: Path, guest_dir: Path, suite_dir: Path) -> bytes:
    """The tar (bytes) of the site, guest package, suite and pytest trees, laid
    out as under GUEST_ROOT; the same inputs give the same bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for whl in sorted(wheel_dir.glob("*.whl")):
            with zipfile.ZipFile(whl) as z:
                for member in sorted(z.namelist()):
                    if not member.endswith("/"):
                        _add(tar, f"site/{member}", z.read(member), FIXED_MTIME, 0o644)
        for module in sorted(guest_dir.glob("*.py")):
            _add(tar, f"harness/guest/{module.name}", module.read_bytes(), FIXED_MTIME, 0o644)
        for path in _tree(suite_dir):
            rel = path.relative_to(suite_dir).as_posix()
            _add(tar, f"suite/{rel}", path.read_bytes(), FIXED_MTIME, 0o644)
        for root in pytest_roots():
            for path in _tree(root):
                st = path.stat()  # as xdist's rsync compares them: size, mtime, mode
                rel = path.relative_to(root.parent).as_posix()
                _add(tar, rel, path.read_bytes(), st.st_mtime, st.st_mode & 0o7777)
    return buf.getvalue()


def _bytecode_store() -> Store:
    return Store(cache_dir() / "guest-bytecode")


def _bytecode_key(digest: str, cache_tag: str) -> dict[str, str]:
    return {"bundle": digest, "cache_tag": cache_tag, "v": "2"}


def ship(
    guest: Guest, deadline: Deadline, guest_dir: Path, suite_dir: Path, paths: tuple[str, ...]
) -> Shipped:
    """Install the pytest stack, the guest package and the suite under GUEST_ROOT
    in one upload and one command; `paths` go on the guest python's sys.path.
    Raises HarnessError (InfraError, CommandFailed, DeadlineExceeded)."""
    data = bundle(guestenv.wheels(deadline), guest_dir, suite_dir)
    digest = hashlib.sha256(data).hexdigest()[:24]
    args = " ".join(shlex.quote(a) for a in (PREPARE, guestenv.GUEST_SITE, *paths))
    probe = f"cat {MARKER} 2>/dev/null; echo {PROBE_SEP}; exec python3 -c {args}"
    out = guest.run(["sh", "-c", probe], deadline, check=True).stdout
    before, _, after = out.partition(PROBE_SEP)
    marker, cache_tag = before.split(), after.strip()
    if marker[:2] == [digest, cache_tag]:  # this boot already has this bundle (booted ahead)
        log.info("suite: the guest already holds bundle %s", digest[:12])
        return Shipped(digest, cache_tag, marker[2:] == ["cached"])
    cached = _bytecode_store().lookup(key_of(_bytecode_key(digest, cache_tag)))
    with owned_temp("ship") as tmp:
        local = Path(tmp) / "bundle.tar"
        # TCG makes the guest's sshd slow to decrypt (about 3 s a MiB under
        # load): gzip sends a quarter of the bytes; the digest is of the tar.
        local.write_bytes(gzip.compress(data, compresslevel=6, mtime=0))
        guest.put(local, REMOTE_BUNDLE)
    if cached is not None:
        guest.put(cached.path / "bytecode.tar.gz", REMOTE_BYTECODE)
    how = "cached" if cached is not None else "compiled"
    script = f"{install_script(cached is not None)} && echo {digest} {cache_tag} {how} > {MARKER}"
    guest.run(["sh", "-c", script], deadline, check=True)
    log.info("suite: shipped %d KiB (tar) in one bundle (%s); bytecode %s", len(data) // 1024,
             digest[:12], "from the cache" if cached else "to be compiled")  # fmt: skip
    return Shipped(digest, cache_tag, cached is not None)


class KeepWhenCollected:
    """Keeps the guest's bytecode once the first check has started: by then the
    workers have imported and compiled everything (pytest, the plugins, every
    test module rewritten by pytest), and the files were written before any
    check ran, so a check that later damages the kernel cannot have touched them.
    The fresh VMs of the same run then get them too. A context manager around
    the suite's run; `events` is its result log (harness.resultlog)."""

    def __init__(self, guest: Guest, shipped: Shipped, events: Path, deadline: Deadline) -> None:
        self._guest, self._shipped, self._deadline = guest, shipped, deadline
        self._events = events
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> KeepWhenCollected:
        if not self._shipped.bytecode_cached:
            self._thread = threading.Thread(target=self._wait, name="keep-bytecode", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60.0)

    def _wait(self) -> None:
        while not self._stop.wait(1.0):
            try:
                started = '"event": "start"' in self._events.read_text()
            except OSError:
                continue
            if started:  # the budget starts now: the workers' start-up took what it took
                budget = self._deadline.sub(SAVE_TIMEOUT, "keeping the guest's bytecode")
                save_bytecode(self._guest, self._shipped, budget)
                return


def save_bytecode(guest: Guest, shipped: Shipped, deadline: Deadline) -> bool:
    """Keep the bytecode the guest's workers wrote for this bundle (once per
    bundle and cache tag); call it once they have collected, before any check
    could have damaged the guest (KeepWhenCollected). Returns whether it was
    stored; a failure is logged, never raised."""
    if shipped.bytecode_cached:
        return False
    store = _bytecode_store()

    def fetch(tmp: Path) -> dict[str, object]:
        tops, out = " ".join(TOPS), shlex.quote(REMOTE_BYTECODE)
        pack = PACK_BYTECODE.format(root=shlex.quote(guestenv.GUEST_ROOT), tops=tops, out=out)
        guest.run(["sh", "-c", pack], deadline, check=True)
        guest.get(REMOTE_BYTECODE, tmp / "bytecode.tar.gz")
        guest.run(["rm", "-f", REMOTE_BYTECODE], deadline)
        return {"bytes": os.path.getsize(tmp / "bytecode.tar.gz")}

    try:
        store.get_or_build(_bytecode_key(shipped.digest, shipped.cache_tag), fetch)
    except (HarnessError, OSError) as exc:
        log.info("suite: the guest's bytecode was not kept: %s", exc)
        return False
    return True
