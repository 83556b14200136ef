"""`aufs-harness vm up|ssh|down|list`: a disposable VM a person can log into."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import time
from pathlib import Path

from harness import argcheck
from harness import scenario as scenarios
from harness.bootspec import IMAGE_TIMEOUT, resolve_boot
from harness.buildargs import refuse_unused_build_options, spec_from_args
from harness.commands.common import DEFAULT_DISTRO, refuse_distro_with_image
from harness.core.deadline import Deadline
from harness.core.errors import TargetFailure, UserError
from harness.core.procs import which
from harness.keptvm import BootOptions, boot_kept, claim, enter_lines
from harness.progress import StageHandle
from harness.repro import boot_spec, find_cell, stored_build, stored_image
from harness.results import Stage
from harness.runner import BUILD_TIMEOUT
from harness.targets import Needed, Target
from kmod import aufs
from kmod import pipeline as kmod_pipeline
from vm.machine import (
    BootSpec,
    check_name,
    destroy,
    is_running,
    list_states,
    load_state,
    preflight,
)
from vm.ssh import Guest

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from harness.buildargs import add_build_options
    from harness.commands.common import add_vm_options

    p = sub.add_parser(
        "vm",
        help="a disposable VM to reproduce a bug by hand",
        description="Start, enter, stop and list disposable VMs.",
    )
    vsub = p.add_subparsers(dest="vm_command", required=True, metavar="COMMAND")
    up = vsub.add_parser(
        "up",
        help="boot a VM and leave it running",
        description="Boot a VM in the background and wait until SSH answers. With --kernel: "
        "build that kernel with aufs (or take it from the cache), boot it and load aufs.ko. "
        "With --from RESULTS_DIR CELL: boot exactly the kernel, aufs.ko and image that cell "
        "ran (rebuilding only what the cache no longer has, and saying so).",
    )
    up.add_argument("--name", default="default", help="VM name (default: default)")
    up.add_argument(
        "--ssh-port",
        type=argcheck.SSH_PORT,
        metavar="PORT",
        help="host port on 127.0.0.1 for SSH (default: a free one)",
    )
    up.add_argument(
        "--from",
        dest="from_cell",
        nargs=2,
        metavar=("RESULTS_DIR", "CELL"),
        help="boot what CELL (a target label or its directory name) of that run booted",
    )
    add_vm_options(up)
    add_build_options(
        up.add_argument_group("aufs kernel (omit --kernel for the stock kernel)"),
        kernel_required=False,
    )
    up.set_defaults(func=cmd_up)
    ssh = vsub.add_parser(
        "ssh",
        help="log into a VM, or run a command in it",
        description="Without a command: an interactive shell. "
        "With one (after --): run it and exit with its status.",
    )
    ssh.add_argument("--name", default="default")
    ssh.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    ssh.set_defaults(func=cmd_ssh)
    down = vsub.add_parser("down", help="stop a VM and discard its disk")
    down.add_argument("--name", default="default")
    down.add_argument("--all", action="store_true", help="stop every VM")
    down.set_defaults(func=cmd_down)
    ls = vsub.add_parser("list", help="list VMs")
    ls.set_defaults(func=cmd_list)


def cmd_up(args: argparse.Namespace) -> int:
    name = check_name(args.name)
    claim(name)
    preflight(args.ssh_port)
    boot, needs, scenario = _what_to_boot(args)
    opts = BootOptions(
        accel=args.accel, memory_mb=scenarios.guest_memory(scenario, args.memory),
        smp=args.smp, ssh_port=args.ssh_port, boot_timeout=args.boot_timeout,
    )  # fmt: skip
    ready = _start_dockerd if scenario == scenarios.DOCKER else None
    machine, loaded = boot_kept(name, boot, opts, needs, ready)
    assert machine.qemu is not None
    log.info(
        "vm %s: up in %.1fs, %s, ssh port %d",
        name,
        machine.boot_seconds or 0.0,
        boot.label,
        machine.qemu.spec.ssh_port,
    )
    for result in loaded.values():
        log.info("vm %s: %s", name, result.get("reason", "loaded"))
    print(f"{name}: running (pid {machine.qemu.pid}), {boot.label}")
    print("\n".join(enter_lines(name, machine.workdir)))
    return 0


def _what_to_boot(args: argparse.Namespace) -> tuple[BootSpec, list[Needed], str]:
    """The BootSpec `vm up` boots, the modules to load in it and its scenario
    (harness.scenario): a cell's (--from), a built aufs kernel's (--kernel), or
    the image's stock kernel (nothing loaded)."""
    handle = StageHandle(Stage("image", "ok"))
    if args.from_cell:
        if args.kernel or args.image or args.distro != DEFAULT_DISTRO:
            raise UserError("--from boots what the cell ran: drop --kernel, --image and --distro")
        refuse_unused_build_options(
            args, "is the cell's own with --from: drop it", used=("--fixup-dir",)
        )
        cell = find_cell(Path(args.from_cell[0]), args.from_cell[1])
        deadline = Deadline(BUILD_TIMEOUT + IMAGE_TIMEOUT, f"preparing {cell.label}")
        build = None
        if cell.build is not None:
            build, line = stored_build(cell, deadline, aufs_src=_given_aufs_src(args),
                                       fixup_dir=args.fixup_dir)  # fmt: skip
            print(line)
        image, line = stored_image(cell, deadline)
        print(line)
        return boot_spec(cell, image, build), cell.target().modules(build), cell.scenario
    refuse_distro_with_image(args)
    if not args.kernel:
        refuse_unused_build_options(args, "builds an aufs kernel: add --kernel SPEC or drop it")
    spec = spec_from_args(args) if args.kernel else None
    target = Target(distro=args.distro, image=args.image, build=spec)
    build = None
    if spec is not None:
        build = kmod_pipeline.run(spec, Deadline(BUILD_TIMEOUT, "building the kernel"))
        if not build.ok:
            raise TargetFailure(
                f"{build.status}: {'; '.join(build.details[:3])} (log: {build.log})"
            )
        what = "reused from the cache" if build.cached else "built"
        print(f"kernel {build.kernel_release} with aufs {what} (key {build.key})")
    boot = resolve_boot(target, Deadline(IMAGE_TIMEOUT, "preparing the image"), handle, build)
    return boot, target.modules(build) if build is not None else [], target.scenario


def _start_dockerd(guest: Guest) -> None:
    """A docker cell's VM: dockerd with the aufs storage driver, as its run
    started it. A refusal is said in one line and the VM kept, to look at."""
    deadline = Deadline(scenarios.START_TIMEOUT, "starting dockerd")
    try:
        info = scenarios.start_dockerd_over_ssh(guest, deadline)
    except TargetFailure as exc:
        log.warning("%s", exc)
        print(f"dockerd is not running: {exc}")
        return
    print(f"dockerd {info.get('server_version')} running, storage driver {info.get('driver')}")


def _given_aufs_src(args: argparse.Namespace) -> str | None:
    """--aufs-src when the user gave one (not its default): it replaces a cell's."""
    default = os.environ.get("AUFS_HARNESS_AUFS_SRC") or aufs.UPSTREAM_URL
    return None if args.aufs_src == default else str(args.aufs_src)


def cmd_ssh(args: argparse.Namespace) -> int:
    state = load_state(args.name)
    if not is_running(state):
        raise UserError(f"VM {args.name!r} is not running: start it with `aufs-harness vm up`")
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    ssh = which("ssh", "openssh-client")
    argv = [ssh, "-F", str(state.ssh_config)]
    if not command:
        argv.append("-t")
    argv.append(args.name)
    if command:
        # ssh joins its arguments with spaces for the remote shell, which would
        # lose quoting (`sh -c 'exit 7'` would run `sh -c exit 7`): quote the
        # argv ourselves so the guest runs exactly what was given.
        argv.append(shlex.join(command))
    os.execv(ssh, argv)  # hand the terminal to ssh; its exit status is ours


def cmd_down(args: argparse.Namespace) -> int:
    names = [s.name for s in list_states()] if args.all else [args.name]
    for name in names:
        killed = destroy(name)
        print(f"{name}: {'stopped' if killed else 'was not running'}; disk discarded")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    states = list_states()
    if not states:
        print("no VMs")
    for s in states:
        status = "running" if is_running(s) else "dead"
        age = time.time() - s.started
        print(
            f"{s.name:16} {status:8} pid {s.pid:<8} port {s.ssh_port:<6} {s.accel:4} "
            f"{age:6.0f}s  {s.label}"
        )
    return 0
