"""Remote control and task events over SNS -> SQS (``celery inspect``/``control``, broadcast
revoke, ``celery events``), off unless ``sqs_ddb_remote_control`` / ``sqs_ddb_events``.

- :mod:`.names`: queue names and roles, :class:`ControlOptions` (from the settings);
- :mod:`.plane`: the topics and per-process queues on AWS, and the sweep of stale ones;
- :mod:`.keepalive`: the queues this process owns, kept alive and deleted with their owner;
- :mod:`.channel`: the transport Channel's side of it (pidbox and events exchanges);
- :mod:`.revoke`: revoke broadcasts written to the table.

Lifecycle: a worker's mailbox queue lives until the worker stops (deleted at worker shutdown); a
reply queue lives for one ``inspect``/``control`` call; an event receiver's queue until it
closes. Queues whose owner died without that are found by their stale "seen" tag and removed by
``celery -A app sqs-ddb cleanup`` and by every worker when it starts.
"""

from .keepalive import OWNED, OwnedQueues
from .names import KIND_CONTROL, KIND_EVENTS, REMOTE_CONTROL_OFF, ControlOptions, ControlQueue, queue_name
from .plane import ControlPlane, SweepReport

__all__ = ["KIND_CONTROL", "KIND_EVENTS", "OWNED", "REMOTE_CONTROL_OFF", "ControlOptions", "ControlPlane",
           "ControlQueue", "OwnedQueues", "SweepReport", "queue_name"]
