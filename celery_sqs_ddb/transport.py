"""kombu SQS transport with FIFO parallelism, idempotent publish, batched calls, a
visibility heartbeat, an S3 claim-check and dead-lettering of poison messages.

Select it with ``broker_transport = "celery_sqs_ddb.transport:Transport"`` (set by
:func:`celery_sqs_ddb.broker_settings`). Differences from kombu's SQS transport:

- FIFO queues: ``MessageGroupId`` is the task id (tasks run in parallel) unless the caller
  passes ``message_group_id=...`` to ``apply_async`` (per-key ordering);
  ``MessageDeduplicationId`` is ``<task id>-<retries>``, so a retried publish is one task.
- Acks are deleted with DeleteMessageBatch (up to 10 a call), flushed after
  ``ack_flush_interval`` seconds, at 10 pending, and on close.
- While a message is held (received, not acked), its visibility is extended with
  ChangeMessageVisibilityBatch every half ``visibility_timeout``, up to SQS's 12 h cap.
- Bodies over ``payload_s3_threshold`` go to S3 (``s3_bucket``); the message carries a
  pointer, the worker fetches it and deletes the object after the ack.
- Bodies that are not kombu messages and claim-checks whose object is gone are moved to
  the queue's dead-letter queue with the reason in the ``sqs_ddb_reason`` attribute.
- Each delivery carries ``sqs_receive_count`` in its headers and sets
  ``delivery_info['redelivered']`` when SQS delivered it before.
- With remote control on (:mod:`celery_sqs_ddb.control`), Celery's ``*.pidbox`` fanout
  exchange is an SNS topic, each worker's mailbox and each client's reply queue an SQS queue
  of its own; with events on, the ``celeryev`` topic exchange is a second SNS topic. Off (the
  default), a ``revoke`` broadcast is written to the result backend and no SNS call is made.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from celery.utils.log import get_logger
from kombu.asynchronous.http.curl import CurlClient as _KombuCurlClient
from kombu.transport import SQS, virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from kombu.utils.objects import cached_property

from . import aws
from .config import TransportOptions
from .control import (
    OWNED,
    REMOTE_CONTROL_OFF,
    ROLE_EVENTS,
    ROLE_REPLY,
    ROLE_WORKER,
    ControlOptions,
    ControlPlane,
    ControlQueue,
    Topics,
)
from .exceptions import ClaimCheckMissing, ConfigurationError, PayloadTooLarge
from .payloads import PayloadStore

logger = get_logger(__name__)

CLAIM_CHECK_KEY = "sqs_ddb_claim_check"
REASON_ATTRIBUTE = "sqs_ddb_reason"
SOURCE_ATTRIBUTE = "sqs_ddb_source_queue"
RECEIVE_COUNT_HEADER = "sqs_receive_count"
MAX_VISIBILITY_SECONDS = 12 * 3600
BATCH = 10


class Housekeeper(threading.Thread):
    """Background thread of a channel: batched deletes and the visibility heartbeat.

    A thread rather than the event loop, so a blocked loop (solo pool, slow callbacks) can
    neither delay acks nor let a long task's message time out.
    """

    def __init__(self, channel: Channel) -> None:
        super().__init__(name="sqs-ddb-housekeeper", daemon=True)
        self.channel = channel
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = False
        self.pending: dict[tuple[str, str], list[tuple[str, str | None]]] = defaultdict(list)
        self.inflight: dict[str, list[Any]] = {}  # receipt -> [queue, url, received, extended, warned, group]

    # called from the consumer thread

    def track(self, queue: str, url: str, receipt: str, group: str | None = None) -> None:
        now = time.monotonic()
        with self.lock:
            self.inflight[receipt] = [queue, url, now, now, False, group]

    def held_groups(self, url: str) -> set[str]:
        with self.lock:
            return {entry[5] for entry in self.inflight.values() if entry[1] == url and entry[5]}

    def forget(self, receipt: str) -> None:
        with self.lock:
            self.inflight.pop(receipt, None)

    def ack(self, queue: str, url: str, receipt: str, pointer: str | None) -> None:
        with self.lock:
            self.inflight.pop(receipt, None)
            entries = self.pending[(queue, url)]
            entries.append((receipt, pointer))
            full = len(entries) >= BATCH
        if full or not self.channel.options.ack_flush_interval:
            self.wake.set()

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=30)
        self.flush_acks()

    # the thread

    @property
    def tick(self) -> float:
        heartbeat = max(0.5, self.channel.visibility_timeout / 4)
        return min(heartbeat, self.channel.options.ack_flush_interval or heartbeat)

    def run(self) -> None:
        while not self.stopping:
            self.wake.wait(self.tick)
            self.wake.clear()
            try:
                self.flush_acks()
                if self.channel.options.heartbeat:
                    self.extend_due()
            except Exception:  # the thread must outlive any single AWS error; it is logged
                logger.exception("sqs-ddb housekeeping failed; retrying on the next tick")

    def flush_acks(self) -> None:
        with self.lock:
            batches = {key: entries for key, entries in self.pending.items() if entries}
            self.pending = defaultdict(list)
        for (queue, url), entries in batches.items():
            for start in range(0, len(entries), BATCH):
                self.channel.delete_batch(queue, url, entries[start:start + BATCH])

    def extend_due(self) -> None:
        vt = self.channel.visibility_timeout
        now = time.monotonic()
        due: dict[tuple[str, str], list[str]] = defaultdict(list)
        with self.lock:
            for receipt, (queue, url, received, extended, warned, _) in self.inflight.items():
                if now - extended < vt / 2:
                    continue
                if now - received + vt > MAX_VISIBILITY_SECONDS - 60:
                    if not warned:
                        self.inflight[receipt][4] = True
                        logger.warning(
                            "Message on %s has been held for %.0f s; SQS caps visibility at 12 h, so it "
                            "will become visible again and may run twice (the claim write skips it if "
                            "the first run finished)", url, now - received)
                    continue
                due[(queue, url)].append(receipt)
        for (queue, url), receipts in due.items():
            for start in range(0, len(receipts), BATCH):
                chunk = receipts[start:start + BATCH]
                gone = self.channel.change_visibility_batch(queue, url, chunk, vt)
                with self.lock:
                    for receipt in chunk:
                        entry = self.inflight.get(receipt)
                        if entry is None:
                            continue
                        if receipt in gone:
                            self.inflight.pop(receipt, None)
                        else:
                            entry[3] = now


class CurlClient(_KombuCurlClient):
    """kombu's pycurl client with curl's timer callback in milliseconds.

    kombu 5.7 passes curl's ``msecs`` straight to ``hub.call_later`` (which takes seconds), so
    a request that needs a timer step waits for the 1 s safety tick: every receive after an
    ack stalls about half a second on average. This client converts, and ignores -1 (no timer).
    """

    def _set_timeout(self, msecs: int) -> None:
        if msecs >= 0:
            self.hub.call_later(msecs / 1000.0, self._timeout_check)


class Channel(SQS.Channel):
    """SQS channel; see the module docstring for what changes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.hub is not None and not hasattr(self.hub, "_current_http_client"):
            # kombu's per-hub HTTP client slot (kombu.asynchronous.http.get_client)
            self.hub._current_http_client = CurlClient(self.hub)

    default_wait_time_seconds = 20
    default_visibility_timeout = 60
    _housekeeper: Housekeeper | None = None
    _closing = False

    def _validate_predifined_queues(self) -> None:
        """Resolve queue and dead-letter names given without a URL (once), then kombu's checks."""
        for name, entry in self.predefined_queues.items():
            if not entry.get("url"):
                entry["url"] = self._queue_url(name)
            dlq = entry.get("dead_letter_url")
            if dlq and "://" not in dlq:
                entry["dead_letter_url"] = self._queue_url(dlq)
        super()._validate_predifined_queues()

    def ensure_known_queue(self, name: str) -> str:
        """The URL of task queue ``name``; a queue that exists in SQS but is not in
        ``predefined_queues`` (``control add_consumer``) is added to them. Raises
        :class:`~celery_sqs_ddb.exceptions.QueueNotFound` naming it otherwise."""
        entry = self.predefined_queues.get(name)
        if entry and entry.get("url"):
            return entry["url"]
        url = self._queue_url(name)
        if name.endswith(".fifo") != url.endswith(".fifo"):
            raise ConfigurationError(f"queue {name!r}: a FIFO queue's name ends in '.fifo' ({url})")
        self.predefined_queues[name] = {**(entry or {}), "url": url}
        self._queue_cache[name] = url
        return url

    def _queue_url(self, name: str) -> str:
        from . import aws

        return aws.queue_url(self.sqs(), name, self.region)

    @cached_property
    def options(self) -> TransportOptions:
        return TransportOptions.from_options(self.transport_options)

    @cached_property
    def payloads(self) -> PayloadStore | None:
        opts = self.options
        if not opts.s3_bucket:
            return None
        return PayloadStore(opts.s3_bucket, opts.s3_prefix + "messages/", self.region, self.endpoint_url)

    @property
    def housekeeper(self) -> Housekeeper:
        if self._housekeeper is None:
            self._housekeeper = Housekeeper(self)
            self._housekeeper.start()
        return self._housekeeper

    # ------------------------------------------------------------- publish

    @cached_property
    def endpoint_url(self) -> str | None:
        return self.transport_options.get("endpoint_url") or super().endpoint_url

    def _client_for(self, queue_name: str | None) -> Any:
        if self.predefined_queues and queue_name:
            return self.sqs(queue=self.canonical_queue_name(queue_name))
        return self.sqs()

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        client = self._client_for(queue)
        props = message.setdefault("properties", {})
        if message.get("redelivered"):
            # virtual.QoS restore of an unacked or rejected message: visible again after a short
            # pause (kombu's choice, so a Reject(requeue=True) does not spin), or at once when the
            # channel closes (shutdown: another worker should take it now).
            timeout = 0 if self._closing else self.wait_time_seconds
            client.change_message_visibility(QueueUrl=self._new_queue(queue), ReceiptHandle=props["delivery_tag"],
                                             VisibilityTimeout=timeout)
            if self._housekeeper is not None:
                self._housekeeper.forget(props["delivery_tag"])
            return
        client.send_message(**self.send_params(queue, message))

    def send_params(self, queue: str, message: dict[str, Any]) -> dict[str, Any]:
        """SendMessage arguments: FIFO group and dedup ids, delay, body or S3 claim-check."""
        q_url = self._new_queue(queue)
        props = message.setdefault("properties", {})
        params: dict[str, Any] = {"QueueUrl": q_url}
        if "message_attributes" in props:
            params["MessageAttributes"] = props.pop("message_attributes")
        headers = message.get("headers") or {}
        task_id = headers.get("id") or props.get("correlation_id")
        group = props.pop("message_group_id", None) or props.get("MessageGroupId")
        if queue.endswith(".fifo"):
            params["MessageGroupId"] = str(group or task_id or "default")[:128]
            dedup = props.get("MessageDeduplicationId")
            if not dedup:
                dedup = f"{task_id}-{headers.get('retries') or 0}" if task_id else uuid.uuid4().hex
            params["MessageDeduplicationId"] = str(dedup)[:128]
        else:
            if group:
                params["MessageGroupId"] = str(group)[:128]
            delay = self._resolve_delay_seconds(props)
            if delay is not None:
                params["DelaySeconds"] = delay
        body = dumps(message)
        if self.sqs_base64_encoding:
            body = SQS.AsyncMessage().encode(body)
        params["MessageBody"] = self._maybe_claim_check(body, q_url, task_id)
        return params

    def basic_publish(self, message: dict[str, Any], exchange: str, routing_key: str, **kwargs: Any) -> Any:
        if exchange and exchange.endswith(".pidbox"):
            if exchange.startswith("reply."):  # a worker's answer to one client's reply queue
                return self._publish_reply(message, exchange, routing_key)
            method = self._revoke_from_broadcast(message)
            if not self.control.remote_control:
                if method not in ("revoke", "heartbeat"):  # heartbeat: an event monitor's wake-up call
                    logger.warning("Remote control command %r reaches no worker: %s", method, REMOTE_CONTROL_OFF)
                return None
        elif exchange and self._exchange_is_fanout(exchange):  # task events: the events topic
            self._inplace_augment_message(message, exchange, routing_key)
            return self._put_fanout(exchange, message, routing_key, **kwargs)
        return super().basic_publish(message, exchange, routing_key, **kwargs)

    def _revoke_from_broadcast(self, message: dict[str, Any]) -> str | None:
        """Write a ``revoke`` broadcast to the result backend (REVOKED), which every worker's claim
        honours, also for tasks not received yet and workers that start later. Returns the
        broadcast's method name."""
        try:
            props = message.get("properties") or {}
            body = loads(bytes_to_str(self.decode_body(message["body"], props.get("body_encoding"))))
        except (ValueError, TypeError, KeyError):
            return None
        if not isinstance(body, dict):
            return None
        if body.get("method") != "revoke":
            return body.get("method")
        task_ids = (body.get("arguments") or {}).get("task_id")
        from celery import current_app

        from .backend import DynamoDBBackend

        backend = current_app.backend
        if isinstance(backend, DynamoDBBackend) and task_ids:
            backend.revoke(task_ids)
        elif not self.control.remote_control:
            logger.warning("revoke(%r) has no effect: it needs result_backend = 'ddb://TABLE' or remote control",
                           task_ids)
        return "revoke"

    def _maybe_claim_check(self, body: str, q_url: str, task_id: str | None) -> str:
        size = len(body.encode("utf-8"))
        threshold = self.options.payload_s3_threshold
        if size <= threshold:
            return body
        if self.payloads is None:
            raise PayloadTooLarge(
                f"task message for {q_url} is {size} bytes, over the limit of {threshold} bytes "
                "(broker_transport_options['payload_s3_threshold']; SQS takes at most 1 MiB); set "
                "sqs_ddb_s3_bucket (broker_settings(..., s3_bucket=...)) to send large arguments through S3"
            )
        pointer = self.payloads.put(f"{task_id or uuid.uuid4().hex}-{uuid.uuid4().hex[:8]}", body.encode("utf-8"),
                                    "application/json")
        return dumps({CLAIM_CHECK_KEY: pointer})

    # ------------------------------------------------------------- receive

    def _message_to_python(self, message: dict[str, Any], queue_name: str, q_url: str) -> Any:
        text = bytes_to_str(self._decode_python_message_body(message["Body"]))
        payload = self._prepare_json_payload(text)
        pointer = None
        if CLAIM_CHECK_KEY in payload:
            pointer = payload[CLAIM_CHECK_KEY]
            try:
                if self.payloads is None:
                    raise ClaimCheckMissing(
                        f"message points to {pointer} but no s3_bucket is configured for this worker")
                text = bytes_to_str(self.payloads.get(pointer))
            except ClaimCheckMissing as exc:
                self.dead_letter(message, q_url, queue_name, f"claim-check failed: {exc}")
                return None
            payload = self._prepare_json_payload(text)
        if not isinstance(payload.get("properties"), dict) or "body" not in payload:
            self.dead_letter(message, q_url, queue_name,
                             "body is not a kombu/Celery message (invalid JSON or no properties/body)")
            return None
        if queue_name in self._noack_queues:  # remote control: deleted on receipt, in batches
            queue = self._control_queue(queue_name)
            if queue is None or queue.role != ROLE_REPLY:  # a reply queue is deleted whole after the call
                self.housekeeper.ack(queue_name, q_url, message["ReceiptHandle"], None)
            return payload
        payload = self._envelope_payload(payload, text, message, q_url)
        count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
        headers = payload.get("headers")
        if isinstance(headers, dict):
            headers[RECEIVE_COUNT_HEADER] = count
        delivery_info = payload["properties"]["delivery_info"]
        delivery_info["redelivered"] = count > 1
        delivery_info["sqs_claim_check"] = pointer
        delivery_info["sqs_queue_name"] = queue_name
        self.housekeeper.track(queue_name, q_url, message["ReceiptHandle"],
                               message.get("Attributes", {}).get("MessageGroupId"))
        return payload

    @cached_property
    def fetch_message_attributes(self) -> Any:
        # MessageGroupId: keep two messages of one FIFO group from running at once (below).
        return self.transport_options.get("fetch_message_attributes") or ["ApproximateReceiveCount", "MessageGroupId"]

    def _one_per_group(self, url: str, queue_name: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """On FIFO queues, deliver at most one message per group at a time.

        SQS may return several messages of one group in one receive; running them at once on a
        worker's pool would break the group's order. Later ones are made visible again (the group
        stays locked by the held one, so SQS hands them out again in order after it is deleted).
        """
        if not url.endswith(".fifo") or len(messages) == 0:
            return messages
        held = self.housekeeper.held_groups(url)
        keep, release = [], []
        for message in messages:
            group = message.get("Attributes", {}).get("MessageGroupId")
            if group and group in held:
                release.append(message["ReceiptHandle"])
            else:
                keep.append(message)
                if group:
                    held.add(group)
        if release:
            self.change_visibility_batch(queue_name, url, release, 0)
        return keep

    def _messages_to_python(self, messages: list[dict[str, Any]], queue: str) -> list[Any]:
        q_url = self._new_queue(queue)
        messages = self._one_per_group(q_url, queue, messages)
        out = (self._message_to_python(m, queue, q_url) for m in messages)
        return [p for p in out if p is not None]

    def _on_messages_ready(self, queue: str, qname: str, messages: dict[str, Any]) -> int:
        if not isinstance(messages, dict):  # kombu's async client answers a 5xx/timeout with []
            raise ConnectionError(f"ReceiveMessage on {queue} got no response (server error or timeout)")
        msgs = messages.get("Messages")
        if not msgs:
            return 0
        callback = self.connection._callbacks.get(qname)
        if callback is None:
            self._release_messages(queue, qname, msgs)
            return 0
        msgs = self._one_per_group(queue, qname, msgs)
        for msg in msgs:
            parsed = self._message_to_python(msg, qname, queue)
            if parsed is not None:
                callback(parsed)
        return len(msgs)

    # ------------------------------------------------------------- scheduling

    def _schedule_queue(self, queue: str) -> None:
        """Poll ``queue`` if the prefetch window has room; otherwise wait for an ack to wake it.

        kombu re-polls a full window every ``polling_interval`` (1 s: the next task waits up to
        a second after an ack; 0: the event loop spins). Here an ack schedules the poll at once.
        """
        if queue not in self._active_queues:
            return
        if self.qos.can_consume():
            done = SQS.promise(self._loop1, (queue,), on_error=SQS.promise(self._receive_failed, (queue,)))
            self._get_bulk_async(queue, callback=done)
        else:
            self._waiting_for_room.add(queue)

    def _get_async(self, queue: str, count: int = 1, callback: Any = None) -> Any:
        q_url = self._new_queue(queue)
        qname = self.canonical_queue_name(queue)
        on_ready = SQS.transform(self._on_messages_ready, callback, q_url, queue)
        # kombu's client throws into this promise on a 4xx (throttling); without an error
        # handler here the exception reaches the event loop and stops the worker.
        on_ready.on_error = SQS.promise(self._receive_failed, (queue,))
        return self._get_from_sqs(queue_name=qname, queue_url=q_url, count=count,
                                  connection=self.asynsqs(queue=qname), callback=on_ready)

    def _receive_failed(self, queue: str, *args: Any) -> None:
        """A failed ReceiveMessage (throttling, 5xx, network): log, then poll again in a second.

        kombu's async client raises on 4xx and hands a list on 5xx; either used to end in an
        ``Unrecoverable error`` that stopped the worker.
        """
        exc = next((a for a in reversed(args) if isinstance(a, BaseException)), None)  # vine passes it last
        if self._closing or self.closed or self.connection is None:
            logger.debug("ReceiveMessage on %s ended with the channel closed (%s)", queue, exc)
            return
        logger.warning("ReceiveMessage on %s failed (%s); polling again in 1 s", queue, exc)
        if self.hub is not None and not self._closing:
            self.hub.call_later(1.0, self._schedule_queue, queue)

    @cached_property
    def _waiting_for_room(self) -> set[str]:
        return set()

    def _wake(self) -> None:
        # Called directly, not through hub.call_soon: an ack runs inside a ready callback, and
        # the hub polls (up to 1 s) before it looks at callbacks added meanwhile.
        if self._waiting_for_room and self.hub is not None:
            waiting = list(self._waiting_for_room)
            self._waiting_for_room.clear()
            for queue in waiting:
                self._schedule_queue(queue)

    # ------------------------------------------------------------- ack / reject

    def _held(self, delivery_tag: str) -> dict[str, Any] | None:
        """The delivery info of a message this channel holds from SQS (None if it holds none)."""
        try:
            info = self.qos.get(delivery_tag).delivery_info
        except KeyError:
            return None
        return info if "sqs_message" in info and "sqs_queue" in info else None

    def _forget_heartbeat(self, info: dict[str, Any]) -> None:
        if self._housekeeper is not None:
            self._housekeeper.forget(info["sqs_message"]["ReceiptHandle"])

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        info = self._held(delivery_tag)
        if info is None:
            return virtual.Channel.basic_ack(self, delivery_tag, multiple)
        queue = info.get("sqs_queue_name") or self.canonical_queue_name(info.get("routing_key") or "")
        self.housekeeper.ack(queue, info["sqs_queue"], info["sqs_message"]["ReceiptHandle"],
                             info.get("sqs_claim_check"))
        virtual.Channel.basic_ack(self, delivery_tag, multiple)
        self._wake()

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        info = self._held(delivery_tag)
        if info is not None:
            self._forget_heartbeat(info)
        try:
            super().basic_reject(delivery_tag, requeue=requeue)
        finally:
            self._wake()

    def delete_batch(self, queue: str, url: str, entries: list[tuple[str, str | None]]) -> None:
        """DeleteMessageBatch for up to 10 receipts; then delete their claim-check objects."""
        request = [{"Id": str(i), "ReceiptHandle": receipt} for i, (receipt, _) in enumerate(entries)]
        try:
            response = self._client_for(queue).delete_message_batch(
                QueueUrl=url, Entries=request)
        except (ClientError, BotoCoreError, OSError) as exc:
            logger.warning("DeleteMessageBatch on %s failed (%s); %d message(s) will be redelivered and "
                           "skipped by the claim write", url, exc, len(entries))
            return
        for failure in response.get("Failed", []):
            logger.warning("DeleteMessageBatch on %s: entry failed: %s %s", url,
                           failure.get("Code"), failure.get("Message"))
        failed = {int(f["Id"]) for f in response.get("Failed", [])}
        for i, (_, pointer) in enumerate(entries):
            if pointer and i not in failed and self.payloads is not None:
                try:
                    self.payloads.delete(pointer)
                except (ClientError, BotoCoreError) as exc:
                    logger.warning("Could not delete claim-check object %s: %s", pointer, exc)

    def change_visibility_batch(self, queue: str, url: str, receipts: list[str], timeout: int) -> set[str]:
        """ChangeMessageVisibilityBatch; returns receipts SQS no longer knows (already deleted)."""
        entries = [{"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": timeout} for i, r in enumerate(receipts)]
        try:
            response = self._client_for(queue).change_message_visibility_batch(
                QueueUrl=url, Entries=entries)
        except (ClientError, BotoCoreError, OSError) as exc:
            logger.warning("ChangeMessageVisibilityBatch on %s failed: %s", url, exc)
            return set()
        gone = set()
        for failure in response.get("Failed", []):
            receipt = receipts[int(failure["Id"])]
            if failure.get("Code") in ("ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue"):
                gone.add(receipt)
            else:
                logger.warning("ChangeMessageVisibility on %s failed: %s", url, failure.get("Code"))
        return gone

    def release(self, delivery_tags: list[str]) -> int:
        """Make held, un-started messages visible again at once (visibility 0) and drop them from
        the prefetch window without deleting them, so a later close() does not hide them again."""
        by_queue: dict[tuple[str, str], list[str]] = defaultdict(list)
        held = []
        for tag in delivery_tags:
            info = self._held(tag)
            if info is None:
                continue
            self._forget_heartbeat(info)
            by_queue[(info.get("sqs_queue_name") or "", info["sqs_queue"])].append(info["sqs_message"]["ReceiptHandle"])
            held.append(tag)
        for (queue, url), receipts in by_queue.items():
            for start in range(0, len(receipts), BATCH):
                self.change_visibility_batch(queue or "", url, receipts[start:start + BATCH], 0)
        for tag in held:
            self.qos.ack(tag)
        self._wake()
        return len(held)

    # ------------------------------------------------------------- dead letters

    def dead_letter_url(self, queue_name: str) -> str | None:
        entry = self.predefined_queues.get(queue_name) or {}
        return entry.get("dead_letter_url")

    def dead_letter(self, message: dict[str, Any], url: str, queue_name: str, reason: str) -> None:
        """Move one raw SQS message to the queue's DLQ with ``reason``, then delete it."""
        dlq = self.dead_letter_url(queue_name)
        client = self._client_for(queue_name)
        if dlq is None:
            logger.error("Poison message %s on %s: %s. No dead-letter queue is configured "
                         "(broker_settings(..., dead_letter_queue=...)), so it is deleted",
                         message.get("MessageId"), url, reason)
        else:
            params: dict[str, Any] = {
                "QueueUrl": dlq,
                "MessageBody": message["Body"],
                "MessageAttributes": {
                    REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason[:1000]},
                    SOURCE_ATTRIBUTE: {"DataType": "String", "StringValue": url},
                },
            }
            if dlq.endswith(".fifo"):
                params["MessageGroupId"] = "dead-letter"
                params["MessageDeduplicationId"] = str(message.get("MessageId") or uuid.uuid4().hex)
            try:
                client.send_message(**params)
            except (ClientError, BotoCoreError) as exc:
                logger.error("Could not move poison message %s to %s (%s); it stays on %s until SQS's "
                             "redrive policy moves it", message.get("MessageId"), dlq, exc, url)
                return
            logger.error("Moved poison message %s from %s to dead-letter queue %s: %s",
                         message.get("MessageId"), url, dlq, reason)
        self.delete_batch(queue_name, url, [(message["ReceiptHandle"], None)])

    def dead_letter_delivery(self, delivery_tag: str, reason: str) -> bool:
        """Dead-letter a message Celery already received (unknown task, invalid message)."""
        info = self._held(delivery_tag)
        if info is None:
            return False
        self._forget_heartbeat(info)
        self.dead_letter(info["sqs_message"], info["sqs_queue"], info.get("sqs_queue_name") or "", reason)
        virtual.Channel.basic_ack(self, delivery_tag)
        self._wake()
        return True

    def close(self) -> None:
        self._closing = True
        if self._housekeeper is not None:
            self._housekeeper.stop()  # last batched deletes, while the connection still exists
        super().close()  # restores unacked messages through _put (visibility 0 now)
        for url in list(self._owned_here):  # reply and event receiver queues die with their channel
            OWNED.release(url)
        self._owned_here.clear()

    # ------------------------------------------------------------- remote control and events

    @property
    def control(self) -> ControlOptions:
        return self.connection.control

    @property
    def supports_fanout(self) -> bool:  # kombu: binds and publishes to fanout exchanges go to SNS
        return self.control.active

    @cached_property
    def control_plane(self) -> ControlPlane:
        retries = (self.transport_options.get("client-config") or {}).get("retries") or {}
        return ControlPlane(self.control, self.region, self.endpoint_url,
                            retries.get("mode", "standard"), int(retries.get("total_max_attempts", 5)))

    @property
    def fanout(self) -> Topics:
        if self._fanout is None:
            self._fanout = Topics(self, self.control_plane)
        return self._fanout

    @cached_property
    def _owned_here(self) -> set[str]:
        return set()

    def _control_queue(self, queue: str | None) -> ControlQueue | None:
        return self.control.queue_for(queue) if queue else None

    def _exchange_is_fanout(self, exchange_name: str) -> bool:
        """Which exchanges are SNS topics: Celery's ``*.pidbox`` fanout (remote control) and topic
        exchanges (``celeryev``, events). Other fanout exchanges are not supported."""
        exchange_type = (self.state.exchanges.get(exchange_name) or {}).get("type")
        if exchange_type == "fanout":
            return self.control.remote_control and exchange_name.endswith(".pidbox")
        return exchange_type == "topic" and self.control.events

    def _new_queue(self, queue: str, **kwargs: Any) -> str:
        control = self._control_queue(queue)
        if control is None:
            return super()._new_queue(queue, **kwargs)
        url = self._queue_cache.get(control.name)
        if url is None:
            if control.role == ROLE_EVENTS and not self.control.events:
                raise ConfigurationError(
                    "task events over SQS are off: enable them with broker_settings(..., events=True) or "
                    "sqs_ddb_events = True (README: 'Remote control and monitoring on SQS')")
            if control.role != ROLE_EVENTS and not self.control.remote_control:
                raise ConfigurationError(REMOTE_CONTROL_OFF)
            url = self._queue_cache[control.name] = self.control_plane.ensure_queue(control)
            OWNED.add(self.control_plane, control, url)
            if control.role != ROLE_WORKER:  # a worker's mailbox lives until the worker stops
                self._owned_here.add(url)
        return url

    def _resolve_queue_url(self, queue: str) -> str:
        if self._control_queue(queue) is not None:
            return self._new_queue(queue)
        return super()._resolve_queue_url(queue)

    def _size(self, queue: str) -> int:
        if self._control_queue(queue) is not None:
            return 0  # only kombu's "mailbox in use" warning reads it; not worth a call per declare
        return super()._size(queue)

    def _delete(self, queue: str, exchange: str | None = None, *args: Any, **kwargs: Any) -> None:
        control = self._control_queue(queue)
        if control is None:
            return super()._delete(queue, exchange, *args, **kwargs)
        url = self._queue_cache.pop(control.name, None)
        if url is not None:
            self._owned_here.discard(url)
            OWNED.release(url)
        return None

    def sqs(self, queue: str | None = None) -> Any:
        # per-process control queues are not predefined: they use the channel's default client
        if queue is not None and queue not in self.predefined_queues:
            queue = None
        return super().sqs(queue)

    def asynsqs(self, queue: str | None = None) -> Any:
        if queue is not None and queue not in self.predefined_queues:
            queue = None
        return super().asynsqs(queue)

    def _subscribe_queue_to_fanout_exchange_if_required(self, queue_name: str) -> None:
        control = self._control_queue(queue_name)
        if control is None or control.role == ROLE_REPLY:
            return  # task queues and reply queues are not subscribed to anything
        url = self._new_queue(queue_name)
        OWNED.subscribed(url, self.control_plane.subscribe(url, control.kind))

    def _put_fanout(self, exchange: str, message: dict[str, Any], routing_key: str, **kwargs: Any) -> None:
        setting = "sqs_ddb_events_topic_arn" if self.state.exchanges[exchange]["type"] == "topic" \
            else "sqs_ddb_control_topic_arn"
        with aws.translated("sns", "Publish", f"the SNS topic of exchange '{exchange}'", setting=setting):
            super()._put_fanout(exchange, message, routing_key, **kwargs)

    def _publish_reply(self, message: dict[str, Any], exchange: str, routing_key: str) -> None:
        """Send a reply to the client's reply queue by name (the direct exchange's binding exists
        only in the client's process); a client that stopped waiting has deleted it."""
        control = self._control_queue(f"{routing_key}.{exchange}")
        if control is None:
            return
        self._inplace_augment_message(message, exchange, routing_key)
        for pause in (0.2, 0.4, None):  # SQS: a queue may take a moment to be usable after CreateQueue
            url = self.control_plane.lookup(control.name)
            if url is not None:
                try:
                    self.sqs().send_message(QueueUrl=url, MessageBody=dumps(message))
                    return
                except ClientError as exc:
                    if aws.error_code(exc) not in aws.MISSING_QUEUE_CODES:
                        raise
            if pause is None:
                break
            time.sleep(pause)
        logger.debug("Reply to %s dropped: the client stopped waiting and deleted its queue", routing_key)

    def drain_events(self, timeout: float | None = None, callback: Any = None, **kwargs: Any) -> Any:
        self._drain_timeout = timeout  # a blocking client (inspect, events) must not long-poll past it
        return super().drain_events(timeout=timeout, callback=callback, **kwargs)

    _drain_timeout: float | None = None

    def _receive_message(self, queue: str, max_number_of_messages: int = 1,
                         wait_time_seconds: int | None = None) -> Any:
        wait = self.wait_time_seconds if wait_time_seconds is None else wait_time_seconds
        if self._drain_timeout is not None:
            wait = max(1, min(wait, math.ceil(self._drain_timeout)))
        control = self._control_queue(queue)
        if control is not None and control.role == ROLE_REPLY:
            # kombu's Mailbox counts one reply per drain_events(): two replies received together
            # would leave it waiting a whole timeout for a second one that already came.
            max_number_of_messages = 1
        return super()._receive_message(queue, max_number_of_messages, wait)


class Transport(SQS.Transport):
    """SQS transport of celery_sqs_ddb (``broker_transport = "celery_sqs_ddb.transport:Transport"``)."""

    Channel = Channel
    driver_name = "sqs-ddb"

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.control = ControlOptions.resolve(client.transport_options)
        if self.control.remote_control:
            # Celery starts a worker's remote-control consumer only on a fanout-capable transport.
            self.implements = self.implements.extend(exchange_type=frozenset({"direct", "fanout"}))
