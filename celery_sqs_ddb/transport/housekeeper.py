"""A channel's background thread: batched deletes and the visibility heartbeat.

A thread rather than the event loop, so a blocked loop (solo pool, slow callbacks) can neither
delay acks nor let a long task's message time out. Every message the channel holds (received
and not yet acked or released, including FIFO messages waiting for their group) is tracked
here as a :class:`Held`; while held, its visibility is extended every half visibility timeout,
up to SQS's 12 h cap.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from celery.utils.log import get_logger

from .headers import BATCH, MAX_VISIBILITY_SECONDS

logger = get_logger(__name__)


@dataclasses.dataclass
class Held:
    """A message this channel holds: where it is from and when its visibility was last extended."""

    queue: str
    url: str
    received: float
    extended: float
    warned: bool = False


class Housekeeper(threading.Thread):
    """Batched deletes and visibility extension for one channel.

    ``delete_batch(queue, url, entries)`` and ``extend_batch(queue, url, receipts, timeout) -> gone``
    are the channel's SQS calls; ``visibility_timeout`` is the queue's, in seconds.
    """

    def __init__(self, delete_batch: Callable[..., None], extend_batch: Callable[..., set[str]],
                 visibility_timeout: float, flush_interval: float, heartbeat: bool) -> None:
        super().__init__(name="sqs-ddb-housekeeper", daemon=True)
        self.delete_batch = delete_batch
        self.extend_batch = extend_batch
        self.visibility_timeout = visibility_timeout
        self.flush_interval = flush_interval
        self.heartbeat = heartbeat
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = False
        self.pending: dict[tuple[str, str], list[tuple[str, str | None]]] = defaultdict(list)
        self.oldest: dict[tuple[str, str], float] = {}  # when the oldest pending delete of a queue came
        self.held: dict[str, Held] = {}  # receipt handle -> Held

    # called from the consumer thread

    def track(self, queue: str, url: str, receipt: str) -> None:
        now = time.monotonic()
        with self.lock:
            self.held[receipt] = Held(queue, url, now, now)

    def forget(self, receipt: str) -> None:
        with self.lock:
            self.held.pop(receipt, None)

    def ack(self, queue: str, url: str, receipt: str, pointer: str | None = None) -> None:
        """Delete ``receipt`` with the next batch (and its claim-check object ``pointer``)."""
        with self.lock:
            self.held.pop(receipt, None)
            entries = self.pending[(queue, url)]
            if not entries:
                self.oldest[(queue, url)] = time.monotonic()
            entries.append((receipt, pointer))
            full = len(entries) >= BATCH
        if full or not self.flush_interval:
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
        heartbeat = max(0.5, self.visibility_timeout / 4)
        return min(heartbeat, self.flush_interval or heartbeat)

    def run(self) -> None:
        while not self.stopping:
            self.wake.wait(self.tick)
            self.wake.clear()
            try:
                self.flush_acks(full_only=not self.stopping)
                if self.heartbeat:
                    self.extend_due()
            except Exception:  # the thread must outlive any single AWS error; it is logged
                logger.exception("sqs-ddb housekeeping failed; retrying on the next tick")

    def flush_acks(self, full_only: bool = False) -> None:
        """Delete what is pending: every batch, or (``full_only``) full batches of 10 and the rest
        of a queue only once its oldest delete has waited ``flush_interval`` — so a steady stream
        of acks goes out ten to a call."""
        now = time.monotonic()
        batches: dict[tuple[str, str], list[tuple[str, str | None]]] = {}
        with self.lock:
            for key, entries in self.pending.items():
                if not entries:
                    continue
                due = not full_only or not self.flush_interval or now - self.oldest.get(key, now) >= \
                    self.flush_interval * 0.999
                take = len(entries) if due else len(entries) - len(entries) % BATCH
                if take:
                    batches[key], self.pending[key] = entries[:take], entries[take:]
                    if self.pending[key]:
                        self.oldest[key] = now
        for (queue, url), entries in batches.items():
            for start in range(0, len(entries), BATCH):
                self.delete_batch(queue, url, entries[start:start + BATCH])

    def extend_due(self) -> None:
        vt = self.visibility_timeout
        now = time.monotonic()
        due: dict[tuple[str, str], list[str]] = defaultdict(list)
        with self.lock:
            for receipt, held in self.held.items():
                if now - held.extended < vt / 2:
                    continue
                if now - held.received + vt > MAX_VISIBILITY_SECONDS - 60:
                    if not held.warned:
                        held.warned = True
                        logger.warning(
                            "Message on %s has been held for %.0f s; SQS caps visibility at 12 h, so it will "
                            "become visible again and may run twice (the claim skips it if the first run "
                            "finished)", held.url, now - held.received)
                    continue
                due[(held.queue, held.url)].append(receipt)
        for (queue, url), receipts in due.items():
            for start in range(0, len(receipts), BATCH):
                chunk = receipts[start:start + BATCH]
                gone = self.extend_batch(queue, url, chunk, int(vt))
                with self.lock:
                    for receipt in chunk:
                        entry = self.held.get(receipt)
                        if entry is None:
                            continue
                        if receipt in gone:
                            del self.held[receipt]
                        else:
                            entry.extended = now

    def held_count(self) -> int:
        with self.lock:
            return len(self.held)

    def describe(self) -> dict[str, Any]:
        with self.lock:
            return {"held": len(self.held), "pending_deletes": sum(len(v) for v in self.pending.values())}
