from __future__ import annotations

import grp
import os
from pathlib import Path

import pytest

from harness.core.deadline import Deadline
from harness.core.errors import UserError
from vm import accel

INTEL = "processor\t: 0\nflags\t\t: fpu vme vmx sse\n"
NESTED = "processor\t: 0\nflags\t\t: fpu vme sse hypervisor\n"


def test_missing_dev_kvm(tmp_path: Path) -> None:
    assert "does not exist" in str(accel.static_kvm_check(tmp_path / "kvm", INTEL))


def test_no_virtualisation_flags_means_no_kvm(tmp_path: Path) -> None:
    dev = tmp_path / "kvm"
    dev.touch()
    assert "neither vmx nor svm" in str(accel.static_kvm_check(dev, NESTED))
    assert accel.static_kvm_check(dev, INTEL) is None


def test_tcg_on_request() -> None:
    chosen = accel.choose("tcg", "qemu", None, Deadline(1, "t"))
    assert (chosen.name, chosen.cpu) == ("tcg", "max")


def test_unknown_accel_is_a_usage_error() -> None:
    with pytest.raises(UserError, match="unknown accelerator 'hax'"):
        accel.choose("hax", "qemu", None, Deadline(1, "t"))


def test_auto_falls_back_to_tcg_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "static_kvm_check", lambda: "no vmx")
    chosen = accel.choose("auto", "qemu", None, Deadline(1, "t"))
    assert chosen.name == "tcg" and "no vmx" in chosen.reason


def test_forced_kvm_without_kvm_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "static_kvm_check", lambda: "no vmx")
    with pytest.raises(UserError, match="--accel kvm asked for"):
        accel.choose("kvm", "qemu", None, Deadline(1, "t"))


def test_an_inaccessible_kvm_device_says_how_to_grant_it(tmp_path: Path) -> None:
    dev = tmp_path / "kvm"
    dev.write_text("")
    os.chown(dev, -1, 0)
    dev.chmod(0o600)
    grant = accel._kvm_grant(dev)
    assert "`sudo usermod -aG kvm " in grant and "log in again" in grant
    group = grp.getgrnam("nogroup")
    os.chown(dev, -1, group.gr_gid)
    dev.chmod(0o660)
    assert accel._kvm_grant(dev).startswith("run `sudo usermod -aG nogroup ")


def test_forced_kvm_is_refused_before_anything_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "static_kvm_check", lambda: "/dev/kvm is not usable")
    accel.require("auto")
    accel.require("tcg")
    with pytest.raises(UserError, match=r"^--accel kvm asked for, but /dev/kvm is not usable"):
        accel.require("kvm")
