"""Run the guest package's module loader inside a guest and read its result.

The transport stays behind two callables the caller provides (the SSH
wrapper): `run(argv, timeout) -> (returncode, stdout, stderr)` and
`put(local_path, remote_path)`. The loader and the two modules it shares with
the host are uploaded as harness/guest/ under a remote directory put on
PYTHONPATH; the guest needs python3 (3.9+), python3-pyudev and kmod.

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
from harness.guest import records
from harness.guest.records import LoadResult, ModuleResult, result_from_json

log = logging.getLogger(__name__)

Run = Callable[[list[str], float], tuple[int, str, str]]
Put = Callable[[Path, str], None]

REMOTE_DIR = "/var/tmp/aufs-harness-kmod"
SETUP_TIMEOUT = 30.0
# On top of the loader's own deadline: python start-up and the SSH round trip.
GRACE = 30.0


#: The guest package files the loader needs (it imports nothing else of ours).
LOADER_FILES = ("__init__.py", "kmsg.py", "records.py", "modload.py")


def upload_loader(run: Run, put: Put, remote_dir: str = REMOTE_DIR) -> list[str]:
    """Copy the loader into the guest; return the argv prefix that runs it there."""
    package = posixpath.join(remote_dir, "harness", "guest")
    rc, _, err = run(["mkdir", "-p", package], SETUP_TIMEOUT)
    if rc != 0:
        raise InfraError(f"cannot create {package} in the guest: {_last_line(err)}")
    local = Path(records.__file__).parent
    for name in LOADER_FILES:
        put(local / name, posixpath.join(package, name))
    return ["env", f"PYTHONPATH={remote_dir}"]


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
    (a str) in the guest, and return what the loader proved there."""
    prefix = upload_loader(run, put, remote_dir)
    if isinstance(ko, Path):
        if not ko.is_file():
            raise UserError(f"{ko}: no such module file")
        target = posixpath.join(remote_dir, ko.name)
        put(ko, target)
    else:
        target = ko
    argv = [*prefix, python, "-m", "harness.guest.modload", "load"]
    argv += [*_options(expect_fs, timeout), target, *params]
    result = _invoke(run, argv, timeout)
    if not isinstance(result, LoadResult):
        raise InfraError(
            f"the module loader in the guest answered a {result.action!r} result to a load"
        )
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
            f"the module loader in the guest exited {rc} without a result: "
            f"{_last_line(err) or _last_line(out) or exc}"
        ) from exc
    if rc != result.exit_code:
        log.warning("the loader exited %d but reported %s", rc, result.status)
    log.info("guest %s: %s: %s", result.action, result.status, result.reason)
    return result


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
