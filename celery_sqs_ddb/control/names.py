"""Names of the control plane: per-process queue names, their roles and the options of it all.

SQS has no broadcast, so remote control (``celery inspect``/``control``, broadcast revoke) and
task events go through SNS: each worker gets an SQS queue of its own subscribed to a topic that
stands for Celery's ``celery.pidbox`` fanout exchange; a client waiting for replies gets a
short-lived reply queue; each ``celery events``/Flower process gets a queue on the events topic.
Queue names are ``<namespace>-ctl-<role>-<worker hostname | id>`` (80 characters at most; a hash
replaces the tail of longer names). See :mod:`celery_sqs_ddb.control` for the lifecycle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from ..config import Settings

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
MISSING_SUBSCRIPTION = ("NotFound", "NotFoundException", "InvalidParameter")

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

    def reply_queue(self, kombu_name: str, ticket: str) -> ControlQueue:
        """The reply queue of one ``inspect``/``control`` call, named by the call's ticket.

        kombu names a reply queue after the client's oid, which repeats (in kombu 5.7 it is
        derived from ``id()`` of a short-lived object); SQS refuses to create a queue under a name
        deleted less than 60 s ago, so a call right after one that deleted its queue would fail.
        The ticket (a uuid4 per call, in the broadcast and in every reply's headers) never
        repeats, and both sides know it.
        """
        return ControlQueue(kombu_name, ROLE_REPLY, queue_name(f"{self.queue_prefix}{ROLE_REPLY}-", ticket), ticket)

    @classmethod
    def from_settings(cls, settings: Settings, predefined_queues: Mapping[str, Any] | None = None) -> ControlOptions:
        """The control options of ``settings``; the namespace defaults to the first queue's name."""
        return cls(remote_control=settings.remote_control, events=settings.events,
                   namespace=settings.control_namespace or _namespace_from_queues(predefined_queues or {}),
                   control_topic_arn=settings.control_topic_arn, events_topic_arn=settings.events_topic_arn,
                   keepalive=settings.control_keepalive, stale_after=settings.control_stale_after)


def _namespace_from_queues(predefined: Mapping[str, Any]) -> str:
    for name in predefined:
        base = re.sub(r"[^A-Za-z0-9_-]", "-", name.removesuffix(".fifo"))[:40].strip("-")
        if base:
            return base
    return "celery"
