"""The next VM booted ahead (harness/sparevm.py): started when the damage
shows, handed out by the next new_vm(), stopped when nobody takes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import runner
from harness.core.deadline import Deadline
from harness.core.errors import InfraError
from harness.results import HUNG, PASSED, TargetReport
from harness.resultsdir import TargetDir
from harness.runner import RunOptions, Stop, TargetRun
from harness.sparevm import Spare
from harness.targets import Target
from tests.unit.suite_fakes import Fleet, Script, c, damaged, outcome, scripted


def spare_of(fake: Fleet) -> Spare:
    return Spare(fake, lambda: Deadline(60, "start"), lambda: Deadline(60, "boot"))


def ready_spare(run: TargetRun, fake: Fleet) -> Spare:
    """The runner's Spare: loads and ships ahead."""
    return Spare(fake, lambda: Deadline(60, "start"), lambda: Deadline(60, "boot"),
                 lambda vm: runner._get_ready_ahead(run, vm))  # fmt: skip


def test_a_prepared_vm_is_the_next_one_handed_out(tmp_path: Path) -> None:
    fake = scripted(tmp_path, outcome(c("a", PASSED)), outcome(c("b", PASSED)))
    spare = spare_of(fake)
    spare.prepare()
    spare.prepare()  # a second call while one waits boots nothing more
    assert fake.booted == 1
    vm = spare.new_vm()
    assert spare.wait_booted(vm, Deadline(5, "boot"))  # its boot thread is done
    other = spare.new_vm()  # taken: the next one is new, booted by the runner
    assert fake.booted == 2 and not spare.wait_booted(other, Deadline(5, "boot"))
    spare.close()
    assert fake.stopped == 0  # the taken VM is the runner's to stop


def test_a_boot_that_failed_ahead_fails_when_the_vm_is_taken(tmp_path: Path) -> None:
    fake = scripted(tmp_path, Script(outcome(c("a", PASSED)), boots=False))
    spare = spare_of(fake)
    spare.prepare()
    vm = spare.new_vm()
    with pytest.raises(InfraError, match="never answered SSH"):
        spare.wait_booted(vm, Deadline(5, "boot"))
    spare.close()


def test_a_spare_nobody_takes_is_stopped_and_discarded(tmp_path: Path) -> None:
    fake = scripted(tmp_path, outcome(c("a", PASSED)))
    spare = spare_of(fake)
    spare.prepare()
    spare.close()
    assert (fake.booted, fake.stopped, fake.discarded) == (1, 1, 1)


def test_a_spare_that_cannot_start_leaves_the_next_vm_to_boot_as_before(tmp_path: Path) -> None:
    fake = scripted(tmp_path, Script(None), outcome(c("a", PASSED)))
    spare = spare_of(fake)
    spare.prepare()  # QEMU refuses: logged, nothing held
    assert (fake.stopped, fake.discarded) == (1, 1)
    vm = spare.new_vm()
    assert not spare.wait_booted(vm, Deadline(5, "boot"))


def test_the_runner_boots_the_next_vm_when_the_damage_shows(tmp_path: Path) -> None:
    fake = scripted(
        tmp_path / "qemu",
        Script(outcome(c("ok", PASSED), c("notify", HUNG), damaged("later"),
                       hung="suite/t.py::notify"), damage_shows=True),
        outcome(c("later", PASSED)),
    )  # fmt: skip
    report = TargetReport("debian:bullseye aufs")
    opts = RunOptions(results_dir=tmp_path)
    run = TargetRun(Target(), None, opts, report, TargetDir(tmp_path), fake, Deadline(3600, "run"))
    run.spare = ready_spare(run, fake)
    assert runner.run_vms(run) == Stop.DONE
    run.spare.close()
    assert fake.booted == 2  # the VM booted ahead ran the checks left: no third VM
    assert fake.shipped_ahead == 1  # the suite went to it while VM 1 was judged
    assert fake.loaded == 3  # VM 1; VM 2 ahead, then its load stage (finding it done)
    assert fake.deselected[1] == ["ok", "notify"]
    assert fake.stopped == 2 and fake.discarded == 2  # both VMs, nothing left over


def test_no_vm_is_booted_ahead_when_no_fresh_vm_may_follow(tmp_path: Path) -> None:
    fake = scripted(
        tmp_path / "qemu",
        Script(outcome(c("notify", HUNG), damaged("later"), hung="suite/t.py::notify"),
               damage_shows=True),
    )  # fmt: skip
    report = TargetReport("debian:bullseye aufs")
    opts = RunOptions(results_dir=tmp_path, fresh_vms=0)
    run = TargetRun(Target(), None, opts, report, TargetDir(tmp_path), fake, Deadline(3600, "run"))
    run.spare = spare_of(fake)
    assert runner.run_vms(run) == Stop.OUT_OF_FRESH_VMS
    run.spare.close()
    assert fake.booted == 1
