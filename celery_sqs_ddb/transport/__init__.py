"""kombu SQS transport of celery_sqs_ddb: ``broker_transport = "celery_sqs_ddb.transport:Transport"``
(set by :func:`celery_sqs_ddb.broker_settings`). Differences from kombu's SQS transport:

- FIFO queues: ``MessageGroupId`` is the task id (tasks run in parallel) unless the caller passes
  ``message_group_id=...`` to ``apply_async`` (per-key order); ``MessageDeduplicationId`` is
  ``<task id>-<retries>`` (``-<nesting>`` for a replacement), so a retried publish is one task.
  A worker runs one message of a group at a time, in order; the rest wait on the worker (held,
  not released), so their receive counts stay at 1.
- Acks are deleted with DeleteMessageBatch (10 a call, after ``sqs_ddb_ack_flush_interval``, at
  10 pending, and on close); held messages' visibility is extended every half visibility
  timeout, up to SQS's 12 h cap.
- Bodies over ``sqs_ddb_payload_s3_threshold`` go to S3; the message carries a pointer, trusted
  only inside the configured bucket and prefix; the object is deleted after the ack.
- Poison messages (not a kombu message, claim-check gone or untrusted, unknown task) go to the
  queue's dead-letter queue with the reason in the ``sqs_ddb_reason`` attribute.
- Each delivery carries ``sqs_receive_count`` and ``sqs_message_id`` in its headers and sets
  ``delivery_info['redelivered']`` when SQS delivered it before.
- Remote control and task events over SNS -> SQS when enabled (:mod:`celery_sqs_ddb.control`).

Its settings come from ``broker_transport_options["sqs_ddb"]`` and the ``SQS_DDB_*`` environment,
read once per connection (:meth:`celery_sqs_ddb.config.Settings.read`); it never reads an app.
"""

from __future__ import annotations

import threading
from typing import Any

from kombu.transport import SQS

from ..config import Settings
from .channel import Channel, QoS

__all__ = ["Channel", "QoS", "Transport"]


class Transport(SQS.Transport):
    """SQS transport of celery_sqs_ddb."""

    Channel = Channel
    driver_name = "sqs-ddb"

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.settings = Settings.read(None, client.transport_options)
        if self.settings.remote_control:
            # Celery starts a worker's remote-control consumer only on a fanout-capable transport.
            self.implements = self.implements.extend(exchange_type=frozenset({"direct", "fanout"}))

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """Celery's consumer hands its event loop over in the thread that runs it: channels made in
        other threads (a client in the same process, as with Celery's in-process test worker) keep
        off that loop (see :attr:`Channel.hub`)."""
        loop._sqs_ddb_thread = threading.get_ident()
        super().register_with_event_loop(connection, loop)
