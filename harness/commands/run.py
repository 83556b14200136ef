"""`aufs-harness run`: the main job."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import argcheck, multivm
from harness import scenario as scenarios
from harness.buildargs import add_build_options, refuse_unused_build_options, spec_from_args
from harness.commands.common import (
    DEFAULT_DISTRO,
    add_vm_options,
    finish,
    refuse_distro_with_image,
)
from harness.core.errors import UserError
from harness.core.procs import tie_to_stdin
from harness.keptvm import enter_lines
from harness.results import TargetReport
from harness.resultsdir import ResultsDir
from harness.runner import FRESH_VMS, RunOptions, run_target
from harness.targets import Target
from kmod import config
from vm.machine import preflight


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="boot a target, run the union suite in it, report",
        description="Boot the target kernel in a disposable VM, run the union-filesystem "
        "suite in it over SSH with pytest-xdist, print a pass/fail table and write "
        "JUnit XML and JSON reports. Default target: Debian bookworm's stock kernel "
        "with overlayfs. With --kernel and --aufs-src: build that kernel with aufs first, "
        "boot it, load aufs.ko, and run the suite against aufs and overlayfs. "
        "Exit 0: all passed; 1: a check or the target failed; "
        "2: usage or infrastructure error.",
    )
    add_vm_options(p)
    add_build_options(
        p.add_argument_group("aufs kernel (omit --kernel for the stock kernel)"),
        kernel_required=False,
    )
    p.add_argument(
        "--results",
        type=argcheck.results_dir,
        default="results",  # a string: argparse checks it like a given --results
        metavar="DIR",
        help="where reports go (default: ./results/<timestamp>)",
    )
    p.add_argument(
        "--scenario",
        choices=scenarios.SCENARIOS,
        default=scenarios.SUITE,
        help="suite: the union suite (default); docker: Docker's aufs storage driver on a "
        "bullseye userland (docker.io 20.10.5): dockerd with --storage-driver=aufs, its checks "
        "and the copy-up measurement (implies --distro bullseye)",
    )
    p.add_argument("--workers", type=argcheck.WORKERS, default=2, help="xdist workers in the guest")
    p.add_argument("--suite-timeout", type=argcheck.SUITE_TIMEOUT, default=1800.0, metavar="S")
    p.add_argument(
        "--check-timeout",
        type=argcheck.CHECK_TIMEOUT,
        default=300.0,
        metavar="S",
        help="declare a single check hung after S seconds (default: 300)",
    )
    p.add_argument(
        "--fresh-vms",
        type=argcheck.FRESH_VMS,
        default=FRESH_VMS,
        metavar="N",
        help="after a check hangs or damages the guest kernel, boot up to N fresh VMs to run "
        f"the checks it cost (default: {FRESH_VMS}; 0: leave them skipped)",
    )
    p.add_argument(
        "--vms",
        default="1",
        metavar="N|CPUSxMB,...",
        help="boot several VMs of the target's kernel for one suite run: a count (each of "
        "--smp CPUs and --memory MB) or one CPUSxMB per VM, e.g. 1x512,2x1024 (default: 1)",
    )
    p.add_argument(
        "--dist",
        choices=multivm.DISTS,
        default="load",
        help="with --vms: load shares the checks out among the VMs (pytest-xdist, one --tx per "
        "VM worker); each runs every check on every VM, results keyed per VM (check@vmK)",
    )
    p.add_argument(
        "--keep-vm",
        action="store_true",
        help="leave the VM running afterwards as a named VM (`vm list`, `vm ssh`, `vm down`; "
        "the damaged one, too: no fresh VM then); Ctrl-C keeps nothing",
    )
    p.add_argument(
        "--tied-to-stdin",
        action="store_true",
        help="end the run (its VMs stopped) when standard input closes: for a caller over SSH "
        "(matrix run --hosts), whose dropped connection closes it",
    )
    p.add_argument(
        "suite_args",
        nargs="*",
        metavar="PYTEST_ARG",
        help="extra arguments for the suite after --, e.g. -- -k whiteout",
    )
    p.set_defaults(func=main)


def suite_args_for(args: argparse.Namespace) -> tuple[str, ...]:
    """The suite's arguments: run's --branch-fs first, then the user's after --."""
    for arg in args.suite_args:
        if arg == "--branch-fs" or arg.startswith("--branch-fs="):
            raise UserError(
                "--branch-fs after -- reaches only the suite: give it to run itself "
                "(before --), which also builds those filesystems into an aufs kernel"
            )
    config.branch_filesystems(args.branch_fs)  # reject an unknown one before any work
    return (f"--branch-fs={args.branch_fs}", *args.suite_args)


def main(args: argparse.Namespace) -> int:
    refuse_distro_with_image(args)
    if not args.kernel:
        refuse_unused_build_options(args, "builds an aufs kernel: add --kernel SPEC or drop it")
    suite_args = suite_args_for(args)
    build = spec_from_args(args) if args.kernel else None
    distro, memory = args.distro, scenarios.guest_memory(args.scenario, args.memory)
    if args.scenario == scenarios.DOCKER:
        build = scenarios.with_fragment(build) if build is not None else None
        distro = scenarios.DOCKER_DISTRO if args.distro == DEFAULT_DISTRO else args.distro
    target = Target(distro=distro, image=args.image, build=build, scenario=args.scenario)
    group = vm_group(args, memory)
    if args.tied_to_stdin:
        tie_to_stdin()
    preflight()
    results = ResultsDir.new(args.results)
    opts = RunOptions(
        results_dir=results.root,
        accel=args.accel,
        memory_mb=memory,
        smp=args.smp,
        workers=args.workers,
        boot_timeout=args.boot_timeout,
        suite_timeout=args.suite_timeout,
        suite_args=suite_args,
        keep_vm=args.keep_vm,
        fresh_vms=args.fresh_vms,
        check_timeout=args.check_timeout,
        group=group,
    )
    reports: list[TargetReport] = []
    with results.kept_on_interrupt(reports):
        run_target(target, opts, reports)
    code = finish(reports, results)
    print_kept(reports)
    return code


def vm_group(args: argparse.Namespace, memory_mb: int) -> multivm.VMGroup | None:
    """--vms/--dist as a VMGroup; None for one VM (the runner's own loop).
    Raises UserError for a bad --vms or a combination that cannot work."""
    shapes = multivm.parse_vms(args.vms, args.smp, memory_mb)
    most = argcheck.host_memory_mb()  # as --memory: no VM asks for more than this host has
    for shape in shapes:
        if shape.memory_mb > most:
            raise UserError(
                f"--vms {args.vms}: {shape.memory_mb} MB is more than this host's {most} MB: "
                "give each VM less"
            )
    if len(shapes) == 1 and args.dist == "load":
        return None
    if args.keep_vm:
        raise UserError("--keep-vm keeps one VM: use it without --vms/--dist each")
    if args.scenario != scenarios.SUITE:
        raise UserError(f"--scenario {args.scenario} runs on one VM: leave out --vms/--dist each")
    return multivm.VMGroup(shapes, args.dist)


def print_kept(reports: list[TargetReport]) -> None:
    """For --keep-vm: each VM kept running, how to enter it and how to stop it."""
    for r in reports:
        kept = r.extra.get("kept_vm")
        if kept:
            print(f"{r.target}: VM {kept['name']} keeps running (--keep-vm)")
            print("\n".join(enter_lines(kept["name"], Path(kept["ssh_config"]).parent)))
