"""The AWS resources of remote control and events: SNS topics, per-process SQS queues, cleanup."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import ClientError
from celery.utils.log import get_logger
from kombu.utils.objects import cached_property

from .. import aws
from ..config import Settings
from ..exceptions import QueueNotFound
from .names import (
    KIND_CONTROL,
    KIND_EVENTS,
    MISSING_SUBSCRIPTION,
    RETENTION,
    ROLE_REPLY,
    TAG_OWNER,
    TAG_ROLE,
    TAG_SEEN,
    TAG_SUBSCRIPTION,
    ControlOptions,
    ControlQueue,
)

logger = get_logger(__name__)


@dataclasses.dataclass
class SweepReport:
    """What :meth:`ControlPlane.sweep` removed (or would remove, with ``dry_run``)."""

    queues_removed: list[str] = dataclasses.field(default_factory=list)
    subscriptions_removed: list[str] = dataclasses.field(default_factory=list)
    queues_kept: list[str] = dataclasses.field(default_factory=list)


class ControlPlane:
    """The SNS topics and per-process SQS queues of remote control and events, for one region."""

    def __init__(self, options: ControlOptions, client_args: dict[str, Any]) -> None:
        self.options = options
        self.client_args = client_args  # one identity and one retry policy for every call
        self._topics: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_settings(cls, settings: Settings, predefined_queues: dict[str, Any] | None = None) -> ControlPlane:
        return cls(ControlOptions.from_settings(settings, predefined_queues), settings.client_args())

    @classmethod
    def for_app(cls, app: Any) -> ControlPlane:
        """The control plane of ``app``'s settings (CLI, worker start)."""
        options = app.conf.broker_transport_options or {}
        return cls.for_settings(Settings.read(app.conf, options), options.get("predefined_queues"))

    @cached_property
    def sqs(self) -> Any:
        return aws.client("sqs", **self.client_args)

    @cached_property
    def sns(self) -> Any:
        return aws.client("sns", **self.client_args)

    # ------------------------------------------------------------------ topics

    def topic_arn(self, kind: str, create: bool = True) -> str | None:
        """The topic of ``kind`` (control or events): the configured ARN, else created by name
        (CreateTopic is idempotent; local development, where no Terraform made one). With
        ``create=False``, None instead of creating it."""
        arn = self._topics.get(kind) or self.options.configured_topic(kind)
        if arn or not create:
            return arn
        with self._lock:
            if kind not in self._topics:
                name = self.options.topic_name(kind)
                with aws.translated("sns", "CreateTopic", f"SNS topic '{name}'",
                                    setting=f"sqs_ddb_{'events' if kind == KIND_EVENTS else 'control'}_topic_arn"):
                    self._topics[kind] = self.sns.create_topic(
                        Name=name, Attributes={"KmsMasterKeyId": "alias/aws/sns"},
                        Tags=[{"Key": "ManagedBy", "Value": "celery_sqs_ddb"}])["TopicArn"]
                logger.info("SNS topic %s: %s", name, self._topics[kind])
            return self._topics[kind]

    # ------------------------------------------------------------------ queues

    def lookup(self, name: str) -> str | None:
        """The URL of control queue ``name``, or None when it does not exist."""
        try:
            with aws.translated("sqs", "GetQueueUrl", f"SQS queue '{name}'", setting="sqs_ddb_remote_control"):
                return self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except QueueNotFound:
            return None

    def ensure_queue(self, queue: ControlQueue) -> str:
        """The queue's URL; created (encrypted, short retention, tagged) if it does not exist."""
        if queue.role != ROLE_REPLY:  # a reply queue's name is new for every call: no lookup
            url = self.lookup(queue.name)
            if url is not None:  # a restarted worker (same hostname) or a recreated connection
                self.touch(url)
                return url
        attributes = {"SqsManagedSseEnabled": "true", "MessageRetentionPeriod": str(RETENTION[queue.role]),
                      "VisibilityTimeout": "30"}
        tags = {TAG_ROLE: queue.role, TAG_OWNER: queue.owner[:256], TAG_SEEN: str(int(time.time()))}
        with aws.translated("sqs", "CreateQueue", f"SQS queue '{queue.name}'", setting="sqs_ddb_remote_control"):
            url = self.sqs.create_queue(QueueName=queue.name, Attributes=attributes, tags=tags)["QueueUrl"]
        logger.info("Created %s queue %s", queue.role, queue.name)
        return url

    def subscribe(self, url: str, kind: str) -> str:
        """Let the topic send to the queue (queue policy), then subscribe it with raw delivery."""
        topic = str(self.topic_arn(kind))
        name = url.rsplit("/", 1)[-1]
        with aws.translated("sqs", "SetQueueAttributes", f"SQS queue '{name}'", setting="sqs_ddb_remote_control"):
            queue_arn = self.sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            policy = {"Version": "2012-10-17", "Statement": [{
                "Sid": "SnsBroadcast", "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage", "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic}}}]}
            self.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
        with aws.translated("sns", "Subscribe", f"SNS topic '{topic}'", setting="sqs_ddb_remote_control"):
            arn = self.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn,
                                     Attributes={"RawMessageDelivery": "true"},
                                     ReturnSubscriptionArn=True)["SubscriptionArn"]
        self.sqs.tag_queue(QueueUrl=url, Tags={TAG_SUBSCRIPTION: arn})
        return arn

    def touch(self, url: str) -> None:
        """Mark the queue as alive now (its owner calls this every ``keepalive`` seconds)."""
        self.sqs.tag_queue(QueueUrl=url, Tags={TAG_SEEN: str(int(time.time()))})

    def unsubscribe(self, subscription: str) -> None:
        """Remove one subscription; already gone is fine."""
        try:
            self.sns.unsubscribe(SubscriptionArn=subscription)
        except ClientError as exc:
            if aws.error_code(exc) not in MISSING_SUBSCRIPTION:
                raise

    def delete(self, url: str, subscription: str | None = None) -> None:
        """Unsubscribe, then delete the queue; both already gone is fine."""
        if subscription and subscription.startswith("arn:"):
            self.unsubscribe(subscription)
        try:
            self.sqs.delete_queue(QueueUrl=url)
        except ClientError as exc:
            if aws.error_code(exc) not in aws.MISSING_QUEUE_CODES:
                raise
        logger.info("Deleted control queue %s", url.rsplit("/", 1)[-1])

    # ------------------------------------------------------------------ cleanup

    def sweep(self, stale_after: float | None = None, *, dry_run: bool = False,
              keep: Iterable[str] = ()) -> SweepReport:
        """Remove control queues whose owner stopped refreshing them, and subscriptions of
        topics whose queue no longer exists."""
        stale_after = self.options.stale_after if stale_after is None else stale_after
        keep = set(keep)
        report = SweepReport()
        now = time.time()
        prefix = self.options.queue_prefix
        urls: list[str] = []
        with aws.translated("sqs", "ListQueues", f"SQS queues '{prefix}*'", setting="sqs_ddb_remote_control"):
            pages = self.sqs.get_paginator("list_queues").paginate(  # MaxResults: or SQS stops at 1,000
                QueueNamePrefix=prefix, PaginationConfig={"PageSize": 1000})
            for page in pages:
                urls.extend(page.get("QueueUrls", []))
        removed_subscriptions: set[str] = set()
        for url in urls:
            name = url.rsplit("/", 1)[-1]
            try:
                tags = self.sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
            except ClientError as exc:
                if aws.error_code(exc) in aws.MISSING_QUEUE_CODES:
                    continue
                raise
            try:
                seen = float(tags.get(TAG_SEEN) or 0)
            except ValueError:
                seen = 0.0
            if url in keep or now - seen <= stale_after:
                report.queues_kept.append(name)
                continue
            report.queues_removed.append(name)
            subscription = tags.get(TAG_SUBSCRIPTION)
            if subscription:
                removed_subscriptions.add(subscription)
                report.subscriptions_removed.append(subscription)
            if not dry_run:
                self.delete(url, subscription)
        kinds = ([KIND_CONTROL] if self.options.remote_control else []) + (
            [KIND_EVENTS] if self.options.events else [])
        for kind in kinds:
            topic = self.topic_arn(kind, create=False)  # a sweep never creates a topic
            if topic is None:  # not configured and not used by this process (local development)
                continue
            for page in self.sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic):
                for sub in page.get("Subscriptions", []):
                    arn, endpoint = sub.get("SubscriptionArn", ""), sub.get("Endpoint", "")
                    queue = endpoint.rsplit(":", 1)[-1]
                    if (sub.get("Protocol") != "sqs" or not arn.startswith("arn:") or arn in removed_subscriptions
                            or not queue.startswith(prefix) or queue in report.queues_kept):
                        continue
                    if self.lookup(queue) is not None:  # ListQueues is eventually consistent
                        continue
                    report.subscriptions_removed.append(arn)
                    removed_subscriptions.add(arn)
                    if not dry_run:
                        self.unsubscribe(arn)
        return report
