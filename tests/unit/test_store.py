from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from harness.core.store import Store, key_of


def test_key_is_stable_and_sensitive() -> None:
    assert key_of({"a": 1, "b": [1, 2]}) == key_of({"b": [1, 2], "a": 1})
    assert key_of({"a": 1}) != key_of({"a": 2})


def test_miss_then_hit_builds_once(tmp_path: Path) -> None:
    store = Store(tmp_path)
    calls: list[Path] = []

    def build(tmp: Path) -> dict[str, object]:
        calls.append(tmp)
        (tmp / "artifact").write_text("x")
        return {"size": 1}

    first = store.get_or_build({"k": 1}, build)
    second = store.get_or_build({"k": 1}, build)
    assert (first.hit, second.hit) == (False, True)
    assert len(calls) == 1
    assert (second.path / "artifact").read_text() == "x"
    assert second.meta()["size"] == 1


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)

    def build(tmp: Path) -> None:
        (tmp / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.get_or_build({"k": 1}, build)
    assert store.lookup(key_of({"k": 1})) is None
    assert not list(tmp_path.glob(".tmp-*"))


def _slow_build(root: str, out: str) -> None:
    def build(tmp: Path) -> None:
        time.sleep(0.5)
        (tmp / "a").write_text("x")
        with open(out, "a") as f:
            f.write("built\n")

    Store(Path(root)).get_or_build({"k": "shared"}, build)


def test_concurrent_producers_build_once(tmp_path: Path) -> None:
    log = tmp_path / "builds.log"
    procs = [
        multiprocessing.Process(target=_slow_build, args=(str(tmp_path / "s"), str(log)))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log.read_text() == "built\n"


def test_a_wait_for_another_producer_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import threading

    store = Store(tmp_path / "s")
    started, release = threading.Event(), threading.Event()

    def slow(tmp: Path) -> None:
        started.set()
        release.wait(10)
        (tmp / "f").write_text("x")

    first = threading.Thread(target=store.get_or_build, args=({"k": 1}, slow))
    first.start()
    assert started.wait(10)
    timer = threading.Timer(0.3, release.set)
    timer.start()
    with caplog.at_level(logging.INFO):
        entry = store.get_or_build({"k": 1}, lambda tmp: pytest.fail("built twice"))
    first.join(10)
    assert entry.hit and (entry.path / "f").read_text() == "x"
    assert any("another process is producing" in r.getMessage() for r in caplog.records)


def test_corrupted_entry_is_removed_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "s")
    builds: list[int] = []

    def build(d: Path) -> None:
        builds.append(1)
        (d / "bzImage").write_bytes(b"kernel" * 1000)

    first = store.get_or_build({"k": 1}, build)
    (first.path / "bzImage").write_bytes(b"kernel" * 10)  # truncated
    assert store.lookup(first.key) is None
    assert "corrupted" in caplog.text and "bzImage is 60 bytes" in caplog.text
    again = store.get_or_build({"k": 1}, build)
    assert not again.hit and len(builds) == 2
    (again.path / "bzImage").write_bytes(b"kernel" * 999 + b"KERNEL")  # same size, flipped
    assert store.lookup(again.key) is None
    assert "does not match its checksum" in caplog.text


def test_an_entry_rebuilt_while_we_waited_is_not_removed(tmp_path: Path) -> None:
    """Two runs of one corrupted image at once (fault campaign): run B saw the
    entry half-removed by run A and removed it again once A had rebuilt it, so
    A could not boot its image and B built it a second time. What looked
    corrupted is looked at again under the lock."""
    import threading

    store = Store(tmp_path / "s")

    def build(d: Path) -> None:
        (d / "vmlinuz").write_bytes(b"kernel" * 1000)

    entry = store.get_or_build({"k": 3}, build)
    good = (entry.path / "vmlinuz").read_bytes()
    (entry.path / "vmlinuz").unlink()  # run A removing it
    held, restore = threading.Event(), threading.Event()

    def run_a() -> None:  # holds the lock, then publishes a good entry again
        with store._locked(entry.key):
            held.set()
            restore.wait(10)
            (entry.path / "vmlinuz").write_bytes(good)

    a = threading.Thread(target=run_a)
    a.start()
    assert held.wait(10)
    threading.Timer(0.3, restore.set).start()
    found = store.lookup(entry.key)  # run B
    a.join(10)
    assert found is not None and (entry.path / "vmlinuz").read_bytes() == good


def test_entry_from_before_checksums_is_sealed(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")

    def build(d: Path) -> None:
        (d / "f").write_text("x")

    entry = store.get_or_build({"k": 2}, build)
    meta = json.loads((entry.path / "meta.json").read_text())
    del meta["files"]
    (entry.path / "meta.json").write_text(json.dumps(meta))
    assert store.lookup(entry.key) is not None
    assert "f" in json.loads((entry.path / "meta.json").read_text())["files"]


def test_discard_keeps_an_entry_made_good_while_it_waited(tmp_path: Path) -> None:
    """vm/image.py discards an entry it found incomplete; by the time it holds
    the lock another run may have published a complete one, which stays."""
    import threading

    store = Store(tmp_path / "s")

    def build(d: Path) -> None:
        (d / "rootfs").write_bytes(b"x")

    entry = store.get_or_build({"k": 4}, build)
    held, done = threading.Event(), threading.Event()

    def other_run() -> None:  # holds the lock while it completes the entry
        with store._locked(entry.key):
            held.set()
            time.sleep(0.3)
            (entry.path / "vmlinuz").write_bytes(b"k")
            done.set()

    t = threading.Thread(target=other_run)
    t.start()
    assert held.wait(10)
    store.discard(entry.key, keep=lambda e: (e.path / "vmlinuz").is_file())
    t.join(10)
    assert done.is_set() and (entry.path / "vmlinuz").is_file()
    store.discard(entry.key, keep=lambda e: (e.path / "missing").is_file())
    assert not entry.path.exists()
