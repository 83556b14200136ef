"""Known failures: a baseline file (TOML, harness/schemas/baseline.schema.json)
whose entries name checks expected to fail in an environment, after fstests'
expunge lists and Linaro SQUAD's known issues.

    version = 1
    [[known]]
    id = "aufs-parent-mtime-after-copy-up"
    checks = ["suite/test_copy_up.py::test_copy_up_keeps_parent_directory_mtimes[aufs-*]"]
    outcomes = ["failed"]            # default; also "error", "hung"
    reason = "..."
    reference = "..."
    active = true                    # default; an inactive entry matches nothing
    intermittent = false             # default; true: passing is not a fix
    [known.when]                     # every key given must hold (all optional)
    cells = ["bullseye-*"]           # fnmatch over cell names
    kernel = "debian:bullseye*"      # fnmatch over the cell's kernel
    kernel_release = "5.10.*"        # fnmatch over the booted release
    aufs = ">=5.10, <5.11"           # the aufs branch's version (aufs5.10.140 -> 5.10.140)
    aufs_options = ["XATTR=y"]       # all hold for the cell
    branch_fs = ["tmpfs"]            # the cell uses any of them

Known failures still run: a check whose outcome an entry expects is marked
known (CheckResult.known) and does not turn its cell red; a check an entry
expects to fail that passes is a fix, which does, unless the entry is
intermittent.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from harness.core.errors import UserError
from harness.matrix import schema
from harness.matrix.spec import Cell, read_toml
from kmod.config import aufs_options

_CMP: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_TERM = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+)*)\s*$")
_AUFS_VERSION = re.compile(r"aufs(\d+(?:\.\d+)*)")


def version_tuple(text: str) -> tuple[int, ...]:
    """ "5.10.140" -> (5, 10, 140)."""
    return tuple(int(p) for p in text.split("."))


def aufs_version(branch: str | None) -> tuple[int, ...] | None:
    """The version an aufs branch or ref names ("aufs5.10.140" -> (5, 10, 140);
    "aufs6.x-rcN" -> (6,)), None when it names none."""
    m = _AUFS_VERSION.search(branch or "")
    return version_tuple(m.group(1)) if m else None


def in_range(version: tuple[int, ...], spec: str) -> bool:
    """Whether `version` satisfies every comparison of `spec` (">=5.10, <5.11");
    versions compare as integer tuples, so 5.10.140 < 5.11."""
    for term in spec.split(","):
        m = _TERM.match(term)
        if m is None:  # the schema's pattern rejects this before
            raise ValueError(f"bad version comparison {term!r}")
        op, bound = _CMP[m.group(1)], version_tuple(m.group(2))
        if not op(version[: len(bound)], bound):
            return False
    return True


@dataclass(frozen=True)
class Environment:
    """What an entry's `when` is matched against: the cell and what the run found."""

    cell: Cell
    kernel_release: str = ""
    aufs_branch: str | None = None  # the branch the build chose, else the cell's aufs_ref


@dataclass(frozen=True)
class Entry:
    """One known failure (see the module docstring for the fields)."""

    id: str
    checks: tuple[str, ...]
    reason: str
    reference: str
    outcomes: tuple[str, ...] = ("failed",)
    active: bool = True
    intermittent: bool = False
    when: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """What CheckResult.known says: "reason (reference)"."""
        return f"{self.reason} ({self.reference})"

    def names(self, nodeid: str) -> bool:
        """Whether a check id matches one of the entry's patterns: * and ? are
        wildcards, [ and ] literal (they enclose a check's parameters)."""
        return any(fnmatchcase(nodeid, p.replace("[", "[[]")) for p in self.checks)

    def applies(self, env: Environment) -> bool:
        """Whether the entry is active and every key of `when` holds in `env`."""
        return self.active and all(_holds(k, v, env) for k, v in self.when.items())


def _holds(key: str, want: Any, env: Environment) -> bool:
    cell = env.cell
    if key == "cells":
        return any(fnmatchcase(cell.name, p) for p in want)
    if key == "kernel":
        return fnmatchcase(cell.kernel, want)
    if key == "kernel_release":
        return fnmatchcase(env.kernel_release, want)
    if key == "aufs":
        version = aufs_version(env.aufs_branch or cell.aufs_ref)
        return version is not None and in_range(version, want)
    if key == "aufs_options":
        have = aufs_options(cell.aufs_options)
        return all(have.get(o.split("=")[0]) == o.endswith("=y") for o in want)
    if key == "branch_fs":
        used = {fs for item in cell.branch_fs for fs in item.split("+")}
        return bool(used & set(want)) or any(item in want for item in cell.branch_fs)
    raise ValueError(f"unknown when key {key!r}")  # the schema rejects it before


@dataclass(frozen=True)
class Baseline:
    path: Path | None
    entries: tuple[Entry, ...] = ()

    def for_env(self, env: Environment) -> list[Entry]:
        """The entries that apply to `env`, in file order."""
        return [e for e in self.entries if e.applies(env)]


def load(path: Path) -> Baseline:
    """Read and validate a baseline file; UserError, one line, when it is bad
    (TOML, schema, or two entries with one id)."""
    data = read_toml(path)
    schema.check(schema.BASELINE, data, str(path))
    entries = []
    for raw in data["known"]:
        entry = Entry(
            id=raw["id"],
            checks=tuple(raw["checks"]),
            reason=raw["reason"],
            reference=raw["reference"],
            outcomes=tuple(raw.get("outcomes", ("failed",))),
            active=raw.get("active", True),
            intermittent=raw.get("intermittent", False),
            when=dict(raw.get("when", {})),
        )
        entries.append(entry)
    ids = [e.id for e in entries]
    dup = next((i for i in ids if ids.count(i) > 1), None)
    if dup is not None:
        raise UserError(f"{path}: known.id: {dup!r} is used twice; give each entry its own id")
    return Baseline(path, tuple(entries))
