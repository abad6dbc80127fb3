"""Publishing: SendMessage parameters (FIFO group and dedup ids, delay, S3 claim-check) and
SendMessageBatch in batches of 10 and at most 1 MiB, retrying failed entries."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from celery.utils.log import get_logger
from kombu.transport import SQS
from kombu.utils.json import dumps

from ..exceptions import AwsCallFailed, PayloadTooLarge
from ..payloads import PayloadStore
from ..waiting import backoff_intervals
from .headers import BATCH, CLAIM_CHECK_KEY, MAX_BATCH_BYTES

logger = get_logger(__name__)


def send_params(queue: str, url: str, message: dict[str, Any], *, base64: bool, threshold: int,
                payloads: PayloadStore | None, delay_of: Callable[[dict[str, Any]], int | None]) -> dict[str, Any]:
    """SendMessage arguments for a kombu message on ``queue`` (at ``url``)."""
    props = message.setdefault("properties", {})
    params: dict[str, Any] = {"QueueUrl": url}
    if "message_attributes" in props:
        params["MessageAttributes"] = props.pop("message_attributes")
    headers = message.get("headers") or {}
    task_id = headers.get("id") or props.get("correlation_id")
    group = props.pop("message_group_id", None) or props.get("MessageGroupId")
    if queue.endswith(".fifo"):
        # One group per task (parallel) unless the caller chose a key (per-key order); a
        # retried publish of the same attempt is the same message (dedup window 5 min).
        params["MessageGroupId"] = str(group or task_id or "default")[:128]
        dedup = props.get("MessageDeduplicationId")
        if not dedup:
            nesting = headers.get("replaced_task_nesting") or 0  # Task.replace(): the same id, a new message
            dedup = f"{task_id}-{headers.get('retries') or 0}" + (f"-{nesting}" if nesting else "") \
                if task_id else uuid.uuid4().hex
        params["MessageDeduplicationId"] = str(dedup)[:128]
    else:
        if group:
            params["MessageGroupId"] = str(group)[:128]  # SQS fair queues
        delay = delay_of(props)
        if delay is not None:
            params["DelaySeconds"] = delay
    body = dumps(message)
    if base64:
        body = SQS.AsyncMessage().encode(body)
    params["MessageBody"] = claim_check(body, url, task_id, threshold, payloads)
    return params


def claim_check(body: str, url: str, task_id: str | None, threshold: int, payloads: PayloadStore | None) -> str:
    """``body``, or a pointer to it in S3 when it is over ``threshold`` bytes."""
    size = len(body.encode("utf-8"))
    if size <= threshold:
        return body
    if payloads is None:
        raise PayloadTooLarge(
            f"task message for {url} is {size} bytes, over sqs_ddb_payload_s3_threshold={threshold} "
            "(SQS takes at most 1 MiB); pass s3_bucket=... to celery_sqs_ddb.broker_settings() "
            "(or set SQS_DDB_S3_BUCKET) to send large arguments through S3")
    pointer = payloads.put(f"{task_id or uuid.uuid4().hex}-{uuid.uuid4().hex[:8]}", body.encode("utf-8"),
                           "application/json")
    return dumps({CLAIM_CHECK_KEY: pointer})


def send_batches(client: Any, url: str, entries: list[dict[str, Any]], attempts: int = 8) -> None:
    """SendMessageBatch of ``entries`` (SendMessage arguments) in ≤10-entry, ≤1 MiB calls."""
    batch: list[dict[str, Any]] = []
    size = 0
    for entry in entries:
        entry_size = len(entry["MessageBody"].encode("utf-8"))
        if batch and (len(batch) == BATCH or size + entry_size > MAX_BATCH_BYTES):
            _send_batch(client, url, batch, attempts)
            batch, size = [], 0
        batch.append(entry)
        size += entry_size
    if batch:
        _send_batch(client, url, batch, attempts)


def _send_batch(client: Any, url: str, batch: list[dict[str, Any]], attempts: int) -> None:
    pending = {str(i): {k: v for k, v in e.items() if k != "QueueUrl"} for i, e in enumerate(batch)}
    pauses = backoff_intervals(0.05, 2.0, 2.0)
    for _ in range(attempts):
        response = client.send_message_batch(QueueUrl=url, Entries=[{"Id": i, **e} for i, e in pending.items()])
        for ok in response.get("Successful", []):
            pending.pop(ok["Id"], None)
        permanent = [f for f in response.get("Failed", []) if f.get("SenderFault")]
        if permanent:
            raise AwsCallFailed(f"SendMessageBatch to {url} rejected {len(permanent)} message(s): "
                                f"{permanent[0].get('Code')}: {permanent[0].get('Message')}")
        if not pending:
            return
        logger.warning("SendMessageBatch to %s: %d entries failed, retrying", url, len(pending))
        time.sleep(next(pauses))
    raise AwsCallFailed(f"SendMessageBatch to {url}: {len(pending)} message(s) still failing after {attempts} attempts")
