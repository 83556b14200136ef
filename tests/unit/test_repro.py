"""A recorded cell found again: report lookup, build spec, checks to rerun, kept VMs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from harness import keptvm
from harness.bootspec import image_facts, image_recipe
from harness.core.errors import UserError
from harness.core.store import key_of
from harness.matrix import schema
from harness.repro import Cell, find_cell, keyword_args, select_checks, spec_from_reproducer
from harness.results import FAILED, PASSED, CheckResult, Stage, TargetReport
from harness.resultsdir import ResultsDir
from harness.runner import Stop
from harness.targets import Target
from tests.unit.suite_fakes import c, outcome
from tests.unit.test_runner import fleet, run_vms
from vm.machine import vms_root

REPRODUCER = (
    "aufs-harness kmod build --kernel debian:bullseye --aufs-src /src/aufs.bundle "
    "--aufs-ref 0c55dd9dcf13d5de98218aca4b1a6ad1181acb33 --fixup-dir /src/fixups"
)


def _report(**extra: Any) -> TargetReport:
    r = TargetReport("debian:bullseye aufs", verdict=FAILED)
    r.stages = [Stage("image", "ok", 1.0, "built /c/images/802d6dfab2865ba11c68df76/rootfs.img")]
    r.checks = [
        CheckResult(
            "suite/test_a.py::test_x[aufs-ext4]",
            FAILED,
            message="expected: ENODATA after removexattr",
        ),
        CheckResult("suite/test_a.py::test_x[aufs-tmpfs]", PASSED),
        CheckResult("suite/test_b.py::test_y[overlay-tmpfs]", FAILED, message="expected: mtime"),
    ]
    r.extra = {
        "build": {
            "key": "cc5272aae063d6ae5f77e7a5",
            "kernel": {"package_version": "5.10.223-1"},
            "aufs": {"commit": "0c55dd9dcf13d5de98218aca4b1a6ad1181acb33"},
            "reproducer": REPRODUCER,
        },
        **extra,
    }
    return r


def _results(tmp_path: Path, report: TargetReport) -> Path:
    results = ResultsDir.new(tmp_path / "results")
    results.write([report])
    return tmp_path / "results" / "latest"


def test_a_cell_is_found_by_label_or_slug_through_latest(tmp_path: Path) -> None:
    where = _results(tmp_path, _report())
    assert find_cell(where, "debian:bullseye aufs").label == "debian:bullseye aufs"
    cell = find_cell(where, "debian-bullseye-aufs")
    assert cell.dir.name == "debian-bullseye-aufs" and not cell.results.is_symlink()
    with pytest.raises(UserError, match=r"no cell 'nope'.*'debian:bullseye aufs' \(debian-"):
        find_cell(where, "nope")
    with pytest.raises(UserError, match=r"has no report\.json"):
        find_cell(tmp_path, "x")


def test_the_build_spec_is_pinned_to_the_package_and_commit_it_built() -> None:
    spec = Cell(Path("/r"), _report()).build_spec()
    assert spec.kernel == "debian:bullseye=5.10.223-1"
    assert spec.aufs_ref == "0c55dd9dcf13d5de98218aca4b1a6ad1181acb33"
    assert spec.aufs_src == "/src/aufs.bundle" and spec.fixup_dir == Path("/src/fixups")
    moved = Cell(Path("/r"), _report()).build_spec(aufs_src="/elsewhere", fixup_dir=Path("f"))
    assert moved.aufs_src == "/elsewhere" and moved.fixup_dir == Path("f")


def test_a_reproducer_round_trips_every_option() -> None:
    spec = spec_from_reproducer(
        REPRODUCER + " --aufs-option SHWH=n --branch-fs tmpfs,xfs --config-base defconfig "
        "--loopback --config-fragment /f.config"
    )
    assert spec.aufs_options == ("SHWH=n",) and spec.branch_fs == ("tmpfs", "xfs")
    assert spec.loopback and spec.config_base == "defconfig"
    assert spec_from_reproducer(spec.reproducer()) == spec
    with pytest.raises(UserError, match="no reproducer"):
        spec_from_reproducer("make all")
    with pytest.raises(UserError, match="does not know"):
        spec_from_reproducer(REPRODUCER + " --frobnicate")


def test_cell_facts_for_the_suite() -> None:
    cell = Cell(Path("/r"), _report())
    assert cell.image_key == "802d6dfab2865ba11c68df76"
    assert cell.suite_args() == ["--branch-fs=tmpfs,ext4"]  # the run's default, in its order
    axes = Cell(Path("/r"), _report(cell={"distro": "trixie", "branch_fs": ["xfs"],
                                          "drivers": ["aufs"]}))  # fmt: skip
    assert axes.distro == "trixie"
    assert axes.suite_args() == ["--branch-fs=xfs", "--driver=aufs"]


def test_the_recorded_image_and_scenario_are_what_repro_boots(tmp_path: Path) -> None:
    docker = Target(distro="bullseye", scenario="docker")
    facts = image_facts(docker)
    assert facts == {"key": key_of(image_recipe(docker).inputs()), "suite": "bullseye",
                     "scenario": "docker", "user_image": None}  # fmt: skip
    assert facts["key"] != image_facts(Target(distro="bullseye"))["key"]  # docker's packages
    cell = Cell(Path("/r"), _report(image=facts))
    assert cell.image_key == facts["key"]  # not the stage note's older key
    assert cell.target() == docker
    assert cell.distro == "bullseye" and cell.scenario == "docker"
    # a report of an older harness: the stage note's key, the suite scenario
    old = Cell(Path("/r"), _report())
    assert (old.image_key, old.scenario) == ("802d6dfab2865ba11c68df76", "suite")
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"")
    assert image_facts(Target(image=image))["user_image"] == "disk.qcow2"
    document = schema.load_schema(schema.REPORT)
    image_schema = document["$defs"]["cell_report"]["properties"]["extra"]["properties"]["image"]
    for facts in (image_facts(docker), image_facts(Target(image=image))):
        jsonschema.validate(facts, image_schema)


def test_checks_to_rerun() -> None:
    cell = Cell(Path("/r"), _report())
    assert [x.outcome for x in select_checks(cell, None)] == [FAILED, FAILED]
    assert len(select_checks(cell, "test_x")) == 2  # any part of a node id
    exact = select_checks(cell, "suite/test_a.py::test_x[aufs-tmpfs]")
    assert [x.outcome for x in exact] == [PASSED]
    assert [x.nodeid for x in select_checks(cell, "removexattr")] == [
        "suite/test_a.py::test_x[aufs-ext4]"
    ]  # a word of a red check's message
    with pytest.raises(UserError, match="no check matching"):
        select_checks(cell, "zzz")
    assert keyword_args(select_checks(cell, "test_x[aufs-ext4]")) == [
        "-k",
        "(test_a.py and test_x[aufs-ext4])",
    ]


def test_a_kept_vm_outlives_the_run_and_is_named(tmp_path: Path) -> None:
    fake = fleet(tmp_path, outcome(c("a", FAILED)))
    report = run_vms(fake, tmp_path, Stop.DONE, keep_vm=True)
    assert (fake.kept, fake.stopped, fake.discarded) == (1, 0, 0)
    assert report.extra["kept_vm"]["name"] == "kept-vm"
    assert report.extra["kept_vm"]["ssh_config"].endswith("vms/kept-vm/ssh_config")


def test_ctrl_c_keeps_no_vm(tmp_path: Path) -> None:
    fake = fleet(tmp_path, outcome(c("a", FAILED)))

    def interrupted(*args: Any) -> Any:
        raise KeyboardInterrupt

    real = fake.__call__

    def new_vm() -> Any:
        vm = real()
        vm.run_suite = interrupted  # type: ignore[method-assign,assignment]
        return vm

    with pytest.raises(KeyboardInterrupt):
        run_vms(new_vm, tmp_path, keep_vm=True)  # type: ignore[arg-type]
    assert (fake.kept, fake.stopped, fake.discarded) == (0, 1, 1)


def test_kept_vm_names(tmp_path: Path) -> None:
    assert keptvm.name_for("debian:bullseye=5.10.223-1 aufs") == "debian-bullseye-5-10-223-1-aufs"
    assert len(keptvm.name_for("x" * 80)) <= keptvm.MAX_NAME
    leftover = vms_root() / "debian-bullseye-aufs"
    leftover.mkdir(parents=True)
    (leftover / "state.json").write_text(json.dumps({
        "name": "debian-bullseye-aufs", "pid": 999999999, "ssh_port": 1, "workdir": str(leftover),
        "label": "x", "accel": "tcg"}))  # fmt: skip
    assert keptvm.name_for("debian:bullseye aufs") == "debian-bullseye-aufs"  # dead: reused
    assert not leftover.exists()
    with pytest.raises(UserError, match="bad VM name"):
        keptvm.claim("Bad Name")
