"""--dist load / each over several VMs: one --tx per VM."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness import multivm
from harness.core.errors import UserError


def vm(name: str) -> Any:
    return SimpleNamespace(name=name, workdir=Path(f"/s/{name}"))


def test_one_tx_per_vm_with_its_own_ssh_config() -> None:
    txs = multivm.tx_specs([vm("a"), vm("b")], workers=2)
    assert txs == [
        "2*ssh=-F /s/a/ssh_config a//python=python3//chdir=/opt/aufs-harness",
        "2*ssh=-F /s/b/ssh_config b//python=python3//chdir=/opt/aufs-harness",
    ]


@pytest.mark.parametrize("dist", ["load", "each"])
def test_controller_argv(dist: str) -> None:
    argv = multivm.controller_argv(dist, ["T1", "T2"], ["-k", "x"])
    at = argv.index("--dist")
    assert argv[at : at + 6] == ["--dist", dist, "--tx", "T1", "--tx", "T2"]
    assert argv[-3:] == ["suite", "-k", "x"]


def test_bad_dist_is_one_line() -> None:
    with pytest.raises(UserError, match="--dist loadfile: use one of load, each"):
        multivm.controller_argv("loadfile", ["T"], [])
