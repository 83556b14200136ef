"""repro, vm up --from and bundle of a docker cell: the scenario is found in the
cell's record, and its image, kernel command line, memory and dockerd come back."""

from __future__ import annotations

import dataclasses
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from harness import repro
from harness import scenario as scenarios
from harness.bundle import make_bundle
from harness.cli import main
from harness.commands import repro as repro_cmd
from harness.commands import vm as vm_cmd
from harness.core.deadline import Deadline
from harness.repro import Cell, find_cell
from harness.results import FAILED, PASSED, CheckResult, Stage, TargetReport
from harness.resultsdir import ResultsDir
from kmod.pipeline import artifact_store
from tests.unit.suite_fakes import c, outcome, scripted
from tests.unit.test_docker_scenario import STARTED
from vm.image import Image, ImageRecipe
from vm.machine import BootSpec
from vm.ssh import Result

CHECK = "suite/test_docker_engine.py::test_recreated_directory_is_opaque"
IMAGE_KEY = "95eeeb1fa905ff667b6672ca"


def docker_report(**extra: Any) -> TargetReport:
    """A `run --scenario docker` on the stock kernel: no axes, no extra["scenario"]."""
    r = TargetReport("debian:bullseye stock docker", verdict=FAILED)
    r.stages = [
        Stage("image", "ok", 1.0, f"image {IMAGE_KEY} reused from the cache"),
        Stage("docker", "ok", 30.0, "dockerd 20.10.5+dfsg1: storage driver aufs"),
    ]
    r.checks = [CheckResult(CHECK, FAILED, message="no .wh..wh..opq")]
    r.extra = dict(extra)
    return r


def image(tmp_path: Path) -> Image:
    return Image(tmp_path / "rootfs.img", tmp_path / "vmlinuz", tmp_path / "initrd", "5.10.0-32",
                 ("root=/dev/vda", "console=ttyS0"), cached=True)  # fmt: skip


def test_the_scenario_comes_from_the_axis_the_record_or_a_docker_stage() -> None:
    assert Cell(Path("/r"), docker_report()).scenario == "docker"  # its docker stage
    assert Cell(Path("/r"), docker_report(scenario="docker")).scenario == "docker"
    axis = docker_report(cell={"scenario": "docker", "distro": "bullseye"})
    axis.stages = axis.stages[:1]  # a docker cell whose image stage failed: still docker
    assert Cell(Path("/r"), axis).scenario == "docker"
    suite = TargetReport("debian:bullseye aufs", stages=[Stage("suite", "ok", 1.0, "")])
    assert Cell(Path("/r"), suite).scenario == "suite"
    # no record of its image's suite: a docker cell ran on bullseye, nothing else could
    unrecorded = docker_report()
    unrecorded.stages = [Stage("docker", "failed", 1.0, "")]
    cell = Cell(Path("/r"), unrecorded)
    assert cell.distro == "bullseye" and cell.target().docker


def test_a_docker_cell_boots_with_its_command_line_and_its_image_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cell = Cell(Path("/r"), docker_report(cell={"distro": "bullseye", "scenario": "docker"}))
    boot = repro.boot_spec(cell, image(tmp_path), None)
    assert set(scenarios.DOCKER_CMDLINE) <= set(boot.cmdline)
    plain = Cell(Path("/r"), docker_report(cell={"distro": "bullseye", "scenario": "suite"}))
    assert not set(scenarios.DOCKER_CMDLINE) & set(repro.boot_spec(plain, image(tmp_path), None)
                                                   .cmdline)  # fmt: skip
    built: list[ImageRecipe] = []

    def build_image(recipe: ImageRecipe, deadline: Deadline) -> Image:
        built.append(recipe)
        return image(tmp_path)

    monkeypatch.setattr(repro, "build_image", build_image)
    monkeypatch.setattr(repro, "stored_image_of", lambda key: None)  # evicted
    _, line = repro.stored_image(cell, Deadline(5, "t"))
    (recipe,) = built
    assert {"docker.io", "containerd", "runc"} <= set(recipe.packages)
    assert recipe.size_mb == scenarios.DOCKER_IMAGE_MB
    assert line.startswith(f"image {IMAGE_KEY} not in the store: debian bullseye")


def test_repro_of_a_docker_check_starts_dockerd_and_skips_the_bench(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    results = ResultsDir.new(tmp_path / "results")
    results.write([docker_report()])
    now = dataclasses.replace(c("x", PASSED), nodeid=CHECK)
    fake = scripted(tmp_path / "qemu", outcome(now))
    fake.guest_answers = {"start": STARTED}
    asked: dict[str, Any] = {}

    def machine_vm(boot: BootSpec, **kw: Any) -> Any:
        asked.update(kw, cmdline=boot.cmdline)
        return fake()

    monkeypatch.setattr(repro_cmd, "preflight", lambda: None)
    monkeypatch.setattr(repro_cmd, "stored_image", lambda cell, dl: (image(tmp_path), "image x"))
    monkeypatch.setattr(repro_cmd, "MachineVM", machine_vm)
    code = main(["repro", str(results.root), "debian:bullseye stock docker", "opaque",
                 "--results", str(tmp_path / "again")])  # fmt: skip
    out = capsys.readouterr().out
    actions = [argv[-1] for argv in fake.guest_calls if argv[0] == "python3"]
    assert actions == ["start"]  # dockerd, and no copy-up measurement
    assert asked["memory_mb"] == scenarios.DOCKER_MEMORY_MB
    assert set(scenarios.DOCKER_CMDLINE) <= set(asked["cmdline"])
    assert fake.workers == [scenarios.DOCKER_WORKERS]
    assert "DIFFERS" in out and code == 1  # recorded failed, now passed


def test_vm_up_from_a_docker_cell_starts_dockerd_before_it_is_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    results = ResultsDir.new(tmp_path / "results")
    results.write([docker_report()])
    monkeypatch.setattr(vm_cmd, "preflight", lambda port: None)
    monkeypatch.setattr(vm_cmd, "stored_image", lambda cell, dl: (image(tmp_path), "image x"))
    kept: dict[str, Any] = {}

    def boot_kept(name: str, boot: BootSpec, opts: Any, needs: Any, ready: Any) -> Any:
        kept.update(memory=opts.memory_mb, cmdline=boot.cmdline, ready=ready)
        raise SystemExit(0)  # what follows needs a real machine

    monkeypatch.setattr(vm_cmd, "boot_kept", boot_kept)
    with pytest.raises(SystemExit):
        main(
            ["vm", "up", "--name", "d", "--from", str(results.root), "debian:bullseye stock docker"]
        )
    assert kept["memory"] == scenarios.DOCKER_MEMORY_MB
    assert set(scenarios.DOCKER_CMDLINE) <= set(kept["cmdline"])
    calls: list[list[str]] = []

    class Guest:
        def run(self, argv: list[str], deadline: Deadline) -> Result:
            calls.append(argv)
            return Result(tuple(argv), 0, STARTED if argv[-1] == "start" else "", "")

        def put(self, local: Path, remote: str) -> None:
            pass

    kept["ready"](Guest())
    assert calls[-1][-1] == "start"
    assert "dockerd 20.10.5+dfsg1 running, storage driver aufs" in capsys.readouterr().out


def test_a_bundle_of_a_docker_cell_keeps_its_scenario(tmp_path: Path) -> None:
    store = artifact_store()

    def produce(out: Path) -> dict[str, str]:
        (out / "config").write_text("CONFIG_AUFS_FS=m\n")
        return {"kernel_release": "5.10.223"}

    entry = store.get_or_build({"test": "docker"}, produce)
    fragment = tmp_path / "docker.config"
    fragment.write_text("CONFIG_CGROUP_PIDS=y\n")
    report = docker_report()
    report.target = "debian:bullseye=5.10.223-1 aufs docker"
    report.stages[0] = Stage("image", "ok", 1.0, f"image {'b' * 24} reused from the cache")
    report.extra["build"] = {
        "key": entry.key,
        "kernel": {"package": "linux-source-5.10", "package_version": "5.10.223-1"},
        "aufs": {
            "url": "https://example.org/aufs.git",
            "branch": "aufs5.10.140",
            "commit": "0c55dd9dcf13d5de98218aca4b1a6ad1181acb33",
        },
        "reproducer": "aufs-harness kmod build --kernel debian:bullseye=5.10.223-1 "
        f"--aufs-src https://example.org/aufs.git --config-fragment {fragment}",
    }
    results = ResultsDir.new(tmp_path / "results")
    results.write([report])
    path, _ = make_bundle(find_cell(results.root, report.target), tmp_path)
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    top = next((tmp_path / "unpacked").iterdir())
    assert json.loads((top / "manifest.json").read_text())["scenario"] == "docker"
    recipe = json.loads((top / "image-recipe.json").read_text())  # the image was evicted
    assert "docker.io" in recipe["packages"] and recipe["suite"] == "bullseye"
    assert (top / "config-fragment.config").read_text() == "CONFIG_CGROUP_PIDS=y\n"
    recorded = find_cell(top / "recorded", report.target)  # what reproduce.sh repros
    assert recorded.scenario == "docker" and recorded.distro == "bullseye"
    assert recorded.build_spec().config_fragment == Path("config-fragment.config")
