"""`aufs-harness kmod versions debian:SUITE`: the kernel sources the mirror serves, per pocket.

Exit 0 listed, 2 usage or infrastructure error.
"""

from __future__ import annotations

import argparse
import logging

from harness.commands.common import add_timeout
from harness.core.deadline import Deadline
from harness.core.errors import EXIT_OK, UserError
from kmod import source

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `versions` under the `kmod` group's subparsers."""
    p = sub.add_parser(
        "versions",
        help="list the kernel source versions a Debian suite's pockets serve",
        description="Read the suite's main, -updates and -security pockets from the host's "
        "Debian mirror (private apt lists; the host's apt is not touched) and list every "
        "linux-source version per pocket. The one `--kernel debian:SUITE` builds is marked; "
        "any listed version can be pinned with `--kernel debian:SUITE=VERSION`.",
    )
    p.add_argument("kernel", metavar="debian:SUITE", help="e.g. debian:bookworm")
    add_timeout(p, DEFAULT_TIMEOUT)
    p.set_defaults(func=cmd_versions)


def cmd_versions(args: argparse.Namespace) -> int:
    if not args.kernel.startswith("debian:") or "=" in args.kernel:
        raise UserError(
            f"{args.kernel!r}: `kmod versions` lists a Debian suite; write debian:SUITE "
            f"({'|'.join(source.DEBIAN_SUITES)})"
        )
    deb = source.DebianSource.from_spec(args.kernel)
    offers = deb.offers(Deadline(args.timeout, "kmod versions"))
    print(format_offers(deb.suite, offers))
    return EXIT_OK


def format_offers(suite: str, offers: list[source.Offer]) -> str:
    """One line per pocket and version, pockets in order, newest first; the pick marked."""
    picked = source.choose_offer(offers, suite, None)
    lines = []
    width = max(len(p) for p in source.pockets(suite))
    for pocket in source.pockets(suite):
        served = [
            o for o in source.sort_offers(offers)
            if pocket in o.pockets and o.package != "linux-source"  # the metapackage
        ]  # fmt: skip
        if not served:
            lines.append(f"{pocket:<{width}}  (no kernel source)")
        for offer in served:
            mark = "   <- debian:" + suite if offer == picked else ""
            lines.append(f"{pocket:<{width}}  {offer.package} {offer.version}{mark}")
    lines.append(f"debian:{suite} builds {picked.describe()} (Linux {picked.kernel})")
    return "\n".join(lines)
