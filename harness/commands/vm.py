"""`aufs-harness vm up|ssh|down|list`: a disposable VM a person can log into."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import time

from harness import argcheck
from harness.bootspec import IMAGE_TIMEOUT, resolve_boot
from harness.core.deadline import Deadline
from harness.core.errors import UserError
from harness.core.procs import which
from harness.progress import StageHandle
from harness.results import Stage
from harness.runner import START_TIMEOUT
from harness.targets import Target
from vm.machine import (
    BootSpec,
    Machine,
    check_name,
    destroy,
    is_running,
    list_states,
    load_state,
    preflight,
    vms_root,
)

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        description="Boot a VM in the background and wait until SSH answers.",
    )
    up.add_argument("--name", default="default", help="VM name (default: default)")
    up.add_argument(
        "--ssh-port",
        type=argcheck.SSH_PORT,
        metavar="PORT",
        help="host port on 127.0.0.1 for SSH (default: a free one)",
    )
    add_vm_options(up)
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
    if (vms_root() / name / "state.json").exists():
        state = load_state(name)
        if is_running(state):
            raise UserError(f"VM {name!r} is already running: `aufs-harness vm down --name {name}`")
        shutil.rmtree(state.workdir, ignore_errors=True)
    target = Target(distro=args.distro, image=args.image)
    preflight(args.ssh_port)
    handle = StageHandle(Stage("image", "ok"))
    boot = resolve_boot(target, Deadline(IMAGE_TIMEOUT, "preparing the image"), handle)
    machine = _boot_detached(name, boot, args)
    assert machine.qemu is not None
    log.info(
        "vm %s: up in %.1fs, %s, ssh port %d",
        name,
        machine.boot_seconds or 0.0,
        boot.label,
        machine.qemu.spec.ssh_port,
    )
    print(f"{name}: running (pid {machine.qemu.pid}); enter: aufs-harness vm ssh --name {name}")
    print(f"  or: ssh -F {machine.workdir / 'ssh_config'} {name}")
    return 0


def _boot_detached(name: str, boot: BootSpec, args: argparse.Namespace) -> Machine:
    """Boot `boot` as VM `name` in the background and wait for SSH; a VM that
    does not come up is killed and its directory removed before the error rises."""
    machine = Machine(
        name, boot, vms_root() / name, accel=args.accel, ssh_port=args.ssh_port,
        memory_mb=args.memory, smp=args.smp,
    )  # fmt: skip
    try:
        machine.start(Deadline(START_TIMEOUT, "starting QEMU"), detach=True)
        machine.wait_ssh(Deadline(args.boot_timeout, "booting to SSH"))
    except BaseException:
        machine.stop()  # a VM that did not come up is not left behind
        shutil.rmtree(machine.workdir, ignore_errors=True)
        raise
    if machine.guest is not None:
        machine.guest.close()
    return machine


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
