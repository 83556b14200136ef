"""A per-check laboratory: fresh branch filesystems, branch directories, one union mount.

Layout inside a fresh temporary directory T:

    T/fs            the branch filesystem (tmpfs, or an ext4/xfs/btrfs/f2fs loop device)
    T/fs/rw         branch RW   (upper, writable)
    T/fs/rw-work    overlayfs's workdir (overlay only)
    T/fs/ro         branch RO   (first lower)
    T/fs/ro2        branch RO2  (second lower)
    T/u             the union mount point U

With a mixed spec such as "ext4+tmpfs+ext4", branch i lives on its own
filesystem T/fs<i>. Every mount and loop device the lab makes is undone by
cleanup(), which also refuses to delete T while anything is still mounted
below it.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from . import evidence, fresh_images, kernel, sysapi
from .drivers import Branch, Mount, UnionDriver

LOOP_FS = ("ext4", "xfs", "btrfs", "f2fs")
KNOWN_FS = ("tmpfs", *LOOP_FS)
MIXED_ALIAS = {"mixed": "ext4+tmpfs+ext4"}
LOOP_IMAGE_BYTES = 320 * 1024 * 1024  # sparse; xfs refuses anything below 300 MiB
_MKFS_ARGS = {
    # 256-byte inodes: nanosecond timestamps even where an older mke2fs would pick
    # 128-byte inodes (second granularity) for a small filesystem
    "ext4": ["-q", "-F", "-I", "256"],
    "xfs": ["-q", "-f"],
    "btrfs": ["-q", "-f"],
    "f2fs": ["-q", "-f"],
}
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")

#: every temporary root any lab in this process made; see leaked_mounts()
_LAB_ROOTS: set[str] = set()


class OptionSet:
    """A named aufs mount configuration: extra options and the lower branches' permission."""

    def __init__(self, name: str, options: Sequence[str], lower_perm: str, note: str) -> None:
        self.name = name
        self.options = list(options)
        self.lower_perm = lower_perm
        self.note = note

    def describe(self) -> str:
        opts = ",".join(self.options) or "no extra options"
        return f"{opts}, lower branches ={self.lower_perm} ({self.note})"

    def unavailable_reason(self) -> str | None:
        for opt in self.options:
            if opt.startswith("xino="):
                parent = os.path.dirname(opt[len("xino=") :])
                if not os.path.isdir(parent):
                    return f"{parent} (for {opt}) does not exist"
        return None


OPTION_SETS = {
    s.name: s
    for s in (
        OptionSet("defaults", [], "ro", "aufs defaults"),
        OptionSet("dirperm1", ["dirperm1"], "ro", "permission checks on the topmost dir only"),
        OptionSet(
            "docker",
            ["dio", "xino=/dev/shm/aufs.xino", "dirperm1"],
            "ro+wh",
            "as Docker's aufs storage driver mounted container layers",
        ),
    )
}


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in _SBIN:
        cand = os.path.join(d, name)
        if os.access(cand, os.X_OK):
            return cand
    return None


def parse_fs_spec(spec: str) -> list[str]:
    """'ext4' -> ['ext4']; 'ext4+tmpfs' -> one filesystem per branch, in branch order."""
    spec = MIXED_ALIAS.get(spec, spec)
    kinds = spec.split("+")
    for kind in kinds:
        if kind not in KNOWN_FS:
            raise ValueError(f"unknown branch filesystem {kind!r} in {spec!r}; know {KNOWN_FS}")
    return kinds


def fs_unavailable_reason(spec: str) -> str | None:
    """Why the branch filesystems of spec cannot be made here, or None."""
    have = sysapi.filesystems()
    for kind in parse_fs_spec(spec):
        if kind not in have:
            return f"branch fs {kind}: {kind} not in /proc/filesystems"
        if kind in LOOP_FS:
            if find_tool(f"mkfs.{kind}") is None:
                return f"branch fs {kind}: mkfs.{kind} not installed"
            if not os.path.exists("/dev/loop-control"):
                return f"branch fs {kind}: no /dev/loop-control (loop driver missing)"
    return None


def make_fs(kind: str, image: Path, extra: Sequence[str] = ()) -> None:
    """A fresh `kind` filesystem in a new sparse file `image` (LOOP_IMAGE_BYTES).
    Raises RuntimeError naming mkfs's complaint."""
    with open(image, "wb") as fh:
        fh.truncate(LOOP_IMAGE_BYTES)
    mkfs = find_tool(f"mkfs.{kind}")
    if mkfs is None:
        raise RuntimeError(f"mkfs.{kind} not installed")
    proc = subprocess.run(
        [mkfs, *_MKFS_ARGS[kind], *extra, str(image)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"mkfs.{kind} {image} failed ({proc.returncode}): {proc.stderr.strip()}")


class BackingFs:
    """One mounted filesystem that holds branch directories."""

    def __init__(self, kind: str, mountpoint: Path, image: Path | None = None) -> None:
        self.kind = kind
        self.mountpoint = mountpoint
        self.image = image
        self.loopdev: str | None = None
        self.mounted = False

    def setup(self) -> None:
        self.mountpoint.mkdir()
        if self.kind == "tmpfs":
            sysapi.mount("tmpfs", self.mountpoint, "tmpfs", 0, "mode=0755,size=512m")
            self.mounted = True
            return
        assert self.image is not None
        template = fresh_images.template(self.kind, self.image.parent.parent, make_fs)
        if template is not None:
            fresh_images.copy_with_new_uuid(template, self.image)
        else:
            make_fs(self.kind, self.image)
        dev, fd = sysapi.loop_attach(self.image, avoid=kernel.quarantined_loops())
        self.loopdev = dev
        try:
            sysapi.mount(dev, self.mountpoint, self.kind, 0, None)
            self.mounted = True
        finally:
            os.close(fd)  # autoclear: the device now lives exactly as long as the mount

    def cleanup(self) -> None:
        if self.mounted:
            _umount_retrying(self.mountpoint)
            self.mounted = False
        if self.loopdev is not None:
            if sysapi.loop_backing_file(self.loopdev) == str(self.image):
                sysapi.loop_detach(self.loopdev)
            self.loopdev = None


def _umount_retrying(target: Path, attempts: int = 20) -> None:
    """umount, retrying EBUSY for a while (a lingering fd in a dying child),
    then detaching lazily so that nothing stays visible in the namespace."""
    for i in range(attempts):
        try:
            sysapi.umount(target)
            return
        except OSError as exc:
            if exc.errno == errno.EINVAL and not os.path.ismount(target):
                return  # not mounted (any more)
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(0.05 * (i + 1))
    sysapi.umount(target, sysapi.MNT_DETACH)
    raise OSError(errno.EBUSY, f"{target} stayed busy; detached lazily")


class Lab:
    """Branches RW, RO, RO2 on fresh filesystems, and the union mount U over them."""

    def __init__(
        self,
        driver: UnionDriver,
        fs_spec: str,
        base: str | None = None,
        optset: OptionSet | None = None,
    ) -> None:
        self.driver = driver
        self.optset = optset or OPTION_SETS["defaults"]
        self.fs_spec = fs_spec
        self.kinds = parse_fs_spec(fs_spec)
        self.tmp = Path(tempfile.mkdtemp(prefix="unionfs-", dir=base))
        _LAB_ROOTS.add(str(self.tmp))
        self.tmp.chmod(0o755)  # checks run some steps as unprivileged users
        self.u = self.tmp / "u"
        self.fss: list[BackingFs] = []
        self.mounts: list[Mount] = []
        self.other_mounts: list[Path] = []
        self.branches: dict[str, Path] = {}
        self.mnt: Mount | None = None

    # --- setup ---

    def setup(self) -> Lab:
        self.u.mkdir()
        if len(self.kinds) == 1:
            self._add_fs(self.kinds[0], self.tmp / "fs")
        else:
            for i, kind in enumerate(self.kinds):
                self._add_fs(kind, self.tmp / f"fs{i}")
        for label in ("RW", "RO", "RO2"):
            self.add_branch(label)
        return self

    def _add_fs(self, kind: str, mountpoint: Path) -> BackingFs:
        image = self.tmp / f"{mountpoint.name}.{kind}.img" if kind in LOOP_FS else None
        fs = BackingFs(kind, mountpoint, image)
        self.fss.append(fs)
        fs.setup()
        return fs

    def add_branch(self, label: str) -> Path:
        """A fresh branch directory (root-owned 0755) named after label."""
        index = len(self.branches)
        fs = self.fss[min(index, len(self.fss) - 1)]
        path = fs.mountpoint / label.lower()
        path.mkdir()
        path.chmod(0o755)
        self.branches[label] = path
        return path

    def kind_of(self, label: str) -> str:
        """The filesystem type (tmpfs, ext4, ...) holding branch label."""
        index = list(self.branches).index(label)
        return self.kinds[min(index, len(self.kinds) - 1)]

    def same_fs(self, *labels: str) -> bool:
        return len({self.branches[label].stat().st_dev for label in labels}) == 1

    @property
    def rw(self) -> Path:
        return self.branches["RW"]

    @property
    def ro(self) -> Path:
        return self.branches["RO"]

    @property
    def ro2(self) -> Path:
        return self.branches["RO2"]

    # --- mounting ---

    def mount(
        self,
        options: Sequence[str] = (),
        upper: Branch | Path | str | None = "RW",
        lowers: Sequence[Branch | Path | str] = ("RO", "RO2"),
        flags: int = 0,
        target: Path | None = None,
        plain: bool = False,
    ) -> Path:
        """Mount the union (RW over RO over RO2 by default) at U; returns U.

        The lab's option set adds its options first and gives lower branches
        named by label its permission, unless plain=True (exact options only).
        """
        lower_perm = "ro" if plain else self.optset.lower_perm
        if not plain:
            options = [*self.optset.options, *options]

        def resolve(x: Branch | Path | str, perm: str) -> Branch:
            if isinstance(x, Branch):
                return x
            if isinstance(x, str):
                return Branch(self.branches[x], perm)
            return Branch(x, perm)

        up = resolve(upper, "rw") if upper is not None else None
        lows = [resolve(low, lower_perm) for low in lowers]
        tgt = target or self.u
        mnt = self.driver.mount(tgt, up, lows, options, flags)
        self.mounts.append(mnt)
        if tgt == self.u:
            self.mnt = mnt
        return tgt

    def mount_raw(self, data: str, flags: int = 0, target: Path | None = None) -> Path:
        """Mount the driver with exactly this mount(2) data string (no rendering)."""
        tgt = target or self.u
        sysapi.mount(self.driver.source, tgt, self.driver.fstype, flags, data)
        mnt = Mount(self.driver, tgt, data, None, [])
        self.mounts.append(mnt)
        if tgt == self.u:
            self.mnt = mnt
        return tgt

    def remount(self, data: str, flags: int = 0) -> None:
        """mount(2) with MS_REMOUNT on U and this data (aufs: add/del/mod, options)."""
        assert self.mnt is not None, "remount() before mount()"
        self.mnt.remount(data, flags)

    def readonly_fs_dir(self, name: str) -> Path:
        """A directory on a fresh tmpfs at T/<name> whose superblock is read-only."""
        target = self.tmp / name
        target.mkdir()
        self.mount_other("tmpfs", target, "tmpfs", "size=1m,mode=0755")
        (target / "dir").mkdir()
        (target / "dir" / "f").write_text("on a read-only fs")
        sysapi.mount("tmpfs", target, "tmpfs", sysapi.MS_REMOUNT | sysapi.MS_RDONLY, None)
        return target / "dir"

    def umount(self) -> None:
        """Unmount U (the branches stay)."""
        if self.mnt is not None:
            self.mnt.umount()
            self.mounts.remove(self.mnt)
            self.mnt = None

    def remount_fresh(self) -> Path:
        """Unmount U and mount it again with the same branches and options."""
        assert self.mnt is not None, "remount_fresh() before mount()"
        old = self.mnt
        self.umount()
        new = self.driver.mount(self.u, old.upper, old.lowers, old.options, old.flags)
        self.mounts.append(new)
        self.mnt = new
        return self.u

    def mount_other(
        self, source: str, target: Path, fstype: str, data: str | None = None, flags: int = 0
    ) -> None:
        """Some other mount the check needs (e.g. a tmpfs below a branch)."""
        sysapi.mount(source, target, fstype, flags, data)
        self.other_mounts.append(target)

    # --- evidence ---

    def label_of(self, path: Path) -> str:
        """'RW/d/f' for a path inside a branch, 'U/x' inside the union."""
        for label, root in [("U", self.u), *self.branches.items()]:
            try:
                rel = path.relative_to(root)
            except ValueError:
                continue
            return label if str(rel) == "." else f"{label}/{rel}"
        return str(path)

    def listings(self, include_union: bool = True) -> str:
        parts = [(label, p) for label, p in self.branches.items()]
        text = evidence.listings(parts)
        if include_union and self.mnt is not None:
            text += "\n" + evidence.listing(self.u, "U (through the union)")
        return text

    def explain(self, expected: str, observed: object = None, *paths: Path) -> str:
        """A failure message: expectation, observation, then every branch listed."""
        lines = [f"expected: {expected}"]
        if observed is not None:
            lines.append(f"observed: {observed}")
        for p in paths:
            lines.append(f"  {self.label_of(p)}: {evidence.describe(p)}")
        mount_line = self.mnt.proc_mounts() if self.mnt is not None else None
        lines.append(
            f"driver {self.driver.name}, branch fs {self.fs_spec}, option set {self.optset.name}; "
            f"mount data {self.mnt.data if self.mnt else '(not mounted)'!r}"
        )
        if mount_line:
            lines.append(f"/proc/mounts: {mount_line}")
        lines.append("branches:")
        lines.append(self.listings())
        return "\n".join(lines)

    def describe(self, path: Path) -> str:
        return f"{self.label_of(path)}: {evidence.describe(path)}"

    # --- teardown ---

    def keep(self, where: Path, nodeid: str) -> Path:
        """Leave everything mounted (--keep-lab) and describe it in a new
        where/<n>.json: {"nodeid", "root", "union", "union_mounted", "branches":
        {label: path}, "driver", "branch_fs", "option_set", "mount_data",
        "proc_mounts", "loop_devices"}. Returns that file's path."""
        _LAB_ROOTS.discard(str(self.tmp))  # the session's safety net leaves it too
        where.mkdir(parents=True, exist_ok=True)
        record = {
            "nodeid": nodeid,
            "root": str(self.tmp),
            "union": str(self.u),
            "union_mounted": os.path.ismount(self.u),
            "branches": {label: str(path) for label, path in self.branches.items()},
            "driver": self.driver.name,
            "branch_fs": self.fs_spec,
            "option_set": self.optset.name,
            "mount_data": self.mnt.data if self.mnt is not None else None,
            "proc_mounts": self.mnt.proc_mounts() if self.mnt is not None else None,
            "loop_devices": [fs.loopdev for fs in self.fss if fs.loopdev],
        }
        n = len(list(where.glob("*.json"))) + 1
        path = where / f"{n}.json"
        tmp = where / f".{n}.json.tmp"
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(path)
        return path

    def cleanup(self) -> None:
        """Undo everything; raises if something could not be undone cleanly."""
        problems: list[str] = []

        def attempt(what: str, fn: Callable[[], None]) -> None:
            try:
                fn()
            except Exception as exc:  # keep going: later steps must still run
                problems.append(f"{what}: {exc}")

        for mnt in reversed(self.mounts):
            attempt(f"umount {mnt.target}", functools.partial(_umount_mount, mnt))
        self.mounts.clear()
        self.mnt = None
        for target in reversed(self.other_mounts):
            attempt(f"umount {target}", functools.partial(_umount_retrying, target))
        self.other_mounts.clear()
        for fs in reversed(self.fss):
            attempt(f"umount {fs.mountpoint}", fs.cleanup)
        left = sysapi.mounts_under(self.tmp)
        for m in sorted(left, key=lambda m: -len(m.target)):
            detach = functools.partial(sysapi.umount, m.target, sysapi.MNT_DETACH)
            attempt(f"detach leftover {m.target}", detach)
            problems.append(f"leftover mount {m.target} ({m.fstype}) detached")
        if sysapi.mounts_under(self.tmp):
            problems.append(f"mounts remain under {self.tmp}; not deleting it")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
            _LAB_ROOTS.discard(str(self.tmp))
        if problems:
            raise RuntimeError("lab cleanup: " + "; ".join(problems))


def _umount_mount(mnt: Mount) -> None:
    if mnt.mounted:
        _umount_retrying(mnt.target)
        mnt.mounted = False


def leaked_mounts() -> list[sysapi.MountInfo]:
    """Mounts still present below any lab root this process made (should be none)."""
    found = []
    for root in sorted(_LAB_ROOTS):
        found.extend(sysapi.mounts_under(root))
    return found
