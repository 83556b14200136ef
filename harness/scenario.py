"""Scenarios: what a target runs besides the union suite's defaults.

"suite" (the default) is the union-filesystem suite. "docker" is Docker's aufs
storage driver as a real client of the kernel: a bullseye userland with
docker.io 20.10.5 (the last Debian Docker with the aufs graphdriver that fits
bullseye's glibc) installed into the image at build time, dockerd started in
the guest with --storage-driver=aufs (harness/guest/dockerd.py, a guest
program), the suite's Docker checks (suite/test_docker_engine.py), then the
copy-up measurement. The kernel fragment for it (harness/scenarios/docker.config)
is merged over the guest fragment for this scenario only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import posixpath
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from harness.core.deadline import Deadline
from harness.core.errors import InfraError, TargetFailure
from harness.core.paths import cache_dir
from kmod.pipeline import BuildSpec
from vm.ssh import Guest

log = logging.getLogger(__name__)

SUITE, DOCKER = "suite", "docker"
SCENARIOS = (SUITE, DOCKER)
DOCKER_DISTRO = "bullseye"
# Into the image at build time: the guest has no apt and no network.
DOCKER_PACKAGES = ("busybox-static", "containerd", "docker.io", "runc", "tini")
# Room for /var/lib/docker: the copy-up bench's 1+64+512 MiB layer, its copy-up
# and its volume, and the 45-layer image.
DOCKER_IMAGE_MB = 6144
DOCKER_MEMORY_MB = 2048
# AppArmor off on a stock kernel (the image has no apparmor_parser for
# Docker's profile); the aufs kernel has no LSM at all.
DOCKER_CMDLINE = ("apparmor=0",)
# The suite selects the Docker checks only; one worker, so the checks that
# count layers and the copy-up figures see no other container.
DOCKER_SUITE_ARGS = ("-k", "test_docker_engine")
DOCKER_WORKERS = 1
GUEST_DIR = "/var/tmp/aufs-harness-docker"
START_TIMEOUT = 240.0  # dockerd up and the base image imported, under TCG
BENCH_TIMEOUT = 1200.0  # a 576 MiB image built from /dev/urandom, then the writes
STOP_TIMEOUT = 90.0

#: (argv, deadline) -> (exit status, stdout, stderr), in the guest
GuestRun = Callable[[Sequence[str], Deadline], tuple[int, str, str]]
#: (local file, guest path)
GuestPut = Callable[[Path, str], None]


def docker_fragment() -> Path:
    """The docker scenario's kernel options (package data)."""
    return Path(str(resources.files("harness") / "scenarios" / "docker.config"))


def with_fragment(spec: BuildSpec) -> BuildSpec:
    """`spec` with the docker fragment merged under the user's own (theirs wins).

    The combined text goes to a file named by its digest in the cache, so the
    same inputs make the same kernel key."""
    text = docker_fragment().read_text()
    if spec.config_fragment is None:
        return dataclasses.replace(spec, config_fragment=docker_fragment())
    text += "\n# --- the user's --config-fragment\n" + spec.config_fragment.read_text()
    path = cache_dir() / "scenarios" / f"docker-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(text)
    return dataclasses.replace(spec, config_fragment=path)


def guest_memory(scenario: str, memory_mb: int) -> int:
    """The guest memory (MB) to give a VM of `scenario`: at least DOCKER_MEMORY_MB
    for docker (its image builds and the 512 MiB copy-up), else `memory_mb`."""
    return max(memory_mb, DOCKER_MEMORY_MB) if scenario == DOCKER else memory_mb


def _program() -> Path:
    return Path(str(resources.files("harness") / "guest" / "dockerd.py"))


def _call(run: GuestRun, put: GuestPut, action: str, deadline: Deadline) -> dict[str, Any]:
    """Run the guest program's `action`; its JSON answer."""
    status, _, err = run(["mkdir", "-p", GUEST_DIR], deadline)
    if status != 0:
        raise InfraError(f"cannot create {GUEST_DIR} in the guest: {err.strip()[-200:]}")
    remote = posixpath.join(GUEST_DIR, "dockerd.py")
    put(_program(), remote)
    status, out, err = run(["python3", remote, action], deadline)
    lines = out.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        answer = None
    if status != 0 or not isinstance(answer, dict):
        why = (err.strip().splitlines() or [f"exit {status}"])[-1][:200]
        raise InfraError(f"the guest's dockerd.py {action} gave no answer: {why}")
    return answer


def start_dockerd(run: GuestRun, put: GuestPut, deadline: Deadline) -> dict[str, Any]:
    """dockerd with the aufs storage driver, running in the guest; its info as
    plain data. A dockerd that refuses aufs or falls back to another driver is
    a TargetFailure naming why in one line."""
    answer = _call(run, put, "start", deadline)
    if answer.get("error"):
        raise InfraError(f"starting dockerd in the guest: {answer['error']}")
    if not answer.get("ok"):
        raise TargetFailure(str(answer.get("reason") or "dockerd did not start"))
    return answer


def start_dockerd_over_ssh(guest: Guest, deadline: Deadline) -> dict[str, Any]:
    """start_dockerd in a VM entered through `guest` (a kept VM: `vm up --from`)."""

    def run(argv: Sequence[str], dl: Deadline) -> tuple[int, str, str]:
        r = guest.run(list(argv), dl)
        return r.status, r.stdout, r.stderr

    return start_dockerd(run, guest.put, deadline)


def copy_up_bench(run: GuestRun, put: GuestPut, deadline: Deadline) -> dict[str, Any]:
    """The copy-up table (rows by size) measured in the guest."""
    answer = _call(run, put, "bench", deadline)
    if answer.get("error"):
        raise InfraError(f"the copy-up measurement failed in the guest: {answer['error']}")
    return answer


def stop_dockerd(run: GuestRun, put: GuestPut, deadline: Deadline) -> None:
    _call(run, put, "stop", deadline)


def copy_up_table(bench: dict[str, Any]) -> str:
    """The copy-up table as text: one row per file size."""
    head = f"{'size':>8}  {'first write':>12}  {'second write':>12}  {'volume write':>12}  copied"
    lines = [head]
    for r in bench.get("rows", []):
        lines.append(
            f"{r['size_mib']:>5} MiB  {r['first_write_s'] * 1000:>9.1f} ms  "
            f"{r['second_write_s'] * 1000:>9.3f} ms  {r['volume_write_s'] * 1000:>9.3f} ms  "
            f"{r['copied_bytes'] / 2**20:.1f} MiB then {r['copied_again_bytes'] / 2**20:.1f} MiB"
        )
    return "\n".join(lines)
