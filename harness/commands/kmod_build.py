"""`aufs-harness kmod build`: kernel source + aufs-standalone -> bzImage and aufs.ko.

Exit 0 built (or cached), 1 patch-failed or build-failed, 2 usage or
infrastructure error (raised as HarnessError, turned into one line by the CLI).
"""

from __future__ import annotations

import argparse
import json
import logging

from harness import argcheck
from harness.buildargs import add_build_options, spec_from_args
from harness.commands.common import add_timeout
from harness.core import leftovers
from harness.core.deadline import Deadline
from harness.core.errors import EXIT_FAILED, EXIT_OK
from kmod.pipeline import BuildResult, run

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
    add_timeout(p, DEFAULT_TIMEOUT, argcheck.BUILD_TIMEOUT)
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=cmd_build)


def cmd_build(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    leftovers.sweep()  # what a killed build left (sub-makes, temporaries)
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
