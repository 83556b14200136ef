"""Fix-up workflow: a patched tree a person edits, and their edits as fix-up patches.

prepare(spec) copies the kernel, applies the aufs series (and the fix-ups
already in --fixup-dir) the way a build does, and leaves, under
cache_dir()/kmod/prepared/KEY/:
  base/     the tree as the series left it (never edited)
  src/      an editable copy of it, with FILE.rej beside every file that has
            rejected hunks
  before/PATCH/FILE  each file a series patch touches, as it was just before
            that patch (what a replacement for a failed patch is diffed against)
  state.json, manifest.json  what was applied, and every file's size and mtime

make_fixups(spec, to) turns the edits in src/ into patches in `to`:
  - for each series patch that failed, a replacement named like it
    (aufs6-mmap.patch: `plan` uses it instead of the series one), the diff of
    the files it touches from before/PATCH to src;
  - every other edit as one more fix-up (NNNN-fixup-KERNEL.patch), the diff
    of base to src, applied after the series.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core import procs
from harness.core.deadline import Deadline
from harness.core.errors import InfraError, UserError
from harness.core.store import key_of
from kmod import patches
from kmod.pipeline import BuildSpec, _Clock, sources
from kmod.source import KernelSource, kmod_cache

log = logging.getLogger(__name__)

_IGNORED = re.compile(r"(\.rej|\.orig|~|\.swp|\.swo)$")
REPOSITORY = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Prepared:
    """A prepared tree: where to edit, what failed, whether it was made just now."""

    root: Path
    failed: dict[str, list[str]]  # series patch -> files with rejected hunks
    rejects: list[Path]
    reused: bool

    @property
    def src(self) -> Path:
        return self.root / "src"


def prepared_root(ks: KernelSource, aufs_commit: str) -> Path:
    """One prepared tree per kernel source and aufs commit."""
    return kmod_cache() / "prepared" / key_of({"kernel": ks.identity, "aufs": aufs_commit})[:16]


def prepare(spec: BuildSpec, deadline: Deadline, *, fresh: bool = False) -> Prepared:
    """Leave a patched, editable tree for `spec` (reused with its edits unless `fresh`).

    UserError / InfraError as the build's source stages raise them.
    """
    ks, choice = sources(spec, _Clock(), deadline)
    root = prepared_root(ks, choice.commit)
    state_file = root / "state.json"
    if state_file.is_file() and not fresh:
        state = json.loads(state_file.read_text())
        return Prepared(root, state["failed"], _rejects_in(root / "src", state), reused=True)
    plan = patches.plan(choice.tree, choice.major, spec.fixup_dir, spec.loopback)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    result = patches.prepare(
        ks.tree, choice.tree, plan, dest=root / "base", logdir=root / "logs",
        deadline=deadline, hardlink=ks.owned, snapshots=root / "before",
    )  # fmt: skip
    patches.copy_tree(root / "base", root / "src", deadline)  # a real copy: edits stay here
    failed = {r.name: [f.path for f in r.files if f.status == "failed"] for r in result.failed}
    state = {
        "kernel": ks.identity,
        "kernel_version": str(ks.version),
        "aufs_commit": choice.commit,
        "series": [p.name for p in plan.series],
        "touched": {p.name: sorted(patches.hunk_counts(p.read_text())) for p in plan.series},
        "failed": failed,
        "reports": [r.to_json() for r in result.reports],
    }
    rejects = _place_rejects(root, result.failed)
    state["rejects"] = [str(p.relative_to(root / "src")) for p in rejects]
    (root / "manifest.json").write_text(json.dumps(manifest(root / "src", deadline)))
    state_file.write_text(json.dumps(state, indent=2))
    return Prepared(root, failed, rejects, reused=False)


def _place_rejects(root: Path, failed: list[patches.PatchReport]) -> list[Path]:
    """FILE.rej beside each file of src/ with rejected hunks (from the kept rejects)."""
    placed: list[Path] = []
    for report in failed:
        for f in report.files:
            kept = root / "logs" / "rejects" / report.name / f"{f.path}.rej"
            if kept.is_file():
                dest = root / "src" / f"{f.path}.rej"
                shutil.copyfile(kept, dest)
                placed.append(dest)
    return placed


def _rejects_in(src: Path, state: dict[str, Any]) -> list[Path]:
    return [src / rel for rel in state.get("rejects", [])]


def manifest(tree: Path, deadline: Deadline) -> dict[str, list[int]]:
    """{relative path: [size, mtime_ns]} of every file, editor leftovers and .rej skipped."""
    out: dict[str, list[int]] = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            if _IGNORED.search(name):
                continue
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, tree)] = [st.st_size, st.st_mtime_ns]
        deadline.check(f"reading {tree}")
    return out


def edited_files(root: Path, deadline: Deadline) -> list[str]:
    """Files of src/ added, removed or changed (size or mtime) since prepare, sorted."""
    before: dict[str, list[int]] = json.loads((root / "manifest.json").read_text())
    now = manifest(root / "src", deadline)
    return sorted(p for p in before.keys() | now.keys() if before.get(p) != now.get(p))


def file_diff(old: Path, new: Path, rel: str, deadline: Deadline) -> str:
    """A -p1 unified diff of one file (a missing side counts as empty: creation/removal)."""
    res = procs.run(
        ["diff", "-uN", "--label", f"a/{rel}", "--label", f"b/{rel}", old, new],
        deadline=deadline,
        check=False,
        env={"LC_ALL": "C"},
    )
    if res.returncode > 1:
        raise InfraError(f"diff {old} {new} failed: {res.stderr.strip()}")
    return res.stdout


def make_fixups(
    spec: BuildSpec, to: Path, deadline: Deadline, *, name: str | None = None
) -> list[Path]:
    """Write the edits of the prepared tree for `spec` as fix-up patches into `to`.

    Returns the files written. UserError when nothing was prepared or edited,
    when `to` lies inside the harness's repository, or when a failed patch's
    files are touched by a later series patch too (its replacement would
    carry that patch's changes twice).
    """
    to = to.expanduser().resolve()
    if to == REPOSITORY or REPOSITORY in to.parents:
        raise UserError(
            f"--to {to} is inside the aufs-harness repository: fix-ups are yours, keep them "
            "in a directory of your own (e.g. ~/aufs-fixups/KERNEL)"
        )
    ks, choice = sources(spec, _Clock(), deadline)
    root = prepared_root(ks, choice.commit)
    if not (root / "state.json").is_file():
        raise UserError(
            f"nothing prepared for {ks.describe()} and aufs {choice.branch}: run "
            "`aufs-harness kmod prepare` with the same options first"
        )
    state = json.loads((root / "state.json").read_text())
    edited = edited_files(root, deadline)
    if not edited:
        raise UserError(f"no file of {root / 'src'} was edited: edit it, then run fixup again")
    to.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    covered: set[str] = set()
    for patch_name in state["failed"]:
        text, files = _replacement(root, state, patch_name, edited, deadline)
        covered |= files
        written.append(_write(to / patch_name, text))
    rest = [p for p in edited if p not in covered]
    if rest:
        text = "".join(file_diff(root / "base" / p, root / "src" / p, p, deadline) for p in rest)
        fname = name or f"{_next_number(to):04d}-fixup-{state['kernel_version']}.patch"
        written.append(_write(to / fname, text))
    return written


def _replacement(
    root: Path, state: dict[str, Any], patch_name: str, edited: list[str], deadline: Deadline
) -> tuple[str, set[str]]:
    """The replacement for a failed series patch: its files from before it to now."""
    files: list[str] = state["touched"][patch_name]
    series: list[str] = state["series"]
    later = series[series.index(patch_name) + 1 :]
    overlap = sorted({f for p in later for f in state["touched"][p]} & set(files))
    if overlap:
        raise UserError(
            f"{', '.join(overlap)} is changed by {patch_name} and by a later series patch: "
            f"write the replacement for {patch_name} by hand from {root / 'src'}"
        )
    for rel in state["failed"][patch_name]:
        if rel not in edited:
            log.warning("%s was not edited: the replacement for %s leaves out its rejected "
                        "hunks (see %s.rej)", rel, patch_name, root / "src" / rel)  # fmt: skip
    before = root / "before" / patch_name
    text = "".join(file_diff(before / f, root / "src" / f, f, deadline) for f in files)
    return text, set(files)


def _write(path: Path, text: str) -> Path:
    if path.exists():
        log.info("replacing %s", path)
    path.write_text(text)
    log.info("wrote %s (%d lines)", path, text.count("\n"))
    return path


def _next_number(directory: Path) -> int:
    numbers = [int(m[1]) for p in directory.glob("*.patch") if (m := re.match(r"(\d+)", p.name))]
    return max(numbers, default=0) + 1
