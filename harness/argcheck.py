"""Input validation at the edge: argparse `type=` callables, one line per mistake.

Each callable takes the option's string and returns the parsed value, or raises
argparse.ArgumentTypeError with a message naming the value and what is allowed;
argparse prefixes the option (`argument --memory: ...`) and harness.cli turns it
into one `aufs-harness: error: ...` line with exit 2, before anything slow starts.

The commands only reference these (`type=argcheck.MEMORY_MB`); the rules live here.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from pathlib import Path

HOUR = 3600.0
WEEK = 7 * 24 * HOUR


def integer(lo: int, hi: int | None, unit: str = "") -> Callable[[str], int]:
    """An integer in [lo, hi] (hi None: no upper bound). `unit` is for the message."""
    allowed = f"a whole number{(' of ' + unit) if unit else ''} from {lo}" + (
        f" to {hi}" if hi is not None else " up"
    )

    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an integer: give {allowed}"
            ) from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value} is out of range: give {allowed}")
        return value

    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


def seconds(lo: float = 1.0, hi: float = WEEK) -> Callable[[str], float]:
    """A finite number of seconds in [lo, hi]."""
    allowed = f"a number of seconds from {lo:g} to {hi:g}"

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number: give {allowed}") from None
        if not math.isfinite(value) or value < lo or value > hi:
            raise argparse.ArgumentTypeError(f"{text} is out of range: give {allowed}")
        return value

    parse.__name__ = "seconds"
    return parse


def host_memory_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    """This host's MemTotal in MiB (a guest may not ask for more); 65536 if unknown."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 65536


def memory_mb(text: str) -> int:
    """Guest memory in MiB: 256 (a Debian guest with the suite) up to the host's RAM."""
    return integer(256, host_memory_mb(), "MB")(text)


SMP = integer(1, 64, "CPUs")
WORKERS = integer(1, 64, "workers")
LOCAL_WORKERS = integer(0, 64, "workers (0: no xdist)")
FRESH_VMS = integer(0, 50, "VMs")
JOBS = integer(1, 1024, "make jobs")
SSH_PORT = integer(1, 65535, "a TCP port")
BOOT_TIMEOUT = seconds(10.0, 4 * HOUR)
SUITE_TIMEOUT = seconds(30.0, 2 * 24 * HOUR)
CHECK_TIMEOUT = seconds(5.0, 24 * HOUR)
BUILD_TIMEOUT = seconds(60.0, 2 * 24 * HOUR)
COMMAND_TIMEOUT = seconds(1.0, 2 * 24 * HOUR)


def _not_empty(text: str, what: str) -> None:
    """Refuse an empty path: Path("") is ".", so it would quietly mean the
    current directory (--fixup-dir "" applied its *.patch, --results "" wrote there)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"the path is empty: give {what}")


def existing_dir(text: str) -> Path:
    """A directory that exists (for --fixup-dir)."""
    _not_empty(text, "a directory")
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist: give an existing directory")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a directory: give a directory")
    return path


def existing_file(text: str) -> Path:
    """A regular file that exists and can be read (for --config-fragment)."""
    _not_empty(text, "a file")
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist: give an existing file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a regular file: give a file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text} is not readable: give a file you can read")
    return path


def results_dir(text: str) -> Path:
    """Where reports go: a directory, or a path whose nearest existing parent is a
    writable directory (it is created)."""
    _not_empty(text, "a directory")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a directory: give a directory")
    _creatable(text, path)
    return path


def _creatable(text: str, path: Path) -> None:
    """Refuse `path` (given as `text`) unless its nearest existing parent is a
    directory this user can write, so it (or what is under it) can be created."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    _writable_dir(text, probe, "a path under a directory")


def _writable_dir(text: str, where: Path, fix: str) -> None:
    """Refuse `where` (the directory `text` would be written in) unless it is a
    directory this user can write; `fix` says what to give instead."""
    if not where.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {where} is not a directory: give {fix}")
    if not os.access(where, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(
            f"{text}: {where} is not writable: give a directory you can write"
        )


def history_db(text: str) -> Path:
    """A history database (--db): an existing regular file, or a new file
    whose nearest existing parent is a writable directory (it is created).
    Whether an existing file is a history database is harness.report.history's
    check_db, which reads it."""
    path = Path(text).expanduser()
    _not_empty(text, "a history database file")
    if path.exists() and not path.is_file():
        raise argparse.ArgumentTypeError(
            f"{text} is not a regular file: give a history database file"
        )
    if not path.exists():
        _creatable(text, path)
    return path


def patch_name(text: str) -> str:
    """A fix-up patch's file name (`kmod fixup --name`): one plain name ending in
    .patch, since the build applies only the fix-up directory's *.patch files."""
    if not text.endswith(".patch") or "/" in text or text.startswith(".") or not text[:-6]:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a patch file name: give NAME.patch (no directory; the build "
            "applies only *.patch files of the fix-up directory)"
        )
    return text


TARBALL_SUFFIXES = (".tar.gz", ".tgz")


def tarball_out(text: str) -> Path:
    """Where `bundle --out` writes: an existing writable directory, or a
    FILE.tar.gz (.tgz) in one. An existing tarball of that name is replaced; any
    other existing file is refused, never overwritten (--out ~/.bashrc)."""
    _not_empty(text, "a directory or a FILE.tar.gz")
    path = Path(text).expanduser()
    if path.is_dir():
        _writable_dir(text, path, "a directory you can write")
        return path
    if not path.name.endswith(TARBALL_SUFFIXES):
        what = "an existing file" if path.exists() else "neither a directory nor a .tar.gz name"
        raise argparse.ArgumentTypeError(
            f"{text} is {what}: give a directory or a FILE.tar.gz (nothing else is overwritten)"
        )
    if path.exists() and not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a regular file: give a FILE.tar.gz")
    _writable_dir(text, path.parent, "a FILE.tar.gz in an existing directory")
    return path


def kernel_spec(text: str) -> str:
    """--kernel: not empty (an empty --kernel would quietly mean the stock
    kernel to `run` and the current directory as a tree to `kmod build`), and a
    path: form names a path; the form itself is kmod.source.provider_for's."""
    if not text.strip() or text.strip() == "path:":
        raise argparse.ArgumentTypeError(
            f"{text!r} names no kernel: give debian:SUITE[=VERSION], "
            "https://.../linux-X.Y.Z.tar.xz, git+URL@REF or path:/a/kernel/tree "
            "(leave --kernel out for the stock kernel)"
        )
    return text


def git_ref(text: str) -> str:
    """A git branch, tag or commit (--aufs-ref): not empty (that meant "choose
    for me" without a word), no whitespace, not an option ("-...")."""
    if not text.strip() or text.startswith("-") or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a git ref: give a branch, tag or commit such as aufs5.10.140 "
            "(leave --aufs-ref out to choose one from the kernel version)"
        )
    return text


def is_url(text: str) -> bool:
    """Whether an aufs source is a git URL (scheme:// or user@host:path), not a local path."""
    return "://" in text or re.match(r"^[\w.-]+@[\w.-]+:", text) is not None


def aufs_src(text: str) -> str:
    """A git URL (taken as is), or a local aufs-standalone clone that must exist."""
    _not_empty(text, "an aufs-standalone clone, a git bundle or a git URL")
    if is_url(text):
        return text
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(
            f"{text} does not exist: give an aufs-standalone clone, a git bundle or a git URL"
        )
    return text


# -- disk images ---------------------------------------------------------------
def _at(head: bytes, offset: int, magic: bytes) -> bool:
    return head[offset : offset + len(magic)] == magic


# (offset, magic, what) of filesystems the harness can name in a raw image.
FILESYSTEMS: tuple[tuple[int, bytes, str], ...] = (
    (1080, b"\x53\xef", "ext2/3/4 filesystem"),
    (0, b"XFSB", "xfs filesystem"),
    (0x10040, b"_BHRfS_M", "btrfs filesystem"),
    (0, b"hsqs", "squashfs filesystem"),
    (0x8001, b"CD001", "ISO 9660 filesystem"),
)
HEAD_BYTES = 0x10040 + 8


def disk_kind(head: bytes) -> str | None:
    """What the first bytes of a disk image are, or None if nothing bootable.

    `head` is the first HEAD_BYTES bytes (or fewer, for a small file). Names:
    "qcow2 image", "GPT partition table", "MBR partition table", or a
    filesystem from FILESYSTEMS.
    """
    if _at(head, 0, b"QFI\xfb"):
        return "qcow2 image"
    if _at(head, 512, b"EFI PART"):
        return "GPT partition table"
    for offset, magic, what in FILESYSTEMS:
        if _at(head, offset, magic):
            return what
    if _at(head, 510, b"\x55\xaa"):
        return "MBR partition table"
    return None


def disk_image(text: str) -> Path:
    """A file that looks like a bootable disk: qcow2, or raw with a partition table
    or a filesystem superblock (disk_kind). Anything else is refused at once."""
    _not_empty(text, "a disk image")
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"image {text} does not exist: give an existing image")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"image {text} is not a regular file: give a disk image")
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"image {text} cannot be read: {exc.strerror}") from None
    if disk_kind(head) is None:
        raise argparse.ArgumentTypeError(
            f"{text} is not a bootable disk image (no qcow2 header, partition table or "
            "filesystem superblock): give a qcow2 or raw disk image"
        )
    return path
