"""Patch bookkeeping: clean, offset, fuzz, failed with hunk numbers; the plan; prepare."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.core.deadline import Deadline
from harness.core.errors import UserError
from kmod import patches
from tests.unit.kmod_fakes import (
    BRANCHES,
    MMAP,
    VFSUB_FIXUP,
    make_kernel_tree,
    mmap_patch,
    write,
)


def D() -> Deadline:
    """A fresh deadline per call: one made at import would expire in a long session."""
    return Deadline(60, "test")


def apply(tmp_path: Path, patch_text: str, mmap: list[str] | None = None) -> patches.PatchReport:
    tree = make_kernel_tree(tmp_path / "k", mmap=mmap)
    p = write(tmp_path / "p" / "test.patch", patch_text)
    return patches.apply_patch(tree, p, tmp_path / "logs", D())


def test_clean(tmp_path: Path) -> None:
    r = apply(tmp_path, mmap_patch({5: "five\n", 40: "forty\n"}))
    assert r.status == "clean"
    assert r.summary() == "test.patch: clean"
    assert r.files[0].hunks == 2
    tree = tmp_path / "k"
    assert "forty\n" in (tree / "mm/mmap.c").read_text()
    assert not list(tree.rglob("*.orig")) and not list(tree.rglob("*.rej"))


def test_offset(tmp_path: Path) -> None:
    r = apply(tmp_path, mmap_patch({20: "twenty\n"}), mmap=["added\n"] * 4 + MMAP)
    assert r.status == "offset"
    assert r.files[0].offset == {1: 4}
    assert "mm/mmap.c: hunk 1 offset +4" in r.summary()


def test_fuzz(tmp_path: Path) -> None:
    changed = list(MMAP)
    changed[17] = "context changed upstream\n"  # first context line of the hunk at 20
    r = apply(tmp_path, mmap_patch({20: "twenty\n"}), mmap=changed)
    assert r.status == "fuzz"
    assert r.files[0].fuzz == {1: 2}
    assert "mm/mmap.c: hunk 1 fuzz 2" in r.summary()


def test_failed_names_file_and_hunks(tmp_path: Path) -> None:
    changed = list(MMAP)
    for i in range(14, 27):  # rewrite the region of the second hunk
        changed[i] = f"rewritten {i}\n"
    for i in range(44, 56):  # and of the third
        changed[i] = f"rewritten {i}\n"
    r = apply(tmp_path, mmap_patch({5: "a\n", 20: "b\n", 50: "c\n"}), mmap=changed)
    assert r.status == "failed"
    assert r.files[0].failed == [2, 3]
    assert r.failures() == ["mm/mmap.c: hunks 2, 3 of 3 FAILED"]
    assert r.rejects and Path(r.rejects).is_file()
    assert Path(r.rejects).parent == tmp_path / "logs"  # not in the tree
    assert not list((tmp_path / "k").rglob("*.rej"))
    assert (tmp_path / "logs" / "test.patch.log").read_text().startswith("patching file")


def test_missing_file_and_already_applied(tmp_path: Path) -> None:
    r = apply(
        tmp_path,
        "--- a/no/such.c\n+++ b/no/such.c\n@@ -1,1 +1,1 @@\n-x\n+y\n",
    )
    assert r.status == "failed"
    assert "no/such.c: can't find file to patch" in r.failures()[0]
    tree = tmp_path / "k"
    p = write(tmp_path / "again.patch", mmap_patch({5: "five\n"}))
    assert patches.apply_patch(tree, p, tmp_path / "logs", D()).status == "clean"
    again = patches.apply_patch(tree, p, tmp_path / "logs", D())
    assert again.status == "failed"
    assert "reversed or already applied" in again.summary()


def test_parse_real_gnu_patch_output() -> None:
    out = (
        "patching file mm/mmap.c\n"
        "Hunk #4 succeeded at 1290 with fuzz 2 (offset 3 lines).\n"
        "Hunk #5 succeeded at 1501 (offset 20 lines).\n"
        "Hunk #7 FAILED at 2890.\n"
        "Hunk #9 FAILED at 3010.\n"
        "2 out of 10 hunks FAILED -- saving rejects to file /l/aufs6-mmap.patch.rej\n"
        "patching file 'include/linux/mm.h'\n"
    )
    files = patches.parse_patch_output(out, {"mm/mmap.c": 10})
    assert [f.path for f in files] == ["mm/mmap.c", "include/linux/mm.h"]
    mm = files[0]
    assert (mm.fuzz, mm.offset, mm.failed) == ({4: 2}, {4: 3, 5: 20}, [7, 9])
    assert mm.describe() == "mm/mmap.c: hunks 7, 9 of 10 FAILED"
    assert files[1].status == "clean"


def test_hunk_counts() -> None:
    text = mmap_patch({5: "a\n", 40: "b\n"}) + VFSUB_FIXUP
    assert patches.hunk_counts(text) == {"mm/mmap.c": 2, "fs/aufs/vfsub.c": 1}


def aufs_tree(tmp_path: Path, branch: str) -> Path:
    root = tmp_path / "aufs"
    for rel, text in BRANCHES[branch].items():
        write(root / rel, text)
    return root


def test_plan_series_fixups_and_replacement(tmp_path: Path) -> None:
    tree = aufs_tree(tmp_path, "aufs6.1")
    fix = tmp_path / "fix"
    write(fix / "0002-second.patch", "x")
    write(fix / "0001-first.patch", "x")
    write(fix / "aufs6-mmap.patch", "x")
    write(fix / "notes.txt", "not a patch")
    plan = patches.plan(tree, 6, fix, loopback=True)
    assert [p.name for p in plan.series] == [
        "aufs6-kbuild.patch", "aufs6-base.patch", "aufs6-mmap.patch",
        "aufs6-standalone.patch", "aufs6-loopback.patch",
    ]  # fmt: skip
    assert plan.series[2].parent == fix  # replaced by the user's
    assert plan.replaced == ["aufs6-mmap.patch"]
    assert [p.name for p in plan.fixups] == ["0001-first.patch", "0002-second.patch"]


def test_plan_errors(tmp_path: Path) -> None:
    tree = aufs_tree(tmp_path, "aufs6.1")
    with pytest.raises(UserError, match=r"no aufs5-kbuild\.patch"):
        patches.plan(tree, 5, None)
    with pytest.raises(UserError, match="not a directory"):
        patches.plan(tree, 6, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no"):
        patches.plan(tree, 6, tmp_path / "empty")


@pytest.mark.parametrize("hardlink", [False, True])
def test_prepare_never_writes_the_source_tree(tmp_path: Path, hardlink: bool) -> None:
    src = make_kernel_tree(tmp_path / "src")
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    atree = aufs_tree(tmp_path, "aufs5.10.140")
    fix = write(tmp_path / "fix" / "0001-vfsub.patch", VFSUB_FIXUP).parent
    plan = patches.plan(atree, 5, fix)
    dest = tmp_path / "work" / "src"
    res = patches.prepare(
        src, atree, plan, dest=dest, logdir=tmp_path / "logs", deadline=D(), hardlink=hardlink
    )
    assert not res.failed, res.details()
    assert [r.status for r in res.reports] == ["clean"] * 5
    assert "OLD_RENAME" not in (dest / "fs/aufs/vfsub.c").read_text()
    assert (dest / "include/uapi/linux/aufs_type.h").is_file()
    assert (dest / "Documentation/filesystems/aufs/README").is_file()
    assert not (dest / "include/uapi/linux/Kbuild").exists()  # never copied
    assert "aufs/" in (dest / "fs/Makefile").read_text()
    after = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    assert after == before
    if hardlink:
        assert os.stat(dest / "Makefile").st_ino == os.stat(src / "Makefile").st_ino
        assert os.stat(dest / "mm/mmap.c").st_ino != os.stat(src / "mm/mmap.c").st_ino


def test_prepare_reports_every_series_failure_and_skips_fixups(tmp_path: Path) -> None:
    changed = list(MMAP)
    for i in range(14, 27):
        changed[i] = f"6.1 moved on {i}\n"
    src = make_kernel_tree(tmp_path / "src", "6.1.176", mmap=changed)
    atree = aufs_tree(tmp_path, "aufs6.1")
    fix = write(tmp_path / "fix" / "0001-x.patch", VFSUB_FIXUP).parent
    plan = patches.plan(atree, 6, fix)
    res = patches.prepare(
        src, atree, plan, dest=tmp_path / "w", logdir=tmp_path / "l", deadline=D()
    )
    assert [r.name for r in res.reports] == [p.name for p in plan.series]  # no fix-up tried
    assert res.details() == ["aufs6-mmap.patch: mm/mmap.c: hunk 2 of 3 FAILED"]
