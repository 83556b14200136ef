"""Shared test configuration: skipped tests always say why."""

from __future__ import annotations

import os
import shutil

import pytest


def pytest_report_header(config: pytest.Config) -> list[str]:
    aufs = os.environ.get("AUFS_HARNESS_AUFS_SRC") or "not configured (aufs tests skip)"
    return [
        f"aufs source: {aufs}",
        f"qemu: {shutil.which('qemu-system-x86_64') or 'missing'}",
    ]
