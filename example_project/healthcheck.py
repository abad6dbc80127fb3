"""Container health check of the worker: is the health file fresh? Imports nothing but the standard
library (``celery sqs-ddb healthcheck`` imports the whole app, every 30 s).

Run by path, ``python /app/example_project/healthcheck.py``; the same rule as the package's
``healthy()``: the file (``SQS_DDB_HEALTH_FILE``, default /tmp/celery-sqs-ddb.health) was touched
within 6 × ``SQS_DDB_HEALTH_INTERVAL`` (10) seconds. Exit 0 healthy, 1 not, with one line why.
"""

from __future__ import annotations

import os
import sys
import time


def main() -> int:
    path = os.environ.get("SQS_DDB_HEALTH_FILE") or "/tmp/celery-sqs-ddb.health"
    limit = float(os.environ.get("SQS_DDB_HEALTH_INTERVAL") or 10) * 6
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        print(f"unhealthy: {path} does not exist: the worker's consumer is not running")
        return 1
    if age > limit:
        print(f"unhealthy: {path} is {age:.0f} s old (limit {limit:.0f} s): the consumer loop is stuck")
        return 1
    print(f"healthy: {path} touched {age:.1f} s ago")
    return 0


if __name__ == "__main__":
    sys.exit(main())
