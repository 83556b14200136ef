"""The docker scenario without a VM: the target and image it asks for, the kernel
fragment, the runner's docker and copy-up stages on a recording fake VM, the
guest program's reading of dockerd's refusal, and the copy-up table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import docker as bench_docker
from harness import runner
from harness import scenario as scenarios
from harness.bootspec import image_recipe
from harness.cli import BadArguments, build_parser
from harness.core.deadline import Deadline
from harness.core.errors import TargetFailure, UserError
from harness.guest import dockerd
from harness.matrix import run as matrix_run
from harness.matrix import spec
from harness.results import FAILED, PASSED, TargetReport
from harness.resultsdir import ResultsDir, TargetDir
from harness.runner import RunOptions, Stop, TargetRun
from harness.targets import Target
from kmod.config import parse_config
from kmod.pipeline import BuildSpec
from tests.unit.suite_fakes import Fleet, c, outcome, scripted
from vm.machine import BootSpec

STARTED = json.dumps(
    {"ok": True, "reason": "", "driver": "aufs", "server_version": "20.10.5+dfsg1"}
)
REFUSED = json.dumps(
    {
        "ok": False,
        "reason": "dockerd refused --storage-driver=aufs: aufs is not in this kernel "
        "(no aufs in /proc/filesystems); error initializing graphdriver: driver not supported",
    }
)
BENCH = {
    "rows": [
        {"size_mib": 1, "first_write_s": 0.01, "second_write_s": 0.0001,
         "volume_write_s": 0.0001, "copied_bytes": 2**20, "copied_again_bytes": 0},
    ]
}  # fmt: skip


def test_docker_target_is_bullseye_with_docker_in_the_image() -> None:
    t = Target(distro="bullseye", scenario="docker")
    assert t.label == "debian:bullseye stock docker"
    recipe = image_recipe(t)
    assert {"docker.io", "containerd", "runc", "tini", "busybox-static"} <= set(recipe.packages)
    assert recipe.suite == "bullseye" and recipe.size_mb == scenarios.DOCKER_IMAGE_MB
    assert image_recipe(Target()).extra_packages == ()  # other cells keep their image


@pytest.mark.parametrize("distro", ["bookworm", "trixie"])
def test_docker_scenario_refuses_another_userland(distro: str) -> None:
    with pytest.raises(UserError, match="bullseye"):
        Target(distro=distro, scenario="docker")


def test_unknown_scenario_is_one_line() -> None:
    with pytest.raises(UserError, match="unknown scenario 'podman'"):
        Target(scenario="podman")


def test_run_scenario_option_parses() -> None:
    args = build_parser().parse_args(["run", "--scenario", "docker"])
    assert args.scenario == "docker"
    with pytest.raises(BadArguments, match="invalid choice: 'podman'"):
        build_parser().parse_args(["run", "--scenario", "podman"])


def test_fragment_has_what_docker_needs_and_the_users_wins(tmp_path: Path) -> None:
    wanted = parse_config(scenarios.docker_fragment().read_text())
    for name in ("PID_NS", "NET_NS", "IPC_NS", "UTS_NS", "MEMCG", "CGROUP_DEVICE", "KEYS",
                 "SECCOMP_FILTER", "CPUSETS", "CGROUP_FREEZER"):  # fmt: skip
        assert wanted.get(f"CONFIG_{name}") == "y", name
    assert "CONFIG_VETH" not in wanted and "CONFIG_BRIDGE" not in wanted
    spec = BuildSpec(kernel="debian:bullseye")
    assert scenarios.with_fragment(spec).config_fragment == scenarios.docker_fragment()
    mine = tmp_path / "mine.config"
    mine.write_text("CONFIG_KEYS=n\n")
    merged = scenarios.with_fragment(BuildSpec(kernel="debian:bullseye", config_fragment=mine))
    assert merged.config_fragment is not None
    text = merged.config_fragment.read_text()
    assert text.index("CONFIG_KEYS=y") < text.index("CONFIG_KEYS=n")  # later wins


def docker_run(fake: Fleet, tmp_path: Path) -> TargetReport:
    report = TargetReport("debian:bullseye aufs docker")
    target = Target(distro="bullseye", scenario="docker")
    run = TargetRun(target, None, RunOptions(results_dir=tmp_path), report, TargetDir(tmp_path),
                    fake, Deadline(3600, "the run"))  # fmt: skip
    assert runner.run_vms(run) == Stop.DONE
    report.settle()
    return report


def docker_target(fake: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TargetReport:
    """run_target of a docker target on `fake`'s VMs (no image, no QEMU)."""
    monkeypatch.setattr(
        runner, "resolve_boot", lambda *a: BootSpec(tmp_path / "disk", "raw", "fake")
    )
    monkeypatch.setattr(runner, "machine_vms", lambda *a, **kw: fake)
    target = Target(distro="bullseye", scenario="docker")
    return runner.run_target(target, RunOptions(results_dir=tmp_path))


def test_docker_stage_starts_dockerd_then_the_docker_checks_then_the_bench(
    tmp_path: Path,
) -> None:
    fake = scripted(tmp_path / "qemu", outcome(c("test_docker_info", PASSED)))
    fake.guest_answers = {"start": STARTED, "bench": json.dumps(BENCH)}
    report = docker_run(fake, tmp_path)
    assert report.verdict == PASSED
    actions = [argv[-1] for argv in fake.guest_calls if argv[0] == "python3"]
    assert actions == ["start", "bench"]
    assert fake.workers == [scenarios.DOCKER_WORKERS]
    assert [s.name for s in report.stages] == ["boot", "load", "docker", "suite", "copy-up"]
    assert report.extra["docker"]["driver"] == "aufs"
    assert report.extra["docker_copy_up"] == BENCH


def test_dockerd_refusing_aufs_is_the_verdict_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = scripted(tmp_path / "qemu", outcome())
    fake.guest_answers = {"start": REFUSED}
    report = docker_target(fake, tmp_path, monkeypatch)
    assert report.verdict == FAILED
    assert report.reason.startswith("dockerd refused --storage-driver=aufs: aufs is not in")
    assert "\n" not in report.reason
    assert fake.workers == []  # no suite after the refusal


def test_start_dockerd_without_an_answer_is_an_infra_error() -> None:
    def run(argv: object, deadline: Deadline) -> tuple[int, str, str]:
        return 1, "", "python3: not found"

    with pytest.raises(Exception, match="python3: not found"):
        scenarios.start_dockerd(run, lambda local, remote: None, Deadline(5, "t"))


def test_a_fallback_driver_is_a_target_failure() -> None:
    answer = json.dumps({"ok": False, "reason": "dockerd fell back to the vfs storage driver"})

    def run(argv: object, deadline: Deadline) -> tuple[int, str, str]:
        return 0, answer, ""

    with pytest.raises(TargetFailure, match="fell back to the vfs"):
        scenarios.start_dockerd(run, lambda local, remote: None, Deadline(5, "t"))


def test_refusal_names_dockerds_own_message() -> None:
    log = (
        'time="2026-11-30T07:33:40Z" level=info msg="Starting up"\n'
        'time="2026-11-30T07:33:41Z" level=error msg="AUFS was not found in /proc/filesystems"'
        " storage-driver=aufs\n"
        "failed to start daemon: error initializing graphdriver: driver not supported\n"
    )
    assert dockerd.refusal(log) == (
        "failed to start daemon: error initializing graphdriver: driver not supported"
    )


def test_copy_up_table_has_a_row_per_size() -> None:
    table = scenarios.copy_up_table(BENCH)
    lines = table.splitlines()
    assert "first write" in lines[0] and "volume write" in lines[0]
    assert lines[1].split()[:2] == ["1", "MiB"]
    assert "10.0 ms" in lines[1] and "1.0 MiB then 0.0 MiB" in lines[1]


def test_a_matrix_cell_of_the_docker_scenario(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(
        'version = 1\n[[include]]\nname = "bullseye-docker"\nscenario = "docker"\n'
        'distro = "bullseye"\nkernel = "debian:bullseye=5.10.223-1"\naufs_src = "https://example.org/aufs-standalone.git"\n'
    )
    cell = spec.load(path, env={}).cells[0]
    assert cell.scenario == "docker" and cell.axes()["scenario"] == "docker"
    target = matrix_run.target_of(cell)
    assert target.docker and target.build is not None
    assert target.build.config_fragment == scenarios.docker_fragment()
    machine = matrix_run.MachineOptions()
    assert matrix_run.run_options(cell, ResultsDir(tmp_path), machine).memory_mb == 2048
    path.write_text('version = 1\n[[include]]\nscenario = "podman"\n')
    with pytest.raises(UserError, match="scenario"):
        spec.load(path, env={})


def test_bench_prints_the_table_of_each_cell_that_measured() -> None:
    report = {"targets": [
        {"target": "bullseye-docker", "extra": {"docker_copy_up": BENCH}},
        {"target": "bookworm-stock-overlay", "extra": {}},
    ]}  # fmt: skip
    found = bench_docker.tables(report)
    assert [cell for cell, _ in found] == ["bullseye-docker"]
    assert found[0][1] == scenarios.copy_up_table(BENCH)
