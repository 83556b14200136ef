"""The docker scenario's copy-up table: what aufs costs Docker on a first write.

    .venv/bin/python bench/docker.py [RESULTS_DIR]     # default: results/latest

Reads the report of a `run --scenario docker` (report.json: a cell's
extra.docker_copy_up, measured inside the guest by harness/guest/dockerd.py
bench) and prints, per cell, one row per file size: the first one-byte write to
a file of a lower image layer through the container's aufs union (a whole-file
copy-up), the second write to the same file (nothing more to copy), the same
write to a file of that size in a data volume (no union), and how much the
container's diff/<id> grew each time. The load average when printed is shown,
because the host is shared and the figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from harness.scenario import copy_up_table

log = logging.getLogger("bench.docker")


def tables(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(cell, table) for each cell of a report that measured copy-up."""
    out = []
    for t in report.get("targets", []):
        bench = (t.get("extra") or {}).get("docker_copy_up")
        if bench:
            out.append((str(t.get("target")), copy_up_table(bench)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, default=Path("results/latest"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = args.results / "report.json"
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.error("bench/docker.py: cannot read %s: %s", path, exc)
        return 2
    found = tables(report)
    if not found:
        log.error("bench/docker.py: no copy-up measurement in %s (run --scenario docker)", path)
        return 1
    for cell, table in found:
        sys.stdout.write(f"{cell}: copy-up in the guest (load {os.getloadavg()[0]:.1f} now)\n")
        sys.stdout.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
