"""Run kmod/load.py inside a guest and get back the same result dataclasses.

The transport stays behind two callables the caller provides (the SSH
wrapper): `run(argv, timeout) -> (returncode, stdout, stderr)` and
`put(local_path, remote_path)`. load.py is self-contained, so uploading the
one file is enough; the guest needs python3 (3.9+), python3-pyudev and kmod.

A result with status "error" means the guest could not load modules at all
(not root, no pyudev, no /lib/modules for modprobe): the caller should treat
it as an infrastructure error, not as a verdict on the module.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.core.errors import InfraError, UserError
from kmod import load as loader
from kmod.load import LoadResult, ModuleResult, UnloadResult, result_from_json

log = logging.getLogger(__name__)

Run = Callable[[list[str], float], tuple[int, str, str]]
Put = Callable[[Path, str], None]

REMOTE_DIR = "/var/tmp/aufs-harness-kmod"
SETUP_TIMEOUT = 30.0
# On top of load.py's own deadline: python start-up and the SSH round trip.
GRACE = 30.0


def upload_loader(run: Run, put: Put, remote_dir: str = REMOTE_DIR) -> str:
    """Copy load.py into the guest; return its remote path."""
    rc, _, err = run(["mkdir", "-p", remote_dir], SETUP_TIMEOUT)
    if rc != 0:
        raise InfraError(f"cannot create {remote_dir} in the guest: {_last_line(err)}")
    remote = posixpath.join(remote_dir, "load.py")
    put(Path(loader.__file__), remote)
    return remote


def load_in_guest(
    run: Run,
    put: Put,
    ko: Path | str,
    expect_fs: str | None,
    timeout: float,
    *,
    params: Sequence[str] = (),
    remote_dir: str = REMOTE_DIR,
    python: str = "python3",
) -> LoadResult:
    """insmod a local .ko (a Path, uploaded first) or modprobe a module name
    (a str) in the guest, and return what load.py proved there."""
    script = upload_loader(run, put, remote_dir)
    if isinstance(ko, Path):
        if not ko.is_file():
            raise UserError(f"{ko}: no such module file")
        target = posixpath.join(remote_dir, ko.name)
        put(ko, target)
    else:
        target = ko
    argv = [python, script, "load", *_options(expect_fs, timeout), target, *params]
    result = _invoke(run, argv, timeout)
    if not isinstance(result, LoadResult):
        raise InfraError(f"load.py in the guest answered a {result.action!r} result to a load")
    return result


def unload_in_guest(
    run: Run,
    put: Put,
    name: str,
    expect_fs: str | None,
    timeout: float,
    *,
    modprobe: bool = False,
    remote_dir: str = REMOTE_DIR,
    python: str = "python3",
) -> UnloadResult:
    """rmmod (or modprobe -r) NAME in the guest and return what load.py proved."""
    script = upload_loader(run, put, remote_dir)
    argv = [python, script, "unload", *_options(expect_fs, timeout)]
    if modprobe:
        argv.append("--modprobe")
    argv.append(name)
    result = _invoke(run, argv, timeout)
    if not isinstance(result, UnloadResult):
        raise InfraError(f"load.py in the guest answered a {result.action!r} result to an unload")
    return result


def _options(expect_fs: str | None, timeout: float) -> list[str]:
    if timeout <= 0:
        raise UserError(f"timeout must be positive, not {timeout}")
    options = ["--json", "--timeout", f"{timeout:g}"]
    if expect_fs:
        options += ["--expect-fs", expect_fs]
    return options


def _invoke(run: Run, argv: list[str], timeout: float) -> ModuleResult:
    rc, out, err = run(argv, timeout + GRACE)
    try:
        result = result_from_json(out)
    except (ValueError, TypeError) as exc:
        raise InfraError(
            f"load.py in the guest exited {rc} without a result: "
            f"{_last_line(err) or _last_line(out) or exc}"
        ) from exc
    if rc != result.exit_code:
        log.warning("load.py exited %d but reported %s", rc, result.status)
    log.info("guest %s: %s: %s", result.action, result.status, result.reason)
    return result


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
