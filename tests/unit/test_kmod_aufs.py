"""aufs-standalone: branch choice for a kernel, mirroring and exporting a clone."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.core.deadline import Deadline
from harness.core.errors import UserError
from kmod import aufs
from kmod.version import KernelVersion
from tests.unit.kmod_fakes import git, make_aufs_repo

NAMES = [
    "master", "aufs5.4", "aufs5.4.3", "aufs5.9", "aufs5.10", "aufs5.10.82", "aufs5.10.117",
    "aufs5.10.140", "aufs5.15", "aufs5.2.5+", "aufs5.2", "aufs6.1", "aufs6.6", "aufs6.6.4",
    "aufs6.11", "aufs5.x-rcN", "aufs6.x-rcN", "aufs6.6.44",
]  # fmt: skip


@pytest.mark.parametrize(
    ("kernel", "branch", "reason"),
    [
        ("5.10.223", "aufs5.10.140", "highest point branch <= 5.10.223"),
        ("5.10.140", "aufs5.10.140", "highest point branch <= 5.10.140"),
        ("5.10.139", "aufs5.10.117", "highest point branch <= 5.10.139"),
        ("5.10.5", "aufs5.10", "every point branch is newer than 5.10.5"),
        ("6.1.192", "aufs6.1", "series branch for 6.1"),
        ("5.2.9", "aufs5.2.5+", "highest point branch"),
        ("6.6.3", "aufs6.6", "every point branch is newer than 6.6.3 (lowest .4)"),
        ("6.6.4", "aufs6.6.4", "highest point branch <= 6.6.4"),
        ("6.6.43", "aufs6.6.4", "highest point branch <= 6.6.43"),
        ("6.6.44", "aufs6.6.44", "highest point branch <= 6.6.44"),
        ("6.6.118", "aufs6.6.44", "highest point branch <= 6.6.118"),
        ("6.12.117", "aufs6.x-rcN", "newer than every series branch (newest 6.11)"),
        ("6.13.0-rc3", "aufs6.x-rcN", "newer than every series branch"),
    ],
)
def test_choose_branch(kernel: str, branch: str, reason: str) -> None:
    got, why = aufs.choose_branch(NAMES, KernelVersion.parse(kernel))
    assert got == branch
    assert reason in why


@pytest.mark.parametrize("kernel", ["4.19.300", "5.20.1", "7.2.13"])
def test_no_branch_fits(kernel: str) -> None:
    with pytest.raises(UserError, match="pass --aufs-ref"):
        aufs.choose_branch(NAMES, KernelVersion.parse(kernel))


@pytest.mark.parametrize(
    ("branch", "kernel", "phrase"),
    [
        ("aufs6.1", "6.1.192", "aufs6.1 targets 6.1.0; kernel is 6.1.192 (192 stable releases"),
        ("aufs5.10.140", "5.10.262", "aufs5.10.140 targets 5.10.140; kernel is 5.10.262 (122 "),
        ("aufs6.6.44", "6.6.44", "aufs6.6.44 targets 6.6.44; kernel is 6.6.44"),
        ("aufs5.2.5+", "5.2.6", "aufs5.2.5+ targets 5.2.5; kernel is 5.2.6 (1 stable release "),
        ("aufs6.11", "6.12.118", "aufs6.11 targets 6.11.0; kernel is 6.12.118 (another series)"),
        ("aufs6.x-rcN", "6.12.118", "aufs6.x-rcN names no kernel release; kernel is 6.12.118"),
        ("0123abcd", "6.1.1", "0123abcd names no kernel release"),
    ],
)  # fmt: skip
def test_distance_from_branch_base(branch: str, kernel: str, phrase: str) -> None:
    assert aufs.distance(branch, KernelVersion.parse(kernel)).startswith(phrase)


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fake aufs-standalone for the tests that only read it."""
    return make_aufs_repo(tmp_path_factory.mktemp("aufs") / "aufs-standalone")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_aufs_repo(tmp_path / "aufs-standalone")


def test_select_from_local_repo(shared_repo: Path) -> None:
    repo = shared_repo
    d = Deadline(60, "test")
    choice = aufs.select(str(repo), KernelVersion.parse("5.10.223"), d)
    assert choice.branch == "aufs5.10.140"
    assert choice.commit == git(repo, "rev-parse", "aufs5.10.140")
    assert choice.major == 5
    assert (choice.tree / "aufs5-mmap.patch").is_file()
    assert "OLD_RENAME" in (choice.tree / "fs/aufs/vfsub.c").read_text()
    # The export lives in the cache, not in the user's clone.
    assert repo not in choice.tree.parents


def test_select_from_clone_with_remote_branches(shared_repo: Path, tmp_path: Path) -> None:
    repo = shared_repo
    """A user's clone carries the branches as refs/remotes/origin/*."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    choice = aufs.select(str(clone), KernelVersion.parse("6.1.176"), Deadline(60, "t"))
    assert choice.branch == "aufs6.1"
    assert choice.reason == "series branch for 6.1"
    assert choice.major == 6


def test_select_explicit_ref_and_refetch(repo: Path) -> None:
    d = Deadline(60, "t")
    k = KernelVersion.parse("5.10.223")
    first = aufs.select(str(repo), k, d, ref="aufs5.10")
    assert (first.branch, first.reason) == ("aufs5.10", "given with --aufs-ref")
    # A new commit upstream is seen on the next run (the mirror is fetched).
    git(repo, "checkout", "-q", "aufs5.10")
    (repo / "NEW").write_text("x\n")
    git(repo, "add", "NEW")
    git(repo, "commit", "-q", "-m", "new")
    second = aufs.select(str(repo), k, d, ref="aufs5.10")
    assert second.commit != first.commit
    by_hash = aufs.select(str(repo), k, d, ref=first.commit[:10])
    assert by_hash.commit == first.commit


def test_bad_ref_and_missing_source(shared_repo: Path, tmp_path: Path) -> None:
    repo = shared_repo
    d = Deadline(60, "t")
    with pytest.raises(UserError, match="names no branch"):
        aufs.select(str(repo), KernelVersion.parse("5.10.1"), d, ref="aufs9.9")
    with pytest.raises(UserError, match="does not exist"):
        aufs.select(str(tmp_path / "nope"), KernelVersion.parse("5.10.1"), d)
