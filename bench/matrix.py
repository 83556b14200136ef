"""Wall time of the shipped default matrix, warm (everything cached) and, with
--cold, cold (a fresh, empty cache: images and kernels built), and of one aufs
cell warm with every check, the kernel-killing ones and their fresh VMs included.

    .venv/bin/python bench/matrix.py                # warm default matrix, warm aufs cell
    .venv/bin/python bench/matrix.py --cold         # also a cold run (tens of minutes)
    .venv/bin/python bench/matrix.py --skip-aufs    # the default matrix only
    .venv/bin/python bench/matrix.py --dist-load 1,2,3 --reps 3   # one stock cell over 1, 2, 3 VMs
    .venv/bin/python bench/matrix.py --host-overhead    # one cell here vs through a host (root)

The aufs cell needs AUFS_HARNESS_AUFS_SRC and AUFS_HARNESS_FIXUP_DIR (the default
matrix leaves it out without them). Targets on a 2-core TCG machine: warm default
matrix under 4 minutes; one warm aufs cell under 5 minutes. The machine is
shared: the load average is printed with each figure, and where the time went
(per stage, summed over the cells).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.matrix import baseline, spec
from harness.matrix.reporter import Reporter
from harness.matrix.run import run_matrix
from harness.multivm import Shape, VMGroup
from harness.progress import setup_logging
from harness.results import TargetReport
from harness.resultsdir import ResultsDir
from harness.runner import RunOptions, run_target
from harness.targets import Target

log = logging.getLogger("bench.matrix")
SHIPPED_BASELINE = Path(__file__).parents[1] / "harness" / "baselines" / "bullseye-aufs5.10.toml"


def timed(
    matrix: spec.Matrix, base: baseline.Baseline, out: Path
) -> tuple[float, list[TargetReport]]:
    """Run `matrix` into a fresh results directory under `out`; (seconds, reports)."""
    t0 = time.monotonic()
    reports = run_matrix(matrix, base, ResultsDir.new(out), Reporter(plain=True))
    return time.monotonic() - t0, reports


def where_time_went(reports: list[TargetReport]) -> str:
    """ "suite 380s, boot 40s, ..." summed over every cell, VMs' numbers folded."""
    spent: dict[str, float] = {}
    for r in reports:
        for st in r.stages:
            name = st.name.split("#")[0]
            spent[name] = spent.get(name, 0.0) + st.seconds
    ranked = sorted(spent.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {s:.0f}s" for name, s in ranked)


def figure(label: str, seconds: float, reports: list[TargetReport], target: float) -> None:
    verdicts = ", ".join(f"{r.target}={r.verdict}" for r in reports)
    met = "met" if seconds <= target else "NOT met"
    log.info("%-22s %7.1fs (target %.0fs: %s; load %.1f) [%s]", label, seconds, target, met,
             os.getloadavg()[0], verdicts)  # fmt: skip
    log.info("%-22s where: %s", "", where_time_went(reports))


def aufs_only(matrix: spec.Matrix) -> spec.Matrix | None:
    cells = tuple(c for c in matrix.cells if not c.stock)
    return spec.Matrix(matrix.path, matrix.name + "-aufs", cells[:1]) if cells else None


def dist_load(counts: list[int], reps: int, selection: str, out: Path) -> None:
    """Wall time of one bookworm stock cell (`run --vms N --dist load`, one
    worker and 1 CPU per VM, the same -k selection) for each N, the Ns
    alternated within each repetition; medians at the end."""
    target = Target(distro="bookworm")
    walls: dict[int, list[float]] = {n: [] for n in counts}
    suites: dict[int, list[float]] = {n: [] for n in counts}
    for rep in range(reps):
        for n in counts:
            opts = RunOptions(
                results_dir=ResultsDir.new(out / f"dist-{n}-{rep}").root, accel="auto",
                memory_mb=768, smp=1, workers=1, fresh_vms=0,
                suite_args=("--branch-fs=tmpfs", "-k", selection),
                group=VMGroup((Shape(1, 768),) * n, "load"),
            )  # fmt: skip
            t0 = time.monotonic()
            report = run_target(target, opts)
            walls[n].append(time.monotonic() - t0)
            suites[n].append(sum(s.seconds for s in report.stages if s.name.startswith("suite")))
            log.info("--dist load, %d VM(s), rep %d: %s, %d checks, wall %.1fs, suite %.1fs "
                     "(load %.1f)", n, rep + 1, report.verdict, len(report.checks), walls[n][-1],
                     suites[n][-1], os.getloadavg()[0])  # fmt: skip
    for n in counts:
        log.info("--dist load, %d VM(s): median wall %.1fs, median suite stage %.1fs over %d "
                 "run(s); wall ratio to 1 VM %.2f", n, statistics.median(walls[n]),
                 statistics.median(suites[n]), reps,
                 statistics.median(walls[n]) / statistics.median(walls[counts[0]]))  # fmt: skip


def host_overhead() -> int:
    """One cell run here and through a namespace host of the scale-out test
    (tests/integration/test_scaleout.py, gated by AUFS_HARNESS_BENCH_HOSTS=1):
    root and openssh-server needed, as for that test."""
    repo = Path(__file__).parents[1]
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", "-n", "0",
            str(repo / "tests/integration/test_scaleout.py"), "-k", "overhead"]  # fmt: skip
    done = subprocess.run(argv, check=False, capture_output=True, text=True, cwd=repo,
                          env={**os.environ, "AUFS_HARNESS_BENCH_HOSTS": "1"})  # fmt: skip
    lines = list(
        dict.fromkeys(ln for ln in done.stdout.splitlines() if ln.startswith("host overhead:"))
    )
    for line in lines:
        log.info("%s", line)
    if done.returncode or not lines:
        log.error("the host-overhead run failed (exit %d):\n%s", done.returncode,
                  done.stdout[-3000:])  # fmt: skip
        return 1
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cold", action="store_true", help="also run once on an empty cache")
    p.add_argument("--skip-aufs", action="store_true", help="no aufs cell figure")
    p.add_argument("--aufs-only", action="store_true", help="only the warm aufs cell figure")
    p.add_argument("--repeat", type=int, default=1, help="warm runs of each figure (median)")
    p.add_argument("--dist-load", metavar="N,N", help="only: one cell over N VMs, e.g. 1,2,3")
    p.add_argument("--reps", type=int, default=1, help="--dist-load: repetitions (medians)")
    p.add_argument("-k", dest="selection", default="whiteout and overlay",
                   help="--dist-load: the suite's -k selection")  # fmt: skip
    p.add_argument("--host-overhead", action="store_true",
                   help="only: one cell direct vs through a namespace host (root)")  # fmt: skip
    args = p.parse_args()
    setup_logging(False)
    if args.host_overhead:
        return host_overhead()
    out = Path(tempfile.mkdtemp(prefix="bench-matrix-"))
    if args.dist_load:
        dist_load([int(n) for n in args.dist_load.split(",")], args.reps, args.selection, out)
        return 0
    matrix = spec.load(spec.default_matrix())
    stock = spec.Matrix(matrix.path, matrix.name, tuple(c for c in matrix.cells if c.stock))
    if args.cold:
        os.environ["AUFS_HARNESS_CACHE"] = str(out / "cold-cache")
        try:
            cold = timed(matrix, baseline.Baseline(None), out / "cold")
        finally:  # images, kernel tree and ccache: gigabytes nobody reuses
            del os.environ["AUFS_HARNESS_CACHE"]
            shutil.rmtree(out / "cold-cache", ignore_errors=True)
        figure("cold default matrix", *cold, 3600)
    if not args.aufs_only:
        for i in range(args.repeat):
            warm = timed(stock, baseline.Baseline(None), out / f"warm-{i}")
            figure(f"warm default (stock) {i + 1}", *warm, 240)
    aufs = None if args.skip_aufs else aufs_only(matrix)
    if aufs is None:
        log.info("aufs cell: skipped (%s)", "--skip-aufs" if args.skip_aufs else matrix.left_out)
        return 0
    known = baseline.load(SHIPPED_BASELINE)
    for i in range(args.repeat):
        figure(f"warm aufs cell {i + 1}", *timed(aufs, known, out / f"aufs-{i}"), 300)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
