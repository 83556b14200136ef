"""Per-VM SSH keys: a client key to log in and a host key to pin.

Both are generated fresh for every VM, so no two VMs share a host key and the
client never has to accept an unknown one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public_line: str  # "ssh-ed25519 AAAA... comment"

    @property
    def public(self) -> Path:
        return self.private.with_name(self.private.name + ".pub")


def generate(path: Path, comment: str) -> KeyPair:
    """Write an OpenSSH ed25519 private key (0600) and its .pub next to it."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    public_line = f"{public.decode()} {comment}"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    path.with_name(path.name + ".pub").write_text(public_line + "\n")
    return KeyPair(path, public_line)
