"""`aufs-harness kmod build`: kernel source + aufs-standalone -> bzImage and aufs.ko.

Exit 0 built (or cached), 1 patch-failed or build-failed, 2 usage or
infrastructure error (raised as HarnessError, turned into one line by the CLI).
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from harness import argcheck
from harness.core.deadline import Deadline
from harness.core.errors import EXIT_FAILED, EXIT_OK, UserError
from kmod import aufs, build, config
from kmod.pipeline import BuildResult, BuildSpec, run

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 3 * 3600.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `build` under the `kmod` group's subparsers."""
    p = sub.add_parser(
        "build",
        help="patch a kernel with aufs-standalone and build bzImage + aufs.ko",
        description="Fetch a kernel source, pick the aufs-standalone branch for it, apply the "
        "aufs patch series and your fix-ups, configure a minimal QEMU guest kernel with "
        "CONFIG_AUFS_FS=m, build it, and store bzImage, aufs.ko, .config and System.map. "
        "Same inputs never rebuild.",
        epilog="Kernel specs: debian:bullseye|bookworm|trixie|sid[=VERSION], "
        "https://.../linux-X.Y.Z.tar.xz, git+URL@REF, path:/a/tree. "
        "Exit 0 built, 1 patch-failed or build-failed, 2 usage or infrastructure error.",
    )
    add_build_options(p, kernel_required=True)
    p.add_argument(
        "--timeout",
        type=argcheck.BUILD_TIMEOUT,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"give up after S seconds (default: {DEFAULT_TIMEOUT:.0f})",
    )
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=cmd_build)


def add_build_options(p: argparse._ActionsContainer, *, kernel_required: bool) -> None:
    """The options that describe an aufs build; `run` takes the same ones."""
    p.add_argument(
        "--kernel",
        required=kernel_required,
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
        default="allnoconfig",
        help="what the fragment is merged onto (default: allnoconfig, the fastest build)",
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
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: give a positive number of make jobs")
    for opt, path in (("--fixup-dir", args.fixup_dir), ("--config-fragment", args.config_fragment)):
        if path is not None and not path.exists():
            raise UserError(f"{opt} {path} does not exist: check the path")
    config.aufs_options(args.aufs_option)  # reject a malformed option before any work
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


def cmd_build(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    result = run(spec, Deadline(args.timeout, "kmod build"))
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
    else:
        print(format_result(result))
    return EXIT_OK if result.ok else EXIT_FAILED


def format_result(result: BuildResult) -> str:
    k, a = result.kernel, result.aufs
    if k.get("package"):
        where = f" from {k['pocket']}" if k.get("pocket") else f" from {k['origin']}"
        kernel = f"Linux {k['version']} ({k['package']} {k['package_version']}{where})"
    else:
        kernel = f"Linux {k['version']} from {k['origin']}"
    lines = [
        f"kernel:  {kernel}",
        f"aufs:    {a['branch']} at {a['commit'][:12]} ({a['reason']})",
    ]
    if a.get("distance"):
        lines.append(f"         {a['distance']}")
    for p in result.patches:
        lines.append(f"patch:   {p['summary']}")
    if result.ok:
        how = "cached" if result.cached else "built"
        lines.append(
            f"result:  {how}: {result.kernel_release}, aufs.ko vermagic {result.vermagic!r}"
        )
        for name, path in result.artifacts.items():
            lines.append(f"  {name:<11}{path}")
        lines.append(f"  {'metadata':<11}{result.metadata}")
    else:
        lines.append(f"result:  {result.status.upper()}")
        lines += [f"  {d}" for d in result.details]
        if result.log:
            lines.append(f"  log: {result.log}")
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    lines.append(f"time:    {timings}")
    lines.append(f"again:   {result.reproducer}")
    return "\n".join(lines)
