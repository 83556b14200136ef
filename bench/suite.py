"""Wall time of the union suite per driver in one VM, and the per-check cost of
the kernel-health capture (the same run with --no-kernel-health).

    .venv/bin/python bench/suite.py                       # stock bookworm: overlay
    .venv/bin/python bench/suite.py --kernel debian:bullseye --aufs-src CLONE \\
        --fixup-dir DIR --driver aufs --branch-fs tmpfs    # an aufs kernel
    .venv/bin/python bench/suite.py --ab ../old-checkout --repeat 3   # before/after

With --ab DIR the suite runs --repeat times with the harness of DIR (a checkout
of the code to compare with) and of this tree, alternating A, B, A, B..., each
in a VM of its own, and prints the medians and the same-round ratios of the
suite's wall time (shipping, xdist start-up and every check) per check run.

Target (issue #4): the full aufs suite on one branch filesystem in under 2
minutes under TCG. The machine is shared: the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
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
    parser.add_argument("--once", action="store_true", help="one pass, with health capture")
    parser.add_argument("--ab", type=Path, metavar="DIR", help="alternate with the code in DIR")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of --ab (default 3)")
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
    if args.ab:
        return alternate(args)
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
    passes: list[tuple[str, list[str]]] = [
        ("with health capture", []),
        ("without", ["--no-kernel-health"]),
    ]
    for label, extra in passes[:1] if args.once else passes:
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


def alternate(args: argparse.Namespace) -> int:
    """--ab: A (the code in args.ab) and B (this tree) alternated, one VM each."""
    here = Path(__file__).resolve().parents[1]
    argv = [sys.executable, str(Path(__file__).resolve()), "--once", f"--driver={args.driver}",
            f"--branch-fs={args.branch_fs}", f"--workers={args.workers}"]  # fmt: skip
    if args.kernel:
        argv += ["--kernel", args.kernel]
    rows: dict[str, list[tuple[float, int, float]]] = {"A": [], "B": []}
    for rnd in range(args.repeat):
        for name, tree in (("A", args.ab.resolve()), ("B", here)):
            env = {**os.environ, "PYTHONPATH": str(tree)}
            proc = subprocess.run([*argv, "--", *args.suite_args], env=env, check=False,
                                  capture_output=True, text=True)  # fmt: skip
            found = [ln for ln in proc.stdout.splitlines() if ln.startswith("FIGURE ")]
            if proc.returncode != 0 or not found:
                print(f"round {rnd + 1} {name}: failed ({proc.returncode}): {proc.stderr[-400:]}")
                return 1
            total, ran = (float(x) for x in found[0].split()[1:3])
            now = os.getloadavg()[0]
            rows[name].append((total, int(ran), now))
            print(f"round {rnd + 1} {name} ({tree}): {total:.1f}s for {int(ran)} checks run, "
                  f"{total / max(1, ran):.3f}s a check (load {now:.1f})", flush=True)  # fmt: skip
    per = {k: [t / max(1, n) for t, n, _ in v] for k, v in rows.items()}
    ratios = [b / a for a, b in zip(per["A"], per["B"], strict=True)]
    print(f"A = {args.ab}, B = {here}; suite wall per check run, start-up included:")
    for k in ("A", "B"):
        print(f"  {k}: median {statistics.median(per[k]):.3f}s a check "
              f"({', '.join(f'{x:.3f}' for x in per[k])})")  # fmt: skip
    print(
        f"  B/A same-round ratios: {', '.join(f'{r:.2f}' for r in ratios)}; "
        f"median {statistics.median(ratios):.2f}  [target: B <= 0.25 s a check]"
    )
    avg = os.getloadavg()
    print(f"load average: {avg[0]:.2f} {avg[1]:.2f} {avg[2]:.2f} on {os.cpu_count()} cores")
    return 0


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
    wall, ran, _, total = figures["with health capture"]
    print(f"FIGURE {total:.2f} {ran} {wall:.2f}")  # for --ab
    if "without" not in figures:
        print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
        return
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
