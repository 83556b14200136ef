"""A matrix file: TOML, validated by harness/schemas/matrix.schema.json, expanded
into cells.

    version = 1
    name = "nightly"
    [defaults]                      # every cell starts from these
    distro = "bookworm"
    [[include]]                     # a group: fixed values, and `vary` lists that multiply
    kernel = "stock"
    vary.distro = ["bookworm", "trixie"]
    [[exclude]]                     # drop the expanded cells matching every key (fnmatch)
    distro = "trixie"

Every problem is a UserError of one line naming the file, the key and what is
allowed: TOML syntax, an unknown key, a bad value (the schema), an impossible
combination (a per-cell schema: aufs on a stock kernel, an aufs cell with no
aufs source), duplicate cell names, a fix-up directory that does not exist.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Any

from harness import argcheck
from harness.core.errors import UserError
from harness.matrix import schema
from harness.runner import FRESH_VMS
from kmod import source

log = logging.getLogger(__name__)

AUFS_SRC_ENV = "AUFS_HARNESS_AUFS_SRC"
STOCK = "stock"
# What a cell is when neither the cell nor [defaults] says otherwise.
BUILTIN_DEFAULTS: dict[str, Any] = {
    "kernel": STOCK,
    "distro": "bookworm",
    "drivers": ["overlay"],
    "branch_fs": ["tmpfs", "ext4"],
    "aufs_options": [],
    "suite_args": [],
    "kernel_cmdline": [],
    "workers": 2,
    "fresh_vms": FRESH_VMS,
    "scenario": "suite",
    "vms": 1,
    "dist": "load",
}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Timeouts:
    """Per-cell budgets in seconds; `cell` None: the runner's own sum of budgets."""

    boot: float = 180.0
    suite: float = 1800.0
    check: float = 300.0
    cell: float | None = None


@dataclass(frozen=True)
class Cell:
    """One cell of the matrix: a kernel on a userland with drivers and branch
    filesystems. `kernel` is "stock" (the image's own Debian kernel) or a kernel
    to build with aufs in the kernel notation (debian:SUITE[=VERSION], URL,
    git+URL@REF, path:...)."""

    name: str
    kernel: str
    distro: str
    drivers: tuple[str, ...]
    branch_fs: tuple[str, ...]
    aufs_src: str | None = None
    aufs_ref: str | None = None
    fixup_dir: str | None = None
    aufs_options: tuple[str, ...] = ()
    option_sets: tuple[str, ...] | None = None
    suite_args: tuple[str, ...] = ()
    kernel_cmdline: tuple[str, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    workers: int = 2
    fresh_vms: int = FRESH_VMS
    scenario: str = "suite"  # or "docker": harness.scenario
    vms: str = "1"  # `run --vms`: a count or "CPUSxMB,..." (harness.multivm.parse_vms)
    dist: str = "load"  # `run --dist`

    @property
    def stock(self) -> bool:
        return self.kernel == STOCK

    def axes(self) -> dict[str, Any]:
        """The cell's axes as plain data (report.json's extra["cell"])."""
        return {
            "kernel": self.kernel,
            "aufs_src": self.aufs_src,
            "aufs_ref": self.aufs_ref,
            "fixup_dir": self.fixup_dir,
            "distro": self.distro,
            "drivers": list(self.drivers),
            "branch_fs": list(self.branch_fs),
            "aufs_options": list(self.aufs_options),
            "option_sets": list(self.option_sets) if self.option_sets is not None else None,
            "suite_args": list(self.suite_args),
            "kernel_cmdline": list(self.kernel_cmdline),
            "timeouts": vars(self.timeouts).copy(),
            **({"scenario": self.scenario} if self.scenario != "suite" else {}),
        }


@dataclass(frozen=True)
class Matrix:
    """A loaded matrix: its cells in file order and the lines saying which
    cells were left out and how to enable them."""

    path: Path
    name: str
    cells: tuple[Cell, ...]
    left_out: tuple[str, ...] = ()


def default_matrix() -> Path:
    """The shipped default matrix (package data)."""
    return Path(str(resources.files("harness").joinpath("matrices", "default.toml")))


def load(path: Path, env: dict[str, str] | None = None) -> Matrix:
    """Read, validate and expand the matrix file at `path`; `env` (default
    os.environ) supplies $AUFS_HARNESS_AUFS_SRC and ${VAR} expansions.
    Raises UserError, one line, for any problem with the file."""
    env = dict(os.environ) if env is None else env
    data = read_toml(path)
    schema.check(schema.MATRIX, data, str(path))
    skip = data.get("aufs_src_missing", "error") == "skip"
    cells: list[Cell] = []
    left_out: list[str] = []
    try:
        expanded = expand(data)
    except UserError as exc:  # a cell name's placeholder: say which file
        raise UserError(f"{path}: {exc}") from None
    for index, raw in enumerate(expanded):
        where = f"{path}: include[{index}]" if "name" not in raw else f"{path}: cell {raw['name']}"
        why = _resolve_paths(raw, env)
        if why and skip:
            left_out.append(f"{raw['name']}: left out: {why}")
            continue
        schema.check(schema.MATRIX, raw, where, ref="cell")
        cells.append(_cell(raw, where))
    _unique(cells, path)
    if not cells:
        raise UserError(f"{path}: no cell left to run ({'; '.join(left_out) or 'all excluded'})")
    return Matrix(path, str(data.get("name", path.stem)), tuple(cells), tuple(left_out))


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document at `path`; UserError when missing or not TOML."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file: give an existing TOML file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory: give a TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:  # not a directory on the way, unreadable
        raise UserError(f"{path}: cannot read it ({exc.strerror}): give a TOML file") from None
    where = _nan_at(data)
    if where is not None:  # TOML has nan; the schema's bounds cannot catch it (nan < 10 is False)
        raise UserError(f"{path}: {where or '(top level)'}: nan is not a number: give a number")
    return data


def _nan_at(value: Any, at: str = "") -> str | None:
    """The dotted key of the first NaN in a TOML document, None when there is none."""
    if isinstance(value, float) and math.isnan(value):
        return at
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        found = _nan_at(item, f"{at}.{key}" if at else str(key))
        if found is not None:
            return found
    return None


def expand(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The cells of a validated matrix document as dicts, in file order: each
    [[include]] group over [defaults] over BUILTIN_DEFAULTS, one per combination
    of its `vary` lists, named, minus those an [[exclude]] rule matches."""
    base = {**BUILTIN_DEFAULTS, **data.get("defaults", {})}
    rules = data.get("exclude", [])
    cells = []
    for group in data["include"]:
        fixed = {k: v for k, v in group.items() if k != "vary"}
        vary = group.get("vary", {})
        for combo in itertools.product(*vary.values()):
            raw = {**base, **fixed, **dict(zip(vary, combo, strict=True))}
            raw["timeouts"] = {**base.get("timeouts", {}), **raw.get("timeouts", {})}
            raw["name"] = cell_name(raw)
            if not any(excluded(raw, rule) for rule in rules):
                cells.append(raw)
    return cells


def cell_name(raw: dict[str, Any]) -> str:
    """The cell's `name` with {axis} placeholders filled in (lists joined by
    "+"), or a name made of its axes: "bookworm-stock-overlay",
    "debian-bullseye-aufs5.10.140-tmpfs+ext4"."""
    words = {k: _word(v) for k, v in raw.items() if k != "name"}
    words.setdefault("aufs_ref", "aufs")
    template = raw.get("name") or (
        "{distro}-stock-{drivers}"
        if raw.get("kernel", STOCK) == STOCK
        else "{kernel}-{aufs_ref}-{branch_fs}"
    )
    try:
        name = template.format(**words)
    except (KeyError, IndexError, ValueError) as exc:
        what = f"unknown placeholder {exc}" if isinstance(exc, KeyError) else f"bad braces ({exc})"
        raise UserError(
            f"name {template!r}: {what}; use axis names such as "
            "{distro}, {kernel}, {aufs_ref}, {branch_fs}, {drivers}"
        ) from None
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", name).strip("-")


def _word(value: Any) -> str:
    if isinstance(value, list):
        return "+".join(str(v) for v in value)
    if isinstance(value, dict):
        return "-".join(f"{k}{v}" for k, v in value.items())
    return str(value).split("=", 1)[0] if str(value).startswith("debian:") else str(value)


def excluded(raw: dict[str, Any], rule: dict[str, str]) -> bool:
    """Whether every key of the exclude `rule` matches the cell (fnmatch; a list
    value is matched joined by commas, so "*aufs*" matches ["overlay", "aufs"])."""
    for key, pattern in rule.items():
        value = raw.get(key)
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value or "")
        if not fnmatchcase(text, pattern):
            return False
    return True


def _resolve_paths(raw: dict[str, Any], env: dict[str, str]) -> str:
    """Fill in aufs_src from the environment for a built kernel and expand ${VAR}
    in aufs_src and fixup_dir, in place. Returns why the cell cannot run ("" if
    it can): no aufs source, or a variable that is not set."""
    if raw.get("kernel", STOCK) == STOCK:
        return ""
    if not raw.get("aufs_src") and env.get(AUFS_SRC_ENV):
        raw["aufs_src"] = env[AUFS_SRC_ENV]
    if not raw.get("aufs_src"):
        return f"no aufs source: set {AUFS_SRC_ENV} to an aufs-standalone clone or URL"
    for key in ("aufs_src", "fixup_dir"):
        if key not in raw:
            continue
        unset = [v for v in _VAR.findall(raw[key]) if not env.get(v)]
        if unset:
            return f"{key} needs ${{{unset[0]}}}: set it"
        raw[key] = _VAR.sub(lambda m: env[m.group(1)], raw[key])
    return ""


def _cell(raw: dict[str, Any], where: str) -> Cell:
    """A validated cell dict as a Cell; a fix-up directory must exist."""
    fixup = raw.get("fixup_dir")
    if fixup is not None and not Path(fixup).is_dir():
        raise UserError(f"{where}: fixup_dir: {fixup} is not a directory: give one of *.patch")
    if raw["kernel"] != STOCK:  # what a cell reads from this machine must be here
        problem = source.local_problem(raw["kernel"])
        if problem is not None:
            raise UserError(f"{where}: kernel: {problem}")
        aufs_src = str(raw.get("aufs_src") or "")
        if not argcheck.is_url(aufs_src) and not Path(aufs_src).expanduser().exists():
            raise UserError(
                f"{where}: aufs_src: {aufs_src} does not exist: give an aufs-standalone clone, "
                "a git bundle or a git URL"
            )
    sets = raw.get("option_sets")
    return Cell(
        name=raw["name"],
        kernel=raw["kernel"],
        distro=raw["distro"],
        drivers=tuple(raw["drivers"]),
        branch_fs=tuple(raw["branch_fs"]),
        aufs_src=raw.get("aufs_src"),
        aufs_ref=raw.get("aufs_ref"),
        fixup_dir=str(Path(fixup).resolve()) if fixup else None,
        aufs_options=tuple(raw["aufs_options"]),
        option_sets=tuple(sets) if sets is not None else None,
        suite_args=tuple(raw["suite_args"]),
        kernel_cmdline=tuple(raw["kernel_cmdline"]),
        timeouts=Timeouts(**raw.get("timeouts", {})),
        workers=raw["workers"],
        fresh_vms=raw["fresh_vms"],
        scenario=raw["scenario"],
        vms=",".join(raw["vms"]) if isinstance(raw["vms"], list) else str(raw["vms"]),
        dist=raw["dist"],
    )


def _unique(cells: list[Cell], path: Path) -> None:
    seen: set[str] = set()
    for c in cells:
        if c.name in seen:
            raise UserError(
                f"{path}: name: two cells are named {c.name!r}; give each [[include]] a "
                "name with {axis} placeholders for the axes it varies"
            )
        seen.add(c.name)
