"""The `aufs-harness` command line."""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import NoReturn

from harness import __version__
from harness.core import paths
from harness.core.errors import (
    EXIT_ERROR,
    HarnessError,
    Terminated,
    interrupt_exit_code,
    interruption,
)
from harness.progress import setup_logging

log = logging.getLogger("aufs-harness")


class BadArguments(Exception):
    """argparse's complaint about the command line, to be printed as one line."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block), exit 2.

    Subparsers inherit the class, so every subcommand answers the same way.
    """

    def error(self, message: str) -> NoReturn:
        raise BadArguments(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    from harness.commands import bundle, history, matrix, report, repro, run, suite, vm

    parser: argparse.ArgumentParser = Parser(
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
    history.add_parser(sub)
    matrix.add_parser(sub)
    repro.add_parser(sub)
    bundle.add_parser(sub)
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


def disk_full(exc: OSError, args: argparse.Namespace) -> str:
    """One line for ENOSPC/EDQUOT: which of the harness's directories is full,
    the file it was writing and what is free there."""
    results = getattr(args, "results", None)
    what = "quota exceeded" if exc.errno == errno.EDQUOT else "no space left"
    return paths.disk_full(
        Path(str(exc.filename or ".")), what, results if isinstance(results, Path) else None
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except BadArguments as exc:
        print(f"aufs-harness: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    setup_logging(args.verbose)
    try:
        with _sigterm_interrupts():
            return _dispatch(args)
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM as Terminated
        print(f"aufs-harness: {interruption(exc)}; VMs stopped", file=sys.stderr)
        return interrupt_exit_code(exc)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (CI cancelling a job, `kill`) unwinds like Ctrl-C: VMs stopped,
    reports written, exit 143 (vm.qemu's handler, which exits at once after
    killing QEMU, stays for library use). The old handler comes back afterwards
    (main() also runs inside tests)."""

    def raise_terminated(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    try:
        old = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _dispatch(args: argparse.Namespace) -> int:
    """Run the subcommand; HarnessErrors and a full disk become one line."""
    try:
        code: int = args.func(args)
        return code
    except HarnessError as exc:
        first, *rest = str(exc).splitlines() or [""]
        print(f"aufs-harness: {exc.kind}: {first}", file=sys.stderr)
        for line in rest:
            print(f"  {line}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"aufs-harness: error: {disk_full(exc, args)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["EXIT_ERROR", "main"]
