"""Remote control and task events over SNS -> SQS (``celery inspect``/``control``, broadcast
revoke, ``celery events``).

SQS has no broadcast, so each worker gets an SQS queue of its own, subscribed (raw message
delivery) to an SNS topic that stands for Celery's ``celery.pidbox`` fanout exchange; a client
that waits for replies gets a short-lived reply queue. Task events go the same way through a
second topic that stands for the ``celeryev`` exchange; each ``celery events``/Flower process
gets its own queue. Nothing of this exists unless enabled (``sqs_ddb_remote_control``,
``sqs_ddb_events`` or ``broker_settings(remote_control=True, events=True)``): by default the
transport makes no SNS call.

Queue names are ``<namespace>-ctl-<role>-<worker hostname | id>`` (SQS's 80 characters at most;
a hash replaces the tail of longer names). Every such queue is tagged with its role, its owner
and a "seen" time that the owning process refreshes every ``control_keepalive`` seconds.
Queues are deleted (and unsubscribed) when their owner stops: a worker's at worker shutdown,
a reply queue once the replies are collected, an event receiver's when it closes. Queues whose
owner died without that (SIGKILL, OOM) are found by their stale "seen" tag and removed by
``celery -A app sqs-ddb cleanup`` and by every worker when it starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from celery.utils.log import get_logger
from kombu.transport.SQS.SNS import SNS as _KombuSns
from kombu.utils.objects import cached_property

from . import aws
from .config import Settings
from .exceptions import AwsCallFailed, ConfigurationError, QueueNotFound

logger = get_logger(__name__)

ROLE_WORKER = "worker"
ROLE_REPLY = "reply"
ROLE_EVENTS = "events"
KIND_CONTROL = "control"
KIND_EVENTS = "events"
TAG_ROLE = "sqs-ddb:role"
TAG_OWNER = "sqs-ddb:owner"
TAG_SEEN = "sqs-ddb:seen"
TAG_SUBSCRIPTION = "sqs-ddb:subscription"
MAX_QUEUE_NAME = 80
#: SQS MessageRetentionPeriod per role: a broadcast older than a minute is of no use to anyone
#: (60 s is SQS's minimum); event receivers get a little slack.
RETENTION = {ROLE_WORKER: 60, ROLE_REPLY: 60, ROLE_EVENTS: 300}
_MISSING_SUBSCRIPTION = ("NotFound", "NotFoundException", "InvalidParameter")

REMOTE_CONTROL_OFF = (
    "Remote control is off for this SQS broker, so no worker can answer inspect/control commands. "
    "Enable it with broker_settings(..., remote_control=True) or sqs_ddb_remote_control = True "
    "(README: 'Remote control and monitoring on SQS'). revoke() works without it: it is written to the "
    "result backend"
)


def queue_name(prefix: str, body: str) -> str:
    """``prefix + body`` made a legal SQS name of at most 80 characters (hashed tail if longer)."""
    name = prefix + re.sub(r"[^A-Za-z0-9_-]", "-", body)
    if len(name) <= MAX_QUEUE_NAME:
        return name
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()[:10]
    return f"{name[:MAX_QUEUE_NAME - len(digest) - 1]}-{digest}"


@dataclasses.dataclass(frozen=True)
class ControlQueue:
    """A per-process queue of the control plane: kombu's name, its role and its SQS name."""

    kombu_name: str
    role: str
    name: str
    owner: str

    @property
    def kind(self) -> str:
        """The topic it is subscribed to (reply queues are not subscribed)."""
        return KIND_EVENTS if self.role == ROLE_EVENTS else KIND_CONTROL


@dataclasses.dataclass(frozen=True)
class ControlOptions:
    """What the transport does about broadcasts; built once per connection by :meth:`resolve`."""

    remote_control: bool = False
    events: bool = False
    namespace: str = "celery"
    control_topic_arn: str | None = None
    events_topic_arn: str | None = None
    keepalive: float = 60.0
    stale_after: float = 600.0
    events_queue_prefix: str = "celeryev."

    @property
    def active(self) -> bool:
        return self.remote_control or self.events

    @property
    def queue_prefix(self) -> str:
        return f"{self.namespace}-ctl-"

    def topic_name(self, kind: str) -> str:
        return f"{self.namespace}-{kind}"

    def configured_topic(self, kind: str) -> str | None:
        return self.events_topic_arn if kind == KIND_EVENTS else self.control_topic_arn

    def queue_for(self, kombu_name: str) -> ControlQueue | None:
        """The control queue a kombu queue name stands for (None for task queues).

        ``<hostname>.<ns>.pidbox`` is a worker's mailbox, ``<oid>.reply.<ns>.pidbox`` a client's
        reply queue, ``celeryev.<uuid>`` an event receiver's queue.
        """
        if kombu_name.endswith(".pidbox"):
            parts = kombu_name.rsplit(".", 3)
            if len(parts) == 4 and parts[1] == "reply":
                role, body = ROLE_REPLY, parts[0]
            else:
                role, body = ROLE_WORKER, kombu_name.rsplit(".", 2)[0]
        elif kombu_name.startswith(self.events_queue_prefix):
            role, body = ROLE_EVENTS, kombu_name[len(self.events_queue_prefix):]
        else:
            return None
        return ControlQueue(kombu_name, role, queue_name(f"{self.queue_prefix}{role}-", body), body)

    @classmethod
    def resolve(cls, transport_options: Mapping[str, Any], settings: Settings | None = None) -> ControlOptions:
        """Options from ``broker_transport_options['remote_control']`` (what :func:`broker_settings`
        writes) over ``settings`` (the ``sqs_ddb_*`` settings and ``SQS_DDB_*`` environment;
        default: the current app's), validated together by :class:`~celery_sqs_ddb.config.Settings`."""
        settings = current_settings() if settings is None else settings
        given = dict(transport_options.get("remote_control") or {})
        unknown = sorted(set(given) - set(CONTROL_SETTINGS))
        if unknown:
            raise ConfigurationError(
                f"unknown key {unknown[0]!r} in broker_transport_options['remote_control']; "
                f"accepted: {', '.join(CONTROL_SETTINGS)}")
        raw = {name: getattr(settings, name) for name in CONTROL_SETTINGS}
        raw.update({name: value for name, value in given.items() if value is not None})
        s = Settings.validated(raw)
        namespace = s.control_namespace or _namespace_from_queues(transport_options.get("predefined_queues") or {})
        return cls(remote_control=s.remote_control, events=s.events, namespace=namespace,
                   control_topic_arn=s.control_topic_arn, events_topic_arn=s.events_topic_arn,
                   keepalive=s.control_keepalive, stale_after=s.control_stale_after)


#: The Settings fields of remote control and events (sqs_ddb_<name>).
CONTROL_SETTINGS = ("remote_control", "events", "control_namespace", "control_topic_arn", "events_topic_arn",
                    "control_keepalive", "control_stale_after")


def current_settings() -> Settings:
    """The settings of the current Celery app (a transport has no app of its own), or of the
    environment alone when there is none."""
    from celery import _state

    app = _state._tls.current_app or _state.default_app  # never create a default app just to read settings
    return Settings.from_conf(app.conf if app is not None else {})


def _namespace_from_queues(predefined: Mapping[str, Any]) -> str:
    for name in predefined:
        base = re.sub(r"[^A-Za-z0-9_-]", "-", name.removesuffix(".fifo"))[:40].strip("-")
        if base:
            return base
    return "celery"


@dataclasses.dataclass
class SweepReport:
    """What :meth:`ControlPlane.sweep` removed (or would remove, with ``dry_run``)."""

    queues_removed: list[str] = dataclasses.field(default_factory=list)
    subscriptions_removed: list[str] = dataclasses.field(default_factory=list)
    queues_kept: list[str] = dataclasses.field(default_factory=list)


class ControlPlane:
    """The SNS topics and per-process SQS queues of remote control and events, for one region."""

    def __init__(self, options: ControlOptions, region: str | None, endpoint_url: str | None = None,
                 retry_mode: str = "standard", max_attempts: int = 5) -> None:
        self.options = options
        self.region = region
        self.endpoint_url = endpoint_url
        self.retry_mode = retry_mode
        self.max_attempts = max_attempts
        self._topics: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_app(cls, app: Any) -> ControlPlane:
        """The control plane of ``app``'s broker settings (CLI, worker start)."""
        opts = app.conf.broker_transport_options or {}
        s = Settings.from_app(app)
        return cls(ControlOptions.resolve(opts, s), opts.get("region") or s.region,
                   opts.get("endpoint_url") or s.endpoint_url, s.retry_mode, s.max_attempts)

    @cached_property
    def sqs(self) -> Any:
        return aws.client("sqs", self.region, self.endpoint_url, self.retry_mode, self.max_attempts)

    @cached_property
    def sns(self) -> Any:
        return aws.client("sns", self.region, self.endpoint_url, self.retry_mode, self.max_attempts)

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
            if aws.error_code(exc) not in _MISSING_SUBSCRIPTION:
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


@dataclasses.dataclass
class _Owned:
    plane: ControlPlane
    queue: ControlQueue
    url: str
    subscription: str | None = None
    touched: float = dataclasses.field(default_factory=time.monotonic)


class OwnedQueues:
    """The control queues this process created: kept alive by a thread, deleted with their owner."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[str, _Owned] = {}
        self.pid = os.getpid()
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()

    def _mine(self) -> dict[str, _Owned]:
        if os.getpid() != self.pid:  # a forked pool child owns nothing of its parent's
            self.entries, self.pid, self.thread = {}, os.getpid(), None
        return self.entries

    def add(self, plane: ControlPlane, queue: ControlQueue, url: str) -> None:
        with self.lock:
            self._mine()[url] = _Owned(plane, queue, url)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="sqs-ddb-control-keepalive", daemon=True)
                self.thread.start()

    def subscribed(self, url: str, subscription: str) -> None:
        with self.lock:
            entry = self._mine().get(url)
            if entry is not None:
                entry.subscription = subscription

    def urls(self) -> set[str]:
        with self.lock:
            return set(self._mine())

    def release(self, url: str) -> bool:
        """Delete one owned queue now (and its subscription); False if that failed (logged)."""
        with self.lock:
            entry = self._mine().pop(url, None)
        if entry is None:
            return False
        try:
            entry.plane.delete(entry.url, entry.subscription)
        except (ClientError, BotoCoreError) as exc:
            logger.warning("Could not delete control queue %s (%s); `celery -A app sqs-ddb cleanup` "
                           "removes it once stale", entry.queue.name, exc)
            return False
        return True

    def release_all(self, roles: Iterable[str] = (ROLE_WORKER, ROLE_REPLY, ROLE_EVENTS)) -> int:
        """Delete every owned queue of these roles; returns how many were deleted."""
        roles = set(roles)
        with self.lock:
            urls = [url for url, entry in self._mine().items() if entry.queue.role in roles]
        return sum(self.release(url) for url in urls)

    def _run(self) -> None:
        while True:
            with self.lock:
                entries = list(self._mine().values())
                if not entries:  # under the lock: add() starts a new thread after this one ends
                    self.thread = None
                    return
            tick = min(entry.plane.options.keepalive for entry in entries)
            self.wake.wait(max(0.2, tick / 4))
            now = time.monotonic()
            owned = self.urls()  # released meanwhile: not touched again
            for entry in entries:
                if now - entry.touched < entry.plane.options.keepalive or entry.url not in owned:
                    continue
                try:
                    entry.plane.touch(entry.url)
                    entry.touched = now
                except ClientError as exc:
                    if aws.error_code(exc) in aws.MISSING_QUEUE_CODES:
                        self._recreate(entry)
                    else:
                        logger.warning("Could not refresh control queue %s: %s", entry.queue.name, exc)
                except BotoCoreError as exc:
                    logger.warning("Could not refresh control queue %s: %s", entry.queue.name, exc)

    def _recreate(self, entry: _Owned) -> None:
        """Someone removed a live queue (a cleanup during a long network outage): recreate it.

        SQS refuses a name deleted less than 60 s ago; this is retried on the next tick."""
        logger.warning("Control queue %s was deleted while in use; recreating it", entry.queue.name)
        try:
            url = entry.plane.ensure_queue(entry.queue)
            if entry.subscription is not None:
                entry.subscription = entry.plane.subscribe(url, entry.queue.kind)
            entry.touched = time.monotonic()
        except (ClientError, BotoCoreError, AwsCallFailed) as exc:
            logger.warning("Could not recreate control queue %s yet: %s", entry.queue.name, exc)


#: The control queues of this process.
OWNED = OwnedQueues()
