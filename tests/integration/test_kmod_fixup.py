"""The fix-up workflow end to end on a fake kernel tree: a hunk that conflicts, `kmod
prepare`, an edit made the way a person would, `kmod fixup`, and a build that applies cleanly."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from harness.commands import kmod_fixup
from harness.core.deadline import Deadline
from harness.core.errors import EXIT_OK, UserError
from kmod import build, pipeline
from kmod.pipeline import BuildSpec
from tests.unit.kmod_fakes import MMAP, make_aufs_repo, make_kernel_tree, read_vermagic


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUFS_HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "modinfo_vermagic", read_vermagic)
    monkeypatch.setattr(build, "compiler_version", lambda deadline: "gcc (Fake) 12.2.0")


def cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    kmod_fixup.add_parsers(parser.add_subparsers(dest="cmd", required=True))
    return parser.parse_args(argv)


def test_prepare_edit_fixup_then_the_build_applies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 6.1's mm/mmap.c moved on where aufs6.1's hunk 2 (line 20) goes: it fails.
    moved = list(MMAP)
    for i in range(14, 27):
        moved[i] = f"6.1 moved on {i}\n"
    kernel = make_kernel_tree(tmp_path / "linux-6.1.176", "6.1.176", mmap=moved)
    repo = make_aufs_repo(tmp_path / "aufs-standalone")
    options = ["--kernel", f"path:{kernel}", "--aufs-src", str(repo), "-j", "2"]
    spec = BuildSpec(kernel=f"path:{kernel}", aufs_src=str(repo), jobs=2)
    first = pipeline.run(spec, Deadline(120, "build"))
    assert first.status == "patch-failed"

    args = cli(["prepare", *options])
    assert args.func(args) == EXIT_OK
    out = capsys.readouterr().out
    tree = Path(out.split()[1])
    assert "failed:  aufs6-mmap.patch: mm/mmap.c" in out
    rej = tree / "mm/mmap.c.rej"
    assert rej.is_file() and "+aufs 6.1 b" in rej.read_text()

    # The person applies the rejected hunk where the code went: line 20 of the new file.
    mmap = tree / "mm/mmap.c"
    lines = mmap.read_text().splitlines(keepends=True)
    assert lines[19] == "6.1 moved on 19\n"
    lines[19] = "aufs 6.1 b\n"
    mmap.write_text("".join(lines))

    fixups = tmp_path / "my-fixups"
    args = cli(["fixup", *options, "--to", str(fixups)])
    assert args.func(args) == EXIT_OK
    assert "wrote:   " + str(fixups / "aufs6-mmap.patch") in capsys.readouterr().out
    assert sorted(p.name for p in fixups.iterdir()) == ["aufs6-mmap.patch"]

    again = pipeline.run(
        BuildSpec(kernel=f"path:{kernel}", aufs_src=str(repo), jobs=2, fixup_dir=fixups),
        Deadline(120, "build"),
    )
    assert again.status == "built", again.details
    statuses = {p["name"]: p["status"] for p in again.patches}
    assert statuses["aufs6-mmap.patch"] == "clean"


def test_additive_fixup_for_a_compile_error_and_the_guards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = make_kernel_tree(tmp_path / "linux-5.10.223", "5.10.223")
    repo = make_aufs_repo(tmp_path / "aufs-standalone")
    options = ["--kernel", f"path:{kernel}", "--aufs-src", str(repo), "-j", "2"]
    fixups = tmp_path / "fixups"
    args = cli(["fixup", *options, "--to", str(fixups)])
    with pytest.raises(UserError, match="run `aufs-harness kmod prepare`"):
        args.func(args)
    args = cli(["prepare", *options])
    assert args.func(args) == EXIT_OK
    tree = Path(capsys.readouterr().out.split()[1])
    with pytest.raises(UserError, match="was edited"):
        args = cli(["fixup", *options, "--to", str(fixups)])
        args.func(args)
    with pytest.raises(UserError, match="inside the aufs-harness repository"):
        args = cli(["fixup", *options, "--to", str(Path(__file__).parent / "x")])
        args.func(args)
    # aufs5.10.140's vfs_rename() call does not compile on this 5.10.223: fix it in the tree.
    vfsub = tree / "fs/aufs/vfsub.c"
    vfsub.write_text(vfsub.read_text().replace("/* OLD_RENAME */\n", "").replace("1, 2", ""))
    args = cli(["fixup", *options, "--to", str(fixups)])
    assert args.func(args) == EXIT_OK
    (patch,) = fixups.iterdir()
    assert patch.name == "0001-fixup-5.10.223.patch"
    assert patch.read_text().startswith("--- a/fs/aufs/vfsub.c\n+++ b/fs/aufs/vfsub.c\n")
    # prepare again keeps the edit
    args = cli(["prepare", *options])
    args.func(args)
    assert "kept from before" in capsys.readouterr().out
    r = pipeline.run(
        BuildSpec(kernel=f"path:{kernel}", aufs_src=str(repo), jobs=2, fixup_dir=fixups),
        Deadline(120, "build"),
    )
    assert r.status == "built", r.details
