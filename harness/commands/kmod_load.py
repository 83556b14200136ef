"""`aufs-harness kmod load|unload`: load a module on this machine and prove it.

For people validating a distribution kernel directly: runs kmod/load.py's code
here, as root. Exit 0 loaded/unloaded, 1 load-failed/unload-failed, 2 when
this machine cannot load modules at all (not root, no module support).
"""

from __future__ import annotations

import argparse
import logging
import os

from harness.core.errors import InfraError, UserError
from kmod.load import ERROR, ModuleResult, System, load_module, summary, unload_module

log = logging.getLogger(__name__)


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
        p.add_argument(
            "--timeout", type=float, default=30.0, metavar="S", help="seconds (default: 30)"
        )
        p.add_argument("--json", action="store_true", help="print the full result as JSON")


def cmd_load(args: argparse.Namespace, system: System | None = None) -> int:
    _preflight("load", args.timeout)
    result = load_module(
        args.target,
        args.params,
        expect_fs=args.expect_fs,
        timeout=args.timeout,
        system=system,
    )
    return _report(result, args.json)


def cmd_unload(args: argparse.Namespace, system: System | None = None) -> int:
    _preflight("unload", args.timeout)
    result = unload_module(
        args.name,
        expect_fs=args.expect_fs,
        timeout=args.timeout,
        modprobe=args.modprobe,
        system=system,
    )
    return _report(result, args.json)


def _preflight(verb: str, timeout: float) -> None:
    if timeout <= 0:
        raise UserError(f"--timeout must be positive, not {timeout}")
    if os.geteuid() != 0:
        raise UserError(f"kmod {verb} changes the running kernel: run it as root")


def _report(result: ModuleResult, as_json: bool) -> int:
    if result.status == ERROR:
        raise InfraError(f"cannot {result.action} modules here: {result.reason}")
    print(result.to_json() if as_json else summary(result))
    return result.exit_code
