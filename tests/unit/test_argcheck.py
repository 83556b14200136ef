"""Each bad input is one `aufs-harness: error:` line naming option, value and what
is allowed, exit 2, before anything slow starts (parsing is all that runs)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from harness import argcheck
from harness.cli import main

BAD_NUMBERS = [
    (["run", "--memory", "12"], "--memory", "12", "256 to"),
    (["run", "--memory", "lots"], "--memory", "'lots'", "whole number of MB"),
    (["run", "--memory", "99999999"], "--memory", "99999999", "256 to"),
    (["run", "--smp", "0"], "--smp", "0", "1 to 64"),
    (["run", "--smp", "1.5"], "--smp", "'1.5'", "not an integer"),
    (["run", "--workers", "0"], "--workers", "0", "1 to 64"),
    (["run", "--fresh-vms", "-1"], "--fresh-vms", "-1", "0 to 50"),
    (["run", "--boot-timeout", "0"], "--boot-timeout", "0", "seconds from 10"),
    (["run", "--suite-timeout", "nan"], "--suite-timeout", "nan", "seconds from 30"),
    (["run", "--check-timeout", "-5"], "--check-timeout", "-5", "seconds from 5"),
    (["run", "--check-timeout", "inf"], "--check-timeout", "inf", "seconds from 5"),
    (["run", "--kernel", "debian:bullseye", "--jobs", "0"], "--jobs", "0", "1 to 1024"),
    (["vm", "up", "--memory", "64"], "--memory", "64", "256 to"),
    (["vm", "up", "--ssh-port", "70000"], "--ssh-port", "70000", "1 to 65535"),
    (["vm", "up", "--boot-timeout", "x"], "--boot-timeout", "'x'", "not a number"),
    (["suite", "--local", "--workers", "-2"], "--workers", "-2", "0 to 64"),
    (["suite", "--local", "--timeout", "0"], "--timeout", "0", "seconds from 30"),
    (["kmod", "build", "--kernel", "debian:bullseye", "-j", "abc"], "-j", "'abc'", "make jobs"),
    (["kmod", "build", "--kernel", "debian:bullseye", "--timeout", "1"], "--timeout", "1", "60"),
    (["kmod", "build", "--kernel", "debian:bullseye", "-j", "0"], "-j", "0", "1 to 1024"),
    (["kmod", "versions", "debian:bookworm", "--timeout", "-5"], "--timeout", "-5", "from 1"),
    (
        ["kmod", "prepare", "--kernel", "debian:bullseye", "--timeout", "nan"],
        "--timeout",
        "nan",
        "seconds from 1",
    ),
    (["kmod", "fixup", "--kernel", "x", "--to", "/tmp", "--timeout", "0"], "--timeout", "0", "1"),
    (["kmod", "load", "aufs", "--timeout", "inf"], "--timeout", "inf", "seconds from 1"),
    (["kmod", "unload", "aufs", "--timeout", "x"], "--timeout", "'x'", "not a number"),
]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("aufs-harness: error: "), err[0]
    return err[0]


@pytest.mark.parametrize(("argv", "option", "value", "allowed"), BAD_NUMBERS)
def test_bad_number(
    argv: list[str], option: str, value: str, allowed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert option in line and value in line and allowed in line, line


def test_etc_passwd_is_not_a_disk(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--image", "/etc/passwd"]) == 2
    line = one_error_line(capsys)
    assert "--image" in line and "/etc/passwd" in line and "not a bootable disk" in line


def test_image_that_is_a_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["vm", "up", "--image", str(tmp_path)]) == 2
    assert "not a regular file" in one_error_line(capsys)


def test_empty_image(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"\0" * 4096)
    assert main(["run", "--image", str(empty)]) == 2
    assert "not a bootable disk" in one_error_line(capsys)


def test_missing_fixup_dir(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kmod", "build", "--kernel", "debian:bullseye", "--fixup-dir", "/no/dir"]) == 2
    line = one_error_line(capsys)
    assert "--fixup-dir" in line and "/no/dir does not exist" in line


def test_fixup_dir_that_is_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--kernel", "debian:bullseye", "--fixup-dir", "/etc/passwd"]) == 2
    assert "is not a directory" in one_error_line(capsys)


def test_config_fragment_that_is_a_directory(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["kmod", "build", "--kernel", "debian:bullseye", "--config-fragment", "/etc"]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert "--config-fragment" in line and "not a regular file" in line


def test_missing_config_fragment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--kernel", "x", "--config-fragment", "/no/such.config"]) == 2
    assert "/no/such.config does not exist" in one_error_line(capsys)


def test_results_under_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--results", "/etc/passwd/out"]) == 2
    line = one_error_line(capsys)
    assert "--results" in line and "is not a directory" in line


def test_results_that_is_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["suite", "--local", "--results", "/etc/passwd"]) == 2
    assert "--results" in one_error_line(capsys)


def test_local_aufs_src_that_does_not_exist(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kmod", "build", "--kernel", "debian:bullseye", "--aufs-src", "/no/aufs"]) == 2
    line = one_error_line(capsys)
    assert "--aufs-src" in line and "/no/aufs does not exist" in line


def test_aufs_src_url_is_not_checked_locally() -> None:
    assert argcheck.aufs_src("https://example.org/aufs.git") == "https://example.org/aufs.git"
    assert argcheck.aufs_src("git@example.org:aufs.git") == "git@example.org:aufs.git"


def test_missing_required_argument_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kmod", "build"]) == 2
    assert "--kernel" in one_error_line(capsys)


def _image(tmp_path: Path, offset: int, magic: bytes) -> Path:
    data = bytearray(argcheck.HEAD_BYTES)
    data[offset : offset + len(magic)] = magic
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("offset", "magic", "kind"),
    [
        (0, b"QFI\xfb" + struct.pack(">I", 3), "qcow2 image"),
        (512, b"EFI PART", "GPT partition table"),
        (510, b"\x55\xaa", "MBR partition table"),
        (1080, b"\x53\xef", "ext2/3/4 filesystem"),
        (0, b"XFSB", "xfs filesystem"),
        (0x10040, b"_BHRfS_M", "btrfs filesystem"),
    ],
)
def test_bootable_disks_are_named(tmp_path: Path, offset: int, magic: bytes, kind: str) -> None:
    path = _image(tmp_path, offset, magic)
    assert argcheck.disk_kind(path.read_bytes()) == kind
    assert argcheck.disk_image(str(path)) == path


def test_full_disk_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import errno

    from harness.commands import run

    monkeypatch.setenv("AUFS_HARNESS_CACHE", str(tmp_path / "cache"))

    def full(args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "cache" / "x"))

    monkeypatch.setattr(run, "main", full)
    monkeypatch.setattr("harness.core.leftovers.sweep", lambda: None)
    assert main(["run"]) == 2
    line = one_error_line(capsys)
    assert "the cache directory" in line and "is full" in line and "MB free" in line


# The matrix and baseline files of bench/faults.py's bad inputs: checked against
# their schemas before any cell starts.
STOCK = 'version = 1\n[[include]]\nkernel = "stock"\n'
BAD_FILES = [
    ("matrix", '[[cell]]\nname = "x"\n', "cell: unknown key; allowed keys:"),
    ("matrix", "not toml [\n", "not valid TOML"),
    ("baseline", "[[known]]\ncheck = 5\n", "version: required"),
    # nan passes the schema's bounds (nan < 10 is False): it reached the cells
    ("matrix", STOCK + "timeouts = { boot = nan }\n", "include.0.timeouts.boot: nan is not"),
    # bytes that are not UTF-8: a UnicodeDecodeError traceback from tomllib
    ("matrix", "\udcff\udcfe", "not valid TOML"),
    ("baseline", "\udcff\udcfe", "not valid TOML"),
    # a cell name's placeholder: the line did not name the file
    ("matrix", STOCK + 'name = "{nosuch}"\n', "name '{nosuch}': unknown placeholder"),
    ("matrix", STOCK + 'name = "{distro"\n', "name '{distro': bad braces"),
    # refused by the runner only when that cell's turn came, after the cells before it
    (
        "matrix",
        STOCK + 'vms = 2\nscenario = "docker"\n',
        "cell bookworm-stock-overlay: scenario docker runs",
    ),
    # what an aufs cell reads from this machine, missing: it failed inside the cell
    (
        "matrix",
        'version = 1\n[[include]]\nname = "c"\nkernel = "debian:bullseye"\naufs_src = "/no/aufs"\n',
        "cell c: aufs_src: /no/aufs does not exist",
    ),
    (
        "matrix",
        'version = 1\n[[include]]\nname = "c"\nkernel = "path:/no/tree"\naufs_src = "https://x/a.git"\n',
        "cell c: kernel: /no/tree does not exist",
    ),
]


@pytest.mark.usefixtures("nothing_slow")
@pytest.mark.parametrize(("kind", "text", "said"), BAD_FILES)
def test_bad_matrix_or_baseline_file(
    kind: str, text: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / f"{kind}.toml"
    bad.write_bytes(text.encode(errors="surrogateescape"))
    argv = (
        ["matrix", "run", str(bad)]
        if kind == "matrix"
        else ["matrix", "run", "--baseline", str(bad)]
    )
    assert main([*argv, "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"aufs-harness: usage error: {bad}: {said}"), err[0]


@pytest.mark.parametrize(
    ("kernel", "expected"),
    [
        ("debian:nosuch", "unknown Debian suite 'nosuch'"),
        ("debian:bullseye=latest", "latest"),
        ("linux-6.1", "unknown kernel source 'linux-6.1'"),
        ("git+https://example.org/linux.git", "git+URL@REF"),
    ],
)
def test_bad_kernel_is_refused_before_a_results_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kernel: str, expected: str
) -> None:
    """A refused run leaves nothing under --results (it ran nothing to report)."""
    assert main(["run", "--kernel", kernel, "--results", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aufs-harness: usage error: "), err
    assert expected in err[0]
    assert not (tmp_path / "out").exists()


@pytest.fixture
def nothing_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every slow step a command can reach (boot, build, clone, the suite, the
    matrix) raises instead: a bad input the CLI lets through fails the test
    rather than starting real work."""
    from harness import guestsuite
    from harness.commands import bundle, kmod_build, kmod_load, matrix, repro, run, vm
    from kmod import fixup, pipeline, source

    def slow(*args: object, **kwargs: object) -> None:
        raise AssertionError("a slow step started: the bad input was not refused up front")

    for module, name in [
        (run, "run_target"), (matrix, "run_matrix"), (guestsuite, "run_local"),
        (repro, "rerun"), (vm, "boot_kept"), (pipeline, "run"), (vm, "resolve_boot"),
        (vm, "stored_build"), (vm, "stored_image"), (kmod_build, "run"), (fixup, "prepare"),
        (fixup, "make_fixups"), (bundle, "make_bundle"), (kmod_load, "run"),
        (source.DebianSource, "offers"),
    ]:  # fmt: skip
        monkeypatch.setattr(module, name, slow)
    for module in (run, matrix, repro, vm):
        monkeypatch.setattr(module, "preflight", lambda *a: None)
    monkeypatch.setattr("harness.core.leftovers.sweep", lambda: None)


# --results of every command that writes a results directory: checked by argparse,
# so a file in the way is one line, not a NotADirectoryError traceback from mkdir.
RESULTS_COMMANDS = [["run"], ["suite", "--local"], ["matrix", "run"]]


@pytest.mark.parametrize("argv", RESULTS_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("under", ["", "out"], ids=["file", "under-file"])
@pytest.mark.usefixtures("nothing_slow")
def test_results_that_is_or_is_under_a_file(
    argv: list[str], under: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    results = afile / under if under else afile
    assert main([*argv, "--results", str(results)]) == 2
    line = one_error_line(capsys)
    assert "--results" in line and "is not a directory" in line, line
    assert afile.read_text() == "mine\n"


# --db: a bad history database is refused before anything runs. matrix run
# records only after every cell ran, so a --db it cannot write must fail first.
def _db_case(tmp_path: Path, kind: str) -> Path:
    if kind == "directory":
        return tmp_path
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    if kind == "under a file":
        return afile / "history.sqlite"
    if kind == "other sqlite":
        import sqlite3

        other = tmp_path / "other.db"
        with sqlite3.connect(other) as conn:
            conn.execute("CREATE TABLE t (x)")
        return other
    return afile  # "not sqlite"


DB_COMMANDS = [
    ["matrix", "run"],
    ["history", "record", "."],
    ["history", "diff", "a", "b"],
    ["report", "html", "."],
]


@pytest.mark.parametrize("argv", DB_COMMANDS, ids=" ".join)
@pytest.mark.parametrize(
    ("kind", "said"),
    [
        ("directory", "is not a regular file"),
        ("under a file", "is not a directory"),
        ("empty", "the path is empty"),
    ],
)
@pytest.mark.usefixtures("nothing_slow")
def test_bad_db_path(
    argv: list[str], kind: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = "" if kind == "empty" else str(_db_case(tmp_path, kind))
    assert (
        main(
            [
                *argv,
                "--db",
                db,
                *(["--results", str(tmp_path / "r")] if argv[0] == "matrix" else []),
            ]
        )
        == 2
    )
    line = one_error_line(capsys)
    assert "--db" in line and said in line, line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("kind", "said"),
    [("not sqlite", "not a history database"), ("other sqlite", "without the history's tables")],
)
@pytest.mark.usefixtures("nothing_slow")
def test_matrix_run_refuses_a_db_that_is_not_a_history_before_any_cell(
    kind: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _db_case(tmp_path, kind)
    before = db.read_bytes()
    assert main(["matrix", "run", "--db", str(db), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aufs-harness: usage error: "), err
    assert said in err[0]
    assert not (tmp_path / "r").exists()
    assert db.read_bytes() == before


# bundle --out: a directory or a FILE.tar.gz. Before, any existing file was
# replaced by the tarball (--out /etc/passwd did that) and a missing directory
# was a FileNotFoundError traceback after the bundle was assembled.
@pytest.mark.usefixtures("nothing_slow")
@pytest.mark.parametrize(
    ("out", "said"),
    [
        ("afile", "is an existing file"),
        ("afile/x.tar.gz", "afile is not a directory"),
        ("no/such/x.tar.gz", "is not a directory"),
        ("nodir", "neither a directory nor a .tar.gz name"),
        ("", "the path is empty"),
    ],
)
def test_bad_bundle_out(
    out: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    where = str(tmp_path / out) if out else ""
    assert main(["bundle", str(tmp_path), "cell", "--out", where]) == 2
    line = one_error_line(capsys)
    assert "--out" in line and said in line, line
    assert afile.read_text() == "mine\n"


@pytest.mark.parametrize("name", [".", "x.tar.gz", "x.tgz"])
def test_bundle_out_takes_a_directory_or_a_tarball_name(tmp_path: Path, name: str) -> None:
    (tmp_path / "x.tar.gz").write_bytes(b"\x1f\x8b old bundle")  # replaced: it is a tarball
    assert argcheck.tarball_out(str(tmp_path / name)) == tmp_path / name


# kmod fixup --to and --name: checked before the kernel and aufs sources are
# fetched. Before, --to FILE was a FileExistsError traceback after that, and
# --name wrote outside --to (../x.patch) or a file the build never applies (x).
FIXUP = ["kmod", "fixup", "--kernel", "debian:bullseye"]


@pytest.mark.usefixtures("nothing_slow")
@pytest.mark.parametrize(
    ("args", "option", "said"),
    [
        (["--to", "{tmp}/afile"], "--to", "is not a directory"),
        (["--to", "{tmp}/afile/fixups"], "--to", "afile is not a directory"),
        (["--to", "{tmp}", "--name", "../evil.patch"], "--name", "not a patch file name"),
        (["--to", "{tmp}", "--name", "myfix"], "--name", "not a patch file name"),
        (["--to", "{tmp}", "--name", ""], "--name", "not a patch file name"),
        (["--to", "{tmp}", "--name", ".patch"], "--name", "not a patch file name"),
    ],
)
def test_bad_fixup_destination(
    args: list[str], option: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("mine\n")
    assert main([*FIXUP, *(a.format(tmp=tmp_path) for a in args)]) == 2
    line = one_error_line(capsys)
    assert option in line and said in line, line
    assert (tmp_path / "afile").read_text() == "mine\n"


# An empty path is Path("") == ".": every path option refuses it instead of
# quietly taking the current directory (--fixup-dir "" applied its *.patch).
EMPTY_PATHS = [
    (["run", "--results", ""], "--results"),
    (["suite", "--local", "--results", ""], "--results"),
    (["matrix", "run", "--results", ""], "--results"),
    (["repro", "r", "c", "--results", ""], "--results"),
    (["run", "--image", ""], "--image"),
    (["run", "--kernel", "debian:bullseye", "--fixup-dir", ""], "--fixup-dir"),
    (["kmod", "build", "--kernel", "debian:bullseye", "--aufs-src", ""], "--aufs-src"),
    (
        ["kmod", "build", "--kernel", "debian:bullseye", "--config-fragment", ""],
        "--config-fragment",
    ),
    (["kmod", "fixup", "--kernel", "debian:bullseye", "--to", ""], "--to"),
]


@pytest.mark.usefixtures("nothing_slow")
@pytest.mark.parametrize(
    ("argv", "option"), EMPTY_PATHS, ids=lambda a: " ".join(a) if isinstance(a, list) else a
)
def test_empty_path_is_refused(
    argv: list[str], option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert option in line and "the path is empty" in line, line
    assert list(cwd.iterdir()) == []


# --kernel that names nothing, or a local tree or tarball that is not there: refused
# before the results directory (an empty --kernel was the stock kernel to `run`).
@pytest.mark.usefixtures("nothing_slow")
@pytest.mark.parametrize(
    ("kernel", "said"),
    [
        ("", "names no kernel"),
        ("path:", "names no kernel"),
        ("path:{tmp}/no-tree", "does not exist"),
        ("file://{tmp}/linux-6.1.tar.xz", "does not exist"),
        ("path:{tmp}", "has no Makefile"),
    ],
)
@pytest.mark.parametrize("command", [["run"], ["kmod", "build"], ["vm", "up"]], ids=" ".join)
def test_kernel_that_names_nothing_there(
    command: list[str], kernel: str, said: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    argv = [*command, "--kernel", kernel.format(tmp=tmp_path)]
    if command == ["run"]:
        argv += ["--results", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aufs-harness: "), err
    assert "--kernel" in err[0] and said in err[0], err[0]
    assert not (tmp_path / "out").exists()


# repro: options it would ignore, and a CHECK that matches everything, are one
# line before anything runs; --shell with a bad --name says only the error.
@pytest.mark.usefixtures("nothing_slow")
@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["test_x", "--name", "mine"], "--name names the VM --shell keeps"),
        (["test_x", "--distro", "trixie"], "drop --image and --distro"),
        ([""], "CHECK is empty"),
        (["--shell", "--name", "Bad Name"], "bad VM name 'Bad Name'"),
        (["--aufs-src", "{tmp}/no-aufs"], "--aufs-src"),
    ],
)
def test_bad_repro_input(
    extra: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.unit.test_repro import _report, _results

    where = _results(tmp_path, _report())
    argv = ["repro", str(where), "debian:bullseye aufs", *(a.format(tmp=tmp_path) for a in extra)]
    assert main([*argv, "--results", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aufs-harness: "), err
    assert said in err[0], err[0]
    assert not (tmp_path / "out").exists()


# Options that only shape an aufs build, given when nothing is built: refused
# instead of ignored (run --aufs-option SHWH=n tested the stock kernel).
@pytest.mark.usefixtures("nothing_slow")
@pytest.mark.parametrize(
    "extra",
    [
        ["--aufs-option", "SHWH=n"],
        ["--aufs-ref", "aufs5.10"],
        ["--loopback"],
        ["--config-base", "defconfig"],
        ["--fixup-dir", "{tmp}"],
        ["--config-fragment", "{tmp}/frag.config"],
    ],
    ids=lambda a: a[0],
)
@pytest.mark.parametrize("command", [["run"], ["vm", "up"]], ids=" ".join)
def test_build_option_without_kernel(
    command: list[str], extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "frag.config").write_text("CONFIG_XFS_FS=y\n")
    argv = [*command, *(a.format(tmp=tmp_path) for a in extra)]
    if command == ["run"]:
        argv += ["--results", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aufs-harness: usage error: "), err
    assert f"{extra[0]} builds an aufs kernel: add --kernel" in err[0], err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("nothing_slow")
@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--distro", "trixie"], "drop --kernel, --image and --distro"),
        (["--aufs-option", "SHWH=n"], "--aufs-option is the cell's own with --from"),
        (["--loopback"], "--loopback is the cell's own with --from"),
    ],
)
def test_vm_up_from_refuses_what_the_cell_decides(
    extra: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.unit.test_repro import _report, _results

    where = _results(tmp_path, _report())
    argv = ["vm", "up", "--name", "x", "--from", str(where), "debian:bullseye aufs", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0], err


@pytest.mark.usefixtures("nothing_slow")
@pytest.mark.parametrize("option", ["--hosts", "--baseline", None])
def test_toml_file_that_is_not_utf8_or_under_a_file(
    option: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[[host]]\xff\n")
    for path in (binary, binary / "x.toml"):
        argv = ["matrix", "run", *([option, str(path)] if option else [str(path)])]
        assert main([*argv, "--results", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("aufs-harness: usage error: "), err
        assert str(path) in err[0]


# kmod load/unload: a .ko that is not there or an empty name is bad input (exit 2),
# said before the root check and the loader; it was a load failure (exit 1).
@pytest.mark.usefixtures("nothing_slow")
@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["kmod", "load", "{tmp}/aufs.ko"], "aufs.ko is not a file"),
        (["kmod", "load", "{tmp}"], "is not a file"),
        (["kmod", "load", ""], "the module is empty"),
        (["kmod", "unload", ""], "the module name is empty"),
    ],
)
def test_bad_module(
    argv: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aufs-harness: usage error: "), err
    assert said in err[0], err[0]


# Commands that read a run's report.json: a path under a file or a directory
# named report.json were NotADirectoryError/IsADirectoryError tracebacks.
@pytest.mark.parametrize(
    "argv",
    [
        ["report", "compare", "{where}", "{where}"],
        ["report", "html", "{where}"],
        ["history", "record", "{where}"],
        ["history", "diff", "{where}", "{where}"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
@pytest.mark.parametrize(
    ("where", "said"),
    [("afile/x", "no such"), ("run", "cannot read it (Is a directory)")],
)
def test_unreadable_report(
    argv: list[str], where: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("mine\n")
    (tmp_path / "run" / "report.json").mkdir(parents=True)
    assert main([a.format(where=tmp_path / where) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aufs-harness: usage error: "), err
    assert said in err[0], err[0]


@pytest.mark.usefixtures("nothing_slow")
@pytest.mark.parametrize("command", [["run"], ["vm", "up"]], ids=" ".join)
def test_distro_with_own_image(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--distro was silently ignored next to --image (the image has its own userland)."""
    image = _image(tmp_path, 0, b"QFI\xfb" + struct.pack(">I", 3))
    argv = [*command, "--image", str(image), "--distro", "trixie"]
    if command == ["run"]:
        argv += ["--results", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--distro trixie picks the harness's image" in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("nothing_slow")
@pytest.mark.parametrize("ref", ["", "--upload-pack=x", "aufs 5.10"])
def test_bad_aufs_ref(ref: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty --aufs-ref silently chose one from the kernel version."""
    assert main(["kmod", "build", "--kernel", "debian:bullseye", f"--aufs-ref={ref}"]) == 2
    line = one_error_line(capsys)
    assert "--aufs-ref" in line and "is not a git ref" in line, line


HOST = """[[host]]
name = "h"
address = "127.0.0.1"
key = "{key}"
host_key = "ssh-ed25519 AAAA"
cores = 2
memory_mb = 4096
harness = ["aufs-harness"]
workdir = "/var/tmp/cells"
"""


@pytest.mark.usefixtures("nothing_slow")
@pytest.mark.parametrize(
    ("change", "said"),
    [
        (("", "port = 70000\n"), "port: 70000 is not a TCP port"),
        (("", 'user = ""\n'), "user: '' is not a non-empty string"),
        (('address = "127.0.0.1"', 'address = ""'), "address: '' is not a non-empty string"),
        (('key = "{key}"', 'key = "{tmp}"'), "is not a file"),
        # too small for any VM: said after the results directory was made
        (("memory_mb = 4096", "memory_mb = 100"), "no host can run a VM of 2 CPUs"),
    ],
)
def test_bad_host_inventory(
    change: tuple[str, str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "key").write_text("not a real key\n")
    old, new = change
    text = HOST.replace(old, new) if old else HOST + new
    inventory = tmp_path / "hosts.toml"
    inventory.write_text(text.format(key=tmp_path / "key", tmp=tmp_path))
    argv = ["matrix", "run", "--hosts", str(inventory), "--results", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aufs-harness: usage error: "), err
    assert said in err[0], err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("nothing_slow")
@pytest.mark.parametrize(
    ("vms", "said"),
    [("1x99999999", "is more than this host's"), ("999x512", "1 to 64 CPUs")],
)
def test_vm_shape_beyond_what_smp_and_memory_allow(
    vms: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--memory and --smp were bounded; the same VM given as --vms CPUSxMB was not."""
    assert main(["run", "--vms", vms, "--results", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--vms {vms}" in err[0] and said in err[0], err
    assert not (tmp_path / "out").exists()
