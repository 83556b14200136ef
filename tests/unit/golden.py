"""Golden-file comparison; AUFS_HARNESS_REGEN_GOLDEN=1 rewrites the files."""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("AUFS_HARNESS_REGEN_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with AUFS_HARNESS_REGEN_GOLDEN=1 once"
    expected = path.read_text()
    assert text == expected, f"rendered {name} differs from {path}"
