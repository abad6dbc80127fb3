"""Bulk submit: SendMessageBatch (10 a call) plus one BatchWriteItem QUEUED row per task."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

from celery.canvas import Signature
from celery.result import AsyncResult, GroupResult
from celery.utils.log import get_logger
from kombu.serialization import dumps as serialize

from .backend import DynamoDBBackend, backoff_intervals
from .exceptions import AwsCallFailed

logger = get_logger(__name__)

MAX_BATCH_BYTES = 1_048_576 - 16_384


def _signature(task: Any, item: Any) -> Signature:
    if isinstance(item, Signature):
        return item
    if isinstance(item, dict):
        return task.s(**item)
    if isinstance(item, (list, tuple)):
        return task.s(*item)
    return task.s(item)


def submit_many(task: Any, items: Iterable[Any], *, queue: str | None = None, progress: bool = True,
                message_group_id: str | None = None, track_queued: bool = True) -> GroupResult:
    """Send many calls of ``task`` at once; returns a GroupResult to ``join()``.

    Each item is an args tuple, a kwargs dict, a single argument, or a Signature. With this
    package's transport, messages go out with SendMessageBatch (10 a call, ≤ 1 MiB) and, with
    the DynamoDB backend and ``track_queued``, each task gets a QUEUED row written with
    BatchWriteItem so it shows in the status index at once. Failed batch entries are retried;
    a permanent failure raises and names the entries; nothing is silently dropped.
    """
    from .transport import Channel

    app = task.app
    items = list(items)
    group_id = str(uuid.uuid4())
    queue = queue or getattr(task, "queue", None) or app.conf.task_default_queue
    bar = _progress(len(items), progress, task.name)
    results: list[AsyncResult] = []
    backend = app.backend
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        batched = isinstance(channel, Channel)
        for start in range(0, len(items), 100):
            chunk = [_signature(task, item) for item in items[start:start + 100]]
            ids = [str(uuid.uuid4()) for _ in chunk]
            if track_queued and isinstance(backend, DynamoDBBackend):
                backend.queue_rows((tid, sig.task, queue) for tid, sig in zip(ids, chunk, strict=False))
            if not batched:
                for tid, sig in zip(ids, chunk, strict=False):
                    sig.apply_async(task_id=tid, queue=queue, group_id=group_id)
            else:
                messages = [_message(app, channel, sig, tid, group_id, i + start, queue, message_group_id)
                            for i, (tid, sig) in enumerate(zip(ids, chunk, strict=False))]
                _send(channel, queue, messages)
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


def _message(app: Any, channel: Any, sig: Signature, task_id: str, group_id: str, index: int, queue: str,
             group_key: str | None) -> dict[str, Any]:
    headers, properties, body, _ = app.amqp.as_task_v2(
        task_id, sig.task, sig.args, sig.kwargs, group_id=group_id, group_index=index,
        root_id=task_id,
    )
    content_type, content_encoding, data = serialize(body, serializer=app.conf.task_serializer)
    if group_key:
        properties["message_group_id"] = group_key
    message = channel.prepare_message(data, 0, content_type, content_encoding, headers, properties)
    channel._inplace_augment_message(message, "", queue)
    return message


def _send(channel: Any, queue: str, messages: list[dict[str, Any]]) -> None:
    """SendMessageBatch in ≤10-entry, ≤1 MiB batches; retry failed entries with backoff."""
    entries = [channel.send_params(queue, m) for m in messages]
    client = channel._client_for(queue)
    url = entries[0]["QueueUrl"] if entries else None
    batch: list[dict[str, Any]] = []
    size = 0
    for entry in entries:
        entry_size = len(entry["MessageBody"].encode("utf-8"))
        if batch and (len(batch) == 10 or size + entry_size > MAX_BATCH_BYTES):
            _send_batch(client, url, batch)
            batch, size = [], 0
        batch.append(entry)
        size += entry_size
    if batch:
        _send_batch(client, url, batch)


def _send_batch(client: Any, url: str, batch: list[dict[str, Any]], attempts: int = 8) -> None:
    pending = {str(i): {k: v for k, v in e.items() if k != "QueueUrl"} for i, e in enumerate(batch)}
    pauses = backoff_intervals(0.05, 2.0, 2.0)
    for _ in range(attempts):
        response = client.send_message_batch(
            QueueUrl=url, Entries=[{"Id": i, **e} for i, e in pending.items()])
        for ok in response.get("Successful", []):
            pending.pop(ok["Id"], None)
        permanent = [f for f in response.get("Failed", []) if f.get("SenderFault")]
        if permanent:
            raise AwsCallFailed(
                f"SendMessageBatch to {url} rejected {len(permanent)} message(s): "
                f"{permanent[0].get('Code')}: {permanent[0].get('Message')}")
        if not pending:
            return
        logger.warning("SendMessageBatch to %s: %d entries failed, retrying", url, len(pending))
        time.sleep(next(pauses))
    raise AwsCallFailed(f"SendMessageBatch to {url}: {len(pending)} message(s) still failing after {attempts} attempts")


def _progress(total: int, enabled: bool, name: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled or total < 100, desc=f"submit {name}", unit="task")
