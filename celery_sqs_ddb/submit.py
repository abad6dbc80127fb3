"""Bulk submit: many calls of a task with SendMessageBatch (10 a call) and, where QUEUED rows are
wanted, BatchWriteItem (25 a call).

Each task is sent by Celery's own ``apply_async``, so routes (``task_routes``), Signature options
(countdown, expires, link, link_error, headers, ...) and the publish signals that Sentry or
OpenTelemetry hook into (``before_task_publish``/``after_task_publish``) behave as for
``delay()``; only the SQS and DynamoDB calls are batched.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from celery.canvas import Signature
from celery.result import AsyncResult, GroupResult
from celery.utils.log import get_logger

from .backend import DynamoDBBackend

logger = get_logger(__name__)

#: Tasks sent per round: the unit of batching of both the messages and the QUEUED rows.
CHUNK = 100


def _signature(task: Any, item: Any) -> Signature:
    if isinstance(item, Signature):
        return item
    if isinstance(item, dict):
        return task.s(**item)
    if isinstance(item, (list, tuple)):
        return task.s(*item)
    return task.s(item)


@contextlib.contextmanager
def batched(app: Any) -> Iterator[Any]:
    """Send every task message published in this block, from this thread, with SendMessageBatch
    when the block ends (10 a call), and yield a producer to pass along::

        with celery_sqs_ddb.batched(app):
            result = group(add.s(i, i) for i in range(100)).apply_async()

    Celery publishes each task as usual (routes, options, publish signals); only the SQS calls
    are batched, so nothing is on the queue before the block ends, and a failed send raises at
    its end. On another transport the block changes nothing.
    """
    from .transport import Channel

    with app.producer_or_acquire() as producer:
        channel = producer.channel
        with channel.batching() if isinstance(channel, Channel) else contextlib.nullcontext():
            yield producer


def submit_many(task: Any, items: Iterable[Any], *, queue: str | None = None, progress: bool = True,
                message_group_id: str | None = None, track_queued: bool | None = None) -> GroupResult:
    """Send many calls of ``task`` at once; returns a GroupResult to ``join()``.

    Each item is an args tuple, a kwargs dict, a single argument, or a Signature (its options are
    kept). Messages go out with SendMessageBatch (10 a call, ≤ 1 MiB) on this package's transport;
    with the DynamoDB backend and ``track_queued`` (default: the ``sqs_ddb_track_queued`` setting)
    each task gets a QUEUED row written with BatchWriteItem so it shows in the status index at
    once. Failed batch entries are retried; a permanent failure raises and names the entries;
    nothing is silently dropped.
    """
    from .transport import Channel

    app = task.app
    items = list(items)
    group_id = str(uuid.uuid4())
    backend = app.backend
    ours = isinstance(backend, DynamoDBBackend)
    rows = ours and (backend.settings.track_queued if track_queued is None else track_queued)
    bar = _progress(len(items), progress, task.name)
    results: list[AsyncResult] = []
    options: dict[str, Any] = {"group_id": group_id}
    if queue:
        options["queue"] = queue
    if message_group_id:
        options["message_group_id"] = message_group_id
    with app.producer_or_acquire() as producer:
        channel = producer.channel
        for start in range(0, len(items), CHUNK):
            chunk = [_signature(task, item) for item in items[start:start + CHUNK]]
            ids = [sig.options.get("task_id") or str(uuid.uuid4()) for sig in chunk]
            if rows:
                backend.queue_rows((tid, sig.task, sig.options.get("queue") or queue) for tid, sig in
                                   zip(ids, chunk, strict=True))
            with channel.batching() if isinstance(channel, Channel) else contextlib.nullcontext():
                with backend.no_queued_rows() if ours else contextlib.nullcontext():  # written above, in bulk
                    for index, (tid, sig) in enumerate(zip(ids, chunk, strict=True), start=start):
                        sent = {**options, **sig.options, "task_id": tid, "group_index": index}
                        sig.apply_async(producer=producer, **sent)
            results.extend(app.AsyncResult(tid) for tid in ids)
            bar.update(len(chunk))
    bar.close()
    return BatchGroupResult(group_id, results, app=app)


class BatchGroupResult(GroupResult):
    """A GroupResult whose ``join()`` reads through the backend's BatchGetItem (100 ids a call)."""

    def join(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
             callback: Any = None, no_ack: bool = True, on_message: Any = None,
             disable_sync_subtasks: bool = True, on_interval: Any = None) -> list[Any]:
        if self.supports_native_join:
            return self.join_native(timeout=timeout, propagate=propagate, interval=interval, callback=callback,
                                    no_ack=no_ack, on_message=on_message, on_interval=on_interval,
                                    disable_sync_subtasks=disable_sync_subtasks)
        return super().join(timeout=timeout, propagate=propagate, interval=interval, callback=callback,
                            no_ack=no_ack, on_message=on_message, disable_sync_subtasks=disable_sync_subtasks,
                            on_interval=on_interval)


def _progress(total: int, enabled: bool, name: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled or total < CHUNK, desc=f"submit {name}", unit="task")
