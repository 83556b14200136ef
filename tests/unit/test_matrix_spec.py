"""Matrix files: each bad input is one line naming the file, the key and what is
allowed; groups expand with vary, exclude rules drop cells."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.core.errors import UserError
from harness.matrix import spec

AUFS_ENV = {"AUFS_HARNESS_AUFS_SRC": "https://example.org/aufs-standalone.git"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.toml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(UserError) as info:
        spec.load(path, env=env or {})
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    return message


STOCK = """
    version = 1
    [[include]]
    kernel = "stock"
"""


def test_defaults_make_one_bookworm_overlay_cell(tmp_path: Path) -> None:
    m = spec.load(write(tmp_path, STOCK), env={})
    (cell,) = m.cells
    assert cell.name == "bookworm-stock-overlay"
    assert (cell.distro, cell.drivers, cell.branch_fs) == (
        "bookworm",
        ("overlay",),
        ("tmpfs", "ext4"),
    )


def test_vary_multiplies_and_exclude_drops(tmp_path: Path) -> None:
    path = write(tmp_path, """
        version = 1
        [[include]]
        name = "{distro}-{branch_fs}"
        vary.distro = ["bookworm", "trixie", "bullseye"]
        vary.branch_fs = [["tmpfs"], ["ext4", "xfs"]]
        [[exclude]]
        distro = "trixie"
        branch_fs = "*xfs*"
        [[exclude]]
        name = "bullseye-*"
    """)  # fmt: skip
    names = [c.name for c in spec.load(path, env={}).cells]
    assert names == ["bookworm-tmpfs", "bookworm-ext4+xfs", "trixie-tmpfs"]


def test_defaults_and_timeouts_merge(tmp_path: Path) -> None:
    path = write(tmp_path, """
        version = 1
        [defaults]
        timeouts = { boot = 60, check = 20 }
        [[include]]
        timeouts = { check = 30 }
    """)  # fmt: skip
    (cell,) = spec.load(path, env={}).cells
    assert (cell.timeouts.boot, cell.timeouts.check, cell.timeouts.suite) == (60, 30, 1800)


def test_aufs_cell_takes_the_environments_source_and_expands_variables(tmp_path: Path) -> None:
    (tmp_path / "fix").mkdir()
    path = write(tmp_path, """
        version = 1
        [[include]]
        name = "b-{aufs_ref}"
        kernel = "debian:bullseye=5.10.223-1"
        aufs_ref = "aufs5.10.140"
        fixup_dir = "${FIX}"
        drivers = ["aufs", "overlay"]
    """)  # fmt: skip
    (cell,) = spec.load(path, env={**AUFS_ENV, "FIX": str(tmp_path / "fix")}).cells
    assert (cell.name, cell.aufs_src, cell.fixup_dir) == (
        "b-aufs5.10.140", "https://example.org/aufs-standalone.git", str(tmp_path / "fix"),
    )  # fmt: skip
    assert cell.axes()["drivers"] == ["aufs", "overlay"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("version = 1\n[[include]]\nkernal = 'stock'\n", "include.0.kernal: unknown key; allowed"),
        (
            "version = 1\n[[include]]\ndistro = 'jessie'\n",
            "include.0.distro: 'jessie' is not allowed; use one of: bullseye",
        ),
        (
            "version = 1\n[[include]]\ndrivers = ['unionfs']\n",
            "include.0.drivers.0: 'unionfs' is not allowed; use one of: overlay, aufs",
        ),
        (
            "version = 1\n[[include]]\nbranch_fs = ['ntfs']\n",
            "include.0.branch_fs.0: 'ntfs' is not allowed; a non-empty list of branch",
        ),
        (
            "version = 1\n[[include]]\nkernel = 'linux-6.1'\n",
            "include.0.kernel: 'linux-6.1' is not allowed; stock (the image's own",
        ),
        (
            "version = 1\n[[include]]\nkernel = 'debian:buster'\n",
            "include.0.kernel: 'debian:buster' is not allowed; stock (the image's own",
        ),
        (
            "version = 1\n[[include]]\ntimeouts = { check = 1 }\n",
            "include.0.timeouts.check: 1 is not allowed; seconds from 5 to 86400",
        ),
        ("version = 2\n[[include]]\n", "version: 2 is not allowed; the matrix file format: 1"),
        ("version = 1\n", "include: required"),
        ("version = 1\nfoo = 1\n[[include]]\n", "foo: unknown key; allowed keys: aufs_src_missing"),
        (
            "version = 1\n[[include]]\nvary.colour = ['red']\n",
            "include.0.vary: 'colour' is not allowed; use one of: kernel",
        ),
        (
            "version = 1\n[[include]]\n[[exclude]]\nflavour = 'x'\n",
            "exclude.0.flavour: unknown key",
        ),
        ("version = 1\n[[include]\n", "not valid TOML"),
    ],
)
def test_each_bad_input_is_one_line(tmp_path: Path, body: str, expected: str) -> None:
    assert expected in error_of(write(tmp_path, body))


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        (
            "kernel = 'stock'\ndrivers = ['aufs']",
            "cell bookworm-stock-aufs: drivers: ['aufs'] is not allowed; a stock Debian kernel",
        ),
        (
            "kernel = 'stock'\naufs_ref = 'aufs6.1'",
            "aufs_ref: 'aufs6.1' is not allowed; only a built aufs kernel takes aufs_ref",
        ),
        (
            "kernel = 'stock'\naufs_options = ['SHWH=n']",
            "aufs_options: ['SHWH=n'] is not allowed; only a built aufs kernel",
        ),
    ],
)
def test_an_impossible_combination_is_one_line(tmp_path: Path, cell: str, expected: str) -> None:
    assert expected in error_of(write(tmp_path, f"version = 1\n[[include]]\n{cell}\n"), AUFS_ENV)


def test_an_aufs_cell_without_a_source_is_an_error_or_left_out(tmp_path: Path) -> None:
    body = "[[include]]\nkernel = 'debian:bookworm'\ndrivers = ['aufs']\n[[include]]\n"
    message = error_of(write(tmp_path, f"version = 1\n{body}"))
    assert "aufs_src: required: a built aufs kernel needs aufs_src" in message
    m = spec.load(write(tmp_path, f"version = 1\naufs_src_missing = 'skip'\n{body}"), env={})
    assert [c.name for c in m.cells] == ["bookworm-stock-overlay"]
    assert m.left_out == (
        "debian-bookworm-aufs-tmpfs+ext4: left out: no aufs source: set "
        "AUFS_HARNESS_AUFS_SRC to an aufs-standalone clone or URL",
    )


def test_duplicate_names_and_a_missing_fixup_dir_are_one_line(tmp_path: Path) -> None:
    dup = "version = 1\n[[include]]\nname = 'x'\nvary.distro = ['bookworm', 'trixie']\n"
    assert "name: two cells are named 'x'" in error_of(write(tmp_path, dup))
    body = "version = 1\n[[include]]\nkernel = 'debian:bookworm'\nfixup_dir = '/nonexistent'\n"
    assert "fixup_dir: /nonexistent is not a directory" in error_of(write(tmp_path, body), AUFS_ENV)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    assert "no such file" in error_of(tmp_path / "m.toml")


def test_the_shipped_default_matrix_loads(tmp_path: Path) -> None:
    m = spec.load(spec.default_matrix(), env={})
    assert [c.name for c in m.cells] == ["bookworm-stock-overlay", "trixie-stock-overlay"]
    assert len(m.left_out) == 1 and "AUFS_HARNESS_AUFS_SRC" in m.left_out[0]
    env = {**AUFS_ENV, "AUFS_HARNESS_FIXUP_DIR": str(tmp_path)}
    aufs = spec.load(spec.default_matrix(), env=env).cells[-1]
    assert (aufs.name, aufs.kernel, aufs.distro) == (
        "bullseye-aufs5.10.140-tmpfs+ext4", "debian:bullseye=5.10.223-1", "bullseye",
    )  # fmt: skip


def test_vms_and_dist_reach_the_runner(tmp_path: Path) -> None:
    from harness.matrix import run as matrix_run
    from harness.multivm import Shape, VMGroup
    from harness.resultsdir import ResultsDir

    path = write(tmp_path, STOCK + '    vms = ["1x512", "2x1024"]\n    dist = "each"\n')
    cell = spec.load(path, env={}).cells[0]
    assert (cell.vms, cell.dist) == ("1x512,2x1024", "each")
    opts = matrix_run.run_options(cell, ResultsDir(tmp_path), matrix_run.MachineOptions())
    assert opts.group == VMGroup((Shape(1, 512), Shape(2, 1024)), "each")
    plain = spec.load(write(tmp_path, STOCK), env={}).cells[0]
    assert (
        matrix_run.run_options(plain, ResultsDir(tmp_path), matrix_run.MachineOptions()).group
        is None
    )
    assert "include.0.vms: 'three' is not allowed; VMs of" in error_of(
        write(tmp_path, STOCK + "    vms = 'three'\n")
    )
    assert "include.0.dist: 'loadfile' is not allowed" in error_of(
        write(tmp_path, STOCK + "    dist = 'loadfile'\n")
    )
