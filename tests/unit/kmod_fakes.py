"""A fake kernel tree and a fake aufs-standalone repository for kmod's unit tests.

The fake tree has the Makefile fields a real one has, a few source files the
fake aufs patches touch, and make targets (allnoconfig, olddefconfig,
defconfig, bzImage, modules, kernelrelease) that emit dummy artifacts in
milliseconds, like tuxmake's test/fakelinux. Its "compiler" fails when
fs/aufs/vfsub.c still contains OLD_RENAME, the way vfs_rename() breaks aufs5.10.140
on Debian's 5.10.223; its "Kconfig" drops every symbol listed in
.fake-unsupported, the way Kconfig drops an option whose dependencies are unmet.
"""

from __future__ import annotations

import difflib
import os
import subprocess
from pathlib import Path

# Lines of mm/mmap.c in the fake kernel; patches are written against them.
MMAP = [f"mmap line {i}\n" for i in range(1, 61)]

MAKEFILE = """\
VERSION = {version}
PATCHLEVEL = {patchlevel}
SUBLEVEL = {sublevel}
EXTRAVERSION = {extraversion}
NAME = Fake Kernel

KREL := $(VERSION).$(PATCHLEVEL).$(SUBLEVEL)$(EXTRAVERSION)
.PHONY: allnoconfig olddefconfig defconfig bzImage modules kernelrelease

allnoconfig:
\t@touch .fake-unsupported
\t@grep -v -F -f .fake-unsupported $(KCONFIG_ALLCONFIG) > .config || true

olddefconfig:
\t@test -f .config

defconfig:
\t@echo CONFIG_FROM_DEFCONFIG=y > .config

bzImage:
\t@if grep -q OLD_RENAME fs/aufs/vfsub.c; then \\
\t  echo "  CC [M]  fs/aufs/vfsub.o"; \\
\t  echo "fs/aufs/vfsub.c:3:15: error: too many arguments to function 'vfs_rename'" >&2; \\
\t  echo "make[2]: *** [scripts/Makefile.build:280: fs/aufs/vfsub.o] Error 1" >&2; \\
\t  exit 2; fi
\t@mkdir -p arch/x86/boot
\t@echo "fake bzImage $(KREL)" > arch/x86/boot/bzImage
\t@echo "ffffffff81000000 T _stext" > System.map
\t@echo x >> .fake-builds

modules: bzImage
\t@printf 'vermagic=%s SMP mod_unload \\n' "$(if $(FAKE_VERMAGIC),$(FAKE_VERMAGIC),$(KREL))" \\
\t  > fs/aufs/aufs.ko

kernelrelease:
\t@echo $(KREL)
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_kernel_tree(root: Path, version: str = "5.10.223", mmap: list[str] | None = None) -> Path:
    """A fake kernel tree at root: Makefile, fs/, mm/mmap.c, include/."""
    base, _, extra = version.partition("-")
    nums = [*base.split("."), "0"][:3]
    extraversion = f"-{extra}" if extra else ""
    write(
        root / "Makefile",
        MAKEFILE.format(
            version=nums[0], patchlevel=nums[1], sublevel=nums[2], extraversion=extraversion
        ),
    )
    write(root / "fs/Makefile", "obj-y += ext4/\nobj-y += proc/\n")
    write(root / "fs/Kconfig", 'source "fs/ext4/Kconfig"\n')
    write(root / "include/linux/fs.h", "struct inode;\nint vfs_rename(void);\n")
    write(root / "include/uapi/linux/fs.h", "/* uapi */\n")
    write(root / "mm/mmap.c", "".join(mmap if mmap is not None else MMAP))
    write(root / "kernel/fork.c", "int fork(void);\n")
    return root


def udiff(path: str, old: list[str] | str, new: list[str] | str) -> str:
    a = old.splitlines(keepends=True) if isinstance(old, str) else old
    b = new.splitlines(keepends=True) if isinstance(new, str) else new
    return "".join(difflib.unified_diff(a, b, f"a/{path}", f"b/{path}"))


def mmap_patch(edits: dict[int, str], base: list[str] | None = None) -> str:
    """A patch to mm/mmap.c replacing line N (1-based) of `base` with text, per edit."""
    old = list(base or MMAP)
    new = list(old)
    for line, text in edits.items():
        new[line - 1] = text
    return udiff("mm/mmap.c", old, new)


def series(major: int, vfsub: str, mmap_edits: dict[int, str]) -> dict[str, str]:
    """The files of one aufs-standalone branch."""
    return {
        f"aufs{major}-kbuild.patch": udiff(
            "fs/Makefile",
            "obj-y += ext4/\nobj-y += proc/\n",
            "obj-y += ext4/\nobj-y += proc/\nobj-$(CONFIG_AUFS_FS) += aufs/\n",
        ),
        f"aufs{major}-base.patch": udiff(
            "include/linux/fs.h",
            "struct inode;\nint vfs_rename(void);\n",
            "struct inode;\nint vfs_rename(void);\nvoid au_base(void);\n",
        ),
        f"aufs{major}-mmap.patch": mmap_patch(mmap_edits),
        f"aufs{major}-standalone.patch": udiff(
            "kernel/fork.c", "int fork(void);\n", "int fork(void);\nEXPORT_SYMBOL(fork);\n"
        ),
        f"aufs{major}-loopback.patch": udiff(
            "kernel/fork.c", "int fork(void);\n", "int fork(void);\n/* loopback */\n"
        ),
        "fs/aufs/vfsub.c": vfsub,
        "fs/aufs/Kconfig": "config AUFS_FS\n\ttristate\n",
        "Documentation/filesystems/aufs/README": "aufs\n",
        "include/uapi/linux/aufs_type.h": f'#define AUFS_VERSION "{major}"\n',
        "include/uapi/linux/Kbuild": "never copied\n",
        "README": "fake aufs-standalone\n",
    }


GOOD_VFSUB = "#include <linux/fs.h>\n\nint r(void) { return vfs_rename(); }\n"
OLD_VFSUB = "#include <linux/fs.h>\n/* OLD_RENAME */\nint r(void) { return vfs_rename(1, 2); }\n"

# Branch -> files. aufs5.10.140 needs the fix-up below on the fake 5.10.223.
BRANCHES: dict[str, dict[str, str]] = {
    "aufs5.10": series(5, GOOD_VFSUB, {5: "aufs 5.10 mmap\n"}),
    "aufs5.10.82": series(5, GOOD_VFSUB, {5: "aufs 5.10.82 mmap\n"}),
    "aufs5.10.140": series(5, OLD_VFSUB, {5: "aufs mmap one\n", 40: "aufs mmap two\n"}),
    "aufs6.1": series(6, GOOD_VFSUB, {5: "aufs 6.1 a\n", 20: "aufs 6.1 b\n", 50: "aufs 6.1 c\n"}),
    "aufs6.x-rcN": series(6, GOOD_VFSUB, {5: "aufs rc\n"}),
}

VFSUB_FIXUP = udiff("fs/aufs/vfsub.c", OLD_VFSUB, GOOD_VFSUB)


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    res = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True
    )
    return res.stdout.strip()


def make_aufs_repo(root: Path, branches: dict[str, dict[str, str]] | None = None) -> Path:
    """A git repository with one orphan branch per aufs branch."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "master")
    write(root / "README", "master\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "master")
    for name, files in (branches or BRANCHES).items():
        git(root, "checkout", "-q", "--orphan", name)
        git(root, "rm", "-rq", "--cached", ".")
        for p in root.iterdir():
            if p.name != ".git":
                subprocess.run(["rm", "-rf", str(p)], check=True)
        for rel, text in files.items():
            write(root / rel, text)
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", name)
    git(root, "checkout", "-q", "master")
    return root


def read_vermagic(module: Path, deadline: object = None) -> str:
    """Stands in for modinfo on the fake tree's text "modules"."""
    for line in module.read_text().splitlines():
        if line.startswith("vermagic="):
            return line[len("vermagic=") :].strip()
    raise AssertionError(f"no vermagic in {module}")
