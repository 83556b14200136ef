"""The module loader's results as plain data, shared by host and guest.

The loader (harness/guest/modload.py) prints one of these as JSON; the host
(harness/guestload.py, the `kmod load` command) reads it back. Every field has
a default, so JSON from an older or newer loader still parses.

Shipped into guests: standard library only, Python 3.9+.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from harness.guest.kmsg import Taint

SCHEMA = 1

LOADED = "loaded"
LOAD_FAILED = "load-failed"
UNLOADED = "unloaded"
UNLOAD_FAILED = "unload-failed"
ERROR = "error"

EXIT_CODES = {LOADED: 0, UNLOADED: 0, LOAD_FAILED: 1, UNLOAD_FAILED: 1, ERROR: 2}


# What a module file is called; a target with one of these or a "/" is a file
# to insmod, anything else a name for modprobe (the loader and `kmod load`).
KO_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def is_ko_path(target: str) -> bool:
    return "/" in target or target.endswith(KO_SUFFIXES)


@dataclass
class CommandRun:
    argv: list[str] = field(default_factory=list)
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0


@dataclass
class ModuleResult:
    """What both a load and an unload report. Every field has a default so
    JSON from an older or newer load.py still parses."""

    action: str = ""
    status: str = ERROR
    reason: str = ""
    module: str = ""
    method: str = ""
    kernel_release: str = ""
    uevent_seen: bool = False
    uevent_seconds: float | None = None
    expect_fs: str | None = None
    fs_registered: bool | None = None
    dmesg: list[str] = field(default_factory=list)
    taint_before: Taint | None = None
    taint_after: Taint | None = None
    taint_added: list[str] = field(default_factory=list)
    commands: list[CommandRun] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    schema: int = SCHEMA

    @property
    def ok(self) -> bool:
        return self.status in (LOADED, UNLOADED)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 2)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


@dataclass
class LoadResult(ModuleResult):
    action: str = "load"
    target: str = ""
    params: list[str] = field(default_factory=list)
    vermagic: str | None = None
    modinfo: dict[str, str] = field(default_factory=dict)
    version: str | None = None
    fs_config: dict[str, str] | None = None


@dataclass
class UnloadResult(ModuleResult):
    action: str = "unload"


def result_from_dict(data: dict[str, Any]) -> LoadResult | UnloadResult:
    """The inverse of dataclasses.asdict; unknown keys are ignored."""
    cls: type[LoadResult] | type[UnloadResult]
    action = data.get("action")
    if action == "load":
        cls = LoadResult
    elif action == "unload":
        cls = UnloadResult
    else:
        raise ValueError(f"not a module loader result: action={action!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in names}
    for key in ("taint_before", "taint_after"):
        if isinstance(kwargs.get(key), dict):
            kwargs[key] = Taint(**kwargs[key])
    kwargs["commands"] = [CommandRun(**c) for c in kwargs.get("commands", [])]
    return cls(**kwargs)


def result_from_json(text: str) -> LoadResult | UnloadResult:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a module loader result: JSON is not an object")
    return result_from_dict(data)


def summary(result: ModuleResult) -> str:
    """A few lines for people: verdict, then the evidence that matters."""
    lines = [f"{result.status}: {result.reason}"]
    before, after = result.taint_before, result.taint_after
    if before is not None and after is not None and before.value != after.value:
        lines.append(f"  taint: {before.letters or '-'} -> {after.letters or '-'}")
    if not result.ok and result.dmesg:
        lines.append("  dmesg:")
        lines.extend(f"    {line}" for line in result.dmesg[-15:])
    lines.extend(f"  note: {note}" for note in result.notes)
    return "\n".join(lines)
