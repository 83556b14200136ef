"""Skips with a printed reason for checks that depend on kernel configuration."""

from __future__ import annotations

import pytest

from . import aufs
from .drivers import AufsDriver, OverlayDriver, UnionDriver


def require_aufs_config(driver: UnionDriver, *options: str) -> None:
    """Skip unless the aufs configuration shows each CONFIG_AUFS_<option> as y or m.

    No-op for other drivers. The configuration comes from /sys/fs/aufs/config
    (an aufs module), else the kernel's /proc/config.gz or /boot/config-*;
    when none is readable the check is skipped rather than guessed.
    """
    if not isinstance(driver, AufsDriver):
        return
    conf = aufs.kernel_config()
    if not conf:
        pytest.skip(
            f"aufs configuration unknown (no /sys/fs/aufs/config, /proc/config.gz or "
            f"/boot/config-*): cannot tell whether {', '.join(options)} are enabled"
        )
    for opt in options:
        key = opt if opt.startswith("CONFIG_") else f"CONFIG_AUFS_{opt}"
        if conf.get(key) not in ("y", "m"):
            pytest.skip(f"{key} is not set in the aufs configuration")


def aufs_config_has(option: str) -> bool:
    """Whether CONFIG_AUFS_<option> is y/m; False when the configuration is unknown."""
    key = option if option.startswith("CONFIG_") else f"CONFIG_AUFS_{option}"
    return aufs.kernel_config().get(key) in ("y", "m")


def overlay_param(driver: UnionDriver, name: str) -> str | None:
    """An overlay module parameter (Y/N/...), or None for aufs or when unreadable."""
    if not isinstance(driver, OverlayDriver):
        return None
    return driver.module_param(name)
