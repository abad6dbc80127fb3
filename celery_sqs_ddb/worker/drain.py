"""Warm shutdown that ends when the running tasks are done (SIGTERM on ECS, scale-in, Spot).

Celery's soft shutdown sleeps the whole ``worker_soft_shutdown_timeout`` once a task runs, even if
it ends a second later: the event loop that would notice is stopped in the signal handler. Here
the wait reads the prefork children's result pipes itself, as that loop would: a finished task is
acked at once and leaves the running set, whether it writes a result or not (``ignore_result``).
The wait ends when nothing runs any more, or at the end of the window (then the worker releases
what is still running for another worker, before ECS's SIGKILL). An idle worker does not wait.
With a pool whose results cannot be read here, a task also counts as done once the table shows
it in a ready state.
"""

from __future__ import annotations

import select
import time
from typing import Any

from celery import states as celery_states
from celery.utils.log import get_logger

from ..waiting import Deadline, backoff_intervals

logger = get_logger(__name__)

#: Seconds of ECS's stopTimeout kept for releasing messages and exiting after the wait.
MARGIN_SECONDS = 15


def wait_for_running_tasks(worker: Any) -> None:
    """Replaces ``WorkController.wait_for_soft_shutdown`` for workers of this package."""
    from .steps import release_unstarted, running_ids

    consumer = getattr(worker, "consumer", None)
    if consumer is not None:
        release_unstarted(consumer)  # other workers take them now, not after the wait
    timeout = float(worker.app.conf.worker_soft_shutdown_timeout or 0)
    ids = running_ids(consumer)
    if timeout <= 0 or not ids:
        return
    logger.warning("Soft shutdown: waiting up to %.0f s for %d running task(s)", timeout, len(ids))
    results = PoolResults.of(consumer)
    deadline = Deadline(timeout)
    pauses = backoff_intervals(0.1, 1.5, 1.0)
    while not deadline.passed:
        pause = min(next(pauses), deadline.remaining() or 0.0)
        if results is not None and not results.read(pause):
            results = None
        if results is None:
            deadline.sleep(pause)
        ids &= running_ids(consumer)
        if ids and results is None:
            ids -= _ready_in_table(worker.app.backend, ids)
        if not ids:
            logger.info("Soft shutdown: the running tasks finished")
            return
    logger.warning("Soft shutdown: %.0f s passed; unfinished tasks are released for another worker", timeout)


class PoolResults:
    """The results prefork children have written to their pipes, read while the event loop is
    stopped (Celery's own code that reads them at pool stop: ``ResultHandler._flush_outqueue``,
    which also completes a message the loop had only partly read)."""

    def __init__(self, pool: Any, handler: Any) -> None:
        self.pool = pool
        self.handler = handler
        self.gone: set[int] = set()

    @classmethod
    def of(cls, consumer: Any) -> PoolResults | None:
        """For a prefork (AsynPool) consumer; None for other pools."""
        pool = getattr(getattr(consumer, "pool", None), "_pool", None)
        handler = getattr(pool, "_result_handler", None)
        if not hasattr(handler, "_flush_outqueue") or not isinstance(getattr(pool, "_fileno_to_outq", None), dict):
            return None
        return cls(pool, handler)

    def read(self, seconds: float) -> bool:
        """Handle what the children write within ``seconds`` (accepted, results): Celery's request
        callbacks run as in the loop, so a finished task is acked. False if the pipes cannot be read."""
        index = self.pool._fileno_to_outq
        fds = [fd for fd in list(index) if fd not in self.gone]
        try:
            readable = select.select(fds, [], [], seconds)[0] if fds else []
            for fd in readable:
                self.handler._flush_outqueue(fd, self.gone.add, index, self.handler.on_state_change)
        except Exception as exc:  # a pool that changed under us: fall back to the table
            logger.warning("Soft shutdown: cannot read the pool's results (%r); watching the table instead", exc)
            return False
        if not fds:
            time.sleep(seconds)
        return True


def _ready_in_table(backend: Any, ids: set[str]) -> set[str]:
    """The ids the table shows in a ready state (empty for another backend or on an error)."""
    from ..backend import DynamoDBBackend

    if not isinstance(backend, DynamoDBBackend):
        return set()
    try:
        items = backend.batch_get(sorted(ids))
    except Exception as exc:  # the table unreachable: keep waiting, as Celery would
        logger.warning("Soft shutdown: could not read the running tasks' states (%s)", exc)
        return set()
    return {i for i in ids if (items.get(i) or {}).get("status") in celery_states.READY_STATES}
