"""Our own errors never fill the DLQ: a run whose claim or result write failed is held, not released.

When the pool reports :class:`~celery_sqs_ddb.exceptions.ClaimDeferred`, the worker keeps the
message (unacked, so the transport's heartbeat keeps it invisible and its SQS receive count does
not grow) and runs the request again after a backoff of 5 s doubling to 5 min, with jitter. A held
message fills its prefetch slot, so a worker whose every run is deferred stops receiving: an
outage of any length costs no receives and sends nothing to the dead-letter queue. The cause is
logged once per backoff step, not once per message; the first run that succeeds after deferrals
logs the recovery.

Celery builds a worker's request class from ``task.Request``; :func:`request_class` makes one that
hands deferrals to :class:`Deferrals` and keeps everything else of the task's own class.
"""

from __future__ import annotations

import threading
from typing import Any

from celery.utils.log import get_logger
from celery.worker import state as worker_state
from celery.worker.request import Request as CeleryRequest
from kombu.utils.imports import symbol_by_name

from ..exceptions import ClaimDeferred
from ..waiting import jittered

logger = get_logger(__name__)

FIRST_DELAY = 5.0
MAX_DELAY = 300.0


class Deferrals:
    """The requests this worker holds back after our own errors, and their schedule."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.lock = threading.Lock()
        self.held: dict[str, Any] = {}  # task id -> request waiting for its next try
        self.attempts: dict[str, int] = {}  # task id -> deferrals so far
        self.logged_steps: set[int] = set()

    def hold(self, request: Any, exc: ClaimDeferred) -> None:
        """Keep ``request``'s message and run it again after its backoff."""
        worker_state.task_ready(request)
        with self.lock:
            step = self.attempts[request.id] = self.attempts.get(request.id, 0) + 1
            delay = min(MAX_DELAY, FIRST_DELAY * 2 ** (step - 1))
            first_at_step = step not in self.logged_steps
            self.logged_steps.add(step)
            self.held[request.id] = request
            waiting = len(self.held)
        if first_at_step:
            logger.warning("Task %s[%s] deferred (backoff step %d, next try in about %.0f s; %d message(s) held, "
                           "not released, so their receive counts stay put): %s. Later deferrals at this step "
                           "are not logged.", request.name, request.id, step, delay, waiting, exc)
        worker_state.task_reserved(request)
        self.consumer.timer.call_after(jittered(delay), self._resume, (request,))

    def _resume(self, request: Any) -> None:
        with self.lock:
            if self.held.pop(request.id, None) is None:
                return  # released meanwhile (warm shutdown)
        worker_state.task_ready(request)
        self.consumer.on_task_request(request)

    def settled(self, request: Any) -> None:
        """``request`` ran to an end (success, failure, refused claim): forget its backoff."""
        with self.lock:
            step = self.attempts.pop(request.id, None)
            recovered = step is not None and not self.attempts
            if recovered:
                self.logged_steps.clear()
        if recovered:
            logger.warning("Task %s[%s] ran after %d deferral(s): the table is reachable again", request.name,
                           request.id, step)

    def release_all(self) -> list[Any]:
        """Stop holding (warm shutdown): the requests, for their messages to be given back."""
        with self.lock:
            held = list(self.held.values())
            self.held.clear()
        for request in held:
            worker_state.task_ready(request)
        return held


class DeferringRequest:
    """Mixin for a worker Request class: a deferred run is held by the worker's :class:`Deferrals`."""

    __slots__ = ()
    deferrals: Deferrals | None = None

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> Any:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)  # ExceptionWithTraceback
        deferrals = type(self).deferrals
        if isinstance(exc, ClaimDeferred) and deferrals is not None:
            return deferrals.hold(self, exc)
        return super().on_failure(exc_info, send_failed_event, return_ok)  # type: ignore[misc]

    def acknowledge(self) -> Any:  # the run ended (success, failure acked, refused claim)
        deferrals = type(self).deferrals
        if deferrals is not None:
            deferrals.settled(self)
        return super().acknowledge()  # type: ignore[misc]


def request_class(base: Any, deferrals: Deferrals) -> type:
    """``base`` (a Request class or its dotted name) with deferrals handled."""
    base = symbol_by_name(base)
    base = getattr(base, "_sqs_ddb_base", base)  # already ours (a consumer restarted): from the original
    if not (isinstance(base, type) and issubclass(base, CeleryRequest)):
        raise TypeError(f"task Request class {base!r} is not a celery.worker.request.Request")
    return type(f"Deferring{base.__name__}", (DeferringRequest, base), {"__slots__": (), "deferrals": deferrals,
                                                                           "_sqs_ddb_base": base})
