"""What to test: a target names a kernel and the image it boots with.

Pure, validated data: bad input is a UserError from the constructor, naming
the cause and the fix. harness.bootspec turns a target into what boots (a
vm.machine.BootSpec); everything after boot is the same for a stock
distribution kernel, a user's cloud image and an aufs build.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import scenario as scenarios
from harness.core.errors import UserError
from kmod.pipeline import BuildResult, BuildSpec
from vm.image import SUITES


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
    # A matrix cell's name: the report's target and its directory ("" : derived).
    name: str = ""
    # Kernel command-line words appended after the image's own (the later wins,
    # e.g. a bad root= to test a boot that cannot succeed); harness image only.
    cmdline_extra: tuple[str, ...] = ()
    # What runs besides boot and load: "suite" (the union suite) or "docker"
    # (dockerd with the aufs storage driver, its checks and the copy-up bench).
    scenario: str = scenarios.SUITE

    def __post_init__(self) -> None:
        if self.scenario not in scenarios.SCENARIOS:
            raise UserError(
                f"unknown scenario {self.scenario!r}: use one of {', '.join(scenarios.SCENARIOS)}"
            )
        if self.scenario == scenarios.DOCKER and (
            self.image is not None or self.distro != scenarios.DOCKER_DISTRO
        ):
            raise UserError(
                "the docker scenario needs the harness's bullseye image (--distro bullseye, no "
                "--image): bullseye's docker.io 20.10.5 is the Docker with the aufs driver"
            )
        if self.image is None and self.distro not in SUITES:
            raise UserError(f"unknown distribution {self.distro!r}: use one of {', '.join(SUITES)}")
        if self.image is not None and not self.image.exists():
            raise UserError(f"image {self.image} does not exist: give an existing image path")
        if self.image is not None and self.build is not None:
            raise UserError(
                "--image boots your image's own kernel: drop --image to boot a built aufs "
                "kernel on the harness's image (--distro picks its userland)"
            )
        if self.image is not None and self.cmdline_extra:
            raise UserError(
                "a kernel command line extra needs the harness's image: your image's own "
                "bootloader chooses its command line"
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
    def docker(self) -> bool:
        return self.scenario == scenarios.DOCKER

    @property
    def image_packages(self) -> tuple[str, ...]:
        """Debian packages the scenario adds to the harness's image."""
        return scenarios.DOCKER_PACKAGES if self.docker else ()

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        tail = " docker" if self.docker else ""
        if self.build is not None:
            return f"{self.build.kernel} aufs{tail}"
        if self.image is not None:
            return f"image:{self.image.name}"
        return f"debian:{self.distro} stock{tail}"
