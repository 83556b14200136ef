"""The cloud image fixture's recipe: what goes in the image, and its cache key."""

from __future__ import annotations

import pytest

from harness.core.errors import UserError
from harness.core.store import key_of
from tests.fixtures.cloudimage import SYSLINUX_CFG, CloudImageRecipe


def test_the_image_has_cloud_init_sshd_systemd_and_a_stock_kernel_but_nothing_of_ours() -> None:
    packages = CloudImageRecipe(suite="bookworm").packages
    for name in ("cloud-init", "openssh-server", "systemd-sysv", "linux-image-amd64"):
        assert name in packages
    inputs = str(CloudImageRecipe().inputs())
    assert "harness" not in inputs  # no harness init, key or hook in the image


def test_the_variant_without_cloud_init_differs_only_by_it_and_is_cached_apart() -> None:
    with_ci, without = CloudImageRecipe(), CloudImageRecipe(cloud_init=False)
    assert set(with_ci.packages) - set(without.packages) == {"cloud-init"}
    assert key_of(with_ci.inputs()) != key_of(without.inputs())
    assert key_of(with_ci.inputs()) == key_of(CloudImageRecipe().inputs())
    assert without.name == "debian-bookworm-cloud-no-cloud-init"


def test_each_suite_is_its_own_image_and_others_are_refused() -> None:
    assert key_of(CloudImageRecipe(suite="bullseye").inputs()) != key_of(
        CloudImageRecipe(suite="bookworm").inputs()
    )
    with pytest.raises(UserError, match="use bullseye, bookworm"):
        CloudImageRecipe(suite="sid")


def test_the_bootloader_boots_the_root_by_label_on_the_serial_console() -> None:
    cfg = SYSLINUX_CFG.format(root="cloudroot")
    assert "root=LABEL=cloudroot" in cfg and "console=ttyS0" in cfg
    assert "SERIAL 0" in cfg  # SYSLINUX's own banner on the serial console too
