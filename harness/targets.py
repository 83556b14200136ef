"""What to test: a target names a kernel and the image it boots with.

A target resolves to a vm.machine.BootSpec; everything after boot is the same
for a stock distribution kernel, a user's cloud image and an aufs build.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from harness.core.deadline import Deadline
from harness.core.errors import UserError
from harness.core.procs import run
from harness.progress import StageHandle
from kmod.pipeline import BuildResult, BuildSpec
from vm.image import SUITES, ImageRecipe, build_image
from vm.machine import BootSpec
from vm.qemu import qemu_img

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Needed:
    """A module the suite needs: a name to modprobe or a .ko to insmod."""

    name: str
    module: Path | str
    fs: str | None  # the filesystem it registers, if any


@dataclass(frozen=True)
class Target:
    distro: str = "bookworm"  # the Debian suite of the harness's own image
    image: Path | None = None  # a user's own disk image (cloud-init), instead
    build: BuildSpec | None = None  # an aufs kernel to build and boot on that image

    def __post_init__(self) -> None:
        if self.image is None and self.distro not in SUITES:
            raise UserError(f"unknown distribution {self.distro!r}: use one of {', '.join(SUITES)}")
        if self.image is not None and not self.image.exists():
            raise UserError(f"image {self.image} does not exist: give an existing image path")
        if self.image is not None and self.build is not None:
            raise UserError(
                "--image boots your image's own kernel: drop --image to boot a built aufs "
                "kernel on the harness's image (--distro picks its userland)"
            )

    def modules(self, build: BuildResult | None = None) -> list[Needed]:
        """What the kernel must have before the suite runs, in load order.

        A built kernel has overlay and loop built in (the guest fragment) and
        no modules directory in the image, so only aufs.ko is loaded, by insmod.
        """
        if build is not None:
            return [Needed("aufs", build.artifacts["aufs.ko"], "aufs")]
        return [
            Needed("overlay", "overlay", "overlay"),
            Needed("loop", "loop", None),  # branch filesystems on loop devices
        ]

    @property
    def label(self) -> str:
        if self.build is not None:
            return f"{self.build.kernel} aufs"
        if self.image is not None:
            return f"image:{self.image.name}"
        return f"debian:{self.distro} stock"


def image_format(path: Path, deadline: Deadline) -> str:
    info = run([qemu_img(), "info", "--output=json", path], deadline=deadline)
    fmt = str(json.loads(info.stdout).get("format", ""))
    if fmt not in ("raw", "qcow2"):
        raise UserError(f"image {path} is {fmt or 'unrecognised'}: give a raw or qcow2 image")
    return fmt


def resolve_boot(
    target: Target, deadline: Deadline, handle: StageHandle, build: BuildResult | None = None
) -> BootSpec:
    """Build or find what the target boots: the image, with `build`'s kernel if given."""
    if target.image is not None:
        fmt = image_format(target.image, deadline)
        handle.note(f"user image {target.image} ({fmt}), booted by its own bootloader")
        return BootSpec(disk=target.image, disk_format=fmt, label=target.label)
    image = build_image(ImageRecipe(suite=target.distro), deadline)
    if image.cached:
        handle.cached(f"image {image.rootfs.parent.name} reused from the cache")
        log.info("image: reusing cached debian %s image %s", target.distro, image.rootfs)
    else:
        handle.note(f"built {image.rootfs}")
    if build is not None:
        return BootSpec(
            disk=image.rootfs,
            disk_format="raw",
            label=f"{build.kernel_release} with aufs on debian {target.distro}",
            kernel=build.artifacts["bzImage"],  # drivers built in: no initrd
            cmdline=image.cmdline,
            kernel_release=build.kernel_release or "",
            ready_marker=image.ready_marker,
        )
    return BootSpec(
        disk=image.rootfs,
        disk_format="raw",
        label=f"debian {target.distro}, stock kernel {image.kernel_release}",
        kernel=image.kernel,  # the PVH vmlinux when there is one: seconds faster under TCG
        initrd=image.initrd,
        cmdline=image.cmdline,
        kernel_release=image.kernel_release,
        ready_marker=image.ready_marker,
    )
