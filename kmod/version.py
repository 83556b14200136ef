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
