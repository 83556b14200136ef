"""A VM's whole life: keys, seed, overlay, QEMU, SSH, and teardown.

BootSpec says what to boot (data); Machine boots it (behaviour). A Machine's
working directory holds everything about one VM (console log, keys,
ssh_config, state.json), so a detached VM can be found again by name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.core import leftovers
from harness.core.deadline import Deadline
from harness.core.errors import DeadlineExceeded, InfraError, UserError
from harness.core.paths import state_dir
from harness.core.procs import DETACHED, owner_token, which
from vm import accel as accel_mod
from vm import templates
from vm.keys import generate
from vm.qemu import (
    LaunchSpec,
    QemuProcess,
    free_port,
    kernel_firmware,
    kill_pid,
    make_overlay,
    port_taken,
    qemu_binary,
    qemu_img,
)
from vm.seed import SeedInput, build_seed
from vm.ssh import Endpoint, Guest

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
# Console lines that end every hope of booting: the boot fails at once with the
# line as its reason instead of waiting out the deadline. (pattern, what it means)
BOOT_FAILURES: tuple[tuple[str, str], ...] = (
    (r"No bootable device\.?", "the firmware found nothing to boot"),
    (r"Boot failed: not a bootable disk", "the firmware found no boot loader on the disk"),
    (r"Kernel panic - not syncing.*", "the kernel panicked"),
    (r"VFS: Unable to mount root fs.*", "the kernel cannot mount its root filesystem"),
    (r"Target filesystem doesn't have requested .*", "the initramfs cannot find init"),
    # Debian's initramfs says "Gave up waiting for root file system device", then
    # a list of common problems, then the line that names the device: that one.
    (r"ALERT! .* does not exist.*", "the initramfs gave up on the root"),
    (r"BusyBox v\S+ .*built-in shell \(ash\)", "the initramfs dropped to its rescue shell"),
    (r"You are in emergency mode.*", "systemd dropped to its emergency shell"),
    (r"Give root password for maintenance.*", "systemd dropped to its emergency shell"),
)
BOOT_FAILURE_RE = re.compile("|".join(f"(?:{pattern})" for pattern, _ in BOOT_FAILURES))


def boot_failure(console: str) -> str | None:
    """The first console line that ends the boot, stripped, or None."""
    m = BOOT_FAILURE_RE.search(console)
    return m.group(0).strip() if m else None


# A user's cloud image provisioned by cloud-init from the NoCloud seed: what its
# console says when that cannot work. cloud-init prints "Cloud-init v. N running
# 'init-local'" and systemd "Started cloud-init-local.service" long before a getty.
CLOUD_INIT_RE = re.compile(r"cloud-init", re.IGNORECASE)
LOGIN_PROMPT_RE = re.compile(r"^[\w.-]+ login:", re.MULTILINE)
NO_DATASOURCE_RE = re.compile(r"DataSourceNone\b")
# systemd's status lines: userspace writes to this console, so cloud-init's own
# lines would be here too (with console=ttyS0 not last, they go elsewhere).
USERSPACE_RE = re.compile(r"Reached target|Started ")
SEED_IGNORED = "so the NoCloud seed (user, SSH key, host key) was ignored"
# Seconds between two reads of the console while waiting for the ready marker:
# short against a boot of a few seconds, long against reading a ~40 KB file.
CONSOLE_POLL = 0.02


def cloud_init_failure(console: str) -> str | None:
    """Why a cloud image's boot cannot give SSH, told from its console, or None:
    it reached a login prompt without cloud-init ever running, or cloud-init ran
    and found no datasource (the seed disk was not read)."""
    if NO_DATASOURCE_RE.search(console):
        return (
            "cloud-init found no datasource (DataSourceNone), so the NoCloud seed was not "
            "read: enable NoCloud in the image's cloud-init datasource_list"
        )
    at_login = LOGIN_PROMPT_RE.search(console) and USERSPACE_RE.search(console)
    if at_login and not CLOUD_INIT_RE.search(console):
        return (
            f"the image reached a login prompt but no cloud-init ran, {SEED_IGNORED}: "
            "install cloud-init in the image (docs/usage.md)"
        )
    return None


def no_ssh_cause(console: str, cloud_init: bool) -> str:
    """The likely cause of a boot that never answered SSH, as a clause ("" if none)."""
    if cloud_init and not CLOUD_INIT_RE.search(console):
        return (
            f"; no cloud-init line on its console: without cloud-init in the image, "
            f"{SEED_IGNORED.removeprefix('so ')}"
        )
    return ""


@dataclass(frozen=True)
class BootSpec:
    """What to boot: a base disk and, unless the disk boots itself, a kernel."""

    disk: Path
    disk_format: str  # "raw" or "qcow2"
    label: str  # human description, e.g. "debian bookworm, stock 6.1.0-40-amd64"
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: tuple[str, ...] = ()
    user: str = "root"
    kernel_release: str = ""
    # A console line the guest prints once sshd listens: probing SSH before the
    # guest's network is up stalls in QEMU's user networking, seconds a probe.
    ready_marker: str | None = None
    # Provisioned by the image's own cloud-init from the NoCloud seed (a user's
    # image), not by the harness's init: its console is read for cloud-init's fate.
    cloud_init: bool = False
    # A direct kernel boot starts from qboot instead of SeaBIOS when QEMU has it
    # (vm.qemu.kernel_firmware); False keeps SeaBIOS (bench/boot.py's "before").
    fast_firmware: bool = True


@dataclass
class VMState:
    name: str
    pid: int
    ssh_port: int
    workdir: str
    label: str
    accel: str
    started: float = field(default_factory=time.time)
    owner: str = ""  # procs.owner_token() of the harness that started it, or DETACHED

    @property
    def ssh_config(self) -> Path:
        return Path(self.workdir) / "ssh_config"


OWNER = "owner.json"


def write_owner(workdir: Path, token: str) -> None:
    """Record who owns a VM directory: procs.owner_token() ("PID:START") of the
    harness process, or DETACHED for a `vm up` VM that is ready. The next
    start's sweep (harness.core.leftovers) removes directories of dead owners."""
    tmp = workdir / f".{OWNER}.tmp"
    tmp.write_text(json.dumps({"owner": token}))
    tmp.replace(workdir / OWNER)


def _with_sysrq(cmdline: tuple[str, ...]) -> tuple[str, ...]:
    """Let sysrq from the keyboard (QMP send-key) dump tasks, whatever the
    guest's kernel.sysrq mask says: the hang evidence of a guest without SSH."""
    return cmdline if "sysrq_always_enabled" in cmdline else (*cmdline, "sysrq_always_enabled")


def vms_root() -> Path:
    root = state_dir() / "vms"
    root.mkdir(parents=True, exist_ok=True)
    return root


# A VM's copy-on-write disk overlay lives in the state dir and grows with what
# the guest writes (3-20 MB in a suite run); QEMU meeting ENOSPC there pauses the
# guest, which then looks like a VM that stopped answering.
MIN_STATE_FREE_MB = 128


def check_state_space(need_mb: int = MIN_STATE_FREE_MB) -> None:
    """InfraError in one line when the state dir has less than `need_mb` MB free."""
    where = state_dir()
    free = shutil.disk_usage(where).free >> 20
    if free < need_mb:
        raise InfraError(
            f"the state directory {where} is full ({free} MB free; a VM's disk overlay needs "
            f"{need_mb} MB or more there): free space there or point AUFS_HARNESS_STATE elsewhere"
        )


def preflight(ssh_port: int | None = None) -> None:
    """Fail fast, before any long work, on what would stop a VM from starting;
    first clean what a killed run left (harness.core.leftovers: one log line if
    anything). Commands call it once their own inputs are checked, so a refused
    command leaves everything as it was."""
    leftovers.sweep()
    check_state_space()
    qemu_binary()
    qemu_img()
    which("mkfs.vfat", "dosfstools")
    which("mcopy", "mtools")
    if ssh_port is not None:
        if not 1 <= ssh_port <= 65535:
            raise UserError(f"SSH port {ssh_port} is not a TCP port: use 1-65535")
        if port_taken(ssh_port):
            raise UserError(
                f"SSH port {ssh_port} on 127.0.0.1 is already taken: "
                "choose another with --ssh-port or stop what listens there"
            )


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise UserError(f"bad VM name {name!r}: use lowercase letters, digits and dashes")
    return name


class Machine:
    def __init__(
        self,
        name: str,
        boot: BootSpec,
        workdir: Path,
        *,
        accel: str = "auto",
        ssh_port: int | None = None,
        memory_mb: int = 1024,
        smp: int = 2,
    ) -> None:
        self.name = check_name(name)
        self.boot = boot
        self.workdir = workdir
        self.requested_accel = accel
        self.requested_port = ssh_port
        self.memory_mb = memory_mb
        self.smp = smp
        self.qemu: QemuProcess | None = None
        self.guest: Guest | None = None
        self.accel: accel_mod.Accel | None = None
        self.boot_seconds: float | None = None
        self.detach = False
        self.release_when_ready = True

    # -- start ------------------------------------------------------------
    def start(
        self, deadline: Deadline, detach: bool = False, release_when_ready: bool = True
    ) -> None:
        """Start QEMU. `detach`: the VM may outlive the harness, once released:
        at SSH (`release_when_ready`) or when the caller calls keep(); until
        then it dies with the harness like any other."""
        if not self.boot.disk.exists():
            raise UserError(f"image {self.boot.disk} does not exist: give an existing image path")
        preflight(self.requested_port)
        qemu = qemu_binary()
        self.accel = accel_mod.choose(self.requested_accel, qemu, self.boot.kernel, deadline)
        log.info("accelerator: %s (%s)", self.accel.name, self.accel.reason)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.detach = detach
        self.release_when_ready = release_when_ready
        write_owner(self.workdir, owner_token())  # whose leftovers these are, if we die
        client = generate(self.workdir / "id_ed25519", f"aufs-harness@{self.name}")
        hostkey = generate(self.workdir / "ssh_host_ed25519_key", f"root@{self.name}")
        seed = build_seed(
            SeedInput(
                self.name,
                client.public_line,
                hostkey.private.read_text(),
                hostkey.public_line,
            ),
            self.workdir,
            deadline,
        )
        overlay = self.workdir / "disk.qcow2"
        make_overlay(self.boot.disk, self.boot.disk_format, overlay, deadline)
        port = self.requested_port or free_port()
        spec = LaunchSpec(
            name=self.name,
            accel=self.accel.name,
            cpu=self.accel.cpu,
            disk=overlay,
            console_log=self.workdir / "console.log",
            qmp_socket=self.workdir / "qmp.sock",
            pidfile=self.workdir / "qemu.pid",
            ssh_port=port,
            kernel=self.boot.kernel,
            initrd=self.boot.initrd,
            cmdline=_with_sysrq(self.boot.cmdline) if self.boot.kernel else (),
            seed=seed,
            memory_mb=self.memory_mb,
            smp=self.smp,
            firmware=kernel_firmware() if self.boot.kernel and self.boot.fast_firmware else None,
        )
        self._write_ssh_config(port, client.private, hostkey.public_line)
        self._t0 = time.monotonic()
        self.qemu = QemuProcess.start(spec, detach=detach)
        self.endpoint = Endpoint(
            "127.0.0.1", port, self.boot.user, client.private, hostkey.public_line
        )
        self._save_state()

    def _write_ssh_config(self, port: int, identity: Path, host_public: str) -> None:
        known = self.workdir / "known_hosts"
        keytype, b64 = host_public.split()[:2]
        known.write_text(
            templates.render("known_hosts.j2", name=self.name, host_key=f"{keytype} {b64}")
        )
        (self.workdir / "ssh_config").write_text(
            templates.render(
                "ssh_config.j2",
                name=self.name,
                port=port,
                user=self.boot.user,
                identity=identity,
                known_hosts=known,
            )
        )

    def _save_state(self) -> None:
        assert self.qemu is not None and self.accel is not None
        state = VMState(
            name=self.name,
            pid=self.qemu.pid,
            ssh_port=self.qemu.spec.ssh_port,
            workdir=str(self.workdir),
            label=self.boot.label,
            accel=self.accel.name,
            owner=owner_token(),
        )
        (self.workdir / "state.json").write_text(json.dumps(asdict(state), indent=2))

    # -- wait -------------------------------------------------------------
    def wait_ssh(self, deadline: Deadline) -> Guest:
        """Wait for SSH; a dead or panicked VM fails at once with its console tail."""
        assert self.qemu is not None
        qemu = self.qemu
        guest = Guest(self.endpoint)

        def alive() -> bool:
            if not qemu.alive():
                return False
            console = qemu.console()
            failure = boot_failure(console)
            if failure:
                raise InfraError(
                    f"the guest failed to boot: {failure} (console: {qemu.spec.console_log})"
                )
            failure = cloud_init_failure(console) if self.boot.cloud_init else None
            if failure:
                raise InfraError(f"{failure} (console: {qemu.spec.console_log})")
            return True

        try:
            if self.boot.ready_marker:
                self._wait_console(self.boot.ready_marker, deadline, alive)
            guest.wait_ready(deadline, alive=alive)
        except DeadlineExceeded as exc:
            cause = no_ssh_cause(qemu.console(), self.boot.cloud_init)
            raise InfraError(
                f"the VM never answered SSH within {deadline.seconds:.0f}s{cause}; console tail:\n"
                f"{qemu.console_tail()}\n(console: {qemu.spec.console_log})"
            ) from exc
        except InfraError as exc:
            if not qemu.alive():
                raise InfraError(
                    f"QEMU exited ({qemu.proc.returncode}) before SSH answered: "
                    f"{qemu.qemu_output().strip()[-300:] or '(no QEMU output)'}; console tail:\n"
                    f"{qemu.console_tail()}"
                ) from exc
            cause = no_ssh_cause(qemu.console(), self.boot.cloud_init)
            if cause and "cloud-init" not in str(exc):  # e.g. the image's own host key
                raise InfraError(f"{exc}{cause}") from exc
            raise
        self.boot_seconds = time.monotonic() - self._t0
        self.guest = guest
        if self.detach and self.release_when_ready:  # ready: from now on it outlives the CLI
            self.keep()
        return guest

    def keep(self) -> None:
        """Let a detached VM outlive the harness from now on: its guard is
        disarmed and owner.json says DETACHED, so no sweep touches it; only
        `vm down` (destroy) ends it. Raises InfraError for a VM not started
        with detach=True (it dies with the harness whatever we do)."""
        if self.qemu is None or not self.detach:
            raise InfraError(f"VM {self.name} was not started to be kept (detach=True)")
        self.qemu.release()
        write_owner(self.workdir, DETACHED)

    def _wait_console(self, marker: str, deadline: Deadline, alive: Any) -> None:
        """Wait for `marker` on the serial console; a dead or failed boot raises."""
        assert self.qemu is not None
        while marker not in self.qemu.console():
            if not alive():
                raise InfraError("the VM exited before it was ready")
            deadline.check(f"waiting for {marker!r} on the console")
            time.sleep(CONSOLE_POLL)

    def console_log(self) -> Path:
        return self.workdir / "console.log"

    # -- stop -------------------------------------------------------------
    def stop(self) -> None:
        if self.guest is not None:
            self.guest.close()
            self.guest = None
        if self.qemu is not None:
            self.qemu.kill()

    def __enter__(self) -> Machine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- detached VMs (vm up / ssh / down / list) ------------------------------
def load_state(name: str) -> VMState:
    path = vms_root() / check_name(name) / "state.json"
    if not path.exists():
        raise UserError(f"no VM named {name!r}: start one with `aufs-harness vm up --name {name}`")
    data: dict[str, Any] = json.loads(path.read_text())
    return VMState(**data)


def is_running(state: VMState) -> bool:
    try:
        cmdline = Path(f"/proc/{state.pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"qemu-system" in cmdline and state.workdir.encode() in cmdline


def list_states() -> list[VMState]:
    states = []
    for path in sorted(vms_root().glob("*/state.json")):
        with contextlib.suppress(ValueError, TypeError):
            states.append(VMState(**json.loads(path.read_text())))
    return states


def destroy(name: str) -> bool:
    """Kill a detached VM and remove its directory. True if a QEMU was killed."""
    state = load_state(name)
    killed = kill_pid(state.pid, state.workdir)
    shutil.rmtree(state.workdir, ignore_errors=True)
    return killed
