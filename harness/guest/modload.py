"""Load and unload a kernel module and prove it, on a host or inside a guest.

Proof of a load: insmod/modprobe exits 0, the kernel's "add" uevent for the
module arrives (pyudev netlink monitor, subsystem "module") within a deadline,
and, when asked, the filesystem shows up in /proc/filesystems. Around it we
record the dmesg lines the load produced (/dev/kmsg from a saved position),
/proc/sys/kernel/tainted before and after (decoded), /sys/module/NAME/version
and /sys/fs/NAME/config. An unload is proved by rmmod exiting 0 and the
"remove" uevent arriving.

A failure of the module (vermagic mismatch, unknown symbol, signature policy,
missing file) is a result with status "load-failed", never a traceback. A
machine that cannot load modules at all (not root, no module support, no
/lib/modules for modprobe, no pyudev) gives status "error".

Part of the guest package: uploaded into guests with its two shared modules
(harness/guest/kmsg.py, harness/guest/records.py) and run there with the
guest's python3, so standard library plus pyudev only, Python 3.9+. The host's
`kmod load` runs it the same way, as a program, never imports it.

    python3 -m harness.guest.modload load PATH.ko [PARAM=VALUE ...] [--expect-fs aufs] [--json]
    python3 -m harness.guest.modload load NAME [PARAM=VALUE ...]        # modprobe NAME
    python3 -m harness.guest.modload unload NAME [--expect-fs aufs] [--json]

Exit status: 0 loaded/unloaded, 1 load-failed/unload-failed, 2 error.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.guest.kmsg import KmsgReader, Taint, decode_taint
from harness.guest.records import (
    ERROR,
    KO_SUFFIXES,
    LOAD_FAILED,
    LOADED,
    UNLOAD_FAILED,
    UNLOADED,
    CommandRun,
    LoadResult,
    ModuleResult,
    UnloadResult,
    is_ko_path,
    summary,
)

log = logging.getLogger("harness.guest.modload")

MAX_DMESG_LINES = 400


class LoadError(Exception):
    """The machine cannot run the operation at all: becomes status "error"."""


# ------------------------------------------------------------ the boundaries

Runner = Callable[[Sequence[str], float], CommandRun]


def run_command(argv: Sequence[str], timeout: float) -> CommandRun:
    """Run argv (never a shell) within `timeout` seconds, in its own process group."""
    args = list(argv)
    log.debug("run: %s", args)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise LoadError(f"{args[0]} not found: install kmod") from exc
    try:
        out, err = proc.communicate(timeout=max(timeout, 0.001))
    except subprocess.TimeoutExpired as exc:
        _kill_group(proc)
        raise LoadError(f"{' '.join(args)[:160]}: still running after {timeout:.0f}s") from exc
    return CommandRun(args, proc.returncode, out, err, round(time.monotonic() - start, 3))


def _kill_group(proc: subprocess.Popen[str]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=3)
            return
        except subprocess.TimeoutExpired:
            continue
    # A process stuck in the kernel (module init that never returns) ignores
    # SIGKILL; leave it rather than hang the caller.
    log.warning("pid %d did not die (stuck in the kernel?)", proc.pid)


@dataclass
class Uevent:
    action: str
    subsystem: str
    name: str


class UeventSource(Protocol):
    def poll(self, timeout: float) -> Uevent | None:
        """The next uevent, or None when `timeout` seconds pass without one."""

    def close(self) -> None: ...


class PyudevUevents:
    """Module uevents from netlink. source "kernel" sees the kernel's own
    events and does not need udevd to be running; "udev" sees them after udevd."""

    def __init__(self, source: str = "kernel") -> None:
        try:
            import pyudev
        except ImportError as exc:
            raise LoadError("pyudev is not installed (Debian: python3-pyudev)") from exc
        try:
            self._monitor: Any = pyudev.Monitor.from_netlink(pyudev.Context(), source=source)
            self._monitor.filter_by("module")
            self._monitor.start()
        except OSError as exc:
            raise LoadError(f"cannot open a {source} uevent monitor: {exc}") from exc

    def poll(self, timeout: float) -> Uevent | None:
        try:
            dev = self._monitor.poll(timeout=max(timeout, 0.0))
        except OSError as exc:  # ENOBUFS: events were dropped
            log.warning("uevent monitor: %s", exc)
            return None
        if dev is None:
            return None
        return Uevent(str(dev.action or ""), str(dev.subsystem or ""), str(dev.sys_name))

    def close(self) -> None:
        self._monitor = None


UeventFactory = Callable[[], UeventSource]


def _is_root() -> bool:
    return os.geteuid() == 0


@dataclass
class System:
    """Everything load/unload touch on the machine, injectable for tests."""

    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    kmsg: Path = Path("/dev/kmsg")
    lib_modules: Path = Path("/lib/modules")
    release: str = field(default_factory=lambda: os.uname().release)
    runner: Runner = run_command
    uevents: UeventFactory = PyudevUevents
    is_root: Callable[[], bool] = _is_root

    # -- readers; each returns None/empty when the file is absent

    def read(self, path: Path) -> str | None:
        try:
            return path.read_text(errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            return None

    def taint(self) -> Taint | None:
        text = self.read(self.proc / "sys/kernel/tainted")
        return decode_taint(int(text.strip())) if text and text.strip().isdigit() else None

    def loaded_modules(self) -> set[str]:
        text = self.read(self.proc / "modules") or ""
        return {line.split()[0] for line in text.splitlines() if line.strip()}

    def filesystems(self) -> set[str]:
        text = self.read(self.proc / "filesystems") or ""
        return {line.split()[-1] for line in text.splitlines() if line.strip()}

    def module_version(self, name: str) -> str | None:
        text = self.read(self.sys / "module" / name / "version")
        return text.strip() if text is not None else None

    def fs_config(self, fs: str) -> dict[str, str] | None:
        text = self.read(self.sys / "fs" / fs / "config")
        if text is None:
            return None
        pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
        return {k.strip(): v.strip() for k, v in pairs}

    def is_builtin(self, name: str) -> bool:
        """Built in: /sys/module/NAME without being loaded, or in modules.builtin."""
        if (self.sys / "module" / name).is_dir() and name not in self.loaded_modules():
            return True
        text = self.read(self.lib_modules / self.release / "modules.builtin") or ""
        return any(module_name_from_path(line.strip()) == name for line in text.splitlines())

    def preflight(self, modprobe: bool) -> None:
        """Raise LoadError when this machine cannot load modules at all."""
        if not self.is_root():
            raise LoadError("loading kernel modules needs root")
        if not (self.proc / "modules").exists():
            raise LoadError(
                f"kernel {self.release} has no loadable module support (no /proc/modules)"
            )
        disabled = (self.read(self.proc / "sys/kernel/modules_disabled") or "0").strip()
        if disabled == "1":
            raise LoadError("module loading is disabled (kernel.modules_disabled=1)")
        if modprobe and not (self.lib_modules / self.release).is_dir():
            raise LoadError(
                f"no {self.lib_modules / self.release}: modprobe has no modules for "
                f"kernel {self.release}"
            )


# ----------------------------------------------------------------- operations


class _Clock:
    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.seconds = seconds
        self.end = self.start + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def elapsed(self) -> float:
        return round(time.monotonic() - self.start, 3)


def wait_for_uevent(
    source: UeventSource, action: str, module: str, clock: _Clock, since: float
) -> float | None:
    """Seconds from `since` (monotonic) until the `action` uevent for `module`
    arrives, or None when the clock runs out first."""
    while True:
        event = source.poll(clock.remaining())
        if event is not None:
            log.debug("uevent %s %s %s", event.action, event.subsystem, event.name)
            if event.subsystem == "module" and event.action == action and event.name == module:
                return round(time.monotonic() - since, 3)
        if clock.remaining() <= 0:
            return None


def module_name_from_path(path: str) -> str:
    base = os.path.basename(path)
    for suffix in KO_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def parse_modinfo(text: str) -> dict[str, str]:
    """`modinfo` output to a dict. Repeated keys (alias, parm) are joined by
    newlines; the multi-line signature blob is left out."""
    info: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line[:1].isspace():  # continuation of the previous key's value
            if key in info:
                info[key] += line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep or " " in key:
            key = ""
            continue
        value = value.strip()
        info[key] = f"{info[key]}\n{value}" if key in info else value
    info.pop("signature", None)
    return info


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _explain(cmd: CommandRun, dmesg: list[str], module: str) -> str:
    """One line: what the tool said and the first kernel line about the module."""
    said = _last_line(cmd.stderr) or _last_line(cmd.stdout) or "no output"
    reason = f"{os.path.basename(cmd.argv[0])} exited {cmd.returncode}: {said}"
    hint = next((line for line in dmesg if f"{module}:" in line), None)
    if hint is None and dmesg:
        hint = dmesg[-1]
    if hint:
        reason += f"; dmesg: {hint.split('] ', 1)[-1]}"
    return reason


@dataclass
class _Observed:
    cmd: CommandRun
    uevent_seconds: float | None
    dmesg: list[str]
    taint_after: Taint | None


def _run_observed(
    system: System, argv: list[str], action: str, module: str, clock: _Clock
) -> _Observed:
    """Run argv with the uevent monitor and the kmsg reader already listening."""
    source = system.uevents()
    kmsg = KmsgReader(system.kmsg)
    try:
        started = time.monotonic()
        cmd = system.runner(argv, clock.remaining())
        waited = None
        if cmd.returncode == 0:
            waited = wait_for_uevent(source, action, module, clock, started)
        lines = kmsg.read_new()
    finally:
        kmsg.close()
        source.close()
    if kmsg.error:
        lines.insert(0, f"[modload: {kmsg.error}]")
    if len(lines) > MAX_DMESG_LINES:
        lines = [*lines[:MAX_DMESG_LINES], f"[modload: {len(lines) - MAX_DMESG_LINES} more]"]
    return _Observed(cmd, waited, lines, system.taint())


def _record(result: ModuleResult, seen: _Observed) -> None:
    result.commands.append(seen.cmd)
    result.dmesg = seen.dmesg
    result.taint_after = seen.taint_after
    result.uevent_seen = seen.uevent_seconds is not None
    result.uevent_seconds = seen.uevent_seconds
    if result.taint_before is not None and seen.taint_after is not None:
        added = seen.taint_after.value & ~result.taint_before.value
        result.taint_added = decode_taint(added).names


def _check_vermagic(result: LoadResult, release: str) -> str | None:
    """A one-line reason when the module was built for another kernel."""
    if not result.vermagic:
        return f"{result.target}: modinfo shows no vermagic (not a module for this kernel?)"
    built_for = result.vermagic.split()[0]
    if built_for != release:
        return (
            f"vermagic mismatch: {result.module} was built for {built_for}, "
            f"this machine runs {release}"
        )
    return None


def load_module(
    target: str,
    params: Sequence[str] = (),
    *,
    expect_fs: str | None = None,
    timeout: float = 30.0,
    system: System | None = None,
) -> LoadResult:
    """insmod a .ko (target has a "/" or a .ko suffix) or modprobe a name, and prove it."""
    system = system or System()
    clock = _Clock(timeout)
    use_insmod = is_ko_path(target)
    result = LoadResult(
        target=target,
        params=list(params),
        method="insmod" if use_insmod else "modprobe",
        kernel_release=system.release,
        expect_fs=expect_fs,
        module=module_name_from_path(target) if use_insmod else target.replace("-", "_"),
    )
    _settle(result, lambda: _load(result, system, clock), clock)
    return result


def _settle(result: ModuleResult, step: Callable[[], None], clock: _Clock) -> None:
    """Run `step`; whatever it raises, `result` ends with a status and a reason."""
    try:
        step()
    except LoadError as exc:
        result.status, result.reason = ERROR, str(exc)
    except Exception as exc:  # a bug here must still give the caller a result
        log.exception("internal error")
        result.status, result.reason = ERROR, f"internal error in modload: {exc!r}"
    result.seconds = clock.elapsed()
    log.info("%s: %s", result.status, result.reason)


def _load(result: LoadResult, system: System, clock: _Clock) -> None:
    system.preflight(modprobe=result.method == "modprobe")
    failure = _identify(result, system, clock)
    if failure is None:
        _check_not_loaded(result, system)
        result.taint_before = system.taint()
        argv = [result.method, result.target, *result.params]  # insmod PATH / modprobe NAME
        seen = _run_observed(system, argv, "add", result.module, clock)
        _record(result, seen)
        if seen.cmd.returncode != 0:
            failure = _explain(seen.cmd, seen.dmesg, result.module)
        else:
            failure = _inspect_loaded(result, system, clock)
    if failure is None:
        result.status, result.reason = LOADED, _loaded_reason(result)
    else:
        result.status, result.reason = LOAD_FAILED, failure


def _identify(result: LoadResult, system: System, clock: _Clock) -> str | None:
    """modinfo: the module's real name and vermagic. A reason when a .ko is
    missing, unreadable or built for another kernel."""
    if result.method == "insmod" and not Path(result.target).is_file():
        return f"{result.target}: no such file"
    info = system.runner(["modinfo", result.target], clock.remaining())
    # The parsed fields go to result.modinfo; keep stdout only when it failed.
    result.commands.append(info if info.returncode else dataclasses.replace(info, stdout=""))
    if info.returncode == 0:
        result.modinfo = parse_modinfo(info.stdout)
        result.vermagic = result.modinfo.get("vermagic")
        result.module = result.modinfo.get("name") or result.module
    if result.method != "insmod":
        return None  # modprobe itself reports an unknown name
    if info.returncode != 0:
        return f"modinfo cannot read {result.target}: {_last_line(info.stderr)}"
    return _check_vermagic(result, system.release)


def _check_not_loaded(result: LoadResult, system: System) -> None:
    """Refuse a load that could not prove anything; note what may explain a failure."""
    name = result.module
    loaded = system.loaded_modules()
    if name in loaded:
        raise LoadError(f"module {name} is already loaded: unload it first")
    if system.is_builtin(name):
        raise LoadError(f"{name} is built into kernel {system.release}: nothing to load")
    missing = sorted({d for d in result.modinfo.get("depends", "").split(",") if d} - loaded)
    if result.method == "insmod" and missing:
        result.notes.append(
            f"depends on {', '.join(missing)}, not loaded: insmod does not load dependencies"
        )
    if result.expect_fs and result.expect_fs in system.filesystems():
        result.notes.append(f"filesystem {result.expect_fs} was registered before the load")


def _inspect_loaded(result: LoadResult, system: System, clock: _Clock) -> str | None:
    """After a successful insmod: version, fs, config; a reason when proof is missing."""
    name, fs = result.module, result.expect_fs
    result.version = system.module_version(name)
    result.fs_config = system.fs_config(fs or name)
    if fs:
        result.fs_registered = fs in system.filesystems()
    if not result.uevent_seen:
        present = "present" if (system.sys / "module" / name).is_dir() else "absent"
        return (
            f"{result.method} exited 0 but no 'add' uevent for module {name} arrived within "
            f"{clock.seconds:g}s (/sys/module/{name} {present})"
        )
    if fs and not result.fs_registered:
        return f"module {name} loaded but filesystem {fs} is not in /proc/filesystems"
    return None


def _loaded_reason(result: LoadResult) -> str:
    parts = [f"{result.module} {result.version or ''}".strip() + " loaded"]
    parts.append(f"add uevent after {result.uevent_seconds:.2f}s")
    if result.expect_fs:
        parts.append(f"filesystem {result.expect_fs} registered")
    if result.taint_added:
        parts.append("taint added: " + ", ".join(result.taint_added))
    return "; ".join(parts)


def unload_module(
    name: str,
    *,
    expect_fs: str | None = None,
    timeout: float = 30.0,
    modprobe: bool = False,
    system: System | None = None,
) -> UnloadResult:
    """rmmod NAME (or modprobe -r NAME) and prove the module left."""
    system = system or System()
    clock = _Clock(timeout)
    result = UnloadResult(
        module=name.replace("-", "_"),
        method="modprobe -r" if modprobe else "rmmod",
        kernel_release=system.release,
        expect_fs=expect_fs,
    )
    _settle(result, lambda: _unload(result, system, clock), clock)
    return result


def _unload(result: UnloadResult, system: System, clock: _Clock) -> None:
    system.preflight(modprobe=result.method != "rmmod")
    name = result.module
    if name not in system.loaded_modules():
        result.status, result.reason = UNLOAD_FAILED, f"module {name} is not loaded"
        return
    result.taint_before = system.taint()
    argv = ["rmmod", name] if result.method == "rmmod" else ["modprobe", "-r", name]
    seen = _run_observed(system, argv, "remove", name, clock)
    _record(result, seen)
    if seen.cmd.returncode != 0:
        result.status, result.reason = UNLOAD_FAILED, _explain(seen.cmd, seen.dmesg, name)
        return
    if result.expect_fs:
        result.fs_registered = result.expect_fs in system.filesystems()
    if not result.uevent_seen:
        result.status = UNLOAD_FAILED
        result.reason = (
            f"{result.method} exited 0 but no 'remove' uevent for module {name} arrived "
            f"within {clock.seconds:g}s"
        )
    elif name in system.loaded_modules():
        result.status, result.reason = UNLOAD_FAILED, f"{name} is still in /proc/modules"
    elif result.fs_registered:
        result.status = UNLOAD_FAILED
        result.reason = f"filesystem {result.expect_fs} still registered after unloading {name}"
    else:
        result.status = UNLOADED
        result.reason = f"{name} unloaded; remove uevent after {result.uevent_seconds:.2f}s"


# ------------------------------------------------------------------ rendering


# ------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="load.py", description="Load/unload a kernel module and prove it."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="insmod PATH.ko or modprobe NAME")
    load.add_argument("target", help="a .ko path (insmod) or a module name (modprobe)")
    load.add_argument("params", nargs="*", metavar="PARAM=VALUE", help="module parameters")
    unload = sub.add_parser("unload", help="rmmod NAME")
    unload.add_argument("target", metavar="NAME")
    unload.add_argument("--modprobe", action="store_true", help="use modprobe -r, not rmmod")
    for p in (load, unload):
        p.add_argument("--expect-fs", metavar="FS", help="filesystem the module registers")
        p.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
        p.add_argument(
            "--uevent-source",
            choices=("kernel", "udev"),
            default="kernel",
            help="netlink source for uevents (default kernel: needs no udevd)",
        )
        p.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: Sequence[str] | None = None, system: System | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if system is None:
        system = System(uevents=functools.partial(PyudevUevents, args.uevent_source))
    result: ModuleResult
    if args.command == "load":
        result = load_module(
            args.target,
            args.params,
            expect_fs=args.expect_fs,
            timeout=args.timeout,
            system=system,
        )
    else:
        result = unload_module(
            args.target,
            expect_fs=args.expect_fs,
            timeout=args.timeout,
            modprobe=args.modprobe,
            system=system,
        )
    print(result.to_json() if args.json else summary(result))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
