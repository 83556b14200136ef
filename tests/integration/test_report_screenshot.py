"""The HTML report rendered by a real browser: Debian's chromium, headless.

The screenshot must not be blank (many colours, and the grid's red and green
squares really painted) and the DOM chromium built must hold the grid table
with a row per suite module. Renders a two-cell matrix run, and also the
real bullseye aufs run of /work/results-baseline when this machine has it.
"""

from __future__ import annotations

import re
import shutil
import struct
import zlib
from collections import Counter
from pathlib import Path

import pytest

from harness.core.deadline import Deadline
from harness.core.procs import run
from harness.report.html import write_html
from harness.report.model import build_page
from harness.results import read_json
from harness.resultsdir import ResultsDir
from tests.unit.report_samples import aufs_cell, stock_cell, write_run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REAL_RUN = Path("/work/results-baseline/aufs/latest")
FAILED_RED = bytes((0xC6, 0x28, 0x28))  # .k-failed, the CSS colour of a failing grid square
PASSED_GREEN = bytes((0x2E, 0x7D, 0x32))  # .k-passed

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason=f"{CHROMIUM} missing: `make test` installs Debian's chromium package (DEB_PACKAGES)",
)


def chromium(url: str, tmp: Path, *extra: str) -> str:
    """Run headless chromium on `url` with `extra` flags; returns its stdout."""
    argv = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp / 'chromium-profile'}",
        "--window-size=1400,1000", *extra, url,
    ]  # fmt: skip
    return run(argv, deadline=Deadline(120, "rendering the report in chromium")).stdout


def png_pixels(path: Path) -> Counter[bytes]:
    """Pixel counts by colour of an 8-bit RGB or RGBA PNG (stdlib only: zlib and
    the PNG scanline filters). Raises ValueError for any other PNG."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    if depth != 8 or colour not in (2, 6):
        raise ValueError(f"{path}: depth {depth} colour type {colour} not handled")
    bpp = 3 if colour == 2 else 4
    rows = _unfilter(zlib.decompress(idat), width * bpp, height, bpp)
    return Counter(bytes(row[i : i + 3]) for row in rows for i in range(0, len(row), bpp))


def _unfilter(raw: bytes, stride: int, height: int, bpp: int) -> list[bytearray]:
    rows: list[bytearray] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 0:
            rows.append(line)
            prev = line
            continue
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(line)
        prev = line
    return rows


def render_and_look(results: ResultsDir, tmp: Path) -> tuple[Path, Counter[bytes], str]:
    """Write results' index.html, screenshot it and dump its DOM with chromium."""
    page = write_html(results, build_page(read_json(results.report_json), results.root))
    shot = tmp / f"{results.root.name}.png"
    chromium(page.as_uri(), tmp, f"--screenshot={shot}")
    dom = chromium(page.as_uri(), tmp, "--dump-dom")
    return shot, png_pixels(shot), dom


def grid_rows(dom: str) -> list[str]:
    """The module names of the grid's rows, from the DOM chromium built."""
    start = dom.find('<table id="grid">')
    assert start >= 0, "no grid table in the DOM"
    return re.findall(r'<th class="module"><button[^>]*>[^<]*</button>([^<]+)</th>', dom[start:])


@needs_chromium
def test_chromium_renders_the_matrix_grid(tmp_path: Path, fact: list[str]) -> None:
    results = write_run(tmp_path, "20261201-060000", [aufs_cell(known=""), stock_cell()])
    shot, pixels, dom = render_and_look(results, tmp_path)
    assert len(pixels) > 50, f"{shot}: {len(pixels)} colours: a blank page?"
    assert pixels[FAILED_RED] > 500 and pixels[PASSED_GREEN] > 500, shot
    assert grid_rows(dom) == ["test_copy_up", "test_links", "test_options"]
    assert dom.count('<tr class="group">') == 3
    fact.append(
        f"chromium screenshot of a 2-cell report: {shot} ({len(pixels)} colours, "
        f"{pixels[FAILED_RED]} red and {pixels[PASSED_GREEN]} green grid pixels); "
        f"grid rows {grid_rows(dom)}"
    )


@needs_chromium
@pytest.mark.skipif(not (REAL_RUN / "report.json").is_file(), reason=f"no real run at {REAL_RUN}")
def test_chromium_renders_the_real_bullseye_aufs_run(tmp_path: Path, fact: list[str]) -> None:
    copy = tmp_path / REAL_RUN.resolve().name
    shutil.copytree(REAL_RUN.resolve(), copy)
    shot, pixels, dom = render_and_look(ResultsDir(copy), tmp_path)
    assert len(pixels) > 50, shot
    assert pixels[FAILED_RED] > 500 and pixels[PASSED_GREEN] > 500, shot
    rows = grid_rows(dom)
    assert "test_copy_up" in rows and "test_options" in rows
    assert 'href="debian-bullseye-aufs/vm-2/hang-evidence.txt"' in dom
    fact.append(f"chromium screenshot of the real bullseye aufs run: {shot} ({len(rows)} modules)")
