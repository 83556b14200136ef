"""Kernel source providers: path, tarball (file:// URL), git, and the Debian plumbing."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from harness.core import paths
from harness.core.deadline import Deadline
from harness.core.errors import InfraError, UserError
from kmod import source
from tests.unit.kmod_fakes import git, make_kernel_tree, write


def D() -> Deadline:
    """A fresh deadline per call: one made at import would expire in a long session."""
    return Deadline(60, "test")


def test_path_source_identity_follows_edits(tmp_path: Path) -> None:
    tree = make_kernel_tree(tmp_path / "k", "5.10.223")
    first = source.fetch(f"path:{tree}", D())
    assert first.tree == tree and str(first.version) == "5.10.223"
    assert not first.owned  # the user's tree: copied, never linked
    assert source.fetch(str(tree), D()).identity == first.identity  # a plain directory works
    time.sleep(0.01)
    write(tree / "mm/mmap.c", "edited\n")
    assert source.fetch(f"path:{tree}", D()).identity != first.identity


def test_tarball_from_file_url(tmp_path: Path) -> None:
    make_kernel_tree(tmp_path / "src" / "linux-5.10.223", "5.10.223")
    tarball = tmp_path / "linux-5.10.223.tar.xz"
    subprocess.run(["tar", "-cJf", str(tarball), "-C", str(tmp_path / "src"), "."], check=True)
    ks = source.fetch(tarball.as_uri(), D())
    assert str(ks.version) == "5.10.223"
    assert ks.identity.startswith("tarball:sha256=")
    assert ks.owned
    assert ks.tree.name == "linux-5.10.223"
    assert paths.cache_dir() in ks.tree.parents
    assert not os.stat(ks.tree / "Makefile").st_mode & 0o222  # cached read-only
    assert source.fetch(tarball.as_uri(), D()).tree == ks.tree  # unpacked once


def test_tarball_download_failure(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="cannot download"):
        source.fetch((tmp_path / "missing.tar.xz").as_uri(), D())


def test_git_source(tmp_path: Path) -> None:
    repo = make_kernel_tree(tmp_path / "linux", "6.1.0")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v6.1")
    git(repo, "tag", "v6.1")
    ks = source.fetch(f"git+{repo}@v6.1", D())
    assert str(ks.version) == "6.1.0"
    assert ks.identity == f"git:{git(repo, 'rev-parse', 'HEAD')}"
    with pytest.raises(UserError, match="names no branch"):
        source.fetch(f"git+{repo}@v9.9", D())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("debian:buster", "unknown Debian suite"),
        ("ftp://x/linux.tar.xz", "unknown kernel source"),
        ("/no/such/tree", "unknown kernel source"),
        ("git+nowhere", "git\\+URL@REF"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        source.provider_for(spec)


def test_debian_private_apt_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUFS_HARNESS_DEBIAN_MIRROR", "http://mirror.example/debian/")
    deb = source.DebianSource.from_spec("debian:bookworm=6.1.176-1")
    assert (deb.suite, deb.version) == ("bookworm", "6.1.176-1")
    deb._prepare()
    root = paths.cache_dir() / "kmod" / "apt" / "bookworm"
    assert "http://mirror.example/debian bookworm main" in (root / "sources.list").read_text()
    opts = deb._apt_options()
    assert f"Dir::Etc::SourceList={root / 'sources.list'}" in opts
    assert "Dir::Etc::SourceParts=/dev/null" in opts
    assert f"Dir::State::Lists={root / 'lists'}" in opts
    assert f"Dir::Cache={root / 'cache'}" in opts
    assert all("/etc/apt" not in o for o in opts)  # the host's apt is left alone


def test_host_mirror_prefers_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUFS_HARNESS_DEBIAN_MIRROR", "http://m/debian")
    assert source.host_mirror() == "http://m/debian"
    monkeypatch.delenv("AUFS_HARNESS_DEBIAN_MIRROR")
    assert source.host_mirror().startswith("http")


def test_debian_resolution_is_remembered_while_lists_stay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deb = source.DebianSource.from_spec("debian:bullseye")
    deb._prepare()
    lists = paths.cache_dir() / "kmod" / "apt" / "bullseye" / "lists"
    write(lists / "deb.debian.org_debian_dists_bullseye_main_binary-amd64_Packages", "x")
    asked: list[str] = []
    shows = {
        "linux-source": {"Version": "5.10.223-1", "Depends": "linux-source-5.10 (= 5.10.223-1)"},
        "linux-source-5.10": {"Version": "5.10.223-1"},
    }

    def show(package: str, deadline: Deadline) -> dict[str, str]:
        asked.append(package)
        return shows[package]

    monkeypatch.setattr(deb, "_show", show)
    assert deb.resolve(D()) == ("linux-source-5.10", "5.10.223-1")
    assert deb.resolve(D()) == ("linux-source-5.10", "5.10.223-1")
    assert asked == ["linux-source", "linux-source-5.10"]  # once
    pinned = source.DebianSource.from_spec("debian:bullseye=5.10.200-1")
    monkeypatch.setattr(pinned, "_show", show)
    with pytest.raises(UserError, match=r"not 5\.10\.200-1"):
        pinned.resolve(D())
