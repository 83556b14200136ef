"""H. Docker's usage, as its former aufs storage driver mounted container layers.

Layout (inside the lab's first branch filesystem, standing in for /var/lib/docker/aufs):
diff/<id> per layer, layers/<id> listing the lower layers top-down, mnt/<id> the
union mount point; mounted as "none" with
br:diff/<cid>=rw:diff/<l1>=ro+wh:diff/<base>=ro+wh,dio,xino=/dev/shm/aufs.xino,dirperm1.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from unionfs import aufs, sysapi
from unionfs.drivers import AUFS_WH_BASE, AUFS_WH_DIROPQ, AUFS_WH_ORPHDIR, AUFS_WH_PLINKDIR
from unionfs.fsops import errname, errno_of, names, put
from unionfs.lab import Lab

pytestmark = pytest.mark.only_drivers("aufs")

CID, L1, BASE = "c0ffee", "layer1", "base"
DOCKER_OPTS = ["dio", "xino=/dev/shm/aufs.xino", "dirperm1"]


def _layout(lab: Lab) -> tuple[Path, dict[str, Path]]:
    root = lab.fss[0].mountpoint / "docker" / "aufs"
    diff = {i: root / "diff" / i for i in (CID, L1, BASE)}
    for d in diff.values():
        d.mkdir(parents=True)
    (root / "layers").mkdir()
    (root / "layers" / CID).write_text(f"{L1}\n{BASE}\n")
    (root / "layers" / L1).write_text(f"{BASE}\n")
    (root / "layers" / BASE).write_text("")
    (root / "mnt" / CID).mkdir(parents=True)
    # base layer: a small root filesystem
    put(diff[BASE] / "etc" / "os-release", "ID=base")
    put(diff[BASE] / "etc" / "removed-in-l1", "gone above")
    put(diff[BASE] / "var" / "cache" / "old", "replaced dir")
    put(diff[BASE] / "bin" / "sh", "#!", mode=0o755)
    # layer1 deletes a file (whiteout) and replaces a directory (opaque), as tar did
    (diff[L1] / "etc").mkdir()
    lab.driver.make_whiteout(diff[L1] / "etc", "removed-in-l1")
    put(diff[L1] / "var" / "cache" / "new", "from layer1")
    lab.driver.make_opaque(diff[L1] / "var" / "cache")
    put(diff[L1] / "etc" / "added", "layer1 file")
    return root, diff


def _docker_mount(lab: Lab, root: Path, diff: dict[str, Path], extra: list[str]) -> Path:
    if not Path("/dev/shm").is_dir():
        pytest.skip("/dev/shm missing: Docker's xino path unavailable")
    target = root / "mnt" / CID
    data = f"br:{diff[CID]}=rw:{diff[L1]}=ro+wh:{diff[BASE]}=ro+wh," + ",".join(extra)
    lab.mount_raw(data, target=target)
    return target


def test_docker_layer_stack_behaves(lab: Lab) -> None:
    """DKR-1: the container mount succeeds; layer1's whiteout and opaque directory
    hide base's entries; writes copy up into diff/<cid>; deletes leave .wh. there."""
    root, diff = _layout(lab)
    m = _docker_mount(lab, root, diff, DOCKER_OPTS)
    assert sorted(names(m / "etc")) == ["added", "os-release"], lab.explain(
        "etc: added, os-release (removed-in-l1 whited out)", names(m / "etc")
    )
    assert names(m / "var" / "cache") == ["new"], lab.explain(
        "var/cache: only layer1's new (opaque)", names(m / "var" / "cache")
    )
    with open(m / "etc" / "os-release", "a") as fh:
        fh.write("\nVERSION=1")
    assert (diff[CID] / "etc" / "os-release").read_text() == "ID=base\nVERSION=1", lab.explain(
        "the write copied os-release up into diff/<cid>", None, diff[CID] / "etc"
    )
    os.unlink(m / "bin" / "sh")
    assert lab.driver.is_whiteout(diff[CID] / "bin", "sh"), lab.explain(
        "diff/<cid>/bin/.wh.sh after rm", None, diff[CID] / "bin"
    )
    assert (diff[BASE] / "bin" / "sh").exists(), lab.explain("base layer untouched", None)


def test_docker_diff_holds_only_entries_whiteouts_and_metadata(lab: Lab) -> None:
    """DKR-3: after typical container activity, diff/<cid> holds only real entries,
    .wh.<name>, .wh..wh..opq and aufs's .wh..wh.aufs/.plnk/.orph; Docker's diff would
    skip every .wh..wh.* except .wh..wh..opq."""
    root, diff = _layout(lab)
    m = _docker_mount(lab, root, diff, DOCKER_OPTS)
    os.unlink(m / "etc" / "os-release")
    put(m / "etc" / "new-conf", "c")
    for child in os.listdir(m / "var" / "cache"):
        os.unlink(m / "var" / "cache" / child)
    os.rmdir(m / "var" / "cache")
    os.mkdir(m / "var" / "cache")
    os.link(m / "bin" / "sh", m / "bin" / "sh2")
    meta = {AUFS_WH_BASE, AUFS_WH_PLINKDIR, AUFS_WH_ORPHDIR}
    odd = []
    for dirpath, dirnames, filenames in os.walk(diff[CID]):
        rel = Path(dirpath).relative_to(diff[CID])
        if str(rel) in meta or str(rel).startswith(f"{AUFS_WH_PLINKDIR}/"):
            dirnames[:] = []
            continue
        for n in dirnames + filenames:
            at_root = str(rel) == "."
            if n.startswith(".wh..wh."):
                if n == AUFS_WH_DIROPQ or (at_root and n in meta):
                    continue
                odd.append(str(rel / n))
    assert not odd, lab.explain("no other .wh..wh.* names in diff/<cid>", odd)
    docker_diff = [
        p
        for p in _walk(diff[CID])
        if not Path(p).name.startswith(".wh..wh.") or Path(p).name == AUFS_WH_DIROPQ
    ]
    assert "etc/.wh.os-release" in docker_diff and "var/cache/.wh..wh..opq" in docker_diff, (
        lab.explain("Docker's diff has the whiteout and the opaque marker", docker_diff)
    )


def _walk(root: Path) -> list[str]:
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        dirnames[:] = [d for d in dirnames if not d.startswith(".wh..wh.") or d == AUFS_WH_DIROPQ]
        out.extend(str(rel / n) if str(rel) != "." else n for n in dirnames + filenames)
    return sorted(out)


def test_docker_unmount_sequence(lab: Lab) -> None:
    """DKR-4: Docker's unmount: `auplink MNT flush` (aufs-tools), then umount retried
    on EBUSY: the umount succeeds and .wh..wh.plnk is empty."""
    auplink = shutil.which("auplink") or "/sbin/auplink"
    if not os.access(auplink, os.X_OK):
        pytest.skip("auplink (aufs-tools) not installed: Docker skipped the flush too")
    root, diff = _layout(lab)
    m = _docker_mount(lab, root, diff, DOCKER_OPTS)
    os.link(m / "bin" / "sh", m / "bin" / "sh2")
    proc = subprocess.run(
        [auplink, str(m), "flush"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, lab.explain("auplink MNT flush exits 0", proc.stderr)
    for _ in range(20):
        err = errno_of(sysapi.umount, m)
        if err != errno.EBUSY:
            break
        time.sleep(0.1)
    assert err is None, lab.explain("umount after flush succeeds", errname(err))
    lab.mounts[-1].mounted = False
    plnk = diff[CID] / AUFS_WH_PLINKDIR
    assert not plnk.exists() or os.listdir(plnk) == [], lab.explain(
        ".wh..wh.plnk empty after flush", os.listdir(plnk)
    )


@pytest.mark.fs_independent
def test_docker_dirperm1_probe(lab: Lab) -> None:
    """DP-4: Docker's probe: mount `br:<tmp>,dirperm1,xino=/dev/shm/aufs.xino` and
    unmount; success means "Dirperm1 Supported: true"."""
    if not Path("/dev/shm").is_dir():
        pytest.skip("/dev/shm missing")
    probe = lab.tmp / "probe-mnt"
    probe.mkdir()
    lab.mount_raw(f"br:{lab.ro2},dirperm1,xino=/dev/shm/aufs.xino", target=probe)
    assert "dirperm1" in aufs.mount_options(probe), lab.explain(
        "dirperm1 shown", aufs.mount_options(probe)
    )
    err = errno_of(sysapi.umount, probe)
    lab.mounts[-1].mounted = err is not None
    assert err is None, lab.explain("the probe mount unmounts", errname(err))
