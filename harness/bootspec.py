"""What a target boots: build or find its image (and kernel) as a vm.machine.BootSpec.

The roof's image stage: it builds Debian images through vm.image (cached by
recipe) and checks a user's own image with qemu-img; harness.targets stays
plain data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from harness import scenario as scenarios
from harness.core.deadline import Deadline
from harness.core.errors import UserError
from harness.core.procs import run
from harness.core.store import key_of
from harness.progress import StageHandle
from harness.targets import Target
from kmod.pipeline import BuildResult
from vm import accel as accel_mod
from vm.image import STOCK_CMDLINE, Image, ImageRecipe, build_image, check_buildable
from vm.machine import BootSpec
from vm.qemu import qemu_img

log = logging.getLogger(__name__)

# Building a Debian image with mmdebstrap (a cache hit takes well under a second).
IMAGE_TIMEOUT = 1800.0


def image_format(path: Path, deadline: Deadline) -> str:
    """ "raw" or "qcow2", as qemu-img reads `path`; any other format is a UserError."""
    info = run([qemu_img(), "info", "--output=json", path], deadline=deadline)
    fmt = str(json.loads(info.stdout).get("format", ""))
    if fmt not in ("raw", "qcow2"):
        raise UserError(f"image {path} is {fmt or 'unrecognised'}: give a raw or qcow2 image")
    return fmt


def preflight(target: Target, accel: str, deadline: Deadline) -> None:
    """Refuse at once, in one line, what this user could not do later: build an
    image that is not cached (no subordinate ids...) or use --accel kvm without
    /dev/kvm. Runs before a kernel build, so nobody waits minutes to hear it."""
    accel_mod.require(accel)
    if target.image is None:
        check_buildable(image_recipe(target), deadline.sub(15, "checking the image"))


def resolve_boot(
    target: Target, deadline: Deadline, handle: StageHandle, build: BuildResult | None = None
) -> BootSpec:
    """Build or find what the target boots: the image, with `build`'s kernel if
    given (its bzImage, no initrd). Notes on `handle` whether the image was built
    or reused. Raises UserError for a user image qemu-img cannot boot, and what
    vm.image raises when an image cannot be built within `deadline`."""
    if target.image is not None:
        fmt = image_format(target.image, deadline)
        handle.note(f"user image {target.image} ({fmt}), booted by its own bootloader")
        return BootSpec(disk=target.image, disk_format=fmt, label=target.label, cloud_init=True)
    image = build_image(image_recipe(target), deadline)
    if image.cached:
        handle.cached(f"image {image.rootfs.parent.name} reused from the cache")
        log.info("image: reusing cached debian %s image %s", target.distro, image.rootfs)
    else:
        handle.note(f"built {image.rootfs}")
    return debian_boot(target, image, build)


def image_recipe(target: Target) -> ImageRecipe:
    """The harness's image for `target`: its suite, plus what its scenario installs."""
    if target.docker:
        return ImageRecipe(suite=target.distro, extra_packages=target.image_packages,
                           size_mb=scenarios.DOCKER_IMAGE_MB)  # fmt: skip
    return ImageRecipe(suite=target.distro)


def image_facts(target: Target, key: str | None = None) -> dict[str, str | None]:
    """What repro needs to boot exactly the target's image again (the report's
    extra["image"]): {"key": the image store key (None for a user's image),
    "suite": Debian suite, "scenario": what ran besides boot and load,
    "user_image": the user's image file name or None}. `key`: the key of the
    image that booted, when not that of the target's current recipe."""
    if target.image is not None:
        return {"key": None, "suite": None, "scenario": target.scenario,
                "user_image": target.image.name}  # fmt: skip
    key = key or key_of(image_recipe(target).inputs())
    return {"key": key, "suite": target.distro, "scenario": target.scenario, "user_image": None}


def _cmdline_extra(target: Target) -> tuple[str, ...]:
    return (*(scenarios.DOCKER_CMDLINE if target.docker else ()), *target.cmdline_extra)


def debian_boot(target: Target, image: Image, build: BuildResult | None) -> BootSpec:
    """The harness's image booted with `build`'s kernel, or with its own stock kernel."""
    if build is not None:
        return BootSpec(
            disk=image.rootfs,
            disk_format="raw",
            label=f"{build.kernel_release} with aufs on debian {target.distro}",
            kernel=build.artifacts["bzImage"],  # drivers built in: no initrd
            cmdline=(*image.cmdline, *_cmdline_extra(target)),
            kernel_release=build.kernel_release or "",
            ready_marker=image.ready_marker,
        )
    return BootSpec(
        disk=image.rootfs,
        disk_format="raw",
        label=f"debian {target.distro}, stock kernel {image.kernel_release}",
        kernel=image.kernel,  # the PVH vmlinux when there is one: seconds faster under TCG
        initrd=image.initrd,
        cmdline=(*image.cmdline, *STOCK_CMDLINE, *_cmdline_extra(target)),
        kernel_release=image.kernel_release,
        ready_marker=image.ready_marker,
    )
