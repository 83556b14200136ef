"""K. UDBA, xino, creation and copy-up policies and the other aufs options."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from unionfs import aufs, sysapi
from unionfs.drivers import Branch
from unionfs.fsops import errname, errno_of, lexists, names, put
from unionfs.gates import aufs_config_has, require_aufs_config
from unionfs.kernel import KernelWatch
from unionfs.lab import Lab

pytestmark = pytest.mark.only_drivers("aufs")


def _opts(lab: Lab) -> list[str]:
    return [o for o in aufs.mount_options(lab.u) if not o.startswith("br:")]


def test_udba_reval_notices_a_lower_file_removed_behind_its_back(lab: Lab) -> None:
    """OPT-1: udba=reval (default): stat U/f, rm RO/f directly, stat U/f: ENOENT."""
    put(lab.ro / "f", "lower")
    u = lab.mount(plain=True)
    (u / "f").stat()
    (lab.ro / "f").unlink()
    err = errno_of(os.stat, u / "f")
    assert err == errno.ENOENT, lab.explain("stat U/f after rm RO/f: ENOENT", errname(err))


def test_udba_notify_sees_a_file_added_behind_its_back(lab: Lab) -> None:
    """OPT-2: udba=notify (CONFIG_AUFS_HNOTIFY): U/n ENOENT, touch RW/n directly,
    U/n then found (within 3 s); /proc/mounts shows udba=notify."""
    require_aufs_config(lab.driver, "HNOTIFY")
    u = lab.mount(options=["udba=notify"], plain=True)
    assert "udba=notify" in _opts(lab), lab.explain("udba=notify shown", _opts(lab))
    err = errno_of(os.stat, u / "n")
    assert err == errno.ENOENT, lab.explain("stat U/n: ENOENT before", errname(err))
    put(lab.rw / "n", "direct")
    deadline = time.monotonic() + 3
    while errno_of(os.stat, u / "n") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert errno_of(os.stat, u / "n") is None, lab.explain("U/n visible after touch RW/n", None)


def test_udba_fsnotify_is_an_alias_of_notify(lab: Lab) -> None:
    """OPT-2: `udba=fsnotify` (CONFIG_AUFS_HFSNOTIFY) mounts and shows as udba=notify."""
    require_aufs_config(lab.driver, "HNOTIFY", "HFSNOTIFY")
    lab.mount(options=["udba=fsnotify"], plain=True)
    assert "udba=notify" in _opts(lab), lab.explain("udba=notify shown", _opts(lab))


def test_udba_notify_is_refused_without_hnotify(lab: Lab) -> None:
    """OPT-2: without CONFIG_AUFS_HNOTIFY, udba=notify is EINVAL."""
    if not aufs.kernel_config():
        pytest.skip("aufs configuration unknown")
    if aufs_config_has("HNOTIFY"):
        pytest.skip("CONFIG_AUFS_HNOTIFY is set: udba=notify is valid here")
    err = errno_of(lab.mount, options=["udba=notify"], plain=True)
    assert err == errno.EINVAL, lab.explain("udba=notify without HNOTIFY: EINVAL", errname(err))


def test_udba_none_mounts_and_shows(lab: Lab) -> None:
    """OPT-3: udba=none mounts, shows as udba=none, and serves the branches."""
    put(lab.ro / "f", "lower")
    u = lab.mount(options=["udba=none"], plain=True)
    assert "udba=none" in _opts(lab), lab.explain("udba=none shown", _opts(lab))
    assert (u / "f").read_text() == "lower", lab.explain("U/f readable", None, u / "f")


def test_default_xino_is_an_unlinked_file_and_keeps_inode_numbers(lab: Lab) -> None:
    """OPT-4: the default xino file (RW/.aufs.xino, or /tmp/.aufs.xino when RW's fs
    cannot hold it) is created then unlinked: no such name exists; st_ino of U/f is
    stable across a cache drop."""
    put(lab.ro / "f", "lower")
    u = lab.mount(plain=True)
    xi = (aufs.si_dir(u) / "xi_path").read_text().rstrip("\n")
    want = (
        aufs.XINO_DEFPATH
        if lab.kind_of("RW") in ("xfs", "btrfs")
        else f"{lab.rw}/{aufs.XINO_FNAME}"
    )
    assert xi == want, lab.explain(f"xi_path {want}", xi)
    assert not lexists(Path(xi)), lab.explain(f"no file {xi} (unlinked after create)", None)
    before = (u / "f").stat().st_ino
    sysapi.drop_caches()
    after = (u / "f").stat().st_ino
    assert before == after, lab.explain(
        "st_ino of U/f stable across drop_caches", f"{before} -> {after}"
    )


def test_two_mounts_can_share_one_xino_path(lab: Lab) -> None:
    """OPT-5: two mounts both with the same `xino=PATH` (as Docker did with
    /dev/shm/aufs.xino) succeed and leave no file at PATH."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() else lab.tmp
    xino = base / f"unionfs-{os.getpid()}-{lab.tmp.name}.xino"
    lab.mount(lowers=["RO"], options=[f"xino={xino}"], plain=True)
    u2 = lab.tmp / "u2"
    u2.mkdir()
    rw2 = lab.add_branch("RW2")
    lab.mount(
        upper=Branch(rw2, "rw"), lowers=["RO2"], options=[f"xino={xino}"], plain=True, target=u2
    )
    assert sysapi.proc_mounts_line(u2) is not None, lab.explain("second mount present", None)
    assert not lexists(xino), lab.explain(f"no file left at {xino}", None, xino)


def test_xino_truncation_options_work_at_remount_only(lab: Lab) -> None:
    """OPT-7: trunc_xino=<branch> and itrunc_xino=<index> are EINVAL at the first mount
    and accepted at remount, as are trunc_xib and trunc_xino."""
    for opt in (f"trunc_xino={lab.rw}", "itrunc_xino=0"):
        err = errno_of(lab.mount, lowers=["RO"], options=[opt], plain=True)
        assert err == errno.EINVAL, lab.explain(f"{opt} at mount: EINVAL", errname(err))
    lab.mount(lowers=["RO"], plain=True)
    for opt in ("trunc_xib", f"trunc_xino={lab.rw}", "itrunc_xino=0", "trunc_xino"):
        err = errno_of(lab.remount, opt)
        assert err is None, lab.explain(f"remount {opt} accepted", errname(err))


def test_trunc_xino_path_is_not_an_option_key(lab: Lab) -> None:
    """OPT-7 as aufs5/6 parse it: the path form is `trunc_xino=PATH`; a
    `trunc_xino_path=` key (an older spelling) is an unknown key, EINVAL at remount."""
    lab.mount(lowers=["RO"], plain=True)
    err = errno_of(lab.remount, f"trunc_xino_path={lab.rw}")
    assert err == errno.EINVAL, lab.explain(
        "trunc_xino_path=RW: EINVAL (unknown key)", errname(err)
    )


@pytest.mark.only_branch_fs("mixed")
def test_sum_adds_up_the_branch_filesystems(lab: Lab) -> None:
    """OPT-8: with sum, statfs(U) adds blocks (in bytes) and inodes of every distinct
    branch fs; without it, statfs(U) reports the first branch's fs."""
    u = lab.mount(plain=True)
    single = sysapi.statfs(u)
    rw = sysapi.statfs(lab.rw)
    assert (single.f_blocks * single.f_bsize, single.f_files) == (
        rw.f_blocks * rw.f_bsize,
        rw.f_files,
    ), lab.explain("nosum: statfs(U) blocks/files = RW's fs", (single, rw))
    lab.remount("sum")
    total = sysapi.statfs(u)
    seen: dict[int, sysapi.StatFs] = {}
    for p in (lab.rw, lab.ro, lab.ro2):
        seen.setdefault(p.stat().st_dev, sysapi.statfs(p))
    want_bytes = sum(s.f_blocks * s.f_bsize for s in seen.values())
    want_files = sum(s.f_files for s in seen.values())
    got = (total.f_blocks * total.f_bsize, total.f_files)
    assert got == (want_bytes, want_files), lab.explain(
        f"sum: (bytes, files) = {(want_bytes, want_files)} over {len(seen)} filesystems", got
    )


CREATE_POLICIES = [
    ("rr", "rr"),
    ("round-robin", "rr"),
    ("mfs", "mfs"),
    ("most-free-space", "mfs"),
    ("mfs:60", "mfs:60"),
    ("pmfs", "pmfs"),
    ("pmfs:60", "pmfs:60"),
    ("mfsrr:1000000", "mfsrr:1000000"),
    ("mfsrr:1000000:60", "mfsrr:1000000:60"),
    ("tdmfs:1000000", "tdmfs:1000000"),
    ("tdmfs:1000000:60", "tdmfs:1000000:60"),
    ("pmfsrr:1000000", "pmfsrr:1000000"),
    ("pmfsrr:1000000:60", "pmfsrr:1000000:60"),
    ("mfs:3600", "mfs:3600"),
]


@pytest.mark.fs_independent
@pytest.mark.parametrize(("given", "shown"), CREATE_POLICIES)
def test_create_policy_parses_and_renders(lab: Lab, given: str, shown: str) -> None:
    """OPT-10: create=mfs[:s], pmfs[:s], mfsrr:low[:s], tdmfs:low[:s], pmfsrr:low[:s]
    and the long aliases parse and render back (s at most 3600)."""
    lab.mount(options=[f"create={given}"], plain=True)
    assert f"create={shown}" in _opts(lab), lab.explain(f"create={shown} shown", _opts(lab))


@pytest.mark.fs_independent
@pytest.mark.parametrize(
    ("given", "shown"),
    [("bup", "bup"), ("bottom-up", "bu"), ("bu", "bu"), ("bottom-up-parent", "bup")],
)
def test_copyup_policy_parses_and_renders(lab: Lab, given: str, shown: str) -> None:
    """OPT-10/11: cpup=bup|bu and their long aliases render as cpup=bup|bu."""
    lab.mount(options=[f"cpup={given}"], plain=True)
    assert f"cpup={shown}" in _opts(lab), lab.explain(f"cpup={shown} shown", _opts(lab))


@pytest.mark.parametrize(
    ("policy", "rw1_has_d", "target"),
    [
        ("tdp", False, "RW"),
        ("bup", False, "RW"),
        ("bu", False, "RW1"),
        ("tdp", True, "RW"),
        ("bup", True, "RW1"),
        ("bu", True, "RW1"),
    ],
)
def test_copyup_policy_chooses_the_branch(
    lab: Lab, policy: str, rw1_has_d: bool, target: str
) -> None:
    """OPT-11: RW=rw:RW1=rw:RO=ro, RO/d/f, RW/d present; append to U/d/f copies up to
    (i) RW1 lacking d: tdp, bup -> RW; bu -> RW1 (making RW1/d); (ii) RW1/d present:
    tdp -> RW; bup, bu -> RW1."""
    rw1 = lab.add_branch("RW1")
    put(lab.ro / "d" / "f", "lower")
    (lab.rw / "d").mkdir()
    if rw1_has_d:
        (rw1 / "d").mkdir()
    u = lab.mount(
        upper="RW",
        lowers=[Branch(rw1, "rw"), Branch(lab.ro, "ro")],
        options=[f"cpup={policy}"],
        plain=True,
    )
    with open(u / "d" / "f", "ab") as fh:
        fh.write(b"+")
    where = [label for label, root in (("RW", lab.rw), ("RW1", rw1)) if lexists(root / "d/f")]
    assert where == [target], lab.explain(f"cpup={policy}: d/f copied up to {target} only", where)
    assert (u / "d" / "f").read_text() == "lower+", lab.explain("U/d/f = lower+", None)


@pytest.mark.parametrize("hider", ["whiteout", "opaque-parent"])
def test_create_rr_puts_new_names_where_the_whiteout_is(lab: Lab, hider: str) -> None:
    """OPT-12: create=rr over RW=rw:RW1=rw:RO=ro: a name whited out on RW, or created in
    a directory opaque on RW, is created on RW (and the whiteout goes), while other
    names rotate over both writable branches."""
    rw1 = lab.add_branch("RW1")
    wanted = [f"x{i}" for i in range(4)]
    if hider == "whiteout":
        parent_rw, parent_u = lab.rw, lab.u
        for n in wanted:
            put(lab.ro / n, "hidden lower")
            lab.driver.make_whiteout(lab.rw, n)
    else:
        parent_rw, parent_u = lab.rw / "d", lab.u / "d"
        (lab.rw / "d").mkdir()
        lab.driver.make_opaque(lab.rw / "d")
        (rw1 / "d").mkdir()
        put(lab.ro / "d" / "old", "hidden by the opaque RW/d")
    lab.mount(
        upper="RW",
        lowers=[Branch(rw1, "rw"), Branch(lab.ro, "ro")],
        options=["create=rr"],
        plain=True,
    )
    for n in wanted:
        (parent_u / n).write_text("new")
    for n in wanted:
        assert lexists(parent_rw / n), lab.explain(f"{n} created on RW", None, parent_rw / n)
        assert not lexists(lab.rw / f".wh.{n}"), lab.explain(f"RW/.wh.{n} gone", None)
    for i in range(6):
        (lab.u / f"free{i}").write_text("rr")
    spread = {
        label
        for label, root in (("RW", lab.rw), ("RW1", rw1))
        for i in range(6)
        if lexists(root / f"free{i}")
    }
    assert spread == {"RW", "RW1"}, lab.explain("unconstrained names spread over RW, RW1", spread)


def test_shwh_lists_whiteouts_on_a_readonly_union(lab: Lab) -> None:
    """OPT-13: with CONFIG_AUFS_SHWH, `-o ro,shwh,br:RW=ro+wh:RO=rr+wh` lists .wh.x."""
    require_aufs_config(lab.driver, "SHWH")
    put(lab.ro / "x", "whited out")
    lab.driver.make_whiteout(lab.rw, "x")
    u = lab.mount_raw(f"shwh,br:{lab.rw}=ro+wh:{lab.ro}=rr+wh", flags=sysapi.MS_RDONLY)
    listed = names(u)
    assert ".wh.x" in listed, lab.explain("getdents(U) lists .wh.x", listed)


TUNING = [
    "dirwh=5",
    "rdblk=1024",
    "rdhash=64",
    "rdcache=20",
    "nowarn_perm",
    "verbose",
    "diropq=a",
    "dio",
]


@pytest.mark.fs_independent
@pytest.mark.parametrize("option", TUNING)
def test_tuning_option_is_accepted_and_rendered(lab: Lab, option: str) -> None:
    """OPT-14: dirwh, rdblk, rdhash, rdcache (<= 3600), nowarn_perm, verbose, diropq=a
    and dio are accepted and rendered when not default (dio is the default from 6.10)."""
    lab.mount(options=[option], plain=True)
    if option == "dio" and aufs.dio_is_default():
        assert "dio" not in _opts(lab), lab.explain("dio not shown (default)", _opts(lab))
        return
    assert option in _opts(lab), lab.explain(f"{option} shown in /proc/mounts", _opts(lab))


@pytest.mark.fs_independent
def test_acl_option_is_rendered(lab: Lab) -> None:
    """OPT-14: `acl` (with CONFIG_FS_POSIX_ACL) sets POSIX ACL support, shown as ,acl."""
    err = errno_of(lab.mount, lowers=["RO"], options=["acl"], plain=True)
    if err is not None:
        pytest.skip(f"acl refused (errno {err}): kernel without CONFIG_FS_POSIX_ACL?")
    assert "acl" in _opts(lab), lab.explain("acl shown", _opts(lab))


@pytest.mark.fs_independent
@pytest.mark.parametrize("warn", [True, False])
def test_warn_perm_logs_a_differing_branch_root(lab: Lab, kmsg: KernelWatch, warn: bool) -> None:
    """OPT-14: appending a branch whose root differs from br0's root in mode logs
    "uid/gid/perm X 0/0/0700, 0/0/0755" unless nowarn_perm."""
    x = lab.add_branch("X")
    x.chmod(0o700)
    lab.mount(lowers=["RO"], options=[] if warn else ["nowarn_perm"], plain=True)
    lab.remount(f"append:{x}=ro")
    found = kmsg.wait_for(rf"uid/gid/perm {x} 0/0/0700, 0/0/0755", timeout=1.0 if warn else 0.3)
    if warn:
        assert found, lab.explain("kernel log: uid/gid/perm X 0/0/0700, 0/0/0755", kmsg.lines())
    else:
        assert not found, lab.explain("no uid/gid/perm line with nowarn_perm", found)


@pytest.mark.option_sets
def test_o_direct_follows_the_dio_option(lab: Lab) -> None:
    """CPU-19: open(U/f, O_DIRECT) is EINVAL without `dio` (before aufs6.10, where dio
    became the default) and succeeds with it (Docker's set has dio). aufs releases
    from 20240624 on copy the branch file's FMODE_CAN_ODIRECT in ->open() (commit
    973f58b3), so there the open succeeds without `dio` too."""
    put(lab.ro / "f", b"x" * 4096)
    refused = errno_of(os.open, lab.ro / "f", os.O_RDONLY | os.O_DIRECT)
    if refused is not None:
        pytest.skip(f"RO's filesystem refuses O_DIRECT itself (errno {refused})")
    u = lab.mount()
    allowed = aufs.dio_is_default() or aufs.copies_can_odirect() or "dio" in lab.optset.options
    err = errno_of(os.open, u / "f", os.O_RDONLY | os.O_DIRECT)
    if allowed:
        assert err is None, lab.explain("O_DIRECT open succeeds (dio)", errname(err))
    else:
        assert err == errno.EINVAL, lab.explain("O_DIRECT open: EINVAL (nodio)", errname(err))
