"""What a recorded cell ran, found again: its report, its kernel build and its
image in the store (rebuilt when evicted, saying so), and which checks to run.

A cell is one target of a results directory (harness.resultsdir): named by its
label ("debian:bullseye aufs") or its directory slug ("debian-bullseye-aufs").
Its report's extra["build"] is the kmod BuildResult (store key, aufs commit,
the reproducer command line); extra["cell"], when a matrix wrote it, holds the
cell's axes (kernel, aufs_ref, fixup_dir, distro, drivers, branch_fs,
aufs_options, scenario). The image is named by the image stage's note (its store
key). A docker cell (harness.scenario) is booted with its scenario's image,
command line and memory, and dockerd started, as the runner does.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import scenario as scenarios
from harness.bootspec import debian_boot, image_recipe
from harness.core.deadline import Deadline
from harness.core.errors import TargetFailure, UserError
from harness.core.store import key_of
from harness.results import ERROR, FAILED, HUNG, CheckResult, TargetReport, read_json
from harness.resultsdir import REPORT_JSON, slug
from harness.targets import Target
from kmod import config
from kmod import pipeline as kmod_pipeline
from kmod.pipeline import ARTIFACTS, BuildResult, BuildSpec, artifact_store
from vm.image import Image, build_image, images_store
from vm.image import stored_image as stored_image_of
from vm.machine import BootSpec

log = logging.getLogger(__name__)

RED = (FAILED, ERROR, HUNG)
IMAGE_KEY_RE = re.compile(r"images/([0-9a-f]{24})/|image ([0-9a-f]{24}) reused")


@dataclass(frozen=True)
class Cell:
    """One recorded target: its report and where its results directory is."""

    results: Path  # the run's results directory (holds report.json)
    report: TargetReport

    @property
    def label(self) -> str:
        return self.report.target

    @property
    def dir(self) -> Path:
        return self.results / slug(self.label)

    @property
    def axes(self) -> dict[str, Any]:
        """The matrix's axes of this cell ({} for a single-target run)."""
        cell: dict[str, Any] = self.report.extra.get("cell") or {}
        return cell

    @property
    def build(self) -> dict[str, Any] | None:
        """The kmod BuildResult as recorded (BuildResult.to_json), None for a stock kernel."""
        build: dict[str, Any] | None = self.report.extra.get("build")
        return build

    def red_checks(self) -> list[CheckResult]:
        """The checks that failed, errored or hung, in report order."""
        return [c for c in self.report.checks if c.outcome in RED]

    @property
    def image(self) -> dict[str, Any]:
        """The image facts the runner recorded (bootspec.image_facts), {} when
        an older harness recorded the cell."""
        image: dict[str, Any] = self.report.extra.get("image") or {}
        return image

    @property
    def image_key(self) -> str | None:
        """The image's store key: as the runner recorded it, else from the
        image stage's note (older reports), else None."""
        if self.image.get("key"):
            return str(self.image["key"])
        for st in self.report.stages:
            if st.name == "image":
                m = IMAGE_KEY_RE.search(st.detail)
                if m:
                    return m.group(1) or m.group(2)
        return None

    @property
    def scenario(self) -> str:
        """What ran besides boot and load ("suite" or "docker"): as recorded,
        else the matrix axis, else "docker" when it had a docker stage (a report
        older than the recorded image facts), else the suite."""
        recorded = self.image.get("scenario") or self.axes.get("scenario")
        if recorded:
            return str(recorded)
        if any(st.name.startswith("docker") for st in self.report.stages):
            return scenarios.DOCKER
        return scenarios.SUITE

    @property
    def distro(self) -> str:
        """The Debian suite of the cell's image: its axis, else the recorded
        image facts, else the image's stored recipe, else bookworm (run's
        default), with a warning."""
        if self.axes.get("distro"):
            return str(self.axes["distro"])
        if self.image.get("suite"):
            return str(self.image["suite"])
        key = self.image_key
        if key is not None:
            meta = images_store().path(key) / "meta.json"
            if meta.is_file():
                suite = json.loads(meta.read_text()).get("inputs", {}).get("suite")
                if suite:
                    return str(suite)
        if self.scenario == scenarios.DOCKER:
            return scenarios.DOCKER_DISTRO
        log.warning("%s: its image's Debian suite is not recorded: assuming bookworm", self.label)
        return "bookworm"

    def target(self) -> Target:
        """The cell as a Target of the harness's image: its suite and scenario
        (its kernel comes from the store: stored_build)."""
        return Target(distro=self.distro, scenario=self.scenario)

    @property
    def branch_fs(self) -> str:
        """The suite's --branch-fs of the cell (its axis, else its build's)."""
        if self.axes.get("branch_fs"):
            fs = self.axes["branch_fs"]
            return ",".join(fs) if isinstance(fs, list | tuple) else str(fs)
        if self.build is None:
            return config.DEFAULT_BRANCH_FS
        fs = self.build_spec().branch_fs
        # a reproducer names --branch-fs only when it is not the default
        return config.DEFAULT_BRANCH_FS if fs == config.ALWAYS_BRANCH_FS else ",".join(fs)

    def suite_args(self) -> list[str]:
        """The suite options the cell ran with: --branch-fs, and --driver if an axis."""
        args = [f"--branch-fs={self.branch_fs}"]
        drivers = self.axes.get("drivers")
        if drivers:
            args.append(f"--driver={','.join(drivers) if isinstance(drivers, list) else drivers}")
        return args

    def build_spec(
        self, aufs_src: str | None = None, fixup_dir: Path | None = None, jobs: int | None = None
    ) -> BuildSpec:
        """The BuildSpec that builds this cell's kernel again: its recorded
        reproducer (pinned to the package version it built, at the aufs commit
        it built), with the aufs source and fix-up directory replaced when given.
        Raises UserError for a stock-kernel cell or a reproducer it cannot read."""
        build = self.build
        if build is None:
            raise UserError(f"cell {self.label!r} booted a stock kernel: it has no build to redo")
        spec = spec_from_reproducer(str(build.get("reproducer") or ""))
        kernel = build.get("kernel") or {}
        pinned = spec.kernel
        if pinned.startswith("debian:") and "=" not in pinned and kernel.get("package_version"):
            pinned = f"{pinned}={kernel['package_version']}"
        commit = (build.get("aufs") or {}).get("commit") or spec.aufs_ref
        changes: dict[str, Any] = {"kernel": pinned, "aufs_ref": commit}
        if aufs_src is not None:
            changes["aufs_src"] = aufs_src
        if fixup_dir is not None:
            changes["fixup_dir"] = fixup_dir
        if jobs is not None:
            changes["jobs"] = jobs
        return dataclasses.replace(spec, **changes)


def spec_from_reproducer(line: str) -> BuildSpec:
    """The BuildSpec a BuildSpec.reproducer() line describes ("aufs-harness kmod
    build --kernel ... [--aufs-src ...]"). Paths are taken as written, not checked.
    Raises UserError when the line is not such a command."""
    argv = shlex.split(line)
    if argv[:3] != ["aufs-harness", "kmod", "build"]:
        raise UserError(f"the recorded build has no reproducer command line: {line[:80]!r}")
    p = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    p.add_argument("--kernel", required=True)
    p.add_argument("--aufs-src", default=BuildSpec.aufs_src)
    p.add_argument("--aufs-ref")
    p.add_argument("--fixup-dir", type=Path)
    p.add_argument("--config-fragment", type=Path)
    p.add_argument("--aufs-option", action="append", default=[])
    p.add_argument("--branch-fs", default=",".join(config.ALWAYS_BRANCH_FS))
    p.add_argument("--config-base", default=config.DEFAULT_BASE)
    p.add_argument("--loopback", action="store_true")
    try:
        ns, rest = p.parse_known_args(argv[3:])
    except (argparse.ArgumentError, SystemExit) as exc:
        raise UserError(f"the recorded reproducer cannot be read: {line[:120]!r}") from exc
    if ns.config_base not in config.BASES:
        raise UserError(f"the recorded reproducer's --config-base {ns.config_base} is unknown")
    if rest:
        raise UserError(f"the recorded reproducer has arguments this harness does not know: {rest}")
    return BuildSpec(
        kernel=ns.kernel,
        aufs_src=ns.aufs_src,
        aufs_ref=ns.aufs_ref,
        fixup_dir=ns.fixup_dir,
        config_fragment=ns.config_fragment,
        aufs_options=tuple(ns.aufs_option),
        branch_fs=config.branch_filesystems(ns.branch_fs),
        config_base=ns.config_base,
        loopback=ns.loopback,
    )


def find_cell(results: Path, cell: str) -> Cell:
    """The cell named `cell` (a target label or its directory slug) of the run
    whose results directory is `results` (a `latest` link is followed).
    Raises UserError naming the cells there when none matches."""
    root = results.expanduser().resolve()
    report_json = root / REPORT_JSON
    if not report_json.is_file():
        raise UserError(f"{results} has no {REPORT_JSON}: give a run's results directory")
    try:
        reports = read_json(report_json)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{report_json} cannot be read as a report: {exc}") from exc
    for r in reports:
        if cell in (r.target, slug(r.target)):
            return Cell(root, r)
    names = ", ".join(f"{r.target!r} ({slug(r.target)})" for r in reports) or "none"
    raise UserError(f"no cell {cell!r} in {results}: its cells are {names}")


def select_checks(cell: Cell, check: str | None) -> list[CheckResult]:
    """The recorded checks to run again: those matching `check` (a node id, or
    any part of one: "test_x[aufs-ext4-defaults]", else a word of a red check's
    message: "removexattr"), or every red check of the
    cell when `check` is None. Raises UserError when nothing matches."""
    if check is not None and not check.strip():  # "" is in every node id: all checks
        raise UserError(
            "CHECK is empty (it would match every check): give a node id or part of one, "
            "or leave it out for the cell's failed checks"
        )
    if check is None:
        red = cell.red_checks()
        if not red:
            raise UserError(f"cell {cell.label!r} has no failed check: name the check to run")
        return red
    exact = [c for c in cell.report.checks if c.nodeid == check]
    if exact:
        return exact
    found = [c for c in cell.report.checks if check in c.nodeid]
    if not found:  # a word of a red check's message ("removexattr")
        found = [c for c in cell.red_checks() if check in c.message]
    if not found:
        raise UserError(
            f"no check matching {check!r} in cell {cell.label!r}: give a node id from its report"
        )
    return found


def keyword_args(checks: list[CheckResult]) -> list[str]:
    """pytest arguments that select exactly these checks in the guest suite,
    whose controller always collects the whole `suite` directory: a -k
    expression of (module file and test name) per check."""
    terms = []
    for c in checks:
        module = c.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
        terms.append(f"({module} and {c.name})")
    return ["-k", " or ".join(terms)]


# -- the store --------------------------------------------------------------
def stored_build(cell: Cell, deadline: Deadline, **overrides: Any) -> tuple[BuildResult, str]:
    """The cell's kernel and aufs.ko: its store entry when still there, else
    built again from its reproducer (`overrides`: Cell.build_spec's). Returns
    the result and one line saying which. Raises UserError for a stock-kernel
    cell, TargetFailure when the rebuild fails, what kmod raises otherwise."""
    recorded = cell.build
    if recorded is None:
        raise UserError(f"cell {cell.label!r} booted a stock kernel: no kernel in the store")
    key = str(recorded.get("key") or "")
    entry = artifact_store().lookup(key) if key else None
    if entry is not None:
        meta = entry.meta()
        result = BuildResult(
            status="built",
            details=[str(p["summary"]) for p in meta.get("patches", [])],
            kernel=meta.get("kernel", {}),
            aufs=meta.get("aufs", {}),
            patches=meta.get("patches", []),
            artifacts={name: entry.path / name for name in ARTIFACTS},
            metadata=entry.path / "meta.json",
            kernel_release=meta.get("kernel_release"),
            vermagic=meta.get("vermagic"),
            key=key,
            cached=True,
            log=entry.path / "build.log",
            reproducer=str(meta.get("reproducer", "")),
        )
        line = f"kernel {result.kernel_release} and aufs.ko from the store (key {key})"
        return result, line + same_config(recorded, result)
    spec = cell.build_spec(**overrides)
    log.warning("kernel build %s is no longer in the store: building it again", key or "(none)")
    result = kmod_pipeline.run(spec, deadline)
    if not result.ok:
        raise TargetFailure(f"the rebuild failed: {result.status}: {result.details[:1]}")
    line = f"kernel build {key or '(none)'} was evicted: rebuilt"
    if result.key != key:
        line += (
            f" as key {result.key}, not {key}: its inputs changed since the cell ran (harness "
            "version, config fragment or compiler), so the kernel may differ"
        )
        log.warning("%s", line)
    return result, line + same_config(recorded, result)


def same_config(recorded: dict[str, Any], result: BuildResult) -> str:
    """ "; .config sha256 X, as recorded" (or "..., NOT the recorded Y"), or ""
    when the cell's report has no config checksum (only a bundle's has)."""
    want = str(recorded.get("config_sha256") or "")
    config = result.artifacts.get("config")
    if not want or config is None or not config.is_file():
        return ""
    got = hashlib.sha256(config.read_bytes()).hexdigest()
    if got == want:
        return f"; .config sha256 {got[:16]}, as recorded"
    log.warning(".config sha256 %s is not the recorded %s", got, want)
    return f"; .config sha256 {got[:16]}, NOT the recorded {want[:16]}"


def stored_image(cell: Cell, deadline: Deadline) -> tuple[Image, str]:
    """The cell's image: its store entry when still there, else built from the
    harness's recipe for its Debian suite and scenario (bootspec.image_recipe).
    Returns the image and one line saying which.
    Raises what vm.image raises when it cannot build one."""
    key = cell.image_key
    image = stored_image_of(key) if key else None
    if image is not None:
        return image, f"image {key} from the store"
    recipe = image_recipe(cell.target())
    if key:
        log.warning("image %s is no longer in the store: building debian %s", key, recipe.suite)
    image = build_image(recipe, deadline)
    new_key = key_of(recipe.inputs())
    line = f"image {key or '(unrecorded)'} not in the store: debian {recipe.suite} {new_key}"
    if key and new_key != key:
        line += " (a different recipe: the image may differ)"
    return image, line


def boot_spec(cell: Cell, image: Image, build: BuildResult | None) -> BootSpec:
    """What to boot: the image with the build's kernel (no initrd), or with its own
    stock kernel, exactly as the runner boots the cell (harness.bootspec), with
    its scenario's kernel command line."""
    return debian_boot(cell.target(), image, build)
