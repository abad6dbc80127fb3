"""The claim: a conditional write where the task runs, immediately before its body.

Celery builds one tracer per task (``task.__trace__``) in every pool process (prefork: after the
fork, then ``worker_process_init``; threads/solo/gevent: in the worker, when the consumer starts).
:func:`wrap_tracers` puts :class:`Claimer` in front of each, so claims of different processes run
in parallel and nothing in the consumer's event loop waits on DynamoDB. Outcomes:

- **claimed**: Celery's tracer runs the task as usual. STARTED is published when Celery would
  publish it (``task_track_started``, not for ``ignore_result`` tasks); the claim is that write.
- **refused** (final, REVOKED, held by a newer attempt or by another message of this one): the
  body does not run and the message is acked (Celery's ``Ignore``); a chord header part that is
  already final is counted on its chord (a crash between its result and its count heals here).
- **deferred**: the claim failed on our side (DynamoDB after botocore's and Celery's retries).
  The worker holds the message and tries again later (see ``deferral.py``).
- **ran, outcome not written**: the result write failed on our side. The pool process writes that
  same outcome again with backoff (1 s doubling to 60 s, for up to 15 min) while the message stays
  in flight, so the task body does not run twice; past that the run is deferred.

``sqs_ddb_claim`` chooses when to claim: ``strict`` (every run), ``redelivery`` (only a
redelivered message, a retry or a replacement; a first delivery is checked with one consistent
read, so a table revoke still stops it, but it shows no STARTED row), ``off`` (never).
"""

from __future__ import annotations

from typing import Any

from billiard.einfo import ExceptionInfo
from celery import states as celery_states
from celery.app.task import Context, get_actual_ignore_result
from celery.app.trace import TraceInfo, trace_ok_t
from celery.exceptions import Ignore
from celery.utils.log import get_logger
from celery.utils.saferepr import saferepr

from .. import schema, states
from ..exceptions import ClaimDeferred, StateConflict
from ..runs import PendingOutcome, is_ours
from ..transport.headers import MESSAGE_ID_HEADER, RECEIVE_COUNT_HEADER
from ..waiting import Deadline, backoff_intervals, jittered

logger = get_logger(__name__)

REWRITE_BUDGET = 900.0  # seconds a run keeps rewriting its outcome before it is deferred


class Claimer:
    """Claims each run of a task in the process that runs it."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.mode = backend.settings.claim
        self.logged_steps: set[int] = set()  # backoff steps of result rewrites logged (this process)

    def wrap(self, task: Any) -> None:
        """Put the claim in front of ``task``'s tracer (once)."""
        trace = task.__trace__
        if trace is None or getattr(trace, "_sqs_ddb_claims", False):
            return

        def trace_with_claim(uuid: str, args: Any, kwargs: Any, request: dict[str, Any] | None = None) -> Any:
            return self.run(task, trace, uuid, args, kwargs, request or {})

        trace_with_claim._sqs_ddb_claims = True  # type: ignore[attr-defined]
        task.__trace__ = trace_with_claim

    # ------------------------------------------------------------------ one run

    def run(self, task: Any, trace: Any, task_id: str, args: Any, kwargs: Any, request: dict[str, Any]) -> Any:
        try:
            self.claim(task, task_id, request)
        except StateConflict as exc:
            self.backend.end_run()
            return self.refused(task, task_id, request, exc)
        except Exception as exc:
            self.backend.end_run()
            if not is_ours(exc):
                raise
            return _outcome(ClaimDeferred(f"claim in {self.backend.table.where()} failed: {_cause(exc)}"))
        try:
            result = trace(task_id, args, kwargs, request)
        except Exception as exc:  # the tracer lets backend errors out of its own error handling
            if not is_ours(exc):
                raise
            failed: BaseException | None = exc
        else:
            failed = None
        store_error, pending = self.backend.end_run()
        failed = store_error or failed
        if failed is None:
            return result
        if pending is not None and self.write_again(task, task_id, pending):
            return pending_result(pending)
        return _outcome(ClaimDeferred(f"result write to {self.backend.table.where()} failed: {_cause(failed)}"))

    def write_again(self, task: Any, task_id: str, pending: PendingOutcome) -> bool:
        """The task ran but its outcome was not written: write it again with backoff (the message
        stays in flight, its visibility extended by the transport), so the body does not run twice.
        False after ``REWRITE_BUDGET`` seconds: the run is then deferred like a failed claim."""
        deadline = Deadline(REWRITE_BUDGET)
        pauses = backoff_intervals(1.0, 2.0, 60.0)
        step = 0
        while not deadline.passed:
            step += 1
            pause = next(pauses)
            if step not in self.logged_steps:
                self.logged_steps.add(step)
                logger.warning("Task %s[%s] ran, but writing its %s to %s failed: %s; writing it again in about "
                               "%.0f s (step %d; later failures at this step are not logged)", task.name, task_id,
                               pending.state, self.backend.table.where(), _cause(pending.error), pause, step)
            deadline.sleep(jittered(pause))
            try:
                pending.write()
            except Exception as exc:
                if not is_ours(exc):
                    raise
                pending.error = exc
                continue
            logger.warning("Task %s[%s]: %s written on try %d", task.name, task_id, pending.state, step + 1)
            self.logged_steps.clear()
            return True
        return False

    def claim(self, task: Any, task_id: str, request: dict[str, Any]) -> None:
        """Claim this run (raises :class:`StateConflict` if it must not run)."""
        self.backend.begin_run(task_id, owns_started=self.mode != "off")
        if self.mode == "off":
            return
        nesting = int(request.get("replaced_task_nesting") or 0)
        retries = int(request.get("retries") or 0)
        receives = int(request.get(RECEIVE_COUNT_HEADER) or 1)
        if self.mode == "redelivery" and receives <= 1 and not retries and not nesting:
            item = self.backend.table.get(task_id)
            if item and states.is_terminal(item.get(schema.STATUS)):
                raise StateConflict(f"task {task_id} is {item[schema.STATUS]}", item)
            return
        ignore_result = get_actual_ignore_result(task, Context(request))
        self.backend.claim(
            task_id, attempt=schema.attempt_key(nesting, retries, receives),
            message_id=request.get(MESSAGE_ID_HEADER), worker=request.get("hostname"), task_name=task.name,
            queue=(request.get("delivery_info") or {}).get("routing_key"), retries=retries,
            publish_started=bool(task.track_started) and not ignore_result)

    def refused(self, task: Any, task_id: str, request: dict[str, Any], conflict: StateConflict) -> Any:
        """The run must not happen: ack without running; count a finished chord part."""
        logger.info("Skipping task %s[%s]: %s", task.name, task_id, conflict)
        status = conflict.item.get(schema.STATUS)
        if request.get("chord") and request.get("group") and status in celery_states.READY_STATES:
            try:
                meta = self.backend.get_task_meta(task_id, cache=False)
                self.backend.on_chord_part_return(Context(request, id=task_id), status, meta.get("result"))
            except Exception as exc:  # the count must not be lost with the ack: hold and try again
                if not is_ours(exc):
                    raise
                return _outcome(ClaimDeferred(f"counting chord part {task_id} in {self.backend.table.where()} "
                                              f"failed: {_cause(exc)}"))
        return _outcome(Ignore(f"task {task_id} is {status or 'held elsewhere'}"))


def pending_result(pending: PendingOutcome) -> Any:
    """The tracer result of an outcome written late: what the tracer would have returned."""
    if pending.state == celery_states.SUCCESS:
        return trace_ok_t(pending.value, None, 0.0, saferepr(pending.value))
    return _outcome(pending.value, pending.state)


def _outcome(exc: BaseException, state: str = celery_states.IGNORED) -> Any:
    """A tracer result for ``exc`` that the worker's Request handles (Ignore: ack; ClaimDeferred: hold)."""
    try:
        raise exc
    except BaseException:
        einfo = ExceptionInfo(internal=True)
    return trace_ok_t(einfo, TraceInfo(state, exc), 0.0, None)


def _cause(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 500 else text[:500] + "..."
