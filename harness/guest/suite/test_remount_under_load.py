"""Remounting under load (issue 15, kind 5): live systems and container hosts
remount unions while programs run from them.

udba=none with rr+wh branches holding a dynamic executable and its libraries:
500 remounts in a row while another thread keeps executing the binary through
the union's dynamic loader and reading its libraries: no EIO, no failed run, no
kernel WARNING (the kernel-health watch fails the check on one). A remount
discards cached but unused inodes (aufs(5) "xino": "At remount time, cached but
unused inodes are discarded"), which is what runs under the readers' feet.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from unionfs import sysapi
from unionfs.drivers import AufsDriver, Branch
from unionfs.lab import Lab

REMOUNTS = 500
_LIB = re.compile(r"(/\S+) \(0x[0-9a-f]+\)")


def _program() -> tuple[Path, list[Path], Path]:
    """A dynamic executable, its libraries and its loader, from the running system."""
    prog = Path(shutil.which("cat") or "/bin/cat").resolve()
    ldd = shutil.which("ldd")
    if ldd is None:
        pytest.skip("ldd (libc-bin) not installed")
    out = subprocess.run(
        [ldd, str(prog)], check=False, capture_output=True, text=True, timeout=30
    ).stdout
    libs = [Path(m.group(1)) for m in _LIB.finditer(out)]
    loaders = [p for p in libs if p.name.startswith("ld-linux")]
    if not loaders:
        pytest.skip(f"{prog} is not a dynamic executable here: {out.strip()}")
    return prog, [p for p in libs if p not in loaders], loaders[0]


@pytest.mark.fs_independent
def test_remounts_while_a_program_runs_from_the_union(lab: Lab) -> None:
    """Kind 5: RW over RO=rr+wh (the binary) and RO2=rr+wh (its libraries and loader),
    udba=none: 500 remounts while a thread executes the binary through the union's
    loader and reads its libraries: every run exits 0 with the right output, no read
    fails (EIO), no kernel WARNING."""
    prog, libs, loader = _program()
    (lab.ro / "bin").mkdir()
    shutil.copy2(prog, lab.ro / "bin" / "prog")
    (lab.ro2 / "lib").mkdir()
    for lib in [*libs, loader]:
        shutil.copy2(lib, lab.ro2 / "lib" / lib.name)
    (lab.ro / "data").write_text("payload\n")
    aufs = isinstance(lab.driver, AufsDriver)
    lowers = [Branch(lab.ro, "rr+wh"), Branch(lab.ro2, "rr+wh")]
    u = lab.mount(upper="RW", lowers=lowers, options=["udba=none"] if aufs else [], plain=True)
    argv = [
        str(u / "lib" / loader.name),
        "--library-path",
        str(u / "lib"),
        str(u / "bin" / "prog"),
        str(u / "data"),
    ]
    expected = {p.name: p.read_bytes() for p in [*libs, loader]}
    stop = threading.Event()
    failures: list[str] = []
    runs = [0]

    def load() -> None:
        while not stop.is_set() and len(failures) < 5:
            proc = subprocess.run(argv, capture_output=True, timeout=60, check=False)
            runs[0] += 1
            if proc.returncode != 0 or proc.stdout != b"payload\n":
                failures.append(
                    f"run {runs[0]}: exit {proc.returncode}, stdout {proc.stdout[:80]!r}, "
                    f"stderr {proc.stderr.decode(errors='replace').strip()[:200]}"
                )
            for name, data in expected.items():
                try:
                    got = (u / "lib" / name).read_bytes()
                except OSError as exc:
                    failures.append(f"read U/lib/{name}: {exc}")
                    continue
                if got != data:
                    failures.append(f"U/lib/{name}: {len(got)} bytes differ from the original")

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    remount_errors: list[str] = []
    data = "udba=none" if aufs else None
    try:
        for i in range(REMOUNTS):
            try:
                sysapi.mount("none", u, None, sysapi.MS_REMOUNT, data)
            except OSError as exc:
                remount_errors.append(f"remount {i}: {exc}")
                if len(remount_errors) >= 5:
                    break
    finally:
        stop.set()
        worker.join(timeout=120)
    assert not remount_errors, lab.explain(f"{REMOUNTS} remounts return 0", remount_errors)
    assert runs[0] > 0, lab.explain("the program ran at least once meanwhile", runs[0])
    assert not failures, lab.explain(
        f"every run and library read succeeds ({runs[0]} runs during {REMOUNTS} remounts)",
        failures,
    )
    assert os.path.exists(u / "bin" / "prog"), lab.explain("U/bin/prog still there", None)
