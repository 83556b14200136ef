"""`aufs-harness bundle RESULTS_DIR CELL`: one tarball to reproduce a cell elsewhere."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import argcheck
from harness.bundle import make_bundle
from harness.repro import find_cell


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bundle",
        help="pack a cell up to reproduce it on another machine",
        description="Write one tarball holding what CELL of RESULTS_DIR needs elsewhere: the "
        "kernel source and aufs commit it built, your fix-ups, the fragment and final .config, "
        "the image recipe, the rendered provisioning, the failed check ids, and reproduce.sh "
        "(aufs-harness repro from those files). No private key and no path of this machine.",
    )
    p.add_argument("results_dir", type=Path, metavar="RESULTS_DIR", help="a run's results")
    p.add_argument("cell", metavar="CELL", help="a target label or its directory name")
    p.add_argument(
        "--out",
        type=argcheck.tarball_out,
        default=Path("."),
        metavar="PATH",
        help="the tarball (FILE.tar.gz; no other file is overwritten), or a directory for "
        "aufs-repro-<cell>.tar.gz (default: .)",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    cell = find_cell(args.results_dir, args.cell)
    path, members = make_bundle(cell, args.out)
    for name in members:
        print(f"  {name}")
    print(f"bundle: {path} ({len(members)} files); unpack it and run ./reproduce.sh AUFS_SRC")
    return 0
