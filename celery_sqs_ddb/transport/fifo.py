"""FIFO message groups on one worker: at most one message of a group at a time, in order.

SQS never hands out a message of a group while another of it is in flight elsewhere, but one
receive may return several messages of one group. Delivering them all would let the pool run them
at once, out of order; releasing the later ones (visibility 0) made SQS hand them out again and
again, each time raising their receive count, until the redrive policy sent them to the DLQ.
Instead the gate *holds* them (the heartbeat keeps them invisible; their receive count stays 1)
and delivers the next one when the group's running message is acked. A message that comes back
(rejected with requeue, released at shutdown) takes the group's followers back with it, in
order, so SQS keeps the group's order across workers.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class GroupGate:
    """Which FIFO groups have a message out on this channel, and the messages waiting behind them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[tuple[str, str], str] = {}  # (queue url, group) -> receipt of the one delivered
        self.waiting: dict[tuple[str, str], deque[dict[str, Any]]] = {}

    @staticmethod
    def group_of(message: dict[str, Any]) -> str | None:
        return (message.get("Attributes") or {}).get("MessageGroupId")

    def admit(self, url: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages to deliver now; the others wait for their group (in receive order)."""
        if not url.endswith(".fifo"):
            return messages
        now = []
        with self.lock:
            for message in messages:
                group = self.group_of(message)
                if group is None:
                    now.append(message)
                    continue
                key = (url, group)
                if key in self.running:
                    self.waiting.setdefault(key, deque()).append(message)
                else:
                    self.running[key] = message["ReceiptHandle"]
                    now.append(message)
        return now

    def done(self, url: str, group: str | None, receipt: str) -> dict[str, Any] | None:
        """The group's message ``receipt`` was acked: the next waiting one, to deliver now (or None)."""
        if group is None:
            return None
        key = (url, group)
        with self.lock:
            if self.running.get(key) != receipt:
                return None
            queue = self.waiting.get(key)
            if not queue:
                self.running.pop(key, None)
                self.waiting.pop(key, None)
                return None
            message = queue.popleft()
            self.running[key] = message["ReceiptHandle"]
            return message

    def give_back(self, url: str, group: str | None, receipt: str) -> list[dict[str, Any]]:
        """The group's message ``receipt`` goes back to the queue: its followers go back too (in order)."""
        if group is None:
            return []
        key = (url, group)
        with self.lock:
            if self.running.get(key) != receipt:
                return []
            self.running.pop(key, None)
            return list(self.waiting.pop(key, deque()))

    def group_holding(self, url: str, receipt: str) -> str | None:
        """The group whose delivered message is ``receipt`` (None: not a held group's)."""
        with self.lock:
            return next((group for (u, group), r in self.running.items() if u == url and r == receipt), None)

    def waiting_count(self) -> int:
        with self.lock:
            return sum(len(q) for q in self.waiting.values())

    def take_all_waiting(self) -> list[tuple[str, dict[str, Any]]]:
        """Every waiting message (shutdown), with its queue URL; the gate forgets them."""
        with self.lock:
            out = [(url, message) for (url, _), queue in self.waiting.items() for message in queue]
            self.waiting.clear()
            self.running.clear()
        return out
