"""QMP, through the qemu.qmp library: what SSH cannot do once the guest stops answering.

Every QEMU the harness starts listens for QMP on `qmp.sock` in its state
directory (LaunchSpec.qmp_socket). Three uses:

- sysrq(): press Alt+SysRq+KEY on the guest's keyboard (send-key), so the
  guest kernel dumps blocked tasks (w), all tasks (t) or registers (p) onto the
  serial console; hang_evidence() does that for a guest that no longer answers
  SSH and returns the new console text. It needs a guest with a PS/2 keyboard
  driver (i8042 + atkbd: Debian's kernels have them) and sysrq enabled for the
  keyboard (Machine boots kernels with `sysrq_always_enabled`).
- quit_qemu(): an orderly `quit` before the SIGKILL of QemuProcess.kill().
- run_state(): whether QEMU stopped the guest itself, and on which disk error
  (query-status, query-block): a guest whose disk overlay met ENOSPC on the host
  is paused (werror=enospc, QEMU's default), which from outside looks like a hang.

Each call connects, does one thing and disconnects, within a Deadline;
failures are QmpError (an InfraError) naming the socket and the command.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient, QMPError

from harness.core import paths
from harness.core.deadline import Deadline
from harness.core.errors import InfraError

log = logging.getLogger(__name__)

SYSRQ_KEYS = {"w": "blocked tasks", "t": "all tasks", "p": "registers", "l": "CPU backtraces"}


class QmpError(InfraError):
    """QMP did not answer or refused a command."""


async def _execute(socket: Path, commands: Sequence[tuple[str, dict[str, object]]]) -> list[object]:
    client = QMPClient("aufs-harness")
    answers: list[object] = []
    try:
        await client.connect(str(socket))
        for cmd, arguments in commands:
            answers.append(await client.execute(cmd, arguments or None))
    finally:
        await client.disconnect()
    return answers


def execute(
    socket: Path, commands: Sequence[tuple[str, dict[str, object]]], deadline: Deadline
) -> list[object]:
    """Run QMP `commands` (name, arguments) in order on `socket` within `deadline`;
    their answers, in order ([] after `quit`).

    Raises QmpError when the socket is missing, QEMU does not answer in time or
    a command fails.
    """
    names = ", ".join(c for c, _ in commands)
    if not socket.exists():
        raise QmpError(f"QMP socket {socket} does not exist (QEMU gone?): cannot send {names}")
    try:
        return asyncio.run(
            asyncio.wait_for(_execute(socket, commands), deadline.remaining() or 0.1)
        )
    except TimeoutError as exc:
        raise QmpError(
            f"QMP {socket}: no answer to {names} within {deadline.seconds:.0f}s"
        ) from exc
    except EOFError as exc:  # QEMU closed the monitor: after `quit`, that is success
        if names != "quit":
            raise QmpError(f"QMP {socket}: QEMU closed the monitor during {names}") from exc
        return []
    except (QMPError, OSError) as exc:
        raise QmpError(f"QMP {socket}: {names} failed: {exc}") from exc


@dataclass(frozen=True)
class RunState:
    """QEMU's view of the guest (QMP query-status, query-block).

    status: RunState of qapi/run-state.json ("running", "paused", "io-error",
    "internal-error", "shutdown", ...); io_errors: device -> io-status ("nospace"
    or "failed") for each disk whose I/O stopped the guest."""

    status: str
    running: bool
    io_errors: dict[str, str] = field(default_factory=dict)

    @property
    def stopped_by_qemu(self) -> bool:
        """The guest is not running because of the host, not of anything in it."""
        return not self.running and self.status in ("io-error", "internal-error")


def run_state(socket: Path, deadline: Deadline) -> RunState:
    """The guest's run state, with the disks whose I/O error stopped it.

    Raises QmpError when QEMU's monitor does not answer."""
    status, block = execute(socket, [("query-status", {}), ("query-block", {})], deadline)
    if not isinstance(status, dict) or not isinstance(block, list):
        raise QmpError(f"QMP {socket}: unexpected answers {status!r}, {block!r}")
    return parse_run_state(status, block)


def parse_run_state(status: dict[str, Any], block: list[dict[str, Any]]) -> RunState:
    """RunState from the answers to query-status and query-block (qapi/block.json:
    BlockInfo's io-status is "ok", "failed" or "nospace")."""
    errors = {
        str(b.get("device") or b.get("qdev") or "?"): str(b["io-status"])
        for b in block
        if b.get("io-status") not in (None, "ok")
    }
    return RunState(str(status.get("status", "")), bool(status.get("running")), errors)


def stop_reason(state: RunState, disk: Path) -> str:
    """One line for a guest QEMU stopped (state.stopped_by_qemu): which disk, what
    its I/O met, where the overlay `disk` lives and the fix; "" for any other state."""
    if not state.stopped_by_qemu:
        return ""
    if state.status != "io-error":
        return f"QEMU stopped the guest ({state.status}): see console.log and QEMU's log"
    errors = ", ".join(f"{dev}: {io}" for dev, io in sorted(state.io_errors.items())) or "?"
    if "nospace" in state.io_errors.values():
        return f"QEMU paused the guest on a disk error ({errors}): " + paths.disk_full(
            disk, "no space left", kept=False
        )
    return (
        f"QEMU paused the guest on a disk error ({errors}) writing {disk}: "
        "check the host's disk and its kernel log (dmesg)"
    )


def sysrq_command(key: str) -> tuple[str, dict[str, object]]:
    """The send-key command for Alt+SysRq+`key` (qcodes; `key` one letter)."""
    keys = [{"type": "qcode", "data": k} for k in ("alt", "sysrq", key)]
    return "send-key", {"keys": keys, "hold-time": 200}


def sysrq(socket: Path, keys: str, deadline: Deadline) -> None:
    """Press Alt+SysRq+k for each k in `keys` (e.g. "wt"); errors are QmpError."""
    execute(socket, [sysrq_command(k) for k in keys], deadline)


def quit_qemu(socket: Path, deadline: Deadline) -> None:
    """Ask QEMU to exit (QMP `quit`); the caller still kills what is left."""
    execute(socket, [("quit", {})], deadline)


def hang_evidence(
    socket: Path, console_log: Path, out: Path, deadline: Deadline, keys: str = "wl"
) -> str:
    """For a guest that stopped answering SSH: sysrq `keys` through QMP, wait for
    the console to settle, write what the console gained to `out` and return it
    ("" if the kernel printed nothing, e.g. sysrq disabled or a dead kernel).

    Raises QmpError when QEMU's monitor does not answer.
    """
    before = console_log.stat().st_size if console_log.exists() else 0
    sysrq(socket, keys, deadline.sub(15, "sysrq through QMP"))
    settle = deadline.sub(10, "console after sysrq")
    size, quiet_since = before, time.monotonic()
    while not settle.expired() and time.monotonic() - quiet_since < 2.0:
        time.sleep(0.2)
        now = console_log.stat().st_size if console_log.exists() else 0
        if now != size:
            size, quiet_since = now, time.monotonic()
    with open(console_log, "rb") as f:
        f.seek(before)
        text = f.read().decode(errors="replace")
    wanted = ", ".join(SYSRQ_KEYS.get(k, k) for k in keys)
    header = f"# sysrq {keys} ({wanted}) sent through QMP; console lines that followed:\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + text)
    log.info("hang evidence: %d console bytes after sysrq %s (%s)", len(text), keys, out)
    return text
