"""Boot-to-SSH seconds under TCG, step by step, for the stock and the aufs kernel.

    .venv/bin/python bench/boot.py [--runs 3] [--before bookworm=KEY] [--before bullseye=KEY]

Kernels: bookworm's stock kernel on the bookworm image (with the image's
initramfs), and the harness's aufs kernel (--aufs-kernel, built from
$AUFS_HARNESS_AUFS_SRC with $AUFS_HARNESS_FIXUP_DIR; warm in the store, or
built now) on the bullseye image, as `run` boots them. Without an aufs source
the aufs kernel is left out, with one line saying so.

Targets (issue #14): boot to SSH (QEMU start until the host's SSH client is
logged in) <= 5 s for the stock kernel, <= 3 s for the aufs kernel. The
machine is shared and noisy: figures are medians of --runs boots, with the
load average before and after.

--before DISTRO=KEY adds a "before" variant of that distro's kernel: the image
stored under KEY (an older recipe: its own init and initramfs), booted with the
command line it was built with and SeaBIOS, as the harness booted it then. The
variants alternate within each round (the order flips every round), so the
after/before ratio of the medians compares two ways under the same load.

Each boot's timeline is read from its console: a thread stamps, on the host's
clock, when each step's line first appears (kernel = "Linux version", init =
the first "Run ... as init process", root = ext4 mounted, fs/net/sshd = the
harness init's lines), and "ssh" is when Machine.wait_ssh returned. The guest's
own clock ("guest ..." columns) runs from the kernel's start. "qemu-cpu" is the
CPU time QEMU used until SSH answered: a figure host load hardly moves.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from harness.bootspec import debian_boot
from harness.core.deadline import Deadline
from harness.progress import setup_logging
from harness.targets import Target
from kmod import pipeline
from kmod.pipeline import BuildSpec
from vm.image import STOCK_CMDLINE, Image, ImageRecipe, build_image, images_store, stored_image
from vm.machine import BootSpec, Machine

log = logging.getLogger("bench.boot")

AUFS_KERNEL = "debian:bullseye=5.10.223-1"
TARGETS = {"stock": 5.0, "aufs": 3.0}
# Host-clock steps, in boot order: (name, console pattern).
STEPS = (
    ("kernel", re.compile(r"Linux version ")),
    ("init", re.compile(r"Run \S+ as init process")),
    ("root", re.compile(r"EXT4-fs \(vda\): mounted")),
    ("fs", re.compile(r"harness-init: filesystems mounted")),
    ("net", re.compile(r"harness-init: seed and network")),
    ("sshd", re.compile(r"harness-init: sshd listening")),
)
# Guest-clock stamps: the kernel's "[ 1.234] ..." and the harness's "(1.23s)".
GUEST = (
    ("init", re.compile(r"\[\s*([\d.]+)\] Run \S+ as init process")),
    ("root", re.compile(r"\[\s*([\d.]+)\] EXT4-fs \(vda\): mounted")),
    ("sshd", re.compile(r"harness-init: sshd listening \(([\d.]+)s\)")),
)


@dataclass(frozen=True)
class Variant:
    name: str  # "stock", "stock-before", "aufs", "aufs-before"
    kernel: str  # "stock" or "aufs": which target applies
    boot: BootSpec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="boots per variant (>= 3)")
    parser.add_argument("--smp", type=int, default=2, help="guest CPUs (the run default is 2)")
    parser.add_argument("--aufs-kernel", default=AUFS_KERNEL)
    parser.add_argument("--only", choices=("stock", "aufs"), help="one kernel only")
    parser.add_argument(
        "--before", action="append", default=[], metavar="DISTRO=KEY",
        help="also boot the image stored under KEY, as it was booted then",
    )  # fmt: skip
    args = parser.parse_args()
    if args.runs < 3:
        parser.error("--runs must be at least 3: the figures are medians")
    before = dict(b.split("=", 1) for b in args.before if "=" in b)
    setup_logging(verbose=False)

    variants = make_variants(args, before)
    load0 = os.getloadavg()
    hits = cache_hits(ImageRecipe(suite="bullseye" if args.only == "aufs" else "bookworm"))
    samples: dict[str, list[dict[str, float]]] = {v.name: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="aufs-harness-bench-") as tmp:
        for r in range(args.runs):
            order = variants if r % 2 == 0 else variants[::-1]
            for v in order:
                sample = boot_once(v, f"{r}-{v.name}", Path(tmp), args.smp)
                samples[v.name].append(sample)
                log.info("%s run %d: SSH after %.2fs (load %.1f)", v.name, r + 1, sample["ssh"],
                         os.getloadavg()[0])  # fmt: skip
    load1 = os.getloadavg()
    report(variants, samples, args)
    print(
        f"cached image lookup (5 runs): median {statistics.median(hits) * 1000:.1f}ms "
        f"max {max(hits) * 1000:.1f}ms  [target < 1 s]"
    )
    print(
        f"load average before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
        f"after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} on {os.cpu_count()} cores"
    )
    return 0


def make_variants(args: argparse.Namespace, before: dict[str, str]) -> list[Variant]:
    """The variants to boot, each "before" right after the one it compares with."""
    variants: list[Variant] = []
    if args.only in (None, "stock"):
        image = build_image(ImageRecipe(suite="bookworm"), Deadline(3000, "bookworm image"))
        boot = debian_boot(Target(distro="bookworm"), image, None)
        variants.append(Variant("stock", "stock", boot))
        if "bookworm" in before:
            old = old_image(before["bookworm"])
            boot = debian_boot(Target(distro="bookworm"), old, None)
            variants.append(Variant("stock-before", "stock", as_then(boot, before["bookworm"])))
    if args.only in (None, "aufs"):
        build = aufs_build(args.aufs_kernel)
        if build is not None:
            image = build_image(ImageRecipe(suite="bullseye"), Deadline(3000, "bullseye image"))
            target = Target(distro="bullseye")
            variants.append(Variant("aufs", "aufs", debian_boot(target, image, build)))
            if "bullseye" in before:
                boot = debian_boot(target, old_image(before["bullseye"]), build)
                variants.append(Variant("aufs-before", "aufs", as_then(boot, before["bullseye"])))
    return variants


def old_image(key: str) -> Image:
    image = stored_image(key)
    if image is None:
        sys.exit(f"bench: no complete image stored under {key!r}: give a key from "
                 f"{images_store().root}")  # fmt: skip
    return image


def as_then(boot: BootSpec, key: str) -> BootSpec:
    """`boot` with the command line recorded when image KEY was built (no
    STOCK_CMDLINE), and SeaBIOS."""
    entry = images_store().lookup(key)
    assert entry is not None
    then = tuple(str(a) for a in entry.meta().get("cmdline", []))
    now = stored_image(key)
    assert now is not None
    # What the target adds after the image's line, less what this code adds for
    # a stock kernel (then there was none of it).
    extra = tuple(a for a in boot.cmdline[len(now.cmdline) :] if a not in STOCK_CMDLINE)
    return dataclasses.replace(boot, cmdline=(*then, *extra), fast_firmware=False)


def aufs_build(kernel: str) -> pipeline.BuildResult | None:
    src = os.environ.get("AUFS_HARNESS_AUFS_SRC", "")
    if not src:
        print("aufs kernel: left out: set AUFS_HARNESS_AUFS_SRC (and AUFS_HARNESS_FIXUP_DIR)")
        return None
    fixups = os.environ.get("AUFS_HARNESS_FIXUP_DIR")
    spec = BuildSpec(kernel=kernel, aufs_src=src, fixup_dir=Path(fixups) if fixups else None)
    result = pipeline.run(spec, Deadline(3 * 3600, "aufs kernel"))
    if result.status != "built":
        print(f"aufs kernel: left out: {kernel} {result.status}: {'; '.join(result.details[:2])}")
        return None
    return result


def cache_hits(recipe: ImageRecipe, runs: int = 5) -> list[float]:
    """Seconds of each lookup of an image already in the cache."""
    hits = []
    for _ in range(runs):
        t0 = time.monotonic()
        cached = build_image(recipe, Deadline(60, "image lookup"))
        hits.append(time.monotonic() - t0)
        assert cached.cached
    return hits


def boot_once(v: Variant, tag: str, tmp: Path, smp: int) -> dict[str, float]:
    """One boot of `v`: host seconds from QEMU's start to each step, "ssh",
    "prep" (keys, seed, overlay before QEMU) and the guest's "guest-*" stamps."""
    workdir = tmp / tag
    console = workdir / "console.log"
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            text = console.read_text(errors="replace") if console.exists() else ""
            now = time.monotonic()
            for name, pattern in STEPS:
                if name not in seen and pattern.search(text):
                    seen[name] = now
            done.wait(0.01)

    name = re.sub(r"[^a-z0-9-]", "-", f"bench-{tag}")
    with Machine(name, v.boot, workdir, accel="tcg", smp=smp) as m:
        t0 = time.monotonic()
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        m.start(Deadline(60, "start"))
        m.wait_ssh(Deadline(300, "boot"))
        ssh = time.monotonic()
        assert m.qemu is not None
        cpu = cpu_seconds(m.qemu.pid)
        done.set()
        watcher.join()
        text = console.read_text(errors="replace")
    start = ssh - (m.boot_seconds or 0.0)  # QEMU's start, as Machine measured it
    sample = {step: at - start for step, at in seen.items()}
    sample["ssh"] = ssh - start
    sample["prep"] = start - t0
    sample["qemu-cpu"] = cpu
    for step, pattern in GUEST:
        found = pattern.search(text)
        if found:
            sample[f"guest-{step}"] = float(found[1])
    return sample


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far: unlike wall time, host
    load does not inflate them (it still slows the guest's timers)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(
    variants: list[Variant],
    samples: dict[str, list[dict[str, float]]],
    args: argparse.Namespace,
) -> None:
    columns = ["prep", *(s for s, _ in STEPS), "ssh", *(f"guest-{s}" for s, _ in GUEST), "qemu-cpu"]
    print(f"boot to SSH under TCG, -smp {args.smp}, {args.runs} runs per variant, "
          "alternating; medians in seconds from QEMU's start (prep: before it; "
          "qemu-cpu: QEMU's CPU seconds until SSH)")  # fmt: skip
    print(f"{'variant':14}" + "".join(f"{c:>12}" for c in columns) + "   min   max")
    for v in variants:
        rows = samples[v.name]
        cells = []
        for c in columns:
            values = [r[c] for r in rows if c in r]
            cells.append(f"{statistics.median(values):12.2f}" if values else f"{'-':>12}")
        ssh = [r["ssh"] for r in rows]
        print(f"{v.name:14}" + "".join(cells) + f" {min(ssh):5.2f} {max(ssh):5.2f}")
    for v in variants:
        median = statistics.median(r["ssh"] for r in samples[v.name])
        mark = "met" if median <= TARGETS[v.kernel] else "NOT met"
        print(f"{v.name}: {v.boot.label}: median {median:.2f}s "
              f"[target <= {TARGETS[v.kernel]:.0f} s: {mark}]")  # fmt: skip
    for v in variants:
        if v.name.endswith("-before"):
            after = v.name.removesuffix("-before")
            a = statistics.median(r["ssh"] for r in samples[after])
            b = statistics.median(r["ssh"] for r in samples[v.name])
            print(f"{after}: after/before ratio of medians {a / b:.2f} ({a:.2f}s / {b:.2f}s)")


if __name__ == "__main__":
    sys.exit(main())
