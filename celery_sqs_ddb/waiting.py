"""Waiting without fixed sleeps: backoff schedules and monotonic deadlines."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator


def backoff_intervals(first: float = 0.02, factor: float = 1.5, ceiling: float = 1.0) -> Iterator[float]:
    """Pauses that start at ``first`` and grow by ``factor`` up to ``ceiling``."""
    pause = first
    while True:
        yield pause
        pause = min(ceiling, pause * factor)


def jittered(seconds: float, spread: float = 0.2) -> float:
    """``seconds`` ± ``spread`` (a fraction), so many waiters do not retry in step."""
    return seconds * random.uniform(1 - spread, 1 + spread)  # noqa: S311 (timing, not security)


class Deadline:
    """A ``time.monotonic()`` deadline (None: no deadline)."""

    def __init__(self, timeout: float | None) -> None:
        self.at = None if timeout is None else time.monotonic() + timeout

    @property
    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def remaining(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def sleep(self, pause: float) -> None:
        """Sleep ``pause`` seconds, or until the deadline if that is sooner."""
        remaining = self.remaining()
        time.sleep(pause if remaining is None else min(pause, remaining))
