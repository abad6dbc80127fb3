"""The control queues a process owns: refreshed by a keepalive thread, deleted with their owner.

Every control queue carries a "seen" tag its owner refreshes every ``control_keepalive`` seconds;
queues of processes killed without a shutdown (SIGKILL, OOM) are found by their stale tag and
removed by ``celery -A app sqs-ddb cleanup`` and by every worker when it starts.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterable

from botocore.exceptions import BotoCoreError, ClientError
from celery.utils.log import get_logger

from .. import aws
from ..exceptions import AwsCallFailed
from .names import ROLE_EVENTS, ROLE_REPLY, ROLE_WORKER, ControlQueue
from .plane import ControlPlane

logger = get_logger(__name__)


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
