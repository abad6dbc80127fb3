"""The SQS channel: kombu's, with publish and receive hooks of this package.

Publish: FIFO group and dedup ids, the S3 claim-check (:mod:`.publish`), and
:meth:`Channel.publish_batch`. Receive: claim-check fetch (trusted bucket and prefix only),
poison messages to the DLQ (:mod:`.deadletter`), FIFO followers held (:mod:`.fifo`), the
delivery's receive count and message id in its headers. Ack: batched deletes and the visibility
heartbeat (:mod:`.housekeeper`). Remote control and events: :mod:`celery_sqs_ddb.control.channel`.
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from celery.utils.log import get_logger
from kombu.transport import SQS, virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.objects import cached_property

from .. import aws
from ..config import Settings
from ..control.channel import ControlChannelMixin
from ..exceptions import ClaimCheckMissing, ConfigurationError, SqsDdbError
from ..payloads import PayloadStore
from . import publish
from .deadletter import DeadLetters
from .fifo import GroupGate
from .headers import BATCH, CLAIM_CHECK_KEY, GONE_CODES, MESSAGE_ID_HEADER, RECEIVE_COUNT_HEADER
from .housekeeper import Housekeeper
from .polling import CurlClient, Polling, QoS

logger = get_logger(__name__)

#: The messages of this thread's open ``Channel.batching()`` block, by queue (None: not batching).
_BATCH = threading.local()

#: Visibility of a message a task rejected with ``Reject(requeue=True)``: back soon, not in a spin.
REQUEUE_DELAY_SECONDS = 1
#: Visibility of a message whose claim-check S3 would not give (an outage, a 403): tried again then.
CLAIM_CHECK_RETRY_SECONDS = 30


class Channel(Polling, ControlChannelMixin, SQS.Channel):
    """SQS channel of this package; see the module docstring."""

    QoS = QoS
    default_wait_time_seconds = 20
    default_visibility_timeout = 60
    _housekeeper: Housekeeper | None = None
    _closing = False

    _hub: Any = None
    _made_in: int | None = None

    @property
    def hub(self) -> Any:
        """kombu's event loop for async receives: the process's global one, which kombu hands to
        every channel; only channels made in the thread that runs it may use it (the loop and its
        curl handles are not thread-safe), the others receive synchronously."""
        hub = self._hub
        owner = getattr(hub, "_sqs_ddb_thread", None)
        return hub if owner is None or owner == self._made_in else None

    @hub.setter
    def hub(self, value: Any) -> None:
        self._hub = value

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._made_in = threading.get_ident()
        super().__init__(*args, **kwargs)
        if self.hub is not None and not hasattr(self.hub, "_current_http_client"):
            self.hub._current_http_client = CurlClient(self.hub)  # kombu's slot

    # ------------------------------------------------------------------ parts

    @property
    def settings(self) -> Settings:
        return self.connection.settings

    @cached_property
    def payloads(self) -> PayloadStore | None:
        return PayloadStore.for_settings(self.settings, "messages/") if self.settings.s3_bucket else None

    @property
    def housekeeper(self) -> Housekeeper:
        if self._housekeeper is None:
            s = self.settings
            self._housekeeper = Housekeeper(self.delete_batch, self.change_visibility_batch, self.visibility_timeout,
                                            s.ack_flush_interval, s.heartbeat)
            self._housekeeper.start()
        return self._housekeeper

    @cached_property
    def gate(self) -> GroupGate:
        return GroupGate()

    @cached_property
    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self._client_for, self.dead_letter_url, self.delete_batch)

    @cached_property
    def endpoint_url(self) -> str | None:
        return self.settings.endpoint_url or super().endpoint_url

    def _client_for(self, queue_name: str | None) -> Any:
        if self.predefined_queues and queue_name:
            return self.sqs(queue=self.canonical_queue_name(queue_name))
        return self.sqs()

    @property
    def get_message_attributes(self) -> dict[str, Any]:
        """kombu's attributes to fetch, plus MessageGroupId (the FIFO gate needs it), whatever the
        user's ``fetch_message_attributes`` asked for. "All" in any case is sent as SQS spells it
        (kombu turns ``["All"]`` into ``["ALL"]``, which SQS does not take for all)."""
        attributes = dict(super().get_message_attributes)
        for key, needed in (("MessageSystemAttributeNames", {"ApproximateReceiveCount", "MessageGroupId"}),
                            ("MessageAttributeNames", set())):
            names = [str(name) for name in attributes.get(key) or []]
            if any(name.lower() == "all" for name in names):
                attributes[key] = ["All"]
            elif names or needed:
                attributes[key] = sorted(set(names) | needed)
        return attributes

    # ------------------------------------------------------------------ queues

    def _validate_predifined_queues(self) -> None:
        """Resolve queue and dead-letter names given without a URL (once), then kombu's checks."""
        for name, entry in self.predefined_queues.items():
            if not entry.get("url"):
                entry["url"] = self._queue_url(name)
            dlq = entry.get("dead_letter_url")
            if dlq and "://" not in dlq:
                entry["dead_letter_url"] = self._queue_url(dlq)
        super()._validate_predifined_queues()

    def _queue_url(self, name: str) -> str:
        return aws.queue_url(self.sqs(), name, self.region)

    def _resolve_queue_url(self, queue: str) -> str:
        name = self.canonical_queue_name(queue)
        if self.predefined_queues and name not in self._queue_cache and self._control_queue(queue) is None:
            return self.ensure_known_queue(name)
        return super()._resolve_queue_url(queue)

    def ensure_known_queue(self, name: str) -> str:
        """The URL of task queue ``name``; one that exists in SQS but not in ``predefined_queues``
        (``celery control add_consumer``) is added to them; a missing one raises
        :class:`~celery_sqs_ddb.exceptions.QueueNotFound` naming it (and the worker goes on)."""
        entry = self.predefined_queues.get(name)
        if entry and entry.get("url"):
            return entry["url"]
        url = self._queue_url(name)
        if name.endswith(".fifo") != url.endswith(".fifo"):
            raise ConfigurationError(f"queue {name!r}: a FIFO queue's name ends in '.fifo' ({url})")
        self.predefined_queues[name] = {**(entry or {}), "url": url}
        self._queue_cache[name] = url
        return url

    def _purge(self, queue: str) -> int:
        """kombu's purge is SQS PurgeQueue, which AWS allows once per 60 s per queue; within that
        minute this deletes what receives return instead (messages in flight stay), and says so."""
        try:
            return int(super()._purge(queue))
        except ClientError as exc:
            if not aws.error_code(exc).endswith("PurgeQueueInProgress"):
                raise
        logger.warning("PurgeQueue on %s ran less than 60 s ago (SQS allows one a minute): deleting the messages "
                       "a receive returns instead; messages in flight are not purged", queue)
        url, client, deleted, empty = self._new_queue(queue), self._client_for(queue), 0, 0
        while empty < 2:  # SQS samples servers: one empty receive does not prove an empty queue
            found = client.receive_message(QueueUrl=url, MaxNumberOfMessages=BATCH, WaitTimeSeconds=0,
                                           VisibilityTimeout=30).get("Messages", [])
            if not found:
                empty += 1
                continue
            client.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(found)])
            deleted += len(found)
        return deleted

    def dead_letter_url(self, queue_name: str) -> str | None:
        return (self.predefined_queues.get(queue_name) or {}).get("dead_letter_url")

    # ------------------------------------------------------------------ publish

    def send_params(self, queue: str, message: dict[str, Any]) -> dict[str, Any]:
        """SendMessage arguments for ``message`` on ``queue`` (see :func:`.publish.send_params`)."""
        return publish.send_params(queue, self._new_queue(queue), message, base64=self.sqs_base64_encoding,
                                   threshold=self.settings.payload_s3_threshold, payloads=self.payloads,
                                   delay_of=self._resolve_delay_seconds)

    def publish_batch(self, queue: str, messages: list[dict[str, Any]]) -> None:
        """Send kombu messages (``prepare_message`` output) to ``queue`` with SendMessageBatch."""
        with self.batching():
            for message in messages:
                self._put(queue, message)

    @contextlib.contextmanager
    def batching(self) -> Iterator[None]:
        """Within this block, task messages published from this thread, through any channel of
        this transport (a group acquires its own producer), are sent together with
        SendMessageBatch when it ends; an error of that send is raised there."""
        if getattr(_BATCH, "queues", None) is not None:  # already batching: the outer block sends
            yield
            return
        _BATCH.queues = defaultdict(list)
        try:
            yield
            queues = _BATCH.queues
        finally:
            _BATCH.queues = None
        for queue, messages in queues.items():
            publish.send_batches(self._client_for(queue), messages[0]["QueueUrl"], messages)

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        props = message.setdefault("properties", {})
        if message.get("redelivered"):
            # kombu's restore of an unacked or requeued message: visible again soon (at once when
            # the channel closes: another worker should take it now).
            self._give_back(queue, props["delivery_tag"], 0 if self._closing else REQUEUE_DELAY_SECONDS)
            return
        params = self.send_params(queue, message)
        batch = getattr(_BATCH, "queues", None)
        if batch is not None:
            batch[queue].append(params)
            return
        self._client_for(queue).send_message(**params)

    # ------------------------------------------------------------------ receive

    def _message_to_python(self, message: dict[str, Any], queue_name: str, q_url: str) -> Any:
        text = bytes_to_str(self._decode_python_message_body(message["Body"]))
        payload = self._prepare_json_payload(text)
        pointer = payload.get(CLAIM_CHECK_KEY) if isinstance(payload, dict) else None
        if pointer is not None:
            try:
                if self.payloads is None:
                    raise ClaimCheckMissing(f"message points to {pointer} but this worker has no s3_bucket "
                                            "(broker_settings(..., s3_bucket=...))")
                self.payloads.check(pointer)
                text = bytes_to_str(self.payloads.get(pointer))
            except ClaimCheckMissing as exc:
                self._poison(message, q_url, queue_name, f"claim-check failed: {exc}")
                return None
            except (SqsDdbError, ClientError, BotoCoreError, OSError) as exc:
                # S3 failed or refused: ours, not the message's. Only this message (and its FIFO
                # followers) waits; the rest of the receive goes on.
                logger.warning("Could not read claim-check %s of message %s on %s: %s; it is received again in "
                               "%d s (S3 answers 403, not 404, for a missing object when the role may not "
                               "s3:ListBucket the bucket)", pointer, message.get("MessageId"), queue_name, exc,
                               CLAIM_CHECK_RETRY_SECONDS)
                self._give_back(queue_name, message["ReceiptHandle"], CLAIM_CHECK_RETRY_SECONDS)
                return None
            payload = self._prepare_json_payload(text)
        if not isinstance(payload, dict) or not isinstance(payload.get("properties"), dict) or "body" not in payload:
            self._poison(message, q_url, queue_name,
                         "body is not a kombu/Celery message (invalid JSON or no properties/body)")
            return None
        if queue_name in self._noack_queues:  # remote control: deleted on receipt, in batches
            queue = self._control_queue(queue_name)
            if queue is None or queue.role != "reply":  # a reply queue is deleted whole after the call
                self.housekeeper.ack(queue_name, q_url, message["ReceiptHandle"])
            return payload
        payload = self._envelope_payload(payload, text, message, q_url)
        count = int((message.get("Attributes") or {}).get("ApproximateReceiveCount", 1))
        headers = payload.get("headers")
        if isinstance(headers, dict):
            headers[RECEIVE_COUNT_HEADER] = count
            headers[MESSAGE_ID_HEADER] = message.get("MessageId")
        info = payload["properties"]["delivery_info"]
        info.update(redelivered=count > 1, sqs_claim_check=pointer, sqs_queue_name=queue_name)
        self.housekeeper.track(queue_name, q_url, message["ReceiptHandle"])
        return payload

    def _poison(self, message: dict[str, Any], q_url: str, queue_name: str, reason: str) -> None:
        """Dead-letter a received message before Celery sees it; its FIFO group goes on."""
        self.dead_letters.move(message, q_url, queue_name, reason)
        self._group_done(queue_name, q_url, GroupGate.group_of(message), message["ReceiptHandle"], soon=True)

    def _group_done(self, queue: str, url: str, group: str | None, receipt: str, soon: bool = False) -> None:
        """The message ``receipt`` of FIFO ``group`` is settled: hand the group's next held message
        to the consumer (``soon``: from the event loop, not inside the current callback)."""
        follower = self.gate.done(url, group, receipt)
        if follower is None:
            return
        if soon and self.hub is not None:
            self.hub.call_soon(self._deliver_follower, queue, url, follower)
        else:
            self._deliver_follower(queue, url, follower)

    def _admit(self, q_url: str, queue: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Track every received message; return those to deliver now (FIFO followers wait)."""
        now = self.gate.admit(q_url, messages)
        for message in messages:
            if message not in now:
                self.housekeeper.track(queue, q_url, message["ReceiptHandle"])
        return now

    def _messages_to_python(self, messages: list[dict[str, Any]], queue: str) -> list[Any]:
        q_url = self._new_queue(queue)
        out = (self._message_to_python(m, queue, q_url) for m in self._admit(q_url, queue, messages))
        return [p for p in out if p is not None]

    def _on_messages_ready(self, queue: str, qname: str, messages: Any) -> int:
        if not isinstance(messages, dict):  # kombu's async client answers a 5xx/timeout with []
            raise ConnectionError(f"ReceiveMessage on {queue} got no response (server error or timeout)")
        msgs = messages.get("Messages")
        if not msgs:
            return 0
        callback = self.connection._callbacks.get(qname)
        if callback is None:
            self._release_messages(queue, qname, msgs)
            return 0
        for msg in self._admit(queue, qname, msgs):
            parsed = self._message_to_python(msg, qname, queue)
            if parsed is not None:
                callback(parsed)
        return len(msgs)

    def _deliver_follower(self, queue: str, url: str, message: dict[str, Any]) -> None:
        """A FIFO message whose group's previous message was acked: hand it to the consumer now."""
        self.housekeeper.forget(message["ReceiptHandle"])
        callback = self.connection._callbacks.get(queue) if self.connection else None
        if callback is None or self._closing:
            self.change_visibility_batch(queue, url, [message["ReceiptHandle"]], 0)
            return
        parsed = self._message_to_python(message, queue, url)
        if parsed is not None:
            callback(parsed)

    # ------------------------------------------------------------------ ack, reject, release

    def unacked(self) -> dict[str, Any]:
        """Delivery tag -> kombu message of every delivery not acked yet (the prefetch window).
        kombu drops an acked tag from its window lazily, at the next delivery: those are left out."""
        acked = self.qos._dirty
        return {tag: message for tag, message in self.qos._delivered.items() if tag not in acked}

    def _held(self, delivery_tag: str) -> dict[str, Any] | None:
        """The delivery info of a message this channel holds from SQS (None if it holds none,
        or no longer: acked or released, its receipt handle must not be used again)."""
        if delivery_tag in self.qos._dirty:
            return None
        try:
            info = self.qos.get(delivery_tag).delivery_info
        except KeyError:
            return None
        return info if "sqs_message" in info and "sqs_queue" in info else None

    @staticmethod
    def _where(info: dict[str, Any]) -> tuple[str, str, str, str | None]:
        message = info["sqs_message"]
        return (info.get("sqs_queue_name") or "", info["sqs_queue"], message["ReceiptHandle"],
                (message.get("Attributes") or {}).get("MessageGroupId"))

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        info = self._held(delivery_tag)
        if info is None:
            return virtual.Channel.basic_ack(self, delivery_tag, multiple)
        queue, url, receipt, group = self._where(info)
        self.housekeeper.ack(queue, url, receipt, info.get("sqs_claim_check"))
        virtual.Channel.basic_ack(self, delivery_tag, multiple)
        self._group_done(queue, url, group, receipt, soon=True)
        self._wake()

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        info = self._held(delivery_tag)
        if info is not None:
            self.housekeeper.forget(info["sqs_message"]["ReceiptHandle"])
        try:
            super().basic_reject(delivery_tag, requeue=requeue)
        finally:
            self._wake()

    def _give_back(self, queue: str, receipt: str, timeout: int) -> None:
        """Make one held message visible after ``timeout`` s, its FIFO followers right after it."""
        url = self._new_queue(queue)
        self.housekeeper.forget(receipt)
        group = self.gate.group_holding(url, receipt)
        followers = [m["ReceiptHandle"] for m in self.gate.give_back(url, group, receipt)]
        for r in followers:
            self.housekeeper.forget(r)
        receipts = [receipt, *followers]
        for start in range(0, len(receipts), BATCH):
            self.change_visibility_batch(queue, url, receipts[start:start + BATCH], timeout)

    def release(self, delivery_tags: list[str], timeout: int = 0) -> int:
        """Give held, un-started messages back (visible after ``timeout`` s) without deleting them,
        and drop them from the prefetch window, so a later close() does not hide them again."""
        held = []
        for tag in delivery_tags:
            info = self._held(tag)
            if info is None:
                continue
            queue, _, receipt, _ = self._where(info)
            self._give_back(queue, receipt, timeout)
            held.append(tag)
        for tag in held:
            self.qos.ack(tag)
        self._wake()
        return len(held)

    def release_waiting(self) -> int:
        """Give back every FIFO message held for its group (warm shutdown)."""
        by_queue: dict[str, list[str]] = defaultdict(list)
        for url, message in self.gate.take_all_waiting():
            self.housekeeper.forget(message["ReceiptHandle"])
            by_queue[url].append(message["ReceiptHandle"])
        for url, receipts in by_queue.items():
            for start in range(0, len(receipts), BATCH):
                self.change_visibility_batch("", url, receipts[start:start + BATCH], 0)
        return sum(len(r) for r in by_queue.values())

    def delete_batch(self, queue: str, url: str, entries: list[tuple[str, str | None]]) -> None:
        """DeleteMessageBatch for up to 10 receipts; then delete their claim-check objects."""
        request = [{"Id": str(i), "ReceiptHandle": receipt} for i, (receipt, _) in enumerate(entries)]
        try:
            response = self._client_for(queue).delete_message_batch(QueueUrl=url, Entries=request)
        except (ClientError, BotoCoreError, OSError) as exc:
            logger.warning("DeleteMessageBatch on %s failed (%s); %d message(s) will be redelivered and "
                           "skipped by the claim", url, exc, len(entries))
            return
        for failure in response.get("Failed", []):
            logger.warning("DeleteMessageBatch on %s: entry failed: %s %s", url, failure.get("Code"),
                           failure.get("Message"))
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
            response = self._client_for(queue).change_message_visibility_batch(QueueUrl=url, Entries=entries)
        except (ClientError, BotoCoreError, OSError) as exc:
            logger.warning("ChangeMessageVisibilityBatch on %s failed: %s", url, exc)
            return set()
        gone = set()
        for failure in response.get("Failed", []):
            if failure.get("Code") in GONE_CODES:
                gone.add(receipts[int(failure["Id"])])
            else:
                logger.warning("ChangeMessageVisibility on %s failed: %s", url, failure.get("Code"))
        return gone

    def dead_letter_delivery(self, delivery_tag: str, reason: str) -> bool:
        """Dead-letter a message Celery already received (unknown task, invalid message)."""
        info = self._held(delivery_tag)
        if info is None:
            return False
        queue, url, receipt, group = self._where(info)
        self.housekeeper.forget(receipt)
        self.dead_letters.move(info["sqs_message"], url, queue, reason)
        virtual.Channel.basic_ack(self, delivery_tag)
        self._group_done(queue, url, group, receipt)
        self._wake()
        return True

    def close(self) -> None:
        self._closing = True
        self.release_waiting()
        if self._housekeeper is not None:
            self._housekeeper.stop()  # last batched deletes, while the connection still exists
        super().close()  # restores unacked messages through _put (visibility 0 now)
        self.release_owned()
