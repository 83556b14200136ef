"""Prepare a patched kernel tree: copy, aufs series, aufs files, user fix-ups.

The user's tree is never written: it is copied into a work directory the
harness owns. GNU patch runs with -p1 --forward --batch, leaving no .orig
files; the rejects of a patch go to one file in the log directory, and its
output is parsed into per-file hunk bookkeeping (clean, offset, fuzz,
failed with hunk numbers).
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.core import procs
from harness.core.deadline import Deadline
from harness.core.errors import InfraError, UserError
from harness.core.store import file_sha256

log = logging.getLogger(__name__)

Status = Literal["clean", "offset", "fuzz", "failed"]
SERIES = ("kbuild", "base", "mmap", "standalone")
_RANK: dict[Status, int] = {"clean": 0, "offset": 1, "fuzz": 2, "failed": 3}

_FILE = re.compile(r"^(?:patching|checking) file (?:'(.+)'|(.+))$")
_OK = re.compile(
    r"^Hunk #(\d+) succeeded at (-?\d+)(?: with fuzz (\d+))?(?: \(offset (-?\d+) lines?\))?\.$"
)
_FAILED = re.compile(r"^Hunk #(\d+) FAILED at (-?\d+)")
_IGNORED = re.compile(r"^(\d+) out of (\d+) hunks? ignored")
_MISSING = re.compile(r"^can't find file to patch at input line (\d+)")


@dataclass
class FileReport:
    path: str
    hunks: int = 0
    offset: dict[int, int] = field(default_factory=dict)
    fuzz: dict[int, int] = field(default_factory=dict)
    failed: list[int] = field(default_factory=list)
    failed_at: dict[int, int] = field(default_factory=dict)
    problem: str = ""

    @property
    def status(self) -> Status:
        if self.failed or self.problem:
            return "failed"
        if self.fuzz:
            return "fuzz"
        if self.offset:
            return "offset"
        return "clean"

    def describe(self) -> str:
        if self.problem:
            return f"{self.path}: {self.problem}"
        if self.failed:
            nums = ", ".join(str(h) for h in self.failed)
            word = "hunk" if len(self.failed) == 1 else "hunks"
            total = f" of {self.hunks}" if self.hunks else ""
            return f"{self.path}: {word} {nums}{total} FAILED"
        parts = []
        for h in sorted({*self.fuzz, *self.offset}):
            bits = [f"hunk {h}"]
            if h in self.fuzz:
                bits.append(f"fuzz {self.fuzz[h]}")
            if h in self.offset:
                bits.append(f"offset {self.offset[h]:+d}")
            parts.append(" ".join(bits))
        return f"{self.path}: " + (", ".join(parts) if parts else "clean")


@dataclass
class PatchReport:
    name: str
    sha256: str
    files: list[FileReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    returncode: int = 0
    rejects: str | None = None
    failed_hunks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> Status:
        if self.problems or self.returncode != 0:
            return "failed"
        worst: Status = "clean"
        for f in self.files:
            if _RANK[f.status] > _RANK[worst]:
                worst = f.status
        return worst

    def failures(self) -> list[str]:
        out = [f.describe() for f in self.files if f.status == "failed"]
        out += self.problems
        if not out and self.returncode != 0:
            out.append(f"patch exited {self.returncode}")
        return out

    def summary(self) -> str:
        status = self.status
        if status == "failed":
            return f"{self.name}: FAILED: " + "; ".join(self.failures())
        if status == "clean":
            return f"{self.name}: clean"
        notes = [f.describe() for f in self.files if f.status != "clean"]
        return f"{self.name}: {status}: " + "; ".join(notes)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "status": self.status,
            "summary": self.summary(),
            "rejects": self.rejects,
            "failed_hunks": self.failed_hunks,
        }


def hunk_counts(patch_text: str) -> dict[str, int]:
    """Hunks per target file of a unified diff (the b/ side, stripped of one level)."""
    counts: dict[str, int] = {}
    current: str | None = None
    for line in patch_text.splitlines():
        if line.startswith("+++ "):
            target = line[4:].split("\t", 1)[0].strip()
            if target == "/dev/null":
                current = None
                continue
            current = target.split("/", 1)[1] if "/" in target else target
            counts.setdefault(current, 0)
        elif line.startswith("@@ ") and current is not None:
            counts[current] += 1
    return counts


def parse_patch_output(output: str, hunks: dict[str, int] | None = None) -> list[FileReport]:
    """Turn GNU patch's messages (LC_ALL=C) into one FileReport per file."""
    hunks = hunks or {}
    files: list[FileReport] = []
    current: FileReport | None = None
    pending_missing: str | None = None
    for raw in output.splitlines():
        line = raw.strip()
        m = _FILE.match(line)
        if m:
            path = m[1] or m[2]
            current = FileReport(path, hunks=hunks.get(path, 0))
            files.append(current)
            continue
        m = _MISSING.match(line)
        if m:
            pending_missing = f"can't find file to patch (patch line {m[1]})"
            current = None
            continue
        if pending_missing and line.startswith("|+++ "):
            path = line[5:].split("\t", 1)[0].strip().split("/", 1)[-1]
            files.append(FileReport(path, hunks=hunks.get(path, 0), problem=pending_missing))
            pending_missing = None
            continue
        if current is None:
            continue
        m = _OK.match(line)
        if m:
            hunk = int(m[1])
            if m[3] and int(m[3]) > 0:
                current.fuzz[hunk] = int(m[3])
            if m[4]:
                current.offset[hunk] = int(m[4])
            continue
        m = _FAILED.match(line)
        if m:
            current.failed.append(int(m[1]))
            current.failed_at[int(m[1])] = int(m[2])
            continue
        if line.startswith("Reversed (or previously applied) patch detected"):
            current.problem = "reversed or already applied"
            continue
        if "which already exists!" in line:
            current.problem = "would create a file that already exists"
            continue
        m = _IGNORED.match(line)
        if m and not current.problem:
            current.problem = f"{m[1]} of {m[2]} hunks ignored"
    return files


def apply_patch(tree: Path, patch: Path, logdir: Path, deadline: Deadline) -> PatchReport:
    """Apply `patch` to `tree` with GNU patch and account for every hunk."""
    logdir.mkdir(parents=True, exist_ok=True)
    rejects = logdir / f"{patch.name}.rej"
    rejects.unlink(missing_ok=True)
    text = patch.read_text(errors="replace")
    res = procs.run(
        [
            "patch", "-p1", "--forward", "--batch", "--no-backup-if-mismatch", "--read-only=ignore",
            f"--reject-file={rejects}", "-d", tree, "-i", patch.resolve(),
        ],
        deadline=deadline,
        env={"LC_ALL": "C"},
        check=False,
    )  # fmt: skip
    output = res.stdout + res.stderr
    (logdir / f"{patch.name}.log").write_text(output)
    report = PatchReport(patch.name, file_sha256(patch), returncode=res.returncode)
    report.files = parse_patch_output(output, hunk_counts(text))
    if res.returncode == 2 and not report.files:
        tail = output.strip().splitlines()[-1:] or ["no output"]
        report.problems.append(f"patch could not run: {tail[0]}")
    if "Only garbage was found" in output:
        report.problems.append("not a patch (only garbage found)")
    if rejects.is_file() and rejects.stat().st_size:
        report.rejects = str(rejects)
        report.failed_hunks = keep_failed_hunks(report, tree, logdir / "rejects")
    log.info("%s", report.summary())
    return report


CONTEXT_LINES = 30


def split_rejects(text: str) -> dict[str, list[str]]:
    """A GNU patch reject file -> {path: [hunk text, ...]} in file order.

    Each hunk keeps its "@@ -a,b +c,d @@" line; paths are as patch wrote
    them (already stripped of the a/ b/ level).
    """
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.startswith("--- ") and nxt.startswith("+++ "):
            path = nxt[4:].split("\t", 1)[0].strip()
            current = out.setdefault(path, [])
        elif line.startswith("+++ ") and current is not None and not current:
            continue
        elif line.startswith("@@ ") and current is not None:
            current.append(line)
        elif current:
            current[-1] += line
    return out


def context_around(path: Path, line: int, around: int = CONTEXT_LINES) -> tuple[int, int, str]:
    """(first, last, text): lines line-around .. line+around of `path`, each numbered."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return 0, 0, f"(cannot read {path.name}: {exc.strerror})\n"
    first = max(1, line - around)
    last = min(len(lines), line + around)
    text = "".join(f"{n:6d}  {lines[n - 1]}\n" for n in range(first, last + 1))
    return first, last, text


def keep_failed_hunks(report: PatchReport, tree: Path, outdir: Path) -> list[dict[str, Any]]:
    """Keep each failed hunk with the kernel's text around where it was meant to go.

    The text is the file as the tree has it right after this patch (its
    other hunks applied), CONTEXT_LINES either side of the line patch
    tried. Writes outdir/PATCH/FILE.rej (that file's rejected hunks) and
    outdir/PATCH/FILE.hunkN.txt (hunk + context); returns one record per
    hunk: patch, file, hunk, at, lines [first, last], reject, context, kept.
    """
    assert report.rejects is not None
    by_file = split_rejects(Path(report.rejects).read_text(errors="replace"))
    records: list[dict[str, Any]] = []
    for f in report.files:
        hunks = by_file.get(f.path, [])
        if not f.failed or not hunks:
            continue
        base = outdir / report.name / f.path
        base.parent.mkdir(parents=True, exist_ok=True)
        base.with_name(base.name + ".rej").write_text(
            f"--- a/{f.path}\n+++ b/{f.path}\n" + "".join(hunks)
        )
        for number, hunk in zip(f.failed, hunks, strict=False):
            records.append(_keep_hunk(report.name, f, number, hunk, tree, base))
    return records


def _keep_hunk(
    patch: str, f: FileReport, number: int, hunk: str, tree: Path, base: Path
) -> dict[str, Any]:
    at = f.failed_at.get(number, 0)
    first, last, context = context_around(tree / f.path, at)
    kept = base.with_name(f"{base.name}.hunk{number}.txt")
    kept.write_text(
        f"{patch}: {f.path} hunk #{number} FAILED at {at}\n\n--- the rejected hunk\n{hunk}\n"
        f"--- {f.path} lines {first}-{last} as the kernel has it after {patch}\n{context}"
    )
    return {
        "patch": patch, "file": f.path, "hunk": number, "at": at, "lines": [first, last],
        "reject": hunk, "context": context, "kept": str(kept),
    }  # fmt: skip


@dataclass(frozen=True)
class PatchPlan:
    """The patches to apply, in order, and what makes them unique."""

    series: list[Path]
    fixups: list[Path]
    replaced: list[str]

    def fingerprint(self) -> list[tuple[str, str]]:
        return [(p.name, file_sha256(p)) for p in [*self.series, *self.fixups]]


def plan(aufs_tree: Path, major: int, fixup_dir: Path | None, loopback: bool = False) -> PatchPlan:
    """The aufsN series (kbuild, base, mmap, standalone[, loopback]) plus fix-ups.

    A fix-up named like a series patch (aufs6-mmap.patch) replaces it; the
    other *.patch files of fixup_dir are applied after, sorted by name.
    """
    names = [f"aufs{major}-{part}.patch" for part in SERIES]
    if loopback:
        names.append(f"aufs{major}-loopback.patch")
    fixups: list[Path] = []
    if fixup_dir is not None:
        if not fixup_dir.is_dir():
            raise UserError(
                f"--fixup-dir {fixup_dir} is not a directory: give a directory of *.patch"
            )
        fixups = sorted(fixup_dir.glob("*.patch"))
        if not fixups:
            raise UserError(
                f"--fixup-dir {fixup_dir} holds no *.patch file: add one or drop the option"
            )
    by_name = {p.name: p for p in fixups}
    series: list[Path] = []
    replaced: list[str] = []
    for name in names:
        if name in by_name:
            series.append(by_name.pop(name))
            replaced.append(name)
            continue
        path = aufs_tree / name
        if not path.is_file():
            raise UserError(f"aufs source has no {name}: is it aufs-standalone for aufs{major}?")
        series.append(path)
    rest = [p for p in fixups if p.name in by_name]
    return PatchPlan(series=series, fixups=rest, replaced=replaced)


def copy_tree(src: Path, dest: Path, deadline: Deadline, *, hardlink: bool = False) -> None:
    """Copy a kernel tree to dest (which must not exist); directories become writable.

    hardlink=True links files instead of copying them: only for trees the
    harness owns and keeps read-only, since GNU patch replaces a file rather
    than writing into it, and the build only creates files.
    """
    if dest.exists():
        raise InfraError(f"{dest} exists already; refusing to copy over it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("%s %s to %s", "linking" if hardlink else "copying", src, dest)
    procs.run(["cp", "-al" if hardlink else "-a", src, dest], deadline=deadline)
    if hardlink:
        procs.run(["find", dest, "-type", "d", "-exec", "chmod", "u+w", "{}", "+"],
                  deadline=deadline)  # fmt: skip
    else:
        procs.run(["chmod", "-R", "u+w", dest], deadline=deadline)


def _install(src: Path, dest: Path) -> None:
    """Copy one file, replacing (never writing through) whatever dest was."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        dest.unlink()
    shutil.copy2(src, dest, follow_symlinks=False)


def copy_aufs_files(aufs_tree: Path, tree: Path) -> None:
    """fs/, Documentation/ and include/uapi/linux/aufs_type.h, as aufs's README says."""
    for sub in ("fs", "Documentation"):
        for path in sorted((aufs_tree / sub).rglob("*")):
            if path.is_file() or path.is_symlink():
                _install(path, tree / path.relative_to(aufs_tree))
    header = aufs_tree / "include/uapi/linux/aufs_type.h"
    if not header.is_file():
        raise UserError("aufs source has no include/uapi/linux/aufs_type.h: not aufs-standalone?")
    _install(header, tree / "include/uapi/linux/aufs_type.h")


def snapshot_targets(tree: Path, patch: Path, dest: Path) -> None:
    """Copy the files `patch` touches, as `tree` has them now, to dest (missing ones skipped)."""
    for rel in hunk_counts(patch.read_text(errors="replace")):
        src = tree / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@dataclass
class PrepareResult:
    reports: list[PatchReport]

    @property
    def failed(self) -> list[PatchReport]:
        return [r for r in self.reports if r.status == "failed"]

    def details(self) -> list[str]:
        return [f"{r.name}: {msg}" for r in self.failed for msg in r.failures()]


def prepare(
    kernel_tree: Path,
    aufs_tree: Path,
    the_plan: PatchPlan,
    *,
    dest: Path,
    logdir: Path,
    deadline: Deadline,
    hardlink: bool = False,
    snapshots: Path | None = None,
) -> PrepareResult:
    """Copy, patch with the series, copy aufs files, apply fix-ups.

    Every series patch is tried even after one fails, so one run names all
    failures; fix-ups are applied only onto a fully patched tree. With
    `snapshots`, the files each series patch touches are saved as they were
    just before it, in snapshots/PATCH/FILE (what a replacement patch is
    diffed against).
    """
    copy_tree(kernel_tree, dest, deadline, hardlink=hardlink)
    reports = []
    for p in the_plan.series:
        if snapshots is not None:
            snapshot_targets(dest, p, snapshots / p.name)
        reports.append(apply_patch(dest, p, logdir, deadline))
    copy_aufs_files(aufs_tree, dest)
    if all(r.status != "failed" for r in reports):
        for p in the_plan.fixups:
            reports.append(apply_patch(dest, p, logdir, deadline))
    return PrepareResult(reports)
