"""The `aufs-harness` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from harness import __version__
from harness.core.errors import EXIT_ERROR, HarnessError
from harness.progress import setup_logging

log = logging.getLogger("aufs-harness")


def build_parser() -> argparse.ArgumentParser:
    from harness.commands import matrix, report, run, suite, vm

    parser = argparse.ArgumentParser(
        prog="aufs-harness",
        description="Prove in one command whether aufs builds, loads and behaves on a kernel.",
        epilog="Exit codes: 0 all passed, 1 a check or target failed, "
        "2 usage or infrastructure error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run.add_parser(sub)
    vm.add_parser(sub)
    suite.add_parser(sub)
    report.add_parser(sub)
    matrix.add_parser(sub)
    _add_kmod(sub)
    return parser


def _add_kmod(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from harness.commands import kmod_build, kmod_fixup, kmod_load, kmod_versions

    kmod = sub.add_parser(
        "kmod",
        help="build, load and unload the aufs module",
        description="Build aufs for a kernel; load or unload a module.",
    )
    ksub = kmod.add_subparsers(dest="kmod_command", required=True, metavar="COMMAND")
    kmod_build.add_parser(ksub)
    kmod_load.add_parser(ksub)
    kmod_versions.add_parser(ksub)
    kmod_fixup.add_parsers(ksub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        code: int = args.func(args)
        return code
    except HarnessError as exc:
        first, *rest = str(exc).splitlines() or [""]
        print(f"aufs-harness: {exc.kind}: {first}", file=sys.stderr)
        for line in rest:
            print(f"  {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("aufs-harness: interrupted; VMs stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["EXIT_ERROR", "main"]
