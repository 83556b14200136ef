"""A guest on a VM host is reached through it: ProxyJump in the rendered ssh_config."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.hosts import Host, jump_for
from vm import templates

BASE = {"name": "vm1", "port": 2222, "user": "root", "identity": "/w/id_ed25519",
        "known_hosts": "/w/known_hosts"}  # fmt: skip


def test_no_jump_renders_as_before() -> None:
    plain = templates.render("ssh_config.j2", **BASE)
    assert templates.render("ssh_config.j2", **BASE, jump=None) == plain
    assert "ProxyJump" not in plain


def test_jump_host_block_pins_its_key(tmp_path: Path) -> None:
    host = Host("h1", "10.200.1.2", Path("/k"), "ssh-ed25519 AAAAKEY", 2, 2048, ("ah",), "/w", 2200)
    text = templates.render("ssh_config.j2", **BASE, jump=jump_for(host, tmp_path))
    assert (
        "    ProxyJump h1\n" in text and "Host h1\n    HostName 10.200.1.2\n    Port 2200\n" in text
    )
    known = (tmp_path / "known_hosts.h1").read_text()
    assert known == "[10.200.1.2]:2200 ssh-ed25519 AAAAKEY\n"


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client")
def test_openssh_reads_the_jump(tmp_path: Path) -> None:
    host = Host("h1", "10.200.1.2", Path("/k"), "ssh-ed25519 AAAAKEY", 2, 2048, ("ah",), "/w")
    config = tmp_path / "ssh_config"
    config.write_text(templates.render("ssh_config.j2", **BASE, jump=jump_for(host, tmp_path)))
    out = subprocess.run(
        ["ssh", "-G", "-F", str(config), "vm1"], check=True, capture_output=True, text=True
    ).stdout
    assert "proxyjump h1" in out and "port 2222" in out
    out = subprocess.run(
        ["ssh", "-G", "-F", str(config), "h1"], check=True, capture_output=True, text=True
    ).stdout
    assert "hostname 10.200.1.2" in out and "stricthostkeychecking true" in out
