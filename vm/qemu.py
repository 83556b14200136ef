"""Launch QEMU from a rendered argv, capture its console, and always kill it.

A QemuProcess is the behaviour; LaunchSpec is the data. Every QEMU we start is
remembered in-process and killed at interpreter exit or on SIGTERM, and dies
with the harness even when the harness is SIGKILLed (procs.spawn: a
parent-death signal). A VM started to be detached (`vm up`) has no
parent-death signal; until it is ready a procs.Guard kills it if the harness
dies, and release() (once SSH answers) lets it outlive the CLI: its pid is
recorded and `vm down` kills it. kill() asks QEMU to quit over QMP first.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from harness.core.deadline import Deadline
from harness.core.errors import InfraError, UserError
from harness.core.procs import Guard, kill_group, run, spawn, which
from vm import qmp, templates

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"


def qemu_binary() -> str:
    return which(QEMU, "qemu-system-x86")


def qemu_img() -> str:
    return which("qemu-img", "qemu-utils")


@dataclass(frozen=True)
class LaunchSpec:
    name: str
    accel: str
    cpu: str
    disk: Path  # qcow2 overlay the VM writes to
    console_log: Path
    qmp_socket: Path
    pidfile: Path
    ssh_port: int
    kernel: Path | None = None  # None: boot the disk's own bootloader
    initrd: Path | None = None
    cmdline: tuple[str, ...] = ()
    seed: Path | None = None
    memory_mb: int = 1024
    smp: int = 2
    firmware: Path | None = None  # -bios; None: QEMU's default (SeaBIOS)

    def argv(self, qemu: str) -> list[str]:
        return templates.render_argv(
            "qemu.argv.j2",
            qemu=qemu,
            name=self.name,
            accel=self.accel,
            cpu=self.cpu,
            memory_mb=self.memory_mb,
            smp=self.smp,
            console_log=self.console_log,
            qmp_socket=self.qmp_socket,
            pidfile=self.pidfile,
            kernel=self.kernel,
            initrd=self.initrd,
            cmdline=self.cmdline,
            disk=self.disk,
            seed=self.seed,
            ssh_port=self.ssh_port,
            firmware=self.firmware,
        )


# qboot: a firmware that only starts the kernel QEMU was given (bzImage or PVH
# ELF), with the same ACPI and MP tables as SeaBIOS and none of its disk and
# option-ROM work. Debian's qemu-system-data ships it.
QBOOT = "qboot.rom"
FIRMWARE_DIRS = (Path("/usr/share/qemu"), Path("/usr/share/seabios"))


def kernel_firmware(dirs: tuple[Path, ...] = FIRMWARE_DIRS) -> Path | None:
    """The firmware for a direct kernel boot: qboot's path, or None (then
    SeaBIOS) when this QEMU has none."""
    return next((d / QBOOT for d in dirs if (d / QBOOT).is_file()), None)


def make_overlay(base: Path, base_format: str, overlay: Path, deadline: Deadline) -> None:
    """A copy-on-write qcow2 on top of `base`, which is never written."""
    if not base.exists():
        raise UserError(f"image {base} does not exist: give the path of an existing image")
    overlay.unlink(missing_ok=True)
    run(
        [
            qemu_img(),
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            base_format,
            "-b",
            base.resolve(),
            overlay,
        ],
        deadline=deadline,
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (QEMU may still lose a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


_live: dict[int, subprocess.Popen[bytes]] = {}


def _kill_all_live() -> None:
    for proc in list(_live.values()):
        kill_group(proc)
    _live.clear()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _kill_all_live()
    raise SystemExit(128 + signum)


atexit.register(_kill_all_live)
with contextlib.suppress(ValueError):  # not in the main thread: atexit still covers us
    signal.signal(signal.SIGTERM, _on_sigterm)


@dataclass
class QemuProcess:
    spec: LaunchSpec
    proc: subprocess.Popen[bytes]
    stderr_log: Path
    guard: Guard | None = None  # a detached VM's, until release()
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls, spec: LaunchSpec, detach: bool = False) -> QemuProcess:
        qemu = qemu_binary()
        argv = spec.argv(qemu)
        stderr_log = spec.console_log.with_name("qemu.log")
        for stale in (spec.console_log, spec.qmp_socket, spec.pidfile):
            stale.unlink(missing_ok=True)
        spec.console_log.touch()
        log.debug("qemu argv: %s", argv)
        with open(stderr_log, "wb") as err:
            proc = spawn(
                argv,
                detached=detach,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
            )
        if not detach:
            _live[proc.pid] = proc
        qp = cls(spec, proc, stderr_log, guard=Guard(proc.pid) if detach else None)
        qp._fail_fast_on_port()
        return qp

    def _fail_fast_on_port(self) -> None:
        """QEMU exits at once when hostfwd cannot bind: say so in one line."""
        end = time.monotonic() + 1.0
        while time.monotonic() < end and self.proc.poll() is None:
            time.sleep(0.05)
        if self.proc.poll() is not None:
            text = self.qemu_output()
            if "host forwarding" in text or "hostfwd" in text:
                raise UserError(
                    f"SSH port {self.spec.ssh_port} on 127.0.0.1 is already taken: "
                    "choose another with --ssh-port or stop what listens there"
                )
            raise InfraError(f"QEMU exited at start ({self.proc.returncode}): {_last(text)}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ended(self) -> str:
        """How QEMU ended, "" while it runs: "killed by SIGKILL" (from outside:
        the harness stops it with SIGTERM first), or "exited 1: <its last line>"."""
        code = self.proc.poll()
        if code is None:
            return ""
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited {code}: {_last(self.qemu_output())}"

    def qemu_output(self) -> str:
        return self.stderr_log.read_text(errors="replace") if self.stderr_log.exists() else ""

    def console(self) -> str:
        path = self.spec.console_log
        return path.read_text(errors="replace") if path.exists() else ""

    def console_tail(self, lines: int = 25) -> str:
        return "\n".join(self.console().splitlines()[-lines:])

    def release(self) -> None:
        """A detached VM is ready: from now on it outlives the harness."""
        if self.guard is not None:
            self.guard.release()
            self.guard = None

    def kill(self) -> None:
        """QMP quit (a second at most), then SIGTERM/SIGKILL the process group."""
        if self.alive():
            try:
                qmp.quit_qemu(self.spec.qmp_socket, Deadline(1.0, "QMP quit"))
                self.proc.wait(timeout=2.0)
            except (InfraError, subprocess.TimeoutExpired) as exc:
                log.debug("QMP quit: %s; killing QEMU", exc)
        kill_group(self.proc)
        _live.pop(self.proc.pid, None)
        if self.guard is not None:
            self.guard.fire()
            self.guard = None


def _last(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def kill_pid(pid: int, expect_in_cmdline: str) -> bool:
    """Kill a detached QEMU by pid, if that pid is still our QEMU. True if killed."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    if QEMU not in cmdline or expect_in_cmdline not in cmdline:
        return False  # pid reused by something else: leave it alone
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    end = time.monotonic() + 5
    while time.monotonic() < end and Path(f"/proc/{pid}").exists():
        if _is_zombie(pid):
            break
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
