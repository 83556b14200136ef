"""Kernel versions as the tree's top Makefile states them, and their order."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import UserError

_FIELD = re.compile(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)\s*=[ \t]*(\S*)[ \t]*$", re.M)
_TEXT = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(\S*)$")
_RC = re.compile(r"-rc(\d+)")


@functools.total_ordering
@dataclass(frozen=True)
class KernelVersion:
    """VERSION.PATCHLEVEL.SUBLEVEL plus EXTRAVERSION (e.g. "-rc3")."""

    version: int
    patchlevel: int
    sublevel: int = 0
    extraversion: str = ""

    @classmethod
    def parse(cls, text: str) -> KernelVersion:
        """Parse "5.10.223", "6.13-rc3" or "v6.1"."""
        m = _TEXT.match(text.strip())
        if not m:
            raise UserError(f"not a kernel version: {text!r}: write it as X.Y[.Z][-extra]")
        return cls(int(m[1]), int(m[2]), int(m[3] or 0), m[4])

    @classmethod
    def from_makefile(cls, tree: Path) -> KernelVersion:
        """Read the version fields of `tree`/Makefile."""
        makefile = tree / "Makefile"
        try:
            text = makefile.read_text(errors="replace")
        except OSError as exc:
            raise UserError(
                f"{tree} has no readable top Makefile ({exc.strerror}): "
                "point the kernel source at the top of a Linux tree"
            ) from exc
        fields: dict[str, str] = {}
        for name, value in _FIELD.findall(text):
            fields.setdefault(name, value)
        try:
            return cls(
                int(fields["VERSION"]),
                int(fields["PATCHLEVEL"]),
                int(fields.get("SUBLEVEL") or 0),
                fields.get("EXTRAVERSION", ""),
            )
        except (KeyError, ValueError) as exc:
            raise UserError(
                f"{makefile} does not set VERSION/PATCHLEVEL as numbers: "
                "is this the top of a Linux tree?"
            ) from exc

    @property
    def series(self) -> tuple[int, int]:
        return (self.version, self.patchlevel)

    @property
    def rc(self) -> int | None:
        m = _RC.search(self.extraversion)
        return int(m[1]) if m else None

    def _key(self) -> tuple[int, int, int, int, str]:
        # An -rcN precedes the release it leads to: 6.13-rc3 < 6.13.
        rc = self.rc
        return (
            self.version,
            self.patchlevel,
            self.sublevel,
            rc if rc is not None else 1 << 30,
            self.extraversion,
        )

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, KernelVersion):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        # As the kernel's own KERNELVERSION: SUBLEVEL is always there, even 0.
        return f"{self.version}.{self.patchlevel}.{self.sublevel}{self.extraversion}"


# --------------------------------------------------------------------------- Debian versions

_DEBIAN_UPSTREAM = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:~rc(\d+))?")


def _order(char: str) -> int:
    """dpkg's weight of one non-digit character ("" is the end of the string)."""
    if char == "~":
        return -1
    if not char or char.isdigit():
        return 0
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's verrevcmp: alternate non-digit runs (by _order) and numeric runs."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac, bc = _order(a[i : i + 1]), _order(b[j : j + 1])
            if ac != bc:
                return ac - bc
            i, j = i + 1, j + 1
        ni, nj = i, j
        while ni < len(a) and a[ni].isdigit():
            ni += 1
        while nj < len(b) and b[nj].isdigit():
            nj += 1
        diff = int(a[i:ni] or 0) - int(b[j:nj] or 0)
        if diff:
            return diff
        i, j = ni, nj
    return 0


def _split_debian(version: str) -> tuple[int, str, str]:
    epoch, _, rest = version.rpartition(":") if ":" in version else ("0", "", version)
    upstream, dash, revision = rest.rpartition("-")
    if not dash:
        upstream, revision = rest, ""
    return int(epoch or 0), upstream, revision


def compare_debian(a: str, b: str) -> int:
    """Debian version ordering (as `dpkg --compare-versions`): <0, 0 or >0.

    "6.1.192-3" > "6.1.176-1"; "6.12.117-1~deb12u1" < "6.12.117-1";
    "6.13~rc3-1" < "6.13-1"; an epoch ("1:...") outranks everything after it.
    """
    ea, ua, ra = _split_debian(a)
    eb, ub, rb = _split_debian(b)
    if ea != eb:
        return ea - eb
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def debian_kernel_version(package_version: str) -> KernelVersion:
    """The kernel a linux-source package version holds: "6.1.192-3" -> 6.1.192,
    "6.12.117-1~deb12u1" -> 6.12.117, "6.13~rc3-1~exp1" -> 6.13.0-rc3.

    UserError when the version does not start with X.Y.
    """
    _, upstream, _ = _split_debian(package_version)
    m = _DEBIAN_UPSTREAM.match(upstream)
    if not m:
        raise UserError(
            f"Debian version {package_version!r} does not name a kernel (X.Y[.Z]): "
            "give a linux-source version such as 6.1.192-3"
        )
    extra = f"-rc{m[4]}" if m[4] else ""
    return KernelVersion(int(m[1]), int(m[2]), int(m[3] or 0), extra)
