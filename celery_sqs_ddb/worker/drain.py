"""Warm shutdown that ends when the running tasks are done (SIGTERM on ECS, scale-in, Spot).

Celery's soft shutdown sleeps the whole ``worker_soft_shutdown_timeout`` once a task runs, even if
it ends a second later: the event loop that would notice is stopped in the signal handler. The
pool processes write each result to the table, so here the wait ends once every running task is
in a ready state there, or at the end of the window (then the worker releases what is still
running for another worker, before ECS's SIGKILL). An idle worker does not wait at all.
"""

from __future__ import annotations

from typing import Any

from celery import states as celery_states
from celery.utils.log import get_logger

from ..waiting import Deadline, backoff_intervals

logger = get_logger(__name__)

#: Seconds of ECS's stopTimeout kept for releasing messages and exiting after the wait.
MARGIN_SECONDS = 15


def wait_for_running_tasks(worker: Any) -> None:
    """Replaces ``WorkController.wait_for_soft_shutdown`` for workers of this package."""
    from ..backend import DynamoDBBackend
    from .steps import release_unstarted, running_ids

    consumer = getattr(worker, "consumer", None)
    if consumer is not None:
        release_unstarted(consumer)  # other workers take them now, not after the wait
    timeout = float(worker.app.conf.worker_soft_shutdown_timeout or 0)
    ids = sorted(running_ids(consumer))
    if timeout <= 0 or not ids:
        return
    logger.warning("Soft shutdown: waiting up to %.0f s for %d running task(s)", timeout, len(ids))
    backend = worker.app.backend
    deadline = Deadline(timeout)
    pauses = backoff_intervals(0.1, 1.5, 1.0)
    while not deadline.passed:
        if isinstance(backend, DynamoDBBackend):
            try:
                items = backend.batch_get(ids)
            except Exception as exc:  # the table unreachable: keep waiting, as Celery would
                logger.warning("Soft shutdown: could not read the running tasks' states (%s)", exc)
            else:
                if all((items.get(i) or {}).get("status") in celery_states.READY_STATES for i in ids):
                    logger.info("Soft shutdown: the running tasks finished")
                    return
        deadline.sleep(next(pauses))
    logger.warning("Soft shutdown: %.0f s passed; unfinished tasks are released for another worker", timeout)
