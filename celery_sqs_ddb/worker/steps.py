"""The worker's consumer steps: claims in the right place, dead letters, holds, drain, lifecycle."""

from __future__ import annotations

import threading
import time
from typing import Any

from celery import bootsteps
from celery.exceptions import NotRegistered
from celery.utils.log import get_logger

from ..config import Settings
from . import health
from .claim import Claimer
from .deferral import Deferrals, request_class
from .ecs import Protection

logger = get_logger(__name__)


def _channel_of(message: Any) -> Any:
    from ..transport import Channel

    channel = getattr(message, "channel", None)
    return channel if isinstance(channel, Channel) else None


class SqsDdbStep(bootsteps.StartStopStep):
    """Consumer step: each task's Request class holds deferred runs; tracers that run in this
    process (threads, solo, gevent pools) claim first; unknown or invalid messages go to the DLQ;
    warm shutdown gives back messages not started."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        from ..backend import DynamoDBBackend

        backend = c.app.backend
        self.claimer = Claimer(backend) if isinstance(backend, DynamoDBBackend) else None
        self.deferrals = Deferrals(c)
        for task in c.app.tasks.values():  # strategies are built (Tasks.start) from task.Request
            task.Request = request_class(task.Request, self.deferrals)
        self._wrap_error_handlers(c)

    def start(self, c: Any) -> None:
        if self.claimer is not None:
            for task in c.app.tasks.values():  # Tasks.start has just rebuilt them
                self.claimer.wrap(task)
        channel = _channel_of(getattr(c, "task_consumer", None))
        if channel is not None:  # its receives wait for room by the pool's size
            channel.worker_pool = c.pool

    def stop(self, c: Any) -> None:
        """When the consumer stops (warm shutdown), give back what it holds and has not started."""
        self.deferrals.release_all()
        release_unstarted(c)

    shutdown = stop

    # ---------------------------------------------------------- dead letters

    def _wrap_error_handlers(self, c: Any) -> None:
        original = {name: getattr(c, name) for name in
                    ("on_unknown_task", "on_unknown_message", "on_invalid_task", "on_decode_error")}

        def on_unknown_task(body: Any, message: Any, exc: Exception) -> Any:
            channel = _channel_of(message)
            if channel is None:
                return original["on_unknown_task"](body, message, exc)
            headers = message.headers or {}
            name = headers.get("task")
            if headers.get("id"):
                c.app.backend.mark_as_failure(headers["id"], NotRegistered(name))
            channel.dead_letter_delivery(message.delivery_tag, f"unknown task {name!r}: not registered in worker "
                                                               f"{c.hostname}")

        def on_unknown_message(body: Any, message: Any) -> Any:
            channel = _channel_of(message)
            if channel is None:
                return original["on_unknown_message"](body, message)
            channel.dead_letter_delivery(message.delivery_tag, "not a Celery task message (no 'task' header)")

        def on_invalid_task(body: Any, message: Any, exc: Exception) -> Any:
            channel = _channel_of(message)
            if channel is None:
                return original["on_invalid_task"](body, message, exc)
            channel.dead_letter_delivery(message.delivery_tag, f"invalid task message: {exc!r}"[:900])

        def on_decode_error(message: Any, exc: Exception) -> Any:
            channel = _channel_of(message)
            if channel is None:
                return original["on_decode_error"](message, exc)
            channel.dead_letter_delivery(message.delivery_tag, f"cannot decode message body: {exc!r}"[:900])

        c.on_unknown_task, c.on_unknown_message = on_unknown_task, on_unknown_message
        c.on_invalid_task, c.on_decode_error = on_invalid_task, on_decode_error


def release_unstarted(c: Any) -> int:
    """Give back the messages the consumer ``c`` holds and has not started, at once.

    Without this they stay hidden until the running tasks finish and the connection closes.
    (On a warm shutdown Celery has already dropped them from its reserved set, so the pool will
    not start them; the channel's prefetch window still holds them.) FIFO messages waiting for
    their group go back too.
    """
    channel = _channel_of_consumer(c)
    if channel is None:
        return 0
    running = running_ids(c)
    tags = [tag for tag, message in channel.unacked().items()
            if (getattr(message, "headers", None) or {}).get("id") not in running]
    released = channel.release(tags) + channel.release_waiting()
    if released:
        logger.info("Warm shutdown: released %d un-started message(s) for other workers", released)
    return released


def running_ids(c: Any) -> set[str]:
    """Ids of the tasks the consumer ``c`` has handed to its pool and not seen finish.

    Celery's ``active_requests`` is not enough: a prefork child says it started a task through the
    event loop, which a shutdown signal handler has stopped, so a task handed over just before the
    signal runs without being active. The prefork pool keeps every job it was given, with the task
    id, until the loop reads its result; other pools start a task in the call that hands it over.
    """
    from celery.worker import state

    ids = {r.id for r in list(state.active_requests)}
    jobs = getattr(getattr(getattr(c, "pool", None), "_pool", None), "_cache", None) or {}
    ids.update(job.correlation_id for job in list(jobs.values()) if getattr(job, "correlation_id", None))
    return ids


def _channel_of_consumer(c: Any) -> Any:
    from ..transport import Channel

    channel = getattr(getattr(c, "task_consumer", None), "channel", None)
    return channel if isinstance(channel, Channel) else None


class LifecycleStep(bootsteps.StartStopStep):
    """Consumer step: the health file (on the event loop's timer), ECS scale-in protection and
    exit-when-idle (on a thread, so a busy loop cannot delay them)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, exit_when_idle: float | None = None, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.settings = Settings.read(c.app.conf)
        self.exit_when_idle = exit_when_idle if exit_when_idle is not None else self.settings.exit_when_idle
        self.protection = Protection(self.settings)
        self.last_busy = time.monotonic()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.health_tref: Any = None

    def start(self, c: Any) -> None:
        self.last_busy = time.monotonic()
        health.touch(self.settings.health_file)
        self.health_tref = c.timer.call_repeatedly(self.settings.health_interval, health.touch,
                                                   (self.settings.health_file,))
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="sqs-ddb-lifecycle", daemon=True)
            self.thread.start()

    def stop(self, c: Any) -> None:
        if self.health_tref is not None:
            self.health_tref.cancel()
            self.health_tref = None
        health.remove(self.settings.health_file)

    def shutdown(self, c: Any) -> None:
        self.stop(c)
        self.stopping.set()
        self.protection.off()

    @staticmethod
    def _busy() -> bool:
        from celery.worker import state

        return bool(state.active_requests or state.reserved_requests)

    def _run(self) -> None:
        while not self.stopping.wait(1.0):
            now = time.monotonic()
            busy = self._busy()
            if busy:
                self.last_busy = now
            self.protection.tick(busy, now, self.last_busy)
            if self.exit_when_idle is not None and not busy and now - self.last_busy >= self.exit_when_idle:
                from celery.worker import state

                logger.info("Idle for %.0f s (exit when idle): stopping the worker", now - self.last_busy)
                state.should_stop = 0  # the consumer loop raises WorkerShutdown(0): exit status 0
                return
