"""A fault campaign: inject faults into real runs and count what leaks or is lost.

    .venv/bin/python bench/faults.py [--only PREFIX] [--rows FILE] [--table FILE]

Each fault runs the real CLI in a subprocess (real QEMU under TCG, the cached
bookworm image; the build-stage faults build debian:bullseye=5.10.223-1 with the
shared aufs bundle and fix-ups), injects the fault, then runs the next start's
sweep and counts: QEMU/make still alive right after the fault, processes and
mounts/loop devices left after the sweep, and whether report.json was written
when a run got far enough to owe one. One JSON row per run goes to --rows as it
happens (a long campaign can be read while it runs); the table is printed at the
end, or from a rows file with --table.

Suite-stage faults ship a tiny suite (a check that sleeps, or one that panics
the guest kernel) instead of the union suite, as tests/integration/test_hang.py
does, so each run is about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.core import leftovers, procs  # noqa: E402

AUFS_BUNDLE = "/work/shared/aufs/aufs-standalone.bundle"
FIXUPS = "/work/shared/aufs/fixups/debian-bullseye-5.10"
BULLSEYE = "debian:bullseye=5.10.223-1"

SLEEPY_SUITE = """
import time

def test_first():
    pass

def test_sleeps():
    time.sleep(240)
"""
PANIC_SUITE = """
import time

def test_first():
    pass

def test_panics_the_guest():
    time.sleep(3)
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("c")
    time.sleep(120)
"""

# Runs the CLI with a tiny suite in place of the union suite (argv[1]: its dir).
LAUNCH = """
import sys
from pathlib import Path
from harness import guestsuite
from harness.cli import main
guestsuite.suite_dir = lambda: Path(sys.argv[1])
sys.exit(main(sys.argv[2:]))
"""


@dataclass
class Row:
    fault: str
    verdict: str
    alive_after_fault: int  # QEMU + make of this run still running right after the fault
    leaked_procs: int  # ... and after the next start's sweep
    leaked_mounts: int
    report_expected: bool
    report_written: bool
    seconds: float


class Campaign:
    def __init__(self, work: Path, rows: Path) -> None:
        self.work = work
        self.rows = rows
        self.state = work / "state"
        self.env = {**os.environ, "AUFS_HARNESS_STATE": str(self.state)}
        self.n = 0

    # -- helpers -----------------------------------------------------------
    def suite(self, checks: str) -> Path:
        self.n += 1
        d = self.work / f"suite-{self.n}"
        (d / "unionfs").mkdir(parents=True, exist_ok=True)
        (d / "unionfs" / "__init__.py").write_text("")
        (d / "unionfs" / "options.py").write_text("def pytest_addoption(parser):\n    pass\n")
        (d / "conftest.py").write_text('pytest_plugins = ("unionfs.options",)\n')
        (d / "test_fault.py").write_text(textwrap.dedent(checks))
        return d

    def start(
        self, argv: list[str], suite: Path | None = None, env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        self.n += 1
        errlog = self.work / f"run-{self.n}.log"
        cmd = [sys.executable, "-c", LAUNCH, str(suite or "/nonexistent"), *argv]
        with open(errlog, "wb") as f:
            proc = subprocess.Popen(
                cmd, stdout=f, stderr=subprocess.STDOUT, env=env or self.env, cwd=ROOT
            )
        return proc, errlog

    def results(self) -> Path:
        return self.work / f"results-{self.n + 1}"

    def ours(self) -> list[int]:
        """QEMU of our state dir, and make processes owned by a harness (any)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes()
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if procs.start_time(int(entry.name)) is None:
                continue
            is_qemu = b"qemu-system" in cmd and str(self.state).encode() in cmd
            is_make = comm == "make" and b"AUFS_HARNESS_OWNER" in _environ(int(entry.name))
            if is_qemu or is_make:
                pids.append(int(entry.name))
        return pids

    def mounts(self) -> int:
        base = tempfile.gettempdir().rstrip("/") + "/unionfs-"
        text = Path("/proc/self/mountinfo").read_text()
        n = sum(1 for line in text.splitlines() if line.split()[4].startswith(base))
        for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
            n += backing.read_text().startswith(base)
        return n

    def finish(
        self,
        fault: str,
        proc: subprocess.Popen[bytes],
        errlog: Path,
        t0: float,
        results: Path | None,
        report_expected: bool,
    ) -> Row:
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        time.sleep(1.0)
        alive = len(self.ours())
        # the next start: the same sweep every booting or building command runs first
        subprocess.run(
            [sys.executable, "-c", "from harness.core.leftovers import sweep; sweep()"],
            env=self.env,
            cwd=ROOT,
            check=False,
            timeout=120,
        )
        time.sleep(0.5)
        leaked = len(self.ours()) + len(leftovers.orphaned_processes())
        written = bool(results and list(results.glob("*/report.json")))
        row = Row(
            fault,
            verdict(proc.returncode, errlog, results),
            alive,
            leaked,
            self.mounts(),
            report_expected,
            written,
            round(time.monotonic() - t0, 1),
        )
        with open(self.rows, "a") as f:
            f.write(json.dumps(asdict(row)) + "\n")
        print(f"{row.fault:32} {row.verdict[:90]}", flush=True)
        return row

    def wait_for(self, errlog: Path, pattern: str, proc: subprocess.Popen[bytes], s: float) -> bool:
        end = time.monotonic() + s
        while time.monotonic() < end and proc.poll() is None:
            if re.search(pattern, errlog.read_text(errors="replace")):
                return True
            time.sleep(0.2)
        return False

    # -- faults ------------------------------------------------------------
    def bad_input(self, name: str, argv: list[str]) -> None:
        t0 = time.monotonic()
        proc, errlog = self.start(argv)
        self.finish(f"bad input: {name}", proc, errlog, t0, None, False)

    def signal_at(self, sig: signal.Signals, stage: str, pattern: str, extra: float) -> None:
        t0 = time.monotonic()
        results = self.results()
        argv = ["run", "--accel", "tcg", "--results", str(results), "--workers", "1"]
        proc, errlog = self.start(argv, self.suite(SLEEPY_SUITE))
        if self.wait_for(errlog, pattern, proc, 600):
            time.sleep(extra)
        proc.send_signal(sig)
        self.finish(f"{sig.name} at {stage}", proc, errlog, t0, results, sig != signal.SIGKILL)

    def build_signal(self, sig: signal.Signals, option: str) -> None:
        t0 = time.monotonic()
        results = self.results()
        argv = [
            "run", "--kernel", BULLSEYE, "--aufs-src", AUFS_BUNDLE, "--fixup-dir", FIXUPS,
            "--aufs-option", option, "--results", str(results), "--accel", "tcg",
        ]  # fmt: skip
        proc, errlog = self.start(argv)
        end = time.monotonic() + 900
        while time.monotonic() < end and proc.poll() is None and not self._make_of(proc.pid):
            time.sleep(0.5)
        time.sleep(5)
        proc.send_signal(sig)
        self.finish(f"{sig.name} at build (make)", proc, errlog, t0, results, sig != signal.SIGKILL)

    def _make_of(self, pid: int) -> bool:
        token = f"AUFS_HARNESS_OWNER={procs.owner_token(pid)}".encode()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if (entry / "comm").read_text().strip() == "make" and token in _environ(
                        int(entry.name)
                    ):
                        return True
                except OSError:
                    continue
        return False

    def during_suite(self, fault: str, inject: Callable[[], None], checks: str) -> None:
        t0 = time.monotonic()
        results = self.results()
        argv = ["run", "--accel", "tcg", "--results", str(results), "--workers", "1"]
        argv += ["--check-timeout", "90", "--fresh-vms", "0"]
        proc, errlog = self.start(argv, self.suite(checks))
        if self.wait_for(errlog, "running the union suite", proc, 600):
            time.sleep(15)
            inject()
        self.finish(fault, proc, errlog, t0, results, True)

    def run_dirs(self) -> list[Path]:
        return sorted((self.state / "runs").glob("run-*"))

    def kill_qemu(self) -> None:
        for d in self.run_dirs():
            pid = json.loads((d / "state.json").read_text())["pid"]
            os.kill(pid, signal.SIGKILL)

    def kill_sshd(self) -> None:
        for d in self.run_dirs():
            subprocess.run(
                ["ssh", "-F", str(d / "ssh_config"), d.name, "pkill -9 sshd"],
                timeout=30,
                check=False,
                capture_output=True,
            )

    def corrupted_store(self) -> None:
        from harness.core.paths import cache_dir

        wheels = sorted((cache_dir() / "guest-wheels").glob("*/*.whl"))
        if wheels:
            with open(wheels[0], "r+b") as f:
                f.truncate(max(0, wheels[0].stat().st_size // 2))
        t0 = time.monotonic()
        results = self.results()
        argv = ["run", "--accel", "tcg", "--results", str(results), "--workers", "1"]
        proc, errlog = self.start(argv, self.suite("def test_ok():\n    pass\n"))
        row = self.finish("corrupted store entry (wheel)", proc, errlog, t0, results, True)
        if "corrupted" not in errlog.read_text():
            row.verdict += " [corruption NOT reported]"

    def full_cache(self) -> None:
        mnt = self.work / "small-cache"
        mnt.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt], check=True)
        try:
            t0 = time.monotonic()
            results = self.results()
            env = {**self.env, "AUFS_HARNESS_CACHE": str(mnt)}
            argv = ["run", "--accel", "tcg", "--results", str(results)]
            proc, errlog = self.start(argv, env=env)
            self.finish("full cache dir (8 MB tmpfs)", proc, errlog, t0, results, True)
        finally:
            subprocess.run(["umount", "-l", mnt], check=False)

    def two_at_once(self) -> None:
        t0 = time.monotonic()
        suite = self.suite("def test_ok():\n    pass\n")
        started = []
        for _ in range(2):
            results = self.results()
            argv = ["run", "--accel", "tcg", "--results", str(results), "--workers", "1"]
            started.append((*self.start(argv, suite), results))
        for proc, errlog, results in started:
            self.finish("two runs at once", proc, errlog, t0, results, True)

    def taken_port(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            t0 = time.monotonic()
            proc, errlog = self.start(["vm", "up", "--name", "porttaken", "--ssh-port", str(port)])
            self.finish("taken SSH port (vm up)", proc, errlog, t0, None, False)


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def verdict(code: int | None, errlog: Path, results: Path | None) -> str:
    reports = sorted(results.glob("*/report.json")) if results else []
    if reports:
        data = json.loads(reports[-1].read_text())
        targets = data.get("targets", data) if isinstance(data, dict) else data
        if isinstance(targets, list) and targets:
            t = targets[0]
            return f"exit {code}: {t.get('verdict')}: {str(t.get('reason', ''))[:100]}"
    lines = [ln for ln in errlog.read_text(errors="replace").splitlines() if "aufs-harness:" in ln]
    return f"exit {code}: " + (lines[-1][:120] if lines else "(no error line)")


BAD_INPUTS: list[tuple[str, list[str]]] = [
    ("run --memory 12", ["run", "--memory", "12"]),
    ("run --memory lots", ["run", "--memory", "lots"]),
    ("vm up --memory 99999999", ["vm", "up", "--memory", "99999999"]),
    ("run --smp 0", ["run", "--smp", "0"]),
    ("vm up --smp 1.5", ["vm", "up", "--smp", "1.5"]),
    ("run --workers 0", ["run", "--workers", "0"]),
    ("suite --workers -2", ["suite", "--local", "--workers", "-2"]),
    ("run --fresh-vms -1", ["run", "--fresh-vms", "-1"]),
    ("run --boot-timeout 0", ["run", "--boot-timeout", "0"]),
    ("vm up --boot-timeout x", ["vm", "up", "--boot-timeout", "x"]),
    ("run --suite-timeout nan", ["run", "--suite-timeout", "nan"]),
    ("suite --timeout 0", ["suite", "--local", "--timeout", "0"]),
    ("run --check-timeout -5", ["run", "--check-timeout", "-5"]),
    ("kmod build -j 0", ["kmod", "build", "--kernel", BULLSEYE, "-j", "0"]),
    ("kmod build --timeout 1", ["kmod", "build", "--kernel", BULLSEYE, "--timeout", "1"]),
    ("vm up --ssh-port 70000", ["vm", "up", "--ssh-port", "70000"]),
    ("run --image /etc/passwd", ["run", "--image", "/etc/passwd"]),
    ("vm up --image /etc/passwd", ["vm", "up", "--image", "/etc/passwd"]),
    ("run --image /tmp (a directory)", ["run", "--image", "/tmp"]),
    ("run --image missing", ["run", "--image", "/no/disk.qcow2"]),
    ("--fixup-dir missing", ["kmod", "build", "--kernel", BULLSEYE, "--fixup-dir", "/no/dir"]),
    ("--fixup-dir a file", ["run", "--kernel", BULLSEYE, "--fixup-dir", "/etc/passwd"]),
    ("--config-fragment a dir", ["kmod", "build", "--kernel", BULLSEYE, "--config-fragment", "/"]),
    ("--results under a file", ["run", "--results", "/etc/passwd/out"]),
    ("--aufs-src missing", ["kmod", "build", "--kernel", BULLSEYE, "--aufs-src", "/no/aufs"]),
]

STAGES = [
    ("image", "preparing the image", 0.0),
    ("boot", "booting ", 5.0),
    ("load", "loading the union", 0.5),
    ("suite", "running the union suite", 20.0),
]


def campaign(c: Campaign, only: str) -> None:
    def want(name: str) -> bool:
        return name.startswith(only)

    if want("bad"):
        for name, argv in BAD_INPUTS:
            c.bad_input(name, argv)
    if want("port"):
        c.taken_port()
        c.taken_port()
    if want("signal"):
        for sig in (signal.SIGKILL, signal.SIGINT):
            for stage, pattern, extra in STAGES:
                c.signal_at(sig, stage, pattern, extra)
    if want("qemu"):
        c.during_suite("QEMU killed from outside", c.kill_qemu, SLEEPY_SUITE)
    if want("sshd"):
        c.during_suite("sshd killed in the guest", c.kill_sshd, SLEEPY_SUITE)
    if want("panic"):
        c.during_suite("guest kernel panic mid-check", lambda: None, PANIC_SUITE)
    if want("store"):
        c.corrupted_store()
    if want("two"):
        c.two_at_once()
    if want("full"):
        c.full_cache()
    if want("build"):
        c.build_signal(signal.SIGKILL, "SHWH=n")
        c.build_signal(signal.SIGINT, "FHSM=y")


def table(rows_file: Path) -> str:
    rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()]
    groups: dict[str, list[dict[str, object]]] = {}
    for r in rows:
        groups.setdefault(str(r["fault"]), []).append(r)
    head = (
        "| fault | runs | verdict as reported | alive right after | leaked after next start "
        "| leaked mounts/loops | reports written |"
    )
    out = [head, "|---|---|---|---|---|---|---|"]
    for fault, rs in groups.items():
        expected = [r for r in rs if r["report_expected"]]
        written = sum(1 for r in expected if r["report_written"])
        reports = f"{written}/{len(expected)}" if expected else "n/a (refused before work)"
        verdicts = "; ".join(sorted({str(r["verdict"]) for r in rs}))
        alive, leaked, mounts = (
            sum(int(str(r[k])) for r in rs)
            for k in ("alive_after_fault", "leaked_procs", "leaked_mounts")
        )
        out.append(
            f"| {fault} | {len(rs)} | {verdicts} | {alive} | {leaked} | {mounts} | {reports} |"
        )
    out.append(f"\n{len(rows)} fault-injected runs")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="run only faults whose group starts so")
    p.add_argument("--rows", type=Path, default=Path("faults.jsonl"))
    p.add_argument("--table", type=Path, help="print the table of a rows file and exit")
    args = p.parse_args()
    if args.table:
        print(table(args.table))
        return 0
    with tempfile.TemporaryDirectory(prefix="aufs-faults-") as tmp:
        campaign(Campaign(Path(tmp), args.rows.resolve()), args.only)
    print(table(args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
