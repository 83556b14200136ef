"""The NoCloud seed disk: cloud-init's user-data/meta-data/network-config, plus
the same SSH material as plain files for the harness's fast guest init.

One disk serves both paths: a user's cloud image reads it through cloud-init,
the harness's own images read /harness/* directly and skip cloud-init.
The disk is a vfat filesystem labelled "cidata", built with mtools: no loop
mount, no root needed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from harness.core.deadline import Deadline
from harness.core.procs import run, which
from vm import templates

LABEL = "cidata"


@dataclass(frozen=True)
class SeedInput:
    name: str
    authorized_key: str  # the client's public key line
    host_private: str  # the VM's ed25519 host key, OpenSSH PEM
    host_public: str  # its public line


def render_files(seed: SeedInput) -> dict[str, str]:
    """Every file of the seed, by its path inside the seed filesystem."""
    ctx = {
        "name": seed.name,
        "authorized_key": seed.authorized_key,
        "host_private": seed.host_private.rstrip("\n"),
        "host_public": seed.host_public,
        "instance_id": f"{seed.name}-{uuid.uuid4().hex[:8]}",
    }
    return {
        "user-data": templates.render("user-data.j2", **ctx),
        "meta-data": templates.render("meta-data.j2", **ctx),
        "network-config": templates.render("network-config.j2", **ctx),
        "harness/authorized_keys": seed.authorized_key + "\n",
        "harness/ssh_host_ed25519_key": seed.host_private,
        "harness/ssh_host_ed25519_key.pub": seed.host_public + "\n",
        "harness/hostname": seed.name + "\n",
    }


def build_seed(seed: SeedInput, workdir: Path, deadline: Deadline) -> Path:
    """Write the seed files under workdir/seed and pack them into workdir/seed.img."""
    files = render_files(seed)
    tree = workdir / "seed"
    for rel, text in files.items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tree / "harness/ssh_host_ed25519_key").chmod(0o600)
    image = workdir / "seed.img"
    image.unlink(missing_ok=True)
    mkfs = which("mkfs.vfat", "dosfstools")
    run([mkfs, "-n", LABEL.upper(), "-C", image, "2048"], deadline=deadline)
    mmd, mcopy = which("mmd", "mtools"), which("mcopy", "mtools")
    env = {"MTOOLS_SKIP_CHECK": "1"}
    run([mmd, "-i", image, "::/harness"], deadline=deadline, env=env)
    for rel in sorted(files):
        run([mcopy, "-o", "-i", image, tree / rel, f"::/{rel}"], deadline=deadline, env=env)
    return image
