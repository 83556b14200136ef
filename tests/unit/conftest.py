"""Unit tests never touch the user's cache or VM state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.deadline import Deadline


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AUFS_HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AUFS_HARNESS_STATE", str(tmp_path / "state"))
    yield


@pytest.fixture(autouse=True)
def fresh_module_deadlines(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module-level Deadline starts counting at import, so in a long session
    (integration tests run first) it expires before the module's tests run.
    Give every test a fresh one of the same length."""
    module = request.module
    for name, value in list(vars(module).items()):
        if isinstance(value, Deadline):
            monkeypatch.setattr(module, name, Deadline(value.seconds, value.what))
