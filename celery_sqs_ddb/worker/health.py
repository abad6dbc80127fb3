"""The health file: touched from the consumer's event loop, so a stuck loop makes it stale.

``celery -A app sqs-ddb healthcheck`` (or any probe that stats the file) is the container health
check: healthy while the file was touched within 6 × ``sqs_ddb_health_interval`` seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

from celery.utils.log import get_logger

from ..config import Settings

logger = get_logger(__name__)


def touch(path: str) -> None:
    try:
        Path(path).touch()
    except OSError as exc:
        logger.warning("Could not touch health file %s: %s", path, exc)


def remove(path: str) -> None:
    Path(path).unlink(missing_ok=True)


def healthy(settings: Settings, now: float | None = None) -> tuple[bool, str]:
    """Whether the health file is fresh, and why."""
    path = Path(settings.health_file)
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except FileNotFoundError:
        return False, f"{path} does not exist: the worker's consumer is not running"
    limit = settings.health_interval * 6
    if age > limit:
        return False, f"{path} is {age:.0f} s old (limit {limit:.0f} s): the consumer loop is stuck"
    return True, f"{path} touched {age:.1f} s ago"
