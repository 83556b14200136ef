"""The harness's own guest image: a Debian root filesystem with its stock kernel.

mmdebstrap builds a minimal Debian tree with linux-image-amd64 and the tools the
suite needs; `mke2fs -d` turns the tree into a raw ext4 image (no loop mount).
The kernel and initrd are copied out of the tree, so a VM boots the image's own
kernel directly (-kernel/-initrd). Everything lives in the content-addressed
store under cache_dir()/images: same recipe, same entry, built once.

Root and normal users build it with the same commands (vm/userns.py):
`mmdebstrap --mode=unshare` into a directory under $TMPDIR, then `mke2fs -d`
and the copies of the kernel and initrd through `mmdebstrap --unshare-helper`.
As a user the tree's files belong to the user's subordinate ids; the helper's
namespace maps them back, so mke2fs records exactly the owners, modes and
extended attributes a root build records, and the image's store key does not
depend on who built it. No file of the tree is read as its owner outside a
namespace, and nothing needs root.

The image boots with the harness's own init (vm/templates/guest-init.sh.j2)
instead of systemd, and with the harness's own initramfs instead of Debian's
(vm/templates/initramfs-init.sh.j2, packed by the customize hook): a static
busybox and the virtio, ext4 and vfat modules of the image's kernel, no udev,
no modprobe. The image also carries `vmlinux`: the
very same kernel, decompressed out of vmlinuz, booted through its PVH entry
point, which skips the in-guest XZ decompression. `Image.kernel` names the
file to boot.

Measured by bench/boot.py (QEMU 7.2, TCG, -smp 2, 2-core host at load 14-18;
QEMU CPU seconds until SSH answers, which host load hardly inflates; medians of
3, alternating with the image before the harness's own initramfs):
  this image, qboot, pci=noacpi: 5.4 s CPU, 12.8 s wall
  the previous one (Debian's initramfs trimmed to MODULES=list, no udev; the
  harness init on dash; SeaBIOS): 8.2 s CPU, 24.6 s wall
Earlier figures (-smp 1, load ~2, the previous image):
  that image: 5.9 s CPU, 6.1 s wall
  the same, booting vmlinuz instead of the PVH vmlinux: 9.1 s CPU, 9.4 s wall
  the same, with Debian's stock initramfs (MODULES=most, udev): ~13 s CPU
  stock systemd boot of the same packages: ~32 s CPU, ~36 s wall
  cloud-init (NoCloud seed) with systemd: ~45-50 s CPU, 48-73 s wall
"""

from __future__ import annotations

import bz2
import errno
import logging
import lzma
import os
import re
import shutil
import struct
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from harness.core.deadline import Deadline
from harness.core.errors import DeadlineExceeded, InfraError, UserError
from harness.core.leftovers import TEMP_RE, owned_tempdir
from harness.core.paths import cache_dir
from harness.core.procs import run, token_alive, which
from harness.core.store import Entry, Store, key_of
from vm import templates, userns

log = logging.getLogger(__name__)

# Bump when the recipe changes in a way the rendered templates do not show.
RECIPE_VERSION = 1

SUITES = ("bullseye", "bookworm", "trixie", "sid")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "AUFS_HARNESS_DEBIAN_MIRROR"
SECURITY_MIRROR_ENV = "AUFS_HARNESS_DEBIAN_SECURITY_MIRROR"
# Suites without -updates and -security pockets.
UNSTABLE_SUITES = ("sid",)
VARIANT = "minbase"

# What the guest needs: the stock kernel (linux-image needs an initramfs tool,
# though the harness boots its own initramfs), busybox-static (the harness's
# initramfs and init run on it: a static binary execs in a fraction of the time
# of a dynamically linked one under TCG), the harness init's tools (kmod,
# openssh-server, udev, util-linux, iproute2 for the suite), the suite's
# interpreter and the filesystems and tools the checks use. pytest comes from
# the host (xdist ships it), never from Debian.
BASE_PACKAGES = (
    "linux-image-amd64",
    "initramfs-tools",
    "busybox-static",
    "udev",
    "openssh-server",
    "python3",
    "python3-pyudev",
    "kmod",
    "iproute2",
    "util-linux",
    "e2fsprogs",
    "xfsprogs",
    "btrfs-progs",
    "f2fs-tools",
    "dosfstools",
    "attr",
    "acl",
    "procps",
)
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
MIN_SIZE_MB = 1024
MAX_SIZE_MB = 64 * 1024

# Paths inside the guest, and the contract with vm/seed.py and vm/qemu.py.
INIT_PATH = "/usr/local/sbin/harness-init"
POWEROFF_PATH = "/usr/local/sbin/poweroff"
REBOOT_PATH = "/usr/local/sbin/reboot"
SEED_LABEL = "cidata"
SEED_DEVICE = "/dev/vdb"  # the seed is the second virtio disk when no label matches
READY_MARKER = "sshd listening"  # console: "harness-init: sshd listening (5.1s)"
GUEST_ADDRESS = "10.0.2.15/24"  # QEMU user networking's defaults
GATEWAY = "10.0.2.2"
DNS = "10.0.2.3"
DEFAULT_HOSTNAME = "aufs-vm"
# Packed into the harness's initramfs (with what they depend on) and loaded
# there: the root disk (crc32c_generic: ext4 and jbd2 ask the crypto API for
# crc32c, and the initramfs has no modprobe to load it on demand), what the
# init needs next (network, seed) and the entropy device (a 5.10 guest's crng
# waits seconds without it).
INITRAMFS_MODULES = (
    "virtio_pci",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
    "virtio_net",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "virtio_rng",
)
LATE_MODULES = ("virtio_net", "vfat", "nls_cp437", "nls_ascii")
ROOT_FSTYPE = "ext4"
ROOT_WAIT_S = 10  # the initramfs gives up on a root device that has not appeared
HARNESS_INITRD = "harness-initrd.img"  # in the tree's /boot, built by the customize hook
KEX_ALGORITHMS = (
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "diffie-hellman-group14-sha256",
)
# root=/dev/vda: the overlay is the first virtio disk. cryptomgr.notests: the
# crypto self-tests cost ~0.25 s of CPU under TCG and test nothing aufs uses.
# net.ifnames=0: the NIC stays eth0 even if udev sees it. No "quiet": it saved
# nothing measurable and the whole kernel log on the console helps diagnosis.
CMDLINE = (
    "root=/dev/vda",
    "rw",
    "console=ttyS0",
    f"init={INIT_PATH}",
    "cryptomgr.notests",
    "net.ifnames=0",
)

# Added for the image's own (Debian) kernel only: pci=noacpi routes PCI
# interrupts by the firmware's table instead of ACPI's link devices, whose AML
# costs about half a second per virtio device when virtio_pci loads under TCG
# (the harness's aufs kernels have no ACPI, and no such option).
STOCK_CMDLINE = ("pci=noacpi",)

T = TypeVar("T")

ROOTFS = "rootfs.img"
VMLINUZ = "vmlinuz"
VMLINUX = "vmlinux"
INITRD = "initrd.img"
BUILD_LOG = "build.log"
WORK_WHAT = "image"  # $TMPDIR/aufs-harness-image-PID_START-XXXX

# mmdebstrap's /dev (its @devfiles). Its root mode made these nodes in the
# tree; its unshare mode (root's too) leaves /dev empty, so debugfs adds them to
# the image (a file: no privilege needed), the same step for everyone. The
# guest mounts devtmpfs over /dev; the nodes are there for what runs before.
DEV_NODES = (
    ("console", "c 5 1"),
    ("full", "c 1 7"),
    ("null", "c 1 3"),
    ("ptmx", "c 5 2"),
    ("random", "c 1 8"),
    ("tty", "c 5 0"),
    ("urandom", "c 1 9"),
    ("zero", "c 1 5"),
)
DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stderr", "/proc/self/fd/2"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
)
DEV_DIRS = ("pts", "shm")


def default_mirror() -> str:
    return os.environ.get(MIRROR_ENV, DEFAULT_MIRROR)


def default_security_mirror() -> str:
    """$AUFS_HARNESS_DEBIAN_SECURITY_MIRROR, else the mirror's sibling: .../debian-security."""
    return os.environ.get(SECURITY_MIRROR_ENV) or default_mirror().rstrip("/") + "-security"


@dataclass(frozen=True)
class ImageRecipe:
    """What to build. Validated on construction; unknown values are UserErrors."""

    suite: str = "bookworm"
    extra_packages: tuple[str, ...] = ()
    size_mb: int = 2048
    mirror: str = field(default_factory=default_mirror)
    security_mirror: str = field(default_factory=default_security_mirror)

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise UserError(f"unknown Debian suite {self.suite!r}: use one of {', '.join(SUITES)}")
        if isinstance(self.extra_packages, str):
            raise UserError("extra_packages must be a tuple of package names, not one string")
        bad = [p for p in self.extra_packages if not PACKAGE_RE.match(p)]
        if bad:
            raise UserError(
                f"bad Debian package name {bad[0]!r}: use lowercase names such as 'strace'"
            )
        if not MIN_SIZE_MB <= self.size_mb <= MAX_SIZE_MB:
            raise UserError(
                f"image size {self.size_mb} MiB is out of range: use {MIN_SIZE_MB}-{MAX_SIZE_MB}"
            )
        for url, env in ((self.mirror, MIRROR_ENV), (self.security_mirror, SECURITY_MIRROR_ENV)):
            if not re.match(r"^(https?|file)://\S+$", url):
                raise UserError(
                    f"bad Debian mirror {url!r}: give a URL such as {DEFAULT_MIRROR}"
                    f" (or unset {env})"
                )

    def sources(self) -> list[str]:
        """mmdebstrap's mirror arguments: the suite, then its -updates and -security pockets
        as sources.list lines, so the image has the kernel an up-to-date system runs."""
        if self.suite in UNSTABLE_SUITES:
            return [self.mirror]
        mirror = self.mirror.rstrip("/")
        return [
            mirror,
            f"deb {mirror} {self.suite}-updates main",
            f"deb {self.security_mirror.rstrip('/')} {self.suite}-security main",
        ]

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(sorted(set(BASE_PACKAGES) | set(self.extra_packages)))

    def templates(self) -> dict[str, str]:
        """Every rendered file of the recipe, by its name in the hook directory."""
        return {
            "hooks/customize.sh": templates.render(
                "image-customize.sh.j2",
                init_path=INIT_PATH,
                poweroff_path=POWEROFF_PATH,
                reboot_path=REBOOT_PATH,
                kex_algorithms=KEX_ALGORITHMS,
                default_hostname=DEFAULT_HOSTNAME,
                dns=DNS,
                modules=INITRAMFS_MODULES,
                initrd_name=HARNESS_INITRD,
            ),
            "hook-files/harness-init": render_init(),
            "hook-files/initramfs-init": templates.render(
                "initramfs-init.sh.j2", root_fstype=ROOT_FSTYPE, root_wait_s=ROOT_WAIT_S
            ),
        }

    def inputs(self) -> dict[str, object]:
        """Everything that determines the image: the store key is made of this."""
        return {
            "kind": "debian-image",
            "recipe_version": RECIPE_VERSION,
            "suite": self.suite,
            "variant": VARIANT,
            "packages": list(self.packages),
            "size_mb": self.size_mb,
            "mirror": self.mirror,
            "sources": self.sources(),
            "arch": "amd64",
            "templates": self.templates(),
        }


def render_init() -> str:
    return templates.render(
        "guest-init.sh.j2",
        init_path=INIT_PATH,
        poweroff_path=POWEROFF_PATH,
        seed_label=SEED_LABEL,
        seed_device=SEED_DEVICE,
        ready_marker=READY_MARKER,
        address=GUEST_ADDRESS,
        gateway=GATEWAY,
        default_hostname=DEFAULT_HOSTNAME,
        late_modules=LATE_MODULES,
    )


@dataclass(frozen=True)
class Image:
    rootfs: Path  # raw ext4, never modified: VMs boot a qcow2 overlay on it
    vmlinuz: Path  # the stock kernel as Debian ships it
    initrd: Path
    kernel_release: str
    cmdline: tuple[str, ...]
    cached: bool  # served from the cache
    vmlinux: Path | None = None  # the same kernel, decompressed, PVH-bootable

    @property
    def kernel(self) -> Path:
        """The file to give QEMU's -kernel: vmlinux when there is one (faster)."""
        return self.vmlinux or self.vmlinuz

    @property
    def ready_marker(self) -> str:
        """A console line that means sshd listens: connect only after it."""
        return f"harness-init: {READY_MARKER}"


def images_store() -> Store:
    return Store(cache_dir() / "images")


def build_image(recipe: ImageRecipe, deadline: Deadline) -> Image:
    """The image for `recipe`, from the cache or built now (as root or as a user
    with subordinate ids: vm/userns.py)."""
    store = images_store()
    inputs = recipe.inputs()
    key = key_of(inputs)
    found = store.lookup(key)
    if found is not None and not _complete(found):
        log.warning("image %s is incomplete in the cache: building it again", found.path)
        store.discard(key, keep=_complete)
    logfile = store.root / "logs" / f"{key}.log"
    entry = store.get_or_build(inputs, _builder(recipe, logfile, deadline))
    image = _image_of(entry)
    if entry.hit:
        log.info("image: debian %s (kernel %s) from the cache: %s",
                 recipe.suite, image.kernel_release, entry.path)  # fmt: skip
    return image


def check_buildable(recipe: ImageRecipe, deadline: Deadline) -> None:
    """Raise UserError at once, naming what is missing and how to grant it, when
    `recipe` is not cached and this user could not build it (vm/userns.py)."""
    found = images_store().lookup(key_of(recipe.inputs()))
    if found is not None and _complete(found):
        return
    userns.check(which("mmdebstrap", "mmdebstrap"), deadline)


def stored_image(key: str) -> Image | None:
    """The image stored under `key` (a recorded image key), or None when the
    store no longer holds a complete entry for it."""
    entry = images_store().lookup(key)
    return _image_of(entry) if entry is not None and _complete(entry) else None


def _complete(entry: Entry) -> bool:
    try:
        meta = entry.meta()
    except (OSError, ValueError):
        return False
    names = [ROOTFS, VMLINUZ, INITRD] + ([VMLINUX] if meta.get("vmlinux") else [])
    return all((entry.path / n).is_file() for n in names)


def _image_of(entry: Entry) -> Image:
    meta = entry.meta()
    return Image(
        rootfs=entry.path / ROOTFS,
        vmlinuz=entry.path / VMLINUZ,
        initrd=entry.path / INITRD,
        kernel_release=str(meta["kernel_release"]),
        cmdline=CMDLINE,  # not part of the image: the current code's, always
        cached=entry.hit,
        vmlinux=entry.path / VMLINUX if meta.get("vmlinux") else None,
    )


def _builder(
    recipe: ImageRecipe, logfile: Path, deadline: Deadline
) -> Callable[[Path], Mapping[str, Any]]:
    def build(tmp: Path) -> Mapping[str, Any]:
        return _build(recipe, tmp, logfile, deadline)

    return build


class _Step:
    """Names the build step in errors and logs its duration."""

    def __init__(self, suite: str, logfile: Path) -> None:
        self.suite = suite
        self.logfile = logfile

    def run(self, what: str, fn: Callable[[], T]) -> T:
        start = time.monotonic()
        log.info("image: %s (debian %s)...", what, self.suite)
        try:
            result = fn()
        except DeadlineExceeded as exc:
            raise DeadlineExceeded(
                f"building the debian {self.suite} image: {what} ran out of time: {exc}"
                f" (log: {self.logfile})"
            ) from exc
        except (InfraError, OSError) as exc:
            raise InfraError(
                f"building the debian {self.suite} image failed at {what}: "
                f"{_last_error(self.logfile) or exc} (log: {self.logfile})"
            ) from exc
        log.info("image: %s done in %.0fs", what, time.monotonic() - start)
        return result


def _build(recipe: ImageRecipe, tmp: Path, logfile: Path, deadline: Deadline) -> dict[str, Any]:
    mmdebstrap = which("mmdebstrap", "mmdebstrap")
    mke2fs = which("mke2fs", "e2fsprogs")
    userns.check(mmdebstrap, deadline)
    started = time.monotonic()
    logfile.parent.mkdir(parents=True, exist_ok=True)
    logfile.write_text("")
    step = _Step(recipe.suite, logfile)
    _remove_dead_work_dirs(mmdebstrap, deadline)
    work = _work_dir()
    try:
        log.info("image: building debian %s once for this machine (a few minutes); log: %s",
                 recipe.suite, logfile)  # fmt: skip
        meta = _build_in(recipe, work, tmp, step, mmdebstrap, mke2fs, deadline)
    finally:
        _remove_work_dir(work, mmdebstrap, logfile)
    shutil.copyfile(logfile, tmp / BUILD_LOG)
    seconds = time.monotonic() - started
    log.info("image: debian %s with kernel %s built in %.0fs",
             recipe.suite, meta["kernel_release"], seconds)  # fmt: skip
    return {**meta, "build_seconds": round(seconds, 1)}


def _build_in(
    recipe: ImageRecipe,
    work: Path,
    out: Path,
    step: _Step,
    mmdebstrap: str,
    mke2fs: str,
    deadline: Deadline,
) -> dict[str, Any]:
    """mmdebstrap's tree, the ext4 image and the kernel files, made in `work`
    (the same commands as root and as a user: module doc), written to `out`."""
    logfile = step.logfile
    hooks = work / "hooks"  # mmdebstrap runs essential*/customize* in here
    for name, text in recipe.templates().items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
    tree = work / "tree"
    argv: list[str | os.PathLike[str]] = [
        mmdebstrap,
        "--mode=unshare",
        f"--variant={VARIANT}",
        "--format=directory",
        "--architectures=amd64",
        f"--include={','.join(recipe.packages)}",
        f"--hook-directory={hooks}",
        # Documentation and translations: nobody reads them in a test VM.
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
        recipe.suite,
        tree,
        *recipe.sources(),
    ]
    step.run(
        f"mmdebstrap of {len(recipe.packages)} packages",
        lambda: run(argv, deadline=deadline, logfile=logfile, tree=True),
    )
    release, vmlinuz, initrd = step.run("finding the kernel", lambda: _find_kernel(tree))
    # The namespace's root may write only files others may write: created here
    # (owned by whoever runs the harness), 0666 while the helper fills them.
    files = {ROOTFS: work / ROOTFS, VMLINUZ: work / VMLINUZ, INITRD: work / INITRD}
    for path in files.values():
        path.touch()
        path.chmod(0o666)
    for src, name in ((vmlinuz, VMLINUZ), (initrd, INITRD)):
        run(userns.helper(mmdebstrap, ["cp", src, files[name]]), cwd=userns.HELPER_CWD,
            deadline=deadline, logfile=logfile)  # fmt: skip
    mkfs: list[str | os.PathLike[str]] = [
        mke2fs,
        "-q",
        "-F",
        "-t",
        "ext4",
        "-L",
        "root",
        "-d",
        tree,
        files[ROOTFS],
    ]
    step.run(
        f"mke2fs of a {recipe.size_mb} MiB ext4 root",
        lambda: run(
            userns.helper(mmdebstrap, [*mkfs, f"{recipe.size_mb}M"]),
            cwd=userns.HELPER_CWD,
            deadline=deadline,
            logfile=logfile,
        ),
    )
    step.run("completing /dev", lambda: _complete_dev(files[ROOTFS], work, deadline, logfile))
    for name, path in files.items():
        path.chmod(0o644)
        _move(path, out / name, deadline, logfile)
    pvh = step.run(
        "extracting a PVH vmlinux",
        lambda: extract_vmlinux(out / VMLINUZ, out / VMLINUX, deadline),
    )
    if not pvh:
        log.info("image: no PVH-bootable vmlinux in %s: VMs boot vmlinuz", vmlinuz.name)
    return {"kernel_release": release, "cmdline": list(CMDLINE), "vmlinux": pvh}


def dev_commands(present: set[str]) -> list[str]:
    """debugfs commands that add mmdebstrap's /dev entries missing from `present`."""
    cmds = ["cd /dev"]
    for name, spec in DEV_NODES:
        if name not in present:
            cmds += [f"mknod {name} {spec}", f"sif {name} mode 020666"]
    for name, target in DEV_LINKS:
        if name not in present:
            cmds.append(f"symlink {name} {target}")
    for name in DEV_DIRS:
        if name not in present:
            cmds += [f"mkdir {name}", f"sif {name} mode 040755"]
    return cmds


def _dev_entries(debugfs: str, rootfs: Path, deadline: Deadline) -> set[str]:
    listing = run([debugfs, "-R", "ls -p /dev", rootfs], deadline=deadline).stdout
    # ls -p: /inode/mode/uid/gid/name/size/
    return {f[5] for ln in listing.splitlines() if len(f := ln.split("/")) > 6} - {".", ".."}


def _complete_dev(rootfs: Path, work: Path, deadline: Deadline, logfile: Path) -> None:
    """Add the /dev entries a root build has to an image made without them
    (the image is a file: debugfs writes it without any privilege)."""
    debugfs = which("debugfs", "e2fsprogs")
    cmds = dev_commands(_dev_entries(debugfs, rootfs, deadline))
    if len(cmds) == 1:
        return
    script = work / "dev.debugfs"
    script.write_text("\n".join(cmds) + "\n")
    run([debugfs, "-w", "-f", script, rootfs], deadline=deadline, logfile=logfile)
    missing = dev_commands(_dev_entries(debugfs, rootfs, deadline))[1:]
    if missing:
        raise InfraError(f"debugfs did not add {missing[0]!r} to the image's /dev")


def _work_dir() -> Path:
    """$TMPDIR/aufs-harness-image-PID_START-XXXX, where the build's namespace
    can reach it: a user's home (mode 0700 on Debian) is not reachable by the
    user's subordinate ids, so the tree is never built in the cache."""
    work = owned_tempdir(WORK_WHAT)
    work.chmod(0o755)
    if os.geteuid() != 0 and not userns.traversable_by_others(work):
        shutil.rmtree(work, ignore_errors=True)
        raise UserError(
            f"building the guest image: {work.parent} is not reachable by other users, so not "
            "by your subordinate ids either: set TMPDIR to a directory such as /var/tmp"
        )
    if re.search(r"\s", str(work)):
        shutil.rmtree(work, ignore_errors=True)
        raise UserError(f"the temporary directory {work.parent} contains whitespace: "
                        "set TMPDIR to a path without spaces")  # fmt: skip
    return work


def _remove_work_dir(work: Path, mmdebstrap: str, logfile: Path | None) -> None:
    """Remove a work dir whose tree belongs to the namespace's ids: its entries
    from inside (rm stays on this filesystem), the rest from here. A fresh
    deadline: this must run even when the build's has passed."""
    tree = work / "tree"
    if tree.is_dir() and any(tree.iterdir()):
        argv: list[str | os.PathLike[str]] = [
            "find", tree, "-mindepth", "1", "-maxdepth", "1",
            "-exec", "rm", "-rf", "--one-file-system", "{}", "+",
        ]  # fmt: skip
        res = run(userns.helper(mmdebstrap, argv), cwd=userns.HELPER_CWD,
                  deadline=Deadline(600, "removing the tree"), logfile=logfile,
                  check=False)  # fmt: skip
        if res.returncode != 0:
            log.warning("image: could not remove all of %s (exit %d)", tree, res.returncode)
    shutil.rmtree(work, ignore_errors=True)


def _remove_dead_work_dirs(mmdebstrap: str, deadline: Deadline) -> None:
    """Image work dirs of harness processes that died (the general sweep cannot
    remove a tree owned by subordinate ids)."""
    for path in Path(tempfile.gettempdir()).glob(f"aufs-harness-{WORK_WHAT}-*"):
        m = TEMP_RE.match(path.name)
        if m is None or token_alive(f"{m[1]}:{m[2]}") or not path.is_dir():
            continue
        try:
            if path.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        log.info("image: removing %s, left by a build that died", path)
        _remove_work_dir(path, mmdebstrap, None)


def _move(src: Path, dst: Path, deadline: Deadline, logfile: Path) -> None:
    """Rename, or copy keeping holes when $TMPDIR is another filesystem."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        run(["cp", "--sparse=always", src, dst], deadline=deadline, logfile=logfile)
        src.unlink()


def _find_kernel(tree: Path) -> tuple[str, Path, Path]:
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        names = ", ".join(k.name for k in kernels) or "none"
        raise InfraError(f"expected one kernel in /boot of the image, found {names}")
    release = kernels[0].name.removeprefix("vmlinuz-")
    initrd = tree / "boot" / HARNESS_INITRD
    if not initrd.is_file():
        raise InfraError(f"the image has kernel {release} but no /boot/{initrd.name}")
    return release, kernels[0], initrd


def _last_error(logfile: Path) -> str:
    try:
        lines = [ln.strip() for ln in logfile.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    errors = [ln for ln in lines if ln.startswith("E:")]
    return (errors or lines or [""])[-1][:300]


# -- the PVH vmlinux ----------------------------------------------------------
XEN_ELFNOTE_PHYS32_ENTRY = 18
PT_NOTE = 4


def extract_vmlinux(vmlinuz: Path, out: Path, deadline: Deadline | None = None) -> bool:
    """Write the ELF kernel inside a bzImage to `out` if it has a PVH entry point.

    The payload's place is in the boot protocol header (setup_sects,
    payload_offset, payload_length); its compression is told by its magic.
    Returns False, writing nothing, for anything else: the caller then boots
    vmlinuz as is. zstd (trixie and later) needs the host's zstd program.
    """
    data = vmlinuz.read_bytes()
    payload = bzimage_payload(data)
    if payload is None:
        return False
    elf = decompress(payload)
    if elf is None and payload.startswith(ZSTD_MAGIC):
        elf = _unzstd(payload, out, deadline or Deadline(120, "decompressing the kernel"))
    if elf is None or not has_pvh_note(elf):
        out.unlink(missing_ok=True)
        return False
    out.write_bytes(elf)
    return True


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _unzstd(payload: bytes, out: Path, deadline: Deadline) -> bytes | None:
    """Decompress with the zstd program; the kernel appends a 4-byte size to the frame."""
    zstd = shutil.which("zstd")
    if zstd is None:
        log.info("image: no zstd program on the host (Debian package zstd): VMs boot vmlinuz")
        return None
    packed = out.with_name(out.name + ".zst")
    try:
        for frame in (payload[:-4], payload):
            packed.write_bytes(frame)
            result = run(
                [zstd, "-d", "-q", "-f", packed, "-o", out], deadline=deadline, check=False
            )
            if result.returncode == 0:
                return out.read_bytes()
        return None
    finally:
        packed.unlink(missing_ok=True)


def bzimage_payload(data: bytes) -> bytes | None:
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        return None
    setup_sects = data[0x1F1] or 4
    offset, length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + offset
    if not length or start + length > len(data):
        return None
    return data[start : start + length]


def decompress(payload: bytes) -> bytes | None:
    decoders: list[tuple[bytes, Callable[[bytes], bytes]]] = [
        (b"\xfd7zXZ\x00", lambda b: lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(b)),
        (b"\x1f\x8b", lambda b: zlib.decompressobj(wbits=31).decompress(b)),
        (b"BZh", lambda b: bz2.BZ2Decompressor().decompress(b)),
        (b"\x5d\x00\x00", lambda b: lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(b)),
    ]
    for magic, decode in decoders:
        if payload.startswith(magic):
            try:
                return decode(payload)
            except (lzma.LZMAError, zlib.error, OSError, EOFError) as exc:
                log.warning("image: cannot decompress the kernel payload: %s", exc)
                return None
    return None  # zstd, lz4, lzo: no decoder in the standard library


def has_pvh_note(elf: bytes) -> bool:
    """True when a 64-bit little-endian ELF carries Xen's PHYS32_ENTRY note."""
    if len(elf) < 64 or elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return False
    phoff = struct.unpack_from("<Q", elf, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        base = phoff + i * phentsize
        if base + 56 > len(elf):
            return False
        p_type = struct.unpack_from("<I", elf, base)[0]
        if p_type != PT_NOTE:
            continue
        offset, _vaddr, _paddr, filesz = struct.unpack_from("<QQQQ", elf, base + 8)
        if _notes_have_pvh(elf[offset : offset + filesz]):
            return True
    return False


def _notes_have_pvh(notes: bytes) -> bool:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from("<III", notes, pos)
        name = notes[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
        if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
            return True
        pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False
