"""ext4 branch images copied from a template with a new UUID (the suite's
unionfs/fresh_images.py): the kernel's superblock checksum, the layout checks
that decide whether a template is used, and the sparse copy."""

from __future__ import annotations

import importlib
import os
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

SUITE = Path(__file__).resolve().parents[2] / "harness" / "guest" / "suite"
if str(SUITE) not in sys.path:
    sys.path.insert(0, str(SUITE))
fresh: Any = importlib.import_module("unionfs.fresh_images")


def superblock(incompat: int = 0x2000 | 0x2C2, ro_compat: int = 0x400 | 0x7B) -> bytearray:
    """A 1 KiB ext4 superblock with the fields the template code reads."""
    sb = bytearray(1024)
    struct.pack_into("<H", sb, 0x38, 0xEF53)
    struct.pack_into("<II", sb, 0x60, incompat, ro_compat)
    sb[0x68:0x78] = bytes(range(16))
    sb[0x175] = 1
    struct.pack_into("<I", sb, 0x3FC, fresh.sb_checksum(bytes(sb)))
    return sb


def test_crc32c_matches_the_standard_check_value() -> None:
    # CRC-32C("123456789") = 0xE3069283; the kernel's crc32c_le omits the final inversion
    assert fresh.crc32c_le(0xFFFFFFFF, b"123456789") ^ 0xFFFFFFFF == 0xE3069283


def test_only_a_seeded_crc32c_superblock_with_a_valid_checksum_is_reused() -> None:
    assert fresh._reusable(bytes(superblock()))
    assert not fresh._reusable(bytes(superblock(incompat=0x2C2)))  # UUID seeds the csums
    assert not fresh._reusable(bytes(superblock(ro_compat=0x7B)))  # no metadata csums
    broken = superblock()
    broken[0x3FC] ^= 1
    assert not fresh._reusable(bytes(broken))


def test_a_copy_gets_a_new_uuid_and_the_checksum_that_goes_with_it(tmp_path: Path) -> None:
    template = tmp_path / "t.img"
    with open(template, "wb") as f:
        f.truncate(8 << 20)
        f.seek(1024)
        f.write(superblock())
        f.seek(5 << 20)
        f.write(b"data far out")
    copies = [tmp_path / "a.img", tmp_path / "b.img"]
    for copy in copies:
        fresh.copy_with_new_uuid(template, copy)
    sbs = [copy.read_bytes()[1024:2048] for copy in copies]
    assert all(fresh._reusable(sb) for sb in sbs)
    uuids = {sb[0x68:0x78] for sb in sbs} | {bytes(range(16))}
    assert len(uuids) == 3  # new in each copy
    data = copies[0].read_bytes()
    assert len(data) == 8 << 20 and data[5 << 20 : (5 << 20) + 12] == b"data far out"
    assert data[2048 : 5 << 20] == bytes((5 << 20) - 2048)
    assert os.stat(copies[0]).st_blocks * 512 < 1 << 20  # the holes stayed holes


def test_no_template_for_other_filesystems_or_when_it_cannot_be_made(tmp_path: Path) -> None:
    def make(kind: str, path: Path, extra: tuple[str, ...]) -> None:
        raise RuntimeError("mkfs.ext4 not installed")

    assert fresh.template("xfs", tmp_path, make) is None
    assert fresh.template("ext4", tmp_path, make) is None
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(autouse=True)
def _no_templates_kept() -> Any:
    fresh._templates.clear()
    yield
    fresh._templates.clear()
