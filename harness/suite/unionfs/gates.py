"""Skips with a printed reason for checks that depend on kernel configuration."""

from __future__ import annotations

import pytest

from .drivers import AufsDriver, OverlayDriver, UnionDriver


def require_aufs_config(driver: UnionDriver, *options: str) -> None:
    """Skip unless /sys/fs/aufs/config shows each CONFIG_AUFS_<option> as y or m.

    No-op for other drivers. When /sys/fs/aufs/config is missing (aufs built
    without sysfs support) the configuration is unknown and the check is
    skipped rather than guessed.
    """
    if not isinstance(driver, AufsDriver):
        return
    conf = driver.config()
    if conf is None:
        pytest.skip(f"/sys/fs/aufs/config absent: cannot tell whether {options} are enabled")
    for opt in options:
        key = opt if opt.startswith("CONFIG_") else f"CONFIG_AUFS_{opt}"
        if conf.get(key) not in ("y", "m"):
            pytest.skip(f"{key} is not set in /sys/fs/aufs/config")


def overlay_param(driver: UnionDriver, name: str) -> str | None:
    """An overlay module parameter (Y/N/...), or None for aufs or when unreadable."""
    if not isinstance(driver, OverlayDriver):
        return None
    return driver.module_param(name)
