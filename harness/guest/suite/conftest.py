"""Fixtures and options of the union filesystem conformance suite.

Runs as root, inside a test guest (over pytest-xdist) or directly on a host:

    pytest harness/suite [--driver overlay,aufs] [--branch-fs tmpfs,ext4,xfs,btrfs,mixed]
                         [--option-set defaults,dirperm1,docker]

A check that takes the `lab` fixture runs once per (driver, branch fs) pair on
branch filesystems made fresh for it, and, when marked `option_sets`, once per
aufs mount-option set; a check that takes only `driver` runs once per driver.
A driver whose filesystem is not in /proc/filesystems, or a branch filesystem
this machine cannot make, is skipped with the reason printed.

Around every check the kernel is watched: a marker line goes to /dev/kmsg
before it, new kernel lines are attached to its report, and a check during
which the kernel got newly tainted or logged an oops/WARN/BUG/lockdep splat
fails even if its own assertions held.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.guest.kmsg import FACTS, CheckFacts, read_taint, taint_letters
from unionfs import aufs, sysapi
from unionfs import lab as lab_mod
from unionfs.drivers import DRIVERS, AufsDriver, UnionDriver
from unionfs.kernel import KernelWatch, damage_seen, kernel_workers
from unionfs.lab import OPTION_SETS, Lab, OptionSet

# Options live in their own plugin so the host's xdist controller can load them too.
pytest_plugins = ("unionfs.options",)
_DEVKMSG = Path("/proc/sys/kernel/printk_devkmsg")
#: The hung-task detector (CONFIG_DETECT_HUNG_TASK): a task in D state longer than
#: the timeout is reported as "INFO: task ... blocked for more than N seconds" with
#: its stack, which the host's watchdog takes as the end of the check in flight.
#: The suite shortens both settings while it runs so that a deadlock shows in
#: about HUNG_TASK_TIMEOUT seconds (kernel/hung_task.c; sysctls since 4.19).
_HUNG_TASK = {
    Path("/proc/sys/kernel/hung_task_timeout_secs"): 10,
    Path("/proc/sys/kernel/hung_task_check_interval_secs"): 2,
}
_HUNG_TASK_SAVED = pytest.StashKey[dict[Path, str]]()
_WATCH = pytest.StashKey[KernelWatch]()
_DEVKMSG_SAVED = pytest.StashKey[str]()
_DAMAGED = pytest.StashKey[str]()
#: the first kernel-health problem seen in this process, noted on later failures
_FIRST_PROBLEM: list[str] = []


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _runs_checks_here(config: pytest.Config) -> bool:
    """False in an xdist controller, which only dispatches to workers elsewhere."""
    if hasattr(config, "workerinput"):
        return True
    return not config.getoption("numprocesses", None) and not config.getoption("tx", None)


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "only_drivers(*names): run this check only for these drivers",
        "only_branch_fs(*specs): run this check only on these branch filesystems",
        "fs_independent: the branch filesystem does not matter; run on the first one only",
        "option_sets: run this check under every --option-set (aufs)",
        "defaults_only: run this check with default options only, despite option_sets",
    ):
        config.addinivalue_line("markers", line)
    for name in _csv(config.getoption("--driver")):
        if name not in DRIVERS:
            raise pytest.UsageError(f"--driver: unknown driver {name!r}; know {sorted(DRIVERS)}")
    for spec in _csv(config.getoption("--branch-fs")):
        try:
            lab_mod.parse_fs_spec(spec)
        except ValueError as exc:
            raise pytest.UsageError(f"--branch-fs: {exc}") from None
    for name in _csv(config.getoption("--option-set")):
        if name not in OPTION_SETS:
            raise pytest.UsageError(f"--option-set: unknown {name!r}; know {sorted(OPTION_SETS)}")
    # Userspace writes to /dev/kmsg are rate limited by default, which would
    # drop most per-check markers: lift the limit while checks run here.
    if _runs_checks_here(config) and os.geteuid() == 0:
        with contextlib.suppress(OSError):
            if _DEVKMSG.read_text().strip() == "ratelimit":
                _DEVKMSG.write_text("on\n")
                config.stash[_DEVKMSG_SAVED] = "ratelimit"
        config.stash[_HUNG_TASK_SAVED] = _shorten_hung_task_detection()


def _shorten_hung_task_detection() -> dict[Path, str]:
    """Lower the hung-task timeout and scan interval (only ever lower: 0 means off
    or "use the timeout" and is left alone); the values replaced, to restore."""
    saved: dict[Path, str] = {}
    for path, want in _HUNG_TASK.items():
        with contextlib.suppress(OSError, ValueError):
            old = path.read_text().strip()
            if int(old) == 0 and path.name == "hung_task_timeout_secs":
                continue  # the administrator switched the detector off
            if int(old) == 0 or int(old) > want:
                path.write_text(f"{want}\n")
                saved[path] = old
    return saved


def pytest_unconfigure(config: pytest.Config) -> None:
    saved = config.stash.get(_DEVKMSG_SAVED, None)
    if saved is not None:
        with contextlib.suppress(OSError):
            _DEVKMSG.write_text(saved + "\n")
    # xdist workers share the kernel: one finishing first must not put the
    # detector back to slow while another still runs checks, so they leave it.
    if hasattr(config, "workerinput"):
        return
    for path, old in config.stash.get(_HUNG_TASK_SAVED, {}).items():
        with contextlib.suppress(OSError):
            path.write_text(old + "\n")


def pytest_report_header(config: pytest.Config) -> list[str]:
    remote = [t for t in (config.getoption("tx", None) or []) if not t.startswith("popen")]
    if remote and not hasattr(config, "workerinput"):
        return ["unionfs: drivers, branch filesystems and taint are probed by the remote workers"]
    lines = []
    for name in _csv(config.getoption("--driver")):
        drv = DRIVERS[name]
        state = "available" if drv.available() else f"SKIPPED: {drv.unavailable_reason()}"
        if isinstance(drv, AufsDriver) and drv.available():
            conf = aufs.kernel_config()
            state += f", version {aufs.version_string() or 'unknown'}"
            state += f", brs={aufs.module_param('brs')}"
            state += f", config: {' '.join(sorted(k for k, v in conf.items() if v in ('y', 'm')))}"
        lines.append(f"unionfs driver {name}: {state}")
    for spec in _csv(config.getoption("--branch-fs")):
        reason = lab_mod.fs_unavailable_reason(spec)
        lines.append(f"unionfs branch fs {spec}: {'SKIPPED: ' + reason if reason else 'available'}")
    taint = read_taint()
    if taint is not None:
        lines.append(f"kernel taint at start: {taint} ({taint_letters(taint) or 'clean'})")
    return lines


@dataclass(frozen=True)
class Case:
    driver: str
    fs: str | None = None
    optset: str | None = None

    @property
    def id(self) -> str:
        return "-".join(p for p in (self.driver, self.fs, self.optset) if p)


def _marker_args(metafunc: pytest.Metafunc, name: str) -> set[str] | None:
    marker = metafunc.definition.get_closest_marker(name)
    return set(marker.args) if marker is not None else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    config = metafunc.config
    selected = _csv(config.getoption("--driver"))
    drivers = list(selected)
    only = _marker_args(metafunc, "only_drivers")
    if only is not None:
        drivers = [d for d in drivers if d in only]
    specs: list[str | None] = [None]
    if "lab" in metafunc.fixturenames:
        specs = list(_csv(config.getoption("--branch-fs")))
        only_fs = _marker_args(metafunc, "only_branch_fs")
        if only_fs is not None:
            specs = [s for s in specs if s in only_fs] or [sorted(only_fs)[0]]
        if metafunc.definition.get_closest_marker("fs_independent") is not None:
            specs = specs[:1]
    use_sets = (
        "lab" in metafunc.fixturenames
        and metafunc.definition.get_closest_marker("option_sets") is not None
        and metafunc.definition.get_closest_marker("defaults_only") is None
    )
    cases: list[Case] = []
    for d in drivers:
        sets: list[str | None] = [None]
        if use_sets and d == "aufs":
            sets = list(_csv(config.getoption("--option-set")))
        cases.extend(Case(d, s, o) for s in specs for o in sets)
    if not cases:
        only_txt = ", ".join(sorted(only)) if only is not None else "?"
        reason = f"only for driver {only_txt}; --driver selects {','.join(selected)}"
        skipped = pytest.param(Case("none"), marks=pytest.mark.skip(reason=reason), id="none")
        metafunc.parametrize("case", [skipped], indirect=True)
        return
    metafunc.parametrize("case", cases, ids=[c.id for c in cases], indirect=True)


@pytest.fixture
def case(request: pytest.FixtureRequest) -> Case:
    if os.geteuid() != 0:
        pytest.skip("the union filesystem suite needs root (mount(2), loop devices)")
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def driver(case: Case) -> UnionDriver:
    drv = DRIVERS[case.driver]
    if not drv.available():
        pytest.skip(drv.unavailable_reason())
    return drv


@pytest.fixture
def optset(case: Case) -> OptionSet:
    s = OPTION_SETS[case.optset or "defaults"]
    reason = s.unavailable_reason()
    if reason:
        pytest.skip(f"option set {s.name}: {reason}")
    return s


@pytest.fixture
def lab(
    case: Case, driver: UnionDriver, optset: OptionSet, request: pytest.FixtureRequest
) -> Iterator[Lab]:
    assert case.fs is not None
    reason = lab_mod.fs_unavailable_reason(case.fs)
    if reason:
        pytest.skip(reason)
    the_lab = Lab(driver, case.fs, base=request.config.getoption("--suite-tmp"), optset=optset)
    keep = request.config.getoption("--keep-lab")
    try:
        the_lab.setup()
        yield the_lab
    finally:
        if keep:
            the_lab.keep(Path(keep), request.node.nodeid)
        else:
            the_lab.cleanup()


# --- kernel health ---


@pytest.fixture(autouse=True)
def kmsg(request: pytest.FixtureRequest) -> KernelWatch | None:
    """The kernel log watch of this check (started before any other fixture).

    Checks use kmsg.wait_for(regex) to assert on messages the kernel printed
    while they ran; the report hook below judges kernel health from it.
    """
    return request.node.stash.get(_WATCH, None)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if os.geteuid() != 0:
        return
    damage = damage_seen()
    item.stash[_WATCH] = KernelWatch(item.nodeid)
    if damage and not item.config.getoption("--continue-after-kernel-damage"):
        item.stash[_DAMAGED] = damage
        pytest.skip(
            f"kernel damaged earlier in this run ({damage}); its results would not be "
            "trustworthy: boot a fresh kernel (or pass --continue-after-kernel-damage)"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    watch = item.stash.get(_WATCH, None)
    if watch is None:
        return
    facts = CheckFacts(
        damaged=item.stash.get(_DAMAGED, "") if report.when == "setup" else "",
        workers=kernel_workers(),
        pid=os.getpid(),  # the host matches hung-task reports against it
    )
    try:
        _judge_health(item, report, watch, facts)
    finally:
        # The host reads these fields (harness/resume.py), never the wording above.
        report.user_properties.append((FACTS, facts.to_dict()))


def _judge_health(
    item: pytest.Item, report: pytest.TestReport, watch: KernelWatch, facts: CheckFacts
) -> None:
    """Attach the kernel lines of this phase; fail the check on new taint or
    suspicious lines (unless --no-kernel-health), recording both in `facts`."""
    lines = watch.new_lines()
    if report.failed and _FIRST_PROBLEM:
        note = f"(kernel health already degraded in this worker since {_FIRST_PROBLEM[0]})"
        report.sections.append((f"Captured kernel health {report.when}", note))
    if lines:
        # on this report, and on the item so that later phases' reports carry it too
        report.sections.append((f"Captured kernel log {report.when}", "\n".join(lines)))
        item.add_report_section(report.when, "kernel log", "\n".join(lines))
    bad = KernelWatch.suspicious(lines)
    tainted = watch.new_taint() if report.when != "setup" else 0
    if report.when == "teardown":
        watch.close()
    if not bad and not tainted:
        return
    facts.lines, facts.taint_added = bad, taint_letters(tainted)
    problem = [f"kernel health ({report.when}) of {item.nodeid}:"]
    if tainted:
        problem.append(
            f"kernel newly tainted: bits {tainted:#x} ({taint_letters(tainted)}); "
            f"taint was {watch.taint_before} before the check"
        )
    if bad:
        problem.append("suspicious kernel lines:\n  " + "\n  ".join(bad))
    if facts.shared_kernel:
        problem.append(
            f"({facts.workers} xdist workers share this kernel: "
            "a concurrent check may be the cause)"
        )
    text = "\n".join(problem)
    if not _FIRST_PROBLEM:
        _FIRST_PROBLEM.append(f"{item.nodeid} ({report.when}): {(bad or ['new taint'])[0]}")
    report.sections.append((f"Captured kernel health {report.when}", text))
    item.add_report_section(report.when, "kernel health", text)
    if item.config.getoption("--no-kernel-health"):
        return
    if report.passed:
        facts.health_only = True
        report.outcome = "failed"
        report.longrepr = text
    elif report.failed:
        report.longrepr = f"{report.longrepr}\n\n{text}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Safety net for interrupted runs: detach whatever a lab could not undo.
    for m in sorted(lab_mod.leaked_mounts(), key=lambda m: -len(m.target)):
        with contextlib.suppress(OSError):
            sysapi.umount(m.target, sysapi.MNT_DETACH)
