"""When the channel polls SQS: a receive only when the prefetch window has room worth a call.

kombu's SQS channel polls again as soon as one message's room frees up. A ReceiveMessage costs
as much for one message as for ten, so while tasks run this channel waits until the window has
room for ``min(10, prefetch_count - processes)`` messages, or ``GATHER_SECONDS`` at most. The
messages still held then are at least one per pool process, so no process waits for the receive.
At prefetch multiplier 1 (the package's default) that is a receive as soon as a process is free;
at Celery's default of 4 a receive waits for three quarters of the window. (Measured in ``make
bench``, 200 tasks at prefetch 4 on 2 x 2 processes: 0.31 receives per task when a receive waited
for half the window, 0.20 at three quarters, at the same throughput.) Without the pool's size
(a channel outside a worker) the wait is for half the window. A full window waits for an ack
instead of re-polling every second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery.utils.log import get_logger
from kombu.asynchronous.http.curl import CurlClient as _KombuCurlClient
from kombu.transport import SQS
from kombu.utils.objects import cached_property

if TYPE_CHECKING:  # what the mixin is mixed into (kombu is untyped: Any)
    _Base = SQS.Channel
else:
    _Base = object

logger = get_logger(__name__)

GATHER_SECONDS = 0.2  # longest wait for more prefetch room before a receive


class CurlClient(_KombuCurlClient):
    """kombu's pycurl client with curl's timer callback in milliseconds.

    kombu 5.7 passes curl's ``msecs`` straight to ``hub.call_later`` (which takes seconds), so a
    request that needs a timer step waits for the 1 s safety tick. This converts, and ignores -1.
    """

    def _set_timeout(self, msecs: int) -> None:
        if msecs >= 0:
            self.hub.call_later(msecs / 1000.0, self._timeout_check)


class QoS(SQS.QoS):
    """The prefetch window counts FIFO messages held for their group as taken."""

    def _waiting(self) -> int:
        return self.channel.gate.waiting_count()

    def can_consume(self) -> bool:
        if not self.prefetch_count:
            return True
        return len(self._delivered) - len(self._dirty) + self._waiting() < self.prefetch_count

    def can_consume_max_estimate(self) -> int | None:
        if not self.prefetch_count:
            return None
        return max(self.prefetch_count - (len(self._delivered) - len(self._dirty)) - self._waiting(), 0)


class Polling(_Base):
    """Mixin for the SQS channel: receive scheduling (see the module docstring)."""

    _gathering: Any = None  # the hub timer of a poll waiting for more room
    _closing: bool

    def _schedule_queue(self, queue: str, force: bool = False) -> None:
        """Poll ``queue`` if the prefetch window has room worth a receive (``force``: any room);
        otherwise an ack or the gather timer wakes it (no 1 s re-poll)."""
        if queue not in self._active_queues:
            return
        if self.qos.can_consume() and (force or self._room_worth_a_receive()):
            done = SQS.promise(self._loop1, (queue,), on_error=SQS.promise(self._receive_failed, (queue,)))
            self._get_bulk_async(queue, callback=done)
            return
        self._waiting_for_room.add(queue)
        if self.qos.can_consume() and self.hub is not None:
            self._gather_soon()

    def _get_async(self, queue: str, count: int = 1, callback: Any = None) -> Any:
        q_url = self._new_queue(queue)
        qname = self.canonical_queue_name(queue)
        on_ready = SQS.transform(self._on_messages_ready, callback, q_url, queue)
        # kombu's client throws into this promise on a 4xx (throttling); unhandled, the exception
        # reaches the event loop and stops the worker.
        on_ready.on_error = SQS.promise(self._receive_failed, (queue,))
        return self._get_from_sqs(queue_name=qname, queue_url=q_url, count=count,
                                  connection=self.asynsqs(queue=qname), callback=on_ready)

    def _receive_failed(self, queue: str, *args: Any) -> None:
        """A failed ReceiveMessage (throttling, 5xx, network): log, then poll again in a second."""
        exc = next((a for a in reversed(args) if isinstance(a, BaseException)), None)  # vine passes it last
        if self._closing or self.closed or self.connection is None:
            logger.debug("ReceiveMessage on %s ended with the channel closed (%s)", queue, exc)
            return
        logger.warning("ReceiveMessage on %s failed (%s); polling again in 1 s", queue, exc)
        if self.hub is not None:
            self.hub.call_later(1.0, self._schedule_queue, queue)

    @cached_property
    def _waiting_for_room(self) -> set[str]:
        return set()

    #: The worker's pool, set by the worker's consumer step: its size (``num_processes``, which
    #: autoscaling changes) is how many held messages keep every process busy.
    worker_pool: Any = None

    def _room_worth_a_receive(self) -> bool:
        """Room for ``min(10, prefetch_count - processes)`` messages (half the window when the
        pool's size is unknown), or nothing held: a receive costs as much for one message as for
        ten, so a nearly full window waits for more acks (up to ``GATHER_SECONDS``) while the
        messages it still holds keep every process busy."""
        room = self.qos.can_consume_max_estimate()
        if room is None:
            return True
        prefetch = self.qos.prefetch_count
        processes = getattr(self.worker_pool, "num_processes", None)
        spare = prefetch - processes if isinstance(processes, int) and processes > 0 else prefetch // 2
        return room >= min(10, max(1, spare)) or room >= prefetch

    def _loop1(self, queue: str, messages_fetched: Any = None) -> None:
        """After a receive: one that brought fewer messages than the room was worth, while tasks
        run, waits up to ``GATHER_SECONDS`` (or until acks make room) so the next brings more."""
        room = self.qos.can_consume_max_estimate()
        if messages_fetched and room is not None and messages_fetched < min(10, max(1, room)) \
                and room < self.qos.prefetch_count and self.hub is not None:
            self._waiting_for_room.add(queue)
            self._gather_soon()
            return
        super()._loop1(queue, messages_fetched)

    def _wake(self) -> None:
        """An ack made room: poll the queues waiting for it once the room is worth a receive."""
        if not self._waiting_for_room or self.hub is None:
            return
        if self._room_worth_a_receive():
            self._poll_waiting()
        else:
            self._gather_soon()

    def _gather_soon(self) -> None:
        if self._gathering is None and self.hub is not None:
            self._gathering = self.hub.call_later(GATHER_SECONDS, self._gathered)

    def _gathered(self) -> None:
        self._gathering = None
        self._poll_waiting(force=True)

    def _poll_waiting(self, force: bool = False) -> None:
        # Direct, not hub.call_soon: an ack runs inside a ready callback, and the hub polls (up to
        # 1 s) before it looks at callbacks added meanwhile.
        waiting = list(self._waiting_for_room)
        self._waiting_for_room.clear()
        for queue in waiting:
            self._schedule_queue(queue, force=force)
