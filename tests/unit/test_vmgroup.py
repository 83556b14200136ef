"""Several VMs of one kernel for one suite run (harness.vmgroup), driven through
the recording fake (tests/unit/suite_fakes.py): per-VM resume and replacement,
--dist load's shared results, --dist each's results keyed per VM."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from harness import vmgroup
from harness.commands import run as run_cmd
from harness.core.deadline import Deadline
from harness.core.errors import UserError
from harness.multivm import Shape, VMGroup, parse_vms
from harness.results import FAILED, HUNG, PASSED, SKIPPED, TargetReport
from harness.resultsdir import TargetDir
from harness.runner import RunOptions, Stop, TargetRun
from harness.targets import Target
from tests.unit.suite_fakes import Fleet, c, damaged, outcome, scripted


def group_run(
    fake: Fleet, tmp_path: Path, shapes: tuple[Shape, ...], dist: str = "load", **kw: Any
) -> tuple[TargetReport, Stop]:
    report = TargetReport("debian:bookworm stock")
    opts = RunOptions(results_dir=tmp_path, **kw)
    run = TargetRun(Target(), None, opts, report, TargetDir(tmp_path), fake,
                    Deadline(3600.0, "the run"))  # fmt: skip
    g = vmgroup.GroupRun(run, VMGroup(shapes, dist), fake.shaped, fake.run_group)
    stop = vmgroup.run_group(g)
    report.settle()
    return report, stop


def fleet(tmp_path: Path, vms: int, *rounds: list[Any]) -> Fleet:
    fake = scripted(tmp_path / "qemu", *[outcome() for _ in range(vms)])
    fake.rounds = list(rounds)
    return fake


TWO = (Shape(1, 768),) * 2


def test_load_shares_one_run_over_the_vms(tmp_path: Path) -> None:
    fake = fleet(tmp_path, 2, [outcome(c("a", PASSED)), outcome(c("b", PASSED))])
    report, stop = group_run(fake, tmp_path, TWO, workers=1)
    assert stop == Stop.DONE
    assert [x.name for x in report.checks] == ["a", "b"]
    assert fake.group_calls[0]["vms"] == ["vm1", "vm2"]
    assert fake.group_calls[0]["files"] == tmp_path  # round 1's logs where VM 1's always were
    assert fake.booted == 2 and fake.stopped == 2 and fake.discarded == 2
    assert fake.shapes == ["1x768", "1x768"]
    assert report.verdict == PASSED
    assert report.extra["vm_group"] == {"dist": "load", "rounds": 1, "fresh_vms": 0,
                                        "vms": {"vm1": "1x768", "vm2": "1x768"}}  # fmt: skip


def test_a_hang_on_one_vm_replaces_that_vm_only(tmp_path: Path) -> None:
    fake = fleet(
        tmp_path, 3,
        [outcome(c("a", PASSED), c("b", HUNG)),  # b was in flight when vm2 was cut off
         outcome(c("c", PASSED), c("notify", HUNG), hung="suite/t.py::notify")],
        [outcome(c("b", PASSED)), outcome(c("later", PASSED))],
    )  # fmt: skip
    report, stop = group_run(fake, tmp_path, TWO, workers=2)
    assert stop == Stop.DONE
    assert fake.booted == 3  # vm1 kept for round 2, vm2 replaced by VM 3
    assert fake.group_calls[1]["vms"] == ["vm1", "vm2"]
    assert fake.group_calls[1]["deselected"] == ["a", "c", "notify"]  # b goes again
    assert fake.group_calls[1]["files"] == tmp_path / "suite-round2"
    assert [(x.name, x.outcome) for x in report.checks] == [
        ("a", PASSED), ("c", PASSED), ("notify", HUNG), ("b", PASSED), ("later", PASSED),
    ]  # fmt: skip
    assert report.extra["vms"] == ["VM 2: notify hung"]
    assert (tmp_path / "vm-3").is_dir()


def test_damage_on_one_vm_moves_its_skips_to_a_fresh_vm(tmp_path: Path) -> None:
    fake = fleet(
        tmp_path, 3,
        [outcome(c("a", PASSED), damaged("b"), damaged("d")), outcome(c("c", PASSED))],
        [outcome(c("b", PASSED)), outcome(c("d", PASSED))],
    )  # fmt: skip
    report, stop = group_run(fake, tmp_path, TWO, workers=1)
    assert stop == Stop.DONE
    assert fake.booted == 3
    assert sorted(fake.group_calls[1]["deselected"]) == ["a", "c"]
    assert {x.name: x.outcome for x in report.checks} == dict.fromkeys("abcd", PASSED)


def test_no_round_when_the_hung_check_was_the_last(tmp_path: Path) -> None:
    hung = outcome(c("a", PASSED), c("notify", HUNG), hung="suite/t.py::notify")
    hung.collected = 3
    ok = outcome(c("b", PASSED))
    ok.collected = 3
    fake = fleet(tmp_path, 2, [ok, hung])
    report, stop = group_run(fake, tmp_path, TWO, workers=1)
    assert stop == Stop.NOTHING_LEFT
    assert fake.booted == 2 and len(fake.group_calls) == 1
    assert {x.name: x.outcome for x in report.checks} == {"a": PASSED, "b": PASSED, "notify": HUNG}


def test_no_fresh_vm_left_keeps_the_skips(tmp_path: Path) -> None:
    fake = fleet(tmp_path, 2, [outcome(damaged("b")), outcome(c("c", PASSED))])
    report, stop = group_run(fake, tmp_path, TWO, workers=1, fresh_vms=0)
    assert stop == Stop.OUT_OF_FRESH_VMS
    assert fake.booted == 2
    assert {x.name: x.outcome for x in report.checks} == {"c": PASSED, "b": SKIPPED}


def test_each_keys_results_per_vm_and_resumes_the_damaged_one_alone(tmp_path: Path) -> None:
    shapes = (Shape(1, 512), Shape(2, 1024))
    fake = fleet(
        tmp_path, 3,
        [outcome(c("a", PASSED), c("b", PASSED)), outcome(c("a", PASSED), damaged("b"))],
        [outcome(c("b", PASSED))],
    )  # fmt: skip
    report, stop = group_run(fake, tmp_path, shapes, dist="each", workers=2)
    assert stop == Stop.DONE
    assert fake.group_calls[0]["workers"] == 1  # xdist's each: every worker runs every check
    assert fake.group_calls[1]["vms"] == ["vm2"] and fake.group_calls[1]["deselected"] == ["a"]
    assert fake.shapes == ["1x512", "2x1024", "2x1024"]  # the fresh VM keeps vm2's shape
    assert sorted(x.nodeid.rsplit("::", 1)[1] for x in report.checks) == [
        "a@vm1", "a@vm2", "b@vm1", "b@vm2",
    ]  # fmt: skip
    # as on one VM: the damage is a finding about the target, named (runner._summarise)
    assert report.verdict == FAILED and report.reason.startswith("VM 2: the kernel was damaged")


@pytest.mark.parametrize(
    ("text", "shapes"),
    [("3", (Shape(2, 1024),) * 3), ("1x512, 2x1024", (Shape(1, 512), Shape(2, 1024)))],
)
def test_vms_spec(text: str, shapes: tuple[Shape, ...]) -> None:
    assert parse_vms(text, 2, 1024) == shapes


@pytest.mark.parametrize("text", ["0", "17", "2x", "x512", "1x100", "two"])
def test_bad_vms_is_one_line(text: str) -> None:
    with pytest.raises(UserError, match=r"^--vms ") as err:
        parse_vms(text, 2, 1024)
    assert "\n" not in str(err.value)


def test_keep_vm_and_docker_refuse_a_group() -> None:
    def ns(**kw: Any) -> argparse.Namespace:
        base = {"vms": "2", "dist": "load", "smp": 1, "keep_vm": False, "scenario": "suite"}
        return argparse.Namespace(**{**base, **kw})

    assert run_cmd.vm_group(ns(), 512) == VMGroup((Shape(1, 512),) * 2, "load")
    with pytest.raises(UserError, match="--keep-vm keeps one VM"):
        run_cmd.vm_group(ns(keep_vm=True), 512)
    with pytest.raises(UserError, match="--scenario docker runs on one VM"):
        run_cmd.vm_group(ns(scenario="docker"), 512)
    assert run_cmd.vm_group(ns(vms="1"), 512) is None
    assert run_cmd.vm_group(ns(vms="1", dist="each"), 512) == VMGroup((Shape(1, 512),), "each")
