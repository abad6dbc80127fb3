"""What the result backend knows about the run a worker's pool process is executing.

The worker's claim (``worker/claim.py``) opens a run before the task body and closes it after
Celery's tracer returns. Inside a run the backend:

- skips the tracer's own STARTED write when the claim already decided STARTED;
- remembers the first outcome write (``mark_as_done`` / ``mark_as_failure`` / ``mark_as_retry``)
  that failed for our reasons (DynamoDB/S3 after retries), so the claim can write that same outcome
  again later instead of running the task body a second time; the tracer's follow-up writes
  (Celery then tries to store FAILURE for the store error) fail at once instead of waiting through
  the retries again.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from celery import states as celery_states
from celery.exceptions import BackendStoreError
from kombu.exceptions import EncodeError

from .exceptions import SqsDdbError, StateConflict


def is_ours(exc: BaseException) -> bool:
    """A DynamoDB/S3 failure left after retries, as opposed to the task's own error (a result that
    cannot be encoded is the task's: it fails the task)."""
    return isinstance(exc, (ClientError, BotoCoreError, SqsDdbError, BackendStoreError, OSError)) \
        and not isinstance(exc, (EncodeError, StateConflict))


@dataclass
class PendingOutcome:
    """An outcome the task produced whose write failed: ``write()`` tries it again."""

    state: str
    value: Any  # the task's return value (SUCCESS) or exception (FAILURE, RETRY)
    error: BaseException
    write: Callable[[], Any]


class RunTracking:
    """Mixin for the result backend: the run this thread executes."""

    @functools.cached_property
    def _run(self) -> threading.local:
        return threading.local()

    def begin_run(self, task_id: str, owns_started: bool) -> None:
        """A worker's pool process starts running ``task_id`` in this thread. With ``owns_started``
        the claim decided STARTED (wrote it or chose not to), so the tracer's own STARTED write
        (``task_track_started``) is skipped."""
        run = self._run
        run.task_id, run.owns_started, run.failed, run.pending = str(task_id), owns_started, None, None

    def end_run(self) -> tuple[BaseException | None, PendingOutcome | None]:
        """The run is over: the error that kept its outcome from being written, and that outcome
        (None when the failing write was not an outcome, e.g. a STARTED or PROGRESS update)."""
        run = self._run
        failed, pending = getattr(run, "failed", None), getattr(run, "pending", None)
        run.task_id = run.owns_started = run.failed = run.pending = None
        return failed, pending

    def owns_started(self, task_id: str) -> bool:
        return bool(getattr(self._run, "owns_started", None)) and self._running(task_id)

    def _running(self, task_id: Any) -> bool:
        return getattr(self._run, "task_id", None) == str(task_id)

    def store_result(self, task_id: str, result: Any, state: str, traceback: str | None = None,
                     request: Any = None, **kwargs: Any) -> Any:
        running = self._running(task_id)
        if running and self._run.failed is not None:
            raise self._run.failed
        try:
            return super().store_result(task_id, result, state, traceback, request, **kwargs)  # type: ignore[misc]
        except Exception as exc:
            if running and is_ours(exc):
                self._run.failed = exc
            raise

    def mark_as_done(self, task_id: str, result: Any, *args: Any, **kwargs: Any) -> Any:
        return self._outcome(celery_states.SUCCESS, result, super().mark_as_done,  # type: ignore[misc]
                             task_id, result, *args, **kwargs)

    def mark_as_failure(self, task_id: str, exc: Any, *args: Any, **kwargs: Any) -> Any:
        return self._outcome(celery_states.FAILURE, exc, super().mark_as_failure,  # type: ignore[misc]
                             task_id, exc, *args, **kwargs)

    def mark_as_retry(self, task_id: str, exc: Any, *args: Any, **kwargs: Any) -> Any:
        return self._outcome(celery_states.RETRY, exc, super().mark_as_retry,  # type: ignore[misc]
                             task_id, exc, *args, **kwargs)

    def _outcome(self, state: str, value: Any, mark: Callable[..., Any], task_id: str, *args: Any,
                 **kwargs: Any) -> Any:
        try:
            return mark(task_id, *args, **kwargs)
        except Exception as exc:
            run = self._run
            if self._running(task_id) and is_ours(exc) and run.pending is None and run.failed is exc:
                run.pending = PendingOutcome(state, value, exc, functools.partial(mark, task_id, *args, **kwargs))
            raise
