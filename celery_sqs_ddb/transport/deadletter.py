"""Poison messages: moved to the queue's dead-letter queue with the reason, then deleted.

A body that is not a kombu/Celery message, a claim-check that cannot be read (object gone,
pointer outside the configured bucket), an unknown task name or an invalid task message is
poison: it would fail the same way on every worker. The dead-letter queue is for these and for
tasks that exhausted their own retries; errors of ours (DynamoDB, S3 outages) never send a
message there (they are held and retried, see ``worker/deferral.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from celery.utils.log import get_logger

from .headers import REASON_ATTRIBUTE, SOURCE_ATTRIBUTE

logger = get_logger(__name__)


class DeadLetters:
    """Moves raw SQS messages of one channel to their queue's dead-letter queue."""

    def __init__(self, client_for: Callable[[str], Any], dead_letter_url: Callable[[str], str | None],
                 delete: Callable[[str, str, list[tuple[str, str | None]]], None]) -> None:
        self.client_for = client_for
        self.dead_letter_url = dead_letter_url
        self.delete = delete

    def move(self, message: dict[str, Any], url: str, queue_name: str, reason: str) -> None:
        """Send ``message`` to the DLQ of ``queue_name`` with ``reason``, then delete it from ``url``."""
        dlq = self.dead_letter_url(queue_name)
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
                self.client_for(queue_name).send_message(**params)
            except (ClientError, BotoCoreError) as exc:
                logger.error("Could not move poison message %s to %s (%s); it stays on %s until SQS's "
                             "redrive policy moves it", message.get("MessageId"), dlq, exc, url)
                return
            logger.error("Moved poison message %s from %s to dead-letter queue %s: %s",
                         message.get("MessageId"), url, dlq, reason)
        self.delete(queue_name, url, [(message["ReceiptHandle"], None)])
