"""The task channel's remote-control and events side (a mixin of the transport's Channel).

With ``sqs_ddb_remote_control`` the Transport declares fanout, so Celery starts a worker's
remote-control consumer; Celery's ``*.pidbox`` fanout exchange is the control SNS topic, each
worker's mailbox and each client's reply queue an SQS queue of its own (:mod:`.names`); with
``sqs_ddb_events`` the ``celeryev`` topic exchange is the events topic. Off (the default), no
SNS call is made; a ``revoke`` broadcast still reaches the table (:mod:`.revoke`).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from amqp.protocol import queue_declare_ok_t  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError
from celery.utils.log import get_logger
from kombu.transport.SQS.SNS import SNS as _KombuSns
from kombu.utils.json import dumps
from kombu.utils.objects import cached_property

from .. import aws
from ..exceptions import AwsCallFailed, ConfigurationError
from .keepalive import OWNED
from .names import (
    KIND_CONTROL,
    KIND_EVENTS,
    REMOTE_CONTROL_OFF,
    ROLE_EVENTS,
    ROLE_REPLY,
    ROLE_WORKER,
    ControlOptions,
    ControlQueue,
)
from .plane import ControlPlane
from .revoke import broadcast_body, on_broadcast

if TYPE_CHECKING:  # what the mixin is mixed into (kombu is untyped: Any)
    from kombu.transport import SQS

    _Base = SQS.Channel
else:
    _Base = object

logger = get_logger(__name__)


class Topics(_KombuSns):
    """kombu's SNS fanout (publish, client handling) with our topic per exchange: the control
    topic for ``*.pidbox`` fanout exchanges, the events topic for topic exchanges."""

    def __init__(self, channel: Any, plane: ControlPlane) -> None:
        super().__init__(channel)
        self.plane = plane

    def _get_or_create_topic(self, exchange_name: str) -> str:
        exchange = self.channel.state.exchanges.get(exchange_name) or {}
        kind = KIND_EVENTS if exchange.get("type") == "topic" else KIND_CONTROL
        return str(self.plane.topic_arn(kind))

    def initialise_exchange(self, exchange_name: str) -> None:
        # kombu sweeps the topic's subscriptions here, on every bind (one GetQueueUrl per
        # subscription); ControlPlane.sweep does that at worker start and in `sqs-ddb cleanup`.
        self._get_or_create_topic(exchange_name)

    def get_client(self, exchange_name: str | None = None) -> Any:
        return self.plane.sns




REPLY_RETRIES = (0.2, 0.4)  # pauses before a reply queue not found is looked up again

#: kombu reply-queue name -> (the SQS reply queue of the call in progress, its URL), for the whole
#: process: kombu publishes a call's broadcast on a pooled producer's channel and collects the
#: replies on another. A kombu name is one client in one thread, so one call at a time.
_CALLS: dict[str, tuple[ControlQueue, str]] = {}


class ControlChannelMixin(_Base):
    """Channel overrides for control and event queues and the SNS exchanges (task queues pass through)."""

    settings: Any
    state: Any
    predefined_queues: dict[str, Any]
    _queue_cache: dict[str, str]
    _fanout: Any = None

    @cached_property
    def control(self) -> ControlOptions:
        return ControlOptions.from_settings(self.settings, self.predefined_queues)

    def basic_publish(self, message: dict[str, Any], exchange: str, routing_key: str, **kwargs: Any) -> Any:
        if exchange and exchange.endswith(".pidbox"):
            if exchange.startswith("reply."):  # a worker's answer to one client's reply queue
                return self._publish_reply(message, exchange, routing_key)
            body = broadcast_body(self, message)
            method = on_broadcast(self, body)
            if not self.control.remote_control:
                if method not in ("revoke", "heartbeat"):  # heartbeat: an event monitor's wake-up call
                    logger.warning("Remote control command %r reaches no worker: %s", method, REMOTE_CONTROL_OFF)
                return None
            self._open_reply_queue(body)
        elif exchange and self._exchange_is_fanout(exchange):  # task events: the events topic
            self._inplace_augment_message(message, exchange, routing_key)
            return self._put_fanout(exchange, message, routing_key, **kwargs)
        return super().basic_publish(message, exchange, routing_key, **kwargs)

    def release_owned(self) -> None:
        """Delete the reply and event-receiver queues of this channel (they die with it)."""
        for url in list(self._owned_here):
            OWNED.release(url)
        self._owned_here.clear()

    @property
    def supports_fanout(self) -> bool:  # type: ignore[override]  # kombu: binds and publishes to fanout exchanges go to SNS
        return self.control.active

    @cached_property
    def control_plane(self) -> ControlPlane:
        return ControlPlane(self.control, self.settings.client_args())

    @property
    def fanout(self) -> Topics:
        if self._fanout is None:
            self._fanout = Topics(self, self.control_plane)
        return self._fanout

    @cached_property
    def _owned_here(self) -> set[str]:
        return set()

    def _control_queue(self, queue: str | None) -> ControlQueue | None:
        if not queue:
            return None
        call = _CALLS.get(queue)
        return call[0] if call is not None else self.control.queue_for(queue)

    def _open_reply_queue(self, body: dict[str, Any]) -> None:
        """Create the reply queue of a call whose broadcast is about to be published (the workers
        reply to it by the ticket), in place of kombu's declare (see ``ControlOptions.reply_queue``)."""
        reply_to, ticket = body.get("reply_to"), body.get("ticket")
        if not (isinstance(reply_to, dict) and ticket and reply_to.get("routing_key")):
            return
        kombu_name = f"{reply_to['routing_key']}.{reply_to.get('exchange')}"
        self._close_reply_queue(kombu_name)  # a call that ended without kombu's after-reply hook
        control = self.control.reply_queue(kombu_name, str(ticket))
        url = self.control_plane.ensure_queue(control)  # not cached here: this (pooled) channel
        OWNED.add(self.control_plane, control, url)      # never sees the call's end
        _CALLS[kombu_name] = (control, url)

    def _close_reply_queue(self, kombu_name: str) -> None:
        call = _CALLS.pop(kombu_name, None)
        if call is not None:
            self._queue_cache.pop(call[0].name, None)
            OWNED.release(call[1])

    def queue_declare(self, queue: str | None = None, passive: bool = False, **kwargs: Any) -> Any:
        control = self._control_queue(queue)
        if control is not None and control.role == ROLE_REPLY and queue not in _CALLS:
            # kombu declares the reply queue before the broadcast; it is created with the broadcast,
            # when its ticket (its name) is known
            return queue_declare_ok_t(queue, 0, 0)
        return super().queue_declare(queue, passive, **kwargs)

    def after_reply_message_received(self, queue: str) -> None:
        """The call is over: delete its reply queue (kombu's own hook deletes by bindings, which a
        repeated declare of the same name does not make again)."""
        self._close_reply_queue(queue)
        super().after_reply_message_received(queue)

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
        if url is None and queue in _CALLS:  # a call's reply queue, made by the channel that published
            url = self._queue_cache[control.name] = _CALLS[queue][1]
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
        kombu_name, ticket = f"{routing_key}.{exchange}", (message.get("headers") or {}).get("ticket")
        control = self.control.reply_queue(kombu_name, str(ticket)) if ticket else self._control_queue(kombu_name)
        if control is None:
            return
        self._inplace_augment_message(message, exchange, routing_key)
        self._send_reply(control.name, dumps(message), routing_key, REPLY_RETRIES)

    def _send_reply(self, name: str, body: str, routing_key: str, pauses: tuple[float, ...]) -> None:
        """SendMessage to reply queue ``name``; not found yet (SQS: a new queue may take a moment to
        be visible) is tried again after each of ``pauses`` — on the worker's event loop when there
        is one, so a reply to a client that already gave up never blocks the consumer."""
        url = self.control_plane.lookup(name)
        if url is not None:
            try:
                self.sqs().send_message(QueueUrl=url, MessageBody=body)
                return
            except ClientError as exc:
                if aws.error_code(exc) not in aws.MISSING_QUEUE_CODES:
                    raise
        if not pauses:
            logger.debug("Reply to %s dropped: the client stopped waiting and deleted its queue", routing_key)
        elif self.hub is not None:
            self.hub.call_later(pauses[0], self._send_reply_later, name, body, routing_key, pauses[1:])
        else:
            time.sleep(pauses[0])
            self._send_reply(name, body, routing_key, pauses[1:])

    def _send_reply_later(self, *args: Any) -> None:
        try:
            self._send_reply(*args)
        except (ClientError, BotoCoreError, AwsCallFailed) as exc:  # on the event loop: log, never raise
            logger.warning("Reply to %s not sent: %s", args[2], exc)

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
