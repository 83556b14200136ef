"""harness/guest/modload.py against a fake kernel: fake /proc, /sys, /dev/kmsg under tmp_path,
a fake runner for insmod/modprobe/rmmod/modinfo and a fake uevent source."""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import guestload
from harness.commands import kmod_load
from harness.core.errors import InfraError, UserError
from harness.guest import modload as kl
from harness.guest.kmsg import decode_taint
from harness.guest.modload import LoadError, System, Uevent, load_module, unload_module
from harness.guest.records import CommandRun, LoadResult, UnloadResult, result_from_json

RELEASE = "5.10.223-aufs"


@dataclass
class FakeModule:
    name: str
    vermagic: str = f"{RELEASE} SMP mod_unload modversions "
    version: str | None = None
    fs: str | None = None
    fs_config: str | None = None
    taint: int = 0
    dmesg: list[str] = field(default_factory=list)
    fail: tuple[int, str] | None = None  # (returncode, stderr) of insmod
    fail_dmesg: list[str] = field(default_factory=list)
    uevent: bool = True
    depends: str = ""


class FakeUevents:
    def __init__(self) -> None:
        self.queue: deque[Uevent] = deque()
        self.opened = 0
        self.closed = 0

    def open(self) -> FakeUevents:
        self.opened += 1
        return self

    def poll(self, timeout: float) -> Uevent | None:
        if self.queue:
            return self.queue.popleft()
        time.sleep(min(timeout, 0.02))
        return None

    def close(self) -> None:
        self.closed += 1


class FakeKernel:
    """Just enough of a kernel and kmod for load.py: files under tmp_path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc = root / "proc"
        self.sys = root / "sys"
        self.kmsg = root / "dev/kmsg"
        (self.proc / "sys/kernel").mkdir(parents=True)
        (self.sys / "module").mkdir(parents=True)
        self.kmsg.parent.mkdir(parents=True)
        (root / "lib/modules" / RELEASE).mkdir(parents=True)
        (self.proc / "modules").write_text("ext4 987136 1 - Live 0x0000000000000000\n")
        (self.proc / "filesystems").write_text("nodev\tsysfs\nnodev\tproc\n\text4\n")
        (self.proc / "sys/kernel/tainted").write_text("0\n")
        self.kmsg.write_text("6,1,1000,-;Linux version 5.10.223\n SUBSYSTEM=x\n")
        self.seq = 2
        self.modules: dict[str, FakeModule] = {}  # by .ko path and by name
        self.uevents = FakeUevents()
        self.calls: list[list[str]] = []
        self.root_user = True

    def system(self) -> System:
        return System(
            proc=self.proc,
            sys=self.sys,
            kmsg=self.kmsg,
            lib_modules=self.root / "lib/modules",
            release=RELEASE,
            runner=self.run,
            uevents=self.uevents.open,
            is_root=lambda: self.root_user,
        )

    def ko(self, mod: FakeModule, filename: str | None = None) -> Path:
        path = self.root / (filename or f"{mod.name}.ko")
        path.write_bytes(b"\x7fELF fake")
        self.modules[str(path)] = mod
        self.modules[mod.name] = mod
        return path

    def log(self, message: str) -> None:
        with self.kmsg.open("a") as f:
            f.write(f"6,{self.seq},{self.seq * 1000},-;{message}\n DEVICE=+module:x\n")
        self.seq += 1

    def loaded(self) -> set[str]:
        return {line.split()[0] for line in (self.proc / "modules").read_text().splitlines()}

    # -- the fake tools

    def run(self, argv: Sequence[str], timeout: float) -> CommandRun:
        assert timeout > 0
        args = list(argv)
        self.calls.append(args)
        tool, target = args[0], args[-1] if args[0] != "insmod" else args[1]
        if tool == "modinfo":
            mod = self.modules.get(target)
            if mod is None:
                return CommandRun(args, 1, "", f"modinfo: ERROR: Module {target} not found.\n")
            out = f"filename:       {target}\nname:           {mod.name}\n"
            out += f"depends:        {mod.depends}\nvermagic:       {mod.vermagic}\n"
            out += "signature:      AB:CD:\n\t\tEF:01\n"
            return CommandRun(args, 0, out, "")
        if tool in ("insmod", "modprobe") and "-r" not in args:
            return self._insert(args, self.modules[args[1]])
        return self._remove(args, args[-1])

    def _insert(self, args: list[str], mod: FakeModule) -> CommandRun:
        if mod.fail:
            for line in mod.fail_dmesg:
                self.log(line)
            return CommandRun(args, mod.fail[0], "", mod.fail[1])
        with (self.proc / "modules").open("a") as f:
            f.write(f"{mod.name} 16384 0 - Live 0x0\n")
        moddir = self.sys / "module" / mod.name
        moddir.mkdir()
        (moddir / "initstate").write_text("live\n")
        if mod.version:
            (moddir / "version").write_text(mod.version + "\n")
        if mod.fs:
            with (self.proc / "filesystems").open("a") as f:
                f.write(f"nodev\t{mod.fs}\n")
        if mod.fs_config is not None:
            (self.sys / "fs" / mod.name).mkdir(parents=True)
            (self.sys / "fs" / mod.name / "config").write_text(mod.fs_config)
        for line in mod.dmesg:
            self.log(line)
        tainted = self.proc / "sys/kernel/tainted"
        tainted.write_text(f"{int(tainted.read_text()) | mod.taint}\n")
        if mod.uevent:
            self.uevents.queue.append(Uevent("add", "module", "unrelated"))
            self.uevents.queue.append(Uevent("add", "module", mod.name))
        return CommandRun(args, 0, "", "")

    def _remove(self, args: list[str], name: str) -> CommandRun:
        if name not in self.loaded():
            return CommandRun(args, 1, "", f"rmmod: ERROR: Module {name} is not currently loaded\n")
        modules = self.proc / "modules"
        kept = [line for line in modules.read_text().splitlines() if line.split()[0] != name]
        modules.write_text("".join(f"{line}\n" for line in kept))
        (self.sys / "module" / name / "initstate").unlink()
        version = self.sys / "module" / name / "version"
        version.unlink(missing_ok=True)
        (self.sys / "module" / name).rmdir()
        mod = self.modules[name]
        if mod.fs:
            fss = self.proc / "filesystems"
            fss.write_text(fss.read_text().replace(f"nodev\t{mod.fs}\n", ""))
        if mod.uevent:
            self.uevents.queue.append(Uevent("remove", "module", name))
        return CommandRun(args, 0, "", "")


AUFS = FakeModule(
    name="aufs",
    version="5.10.140-20230828",
    fs="aufs",
    fs_config="CONFIG_AUFS_FS=m\nCONFIG_AUFS_BRANCH_MAX_127=y\n",
    taint=(1 << 12) | (1 << 13),
    dmesg=[
        "aufs: loading out-of-tree module taints kernel.",
        "aufs: module verification failed: signature and/or required key missing",
        "aufs 5.10.140-20230828",
    ],
)


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(tmp_path)


# ------------------------------------------------------------------ taint


def test_decode_taint_untainted() -> None:
    taint = decode_taint(0)
    assert (taint.letters, taint.names) == ("", [])


def test_decode_taint_out_of_tree_unsigned_prints_g_first() -> None:
    taint = decode_taint(4096 | 8192)
    assert taint.letters == "GOE"
    assert taint.names == ["out-of-tree module", "unsigned module"]


def test_decode_taint_proprietary_and_unknown_bits() -> None:
    taint = decode_taint(1 | (1 << 9) | (1 << 40))
    assert taint.letters == "PW?"
    assert taint.names == ["proprietary module", "kernel warning", "unknown taint bit 40"]


# ------------------------------------------------------------------- load


def test_load_proves_module_fs_version_dmesg_and_taint(kernel: FakeKernel) -> None:
    ko = kernel.ko(AUFS)
    result = load_module(str(ko), ["brs=1"], expect_fs="aufs", timeout=5, system=kernel.system())

    assert result.status == "loaded", result.reason
    assert result.exit_code == 0
    assert kernel.calls == [["modinfo", str(ko)], ["insmod", str(ko), "brs=1"]]
    assert result.module == "aufs"
    assert result.vermagic == f"{RELEASE} SMP mod_unload modversions"
    assert "signature" not in result.modinfo
    assert result.uevent_seen and result.uevent_seconds is not None
    assert result.version == "5.10.140-20230828"
    assert result.fs_registered is True
    assert result.fs_config == {"CONFIG_AUFS_FS": "m", "CONFIG_AUFS_BRANCH_MAX_127": "y"}
    # only the lines the load produced, formatted like dmesg, key=value lines dropped
    assert [line.split("] ", 1)[1] for line in result.dmesg] == AUFS.dmesg
    assert result.dmesg[-1].startswith("[    0.00")
    assert result.taint_before is not None and result.taint_before.letters == ""
    assert result.taint_after is not None and result.taint_after.letters == "GOE"
    assert result.taint_added == ["out-of-tree module", "unsigned module"]
    assert "aufs 5.10.140-20230828 loaded" in result.reason
    assert kernel.uevents.opened == kernel.uevents.closed == 1


def test_load_by_name_uses_modprobe(kernel: FakeKernel) -> None:
    kernel.modules["dummy"] = FakeModule(name="dummy")
    result = load_module("dummy", ["numdummies=2"], timeout=5, system=kernel.system())
    assert result.status == "loaded", result.reason
    assert result.method == "modprobe"
    assert kernel.calls[-1] == ["modprobe", "dummy", "numdummies=2"]


def test_vermagic_mismatch_is_a_one_line_load_failure(kernel: FakeKernel) -> None:
    ko = kernel.ko(FakeModule(name="aufs", vermagic="6.1.0-27-amd64 SMP preempt mod_unload"))
    result = load_module(str(ko), timeout=5, system=kernel.system())
    assert result.status == "load-failed"
    assert result.exit_code == 1
    assert result.reason == (
        f"vermagic mismatch: aufs was built for 6.1.0-27-amd64, this machine runs {RELEASE}"
    )
    assert [c[0] for c in kernel.calls] == ["modinfo"]  # never tried insmod


def test_unknown_symbol_failure_carries_stderr_and_dmesg(kernel: FakeKernel) -> None:
    stderr = "insmod: ERROR: could not insert module aufs.ko: Unknown symbol in module\n"
    lines = ["aufs: Unknown symbol vfsub_rename (err -2)", "aufs: Unknown symbol vma_do_fput"]
    ko = kernel.ko(FakeModule(name="aufs", depends="fat", fail=(1, stderr), fail_dmesg=lines))
    result = load_module(str(ko), expect_fs="aufs", timeout=5, system=kernel.system())

    assert result.status == "load-failed"
    assert result.commands[-1].stderr == stderr
    assert [line.split("] ", 1)[1] for line in result.dmesg] == lines
    assert result.reason == (
        "insmod exited 1: insmod: ERROR: could not insert module aufs.ko: Unknown symbol in "
        "module; dmesg: aufs: Unknown symbol vfsub_rename (err -2)"
    )
    assert not result.uevent_seen
    assert "\n" not in result.reason
    assert result.notes == ["depends on fat, not loaded: insmod does not load dependencies"]


def test_missing_add_uevent_within_deadline_fails_clearly(kernel: FakeKernel) -> None:
    ko = kernel.ko(FakeModule(name="aufs", uevent=False))
    start = time.monotonic()
    result = load_module(str(ko), timeout=0.3, system=kernel.system())
    assert time.monotonic() - start < 3
    assert result.status == "load-failed"
    assert result.reason == (
        "insmod exited 0 but no 'add' uevent for module aufs arrived within 0.3s "
        "(/sys/module/aufs present)"
    )


def test_expected_fs_missing_fails(kernel: FakeKernel) -> None:
    ko = kernel.ko(FakeModule(name="aufs"))
    result = load_module(str(ko), expect_fs="aufs", timeout=5, system=kernel.system())
    assert result.status == "load-failed"
    assert result.fs_registered is False
    assert result.reason == "module aufs loaded but filesystem aufs is not in /proc/filesystems"


def test_missing_file_is_load_failed(kernel: FakeKernel, tmp_path: Path) -> None:
    result = load_module(str(tmp_path / "nope.ko"), system=kernel.system())
    assert result.status == "load-failed"
    assert result.reason.endswith("nope.ko: no such file")
    assert kernel.calls == []


def test_unreadable_module_is_load_failed(kernel: FakeKernel, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.ko"
    garbage.write_text("not an ELF file\n")
    result = load_module(str(garbage), system=kernel.system())
    assert result.status == "load-failed"
    assert result.reason.startswith(f"modinfo cannot read {garbage}: modinfo: ERROR")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("not-root", "loading kernel modules needs root"),
        ("no-proc-modules", "no loadable module support"),
        ("modules-disabled", "kernel.modules_disabled=1"),
        ("no-lib-modules", "modprobe has no modules for kernel"),
    ],
)
def test_machine_that_cannot_load_modules_is_an_error(
    kernel: FakeKernel, breakage: str, message: str
) -> None:
    if breakage == "not-root":
        kernel.root_user = False
    elif breakage == "no-proc-modules":
        (kernel.proc / "modules").unlink()
    elif breakage == "modules-disabled":
        (kernel.proc / "sys/kernel/modules_disabled").write_text("1\n")
    else:
        (kernel.root / "lib/modules" / RELEASE).rmdir()
    kernel.modules["dummy"] = FakeModule(name="dummy")
    result = load_module("dummy", system=kernel.system())
    assert result.status == "error"
    assert result.exit_code == 2
    assert message in result.reason
    assert kernel.calls == []


def test_already_loaded_and_builtin_are_errors(kernel: FakeKernel) -> None:
    ext4 = kernel.ko(FakeModule(name="ext4"))
    assert load_module(str(ext4), system=kernel.system()).reason == (
        "module ext4 is already loaded: unload it first"
    )
    (kernel.sys / "module/overlay").mkdir()
    overlay = kernel.ko(FakeModule(name="overlay"))
    result = load_module(str(overlay), system=kernel.system())
    assert (result.status, result.reason) == (
        "error",
        f"overlay is built into kernel {RELEASE}: nothing to load",
    )
    (kernel.root / "lib/modules" / RELEASE / "modules.builtin").write_text(
        "kernel/fs/fat/vfat.ko\n"
    )
    kernel.modules["vfat"] = FakeModule(name="vfat")
    assert "vfat is built into kernel" in load_module("vfat", system=kernel.system()).reason


def test_a_bug_still_returns_a_result(kernel: FakeKernel) -> None:
    def broken(argv: Sequence[str], timeout: float) -> CommandRun:
        raise RuntimeError("boom")

    system = kernel.system()
    system.runner = broken
    result = load_module(str(kernel.ko(AUFS)), system=system)
    assert result.status == "error"
    assert result.reason == "internal error in modload: RuntimeError('boom')"


# ----------------------------------------------------------------- unload


def test_unload_proves_remove_uevent_and_fs_gone(kernel: FakeKernel) -> None:
    system = kernel.system()
    assert load_module(str(kernel.ko(AUFS)), expect_fs="aufs", system=system).ok
    result = unload_module("aufs", expect_fs="aufs", timeout=5, system=system)
    assert result.status == "unloaded", result.reason
    assert kernel.calls[-1] == ["rmmod", "aufs"]
    assert result.uevent_seen
    assert result.fs_registered is False
    assert "aufs" not in kernel.loaded()


def test_unload_not_loaded_is_unload_failed(kernel: FakeKernel) -> None:
    result = unload_module("aufs", system=kernel.system())
    assert (result.status, result.reason) == ("unload-failed", "module aufs is not loaded")


def test_unload_missing_remove_uevent_fails(kernel: FakeKernel) -> None:
    system = kernel.system()
    assert load_module(str(kernel.ko(FakeModule(name="aufs"))), system=system).ok
    kernel.modules["aufs"].uevent = False
    result = unload_module("aufs", modprobe=True, timeout=0.3, system=system)
    assert kernel.calls[-1] == ["modprobe", "-r", "aufs"]
    assert result.status == "unload-failed"
    assert "no 'remove' uevent for module aufs" in result.reason


# ------------------------------------------------------------- JSON / CLI


def test_json_round_trip(kernel: FakeKernel) -> None:
    system = kernel.system()
    loaded = load_module(str(kernel.ko(AUFS)), ["brs=1"], expect_fs="aufs", system=system)
    unloaded = unload_module("aufs", system=system)
    assert result_from_json(loaded.to_json()) == loaded
    assert result_from_json(unloaded.to_json()) == unloaded
    assert isinstance(result_from_json(loaded.to_json()), LoadResult)
    assert isinstance(result_from_json(unloaded.to_json()), UnloadResult)


def test_json_from_a_newer_load_py_ignores_unknown_keys() -> None:
    data = json.loads(LoadResult(status="loaded", module="x").to_json())
    data["from_the_future"] = 1
    assert result_from_json(json.dumps(data)).module == "x"
    with pytest.raises(ValueError, match=r"not a module loader result"):
        result_from_json('{"action": "dance"}')


def test_cli_prints_json_and_exits_with_status(
    kernel: FakeKernel, capsys: pytest.CaptureFixture[str]
) -> None:
    ko = kernel.ko(AUFS)
    code = kl.main(["load", "--json", "--expect-fs", "aufs", str(ko)], system=kernel.system())
    result = result_from_json(capsys.readouterr().out)
    assert (code, result.status, result.module) == (0, "loaded", "aufs")
    code = kl.main(["unload", "aufs"], system=kernel.system())
    assert code == 0
    assert capsys.readouterr().out.startswith("unloaded: aufs unloaded")


# ------------------------------------------------------------ the runner


def test_run_command_captures_output_and_status() -> None:
    cmd = kl.run_command(["sh", "-c", "echo out; echo err >&2; exit 3"], 10)
    assert (cmd.returncode, cmd.stdout, cmd.stderr) == (3, "out\n", "err\n")


def test_run_command_deadline_and_missing_tool() -> None:
    start = time.monotonic()
    with pytest.raises(LoadError, match="still running after"):
        kl.run_command(["sleep", "30"], 0.2)
    assert time.monotonic() - start < 5
    with pytest.raises(LoadError, match="not found"):
        kl.run_command(["/nonexistent/insmod"], 1)


def test_kmsg_unreadable_is_noted_not_fatal(kernel: FakeKernel) -> None:
    kernel.kmsg.unlink()
    result = load_module(str(kernel.ko(AUFS)), expect_fs="aufs", system=kernel.system())
    assert result.status == "loaded"
    assert result.dmesg[0].startswith("[modload: cannot read")


# ------------------------------------------------------ guest round trip


class FakeGuest:
    """run/put as the SSH wrapper provides them; runs load.py's main in-process."""

    def __init__(self, kernel: FakeKernel) -> None:
        self.kernel = kernel
        self.files: dict[str, Path] = {}
        self.argvs: list[list[str]] = []

    def put(self, local: Path, remote: str) -> None:
        assert local.is_file()
        self.files[remote] = local

    def run(self, argv: list[str], timeout: float) -> tuple[int, str, str]:
        self.argvs.append(argv)
        if argv[0] == "mkdir":
            return 0, "", ""
        assert argv[:5] == [
            "env",
            f"PYTHONPATH={guestload.REMOTE_DIR}",
            "python3",
            "-m",
            "harness.guest.modload",
        ]
        remote_args = [self.files.get(a, a) for a in argv[5:]]  # remote paths -> local
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = kl.main([str(a) for a in remote_args], system=self.kernel.system())
        return code, out.getvalue(), ""


def test_load_in_guest(kernel: FakeKernel) -> None:
    guest = FakeGuest(kernel)
    ko = kernel.ko(AUFS)
    result = guestload.load_in_guest(guest.run, guest.put, ko, "aufs", 5, params=["brs=1"])
    assert result.status == "loaded", result.reason
    package = f"{guestload.REMOTE_DIR}/harness/guest"
    for name in guestload.LOADER_FILES:
        assert guest.files[f"{package}/{name}"] == Path(kl.__file__).with_name(name)
    assert guest.files[f"{guestload.REMOTE_DIR}/aufs.ko"] == ko
    assert guest.argvs[-1][5:] == [
        "load", "--json", "--timeout", "5", "--expect-fs", "aufs",
        f"{guestload.REMOTE_DIR}/aufs.ko", "brs=1",
    ]  # fmt: skip


def test_guest_without_a_result_is_an_infra_error(kernel: FakeKernel) -> None:
    def run(argv: list[str], timeout: float) -> tuple[int, str, str]:
        if argv[0] == "mkdir":
            return 0, "", ""
        return 1, "", "Traceback...\nSyntaxError: invalid syntax\n"

    with pytest.raises(InfraError, match="exited 1 without a result: SyntaxError"):
        guestload.load_in_guest(run, lambda local, remote: None, "aufs", None, 5)


# ------------------------------------------------------ the host command


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    kmod_load.add_parser(parser.add_subparsers(dest="kmod_command", required=True))
    return parser.parse_args(argv)


def _loader_on(kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kmod load` runs the loader as a program: run that program's main on the fake kernel."""

    def run(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        assert argv[1:3] == ["-m", "harness.guest.modload"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = kl.main([str(a) for a in argv[3:]], system=kernel.system())
        return subprocess.CompletedProcess(argv, code, out.getvalue(), "")

    monkeypatch.setattr(kmod_load, "run", run)


def test_command_load_and_unload_summary(
    kernel: FakeKernel, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    _loader_on(kernel, monkeypatch)
    ko = kernel.ko(AUFS)
    args = _parse(["load", str(ko), "--expect-fs", "aufs"])
    assert args.func(args) == 0
    first, second = capsys.readouterr().out.splitlines()[:2]
    assert first.startswith("loaded: aufs 5.10.140-20230828 loaded; add uevent after ")
    assert first.endswith(
        "s; filesystem aufs registered; taint added: out-of-tree module, unsigned module"
    )
    assert second == "  taint: - -> GOE"
    args = _parse(["unload", "aufs"])
    assert args.func(args) == 0


def test_command_exit_codes(kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch) -> None:
    _loader_on(kernel, monkeypatch)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UserError, match="run it as root"):
        kmod_load.cmd_load(_parse(["load", "dummy"]))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    (kernel.proc / "modules").unlink()
    with pytest.raises(InfraError, match=r"cannot load modules here: .*no /proc/modules"):
        kmod_load.cmd_load(_parse(["load", "dummy"]))
    (kernel.proc / "modules").write_text("")
    bad = kernel.ko(FakeModule(name="aufs", vermagic="6.1.0-27-amd64 SMP"))
    assert kmod_load.cmd_load(_parse(["load", str(bad)])) == 1


# ------------------------------------------------- runs inside old guests


@pytest.mark.parametrize("name", guestload.LOADER_FILES)
def test_loader_files_stay_python39_and_stdlib(name: str) -> None:
    """Guests run the loader with their own python3 (bullseye: 3.9): standard
    library and pyudev, and of ours only the guest package itself."""
    tree = ast.parse(Path(kl.__file__).with_name(name).read_text(), feature_version=(3, 9))
    imported = {
        (alias.name if isinstance(node, ast.Import) else node.module or "")
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    outside = {m for m in imported if m.split(".")[0] not in sys.stdlib_module_names}
    assert {m for m in outside if not m.startswith("harness.guest.")} <= {"pyudev"}
    first = next((n for n in tree.body if isinstance(n, ast.ImportFrom)), None)
    assert first is None or first.module == "__future__"  # annotations stay strings on 3.9
