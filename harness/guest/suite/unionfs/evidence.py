"""Readable evidence for failure messages: what a path is, what a branch holds."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

_MAX_ENTRIES = 200
_MAX_XATTR_VALUE = 40


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return "reg"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "lnk"
    if stat.S_ISCHR(mode):
        return f"chr {os.major(st.st_rdev)}/{os.minor(st.st_rdev)}"
    if stat.S_ISBLK(mode):
        return f"blk {os.major(st.st_rdev)}/{os.minor(st.st_rdev)}"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "sock"
    return f"?{mode:o}"


def _xattrs(path: Path) -> str:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        return f" xattrs=<{exc.strerror}>"
    if not names:
        return ""
    shown = []
    for name in sorted(names):
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            shown.append(f"{name}=<{exc.strerror}>")
            continue
        text = repr(value[:_MAX_XATTR_VALUE]) + ("..." if len(value) > _MAX_XATTR_VALUE else "")
        shown.append(f"{name}={text}")
    return " xattrs{" + ", ".join(shown) + "}"


def _content(path: Path, st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        try:
            return f" -> {os.readlink(path)!r}"
        except OSError as exc:
            return f" -> <{exc.strerror}>"
    if stat.S_ISREG(st.st_mode) and 0 < st.st_size <= 32:
        try:
            return f" data={path.read_bytes()!r}"
        except OSError as exc:
            return f" data=<{exc.strerror}>"
    return ""


def describe(path: str | os.PathLike[str]) -> str:
    """One line: type, mode, owner, size, links, inode, small contents, xattrs."""
    p = Path(os.fspath(path))
    try:
        st = p.lstat()
    except OSError as exc:
        return f"absent ({exc.strerror})"
    return (
        f"{_kind(st)} mode={stat.S_IMODE(st.st_mode):04o} uid={st.st_uid} gid={st.st_gid} "
        f"size={st.st_size} nlink={st.st_nlink} ino={st.st_ino} "
        f"mtime_ns={st.st_mtime_ns}{_content(p, st)}{_xattrs(p)}"
    )


def listing(root: str | os.PathLike[str], label: str) -> str:
    """A recursive listing of root, one entry a line, paths relative to root."""
    base = Path(os.fspath(root))
    lines = [f"{label} = {base}: {describe(base)}"]
    count = 0
    for dirpath, dirnames, filenames in os.walk(base, onerror=lambda e: lines.append(f"  <{e}>")):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            count += 1
            if count > _MAX_ENTRIES:
                lines.append(f"  ... more than {_MAX_ENTRIES} entries, listing cut")
                return "\n".join(lines)
            full = Path(dirpath) / name
            rel = full.relative_to(base)
            lines.append(f"  {label}/{rel}: {describe(full)}")
        # do not descend into other filesystems mounted below the branch
        dirnames[:] = [d for d in dirnames if not os.path.ismount(Path(dirpath) / d)]
    if count == 0:
        lines.append("  (empty)")
    return "\n".join(lines)


def listings(labelled: Sequence[tuple[str, str | os.PathLike[str]]]) -> str:
    return "\n".join(listing(path, label) for label, path in labelled)


def shape(root: str | os.PathLike[str]) -> list[tuple[str, str, int, int]]:
    """(relative path, type, mode, size) of every entry below root: what a user
    would call the branch's contents, without times and driver-private xattrs."""
    base = Path(os.fspath(root))
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            try:
                st = full.lstat()
            except OSError:
                continue
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0
            found.append((str(full.relative_to(base)), _kind(st), stat.S_IMODE(st.st_mode), size))
    return found
