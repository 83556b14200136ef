"""A deadline object passed down through every wait, instead of loose seconds."""

from __future__ import annotations

import time

from harness.core.errors import DeadlineExceeded


class Deadline:
    """An absolute point in monotonic time, with a name for error messages."""

    def __init__(self, seconds: float, what: str) -> None:
        if seconds < 0:
            raise ValueError(f"negative deadline for {what}: {seconds}")
        self.what = what
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self._end

    def check(self, doing: str = "") -> None:
        if self.expired():
            extra = f" while {doing}" if doing else ""
            raise DeadlineExceeded(f"{self.what}: deadline of {self.seconds:.0f}s passed{extra}")

    def sub(self, seconds: float, what: str) -> Deadline:
        """A shorter deadline that never outlives this one."""
        child = Deadline(min(seconds, self.remaining()), what)
        return child

    def __repr__(self) -> str:
        return f"Deadline({self.what!r}, {self.remaining():.1f}s left)"
