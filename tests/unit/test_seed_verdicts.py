"""A user's cloud image: the NoCloud seed on its disk, and the one-line verdicts
for the usual ways such an image goes wrong (no cloud-init, no SSH, old Python)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.core.deadline import Deadline
from harness.guestenv import python_problem
from vm.machine import cloud_init_failure, no_ssh_cause
from vm.seed import SeedInput, build_seed, render_files

SEED = SeedInput(
    "vm1",
    "ssh-ed25519 AAAACLIENT aufs-harness@vm1",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    "ssh-ed25519 AAAAHOST root@vm1",
)

# What the consoles of real boots show (trimmed from the fixture images' logs).
CLOUD_INIT_BOOT = """\
[  OK  ] Finished systemd-remount-fs.service - Remount Root and Kernel File Systems.
[   21.5] cloud-init[231]: Cloud-init v. 22.4.2 running 'init-local' at Mon, 30 Nov 2026
[  OK  ] Finished cloud-init-local.service - Initial cloud-init job (pre-networking).
"""
NO_CLOUD_INIT_BOOT = """\
[  OK  ] Started serial-getty@ttyS0.service - Serial Getty on ttyS0.
[  OK  ] Reached target multi-user.target - Multi-User System.

Debian GNU/Linux 12 localhost ttyS0

localhost login: """
NO_DATASOURCE_BOOT = (
    CLOUD_INIT_BOOT
    + "cloud-init[400]: Cloud-init v. 22.4.2 finished at Mon. Datasource DataSourceNone.\n"
)


def test_seed_carries_the_three_cloud_init_files_on_a_cidata_disk(tmp_path: Path) -> None:
    image = build_seed(SEED, tmp_path, Deadline(60, "seed"))
    label = subprocess.run(
        ["mlabel", "-s", "-i", str(image), "::"],
        capture_output=True, text=True, env={"MTOOLS_SKIP_CHECK": "1"}, check=True,
    ).stdout  # fmt: skip
    assert "CIDATA" in label
    listing = subprocess.run(
        ["mdir", "-b", "-i", str(image), "::/"],
        capture_output=True, text=True, env={"MTOOLS_SKIP_CHECK": "1"}, check=True,
    ).stdout  # fmt: skip
    for name in ("user-data", "meta-data", "network-config"):
        assert f"::/{name}" in listing
    got = subprocess.run(
        ["mtype", "-i", str(image), "::/user-data"],
        capture_output=True, text=True, env={"MTOOLS_SKIP_CHECK": "1"}, check=True,
    ).stdout  # fmt: skip
    assert got.replace("\r", "") == render_files(SEED)["user-data"]


def test_user_data_puts_the_client_key_on_root_and_pins_the_host_key() -> None:
    files = render_files(SEED)
    text = files["user-data"]
    assert "disable_root: false" in text
    assert "  - name: root\n" in text and f"      - {SEED.authorized_key}\n" in text
    # the image's own host keys go; only the seed's is installed
    assert "ssh_deletekeys: true" in text and "ssh_genkeytypes: [ed25519]" in text
    assert files["meta-data"].startswith("instance-id: vm1-")
    assert render_files(SEED)["meta-data"] != files["meta-data"]  # a new instance each VM
    assert 'macaddress: "52:54:00:12:34:56"' in files["network-config"]


def test_a_cloud_init_boot_in_progress_is_no_verdict() -> None:
    assert cloud_init_failure(CLOUD_INIT_BOOT) is None
    assert cloud_init_failure("") is None
    assert no_ssh_cause(CLOUD_INIT_BOOT, cloud_init=True) == ""


def test_a_login_prompt_without_cloud_init_names_the_ignored_seed() -> None:
    why = cloud_init_failure(NO_CLOUD_INIT_BOOT)
    assert why is not None and "\n" not in why
    assert "no cloud-init ran" in why and "seed (user, SSH key, host key) was ignored" in why
    assert "login prompt" in why and "install cloud-init in the image" in why


def test_a_login_prompt_is_no_verdict_when_userspace_writes_elsewhere() -> None:
    # console=ttyS0 console=tty0: systemd and cloud-init print on tty0, only
    # the kernel and the serial getty here; wait for SSH or the deadline instead.
    console = "[    1.0] Run /init as init process\n\nlocalhost login: "
    assert cloud_init_failure(console) is None


def test_cloud_init_without_a_datasource_is_named() -> None:
    why = cloud_init_failure(NO_DATASOURCE_BOOT)
    assert why is not None and "DataSourceNone" in why and "NoCloud" in why


def test_no_ssh_names_missing_cloud_init_only_for_cloud_images() -> None:
    console = "SeaBIOS\nBooting from Hard Disk...\n[    0.0] Linux version 6.1.0\n"
    cause = no_ssh_cause(console, cloud_init=True)
    assert "no cloud-init line on its console" in cause and "seed" in cause
    assert no_ssh_cause(console, cloud_init=False) == ""


@pytest.mark.parametrize(
    ("status", "stdout", "stderr", "expected"),
    [
        (0, "3.11.2\npyudev\n", "", None),
        (0, "3.9.2\npyudev\n", "", None),
        (0, "3.7.3\npyudev\n", "", "the image's python3 is 3.7.3, the suite needs Python 3.9"),
        (0, "3.11.2\nno-pyudev\n", "", "install it in the image (Debian: python3-pyudev)"),
        (127, "", "sh: 1: python3: not found", "no working python3 (sh: 1: python3: not found)"),
    ],
)
def test_the_guest_python_verdict_says_what_was_found_and_what_is_needed(
    status: int, stdout: str, stderr: str, expected: str | None
) -> None:
    got = python_problem(status, stdout, stderr)
    if expected is None:
        assert got is None
    else:
        assert got is not None and expected in got and "\n" not in got
