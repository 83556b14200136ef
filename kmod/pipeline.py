"""kernel source -> aufs branch -> patch series -> config -> build -> artifact.

run(spec) is the one entry point. Its result is a BuildResult whose status
is "built", "patch-failed" or "build-failed"; bad input and broken machinery
raise UserError / InfraError instead.

Two caches make repeated runs cheap:
- the artifact store (harness.core.store.Store under cache_dir()/kmod/artifacts),
  keyed by every input: same inputs never rebuild and report "cached";
- a work tree per (kernel, aufs commit, patch set): a changed config (say one
  aufs option) rebuilds incrementally in it, and ccache covers the rest.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.core.deadline import Deadline
from harness.core.store import Store, key_of, locked
from kmod import aufs, build, config, patches, source, worktrees
from kmod.source import kmod_cache
from kmod.version import KernelVersion

log = logging.getLogger(__name__)

# Bump when the recipe (commands, template semantics, artifact layout) changes.
RECIPE_VERSION = 2
Status = Literal["built", "patch-failed", "build-failed"]
ARTIFACTS = {
    "bzImage": build.BZIMAGE,
    "aufs.ko": build.AUFS_KO,
    "config": Path(".config"),
    "System.map": Path("System.map"),
}


@dataclass(frozen=True)
class BuildSpec:
    kernel: str
    aufs_src: str = aufs.UPSTREAM_URL
    aufs_ref: str | None = None
    fixup_dir: Path | None = None
    config_fragment: Path | None = None
    aufs_options: tuple[str, ...] = ()
    branch_fs: tuple[str, ...] = config.ALWAYS_BRANCH_FS
    config_base: config.Base = "allnoconfig"
    loopback: bool = False
    jobs: int = field(default_factory=build.default_jobs)

    def reproducer(self, aufs_commit: str | None = None) -> str:
        argv = ["aufs-harness", "kmod", "build", "--kernel", self.kernel]
        argv += ["--aufs-src", self.aufs_src, "--aufs-ref", aufs_commit or self.aufs_ref or ""]
        if not (aufs_commit or self.aufs_ref):
            argv = argv[:-2]
        if self.fixup_dir:
            argv += ["--fixup-dir", str(self.fixup_dir)]
        if self.config_fragment:
            argv += ["--config-fragment", str(self.config_fragment)]
        for opt in self.aufs_options:
            argv += ["--aufs-option", opt]
        if set(self.branch_fs) != set(config.ALWAYS_BRANCH_FS):
            argv += ["--branch-fs", ",".join(self.branch_fs)]
        if self.config_base != "allnoconfig":
            argv += ["--config-base", self.config_base]
        if self.loopback:
            argv.append("--loopback")
        return shlex.join(argv)


@dataclass
class BuildResult:
    status: Status
    details: list[str]
    kernel: dict[str, str | None]
    aufs: dict[str, str]
    patches: list[dict[str, Any]] = field(default_factory=list)
    artifacts: dict[str, Path] = field(default_factory=dict)
    metadata: Path | None = None
    kernel_release: str | None = None
    vermagic: str | None = None
    key: str | None = None
    cached: bool = False
    log: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    reproducer: str = ""
    # patch-failed: each rejected hunk with the kernel's text around it (patches.keep_failed_hunks)
    rejects: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "built"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["artifacts"] = {k: str(v) for k, v in self.artifacts.items()}
        data["metadata"] = str(self.metadata) if self.metadata else None
        data["log"] = str(self.log) if self.log else None
        return data


class _Failed(Exception):
    """Carries a failed BuildResult out of Store.get_or_build (nothing is stored)."""

    def __init__(self, result: BuildResult) -> None:
        super().__init__(result.status)
        self.result = result


class _Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.timings: dict[str, float] = {}

    @contextmanager
    def step(self, name: str, what: str) -> Iterator[None]:
        t0 = time.monotonic()
        log.info("[%6.1fs] %s ...", t0 - self.start, what)
        try:
            yield
        finally:
            t1 = time.monotonic()
            self.timings[name] = round(t1 - t0, 3)
            log.info("[%6.1fs] %s: %.1fs", t1 - self.start, name, t1 - t0)


def artifact_store() -> Store:
    return Store(kmod_cache() / "artifacts")


def _kernel_info(ks: source.KernelSource) -> dict[str, str | None]:
    return {
        "spec": ks.spec,
        "version": str(ks.version),
        "package": ks.package,
        "package_version": ks.package_version,
        "identity": ks.identity,
        "origin": ks.origin,
        "pocket": ks.pocket,
        "url": ks.url,
        "sha256": ks.sha256,
        "commit": ks.commit,
    }


def _aufs_info(choice: aufs.AufsChoice) -> dict[str, str]:
    return {
        "url": choice.url,
        "branch": choice.branch,
        "commit": choice.commit,
        "reason": choice.reason,
        "distance": choice.distance,
    }


def cache_inputs(
    ks: source.KernelSource,
    aufs_commit: str,
    plan: patches.PatchPlan,
    config_base: str,
    fragment: str,
    compiler: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(work tree inputs, artifact inputs): every input that can change the output.

    The work tree depends on the sources and patches only; the artifact also on
    the configuration and the compiler. make -j is not an input.
    """
    tree_inputs: dict[str, Any] = {
        "recipe": RECIPE_VERSION,
        "kernel": ks.identity,
        "aufs_commit": aufs_commit,
        "patches": plan.fingerprint(),
    }
    inputs = {
        **tree_inputs,
        "kernel_version": str(ks.version),
        "arch": build.ARCH,
        "config_base": config_base,
        "fragment": fragment,
        "compiler": compiler,
    }
    return tree_inputs, inputs


def sources(
    spec: BuildSpec, clock: _Clock, deadline: Deadline
) -> tuple[source.KernelSource, aufs.AufsChoice]:
    """The kernel source and the aufs commit for it.

    When the kernel version is known before the download (a Debian package
    index, a tarball's name), the aufs branch is chosen first, so "no aufs
    branch fits" costs no download. UserError for bad input and no fitting
    branch; InfraError when a source cannot be reached.
    """
    provider = source.provider_for(spec.kernel)
    choice: aufs.AufsChoice | None = None
    with clock.step("index", f"kernel version of {spec.kernel}"):
        expected = provider.expected_version(deadline.sub(600, "kernel index"))
    if expected is not None:
        log.info("%s is Linux %s (from its index or name)", spec.kernel, expected)
        choice = _select(spec, expected, clock, deadline)
    with clock.step("source", f"kernel source {spec.kernel}"):
        ks = provider.fetch(deadline.sub(3600, "kernel source"))
    log.info("%s", ks.describe())
    if choice is None or ks.version != expected:
        if expected is not None:
            log.warning("%s unpacked as Linux %s, not %s", spec.kernel, ks.version, expected)
        choice = _select(spec, ks.version, clock, deadline)
    return ks, choice


def _select(
    spec: BuildSpec, kernel: KernelVersion, clock: _Clock, deadline: Deadline
) -> aufs.AufsChoice:
    with clock.step("aufs", f"aufs source {spec.aufs_src}"):
        choice = aufs.select(spec.aufs_src, kernel, deadline.sub(1800, "aufs"), spec.aufs_ref)
    log.info("aufs branch %s (%s), commit %s", choice.branch, choice.reason, choice.commit[:12])
    return choice


def run(spec: BuildSpec, deadline: Deadline) -> BuildResult:
    clock = _Clock()
    ks, choice = sources(spec, clock, deadline)
    plan = patches.plan(choice.tree, choice.major, spec.fixup_dir, spec.loopback)
    extra = spec.config_fragment.read_text() if spec.config_fragment else None
    fragment = config.render_fragment(
        config.aufs_options(spec.aufs_options),
        spec.config_base,
        extra,
        spec.branch_fs,
        kernel=(ks.version.version, ks.version.patchlevel),
    )
    tree_inputs, inputs = cache_inputs(
        ks, choice.commit, plan, spec.config_base, fragment, build.compiler_version(deadline)
    )
    base = BuildResult(
        status="built",
        details=[],
        kernel=_kernel_info(ks),
        aufs=_aufs_info(choice),
        reproducer=dataclasses.replace(spec, kernel=ks.pinned_spec).reproducer(choice.commit),
    )

    def produce(out: Path) -> dict[str, Any]:
        return _produce(spec, ks, choice, plan, fragment, key_of(tree_inputs), key_of(inputs),
                        out, base, clock, deadline)  # fmt: skip

    try:
        entry = artifact_store().get_or_build(inputs, produce)
    except _Failed as failed:
        clock.timings["total"] = round(time.monotonic() - clock.start, 3)
        failed.result.timings = clock.timings
        return failed.result
    meta = entry.meta()
    base.key = entry.key
    base.cached = entry.hit
    base.artifacts = {name: entry.path / name for name in ARTIFACTS}
    base.metadata = entry.path / "meta.json"
    base.log = entry.path / "build.log"
    base.kernel_release = meta.get("kernel_release")
    base.vermagic = meta.get("vermagic")
    base.patches = meta.get("patches", [])
    base.details = [f"{p['summary']}" for p in base.patches]
    clock.timings["total"] = round(time.monotonic() - clock.start, 3)
    base.timings = clock.timings
    log.info(
        "%s: %s in %.1fs", "cached" if entry.hit else "built", entry.path, clock.timings["total"]
    )
    return base


def _produce(
    spec: BuildSpec,
    ks: source.KernelSource,
    choice: aufs.AufsChoice,
    plan: patches.PatchPlan,
    fragment: str,
    work_key: str,
    key: str,
    out: Path,
    base: BuildResult,
    clock: _Clock,
    deadline: Deadline,
) -> dict[str, Any]:
    """Fill `out` with the artifacts, or raise _Failed with the result."""
    work = kmod_cache() / "work" / work_key
    work.parent.mkdir(parents=True, exist_ok=True)
    with locked(worktrees.lock_path(work), f"kmod: another run is building in work tree {work}"):
        worktrees.mark_used(work)
        worktrees.prune(work.parent, worktrees.keep_count(), work)  # before the disk fills
        reports = _prepared(ks, choice, plan, work, clock, deadline)
        base.patches = reports
        failed = [r for r in reports if r["status"] == "failed"]
        if failed:
            base.status = "patch-failed"
            base.details = [r["summary"] for r in failed]
            base.log = work / "logs"
            base.rejects = [h for r in failed for h in r.get("failed_hunks", [])]
            base.details += [
                f"{h['patch']}: {h['file']} hunk #{h['hunk']}: kept with its context in "
                f"{h['kept']}" for h in base.rejects
            ]  # fmt: skip
            raise _Failed(base)
        tree = work / "src"
        logs = work / "logs"
        with clock.step("config", f"config ({spec.config_base} + fragment)"):
            config.make_config(
                build.make_argv(tree), tree, fragment, spec.config_base, logs / "config.log",
                deadline.sub(1200, "config"),
            )  # fmt: skip
        with clock.step("build", f"make -j{spec.jobs} bzImage modules"):
            outcome = build.build(tree, spec.jobs, logs / f"build-{key}.log", deadline)
        if not outcome.ok:
            base.status = "build-failed"
            base.details = outcome.errors
            base.log = outcome.log
            base.kernel_release = outcome.release
            base.vermagic = outcome.vermagic
            raise _Failed(base)
        for name, rel in ARTIFACTS.items():
            shutil.copy2(tree / rel, out / name)
        shutil.copy2(outcome.log, out / "build.log")
        (out / "fragment.config").write_text(fragment)
    return {
        "kernel": base.kernel,
        "aufs": base.aufs,
        "patches": reports,
        "kernel_release": outcome.release,
        "vermagic": outcome.vermagic,
        "reproducer": base.reproducer,
        "jobs": spec.jobs,
        "timings": dict(clock.timings),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _prepared(
    ks: source.KernelSource,
    choice: aufs.AufsChoice,
    plan: patches.PatchPlan,
    work: Path,
    clock: _Clock,
    deadline: Deadline,
) -> list[dict[str, Any]]:
    """The work tree's patch reports, preparing it first unless a previous run did."""
    state = work / "state.json"
    if state.is_file():
        data: dict[str, Any] = json.loads(state.read_text())
        reports: list[dict[str, Any]] = data["patches"]
        log.info("work tree %s prepared before: reusing it", work)
        return reports
    shutil.rmtree(work, ignore_errors=True)  # an interrupted preparation
    work.mkdir(parents=True)
    with clock.step("patch", "copy the kernel tree and apply the aufs series"):
        result = patches.prepare(
            ks.tree, choice.tree, plan, dest=work / "src", logdir=work / "logs",
            deadline=deadline.sub(1800, "patch"), hardlink=ks.owned,
        )  # fmt: skip
    reports = [r.to_json() for r in result.reports]
    if result.failed:
        # The tree itself is of no use; keep the reports and logs only.
        shutil.rmtree(work / "src", ignore_errors=True)
    state.write_text(json.dumps({"patches": reports}, indent=2))
    return reports
