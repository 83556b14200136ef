"""A matrix over two VM hosts, simulated on this machine as network namespaces.

Three namespaces of the test's own: ctl (where `matrix run` runs) and h1, h2
(the hosts), joined by veth pairs whose addresses exist inside them only
(10.200.1.0/24, 10.200.2.0/24): nothing routes anywhere else. Each host runs
its own sshd (-D -e, its own config, host key and authorized_keys in a temp
dir); its `aufs-harness` is this installation with a tiny fake suite, so QEMU
runs inside the namespace, as on a real host. Killing every process of h1
while it runs a cell is the host dropping mid-run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vm.image import Image
from vm.keys import generate

SSHD = Path("/usr/sbin/sshd")
DROP_EMPTIES = 45.0  # seconds h1 has to end its run once its sshd died
REPO = Path(__file__).parents[2]
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not SSHD.exists(), reason="needs root (ip netns) and openssh-server"
)

# test_two outlasts the wait for h1 to empty after its drop (DROP_EMPTIES): a
# run that merely went on to its natural end would fail that wait.
FAKE_CHECKS = """
import time

def test_one():
    time.sleep(2)

def test_two():
    time.sleep(75)

def test_three():
    pass
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def netns_pids(ns: str) -> list[int]:
    out = subprocess.run(
        ["ip", "netns", "pids", ns], check=False, capture_output=True, text=True, timeout=30
    )
    return [int(p) for p in out.stdout.split()]


def kill_all_in(ns: str) -> None:
    for pid in netns_pids(ns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Lab:
    ctl: str
    hosts: dict[str, str]  # host name -> namespace
    inventory: Path
    states: dict[str, Path]  # host name -> its AUFS_HARNESS_STATE


def fake_harness(tmp: Path) -> Path:
    """A program that is `aufs-harness` with a tiny guest suite instead of the union suite."""
    suite = tmp / "guest" / "suite"
    (suite / "unionfs").mkdir(parents=True)
    (suite / "unionfs" / "__init__.py").write_text("")
    (suite / "unionfs" / "options.py").write_text(
        textwrap.dedent("""
        def pytest_addoption(parser):
            for name in ("--driver", "--branch-fs", "--option-set"):
                parser.addoption(name)
        """)
    )
    (suite / "conftest.py").write_text('pytest_plugins = ("unionfs.options",)\n')
    (suite / "test_fake.py").write_text(FAKE_CHECKS)
    program = tmp / "fake_harness.py"
    program.write_text(
        textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from harness import guestsuite
        guestsuite.guest_dir = lambda: Path({str(suite.parent)!r})
        from harness.cli import main
        sys.exit(main())
        """)
    )
    return program


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    tag = f"ahs{os.getpid() % 100000}"
    ctl = f"{tag}-ctl"
    hosts = {"h1": f"{tag}-h1", "h2": f"{tag}-h2"}
    client = generate(tmp_path / "client_key", "matrix@ctl")
    (tmp_path / "authorized_keys").write_text(client.public_line + "\n")
    program = fake_harness(tmp_path)
    Path("/run/sshd").mkdir(exist_ok=True)
    sshds: list[subprocess.Popen[bytes]] = []
    made: list[str] = []
    entries, states = [], {}
    try:
        for ns in (ctl, *hosts.values()):
            ip("netns", "add", ns)
            made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        for i, (name, ns) in enumerate(hosts.items(), start=1):
            ip(
                "-n",
                ctl,
                "link",
                "add",
                f"v{i}",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            ip("-n", ctl, "addr", "add", f"10.200.{i}.1/24", "dev", f"v{i}")
            ip("-n", ns, "addr", "add", f"10.200.{i}.2/24", "dev", "eth0")
            ip("-n", ctl, "link", "set", f"v{i}", "up")
            ip("-n", ns, "link", "set", "eth0", "up")
            home = tmp_path / name
            home.mkdir()
            hostkey = generate(home / "ssh_host_ed25519_key", f"root@{name}")
            config = home / "sshd_config"
            config.write_text(
                textwrap.dedent(f"""
                ListenAddress 10.200.{i}.2
                HostKey {hostkey.private}
                AuthorizedKeysFile {tmp_path / "authorized_keys"}
                PidFile {home / "sshd.pid"}
                PermitRootLogin prohibit-password
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                UsePAM no
                StrictModes no
                Subsystem sftp internal-sftp
                """)
            )
            log = open(home / "sshd.log", "wb")  # noqa: SIM115 - the sshd's for its life
            sshds.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", ns, str(SSHD), "-D", "-e", "-f", str(config)],
                    stdout=log,
                    stderr=log,
                )
            )
            states[name] = tmp_path / f"state-{name}"
            keytype, b64 = hostkey.public_line.split()[:2]
            env = [f"AUFS_HARNESS_STATE={states[name]}"] + [
                f"{k}={v}" for k, v in os.environ.items() if k == "AUFS_HARNESS_CACHE"
            ]  # the host shares this machine's caches (its image), as a real one has its own
            harness = ["env", *env, sys.executable, str(program)]
            entries.append(
                textwrap.dedent(f"""
                [[host]]
                name = "{name}"
                address = "10.200.{i}.2"
                key = "{client.private}"
                host_key = "{keytype} {b64}"
                cores = 2
                memory_mb = 1400
                harness = {json.dumps(harness)}
                workdir = "{tmp_path / "cells" / name}"
                """)
            )
        inventory = tmp_path / "hosts.toml"
        inventory.write_text("".join(entries))
        yield Lab(ctl, hosts, inventory, states)
    finally:
        for proc in sshds:
            proc.kill()
            proc.wait(10)
        for ns in made:
            kill_all_in(ns)
        time.sleep(0.5)
        left = {ns: netns_pids(ns) for ns in made}
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=30)
        assert not any(left.values()), f"processes left in the namespaces: {left}"
        listed = subprocess.run(
            ["ip", "netns", "list"], check=False, capture_output=True, text=True
        )
        assert not any(ns in listed.stdout for ns in made), "namespaces left"


def test_a_matrix_over_two_hosts_survives_one_dropping(
    bookworm: Image, lab: Lab, tmp_path: Path, fact: list[str]
) -> None:
    matrix = tmp_path / "m.toml"
    matrix.write_text(
        textwrap.dedent("""
        version = 1
        name = "scaleout"
        [defaults]
        timeouts = { boot = 300, suite = 600, check = 120 }
        workers = 1
        fresh_vms = 0
        [[include]]
        name = "stock-{branch_fs}"
        kernel = "stock"
        vary.branch_fs = [["tmpfs"], ["ext4"], ["tmpfs", "ext4"]]
        """)
    )
    results = tmp_path / "results"
    argv = [
        "ip", "netns", "exec", lab.ctl, str(REPO / ".venv" / "bin" / "aufs-harness"), "matrix",
        "run", str(matrix), "--hosts", str(lab.inventory), "--results", str(results),
        "--quiet", "--no-history", "--accel", "tcg", "--memory", "768", "--smp", "1",
    ]  # fmt: skip
    t0 = time.monotonic()
    with open(tmp_path / "matrix.log", "wb") as out:
        ctl = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            # h1 drops once it has a VM up for its cell: every process in it dies.
            while not any(b"qemu-system" in _cmdline(p) for p in netns_pids(lab.hosts["h1"])):
                assert ctl.poll() is None, (tmp_path / "matrix.log").read_text()[-2000:]
                assert time.monotonic() - t0 < 600, "h1 never started a VM"
                time.sleep(1)
            time.sleep(5)
            # h1's sshd dies (listener and sessions): the connection drops, and the
            # run there, QEMU and all, must end by itself (run --tied-to-stdin)
            for pid in netns_pids(lab.hosts["h1"]):
                if b"sshd" in _cmdline(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            dropped_at = time.monotonic() - t0
            left = netns_pids(lab.hosts["h1"])
            while left and time.monotonic() - t0 - dropped_at < DROP_EMPTIES:
                time.sleep(1)
                left = netns_pids(lab.hosts["h1"])
            assert not left, f"left running on h1 after its sshd died: {_cmdlines(left)}"
            emptied = time.monotonic() - t0 - dropped_at
            code = ctl.wait(1200)
        finally:
            if ctl.poll() is None:
                ctl.kill()
    log = (tmp_path / "matrix.log").read_text()
    report = json.loads((results / "latest" / "report.json").read_text())
    cells = {t["target"]: t for t in report["targets"]}
    assert set(cells) == {"stock-tmpfs", "stock-ext4", "stock-tmpfs+ext4"}, log[-3000:]
    on = {name: t["extra"]["host"]["name"] for name, t in cells.items()}
    assert set(on.values()) == {"h1", "h2"}, on
    dropped = [t for t in cells.values() if t["extra"]["host"]["name"] == "h1"]
    assert len(dropped) == 1, on
    assert dropped[0]["verdict"] == "error"
    assert dropped[0]["reason"].startswith("infrastructure: host h1"), dropped[0]["reason"]
    assert Path(dropped[0]["extra"]["host"]["evidence"]).exists()
    finished = [t for t in cells.values() if t["extra"]["host"]["name"] == "h2"]
    assert all(t["verdict"] == "passed" for t in finished), [t["reason"] for t in finished]
    for t in finished:  # the host's console log and pytest log came back under the cell's name
        cell_dir = results / "latest" / t["target"]
        assert Path(t["console_log"]).is_relative_to(cell_dir.resolve()), t["console_log"]
        assert (cell_dir / "vm-1" / "pytest.log").exists() or list(cell_dir.rglob("pytest.log"))
    assert code == 2, log[-2000:]  # an infrastructure error among the cells
    fact.append(
        f"scale-out: {on}; h1's sshd killed at {dropped_at:.0f}s, nothing left on h1 "
        f"{emptied:.1f}s later: {dropped[0]['reason'][:120]}; "
        f"matrix took {time.monotonic() - t0:.0f}s"
    )


def _cmdlines(pids: list[int]) -> list[str]:
    return [_cmdline(p).replace(b"\0", b" ").decode(errors="replace")[:120] for p in pids]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


MANY = 30  # checks in the overhead measurement's cell


@pytest.mark.skipif(
    os.environ.get("AUFS_HARNESS_BENCH_HOSTS") != "1",
    reason="a measurement, not a check: bench/matrix.py --host-overhead runs it "
    "(AUFS_HARNESS_BENCH_HOSTS=1)",
)
def test_overhead_of_going_through_a_host(
    bookworm: Image, lab: Lab, tmp_path: Path, fact: list[str]
) -> None:
    """One cell of MANY trivial checks run here and through h1, alternated twice:
    wall times, and the difference per check."""
    (tmp_path / "guest" / "suite" / "test_many.py").write_text(
        f"import pytest\n\n@pytest.mark.parametrize('i', range({MANY}))\n"
        "def test_many(i):\n    pass\n"
    )
    matrix = tmp_path / "one.toml"
    matrix.write_text(
        'version = 1\nname = "overhead"\n[[include]]\nname = "many"\nkernel = "stock"\n'
        'branch_fs = ["tmpfs"]\nsuite_args = ["-k", "many"]\nworkers = 1\nfresh_vms = 0\n'
    )
    only_h1 = tmp_path / "h1.toml"  # one host: the cell cannot go elsewhere
    only_h1.write_text("[[host]]" + lab.inventory.read_text().split("[[host]]")[1])
    common = ["--quiet", "--no-history", "--accel", "tcg", "--memory", "768", "--smp", "1"]
    program = [sys.executable, str(tmp_path / "fake_harness.py"), "matrix", "run", str(matrix)]
    walls: dict[str, list[float]] = {"direct": [], "host": []}
    for rep in range(2):
        for how in ("direct", "host"):
            results = tmp_path / f"{how}-{rep}"
            argv = [*program, "--results", str(results), *common]
            if how == "host":
                argv = ["ip", "netns", "exec", lab.ctl, *argv, "--hosts", str(only_h1)]
            t0 = time.monotonic()
            done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=1800)
            walls[how].append(time.monotonic() - t0)
            report = json.loads((results / "latest" / "report.json").read_text())
            (cell,) = report["targets"]
            assert cell["verdict"] == "passed", (how, cell["reason"], done.stderr[-2000:])
            assert len(cell["checks"]) == MANY
    direct, host = (statistics.median(walls[k]) for k in ("direct", "host"))
    line = (
        f"host overhead: one cell of {MANY} checks: direct {walls['direct']} s, through h1 "
        f"{walls['host']} s; medians {direct:.1f} vs {host:.1f} s: {host - direct:+.1f} s "
        f"per cell, {(host - direct) / MANY:+.2f} s per check (load {os.getloadavg()[0]:.1f})"
    )
    print(line)
    fact.append(line)
