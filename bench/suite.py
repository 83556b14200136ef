"""Wall time of the union suite per driver in one VM, and the per-check cost of
the kernel-health capture (the same run with --no-kernel-health).

    .venv/bin/python bench/suite.py                       # stock bookworm: overlay
    .venv/bin/python bench/suite.py --kernel debian:bullseye --aufs-src CLONE \\
        --fixup-dir DIR --driver aufs --branch-fs tmpfs    # an aufs kernel

Target (issue #4): the full aufs suite on one branch filesystem in under 2
minutes under TCG. The machine is shared: the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

from harness.bootspec import IMAGE_TIMEOUT, resolve_boot
from harness.buildargs import add_build_options, spec_from_args
from harness.core.deadline import Deadline
from harness.guestsuite import run_in_vm
from harness.loadstage import ensure_module
from harness.progress import StageHandle, setup_logging
from harness.results import Stage, TargetReport
from harness.runner import BUILD_TIMEOUT, build_kernel
from harness.targets import Target
from vm.machine import Machine

log = logging.getLogger("bench.suite")


Figure = tuple[float, int, Counter[str], float]  # check wall s, checks run, outcomes, total s


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="overlay")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep each run's event log and pytest log under DIR",
    )
    add_build_options(parser, kernel_required=False)
    parser.add_argument(
        "suite_args",
        nargs="*",
        metavar="PYTEST_ARG",
        help="extra suite arguments after --, e.g. -- -k 'not notify'",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    setup_logging(verbose=False)
    spec = spec_from_args(args) if args.kernel else None
    target = Target(build=spec)
    report = TargetReport(target.label)
    build = None
    if spec is not None:
        handle = StageHandle(Stage("build", "ok"))
        build = build_kernel(spec, report, handle, Deadline(BUILD_TIMEOUT, "build"))
    handle = StageHandle(Stage("image", "ok"))
    boot = resolve_boot(target, Deadline(IMAGE_TIMEOUT, "image"), handle, build)
    with (
        tempfile.TemporaryDirectory(prefix="aufs-harness-bench-") as tmp,
        Machine("bench-suite", boot, Path(tmp) / "vm") as m,
    ):
        m.start(Deadline(60, "start"))
        guest = m.wait_ssh(Deadline(300, "boot"))
        for need in target.modules(build):
            ensure_module(guest, need.name, need.module, need.fs)
        figures = measure(m, args, args.keep or Path(tmp))
    print_figures(figures, boot.label, args)
    return 0


def measure(m: Machine, args: argparse.Namespace, keep: Path) -> dict[str, Figure]:
    """The suite twice in `m`: with the kernel-health capture and without."""
    figures = {}
    base = [f"--driver={args.driver}", f"--branch-fs={args.branch_fs}", *args.suite_args]
    for label, extra in (("with health capture", []), ("without", ["--no-kernel-health"])):
        where = keep / label.replace(" ", "-")
        t0 = time.monotonic()
        out = run_in_vm(m, where, [*base, *extra], Deadline(3600, "suite"), workers=args.workers)
        total = time.monotonic() - t0  # shipping, xdist start-up and every check
        counts = Counter(c.outcome for c in out.checks)
        ran = counts["passed"] + counts["failed"] + counts["error"]
        wall = out_wall(where / "events.jsonl")
        figures[label] = (wall, ran, counts, total)
        log.info("%s: %.1fs for %d checks (%s)", label, wall, ran, dict(counts))
    return figures


def print_figures(figures: dict[str, Figure], label: str, args: argparse.Namespace) -> None:
    load = os.getloadavg()
    print(
        f"suite on {label}, driver {args.driver}, branch fs {args.branch_fs}, "
        f"{args.workers} xdist workers over SSH"
    )
    for name, (wall, ran, counts, total) in figures.items():
        print(
            f"  {name:20} {total:7.1f}s in all, {wall:6.1f}s of checks, for {ran} checks run "
            f"({counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['skipped']} skipped)  [target < 120 s for aufs]"
        )
    (w1, n1, _, _), (w0, n0, _, _) = figures["with health capture"], figures["without"]
    if n1 and n0:
        print(
            f"  health capture overhead: {(w1 / n1 - w0 / n0) * 1000:.0f} ms per check "
            f"({w1 / n1 * 1000:.0f} vs {w0 / n0 * 1000:.0f} ms per check, wall / checks)"
        )
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")


def out_wall(events: Path) -> float:
    """Seconds from the first check's start to the last report, from the event log."""
    times = [json.loads(line)["t"] for line in events.read_text().splitlines() if line.strip()]
    return max(times) - min(times) if times else 0.0


if __name__ == "__main__":
    raise SystemExit(main())
