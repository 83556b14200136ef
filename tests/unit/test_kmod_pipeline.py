"""The whole pipeline on the fake kernel and fake aufs-standalone: results, caching, CLI."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from harness import buildargs
from harness.commands import kmod_build
from harness.core.deadline import Deadline
from harness.core.errors import EXIT_FAILED, EXIT_OK, UserError
from harness.core.store import Store, key_of
from kmod import aufs, build, config, patches, pipeline, source
from kmod.pipeline import BuildSpec
from kmod.version import KernelVersion
from tests.unit.kmod_fakes import (
    MMAP,
    VFSUB_FIXUP,
    make_aufs_repo,
    make_kernel_tree,
    read_vermagic,
    write,
)


def D() -> Deadline:
    """A fresh deadline per call: one made at import would expire in a long session."""
    return Deadline(120, "test")


REAL_MODINFO = build.modinfo_vermagic  # before the fixture below replaces it


@pytest.fixture(autouse=True)
def fake_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "modinfo_vermagic", read_vermagic)
    monkeypatch.setattr(build, "compiler_version", lambda deadline: "gcc (Fake) 12.2.0")


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    return make_kernel_tree(tmp_path / "linux-5.10.223")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fake aufs-standalone for the module (no test changes it): git is the slow part."""
    return make_aufs_repo(tmp_path_factory.mktemp("aufs") / "aufs-standalone")


@pytest.fixture
def fixups(tmp_path: Path) -> Path:
    return write(tmp_path / "fixups" / "0001-vfsub.patch", VFSUB_FIXUP).parent


def spec(kernel: Path, repo: Path | str, **kw: Any) -> BuildSpec:
    return BuildSpec(kernel=f"path:{kernel}", aufs_src=str(repo), jobs=2, **kw)


def builds(result: pipeline.BuildResult) -> int:
    """How many times the fake make built in the result's work tree."""
    work = source.kmod_cache() / "work"
    return sum(len(p.read_text().split()) for p in work.glob("*/src/.fake-builds"))


def test_build_failed_names_file_and_error(kernel: Path, repo: Path) -> None:
    r = pipeline.run(spec(kernel, repo), D())
    assert r.status == "build-failed"
    assert r.details[0] == (
        "fs/aufs/vfsub.c:3:15: error: too many arguments to function 'vfs_rename'"
    )
    assert r.log is not None and r.log.is_file()
    assert r.aufs["branch"] == "aufs5.10.140"
    assert r.aufs["reason"] == "highest point branch <= 5.10.223"
    assert not r.artifacts


def test_built_with_fixup_then_cached(kernel: Path, repo: Path, fixups: Path) -> None:
    s = spec(kernel, repo, fixup_dir=fixups)
    r = pipeline.run(s, D())
    assert r.status == "built", r.details
    assert not r.cached
    assert r.kernel_release == "5.10.223"
    assert r.vermagic == "5.10.223 SMP mod_unload"
    assert set(r.artifacts) == {"bzImage", "aufs.ko", "config", "System.map"}
    assert all(p.is_file() for p in r.artifacts.values())
    assert "CONFIG_AUFS_FS=m" in r.artifacts["config"].read_text()
    assert r.metadata is not None
    meta = r.metadata.read_text()
    assert "--fixup-dir" in meta and r.aufs["commit"] in meta  # the reproducer
    assert [p["status"] for p in r.patches][-1] == "clean"
    assert builds(r) == 1

    again = pipeline.run(s, D())
    assert again.status == "built" and again.cached
    assert again.artifacts == r.artifacts
    assert "build" not in again.timings
    assert builds(again) == 1  # nothing ran make


def test_aufs_option_change_rebuilds_in_the_same_work_tree(
    kernel: Path, repo: Path, fixups: Path
) -> None:
    first = pipeline.run(spec(kernel, repo, fixup_dir=fixups), D())
    second = pipeline.run(spec(kernel, repo, fixup_dir=fixups, aufs_options=("SHWH=n",)), D())
    assert second.status == "built" and not second.cached
    assert second.key != first.key
    assert "patch" not in second.timings  # the prepared tree was reused
    assert "# CONFIG_AUFS_SHWH is not set" in second.artifacts["config"].read_text()
    assert len(list((source.kmod_cache() / "work").glob("*/src"))) == 1


def test_patch_failed_names_file_and_hunks(tmp_path: Path, repo: Path) -> None:
    changed = list(MMAP)
    for i in range(14, 27):
        changed[i] = f"6.1 moved on {i}\n"
    kernel = make_kernel_tree(tmp_path / "linux-6.1.176", "6.1.176", mmap=changed)
    r = pipeline.run(spec(kernel, repo), D())
    assert r.status == "patch-failed"
    assert r.details[0] == "aufs6-mmap.patch: FAILED: mm/mmap.c: hunk 2 of 3 FAILED"
    assert r.aufs["branch"] == "aufs6.1"
    # The rejected hunk is kept with the kernel's text around where it was meant to go.
    (hunk,) = r.rejects
    assert (hunk["patch"], hunk["file"], hunk["hunk"], hunk["at"]) == (
        "aufs6-mmap.patch", "mm/mmap.c", 2, 17,
    )  # fmt: skip
    assert "+aufs 6.1 b" in hunk["reject"] and "-mmap line 20" in hunk["reject"]
    assert hunk["lines"] == [1, 47]
    assert "    20  6.1 moved on 19" in hunk["context"]
    assert "    5  aufs 6.1 a" in hunk["context"]  # hunk 1 applied before it
    kept = Path(hunk["kept"])
    assert kept.is_file() and "6.1 moved on 19" in kept.read_text()
    assert (
        (kept.parent / "mmap.c.rej").read_text().startswith("--- a/mm/mmap.c\n+++ b/mm/mmap.c\n@@")
    )
    assert any(str(kept) in d for d in r.details)
    assert r.to_json()["rejects"] == r.rejects
    statuses = {p["name"]: p["status"] for p in r.patches}
    assert statuses["aufs6-mmap.patch"] == "failed"
    assert statuses["aufs6-kbuild.patch"] == "clean"
    # A second run answers from the recorded preparation.
    assert pipeline.run(spec(kernel, repo), D()).details == r.details


def test_vermagic_mismatch_is_a_build_failure(
    kernel: Path, repo: Path, fixups: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VERMAGIC", "5.10.999")
    r = pipeline.run(spec(kernel, repo, fixup_dir=fixups), D())
    assert r.status == "build-failed"
    assert (
        "vermagic '5.10.999 SMP mod_unload' does not match kernel release '5.10.223'"
        in (r.details[0])
    )


def test_dropped_option_is_a_usage_error(kernel: Path, repo: Path, fixups: Path) -> None:
    write(kernel / ".fake-unsupported", "CONFIG_AUFS_FHSM\n")
    with pytest.raises(UserError, match="CONFIG_AUFS_FHSM=y asked for"):
        pipeline.run(spec(kernel, repo, fixup_dir=fixups, aufs_options=("FHSM=y",)), D())


def inputs_for(tmp_path: Path, **change: Any) -> str:
    """The artifact key with one input changed from a fixed baseline."""
    aufs_tree = tmp_path / "aufs"
    for part in patches.SERIES:
        write(aufs_tree / f"aufs5-{part}.patch", part)
    fix = write(tmp_path / "fix" / "0001.patch", change.pop("fixup", "fix")).parent
    plan = patches.plan(aufs_tree, 5, fix)
    ks = source.KernelSource(
        spec="debian:bullseye",
        tree=tmp_path,
        version=KernelVersion.parse("5.10.223"),
        identity=change.pop("identity", "debian:linux-source-5.10=5.10.223-1"),
        origin="Debian bullseye",
    )
    _, inputs = pipeline.cache_inputs(
        ks,
        change.pop("commit", "c0ffee"),
        plan,
        change.pop("base", "allnoconfig"),
        config.render_fragment(config.aufs_options(change.pop("options", ()))),
        change.pop("compiler", "gcc 12.2.0"),
    )
    assert not change
    return key_of(inputs)


@pytest.mark.parametrize(
    "change",
    [
        {"identity": "debian:linux-source-5.10=5.10.223-2"},
        {"commit": "decaf"},
        {"fixup": "fix, changed"},
        {"options": ("SHWH=n",)},
        {"base": "defconfig"},
        {"compiler": "gcc 13.1.0"},
    ],
)
def test_cache_key_sensitive_to_each_input(tmp_path: Path, change: dict[str, Any]) -> None:
    assert inputs_for(tmp_path) == inputs_for(tmp_path)
    assert inputs_for(tmp_path, **change) != inputs_for(tmp_path)


def test_cache_key_sensitive_to_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = inputs_for(tmp_path)
    monkeypatch.setattr(pipeline, "RECIPE_VERSION", pipeline.RECIPE_VERSION + 1)
    assert inputs_for(tmp_path) != before


def test_store_builds_once_under_concurrency(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    calls: list[int] = []
    gate = threading.Event()

    def produce(out: Path) -> dict[str, Any]:
        calls.append(1)
        gate.wait(2)
        (out / "bzImage").write_text("k")
        return {"kernel_release": "5.10.223"}

    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(store.get_or_build({"k": 1}, produce)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1
    assert sorted(e.hit for e in results) == [False, True, True]
    assert not list((tmp_path / "store").glob(".tmp-*"))


def test_failed_build_leaves_no_store_entry(kernel: Path, repo: Path) -> None:
    pipeline.run(spec(kernel, repo), D())
    entries = [
        p for p in (source.kmod_cache() / "artifacts").iterdir() if not p.name.startswith(".")
    ]
    assert entries == []


def cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    kmod_build.add_parser(sub)
    return parser.parse_args(["build", *argv])


def test_cli_exit_codes_and_output(
    kernel: Path, repo: Path, fixups: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--kernel", str(kernel), "--aufs-src", str(repo), "-j", "2"]
    args = cli(base)
    assert args.func(args) == EXIT_FAILED
    out = capsys.readouterr().out
    assert "result:  BUILD-FAILED" in out
    assert "fs/aufs/vfsub.c:3:15: error:" in out
    args = cli([*base, "--fixup-dir", str(fixups)])
    assert args.func(args) == EXIT_OK
    out = capsys.readouterr().out
    assert "result:  built: 5.10.223" in out
    args = cli([*base, "--fixup-dir", str(fixups), "--json"])
    assert args.func(args) == EXIT_OK
    assert '"cached": true' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # numbers and paths are refused by argparse already (tests/unit/test_argcheck.py)
        (["--aufs-option", "SHWH"], "NAME=y or NAME=n"),
    ],
)
def test_cli_usage_errors(kernel: Path, argv: list[str], message: str) -> None:
    args = cli(["--kernel", str(kernel), *argv])
    with pytest.raises(UserError, match=message):
        args.func(args)


def test_reproducer_round_trips(kernel: Path, repo: Path, fixups: Path) -> None:
    s = spec(kernel, repo, fixup_dir=fixups, aufs_options=("SHWH=n",), branch_fs=("ext4", "xfs"))
    line = s.reproducer("abc123")
    assert "--branch-fs ext4,xfs" in line
    args = cli(line.split()[3:])
    again = buildargs.spec_from_args(args)
    assert dataclasses.replace(again, jobs=2) == dataclasses.replace(s, aufs_ref="abc123")


def test_aufs_source_is_a_plain_git_url_too(kernel: Path, repo: Path, fixups: Path) -> None:
    r = pipeline.run(spec(kernel, f"file://{repo}", fixup_dir=fixups), D())
    assert r.status == "built"
    assert aufs.mirror_path(f"file://{repo}").is_dir()


def test_real_modinfo_reads_vermagic(tmp_path: Path) -> None:
    if not shutil.which("gcc") or not (shutil.which("modinfo") or Path("/sbin/modinfo").exists()):
        pytest.skip("gcc or modinfo (kmod) not installed")
    src = write(
        tmp_path / "m.c",
        'const char v[] __attribute__((section(".modinfo"), used)) = '
        '"vermagic=5.10.223 SMP mod_unload ";\n',
    )
    ko = tmp_path / "m.ko"
    subprocess.run(["gcc", "-c", "-o", str(ko), str(src)], check=True)
    assert REAL_MODINFO(ko, D()) == "5.10.223 SMP mod_unload"


def test_no_branch_fits_before_any_download(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """debian:sid's 7.2 is known from the package index: no aufs branch, no download."""
    sid = [source.Offer("linux-source-7.2", "7.2.13-1", ("sid",))]
    monkeypatch.setattr(source.DebianSource, "offers", lambda self, deadline: sid)

    def no_download(self: source.DebianSource, offer: source.Offer, d: Deadline) -> None:
        raise AssertionError("downloaded the kernel source")

    monkeypatch.setattr(source.DebianSource, "_fetch", no_download)
    with pytest.raises(UserError, match=r"no aufs branch fits Linux 7\.2\.13"):
        pipeline.run(BuildSpec(kernel="debian:sid", aufs_src=str(repo), jobs=2), D())


def test_debian_pocket_in_result_and_output(
    tmp_path: Path, repo: Path, fixups: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    tree = make_kernel_tree(tmp_path / "linux-5.10.262", "5.10.262")
    offers = [
        source.Offer("linux-source-5.10", "5.10.262-1", ("bullseye-security",)),
        source.Offer("linux-source-5.10", "5.10.223-1", ("bullseye",)),
    ]
    monkeypatch.setattr(source.DebianSource, "offers", lambda self, deadline: offers)

    def fetch(self: source.DebianSource, offer: source.Offer, d: Deadline) -> source.KernelSource:
        return source.KernelSource(
            spec=self.spec, tree=tree, version=offer.kernel, identity=f"debian:{offer.version}",
            origin="Debian", package=offer.package, package_version=offer.version,
            pocket=offer.pockets[0],
        )  # fmt: skip

    monkeypatch.setattr(source.DebianSource, "_fetch", fetch)
    args = cli(["--kernel", "debian:bullseye", "--aufs-src", str(repo), "-j", "2",
                "--fixup-dir", str(fixups)])  # fmt: skip
    assert args.func(args) == EXIT_OK
    out = capsys.readouterr().out
    assert "Linux 5.10.262 (linux-source-5.10 5.10.262-1 from bullseye-security)" in out
    assert "aufs5.10.140 targets 5.10.140; kernel is 5.10.262 (122 stable releases later)" in out
    assert "again:   aufs-harness kmod build --kernel debian:bullseye=5.10.262-1 " in out
    r = pipeline.run(spec(tree, repo, fixup_dir=fixups), D())
    assert r.kernel["pocket"] is None and r.aufs["distance"].startswith("aufs5.10.140 targets")


def test_the_compiler_cache_can_be_shared_between_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kmod.build import ccache_dir, make_env

    monkeypatch.setenv("AUFS_HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AUFS_HARNESS_CCACHE", raising=False)
    assert ccache_dir() == tmp_path / "cache" / "kmod" / "ccache"
    monkeypatch.setenv("AUFS_HARNESS_CCACHE", str(tmp_path / "shared-ccache"))
    assert make_env(tmp_path / "tree")["CCACHE_DIR"] == str(tmp_path / "shared-ccache")
    assert (tmp_path / "shared-ccache").is_dir()
