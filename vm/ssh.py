"""Drive a guest over SSH with paramiko: wait until ready, run, upload, download.

The host key is pinned (RejectPolicy against a known_hosts entry we rendered
from the key we generated), so an unknown key is refused, never accepted.
"""

from __future__ import annotations

import logging
import posixpath
import shlex
import socket
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from harness.core.deadline import Deadline
from harness.core.errors import DeadlineExceeded, InfraError

log = logging.getLogger(__name__)
# paramiko logs every failed attempt with a traceback; we report failures ourselves.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)

BANNER_PROBE = 3.0  # seconds: sshd answers a connection within this even under TCG


@dataclass(frozen=True)
class Endpoint:
    """Everything needed to reach one guest: plain data."""

    host: str
    port: int
    user: str
    key: Path
    host_key: str  # "ssh-ed25519 AAAA..."


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == 0


class CommandFailed(InfraError):
    def __init__(self, result: Result) -> None:
        last = (result.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        super().__init__(
            f"in the guest, {shlex.join(result.argv)[:160]} exited {result.status}: {last}"
        )
        self.result = result


class Guest:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._client: paramiko.SSHClient | None = None

    # -- connection -------------------------------------------------------
    def _new_client(self, timeout: float, sock: socket.socket | None = None) -> paramiko.SSHClient:
        ep = self.endpoint
        client = paramiko.SSHClient()
        keytype, b64 = ep.host_key.split()[:2]
        where = ep.host if ep.port == 22 else f"[{ep.host}]:{ep.port}"  # as paramiko looks it up
        entry = paramiko.hostkeys.HostKeyEntry.from_line(f"{where} {keytype} {b64}")
        if entry is None:
            raise InfraError(f"cannot parse the pinned host key {ep.host_key[:40]}...")
        client.get_host_keys().add(entry.hostnames[0], keytype, entry.key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            ep.host,
            port=ep.port,
            username=ep.user,
            key_filename=str(ep.key),
            look_for_keys=False,
            allow_agent=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            sock=sock,
        )
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(5)
        return client

    def _banner_socket(self, timeout: float) -> socket.socket | None:
        """A connected socket once sshd in the guest has sent its banner, else None.

        QEMU's user networking accepts the host side of a forwarded connection
        before anything listens in the guest, so a plain connect succeeds and
        then stalls. Peeking at the banner with a short timeout tells the truth
        cheaply; the socket, banner unread, then goes to paramiko, so the guest's
        sshd (slow to fork under TCG) serves one connection, not two.
        """
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection((self.endpoint.host, self.endpoint.port), timeout)
            sock.settimeout(timeout)
            if sock.recv(4, socket.MSG_PEEK).startswith(b"SSH-"):
                return sock
        except OSError:
            pass
        if sock is not None:
            sock.close()
        return None

    def wait_ready(self, deadline: Deadline, alive: object = None) -> None:
        """Connect, retrying until the guest's sshd answers or the deadline passes.

        `alive`, when given, is a callable returning False once the VM died, so a
        dead VM fails at once instead of after the whole deadline.
        """
        last: Exception | None = None
        while not deadline.expired():
            if callable(alive) and not alive():
                raise InfraError("the VM exited before SSH answered")
            sock = self._banner_socket(min(BANNER_PROBE, max(0.1, deadline.remaining())))
            if sock is None:
                time.sleep(min(0.2, deadline.remaining()))
                continue
            try:
                self._client = self._new_client(min(30.0, max(1.0, deadline.remaining())), sock)
                return  # authenticated: the guest is ready
            except paramiko.BadHostKeyException as exc:
                raise InfraError(
                    f"the guest presented an unexpected host key ({exc.key.get_name()}): "
                    "refusing to connect"
                ) from exc
            except (OSError, paramiko.SSHException, EOFError) as exc:
                last = exc
                self.close()
                sock.close()
                time.sleep(min(0.25, deadline.remaining()))
        raise DeadlineExceeded(
            f"SSH on {self.endpoint.host}:{self.endpoint.port} did not answer within "
            f"{deadline.seconds:.0f}s (last error: {last})"
        )

    @property
    def client(self) -> paramiko.SSHClient:
        if self._client is None:
            raise InfraError("not connected: call wait_ready() first")
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- commands ---------------------------------------------------------
    def run(
        self,
        argv: Sequence[str],
        deadline: Deadline,
        check: bool = False,
        stdin: bytes | None = None,
        hold_stdin: bool = False,
    ) -> Result:
        """Run argv in the guest (quoted for its shell); never hang past `deadline`.
        `hold_stdin`: keep the command's stdin open while it runs (a command that
        ends itself when it closes, procs.tie_to_stdin, then dies with the connection)."""
        command = shlex.join(argv)
        try:
            transport = self.client.get_transport()
            if transport is None or not transport.is_active():
                raise InfraError("SSH connection to the guest is closed")
            chan = transport.open_session(timeout=max(1.0, deadline.remaining()))
            chan.settimeout(0.2)
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall(stdin)
            if not hold_stdin:
                chan.shutdown_write()
            out, err = bytearray(), bytearray()
            while True:
                drained = self._drain(chan, out, err)
                if chan.exit_status_ready() and not drained:
                    self._drain(chan, out, err)
                    break
                if deadline.expired():
                    chan.close()
                    raise DeadlineExceeded(
                        f"in the guest, {command[:120]} still running after "
                        f"{deadline.seconds:.0f}s ({deadline.what})"
                    )
                if transport.is_active() is False:
                    raise InfraError(f"SSH connection dropped while running {command[:120]}")
            status = chan.recv_exit_status()
            chan.close()
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise InfraError(
                f"SSH connection dropped while running {command[:120]}: {exc}"
            ) from exc
        result = Result(
            tuple(argv), status, out.decode(errors="replace"), err.decode(errors="replace")
        )
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    @staticmethod
    def _drain(chan: paramiko.Channel, out: bytearray, err: bytearray) -> bool:
        got = False
        while chan.recv_ready():
            out += chan.recv(65536)
            got = True
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
            got = True
        if not got:
            try:
                data = chan.recv(65536)
            except TimeoutError:
                return False
            if data:
                out += data
                return True
        return got

    # -- files ------------------------------------------------------------
    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        sftp = self.client.open_sftp()
        try:
            sftp.put(str(local), remote)
            if mode is not None:
                sftp.chmod(remote, mode)
        finally:
            sftp.close()

    def put_tree(self, local: Path, remote: str) -> int:
        """Upload a directory tree to `remote` (an absolute guest path, created with
        its parents; caches skipped). Returns the file count.

        Raises InfraError naming the guest path when the guest refuses a write.
        """
        sftp = self.client.open_sftp()
        count = 0
        target = remote
        try:
            _makedirs(sftp, posixpath.dirname(remote.rstrip("/")))
            for path in sorted([local, *local.rglob("*")]):
                if CACHE_DIRS.intersection(path.relative_to(local).parts) or path.suffix == ".pyc":
                    continue
                rel = path.relative_to(local).as_posix()
                target = f"{remote}/{rel}" if path != local else remote
                if path.is_dir():
                    _makedirs(sftp, target)
                else:
                    sftp.put(str(path), target)
                    count += 1
        except OSError as exc:
            raise InfraError(f"cannot upload {local} to the guest: {target}: {exc}") from exc
        finally:
            sftp.close()
        return count

    def get(self, remote: str, local: Path) -> None:
        sftp = self.client.open_sftp()
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
            sftp.get(remote, str(local))
        finally:
            sftp.close()


#: Tool caches in a source tree, never shipped to a guest.
CACHE_DIRS = frozenset({"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"})


def _makedirs(sftp: paramiko.SFTPClient, path: str) -> None:
    """mkdir -p over SFTP: every missing component of an absolute guest path."""
    current = ""
    for part in [p for p in path.split("/") if p]:
        current += "/" + part
        try:
            sftp.mkdir(current)
        except OSError:
            if not stat.S_ISDIR(sftp.stat(current).st_mode or 0):
                raise
