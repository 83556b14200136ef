"""VM hosts for a matrix: an inventory of machines reached over SSH, and a cell
run on one of them.

    [[host]]
    name = "rack1"
    address = "10.0.0.5"            # port 22, user root unless given
    key = "~/.ssh/aufs-harness"     # key auth only
    host_key = "ssh-ed25519 AAAA"   # pinned: any other key is refused
    cores = 8
    memory_mb = 16384
    harness = ["/srv/aufs-harness/.venv/bin/aufs-harness"]  # the command there
    workdir = "/var/tmp/aufs-harness-cells"                  # its results go here

A host runs a cell with the harness itself: `aufs-harness run --results DIR`
with the cell's options, so it builds (or finds in its artifact store by
content key) the kernel, boots QEMU next to itself and runs the suite's
controller there, with every fresh-VM and hang rule of `run`. The cell's
report.json and its directory (console logs, evidence) then come back over SFTP
into the matrix's results directory. The connection is paramiko's (vm.ssh.Guest:
host key pinned, a dropped connection is an InfraError), so a host that drops
mid-cell is an InfraError for that cell, never a hang.
"""

from __future__ import annotations

import logging
import posixpath
import shlex
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from harness.core.deadline import Deadline
from harness.core.errors import HarnessError, InfraError, UserError
from vm.ssh import Endpoint, Guest

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0  # a host's sshd answers within this or the host is down
FETCH_TIMEOUT = 300.0  # copying one cell's results back
MEMORY_OVERHEAD_MB = 512  # per VM on a host: QEMU itself, the harness, the controller
_KEYS = {"name", "address", "port", "user", "key", "host_key", "cores", "memory_mb", "harness",
         "workdir"}  # fmt: skip


@dataclass(frozen=True)
class Host:
    """One VM host: where it is, how to log in, what it can carry."""

    name: str
    address: str
    key: Path
    host_key: str  # "ssh-ed25519 AAAA...": pinned
    cores: int
    memory_mb: int
    harness: tuple[str, ...]  # the aufs-harness command on that host
    workdir: str  # where the cells' results go on that host
    port: int = 22
    user: str = "root"

    def slots(self, smp: int, memory_mb: int) -> int:
        """How many VMs of `smp` CPUs and `memory_mb` fit at once (0: none)."""
        return min(self.cores // max(1, smp), self.memory_mb // (memory_mb + MEMORY_OVERHEAD_MB))

    def endpoint(self) -> Endpoint:
        return Endpoint(self.address, self.port, self.user, self.key, self.host_key)


def load_inventory(path: Path) -> tuple[Host, ...]:
    """The hosts of an inventory file. Raises UserError, one line, naming the
    file, the host and the key, for any problem."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"{path}: cannot read the host inventory: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from exc
    raw_hosts = data.get("host")
    if set(data) != {"host"} or not isinstance(raw_hosts, list) or not raw_hosts:
        raise UserError(f"{path}: give one [[host]] table per host, and nothing else")
    hosts = tuple(_host(path, i, raw) for i, raw in enumerate(raw_hosts))
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: host names must be unique: {', '.join(names)}")
    return hosts


def _host(path: Path, index: int, raw: dict[str, Any]) -> Host:
    where = f"{path}: host {raw.get('name', f'[{index}]')}"
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_KEYS))}")
    missing = sorted({"name", "address", "key", "host_key", "cores", "memory_mb", "harness",
                      "workdir"} - set(raw))  # fmt: skip
    if missing:
        raise UserError(f"{where}: {missing[0]} is missing")
    for key in ("cores", "memory_mb", "port"):
        value = raw.get(key, 22)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{where}: {key}: {value!r} is not a positive integer")
    if raw.get("port", 22) > 65535:
        raise UserError(f"{where}: port: {raw['port']} is not a TCP port: give 1 to 65535")
    for key in ("name", "address", "user"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key].strip()):
            raise UserError(f"{where}: {key}: {raw[key]!r} is not a non-empty string")
    harness = raw["harness"]
    if not isinstance(harness, list) or not harness or not all(isinstance(a, str) for a in harness):
        raise UserError(f"{where}: harness: give the command as a list of strings (argv)")
    if len(str(raw["host_key"]).split()) < 2:
        raise UserError(f"{where}: host_key: give the key as 'TYPE BASE64' (a known_hosts line)")
    if not str(raw["workdir"]).startswith("/"):
        raise UserError(f"{where}: workdir: {raw['workdir']!r} is not an absolute path")
    key_path = Path(str(raw["key"])).expanduser()
    if not key_path.is_file():
        what = "is not a file" if key_path.exists() else "does not exist"
        raise UserError(f"{where}: key: {key_path} {what}: give the SSH private key's path")
    return Host(
        name=str(raw["name"]), address=str(raw["address"]), key=key_path,
        host_key=str(raw["host_key"]), cores=raw["cores"], memory_mb=raw["memory_mb"],
        harness=tuple(harness), workdir=str(raw["workdir"]), port=raw.get("port", 22),
        user=str(raw.get("user", "root")),
    )  # fmt: skip


@dataclass(frozen=True)
class RemoteRun:
    """What a host's `aufs-harness run` left: its exit status, its output, and
    the results directory it wrote (None when it wrote none)."""

    status: int
    output: str  # stderr then stdout, for the evidence of a cell that went wrong
    results: str | None  # the run's <workdir>/.../<timestamp> on the host


class HostSession:
    """One paramiko connection to a host: run a command within a deadline,
    copy a results tree back. Every failure of the connection is an InfraError."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._guest = Guest(host.endpoint())

    def connect(self, deadline: Deadline) -> None:
        try:
            self._guest.wait_ready(deadline.sub(CONNECT_TIMEOUT, f"connecting to {self.host.name}"))
        except HarnessError as exc:
            raise InfraError(f"host {self.host.name} does not answer SSH: {exc}") from exc

    def close(self) -> None:
        self._guest.close()

    def run_harness(self, args: list[str], results_base: str, deadline: Deadline) -> RemoteRun:
        """`<harness> run --results results_base ARGS` on the host; the results
        directory it wrote is results_base/latest resolved."""
        argv = [*self.host.harness, "run", "--results", results_base, "--tied-to-stdin", *args]
        log.info("%s: %s", self.host.name, shlex.join(argv))
        # stdin held open: if this connection drops, the run there ends and its VMs with it
        result = self._guest.run(argv, deadline, hold_stdin=True)
        found = self._guest.run(["readlink", "-e", f"{results_base}/latest"], deadline)
        out = (result.stderr + result.stdout).strip()
        return RemoteRun(result.status, out, found.stdout.strip() or None)

    def fetch_tree(self, remote: str, local: Path, deadline: Deadline) -> int:
        """Copy the directory `remote` on the host into `local`; the file count."""
        sftp = self._guest.client.open_sftp()
        channel = sftp.get_channel()
        if channel is not None:
            channel.settimeout(max(1.0, deadline.remaining()))
        try:
            return _get_tree(sftp, remote, local, deadline)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise InfraError(f"copying {remote} back from {self.host.name}: {exc}") from exc
        finally:
            sftp.close()

    def read_text(self, remote: str) -> str:
        sftp = self._guest.client.open_sftp()
        try:
            with sftp.open(remote) as f:
                return bytes(f.read()).decode(errors="replace")
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise InfraError(f"reading {remote} on {self.host.name}: {exc}") from exc
        finally:
            sftp.close()


def _get_tree(sftp: paramiko.SFTPClient, remote: str, local: Path, deadline: Deadline) -> int:
    local.mkdir(parents=True, exist_ok=True)
    count = 0
    for entry in sftp.listdir_attr(remote):
        deadline.check(f"copying {remote} back")
        source = posixpath.join(remote, entry.filename)
        mode = entry.st_mode or 0
        if stat.S_ISDIR(mode):
            count += _get_tree(sftp, source, local / entry.filename, deadline)
        elif stat.S_ISREG(mode):
            sftp.get(source, str(local / entry.filename))
            count += 1
    return count


def jump_for(host: Host, workdir: Path) -> dict[str, object]:
    """The `jump` of vm/templates/ssh_config.j2 for a guest on `host`: its
    known_hosts (the pinned key) written into `workdir`, so OpenSSH (xdist's
    gateway) refuses any other key, as paramiko does."""
    known = workdir / f"known_hosts.{host.name}"
    keytype, b64 = host.host_key.split()[:2]
    address = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
    known.write_text(f"{address} {keytype} {b64}\n")
    return {"name": host.name, "address": host.address, "port": host.port, "user": host.user,
            "identity": host.key, "known_hosts": known}  # fmt: skip
