"""Unit tests never touch the user's cache or VM state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AUFS_HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AUFS_HARNESS_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("AUFS_HARNESS_DATA", str(tmp_path / "data"))
    yield
