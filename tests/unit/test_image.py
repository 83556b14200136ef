"""vm.image without mmdebstrap: recipe validation, store keys, rendered scripts,
the cache paths of build_image and the PVH vmlinux extraction."""

from __future__ import annotations

import lzma
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from harness.core.deadline import Deadline
from harness.core.errors import InfraError, UserError
from harness.core.procs import owner_token
from harness.core.store import key_of
from tests.unit.golden import check_golden
from vm import image as image_mod
from vm import userns
from vm.image import (
    CMDLINE,
    INIT_PATH,
    SUITES,
    ImageRecipe,
    build_image,
    bzimage_payload,
    extract_vmlinux,
    has_pvh_note,
    render_init,
)


# -- recipe validation ---------------------------------------------------------
def test_unknown_suite_is_one_line_naming_the_valid_ones() -> None:
    with pytest.raises(UserError) as err:
        ImageRecipe(suite="buster")
    message = str(err.value)
    assert "\n" not in message and "'buster'" in message
    for suite in SUITES:
        assert suite in message


@pytest.mark.parametrize("suite", SUITES)
def test_every_listed_suite_is_accepted(suite: str) -> None:
    assert ImageRecipe(suite=suite).suite == suite


@pytest.mark.parametrize("bad", ["Strace", "a", "rm -rf", "pkg;ls", "-x"])
def test_bad_package_names_are_refused(bad: str) -> None:
    with pytest.raises(UserError, match="package name"):
        ImageRecipe(extra_packages=(bad,))


def test_a_string_is_not_a_package_tuple() -> None:
    with pytest.raises(UserError, match="tuple"):
        ImageRecipe(extra_packages="strace")  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 512, 1023, 64 * 1024 + 1])
def test_size_out_of_range(size: int) -> None:
    with pytest.raises(UserError, match="MiB"):
        ImageRecipe(size_mb=size)


def test_mirror_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(image_mod.MIRROR_ENV, "http://mirror.example/debian")
    assert ImageRecipe().mirror == "http://mirror.example/debian"
    monkeypatch.setenv(image_mod.MIRROR_ENV, "not a url")
    with pytest.raises(UserError, match="mirror"):
        ImageRecipe()


def test_pytest_is_not_installed_from_debian() -> None:
    assert not any("pytest" in p for p in ImageRecipe().packages)


# -- store keys ----------------------------------------------------------------
def test_key_is_stable() -> None:
    assert key_of(ImageRecipe().inputs()) == key_of(ImageRecipe().inputs())
    assert key_of(ImageRecipe(extra_packages=("strace", "gdb")).inputs()) == key_of(
        ImageRecipe(extra_packages=("gdb", "strace", "gdb")).inputs()
    )
    # a base package named again changes nothing
    assert key_of(ImageRecipe(extra_packages=("kmod",)).inputs()) == key_of(ImageRecipe().inputs())


@pytest.mark.parametrize(
    "other",
    [
        {"suite": "trixie"},
        {"extra_packages": ("strace",)},
        {"size_mb": 4096},
        {"mirror": "http://mirror.example/debian"},
        {"security_mirror": "http://mirror.example/debian-security"},
    ],
)
def test_key_changes_with_every_field(other: dict[str, Any]) -> None:
    assert key_of(ImageRecipe(**other).inputs()) != key_of(ImageRecipe().inputs())


def test_key_changes_with_the_init_and_the_recipe_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = key_of(ImageRecipe().inputs())
    monkeypatch.setattr(image_mod, "GUEST_ADDRESS", "10.0.2.16/24")
    assert key_of(ImageRecipe().inputs()) != before
    monkeypatch.undo()
    monkeypatch.setattr(image_mod, "RECIPE_VERSION", image_mod.RECIPE_VERSION + 1)
    assert key_of(ImageRecipe().inputs()) != before


def test_inputs_name_the_init_script_text() -> None:
    inputs = ImageRecipe().inputs()
    templates = inputs["templates"]
    assert isinstance(templates, dict)
    assert templates["hook-files/harness-init"] == render_init()
    assert inputs["recipe_version"] == image_mod.RECIPE_VERSION


# -- rendered scripts ----------------------------------------------------------
def test_guest_init_golden() -> None:
    check_golden("guest-init.sh", render_init())


@pytest.mark.parametrize(
    ("name", "golden"),
    [
        ("hooks/customize.sh", "image-customize.sh"),
        ("hook-files/initramfs-init", "initramfs-init.sh"),
    ],
)
def test_build_scripts_golden(name: str, golden: str) -> None:
    check_golden(golden, ImageRecipe().templates()[name])


@pytest.mark.parametrize("name", sorted(ImageRecipe().templates()))
def test_rendered_scripts_are_valid_posix_sh(name: str) -> None:
    text = ImageRecipe().templates()[name]
    # The guest's scripts run on the image's static busybox (vm/image.py).
    assert text.startswith(("#!/bin/sh\n", "#!/bin/busybox sh\n"))
    sh = shutil.which("dash") or shutil.which("sh")
    assert sh is not None
    result = subprocess.run([sh, "-n"], input=text, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_init_reads_the_agreed_seed_layout() -> None:
    init = render_init()
    for rel in (
        "harness/authorized_keys",
        "harness/ssh_host_ed25519_key",
        "harness/ssh_host_ed25519_key.pub",
        "harness/hostname",
    ):
        assert f'"$seed/{rel}"' in init
    assert "LABEL=CIDATA" in init and "LABEL=cidata" in init and "seeded /dev/vdb ||" in init
    assert "address add 10.0.2.15/24" in init and "via 10.0.2.2" in init
    # sshd starts before the network is configured: it listens on any address.
    assert init.index("/usr/sbin/sshd -r") < init.index("ip link set lo up")
    assert "harness-init: $*" in init and image_mod.READY_MARKER in init
    assert "systemd-udevd" in init and "--daemon" in init
    assert "udevadm" not in init  # no trigger, no settle


def test_customize_hook_removes_baked_host_keys() -> None:
    customize = ImageRecipe().templates()["hooks/customize.sh"]
    assert 'rm -f "$root"/etc/ssh/ssh_host_*' in customize
    assert "PasswordAuthentication no" in customize


def test_cmdline_boots_the_harness_init() -> None:
    assert "root=/dev/vda" in CMDLINE and f"init={INIT_PATH}" in CMDLINE
    assert "console=ttyS0" in CMDLINE


# -- build_image and the cache -------------------------------------------------
def fake_build(calls: list[Path]) -> Any:
    def build(recipe: ImageRecipe, tmp: Path, logfile: Path, deadline: Deadline) -> dict[str, Any]:
        calls.append(tmp)
        for name in (image_mod.ROOTFS, image_mod.VMLINUZ, image_mod.INITRD, image_mod.VMLINUX):
            (tmp / name).write_bytes(b"x")
        return {"kernel_release": "6.1.0-99-amd64", "cmdline": list(CMDLINE), "vmlinux": True}

    return build


def test_build_then_cache_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(image_mod, "_build", fake_build(calls))
    first = build_image(ImageRecipe(), Deadline(10, "test"))
    assert not first.cached and len(calls) == 1
    assert first.kernel_release == "6.1.0-99-amd64" and first.cmdline == CMDLINE
    assert first.kernel == first.vmlinux and first.vmlinux is not None
    start = time.monotonic()
    second = build_image(ImageRecipe(), Deadline(10, "test"))
    assert time.monotonic() - start < 1.0
    assert second.cached and len(calls) == 1
    assert second.rootfs == first.rootfs and second.rootfs.parent.parent.name == "images"


def test_incomplete_cache_entry_is_rebuilt(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(image_mod, "_build", fake_build(calls))
    first = build_image(ImageRecipe(), Deadline(10, "test"))
    first.rootfs.unlink()
    again = build_image(ImageRecipe(), Deadline(10, "test"))
    assert len(calls) == 2 and not again.cached and again.rootfs.is_file()


def test_a_failed_step_names_itself_and_the_log(
    monkeypatch: pytest.MonkeyPatch, private_tmp: Path
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(image_mod, "which", lambda program, package: f"/usr/bin/{program}")

    def failing_run(argv: list[object], **kw: object) -> None:
        logfile = kw["logfile"]
        assert isinstance(logfile, Path)
        logfile.write_text("I: fine\nE: Unable to locate package nosuchpackage\nI: cleanup\n")
        raise InfraError("mmdebstrap exited 1")

    monkeypatch.setattr(image_mod, "run", failing_run)
    with pytest.raises(InfraError) as err:
        build_image(ImageRecipe(), Deadline(10, "test"))
    message = str(err.value)
    assert "\n" not in message and "mmdebstrap" in message
    assert "Unable to locate package nosuchpackage" in message and "log: " in message
    log_path = Path(message.rsplit("log: ", 1)[1].rstrip(")"))
    assert log_path.is_file()  # kept for the user, outside the discarded build dir


# -- building as a normal user (vm/userns.py) ----------------------------------
@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$TMPDIR for the build's work directory, reachable by others like /tmp."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir(mode=0o1777)
    tmp.chmod(0o1777)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr("tempfile.tempdir", None)
    return tmp


@pytest.fixture
def ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Empty /etc/subuid and /etc/subgid, and a kernel that allows user namespaces."""
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("")
    subgid.write_text("")
    proc = tmp_path / "proc-sys"
    (proc / "user").mkdir(parents=True)
    (proc / "user" / "max_user_namespaces").write_text("96364\n")
    monkeypatch.setattr(userns, "SUBUID", subuid)
    monkeypatch.setattr(userns, "SUBGID", subgid)
    monkeypatch.setattr(userns, "PROC_SYS", proc)
    monkeypatch.setattr(userns, "user_name", lambda: "alice")
    monkeypatch.setattr(userns, "find_tool", lambda tool: f"/usr/bin/{tool}")
    return subuid, subgid


def test_a_user_without_subordinate_ids_is_told_how_to_grant_them(
    monkeypatch: pytest.MonkeyPatch, ids: tuple[Path, Path]
) -> None:
    subuid, subgid = ids
    subuid.write_text("bob:100000:65536\n")
    subgid.write_text("bob:100000:65536\n")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    ran: list[object] = []
    monkeypatch.setattr(image_mod, "run", lambda argv, **kw: ran.append(argv))
    monkeypatch.setattr(userns, "run", lambda argv, **kw: ran.append(argv))
    monkeypatch.setattr(image_mod, "which", lambda program, package: f"/usr/bin/{program}")
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        build_image(ImageRecipe(), Deadline(10, "test"))
    assert time.monotonic() - start < 1.0 and not ran  # nothing started
    message = str(err.value)
    assert "\n" not in message
    assert f"no subordinate uids for alice in {subuid}" in message
    # a block nobody has yet: after bob's
    assert "`sudo usermod --add-subuids 165536-231071 --add-subgids 165536-231071 alice`" in message


def test_check_buildable_is_quiet_for_a_cached_image(
    monkeypatch: pytest.MonkeyPatch, ids: tuple[Path, Path]
) -> None:
    monkeypatch.setattr(image_mod, "_build", fake_build([]))
    build_image(ImageRecipe(), Deadline(10, "test"))
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setattr(image_mod, "which", lambda program, package: f"/usr/bin/{program}")
    image_mod.check_buildable(ImageRecipe(), Deadline(10, "test"))  # cached: no ids needed
    with pytest.raises(UserError, match="no subordinate uids for alice"):
        image_mod.check_buildable(ImageRecipe(suite="trixie"), Deadline(10, "test"))


@pytest.mark.parametrize(
    ("sysctl", "value", "fix"),
    [
        ("kernel/unprivileged_userns_clone", "0", "kernel.unprivileged_userns_clone=1"),
        ("user/max_user_namespaces", "0", "user.max_user_namespaces=15000"),
        (
            "kernel/apparmor_restrict_unprivileged_userns",
            "1",
            "kernel.apparmor_restrict_unprivileged_userns=0",
        ),
    ],
)
def test_disabled_user_namespaces_name_the_sysctl(
    ids: tuple[Path, Path], tmp_path: Path, sysctl: str, value: str, fix: str
) -> None:
    path = tmp_path / "proc-sys" / sysctl
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
    reason = userns.static_reason("alice")
    assert reason is not None and f"`sudo sysctl -w {fix}`" in reason


def test_missing_uidmap_and_short_ranges_are_named(
    monkeypatch: pytest.MonkeyPatch, ids: tuple[Path, Path]
) -> None:
    subuid, subgid = ids
    subuid.write_text("alice:100000:65536\nalice:300000:65536\n")
    subgid.write_text("alice:100000:1000\n")
    reason = userns.static_reason("alice")
    assert reason is not None and f"alice has only 1000 subordinate gids in {subgid}" in reason
    assert "--add-subgids 365536-431071 alice" in reason
    subgid.write_text("alice:100000:65536\n")
    assert userns.static_reason("alice") is None
    monkeypatch.setattr(userns, "find_tool", lambda tool: None)
    reason = userns.static_reason("alice")
    assert reason is not None and "install the Debian package uidmap" in reason


def test_a_failed_namespace_probe_is_one_line(
    monkeypatch: pytest.MonkeyPatch, ids: tuple[Path, Path]
) -> None:
    for path in ids:
        path.write_text("alice:100000:65536\n")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    probe = subprocess.CompletedProcess(
        [], 1, "", "newuidmap: write to uid_map failed: Operation not permitted\nE: more\n"
    )
    monkeypatch.setattr(userns, "run", lambda argv, **kw: probe)
    with pytest.raises(UserError) as err:
        userns.check("/usr/bin/mmdebstrap", Deadline(10, "test"))
    message = str(err.value)
    assert "\n" not in message and "write to uid_map failed" in message
    monkeypatch.setattr("os.geteuid", lambda: 0)
    userns.check("/usr/bin/mmdebstrap", Deadline(10, "test"))  # root needs nothing


def build_commands(monkeypatch: pytest.MonkeyPatch, euid: int) -> list[list[str]]:
    """The commands a build runs, with mmdebstrap faked: its tree has a kernel."""
    monkeypatch.setattr("os.geteuid", lambda: euid)
    monkeypatch.setattr(userns, "run", lambda argv, **kw: subprocess.CompletedProcess(argv, 0))
    monkeypatch.setattr(image_mod, "which", lambda program, package: f"/usr/bin/{program}")
    commands: list[list[str]] = []

    def fake_run(argv: list[object], **kw: object) -> subprocess.CompletedProcess[str]:
        args = [str(a) for a in argv]
        commands.append(args)
        if "--unshare-helper" in args:  # never from a cwd the namespace cannot reach
            assert kw["cwd"] == Path("/"), args
        if args[0].endswith("mmdebstrap") and "--mode=unshare" in args:
            boot = Path(args[-4]) / "boot"  # the tree: before the three sources
            boot.mkdir(parents=True)
            (boot / "vmlinuz-6.1.0-99-amd64").write_bytes(b"not a bzImage")
            (boot / image_mod.HARNESS_INITRD).write_bytes(b"070701")  # the customize hook's
        elif "--unshare-helper" in args and args[2] == "cp":
            shutil.copyfile(args[3], args[4])
        elif "--unshare-helper" in args and args[2].endswith("mke2fs"):
            Path(args[-2]).write_bytes(b"ext4")
        elif "--unshare-helper" in args and args[2] == "find":
            shutil.rmtree(args[3])
            Path(args[3]).mkdir()
        elif args[0].endswith("debugfs") and args[1] == "-R":  # a root tree's /dev: complete
            names = [n for n, _ in image_mod.DEV_NODES + image_mod.DEV_LINKS] + ["pts", "shm"]
            return subprocess.CompletedProcess(
                args, 0, "".join(f"/9/020666/0/0/{n}/0/\n" for n in names), ""
            )
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(image_mod, "run", fake_run)
    build_image(ImageRecipe(), Deadline(10, "test"))
    return commands


def test_root_and_users_build_the_image_with_the_same_commands(
    monkeypatch: pytest.MonkeyPatch, ids: tuple[Path, Path], private_tmp: Path, tmp_path: Path
) -> None:
    for path in ids:
        path.write_text("alice:100000:65536\n")
    monkeypatch.setattr(userns, "traversable_by_others", lambda path: True)  # pytest's 0700
    as_root = build_commands(monkeypatch, 0)
    shutil.rmtree(tmp_path / "cache")
    as_user = build_commands(monkeypatch, 1000)
    work = re.compile(r"aufs-harness-image-[0-9_]+-[a-z0-9_]+")
    assert [[work.sub("WORK", a) for a in c] for c in as_root] == [
        [work.sub("WORK", a) for a in c] for c in as_user
    ]
    mmdebstrap, *rest = as_user
    assert "--mode=unshare" in mmdebstrap and mmdebstrap[-4].endswith("/tree")
    assert mmdebstrap[-4].startswith(str(private_tmp))  # not in the cache: see _work_dir
    helped = [c[2] for c in rest if c[1] == "--unshare-helper"]
    assert helped == ["cp", "cp", "/usr/bin/mke2fs", "find"]
    mke2fs = next(c for c in rest if c[2] == "/usr/bin/mke2fs")
    assert mke2fs[mke2fs.index("-d") + 1] == mmdebstrap[-4]
    assert not list(private_tmp.iterdir())  # the work directory is gone
    entry = next((tmp_path / "cache" / "images").glob("*/rootfs.img"))
    assert entry.read_bytes() == b"ext4" and entry.stat().st_mode & 0o777 == 0o644


@pytest.mark.skipif(
    not (shutil.which("mke2fs") and shutil.which("debugfs")), reason="needs e2fsprogs"
)
def test_an_image_without_dev_nodes_gets_those_of_a_root_build(tmp_path: Path) -> None:
    """A user's tree has an empty /dev (no mknod in a user namespace)."""
    tree = tmp_path / "tree"
    (tree / "dev").mkdir(parents=True)
    (tree / "dev" / "fd").symlink_to("/proc/self/fd")  # one present already: kept
    rootfs = tmp_path / "rootfs.img"
    deadline = Deadline(60, "test")
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree), str(rootfs), "8M"],
                   check=True)  # fmt: skip
    log = tmp_path / "log"
    image_mod._complete_dev(rootfs, tmp_path, deadline, log)
    debugfs = shutil.which("debugfs") or "debugfs"
    listing = subprocess.run([debugfs, "-R", "ls -p /dev", str(rootfs)],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    entries = {f[5]: [f[3], f[4], f[2]] for f in (ln.split("/") for ln in listing.splitlines())
               if len(f) > 6}  # fmt: skip
    assert entries["null"] == ["0", "0", "020666"] and entries["console"][2] == "020666"
    assert entries["pts"] == ["0", "0", "040755"] and entries["stdout"][2] == "120777"
    assert image_mod.dev_commands(set(entries)) == ["cd /dev"]
    assert image_mod.dev_commands(set())[1:3] == ["mknod console c 5 1", "sif console mode 020666"]
    fsck = subprocess.run(
        ["e2fsck", "-fn", str(rootfs)], capture_output=True, text=True, check=False
    )
    assert fsck.returncode == 0, fsck.stdout


def test_work_dirs_of_dead_builds_are_removed_through_the_helper(
    monkeypatch: pytest.MonkeyPatch, private_tmp: Path
) -> None:
    pid, _, start = owner_token().partition(":")
    live = private_tmp / f"aufs-harness-image-{pid}_{start}-abc"
    dead = private_tmp / f"aufs-harness-image-{pid}_{int(start) + 1}-def"  # pid reused
    for work in (live, dead):
        (work / "tree" / "etc").mkdir(parents=True)
    helped: list[list[str]] = []

    def fake_run(argv: list[object], **kw: object) -> subprocess.CompletedProcess[str]:
        args = [str(a) for a in argv]
        helped.append(args)
        assert args[1] == "--unshare-helper" and kw["cwd"] == Path("/")
        shutil.rmtree(Path(args[3]) / "etc")
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(image_mod, "run", fake_run)
    image_mod._remove_dead_work_dirs("/usr/bin/mmdebstrap", Deadline(10, "test"))
    assert not dead.exists() and live.is_dir() and len(helped) == 1


def test_a_tmpdir_others_cannot_reach_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    monkeypatch.setenv("TMPDIR", str(private))
    monkeypatch.setattr("tempfile.tempdir", None)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(UserError, match="set TMPDIR to a directory such as /var/tmp"):
        image_mod._work_dir()
    assert not list(private.iterdir())
    assert userns.traversable_by_others(Path("/tmp"))
    assert not userns.traversable_by_others(private)


# -- the PVH vmlinux -----------------------------------------------------------
def elf_with_notes(notes: bytes) -> bytes:
    """A minimal 64-bit ELF whose only program header is PT_NOTE."""
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 1)  # e_phentsize, e_phnum
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 120, 0, 0, len(notes), len(notes), 4)
    return bytes(header) + phdr + notes


def pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    return struct.pack("<III", len(name), len(desc), ntype) + pad4(name) + pad4(desc)


def bzimage(payload: bytes, setup_sects: int = 3) -> bytes:
    head = bytearray((setup_sects + 1) * 512)
    head[0x1F1] = setup_sects
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", head, 0x248, 16, len(payload))
    return bytes(head) + b"\0" * 16 + payload + b"trailer"


PVH_ELF = elf_with_notes(note(b"Linux", 6, b"x") + note(b"Xen", 18, b"\0\0\0\x01"))
PLAIN_ELF = elf_with_notes(note(b"Xen", 6, b"linux\0"))


def test_pvh_note_is_found_among_others() -> None:
    assert has_pvh_note(PVH_ELF)
    assert not has_pvh_note(PLAIN_ELF)
    assert not has_pvh_note(b"MZ" + b"\0" * 100)


def test_extract_vmlinux_from_an_xz_bzimage(tmp_path: Path) -> None:
    payload = lzma.compress(PVH_ELF, format=lzma.FORMAT_XZ) + b"\x10\x00\x00\x00"
    (tmp_path / "vmlinuz").write_bytes(bzimage(payload))
    assert bzimage_payload((tmp_path / "vmlinuz").read_bytes()) == payload
    assert extract_vmlinux(tmp_path / "vmlinuz", tmp_path / "vmlinux")
    assert (tmp_path / "vmlinux").read_bytes() == PVH_ELF


def test_no_vmlinux_without_pvh_or_known_compression(tmp_path: Path) -> None:
    (tmp_path / "plain").write_bytes(bzimage(lzma.compress(PLAIN_ELF, format=lzma.FORMAT_XZ)))
    assert not extract_vmlinux(tmp_path / "plain", tmp_path / "out")
    (tmp_path / "zstd").write_bytes(bzimage(b"\x28\xb5\x2f\xfd" + b"\0" * 64))
    assert not extract_vmlinux(tmp_path / "zstd", tmp_path / "out")
    (tmp_path / "junk").write_bytes(b"not a kernel" * 100)
    assert not extract_vmlinux(tmp_path / "junk", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(shutil.which("zstd") is None, reason="needs the zstd program")
def test_extract_vmlinux_from_a_zstd_bzimage(tmp_path: Path) -> None:
    (tmp_path / "elf").write_bytes(PVH_ELF)
    zstd = shutil.which("zstd")
    assert zstd is not None
    subprocess.run([zstd, "-q", "-19", tmp_path / "elf", "-o", tmp_path / "elf.zst"], check=True)
    payload = (tmp_path / "elf.zst").read_bytes() + struct.pack("<I", len(PVH_ELF))
    (tmp_path / "vmlinuz").write_bytes(bzimage(payload))
    assert extract_vmlinux(tmp_path / "vmlinuz", tmp_path / "vmlinux", Deadline(30, "test"))
    assert (tmp_path / "vmlinux").read_bytes() == PVH_ELF
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elf", "elf.zst", "vmlinux", "vmlinuz"]


def test_images_install_from_updates_and_security(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(image_mod.MIRROR_ENV, "http://m.example/debian/")
    monkeypatch.delenv(image_mod.SECURITY_MIRROR_ENV, raising=False)
    assert ImageRecipe(suite="trixie").sources() == [
        "http://m.example/debian",
        "deb http://m.example/debian trixie-updates main",
        "deb http://m.example/debian-security trixie-security main",
    ]
    assert ImageRecipe(suite="sid").sources() == ["http://m.example/debian/"]
    assert ImageRecipe(suite="trixie").inputs()["sources"] == ImageRecipe(suite="trixie").sources()
