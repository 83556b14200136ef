"""`aufs-harness repro RESULTS_DIR CELL [CHECK]`: rerun a recorded check on the
very kernel, module and image its cell ran, and compare the outcomes.

Exit 0: every check ended as recorded; 1: one ended differently; 2: error
(nothing booted, a check was not collected, the VM died).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from harness import argcheck
from harness import scenario as scenarios
from harness.bootspec import image_facts
from harness.commands.common import DEFAULT_DISTRO, add_vm_options
from harness.core.deadline import Deadline
from harness.core.errors import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_OK,
    HarnessError,
    TargetFailure,
    UserError,
)
from harness.keptvm import claim, enter_lines, name_for
from harness.repro import (
    Cell,
    boot_spec,
    find_cell,
    keyword_args,
    select_checks,
    stored_build,
    stored_image,
)
from harness.results import ERROR, FAILED, CheckResult, TargetReport
from harness.resultsdir import ResultsDir
from harness.runner import BUILD_TIMEOUT, RunOptions, TargetRun, run_budget, run_vms
from harness.suitevm import MachineVM, SuiteVM
from harness.table import print_report
from vm.machine import preflight
from vm.ssh import Guest

log = logging.getLogger(__name__)

# Where the guest suite describes the labs it kept (--keep-lab), in the guest.
KEPT_LABS = "/run/aufs-harness/kept-labs"
READ_LABS = (
    "import glob, json; print(json.dumps([json.load(open(p)) for p in "
    f"sorted(glob.glob('{KEPT_LABS}/*.json'))]))"
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "repro",
        help="rerun a recorded check on the very kernel, module and image its cell ran",
        description="Boot the kernel, aufs.ko and image CELL of RESULTS_DIR ran (from the "
        "cache; what it no longer has is rebuilt, and said), rerun CHECK (a node id or part "
        "of one, or a word of a failed check's message; default: every failed check of the "
        "cell), and print the recorded and the new outcome of each. Exit 0: the same "
        "outcomes; 1: one differs; 2: error.",
    )
    p.add_argument("results_dir", type=Path, metavar="RESULTS_DIR", help="a run's results")
    p.add_argument("cell", metavar="CELL", help="a target label or its directory name")
    p.add_argument("check", nargs="?", metavar="CHECK", help="the check to rerun")
    p.add_argument(
        "--shell",
        action="store_true",
        help="stop at the failure point: run one check, leave its branches and union "
        "mounted and the VM running, and print where they are and how to enter",
    )
    p.add_argument("--name", help="the VM's name with --shell (default: from the cell)")
    p.add_argument(
        "--results",
        type=argcheck.results_dir,
        default=Path("results"),
        metavar="DIR",
        help="where the rerun's reports go (default: ./results/<timestamp>)",
    )
    p.add_argument(
        "--aufs-src",
        type=argcheck.aufs_src,
        metavar="URL|PATH",
        help="where the aufs commit is, if the kernel must be rebuilt and the recorded "
        "source is gone",
    )
    p.add_argument(
        "--fixup-dir", type=argcheck.existing_dir, metavar="DIR", help="likewise, the fix-ups"
    )
    p.add_argument(
        "--check-timeout", type=argcheck.CHECK_TIMEOUT, default=300.0, metavar="S",
        help="declare the check hung after S seconds (default: 300)",
    )  # fmt: skip
    add_vm_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    refuse_ignored(args)
    cell = find_cell(args.results_dir, args.cell)
    checks = select_checks(cell, args.check)
    name = None
    if args.shell:
        name = args.name or name_for(cell.label)
        claim(name)  # a bad or taken name: refused before anything is said or done
    if args.shell and len(checks) > 1:
        log.info("--shell stops at one check: %s (of %d)", checks[0].nodeid, len(checks))
        checks = checks[:1]
    preflight()
    opts = RunOptions(
        results_dir=ResultsDir.new(args.results).root,
        accel=args.accel,
        memory_mb=scenarios.guest_memory(cell.scenario, args.memory),
        smp=args.smp,
        workers=1 if len(checks) == 1 else 2,
        boot_timeout=args.boot_timeout,
        check_timeout=args.check_timeout,
        suite_args=(
            *cell.suite_args(),
            *keyword_args(checks),
            *(("--keep-lab", KEPT_LABS) if args.shell else ()),
        ),
        keep_vm=args.shell,
        fresh_vms=0,
        copy_up=False,  # a docker cell: dockerd starts, its checks rerun, no bench
    )
    report, vm = rerun(cell, checks, opts, name, args)
    print_report([report])
    code = compare(checks, report)
    if name is not None and report.extra.get("kept_vm"):
        assert isinstance(vm, MachineVM)
        print_labs(vm, name)
    return code


def refuse_ignored(args: argparse.Namespace) -> None:
    """UserError for an option repro would silently ignore: --name names the VM
    --shell keeps; the image is the cell's own, so --image and --distro have no say."""
    if args.name is not None and not args.shell:
        raise UserError("--name names the VM --shell keeps: add --shell or drop --name")
    if args.image is not None or args.distro != DEFAULT_DISTRO:
        raise UserError("repro boots the image the cell ran: drop --image and --distro")


def rerun(
    cell: Cell,
    checks: list[CheckResult],
    opts: RunOptions,
    name: str | None,
    args: argparse.Namespace,
) -> tuple[TargetReport, SuiteVM | None]:
    """Boot the cell's kernel and image (from the store) and run `checks` in one
    VM, as run does; the report is written to opts.results_dir whatever happens.
    Returns it and the VM (None when none was made). Raises what interrupts it."""
    report = TargetReport(target=cell.label)
    report.extra["repro_of"] = {
        "results": str(cell.results),
        "cell": cell.label,
        "checks": [c.nodeid for c in checks],
    }
    results = ResultsDir(opts.results_dir)
    deadline = Deadline(run_budget(opts), "the repro")
    made: list[SuiteVM] = []
    t0 = time.monotonic()
    with results.kept_on_interrupt([report], before=report.interrupted):
        try:
            build = None
            if cell.build is not None:
                build, line = stored_build(
                    cell, deadline.sub(BUILD_TIMEOUT, "the kernel"),
                    aufs_src=args.aufs_src,
                    fixup_dir=args.fixup_dir.resolve() if args.fixup_dir else None,
                )  # fmt: skip
                print(line)
                report.extra["build"] = build.to_json()
            image, line = stored_image(cell, deadline)
            print(line)
            # the store keeps an image under its key: rootfs is <store>/<key>/rootfs.img
            report.extra["image"] = image_facts(cell.target(), image.rootfs.parent.name)
            boot = boot_spec(cell, image, build)

            def new_vm() -> SuiteVM:
                vm = MachineVM(boot, accel=opts.accel, memory_mb=opts.memory_mb, smp=opts.smp,
                               keep_as=name)  # fmt: skip
                made.append(vm)
                return vm

            out = results.target(cell.label)
            target = cell.target()  # a docker cell: dockerd starts first, as in the run
            run_vms(TargetRun(target, build, opts, report, out, new_vm, deadline))
        except TargetFailure as exc:
            report.verdict, report.reason = FAILED, str(exc).splitlines()[0]
        except HarnessError as exc:
            report.verdict, report.reason = ERROR, str(exc).splitlines()[0]
            log.error("%s: %s", cell.label, exc)
        finally:
            report.seconds = time.monotonic() - t0
        report.settle()
        results.write([report])
    print(f"reports: {results.report_json}")
    return report, made[-1] if made else None


def compare(recorded: list[CheckResult], report: TargetReport) -> int:
    """Print each check's recorded and new outcome; EXIT_OK when all are the
    same, EXIT_FAILED when one differs, EXIT_ERROR when one did not run."""
    now = {c.nodeid: c for c in report.checks}
    code = EXIT_OK
    for old in recorded:
        new = now.get(old.nodeid)
        print(old.nodeid)
        print(f"  recorded: {old.outcome:8} {_first(old.message)}")
        if new is None:
            print(f"  now:      not run  ({report.reason or 'not collected'})")
            code = EXIT_ERROR
            continue
        print(f"  now:      {new.outcome:8} {_first(new.message)}")
        same = new.outcome == old.outcome
        message = "" if _first(new.message) == _first(old.message) else " (message differs)"
        print(f"  -> {'reproduced' if same else 'DIFFERS'}{message if same else ''}")
        if not same and code == EXIT_OK:
            code = EXIT_FAILED
    verdict = {EXIT_OK: "reproduced", EXIT_FAILED: "differs", EXIT_ERROR: "error"}[code]
    print(f"repro: {verdict}: {len(recorded)} check(s) on {report.kernel_release or '?'}")
    return code


def _first(message: str) -> str:
    return (message.splitlines() or [""])[0][:160]


def print_labs(vm: MachineVM, name: str) -> None:
    """--shell: where the kept check left its branches and union, and how to enter."""
    labs: list[dict[str, Any]] = []
    guest = vm.machine.guest or Guest(vm.machine.endpoint)
    try:
        text = guest.run(["python3", "-c", READ_LABS], Deadline(30, "reading the kept labs")).stdout
        labs = json.loads(text or "[]")
    except (HarnessError, ValueError) as exc:
        log.warning("could not read the kept labs in %s: %s", KEPT_LABS, exc)
    finally:
        guest.close()
    for lab in labs:
        state = "mounted" if lab.get("union_mounted") else "NOT mounted (the check unmounted it)"
        print(f"{lab['nodeid']}: union {lab['union']} {state}")
        print(f"  {lab.get('proc_mounts') or lab.get('mount_data') or ''}")
        for label, path in lab.get("branches", {}).items():
            print(f"  {label:4} {path}")
    if not labs:
        print(f"no lab was kept (see {KEPT_LABS} in the guest)")
    print(f"VM {name} keeps running with that state:")
    print("\n".join(enter_lines(name, vm.workdir)))
