"""Pick the accelerator: KVM only when it really works, else TCG.

/dev/kvm existing is not enough: on a nested PVM hypervisor (this project's
own CI machines) KVM aborts or hangs at boot. So KVM must pass three checks:
/dev/kvm is usable, the CPU advertises vmx/svm, and a probe boot of the very
kernel we are about to boot reaches its panic (no root) within seconds. The
verdict is cached per (QEMU, host kernel, CPU, guest kernel).
"""

from __future__ import annotations

import grp
import hashlib
import json
import logging
import os
import platform
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.core.deadline import Deadline
from harness.core.errors import UserError
from harness.core.leftovers import owned_temp
from harness.core.paths import cache_dir
from harness.core.procs import kill_group, spawn

log = logging.getLogger(__name__)

ACCELS = ("auto", "kvm", "tcg")
PROBE_SECONDS = 20.0


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    cpu: str  # -cpu model
    reason: str


TCG = "tcg"
KVM = "kvm"


def _cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def static_kvm_check(dev: Path = Path("/dev/kvm"), cpuinfo: str | None = None) -> str | None:
    """None when KVM may work; otherwise the reason it cannot."""
    if not dev.exists():
        return f"{dev} does not exist"
    if not os.access(dev, os.R_OK | os.W_OK):
        return f"{dev} is not readable and writable by this user: {_kvm_grant(dev)}"
    text = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()
    if not _cpu_flags(text) & {"vmx", "svm"}:
        return "the CPU advertises neither vmx nor svm (nested or paravirtual hypervisor)"
    return None


def _kvm_grant(dev: Path) -> str:
    """How to give this user the device: through its group when the group may
    use it, else by first giving it to the kvm group (Debian's udev rule)."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    try:
        st = dev.stat()
        group = grp.getgrgid(st.st_gid).gr_name
    except (OSError, KeyError):
        return f"add {user} to the group that owns it and log in again"
    if st.st_gid != 0 and st.st_mode & 0o060 == 0o060:
        return f"run `sudo usermod -aG {group} {user}` and log in again"
    return (
        f"it is {group}-group, mode {st.st_mode & 0o777:o}: let the kvm group use it "
        "(Debian's udev rule does: `sudo udevadm trigger --name-match=kvm`), then "
        f"`sudo usermod -aG kvm {user}` and log in again"
    )


def require(requested: str) -> None:
    """Refuse `--accel kvm` at once, in one line, when KVM cannot work here."""
    if requested == KVM:
        reason = static_kvm_check()
        if reason:
            raise UserError(f"--accel kvm asked for, but {reason} (or use --accel tcg or auto)")


def _probe_key(qemu: str, kernel: Path) -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((ln for ln in cpuinfo.splitlines() if ln.startswith("model name")), "")
    st = kernel.stat()
    raw = f"{qemu}|{platform.release()}|{model}|{kernel}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def probe_kvm(qemu: str, kernel: Path, seconds: float = PROBE_SECONDS) -> bool:
    """Boot `kernel` under KVM with no root: success is reaching the panic."""
    with owned_temp("probe") as tmp:
        console = Path(tmp) / "console.log"
        argv = [
            qemu,
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "256",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            f"file:{console}",
            "-kernel",
            str(kernel),
            "-append",
            "console=ttyS0 panic=-1 root=/dev/nonexistent",
        ]
        proc = spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            log.info("KVM probe: no panic within %.0fs, treating KVM as unusable", seconds)
            return False
        finally:
            kill_group(proc)
        text = console.read_text(errors="replace") if console.exists() else ""
        return "Kernel panic" in text


def choose(requested: str, qemu: str, kernel: Path | None, deadline: Deadline) -> Accel:
    """Resolve --accel auto|kvm|tcg to a working accelerator."""
    if requested not in ACCELS:
        raise UserError(f"unknown accelerator {requested!r}: use one of {', '.join(ACCELS)}")
    if requested == TCG:
        return Accel(TCG, "max", "requested with --accel tcg")
    require(requested)
    if requested == KVM:
        return Accel(KVM, "host", "requested with --accel kvm")
    reason = static_kvm_check()
    if reason:
        return Accel(TCG, "max", f"KVM unusable: {reason}")
    if kernel is None:  # booting a user's disk image: no kernel to probe with
        return Accel(KVM, "host", "/dev/kvm usable and the CPU has vmx/svm")
    cache = cache_dir() / "accel-probe.json"
    verdicts: dict[str, bool] = json.loads(cache.read_text()) if cache.exists() else {}
    key = _probe_key(qemu, kernel)
    if key not in verdicts:
        verdicts[key] = probe_kvm(qemu, kernel, min(PROBE_SECONDS, deadline.remaining()))
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(verdicts))
        os.replace(tmp, cache)
    if verdicts[key]:
        return Accel(KVM, "host", "KVM probe boot reached the kernel")
    return Accel(TCG, "max", "KVM probe boot hung or failed (cached verdict)")
