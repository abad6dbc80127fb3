"""The health file: touched from the consumer's event loop, so a stuck loop makes it stale.

The container health check is ``python -m celery_sqs_ddb.worker.health`` (what the Terraform
worker module runs: it does not import the application, so a heavy import such as a model cannot
make a busy worker look unhealthy; it reads the settings from the environment,
``SQS_DDB_HEALTH_FILE`` / ``SQS_DDB_HEALTH_INTERVAL``) or ``celery -A app sqs-ddb healthcheck``
(imports the app, reads its settings too): healthy while the file was touched within
6 × ``sqs_ddb_health_interval`` seconds.
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


def main() -> int:
    """The container probe: exit 0 while the health file is fresh, 1 otherwise (settings from the
    environment, the application not imported)."""
    ok, detail = healthy(Settings.read())
    print(("healthy: " if ok else "unhealthy: ") + detail)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
