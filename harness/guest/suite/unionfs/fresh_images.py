"""Fresh ext4 branch filesystems without running mkfs for every check.

mkfs.ext4 is about half of an ext4 lab's set-up under TCG (0.15-0.5 s, mostly
starting the program). Each process makes one template with mkfs, once, and
every lab gets a copy of it: the copy is the filesystem that mkfs would have
made (same geometry, features, empty root, lost+found), differing only in its
UUID, which is new for every copy as it would be for a new mkfs, so no two
mounted branch filesystems ever share one (overlayfs treats lower layers with
equal UUIDs differently).

The template is made with the metadata_csum_seed feature (ext4, kernel 4.4,
e2fsprogs 1.43): metadata checksums are then seeded from a field of the
superblock instead of the UUID, so a new UUID needs only the primary
superblock and its crc32c rewritten (what `tune2fs -U` does on such a
filesystem, in-process). The backup superblocks keep the template's UUID;
the kernel reads only the primary. Where the template cannot be made or its
superblock is not laid out as expected (checked against its own checksum),
labs fall back to mkfs for every filesystem.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import struct
import uuid
from collections.abc import Callable
from pathlib import Path

SB_OFFSET = 1024  # the primary superblock, bytes from the start of the device
SB_SIZE = 1024
# Offsets inside struct ext4_super_block (fs/ext4/ext4.h)
_FEATURE_INCOMPAT = 0x60
_FEATURE_RO_COMPAT = 0x64
_UUID = 0x68
_CHECKSUM_TYPE = 0x175
_CHECKSUM = 0x3FC
_INCOMPAT_CSUM_SEED = 0x2000
_RO_COMPAT_METADATA_CSUM = 0x400
_CRC32C = 1  # EXT4_CRC32C_CHKSUM

#: the extra mkfs options of a template, per filesystem kind
TEMPLATE_OPTIONS = {"ext4": ("-O", "metadata_csum_seed")}

_templates: dict[tuple[str, str], Path | None] = {}


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c_le(seed: int, data: bytes) -> int:
    """The kernel's crc32c_le(seed, data): Castagnoli CRC, no final inversion."""
    crc = seed
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def sb_checksum(sb: bytes) -> int:
    """ext4_superblock_csum(): crc32c_le(~0) over the superblock up to s_checksum."""
    return crc32c_le(0xFFFFFFFF, sb[:_CHECKSUM])


def _reusable(sb: bytes) -> bool:
    """The superblock is ext4 with seeded crc32c metadata checksums, and its
    stored checksum is the one computed here."""
    incompat, ro_compat = struct.unpack_from("<II", sb, _FEATURE_INCOMPAT)
    (stored,) = struct.unpack_from("<I", sb, _CHECKSUM)
    return (
        struct.unpack_from("<H", sb, 0x38)[0] == 0xEF53
        and bool(incompat & _INCOMPAT_CSUM_SEED)
        and bool(ro_compat & _RO_COMPAT_METADATA_CSUM)
        and sb[_CHECKSUM_TYPE] == _CRC32C
        and stored == sb_checksum(sb)
    )


def template(
    kind: str, where: Path, make: Callable[[str, Path, tuple[str, ...]], None]
) -> Path | None:
    """This process's template image of `kind` in directory `where`, made with
    `make(kind, path, extra_mkfs_args)` on first use; None when `kind` has no
    template or it could not be made (the caller runs mkfs itself then)."""
    if kind not in TEMPLATE_OPTIONS:
        return None
    key = (kind, str(where))
    if key not in _templates:
        path = where / f".unionfs-template-{os.getpid()}.{kind}.img"
        try:
            make(kind, path, TEMPLATE_OPTIONS[kind])
            with open(path, "rb") as f:
                f.seek(SB_OFFSET)
                ok = _reusable(f.read(SB_SIZE))
        except (OSError, RuntimeError):
            ok = False
        if ok:
            atexit.register(_remove, path)
        else:
            _remove(path)
        _templates[key] = path if ok else None
    return _templates[key]


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def sparse_copy(src: Path, dst: Path) -> None:
    """Copy `src` to a new file `dst` of the same size, writing only its data
    extents (the holes stay holes)."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        fout.truncate(size)
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fin.fileno(), offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole is left
                    return
                raise
            end = os.lseek(fin.fileno(), start, os.SEEK_HOLE)
            fin.seek(start)
            fout.seek(start)
            left = end - start
            while left:
                chunk = fin.read(min(left, 1 << 20))
                fout.write(chunk)
                left -= len(chunk)
            offset = end


def copy_with_new_uuid(template_path: Path, image: Path) -> None:
    """A copy of the template at `image`, given a new random UUID (and the
    superblock checksum that goes with it)."""
    sparse_copy(template_path, image)
    with open(image, "r+b") as f:
        f.seek(SB_OFFSET)
        sb = bytearray(f.read(SB_SIZE))
        sb[_UUID : _UUID + 16] = uuid.uuid4().bytes
        struct.pack_into("<I", sb, _CHECKSUM, sb_checksum(bytes(sb)))
        f.seek(SB_OFFSET)
        f.write(sb)
