"""Kernel + aufs build times: cold, unchanged inputs, and after changing only an aufs option.

    .venv/bin/python bench/build.py --kernel debian:bullseye --aufs-src CLONE --fixup-dir DIR

Cold means an empty cache directory (no ccache, no artifact store, no unpacked
tree; the kernel source .deb is fetched again through apt). Targets (issue #3):
cold build of the minimal fragment at most 8 minutes on 2 cores; a rebuild with
unchanged inputs under 2 s with nothing compiled. The machine is shared: the
load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

from harness.buildargs import add_build_options, spec_from_args
from harness.core.deadline import Deadline
from harness.progress import setup_logging
from kmod.pipeline import BuildResult, BuildSpec, run


def timed(spec: BuildSpec) -> tuple[float, BuildResult]:
    t0 = time.monotonic()
    result = run(spec, Deadline(3 * 3600, "bench build"))
    return time.monotonic() - t0, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_build_options(parser, kernel_required=True)
    parser.add_argument(
        "--warm",
        action="store_true",
        help="use the normal cache instead of an empty one (skips the cold figure)",
    )
    args = parser.parse_args()
    setup_logging(verbose=False)
    spec = spec_from_args(args)
    with tempfile.TemporaryDirectory(prefix="aufs-harness-bench-build-") as tmp:
        if not args.warm:
            os.environ["AUFS_HARNESS_CACHE"] = tmp  # everything cold
        rows: list[tuple[str, float, BuildResult]] = []
        cold, first = timed(spec)
        rows.append(("cold" if not args.warm else "first (warm cache)", cold, first))
        again, second = timed(spec)
        rows.append(("unchanged inputs", again, second))
        flipped = "SHWH=n" if "SHWH=n" not in spec.aufs_options else "SHWH=y"
        changed = dataclasses.replace(spec, aufs_options=(*spec.aufs_options, flipped))
        opt, third = timed(changed)
        rows.append((f"aufs option {flipped} only", opt, third))
    report(rows, spec.jobs)
    return 0


def report(rows: list[tuple[str, float, BuildResult]], jobs: int) -> None:
    """Print one line per timed build, the targets and the load average."""
    first = rows[0][2]
    load = os.getloadavg()
    print(f"kernel {first.kernel.get('version')} + {first.aufs.get('branch')}, make -j{jobs}")
    for label, seconds, result in rows:
        how = "cached, nothing compiled" if result.cached else result.status
        steps = ", ".join(f"{k} {v:.0f}s" for k, v in result.timings.items() if v >= 1)
        print(f"  {label:24} {seconds:8.1f}s  {how}  ({steps})")
    print("  targets: cold <= 480 s; unchanged < 2 s")
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    raise SystemExit(main())
