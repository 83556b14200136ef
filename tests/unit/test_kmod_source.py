"""Kernel source providers: path, tarball (file:// URL), git, and the Debian plumbing."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from harness.core import paths, procs
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
    assert ks.identity == f"tarball:sha256={ks.sha256}" and ks.url == tarball.as_uri()
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
    assert (ks.url, ks.commit) == (str(repo), git(repo, "rev-parse", "HEAD"))
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
    root = paths.cache_dir() / "kmod" / "debian" / "bookworm"
    lines = (root / "sources.list").read_text()
    assert "http://mirror.example/debian bookworm main\n" in lines
    assert "http://mirror.example/debian bookworm-updates main\n" in lines
    assert "http://mirror.example/debian-security bookworm-security main\n" in lines
    opts = deb._apt_options()
    assert f"Dir::Etc::SourceList={root / 'sources.list'}" in opts
    assert "Dir::Etc::SourceParts=/dev/null" in opts
    assert f"Dir::State::Lists={root / 'lists'}" in opts
    assert f"Dir::Cache={root / 'cache'}" in opts
    assert all("/etc/apt" not in o for o in opts)  # the host's apt is left alone


def test_pockets_per_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    assert source.pockets("bullseye") == ("bullseye", "bullseye-updates", "bullseye-security")
    assert source.pockets("sid") == ("sid",)
    assert source.sources_lines("sid", "http://m/debian", None) == ["deb http://m/debian sid main"]
    assert source.security_mirror("http://m/debian/") == "http://m/debian-security"
    monkeypatch.setenv("AUFS_HARNESS_DEBIAN_SECURITY_MIRROR", "http://s/sec/")
    assert source.security_mirror("http://m/debian") == "http://s/sec"


def test_host_mirror_prefers_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUFS_HARNESS_DEBIAN_MIRROR", "http://m/debian")
    assert source.host_mirror() == "http://m/debian"
    monkeypatch.delenv("AUFS_HARNESS_DEBIAN_MIRROR")
    assert source.host_mirror().startswith("http")


# apt-cache madison as the mirror answered on 2026-11-30 (abridged).
SEC = "http://deb.debian.org/debian-security"
MAIN = "http://deb.debian.org/debian"
MADISON = {
    "bullseye": f"""\
linux-source-5.10 | 5.10.262-1 | {SEC} bullseye-security/main amd64 Packages
linux-source-5.10 | 5.10.259-1 | {SEC} bullseye-security/main amd64 Packages
linux-source-5.10 | 5.10.223-1 | {MAIN} bullseye/main amd64 Packages
linux-source-6.1 | 6.1.180-1~deb11u1 | {SEC} bullseye-security/main amd64 Packages
linux-source | 5.10.262-1 | {SEC} bullseye-security/main amd64 Packages
linux-source | 5.10.223-1 | {MAIN} bullseye/main amd64 Packages
""",
    "bookworm": f"""\
linux-source-6.1 |  6.1.192-3 | {SEC} bookworm-security/main amd64 Packages
linux-source-6.1 |  6.1.192-2 | {SEC} bookworm-security/main amd64 Packages
linux-source-6.1 |  6.1.190-1 | {SEC} bookworm-security/main amd64 Packages
linux-source-6.1 |  6.1.176-1 | {MAIN} bookworm/main amd64 Packages
linux-source-6.1 |  6.1.170-3 | {MAIN} bookworm/main amd64 Packages
linux-source-6.12 | 6.12.117-1~deb12u1 | {SEC} bookworm-security/main amd64 Packages
linux-source |  6.1.192-3 | {SEC} bookworm-security/main amd64 Packages
linux-source |  6.1.176-1 | {MAIN} bookworm/main amd64 Packages
""",
    "trixie": f"""\
linux-source-6.12 | 6.12.118-1 | {SEC} trixie-security/main amd64 Packages
linux-source-6.12 | 6.12.117-1 | {MAIN} trixie/main amd64 Packages
linux-source-6.12 | 6.12.117-1 | {SEC} trixie-security/main amd64 Packages
linux-source | 6.12.118-1 | {SEC} trixie-security/main amd64 Packages
linux-source | 6.12.117-1 | {MAIN} trixie/main amd64 Packages
""",
    "sid": f"""\
linux-source-7.2 |   7.2.13-1 | {MAIN} sid/main amd64 Packages
linux-source |   7.2.13-1 | {MAIN} sid/main amd64 Packages
""",
}


def offers(suite: str) -> list[source.Offer]:
    return source.parse_madison(MADISON[suite], suite)


def test_parse_madison_merges_pockets_of_one_version() -> None:
    got = {(o.package, o.version): o.pockets for o in offers("trixie")}
    assert got[("linux-source-6.12", "6.12.117-1")] == ("trixie", "trixie-security")
    assert got[("linux-source-6.12", "6.12.118-1")] == ("trixie-security",)
    assert source.parse_madison(MADISON["sid"], "bookworm") == []  # another suite's lines


@pytest.mark.parametrize(
    ("suite", "described"),
    [
        ("bullseye", "linux-source-5.10 5.10.262-1 from bullseye-security"),
        # not the 6.12 backport in bookworm-security: the suite's line is 6.1
        ("bookworm", "linux-source-6.1 6.1.192-3 from bookworm-security"),
        ("trixie", "linux-source-6.12 6.12.118-1 from trixie-security"),
        ("sid", "linux-source-7.2 7.2.13-1 from sid"),
    ],
)
def test_newest_version_over_every_pocket(suite: str, described: str) -> None:
    assert source.choose_offer(offers(suite), suite, None).describe() == described


@pytest.mark.parametrize(
    ("suite", "pin", "described"),
    [
        ("bookworm", "6.1.176-1", "linux-source-6.1 6.1.176-1 from bookworm"),
        ("bookworm", "6.12.117-1~deb12u1", "linux-source-6.12 6.12.117-1~deb12u1 from "
         "bookworm-security"),
        ("trixie", "6.12.117-1", "linux-source-6.12 6.12.117-1 from trixie (also in "
         "trixie-security)"),
    ],
)  # fmt: skip
def test_pinned_version_from_any_pocket(suite: str, pin: str, described: str) -> None:
    assert source.choose_offer(offers(suite), suite, pin).describe() == described


def test_pin_not_served_names_what_is() -> None:
    with pytest.raises(UserError, match=r"no linux-source version 6\.1\.1-1 \(newest: 6\.1\.192-3"):
        source.choose_offer(offers("bookworm"), "bookworm", "6.1.1-1")
    with pytest.raises(UserError, match="does not name a kernel"):
        source.DebianSource.from_spec("debian:bookworm=latest")
    with pytest.raises(InfraError, match="lists no linux-source"):
        source.choose_offer([], "bookworm", None)


def test_offer_kernel_version_comes_from_the_index() -> None:
    offer = source.choose_offer(offers("bullseye"), "bullseye", None)
    assert str(offer.kernel) == "5.10.262"


def test_debian_offers_are_remembered_while_lists_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    deb = source.DebianSource.from_spec("debian:bullseye")
    deb._prepare()
    lists = paths.cache_dir() / "kmod" / "debian" / "bullseye" / "lists"
    write(lists / "deb.debian.org_debian_dists_bullseye_main_binary-amd64_Packages", "x")
    asked: list[int] = []

    def madison(deadline: Deadline) -> str:
        asked.append(1)
        return MADISON["bullseye"]

    monkeypatch.setattr(deb, "_madison", madison)
    assert deb.resolve(D()).version == "5.10.262-1"
    assert str(deb.expected_version(D())) == "5.10.262"
    assert len(asked) == 1  # once
    pinned = source.DebianSource.from_spec("debian:bullseye=5.10.223-1")
    monkeypatch.setattr(pinned, "_madison", madison)
    assert pinned.resolve(D()).pockets == ("bullseye",)
    assert len(asked) == 1  # the same lists: the same memo
    time.sleep(0.01)
    write(lists / "deb.debian.org_debian_dists_bullseye_main_binary-amd64_Packages", "y")
    deb.resolve(D())
    assert len(asked) == 2  # new lists, asked again


PRINT_URIS = (
    "'http://deb.debian.org/debian/pool/main/l/linux/linux-source-5.10_5.10.223-1_all.deb' "
    "linux-source-5.10_5.10.223-1_all.deb 121562870 "
    "SHA256:f733d27d239d65598d96d7a72f71ac50f49f2380192a1b3b4ca2f5ad5144dd63\n"
)


def test_the_deb_url_and_sha256_come_from_the_index_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert source.parse_print_uris(PRINT_URIS) == (
        "http://deb.debian.org/debian/pool/main/l/linux/linux-source-5.10_5.10.223-1_all.deb",
        "f733d27d239d65598d96d7a72f71ac50f49f2380192a1b3b4ca2f5ad5144dd63",
    )
    with pytest.raises(InfraError, match="named no file"):
        source.parse_print_uris("E: Can't find a source to download version '9' of 'x'\n")
    deb = source.DebianSource.from_spec("debian:bullseye=5.10.223-1")
    deb._prepare()
    asked: list[list[str]] = []

    def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        asked.append([str(a) for a in argv])
        return subprocess.CompletedProcess(argv, 0, PRINT_URIS, "")

    monkeypatch.setattr(procs, "run", run)
    first = deb._package_file("linux-source-5.10", "5.10.223-1", D())
    assert first == source.parse_print_uris(PRINT_URIS)
    assert asked[0][-3:] == ["download", "--print-uris", "linux-source-5.10=5.10.223-1"]
    assert deb._package_file("linux-source-5.10", "5.10.223-1", D()) == first
    assert len(asked) == 1  # remembered: a warm build asks apt nothing


def test_a_deb_that_differs_from_the_index_is_refused() -> None:
    deb = source.DebianSource.from_spec("debian:bullseye=5.10.223-1")
    deb._prepare()
    got = deb.root / "debs" / "linux-source-5.10_5.10.223-1_all.deb"
    got.write_bytes(b"not the package")
    with pytest.raises(InfraError, match="the apt index says 0000"):
        deb._download("linux-source-5.10", "5.10.223-1", "0" * 64, D())
    assert not got.exists()  # the next run downloads it again


def test_tarball_version_from_its_name() -> None:
    tar = source.TarballSource("https://cdn.kernel.org/pub/linux/kernel/v6.x/linux-6.1.192.tar.xz")
    assert str(tar.expected_version(D())) == "6.1.192"
    assert source.TarballSource("file:///x/kernel.tar").expected_version(D()) is None
