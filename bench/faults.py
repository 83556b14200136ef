"""A fault campaign: inject faults into real runs and count what leaks or is lost.

    .venv/bin/python bench/faults.py [--only GROUP,...] [--rows FILE] [--table FILE]

Groups: bad (28 bad inputs), port (a taken SSH port x2), signal (SIGKILL and
SIGINT at image/boot/load/suite, SIGTERM at boot/suite), qemu (QEMU SIGKILLed
from outside mid-suite x2), sshd (sshd killed in the guest x2), panic (the
guest kernel panicked by a check through /proc/sysrq-trigger x2), store (a
truncated wheel), full (a full cache tmpfs: pip meets ENOSPC; a 2 MB state
tmpfs; a 176 MB state tmpfs a check fills mid-suite, so QEMU pauses the
guest), two (one byte of the stored bookworm kernel flipped, then two runs of
that image at once: one rebuilds it, the other waits), build (SIGKILL and
SIGINT while make runs: a kernel whose key misses, --aufs-option SHWH=n).

Each fault runs the real CLI in a subprocess (real QEMU under TCG, the cached
bookworm image, stock kernel), injects the fault, then runs the next start's
sweep and counts: QEMU/make of this campaign's runs still alive right after the
fault, processes and mounts/loop devices left after the sweep, whether
report.json was written when a run got far enough to owe one, and whether the
verdict names the fault (a pattern per fault). One JSON row per run goes to
--rows as it happens; the table is printed at the end, or from a rows file
with --table. Faults that corrupt or fill a cache, or build a kernel, use a
cache of their own (copies of the shared entries): other users' runs share
~/.cache/aufs-harness. Tmpfs mounts are made and removed under the
campaign's own temporary directory.

Suite-stage faults ship a tiny suite (a check that sleeps, or one that panics
the guest kernel) instead of the union suite, as tests/integration/test_hang.py
does, so each run is a few minutes under TCG.
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
from harness.core.paths import cache_dir  # noqa: E402
from tests.integration.test_hang import FAKE_OPTIONS  # noqa: E402

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

FILL_SUITE = """
import subprocess

def test_first():
    pass

def test_fills_the_disk():
    subprocess.run(["dd", "if=/dev/urandom", "of=/var/tmp/fill", "bs=1M", "count=400",
                    "conv=fsync"], check=True)
"""

# Runs the CLI with a tiny suite in place of the union suite (argv[1]: the
# guest package directory holding it as suite/, or "-" for the real suite).
LAUNCH = """
import signal, sys
from pathlib import Path
# Ctrl-C as from a terminal, even when the campaign runs as a background job
# (which inherits SIGINT ignored, as the harness then does too)
signal.signal(signal.SIGINT, signal.default_int_handler)
from harness import guestsuite
from harness.cli import main
if sys.argv[1] != "-":
    guestsuite.guest_dir = lambda: Path(sys.argv[1])
sys.exit(main(sys.argv[2:]))
"""


# The next start's sweep, printing the line it logs.
SWEEP = """
import logging, sys
logging.basicConfig(stream=sys.stdout, format="%(message)s", level=logging.INFO)
from harness.core.leftovers import sweep
sweep()
"""


@dataclass
class Row:
    fault: str
    verdict: str
    alive_after_fault: int  # QEMU + make of this run still running right after the fault
    leaked_procs: int  # ... and after the next start's sweep
    leaked_mounts: int
    report_expected: bool  # the run got far enough to owe a report (not refused, not SIGKILLed)
    report_written: bool
    seconds: float
    named: bool  # the verdict names the fault (its expected pattern matched)


class Campaign:
    def __init__(self, work: Path, rows: Path) -> None:
        self.work = work
        self.rows = rows
        self.state = work / "state"
        self.env = {**os.environ, "AUFS_HARNESS_STATE": str(self.state)}
        self.n = 0
        self.tokens: set[str] = set()  # owner tokens of the runs started here

    # -- helpers -----------------------------------------------------------
    def suite(self, checks: str) -> Path:
        """A guest package whose suite is `checks` (as tests/integration/test_hang.py)."""
        self.n += 1
        d = self.work / f"guest-{self.n}" / "suite"
        (d / "unionfs").mkdir(parents=True, exist_ok=True)
        (d / "unionfs" / "__init__.py").write_text("")
        (d / "unionfs" / "options.py").write_text(FAKE_OPTIONS)
        (d / "conftest.py").write_text('pytest_plugins = ("unionfs.options",)\n')
        (d / "test_fault.py").write_text(textwrap.dedent(checks))
        return d.parent

    def start(
        self, argv: list[str], suite: Path | None = None, env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        self.n += 1
        errlog = self.work / f"run-{self.n}.log"
        cmd = [sys.executable, "-c", LAUNCH, str(suite or "-"), *argv]
        with open(errlog, "wb") as f:
            proc = subprocess.Popen(
                cmd, stdout=f, stderr=subprocess.STDOUT, env=env or self.env, cwd=ROOT
            )
        self.tokens.add(procs.owner_token(proc.pid))
        return proc, errlog

    def results(self) -> Path:
        return self.work / f"results-{self.n + 1}"

    def ours(self) -> list[int]:
        """Live QEMU, make (and any other child) of the runs this campaign started:
        their owner token is one of ours, or QEMU names our state dir. Other
        users' harness processes on this shared machine are not counted."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or procs.start_time(int(entry.name)) is None:
                continue
            try:
                cmd = (entry / "cmdline").read_bytes()
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            owner = _owner(int(entry.name))
            is_qemu = comm.startswith("qemu-system") and str(self.state).encode() in cmd
            if is_qemu or (owner in self.tokens and comm in ("make", "qemu-system-x86")):
                pids.append(int(entry.name))
        return pids

    def orphans(self) -> list[int]:
        """Any process still carrying the owner token of one of our dead runs."""
        return [pid for pid, _ in leftovers.orphaned_processes() if _owner(pid) in self.tokens]

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
        expect: str,
        env: dict[str, str] | None = None,
        note: str = "",
    ) -> Row:
        """Wait for the run, run the next start's sweep, count and record.
        `expect`: a regex the verdict must match to name the fault."""
        try:
            proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        time.sleep(1.0)
        alive = len(self.ours())
        # the next start: the same sweep every booting or building command runs first
        swept = subprocess.run(
            [sys.executable, "-c", SWEEP],
            env=env or self.env,
            cwd=ROOT,
            check=False,
            timeout=120,
            capture_output=True,
            text=True,
        ).stdout.strip()
        time.sleep(0.5)
        leaked = len(set(self.ours()) | set(self.orphans()))
        written = bool(results and list(results.glob("*/report.json")))
        said = verdict(proc.returncode, errlog, results) + note
        if proc.returncode == -signal.SIGKILL:  # the dead say nothing: the next start does
            said += f"; next start: {swept or 'nothing to clean'}"
        row = Row(
            fault,
            said,
            alive,
            leaked,
            self.mounts(),
            report_expected,
            written,
            round(time.monotonic() - t0, 1),
            bool(re.search(expect, said + "\n" + errlog.read_text(errors="replace"))),
        )
        if row.named and not re.search(expect, said):  # said in a log line, not the verdict
            lines = errlog.read_text(errors="replace").splitlines()
            line = next((ln for ln in lines if re.search(expect, ln)), "")
            row.verdict += f" (log: {line.strip()[:160]})" if line else ""
        with open(self.rows, "a") as f:
            f.write(json.dumps(asdict(row)) + "\n")
        mark = "" if row.named else " [fault NOT named]"
        print(f"{row.fault:32} {row.verdict[:150]}{mark}", flush=True)
        return row

    def wait_for(self, errlog: Path, pattern: str, proc: subprocess.Popen[bytes], s: float) -> bool:
        end = time.monotonic() + s
        while time.monotonic() < end and proc.poll() is None:
            if re.search(pattern, errlog.read_text(errors="replace")):
                return True
            time.sleep(0.2)
        return False

    # -- faults ------------------------------------------------------------
    def bad_input(self, name: str, argv: list[str], expect: str) -> None:
        t0 = time.monotonic()
        proc, errlog = self.start(argv)
        self.finish(f"bad input: {name}", proc, errlog, t0, None, False, expect)

    def signal_at(self, sig: signal.Signals, stage: str, pattern: str, extra: float) -> None:
        t0 = time.monotonic()
        results = self.results()
        argv = ["run", "--accel", "tcg", "--results", str(results), "--workers", "1"]
        proc, errlog = self.start(argv, self.suite(SLEEPY_SUITE))
        if self.wait_for(errlog, pattern, proc, 600):
            time.sleep(extra)
        proc.send_signal(sig)
        self.finish(
            f"{sig.name} at {stage}", proc, errlog, t0, results, sig != signal.SIGKILL,
            SIGNAL_NAMED[sig].format(stage=stage),
        )  # fmt: skip

    def build_signal(self, sig: signal.Signals, option: str) -> None:
        """Signal the harness while its make runs (a kernel whose key misses:
        an --aufs-option no stored build has)."""
        t0 = time.monotonic()
        results = self.results()
        argv = [
            "run", "--kernel", BULLSEYE, "--aufs-src", AUFS_BUNDLE, "--fixup-dir", FIXUPS,
            "--aufs-option", option, "--results", str(results), "--accel", "tcg",
        ]  # fmt: skip
        proc, errlog = self.start(argv, env=self.kmod_cache())
        end = time.monotonic() + 1800
        while time.monotonic() < end and proc.poll() is None and not self._make_of(proc.pid):
            time.sleep(0.5)
        time.sleep(5)
        proc.send_signal(sig)
        self.finish(
            f"{sig.name} at build (make)", proc, errlog, t0, results, sig != signal.SIGKILL,
            SIGNAL_NAMED[sig].format(stage="build"),
        )  # fmt: skip

    def kmod_cache(self) -> dict[str, str]:
        """A cache of our own for the kernel build (its work trees and store are
        not other users' on this shared machine), sharing the unpacked sources,
        apt lists and aufs mirror with the shared cache (kmod/trees, debian, aufs)."""
        cache = self.work / "cache-kmod"
        if not cache.exists():
            (cache / "kmod").mkdir(parents=True)
            for sub in ("trees", "debian", "aufs"):
                (cache / "kmod" / sub).symlink_to(cache_dir() / "kmod" / sub)
        return {**self.env, "AUFS_HARNESS_CACHE": str(cache)}

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

    def during_suite(
        self, fault: str, inject: Callable[[], None], checks: str, expect: str
    ) -> None:
        t0 = time.monotonic()
        results = self.results()
        argv = ["run", "--accel", "tcg", "--results", str(results), "--workers", "1"]
        argv += ["--check-timeout", "90", "--fresh-vms", "0"]
        proc, errlog = self.start(argv, self.suite(checks))
        if self.wait_for(errlog, "running the union suite", proc, 600):
            self.wait_for(errlog, "files shipped to the guest", proc, 300)
            time.sleep(8)
            inject()
        self.finish(fault, proc, errlog, t0, results, True, expect)

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

    def private_cache(self, name: str) -> dict[str, str]:
        """An environment whose cache holds copies of the shared cache's bookworm
        image and wheels: corrupting them must not touch other users' runs."""
        cache = self.work / name
        cache.mkdir()
        shared = cache_dir()
        for sub in ("guest-wheels", "guest-bytecode"):
            if (shared / sub).is_dir():
                subprocess.run(["cp", "-a", shared / sub, cache / sub], check=True)
        (cache / "images").mkdir(parents=True, exist_ok=True)
        entry = shared / "images" / bookworm_key()
        subprocess.run(["cp", "-a", "--sparse=always", entry, cache / "images"], check=True)
        return {**self.env, "AUFS_HARNESS_CACHE": str(cache)}

    def corrupted_wheel(self) -> None:
        env = self.private_cache("cache-wheel")
        wheels = sorted(Path(env["AUFS_HARNESS_CACHE"], "guest-wheels").glob("*/*.whl"))
        with open(wheels[0], "r+b") as f:
            f.truncate(wheels[0].stat().st_size // 2)
        t0 = time.monotonic()
        results = self.results()
        argv = ["run", "--accel", "tcg", "--results", str(results), "--workers", "1"]
        proc, errlog = self.start(argv, self.suite("def test_ok():\n    pass\n"), env=env)
        self.finish(
            "corrupted store entry (wheel truncated)", proc, errlog, t0, results, True,
            r"is corrupted \(.*truncated", env,
        )  # fmt: skip

    def corrupted_image_two_runs(self) -> None:
        """Flip one byte of the stored kernel of the bookworm image, then start
        two runs of it at once: the entry must be found corrupted and rebuilt
        once (the other run waits for it), and never booted."""
        env = self.private_cache("cache-image")
        vmlinuz = Path(env["AUFS_HARNESS_CACHE"], "images", bookworm_key(), "vmlinuz")
        with open(vmlinuz, "r+b") as f:
            f.seek(4096)
            byte = f.read(1)
            f.seek(4096)
            f.write(bytes([byte[0] ^ 0xFF]))
        t0 = time.monotonic()
        suite = self.suite("def test_ok():\n    pass\n")
        started = []
        for _ in range(2):
            results = self.results()
            argv = ["run", "--accel", "tcg", "--results", str(results), "--workers", "1"]
            started.append((*self.start(argv, suite, env=env), results))
        logs = [errlog for _, errlog, _ in started]
        for i, (proc, errlog, results) in enumerate(started):
            proc.wait(timeout=1800)
            both = "\n".join(x.read_text(errors="replace") for x in logs)
            built = len(re.findall(r"image: debian \S+ with kernel \S+ built in", both))
            waited = len(re.findall(r"another process is producing \w+; waiting", both))
            note = f" [image built {built}x, {waited} run(s) waited for it]"
            # the second run may find the entry half-removed by the first ("is missing")
            fault, expect = (
                ("corrupted store entry (image byte flipped)", r"entry \w+ is corrupted \(vmlinuz")
                if i == 0
                else ("two runs of one build at once", r"image built 1x, 1 run\(s\) waited")
            )
            self.finish(fault, proc, errlog, t0, results, True, expect, env, note)

    def full_dir(self, which: str, size: str) -> None:
        """A small tmpfs (created and removed here) as the cache or state dir.
        The cache one holds a copy of the warm bookworm image and is then filled
        up, so the first thing the run writes there (pip downloading the guest's
        wheels: a child process) meets ENOSPC; the state one is too small for
        the VM's disk overlay (QEMU writing there)."""
        mnt = self.work / f"small-{which}"
        mnt.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mnt], check=True)
        try:
            if which == "state":  # the cache stays the shared one: the image is warm
                env = {**self.env, "AUFS_HARNESS_STATE": str(mnt)}
            else:
                env = {**self.env, "AUFS_HARNESS_CACHE": str(mnt)}
                (mnt / "images").mkdir()
                entry = cache_dir() / "images" / bookworm_key()
                # not sparse: on tmpfs, a mapped read of a hole needs a page, and
                # QEMU then dies of SIGBUS instead of anything meeting ENOSPC
                subprocess.run(["cp", "-a", "--sparse=never", entry, mnt / "images"], check=True)
                subprocess.run(["dd", "if=/dev/zero", f"of={mnt}/filler", "bs=1M"], check=False,
                               capture_output=True)  # fmt: skip
            t0 = time.monotonic()
            results = self.results()
            argv = ["run", "--accel", "tcg", "--results", str(results)]
            proc, errlog = self.start(argv, self.suite("def test_ok():\n    pass\n"), env=env)
            self.finish(  # a full state dir is refused before any work: no report owed
                f"full {which} dir (tmpfs)", proc, errlog, t0, results, which == "cache",
                rf"the {which} directory {re.escape(str(mnt))}.* is full", env,
            )  # fmt: skip
            if which == "cache":
                (mnt / "filler").unlink()
                stray = [p for p in mnt.rglob("*") if ".tmp-" in str(p)]
                if stray:  # half-written entries must not stay to be trusted later
                    print(f"  half-written left in the cache: {stray[:3]}", flush=True)
        finally:
            subprocess.run(["umount", mnt], check=False)

    def state_fills_mid_suite(self) -> None:
        """The state dir has room to start (128 MB free) but a check writes more
        through the guest's disk: QEMU pauses the guest on ENOSPC, the suite
        asks QEMU why after 15 s of silence (tests/integration/test_hang.py)."""
        mnt = self.work / "small-state-mid"
        mnt.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=176m", "tmpfs", mnt], check=True)
        try:
            env = {**self.env, "AUFS_HARNESS_STATE": str(mnt)}
            t0 = time.monotonic()
            results = self.results()
            argv = ["run", "--accel", "tcg", "--workers", "1", "--results", str(results)]
            proc, errlog = self.start(argv, self.suite(FILL_SUITE), env=env)
            self.finish(
                "state dir fills mid-suite", proc, errlog, t0, results, True,
                rf"QEMU paused the guest on a disk error .*{re.escape(str(mnt))}.* is full", env,
            )  # fmt: skip
        finally:
            subprocess.run(["umount", "-l", mnt], check=False)

    def taken_port(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            t0 = time.monotonic()
            proc, errlog = self.start(["vm", "up", "--name", "porttaken", "--ssh-port", str(port)])
            self.finish(
                "taken SSH port (vm up)", proc, errlog, t0, None, False, rf"port {port}.*taken"
            )


def bookworm_key() -> str:
    """The store key of the default run's image (debian bookworm)."""
    from harness.core.store import key_of
    from vm.image import ImageRecipe

    return key_of(ImageRecipe(suite="bookworm").inputs())


def _owner(pid: int) -> str:
    for item in _environ(pid).split(b"\0"):
        if item.startswith(b"AUFS_HARNESS_OWNER="):
            return item.split(b"=", 1)[1].decode(errors="replace")
    return ""


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
    ("matrix file: unknown key", ["matrix", "run", "{work}/matrix-unknown-key.toml"]),
    ("matrix file: not TOML", ["matrix", "run", "{work}/matrix-broken.toml"]),
    ("baseline file: no version", ["matrix", "run", "--baseline", "{work}/baseline-nover.toml"]),
]
# The files the bad inputs above name, written into the campaign's directory.
BAD_FILES = {
    "matrix-unknown-key.toml": '[[cell]]\nname = "x"\n',
    "matrix-broken.toml": "not toml [\n",
    "baseline-nover.toml": "[[known]]\ncheck = 5\n",
}
# What a bad input's one line must name: the option, or the file.
BAD_NAMES = {"kmod build -j 0": "-j"}


def bad_expect(name: str, argv: list[str]) -> str:
    """The verdict of a bad input must be exit 2 naming the option or file."""
    flag = BAD_NAMES.get(name) or next((a for a in name.split() if a.startswith("-")), "")
    named = flag or Path(argv[-1]).name
    return rf"^exit 2: aufs-harness: (usage )?error: .*{re.escape(named)}"


# What a signal's verdict must say (SIGKILL: the next start says what it cleaned).
SIGNAL_NAMED = {
    signal.SIGKILL: r"^exit -9: .*; next start: (cleaned what a dead run left|nothing to clean)",
    signal.SIGINT: r"^exit 130: error: interrupted by SIGINT \(Ctrl-C\) in the {stage} stage",
    signal.SIGTERM: r"^exit 143: error: interrupted by SIGTERM in the {stage} stage",
}

STAGES = [
    ("image", "preparing the image", 0.0),
    ("boot", "booting ", 5.0),
    ("load", "loading the union", 0.5),
    ("suite", "running the union suite", 20.0),
]


def campaign(c: Campaign, only: str) -> None:
    def want(name: str) -> bool:
        return any(name.startswith(o) for o in only.split(","))

    if want("bad"):
        for file, text in BAD_FILES.items():
            (c.work / file).write_text(text)
        for name, template in BAD_INPUTS:
            argv = [a.format(work=c.work) for a in template]
            c.bad_input(name, argv, bad_expect(name, argv))
    if want("port"):
        c.taken_port()
        c.taken_port()
    if want("signal"):
        for sig in (signal.SIGKILL, signal.SIGINT):
            for stage, pattern, extra in STAGES:
                c.signal_at(sig, stage, pattern, extra)
        for stage, pattern, extra in STAGES[1::2]:  # boot, suite
            c.signal_at(signal.SIGTERM, stage, pattern, extra)
    if want("qemu"):
        for _ in range(2):
            c.during_suite(
                "QEMU killed from outside", c.kill_qemu, SLEEPY_SUITE,
                r"QEMU .*(died|exited|killed)|VM .*(died|gone)",
            )  # fmt: skip
    if want("sshd"):
        for _ in range(2):
            c.during_suite(
                "sshd killed in the guest", c.kill_sshd, SLEEPY_SUITE,
                r"SSH|ssh",
            )  # fmt: skip
    if want("panic"):
        for _ in range(2):
            c.during_suite(
                "guest kernel panic mid-check", lambda: None, PANIC_SUITE,
                r"[Kk]ernel panic|panicked",
            )  # fmt: skip
    if want("store"):
        c.corrupted_wheel()
    if want("full"):
        c.full_dir("cache", "2500m")
        c.full_dir("state", "2m")
        c.state_fills_mid_suite()
    if want("two"):
        c.corrupted_image_two_runs()
    if want("build"):
        c.build_signal(signal.SIGKILL, "SHWH=n")
        c.build_signal(signal.SIGINT, "SHWH=n")


def table(rows_file: Path) -> str:
    rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()]
    groups: dict[str, list[dict[str, object]]] = {}
    for r in rows:
        groups.setdefault(str(r["fault"]), []).append(r)
    head = (
        "| fault | runs | verdict as reported | names the fault | alive right after "
        "| leaked after next start | leaked mounts/loops | reports written |"
    )
    out = [head, "|---|---|---|---|---|---|---|---|"]
    for fault, rs in groups.items():
        expected = [r for r in rs if r["report_expected"]]
        written = sum(1 for r in expected if r["report_written"])
        reports = f"{written}/{len(expected)}" if expected else "none owed"
        verdicts = "; ".join(sorted({str(r["verdict"]) for r in rs}))
        alive, leaked, mounts = (
            sum(int(str(r[k])) for r in rs)
            for k in ("alive_after_fault", "leaked_procs", "leaked_mounts")
        )
        named = f"{sum(1 for r in rs if r.get('named'))}/{len(rs)}"
        out.append(
            f"| {fault} | {len(rs)} | {verdicts} | {named} | {alive} | {leaked} | {mounts} "
            f"| {reports} |"
        )
    out.append(f"\n{len(rows)} fault-injected runs")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--only",
        default="",
        help="run only the fault groups starting so (comma-separated: bad,port,signal,qemu,"
        "sshd,panic,store,full,two,build)",
    )
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
