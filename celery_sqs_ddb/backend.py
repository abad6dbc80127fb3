"""Celery result backend over a typed DynamoDB table with a status index.

``result_backend = "ddb://TABLE?region=R"`` selects it (entry point ``celery.result_backends``).
It fills in Celery's backend hooks; the items and their conditional writes live in
:mod:`celery_sqs_ddb.table`.

AWS actions it uses (the worker role in ``deploy/terraform`` grants exactly these, see
``celery_sqs_ddb.aws.RUNTIME_ACTIONS``): dynamodb:GetItem and BatchGetItem (reads; polling
reads are eventually consistent, single reads strongly), dynamodb:UpdateItem (every state
write, conditional), dynamodb:TransactWriteItems (counting a chord part once),
dynamodb:DeleteItem (forget), dynamodb:Query (listing by status), dynamodb:BatchWriteItem
(bulk QUEUED rows), s3:PutObject/GetObject/DeleteObject (large results).
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

from boto3.dynamodb.types import Binary
from celery import states as celery_states
from celery.backends.base import BaseBackend
from celery.exceptions import TaskRevokedError, TimeoutError
from celery.utils.log import get_logger
from kombu.exceptions import EncodeError
from kombu.utils.objects import cached_property

from . import aws, schema, states
from .chords import Chords
from .config import Settings
from .exceptions import ResultTooLarge, StateConflict
from .payloads import PayloadStore
from .runs import RunTracking
from .table import (
    NEW_ITEM,
    NOT_FINAL,
    NOT_RUNNING_YET,
    NOT_STARTED,
    TaskTable,
    attempt_at_most,
    expired,
    iso,
    utcnow,
)
from .waiting import Deadline, backoff_intervals

logger = get_logger(__name__)

#: Tasks a ``get_many`` round aims to find ready (the polling pace adapts to it).
HARVEST = 10


class DynamoDBBackend(RunTracking, Chords, BaseBackend):
    """Result backend: one item per task, conditional state writes, a sharded status index."""

    supports_autoexpire = True
    supports_native_join = True
    persistent = True

    def __init__(self, app: Any = None, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, url=url, **kwargs)
        self.settings = Settings.read(self.app.conf, url=url)
        self.table = TaskTable(self.settings, self.expires)
        self.table_name = self.table.name
        self._seen: OrderedDict[str, tuple[int, dict[str, Any]]] = OrderedDict()
        self._local = threading.local()

    @property
    def client(self) -> Any:
        return self.table.client

    @cached_property
    def payloads(self) -> PayloadStore | None:
        s = self.settings
        return PayloadStore.for_settings(s, "results/") if s.s3_bucket else None

    def exception_safe_to_retry(self, exc: BaseException) -> bool:
        """Throttling and 5xx left over after botocore's own retries (result_backend_always_retry)."""
        return aws.is_retryable(exc)

    # ------------------------------------------------------------ value coding

    def _decode_value(self, raw: Any) -> Any:
        return self.decode(raw.value if isinstance(raw, Binary) else raw)

    def _store_big(self, task_id: str, field: str, data: str | bytes, budget: int | None = None) -> tuple[str, Any]:
        """(attribute, value): inline, or an S3 pointer when over the threshold (or ``budget``)."""
        size = _inline_size(data)
        limit = self.settings.result_s3_threshold if budget is None else min(budget, self.settings.result_s3_threshold)
        if size <= limit:
            return field, data
        if self.payloads is None:
            raise ResultTooLarge(
                f"the {field} of {task_id} is {size} bytes, over sqs_ddb_result_s3_threshold="
                f"{self.settings.result_s3_threshold} (DynamoDB items hold at most 400 KB); "
                "set sqs_ddb_s3_bucket to store large results in S3")
        body = data.encode("utf-8") if isinstance(data, str) else data
        return f"{field}_s3", self.payloads.put(f"{task_id}/{field}", body, self.content_type)

    def _load_big(self, item: dict[str, Any], field: str) -> Any:
        pointer = item.get(f"{field}_s3")
        if pointer is None:
            return item.get(field)
        store = self.payloads or PayloadStore.for_pointer(self.settings, pointer)
        return store.get(pointer)

    # ---------------------------------------------------------------- writes

    def _request_fields(self, request: Any) -> dict[str, Any]:
        """Listing metadata from a task request (task name, queue, worker, retries, summaries)."""
        if request is None:
            return {}
        delivery_info = getattr(request, "delivery_info", None) or {}
        fields = {
            schema.TASK_NAME: getattr(request, "task", None),
            schema.WORKER: getattr(request, "hostname", None),
            schema.QUEUE: delivery_info.get("routing_key"),
            schema.RETRIES: getattr(request, "retries", None),
            schema.GROUP_ID: getattr(request, "group", None),
            schema.PARENT_ID: getattr(request, "parent_id", None),
        }
        if self.app.conf.find_value_for_key("extended", "result"):
            n = self.settings.summary_chars
            args = getattr(request, "argsrepr", None) or repr(getattr(request, "args", None) or ())
            kwargs = getattr(request, "kwargsrepr", None) or repr(getattr(request, "kwargs", None) or {})
            fields[schema.ARGS], fields[schema.KWARGS] = args[:n], kwargs[:n]
        return fields

    def _result_fields(self, task_id: str, result: Any, traceback: str | None, request: Any) -> dict[str, Any]:
        try:
            encoded = self.encode(result)
        except EncodeError as exc:
            raise EncodeError(f"result of task {task_id} cannot be serialized with result_serializer="
                              f"{self.serializer!r}: {exc}") from exc
        attr, value = self._store_big(task_id, schema.RESULT, encoded)
        sets = {**self._request_fields(request), attr: value}
        # result, traceback and children share one item: together they stay under the threshold
        used = _inline_size(value) if attr == schema.RESULT else 0
        if traceback:
            budget = max(1_024, self.settings.result_s3_threshold - used)
            if self.payloads is None and len(traceback.encode("utf-8")) > budget:
                traceback = "... (traceback truncated; set sqs_ddb_s3_bucket to keep it whole)\n" + \
                    traceback.encode("utf-8")[-(budget - 100):].decode("utf-8", "ignore")
            tb_attr, tb_value = self._store_big(task_id, schema.TRACEBACK, traceback, budget)
            sets[tb_attr] = tb_value
            used += _inline_size(tb_value) if tb_attr == schema.TRACEBACK else 0
        children = self.current_task_children(request)
        if children:
            budget = max(1_024, self.settings.result_s3_threshold - used)
            children_attr, children_value = self._store_big(task_id, schema.CHILDREN, self.encode(children), budget)
            sets[children_attr] = children_value
        return sets

    def _store_result(self, task_id: str, result: Any, state: str, traceback: str | None = None,
                      request: Any = None, **kwargs: Any) -> Any:
        task_id = str(task_id)
        now = iso(utcnow())
        if state == states.PENDING:
            return result
        if state == states.STARTED:
            if self.owns_started(task_id):
                return result  # the worker's claim owns STARTED for this run
            sets = {**self._request_fields(request), **self.table.indexed(state, task_id, now),
                    schema.STARTED_AT: now, schema.EXPIRES_AT: self.table.expires_at()}
            self.table.update(task_id, sets, NOT_FINAL & NOT_RUNNING_YET)
            return result
        if state not in states.TERMINAL and state != states.RETRY:
            # PROGRESS and other custom states: status and meta only, so no index write.
            attr, value = self._store_big(task_id, schema.RESULT, self.encode(result))
            current = self.table.update(task_id, {schema.STATUS: state, attr: value}, NOT_FINAL)
            if current is not None:
                logger.debug("Ignored %s for task %s: already %s", state, task_id, current.get(schema.STATUS))
            return result
        sets = {**self._result_fields(task_id, result, traceback, request), **self.table.indexed(state, task_id, now),
                schema.EXPIRES_AT: self.table.expires_at()}
        # drop what an earlier write left that this one does not replace (the other form of a field)
        removes = [schema.RESULT, schema.RESULT_S3, schema.TRACEBACK, schema.TRACEBACK_S3, schema.CLAIMED_BY]
        condition = NOT_FINAL
        if state == states.RETRY:
            # This attempt is done: its redeliveries may not claim again, the retry's message may.
            key = schema.attempt_key(_nesting(request), int(getattr(request, "retries", 0) or 0), schema.MAX_RECEIVES)
            sets[schema.CLAIM_KEY] = key
            condition = NOT_FINAL & attempt_at_most(key)
        else:
            sets[schema.DATE_DONE] = now
            if state == states.REVOKED and request is None:
                condition = NOT_FINAL & NOT_STARTED  # a revoke from outside: running tasks are left alone
        current = self.table.update(task_id, sets, condition, removes=[r for r in removes if r not in sets])
        if current is not None:
            logger.info("Ignored %s for task %s: it is %s%s", state, task_id, current.get(schema.STATUS) or "PENDING",
                        " and running elsewhere" if schema.CLAIMED_BY in current else "")
        return result

    def claim(self, task_id: str, *, attempt: int, message_id: str | None = None, worker: str | None = None,
              task_name: str | None = None, queue: str | None = None, retries: int = 0,
              publish_started: bool = True) -> None:
        """Claim the task for one run (see :meth:`TaskTable.claim`); raises :class:`StateConflict`."""
        self.table.claim(task_id, attempt=attempt, message_id=message_id, worker=worker, task_name=task_name,
                         queue=queue, retries=retries, publish_started=publish_started)

    def revoke(self, task_ids: str | Iterable[str], reason: str = "revoked") -> int:
        """Write REVOKED for tasks that have not started (creating the item if needed); returns how many.

        A worker's claim refuses a REVOKED task, whether its message is queued now or reaches a
        worker that starts later. A running task is left alone (stop it with
        ``revoke(terminate=True)`` over remote control), as Celery's own worker does.
        """
        ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
        value = self.encode(self.prepare_exception(TaskRevokedError(reason)))
        revoked = self.table.revoke(ids, {schema.RESULT: value})
        for task_id in set(map(str, ids)) - set(revoked):
            logger.info("revoke(%s): not written, the task is running or already finished", task_id)
        return len(revoked)

    def queue_rows(self, rows: Iterable[tuple[str, str, str | None]]) -> None:
        """Write QUEUED rows (task_id, task_name, queue) in bulk."""
        self.table.queue_rows(rows)

    @contextlib.contextmanager
    def no_queued_rows(self) -> Iterator[None]:
        """Tasks sent from this thread in this block get no QUEUED row from :meth:`on_task_call`
        (``submit_many`` writes them in bulk)."""
        self._local.no_rows = True
        try:
            yield
        finally:
            self._local.no_rows = False

    def on_task_call(self, producer: Any, task_id: str) -> dict[str, Any]:
        """With ``sqs_ddb_track_queued``, write a QUEUED row when a task is sent."""
        if self.settings.track_queued and not getattr(self._local, "no_rows", False):
            now = iso(utcnow())
            sets = {**self.table.indexed(states.QUEUED, task_id, now), schema.CREATED_AT: now,
                    schema.EXPIRES_AT: self.table.expires_at()}
            self.table.update(task_id, sets, NEW_ITEM)
        return {}

    # ----------------------------------------------------------------- reads

    def _meta_from_item(self, item: dict[str, Any] | None) -> dict[str, Any]:
        if not item or expired(item) or not item.get(schema.STATUS):
            return {"status": states.PENDING, "result": None}
        raw = self._load_big(item, schema.RESULT)
        traceback = self._load_big(item, schema.TRACEBACK)
        children = self._load_big(item, schema.CHILDREN)
        meta = {
            "task_id": item.get(schema.TASK_ID), "status": item[schema.STATUS],
            "result": self._decode_value(raw) if raw is not None else None,
            "traceback": traceback.decode("utf-8") if isinstance(traceback, bytes) else traceback,
            "children": self._decode_value(children) if children else [],
            "date_done": item.get(schema.DATE_DONE), "group_id": item.get(schema.GROUP_ID),
            "parent_id": item.get(schema.PARENT_ID), "name": item.get(schema.TASK_NAME),
            "args": item.get(schema.ARGS), "kwargs": item.get(schema.KWARGS), "worker": item.get(schema.WORKER),
            "retries": int(item[schema.RETRIES]) if schema.RETRIES in item else None,
            "queue": item.get(schema.QUEUE),
        }
        return self.meta_from_decoded(meta)

    def _newest(self, task_id: str, item: dict[str, Any] | None) -> dict[str, Any]:
        """The meta of ``item`` unless an older version than one already seen (a stale read)."""
        version = int((item or {}).get(schema.VERSION, 0))
        seen = self._seen.get(task_id)
        if seen is not None and seen[0] > version:
            return seen[1]
        meta = self._meta_from_item(item)
        if version:
            self._seen[task_id] = (version, meta)
            self._seen.move_to_end(task_id)
            while len(self._seen) > 10_000:
                self._seen.popitem(last=False)
        return meta

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        return self._newest(str(task_id), self.table.get(str(task_id)))

    def task_result_exists(self, task_id: str) -> bool:
        return self._meta_from_item(self.table.get(str(task_id)))["status"] != states.PENDING

    def batch_get(self, keys: Iterable[str], consistent: bool = True) -> dict[str, dict[str, Any]]:
        """Items by task id (BatchGetItem, 100 keys a call)."""
        return self.table.batch_get(keys, consistent)

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5,
                 no_ack: bool = True, on_interval: Any = None) -> dict[str, Any]:
        """Block until the task is ready: eventually consistent polls (half the read units; a stale
        answer only delays), first after ~10 ms, backing off to ``sqs_ddb_poll_max_interval``; one
        strongly consistent read before giving up at the timeout."""
        self._ensure_not_eager()
        task_id = str(task_id)
        deadline = Deadline(timeout)
        pauses = backoff_intervals(0.01, 1.4, self.settings.poll_max_interval)
        while True:
            meta = self._newest(task_id, self.table.get(task_id, consistent=False))
            if meta["status"] in celery_states.READY_STATES:
                if on_interval and meta["status"] in celery_states.PROPAGATE_STATES:
                    # As Celery's result consumers do once the result is in: a failed parent raises
                    # its own error first (a chord header's exception rather than the ChordError).
                    on_interval()
                return meta
            if on_interval:
                on_interval()
            if deadline.passed:
                meta = self._get_task_meta_for(task_id)
                if meta["status"] in celery_states.READY_STATES:
                    return meta
                raise TimeoutError("The operation timed out.")
            deadline.sleep(next(pauses))

    def get_many(self, task_ids: Iterable[str], timeout: float | None = None, interval: float | None = 0.5,
                 no_ack: bool = True, on_message: Any = None, on_interval: Any = None,
                 max_iterations: int | None = None, READY_STATES: frozenset = celery_states.READY_STATES,
                 ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield (task_id, meta) as tasks become ready.

        Each round reads (BatchGetItem, eventually consistent) a window of the unfinished tasks,
        oldest first, since a queue runs them roughly in the order they were sent. The window is
        about twice what the last round found ready (all of it, up to 100, after a round where
        everything was ready), and the pause between rounds grows until a
        round finds ``HARVEST`` tasks ready (or all that are left), so reads follow completions,
        not the waiting. A task that stays unfinished is read less and less often (every 1, 2,
        4 ... 32 rounds), so a long straggler does not cost a read per round.
        """
        pending = []
        for task_id in dict.fromkeys(str(t) for t in task_ids):
            cached = self._cache.get(task_id)
            if cached is not None and cached["status"] in READY_STATES:
                yield task_id, cached
            else:
                pending.append(task_id)
        deadline = Deadline(timeout)
        first, ceiling = 0.02, self.settings.poll_max_interval
        pause = min(ceiling, first + 0.002 * len(pending))  # a big group takes a while to start finishing
        size, rounds, iterations = HARVEST, 0, 0
        misses: dict[str, int] = {}
        due: dict[str, int] = {}
        while pending:
            window = [t for t in pending if due.get(t, 0) <= rounds][:size]
            if window:
                items = self.table.batch_get(window, consistent=False)
                ready = set()
                for task_id in window:
                    meta = self._newest(task_id, items.get(task_id))
                    if meta["status"] in READY_STATES:
                        ready.add(task_id)
                        self._cache[task_id] = meta
                        if on_message is not None:
                            on_message(meta)
                        yield task_id, meta
                    else:
                        missed = misses[task_id] = misses.get(task_id, 0) + 1
                        if missed > 2:
                            due[task_id] = rounds + 2 ** min(missed - 2, 5)
                pending = [t for t in pending if t not in ready]
                if not pending:
                    return
                if len(ready) == len(window) and len(window) == size:
                    size = 100
                    continue  # everything read was ready: read the rest at once
                size = min(100, max(HARVEST, 2 * len(ready)))
                wanted = min(HARVEST, len(pending))
                pause = min(ceiling, max(first, pause * min(2.0, max(0.5, wanted / max(len(ready), 1)))))
            rounds += 1
            if deadline.passed:
                raise TimeoutError(f"Operation timed out ({timeout})")
            if on_interval:
                on_interval()
            deadline.sleep(pause)
            iterations += 1
            if max_iterations and iterations >= max_iterations:
                return

    def _forget(self, task_id: str) -> None:
        self._seen.pop(str(task_id), None)
        self.table.delete(str(task_id))

    def list_jobs(self, status: str, since: Any = None, limit: int = 50,
                  cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Jobs in ``status``, newest first across all shards; see :meth:`TaskTable.list_jobs`."""
        return self.table.list_jobs(status, since, limit, cursor)

    def __reduce__(self, args: tuple = (), kwargs: dict | None = None) -> Any:
        return super().__reduce__(args, {"url": self.url, **(kwargs or {})})


def _inline_size(value: Any) -> int:
    return len(value.encode("utf-8") if isinstance(value, str) else value)


def _nesting(request: Any) -> int:
    return int(getattr(request, "replaced_task_nesting", 0) or 0)


__all__ = ["DynamoDBBackend", "StateConflict"]
