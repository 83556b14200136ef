"""The options that describe an aufs kernel build, shared by `kmod build`,
`run` and the benchmarks (bench/build.py, bench/suite.py): argparse only, no
command of its own."""

from __future__ import annotations

import argparse
import os

from harness import argcheck
from harness.core.errors import UserError
from kmod import aufs, build, config, source
from kmod.pipeline import BuildSpec


def add_build_options(p: argparse._ActionsContainer, *, kernel_required: bool) -> None:
    """The options that describe an aufs build; `run` takes the same ones."""
    p.add_argument(
        "--kernel",
        required=kernel_required,
        type=argcheck.kernel_spec,
        metavar="SPEC",
        help="kernel source: debian:bullseye|bookworm|trixie|sid[=VERSION], "
        "https://.../linux-X.Y.Z.tar.xz, git+URL@REF, path:/a/tree",
    )
    p.add_argument(
        "--aufs-src",
        default=os.environ.get("AUFS_HARNESS_AUFS_SRC") or aufs.UPSTREAM_URL,
        type=argcheck.aufs_src,
        metavar="URL|PATH",
        help="aufs-standalone git URL or local clone (default: $AUFS_HARNESS_AUFS_SRC, "
        f"else {aufs.UPSTREAM_URL})",
    )
    p.add_argument(
        "--aufs-ref",
        type=argcheck.git_ref,
        metavar="REF",
        help="aufs branch, tag or commit (default: chosen from the kernel version)",
    )
    p.add_argument(
        "--fixup-dir",
        type=argcheck.existing_dir,
        metavar="DIR",
        help="your *.patch fix-ups, applied in name order after the aufs series; one named "
        "like a series patch (aufs6-mmap.patch) replaces it",
    )
    p.add_argument(
        "--config-fragment",
        type=argcheck.existing_file,
        metavar="FILE",
        help="extra CONFIG_ lines merged over the guest fragment (they win)",
    )
    p.add_argument(
        "--aufs-option",
        action="append",
        default=[],
        metavar="NAME=y|n",
        help="switch an aufs option (e.g. SHWH=n, FHSM=y); repeatable. Defaults: "
        + ", ".join(f"{k}={'y' if v else 'n'}" for k, v in config.DEFAULT_AUFS_OPTIONS.items()),
    )
    p.add_argument(
        "--branch-fs",
        default=config.DEFAULT_BRANCH_FS,
        metavar="LIST",
        help="branch filesystems the kernel must provide, as the suite's --branch-fs: "
        f"{', '.join(config.ALWAYS_BRANCH_FS + config.OPTIONAL_BRANCH_FS)}, mixed, A+B+C "
        f"(default {config.DEFAULT_BRANCH_FS}; xfs and btrfs lengthen a cold build by about "
        "an eighth; `run` also runs the suite on them)",
    )
    p.add_argument(
        "--config-base",
        choices=config.BASES,
        default=config.DEFAULT_BASE,
        help=f"what the fragment is merged onto (default: {config.DEFAULT_BASE}, the fastest "
        "build)",
    )
    p.add_argument("--loopback", action="store_true", help="also apply aufsN-loopback.patch")
    p.add_argument(
        "--jobs",
        "-j",
        type=argcheck.JOBS,
        default=build.default_jobs(),
        metavar="N",
        help=f"make -jN (default: {build.default_jobs()})",
    )


def spec_from_args(args: argparse.Namespace) -> BuildSpec:
    """The BuildSpec the options of add_build_options describe (paths made
    absolute). Raises UserError naming the option at fault: --jobs below 1, a
    --fixup-dir or --config-fragment that does not exist, a malformed
    --aufs-option or --branch-fs, a --kernel in no known form, a path: tree or
    file:// tarball that is not there (so a refused run leaves no results
    directory behind)."""
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: give a positive number of make jobs")
    for opt, path in (("--fixup-dir", args.fixup_dir), ("--config-fragment", args.config_fragment)):
        if path is not None and not path.exists():
            raise UserError(f"{opt} {path} does not exist: check the path")
    config.aufs_options(args.aufs_option)  # reject a malformed option before any work
    problem = source.local_problem(args.kernel)  # an unknown form, a tree that is not there
    if problem is not None:
        raise UserError(f"--kernel {args.kernel}: {problem}")
    return BuildSpec(
        kernel=args.kernel,
        aufs_src=args.aufs_src,
        aufs_ref=args.aufs_ref,
        fixup_dir=args.fixup_dir.resolve() if args.fixup_dir else None,
        config_fragment=args.config_fragment.resolve() if args.config_fragment else None,
        aufs_options=tuple(args.aufs_option),
        branch_fs=config.branch_filesystems(args.branch_fs),
        config_base=args.config_base,
        loopback=args.loopback,
        jobs=args.jobs,
    )


def refuse_unused_build_options(
    args: argparse.Namespace, why: str, used: tuple[str, ...] = ()
) -> None:
    """UserError naming the first aufs-build option given (other than those in
    `used`) when nothing is built with it: `why` says why and what to do, e.g.
    "without --kernel nothing is built: add --kernel or drop it". --aufs-src,
    --jobs and --branch-fs are not judged (their defaults cannot be told from a
    given value; --branch-fs also picks the suite's filesystems)."""
    given = {
        "--aufs-option": bool(args.aufs_option),
        "--aufs-ref": args.aufs_ref is not None,
        "--fixup-dir": args.fixup_dir is not None,
        "--config-fragment": args.config_fragment is not None,
        "--config-base": args.config_base != config.DEFAULT_BASE,
        "--loopback": bool(args.loopback),
    }
    for option, is_given in given.items():
        if is_given and option not in used:
            raise UserError(f"{option} {why}")
