"""Integration tests: real mmdebstrap images, real QEMU, real SSH.

Images are cached under the user's cache directory (as in real use), so only
the first run on a machine pays for mmdebstrap. VM state is isolated per run.
The facts each test measured are printed at the end of the session, so the
output shows what really booted and ran.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.core.deadline import Deadline
from vm.image import Image, ImageRecipe, build_image

FACTS: list[str] = []
pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    old = os.environ.get("AUFS_HARNESS_STATE")
    state = tmp_path_factory.mktemp("state")
    os.environ["AUFS_HARNESS_STATE"] = str(state)
    yield
    # A test that failed half-way must not leave its VMs to the rest of the run
    # (its own assertions say whether QEMU should have been gone).
    for pid in qemu_pids(str(state)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if old is None:
        os.environ.pop("AUFS_HARNESS_STATE", None)
    else:
        os.environ["AUFS_HARNESS_STATE"] = old


@pytest.fixture(scope="session")
def bookworm() -> Image:
    image = build_image(ImageRecipe(suite="bookworm"), Deadline(1800, "building bookworm"))
    FACTS.append(
        f"bookworm image {'cached' if image.cached else 'built'}: {image.rootfs} "
        f"(kernel {image.kernel_release})"
    )
    return image


@pytest.fixture
def fact() -> Iterator[list[str]]:
    yield FACTS


def qemu_pids(marker: str) -> list[int]:
    """Pids of QEMU processes whose command line mentions `marker`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        if "qemu-system" in cmd and marker in cmd and stat.rsplit(")", 1)[1].split()[0] != "Z":
            pids.append(int(proc.name))
    return pids


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FACTS:
        terminalreporter.section("what the integration tests really did")
        for line in FACTS:
            terminalreporter.write_line(line)


def pytest_configure(config: pytest.Config) -> None:
    """The Ctrl-C tests send SIGINT to a harness they start: a run started in
    the background (`&`, nohup, some CI runners) inherits SIGINT ignored, and so
    would those harnesses. Handle it as a terminal session does."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
