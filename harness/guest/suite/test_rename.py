"""G. Rename through the union: copy-up, whiteouts and directories with lower children."""

from __future__ import annotations

import errno
import os

import pytest

from unionfs import aufs
from unionfs.expect import no_whiteout_problem, whiteout_problem
from unionfs.fsops import T1_NS, errname, errno_of, lexists, mkdir, names, put, time_granularity
from unionfs.gates import aufs_config_has, overlay_param, require_aufs_config
from unionfs.kernel import KernelWatch
from unionfs.lab import Lab

pytestmark = pytest.mark.option_sets


def _meta(st: os.stat_result, gran: int = 1) -> tuple[int, int, int, int]:
    return (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns - st.st_mtime_ns % gran)


def test_rename_lower_file_copies_up_and_whiteouts_the_source(lab: Lab) -> None:
    """REN-1: rename U/a to U/b, a only in RO: RW/b a full copy with a's metadata,
    a whiteout for a on RW, RO/a untouched."""
    put(lab.ro / "a", "A data", mode=0o640, uid=1001, gid=1002, mtime_ns=T1_NS)
    gran = max(time_granularity(lab.rw), time_granularity(lab.ro))
    ro_meta = _meta((lab.ro / "a").stat(), gran)
    u = lab.mount()
    os.rename(u / "a", u / "b")
    assert (lab.rw / "b").read_text() == "A data", lab.explain("RW/b = A data", None, lab.rw / "b")
    assert _meta((lab.rw / "b").stat(), gran) == ro_meta, lab.explain(
        "RW/b keeps a's mode/uid/gid/mtime", None, lab.rw / "b", lab.ro / "a"
    )
    problem = whiteout_problem(lab.driver.name, lab.rw, "a", base_root=lab.rw)
    assert problem is None, lab.explain(f"RW holds {lab.driver.whiteout_form} for a", problem)
    assert (lab.ro / "a").read_text() == "A data", lab.explain("RO/a untouched", None)
    assert sorted(names(u)) == ["b"], lab.explain("U lists only b", names(u))


def test_rename_onto_a_lower_file(lab: Lab) -> None:
    """REN-2: rename U/a onto U/b, both only in RO: RW/b holds a's data, RO/b hidden,
    a whiteout for a."""
    put(lab.ro / "a", "A data")
    put(lab.ro / "b", "B data")
    u = lab.mount()
    os.rename(u / "a", u / "b")
    assert (u / "b").read_text() == "A data", lab.explain("U/b = A data", None, u / "b")
    assert (lab.rw / "b").read_text() == "A data", lab.explain("RW/b = A data", None)
    problem = whiteout_problem(lab.driver.name, lab.rw, "a", base_root=lab.rw)
    assert problem is None, lab.explain("whiteout for a on RW", problem)
    assert (lab.ro / "b").read_text() == "B data", lab.explain("RO/b untouched", None)


def test_rename_upper_only_file_leaves_no_whiteout(lab: Lab) -> None:
    """Renaming a file that exists only on RW is a plain rename on RW, no whiteout."""
    put(lab.rw / "a", "A")
    put(lab.ro / "other", "x")
    u = lab.mount()
    os.rename(u / "a", u / "b")
    assert (lab.rw / "b").read_text() == "A" and not lexists(lab.rw / "a"), lab.explain(
        "RW/a renamed to RW/b", None
    )
    problem = no_whiteout_problem(lab.driver.name, lab.rw, "a")
    assert problem is None, lab.explain("no whiteout for a", problem)


def _dir_rename_allowed(lab: Lab) -> bool:
    if lab.driver.name == "overlay":
        return overlay_param(lab.driver, "redirect_dir") == "Y"
    return False


def test_rename_directory_with_lower_children(lab: Lab) -> None:
    """REN-3: renaming U/d whose RO copy has children: aufs EXDEV (mv then copies);
    overlayfs EXDEV unless redirect_dir=on. Nothing changes on a refusal."""
    put(lab.ro / "d" / "child", "x")
    u = lab.mount()
    err = errno_of(os.rename, u / "d", u / "e")
    if _dir_rename_allowed(lab):
        assert err is None, lab.explain("rename succeeds (redirect_dir=on)", errname(err))
        assert names(u / "e") == ["child"], lab.explain("U/e lists child", names(u / "e"))
        return
    assert err == errno.EXDEV, lab.explain("rename U/d -> U/e: EXDEV", errname(err))
    assert names(u / "d") == ["child"] and not lexists(u / "e"), lab.explain(
        "U/d unchanged, no U/e", names(u)
    )


def test_rename_empty_lower_only_directory(lab: Lab) -> None:
    """REN-3: an empty directory only in RO: aufs renames it; overlayfs still returns
    EXDEV for a lower directory unless redirect_dir=on."""
    mkdir(lab.ro / "d")
    u = lab.mount()
    err = errno_of(os.rename, u / "d", u / "e")
    if lab.driver.name == "overlay" and not _dir_rename_allowed(lab):
        assert err == errno.EXDEV, lab.explain("overlay: rename lower dir EXDEV", errname(err))
        return
    assert err is None, lab.explain("rename of an empty lower-only dir succeeds", errname(err))
    assert (u / "e").is_dir() and not lexists(u / "d"), lab.explain("U/e a dir, no U/d", names(u))
    assert (lab.ro / "d").is_dir(), lab.explain("RO/d untouched", None)


@pytest.mark.only_drivers("aufs")
def test_dirren_renames_directories_with_lower_children(lab: Lab) -> None:
    """REN-5: with CONFIG_AUFS_DIRREN and `dirren`, the REN-3 rename succeeds and
    /proc/mounts shows dirren."""
    require_aufs_config(lab.driver, "DIRREN")
    put(lab.ro / "d" / "child", "x")
    u = lab.mount(options=["dirren"])
    assert "dirren" in aufs.mount_options(u), lab.explain("dirren shown", aufs.mount_options(u))
    os.rename(u / "d", u / "e")
    assert names(u / "e") == ["child"] and not lexists(u / "d"), lab.explain(
        "U/e lists child, U/d gone", names(u)
    )


@pytest.mark.only_drivers("aufs")
def test_dirren_is_ignored_without_config(lab: Lab, kmsg: KernelWatch) -> None:
    """REN-5: without CONFIG_AUFS_DIRREN, `dirren` mounts, logs "ignored dirren" and
    is not shown."""
    if not aufs.kernel_config():
        pytest.skip("aufs configuration unknown")
    if aufs_config_has("DIRREN"):
        pytest.skip("CONFIG_AUFS_DIRREN is set")
    u = lab.mount(options=["dirren"])
    assert "dirren" not in aufs.mount_options(u), lab.explain(
        "dirren not shown", aufs.mount_options(u)
    )
    found = kmsg.wait_for(r"ignored dirren")
    assert found, lab.explain("kernel log: ignored dirren", kmsg.lines())
