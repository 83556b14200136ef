"""`aufs-harness kmod prepare` and `kmod fixup`: from a failed patch to your own fix-up.

prepare leaves the patched tree (rejects beside the files) where you can edit
it and prints its path; fixup turns your edits into patches in your fix-up
directory, which the next `kmod build --fixup-dir DIR` applies.
Exit 0 done, 2 usage or infrastructure error.
"""

from __future__ import annotations

import argparse
import logging

from harness import argcheck
from harness.buildargs import add_build_options, spec_from_args
from harness.commands.common import add_timeout
from harness.core import leftovers
from harness.core.deadline import Deadline
from harness.core.errors import EXIT_OK
from kmod import fixup

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 3600.0
THEN = "run `aufs-harness kmod fixup` with the same options and --to YOUR_FIXUP_DIR"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `prepare` and `fixup` under the `kmod` group's subparsers."""
    p = sub.add_parser(
        "prepare",
        help="leave an aufs-patched kernel tree, rejects and all, for you to edit",
        description="Apply the aufs series (and your fix-ups) to a copy of the kernel the way "
        "`kmod build` does, put FILE.rej beside each file with rejected hunks, and print the "
        "tree's path. Edit it, then run `kmod fixup` with the same options and --to DIR. "
        "Running prepare again keeps your edits unless --fresh.",
    )
    add_build_options(p, kernel_required=True)
    p.add_argument("--fresh", action="store_true", help="discard an earlier prepared tree")
    add_timeout(p, DEFAULT_TIMEOUT)
    p.set_defaults(func=cmd_prepare)
    f = sub.add_parser(
        "fixup",
        help="turn your edits of a prepared tree into fix-up patches",
        description="Diff the tree `kmod prepare` left against what the series made of it. A "
        "series patch that failed gets a replacement named like it (aufs6-mmap.patch: the "
        "build uses it instead); other edits become one NNNN-fixup-KERNEL.patch applied after "
        "the series. Then `kmod build ... --fixup-dir DIR`.",
    )
    add_build_options(f, kernel_required=True)
    f.add_argument(
        "--to", type=argcheck.results_dir, required=True, metavar="DIR",
        help="your fix-up directory (outside this repository); created if missing",
    )  # fmt: skip
    f.add_argument(
        "--name", type=argcheck.patch_name, metavar="FILE.patch",
        help="name of the additive fix-up patch",
    )  # fmt: skip
    add_timeout(f, DEFAULT_TIMEOUT)
    f.set_defaults(func=cmd_fixup)


def cmd_prepare(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    leftovers.sweep()  # what a killed build left (sub-makes, temporaries)
    prepared = fixup.prepare(spec, Deadline(args.timeout, "kmod prepare"), fresh=args.fresh)
    print(format_prepared(prepared))
    return EXIT_OK


def format_prepared(prepared: fixup.Prepared) -> str:
    state = "kept from before (your edits stay; --fresh starts over)" if prepared.reused else "new"
    lines = [f"tree:    {prepared.src}   ({state})"]
    if prepared.failed:
        for patch, files in prepared.failed.items():
            lines.append(f"failed:  {patch}: {', '.join(files)}")
        lines += [f"reject:  {p}" for p in prepared.rejects]
        lines.append(f"next:    apply each .rej by hand in that tree, then {THEN}")
    else:
        lines.append(f"series:  applied; edit the tree (say, to make it compile), then {THEN}")
    return "\n".join(lines)


def cmd_fixup(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    written = fixup.make_fixups(spec, args.to, Deadline(args.timeout, "kmod fixup"), name=args.name)
    for path in written:
        print(f"wrote:   {path}")
    print(f"next:    aufs-harness kmod build ... --fixup-dir {args.to.expanduser().resolve()}")
    return EXIT_OK
