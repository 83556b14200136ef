"""The guest kernel configuration: render a fragment, merge it, verify it held.

The fragment (kmod/guest.config.j2) asks for a minimal x86_64 guest that
boots under QEMU without an initrd, plus CONFIG_AUFS_FS=m and the per-target
aufs options. It is merged onto a base (allnoconfig by default: everything
not asked for stays off, which keeps a cold build short), olddefconfig fills
in the rest, and then every option asked for must hold in the final .config:
Kconfig silently drops an option whose dependencies are unmet, and a dropped
one is an error naming it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.core import procs
from harness.core.deadline import Deadline
from harness.core.errors import UserError
from kmod import templates

log = logging.getLogger(__name__)

Base = Literal["allnoconfig", "defconfig"]
BASES: tuple[Base, ...] = ("allnoconfig", "defconfig")
DEFAULT_BASE: Base = "allnoconfig"
TEMPLATE = "guest.config.j2"

# What a target gets unless it says otherwise (--aufs-option NAME=y|n).
DEFAULT_AUFS_OPTIONS: dict[str, bool] = {
    "BRANCH_MAX_127": True,
    "XATTR": True,
    "HNOTIFY": True,
    "HFSNOTIFY": True,
    "EXPORT": True,
    "RDU": True,
    "SHWH": True,
    "DIRREN": True,
    "BR_RAMFS": True,
    "BR_FUSE": True,
    "DEBUG": True,
}

# Branch filesystems the suite knows (harness/suite/unionfs/lab.py). tmpfs and
# ext4 are always built in (the guest's root is ext4); xfs and btrfs cost about
# an eighth of a cold build, so a target asks for them with --branch-fs.
ALWAYS_BRANCH_FS = ("ext4", "tmpfs")  # sorted, as branch_filesystems() returns them
OPTIONAL_BRANCH_FS = ("btrfs", "xfs")
DEFAULT_BRANCH_FS = "tmpfs,ext4"  # the suite's own default
_FS_ALIASES = {"mixed": "ext4+tmpfs+ext4"}

_SET = re.compile(r"^(CONFIG_\w+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_\w+) is not set$")
_OPTION = re.compile(r"^(?:CONFIG_AUFS_)?([A-Z0-9_]+)=([YN])$")


def parse_config(text: str) -> dict[str, str]:
    """Symbol -> value ("n" for "is not set"), later lines winning."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        m = _SET.match(line)
        if m:
            values[m[1]] = m[2]
            continue
        m = _UNSET.match(line)
        if m:
            values[m[1]] = "n"
    return values


def format_config(values: Mapping[str, str]) -> str:
    lines = [f"# {k} is not set" if v == "n" else f"{k}={v}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def aufs_options(overrides: Sequence[str] = ()) -> dict[str, bool]:
    """The default aufs options with NAME=y|n overrides applied."""
    options = dict(DEFAULT_AUFS_OPTIONS)
    for item in overrides:
        m = _OPTION.match(item.strip().upper())
        if not m:
            raise UserError(
                f"--aufs-option {item!r}: write NAME=y or NAME=n, e.g. --aufs-option SHWH=n"
            )
        options[m[1]] = m[2] == "Y"
    return options


def branch_filesystems(spec: str) -> tuple[str, ...]:
    """The filesystems a --branch-fs list needs, sorted: "tmpfs,mixed" -> ("ext4", "tmpfs").

    Same syntax as the suite's --branch-fs: comma-separated kinds, "mixed", or
    A+B+C with one filesystem per branch.
    """
    known = (*ALWAYS_BRANCH_FS, *OPTIONAL_BRANCH_FS)
    kinds: set[str] = set()
    for item in (v.strip() for v in spec.split(",")):
        if not item:
            continue
        for kind in _FS_ALIASES.get(item, item).split("+"):
            if kind not in known:
                raise UserError(
                    f"--branch-fs: unknown branch filesystem {kind!r}: "
                    f"use {', '.join(known)}, mixed, or A+B+C of those"
                )
            kinds.add(kind)
    if not kinds:
        raise UserError("--branch-fs is empty: name at least one filesystem, e.g. tmpfs,ext4")
    return tuple(sorted(kinds))


def render_fragment(
    options: Mapping[str, bool],
    base: Base = DEFAULT_BASE,
    extra: str | None = None,
    filesystems: Sequence[str] = ALWAYS_BRANCH_FS,
    kernel: tuple[int, int] = (5, 10),
) -> str:
    """The rendered fragment, with a user's fragment text appended (it wins).

    `filesystems` are the branch filesystems the kernel must provide; `kernel`
    (version, patchlevel) lets the template ask for options only kernels that
    have them (every requested option is verified to hold after olddefconfig).
    """
    text = templates.render(
        TEMPLATE,
        base=base,
        aufs_fs="m",
        aufs_options=dict(options),
        filesystems=sorted(set(filesystems)),
        kernel=kernel,
    )
    if extra:
        text += "\n# --- user fragment\n" + extra.rstrip("\n") + "\n"
    return text


@dataclass(frozen=True)
class Dropped:
    symbol: str
    wanted: str
    got: str

    def describe(self) -> str:
        got = "unset" if self.got in ("", "n") else f"={self.got}"
        return f"{self.symbol}={self.wanted} asked for, final .config has it {got}"


def verify(requested: Mapping[str, str], final: Mapping[str, str]) -> list[Dropped]:
    """Every requested value that did not survive into the final .config."""
    dropped = []
    for symbol, wanted in requested.items():
        got = final.get(symbol, "")
        if wanted == "n":
            if got not in ("", "n"):
                dropped.append(Dropped(symbol, wanted, got))
        elif got != wanted:
            dropped.append(Dropped(symbol, wanted, got))
    return dropped


def make_config(
    make: Sequence[str], tree: Path, fragment: str, base: Base, logfile: Path, deadline: Deadline
) -> dict[str, str]:
    """Write tree/.config from base + fragment, then verify it; returns the final values.

    `make` is the make argv prefix (make -C tree ARCH=... CC=...).
    """
    frag_file = tree / ".aufs-harness.fragment"
    frag_file.write_text(fragment)
    requested = parse_config(fragment)
    if base == "allnoconfig":
        # allnoconfig with KCONFIG_ALLCONFIG: asked-for values first, everything else off.
        procs.run(
            [*make, f"KCONFIG_ALLCONFIG={frag_file}", "allnoconfig"],
            deadline=deadline,
            logfile=logfile,
            tree=True,
        )
    elif base == "defconfig":
        procs.run([*make, "defconfig"], deadline=deadline, logfile=logfile, tree=True)
        merged = parse_config((tree / ".config").read_text())
        merged.update(requested)
        (tree / ".config").write_text(format_config(merged))
    else:
        raise UserError(f"unknown config base {base!r}: use one of {', '.join(BASES)}")
    procs.run([*make, "olddefconfig"], deadline=deadline, logfile=logfile, tree=True)
    final = parse_config((tree / ".config").read_text())
    dropped = verify(requested, final)
    if dropped:
        names = "; ".join(d.describe() for d in dropped)
        raise UserError(
            f"config: {len(dropped)} option(s) did not hold: {names}. "
            "Their dependencies are unmet: add those to the fragment (--config-fragment) "
            "or drop the option"
        )
    log.info("config: all %d requested options hold", len(requested))
    return final
