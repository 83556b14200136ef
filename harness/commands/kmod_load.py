"""`aufs-harness kmod load|unload`: load a module on this machine and prove it.

For people validating a distribution kernel directly: runs the guest
package's module loader here, as root, as a program of its own (exactly as it
runs in a guest), and reads back its JSON result. Exit 0 loaded/unloaded,
1 load-failed/unload-failed, 2 when this machine cannot load modules at all
(not root, no module support).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from harness.commands.common import add_timeout
from harness.core.deadline import Deadline
from harness.core.errors import InfraError, UserError
from harness.core.procs import run
from harness.guest.records import ERROR, ModuleResult, is_ko_path, result_from_json, summary

log = logging.getLogger(__name__)

# On top of the loader's own deadline: interpreter start-up.
GRACE = 15.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `load` and `unload` under the `kmod` group's subparsers."""
    load = sub.add_parser(
        "load",
        help="insmod a .ko (or modprobe a name) on this machine and prove it loaded",
        description="Load a module here, as root: check vermagic, insmod/modprobe, wait for the "
        "kernel's add uevent, report dmesg, taint, version and the filesystem it registers.",
    )
    load.add_argument("target", metavar="PATH.ko|NAME", help="a .ko file, or a name for modprobe")
    load.add_argument("params", nargs="*", metavar="PARAM=VALUE", help="module parameters")
    load.set_defaults(func=cmd_load)
    unload = sub.add_parser(
        "unload",
        help="rmmod a module on this machine and prove it left",
        description="Unload a module here, as root, and wait for the kernel's remove uevent.",
    )
    unload.add_argument("name", metavar="NAME")
    unload.add_argument("--modprobe", action="store_true", help="modprobe -r instead of rmmod")
    unload.set_defaults(func=cmd_unload)
    for p in (load, unload):
        p.add_argument(
            "--expect-fs", metavar="NAME", help="filesystem the module registers (e.g. aufs)"
        )
        add_timeout(p, 30.0)
        p.add_argument("--json", action="store_true", help="print the full result as JSON")


def cmd_load(args: argparse.Namespace) -> int:
    if not args.target.strip():
        raise UserError("kmod load: the module is empty: give a .ko path or a module name")
    if is_ko_path(args.target) and not Path(args.target).is_file():
        raise UserError(
            f"kmod load: {args.target} is not a file: give a .ko path (kmod build prints "
            "aufs.ko's) or a module name for modprobe"
        )
    _preflight("load")
    return _report(_loader(args, ["load", args.target, *args.params]), args.json)


def cmd_unload(args: argparse.Namespace) -> int:
    if not args.name.strip():
        raise UserError("kmod unload: the module name is empty: give one, e.g. aufs")
    _preflight("unload")
    extra = ["--modprobe"] if args.modprobe else []
    return _report(_loader(args, ["unload", *extra, args.name]), args.json)


def _loader(args: argparse.Namespace, action: list[str]) -> ModuleResult:
    """Run the loader as a program and read its JSON result."""
    argv = [sys.executable, "-m", "harness.guest.modload", action[0], "--json"]
    argv += ["--timeout", f"{args.timeout:g}"]
    if args.expect_fs:
        argv += ["--expect-fs", args.expect_fs]
    res = run(
        [*argv, *action[1:]],
        deadline=Deadline(args.timeout + GRACE, f"kmod {action[0]}"),
        check=False,
    )
    try:
        return result_from_json(res.stdout)
    except (ValueError, TypeError) as exc:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [str(exc)]
        raise InfraError(
            f"the module loader exited {res.returncode} without a result: {tail[0]}"
        ) from exc


def _preflight(verb: str) -> None:
    if os.geteuid() != 0:
        raise UserError(f"kmod {verb} changes the running kernel: run it as root")


def _report(result: ModuleResult, as_json: bool) -> int:
    if result.status == ERROR:
        raise InfraError(f"cannot {result.action} modules here: {result.reason}")
    print(result.to_json() if as_json else summary(result))
    return result.exit_code
