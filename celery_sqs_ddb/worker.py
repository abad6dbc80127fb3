"""Worker bootstep: the claim write before each task, dead-lettering of unknown or invalid
task messages, and release of un-started messages on warm shutdown.

Installed automatically when a worker starts with this package's backend or transport
(through Celery's ``worker_init`` signal, which runs before the consumer is built), or
explicitly with :func:`celery_sqs_ddb.configure`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import bootsteps, signals
from celery.exceptions import NotRegistered
from celery.utils.log import get_logger

from .exceptions import StateConflict
from .transport import RECEIVE_COUNT_HEADER

logger = get_logger(__name__)


def _channel_of(message: Any) -> Any:
    from .transport import Channel

    channel = getattr(message, "channel", None)
    return channel if isinstance(channel, Channel) else None


class SqsDdbStep(bootsteps.StartStopStep):
    """Consumer step: claim each task (conditional STARTED) before it reaches the pool."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.backend = None
        self._wrap_error_handlers(c)

    # ---------------------------------------------------------------- claim

    def start(self, c: Any) -> None:
        from .backend import DynamoDBBackend

        backend = c.app.backend
        if not isinstance(backend, DynamoDBBackend) or backend.settings.claim == "off":
            return
        self.backend = backend
        for name, strategy in list(c.strategies.items()):
            if not getattr(strategy, "_sqs_ddb_claims", False):
                c.strategies[name] = self._claiming(c, name, strategy)

    def _claiming(self, c: Any, name: str, strategy: Callable[..., Any]) -> Callable[..., Any]:
        backend = self.backend
        hostname = c.hostname

        def claim_then_run(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kwargs: Any) -> Any:
            headers = message.headers or {}
            task_id = headers.get("id")
            if not task_id or headers.get("eta"):
                # ETA tasks wait in the worker's timer; they are claimed by no one (documented).
                return strategy(message, body, ack, reject, callbacks, **kwargs)
            delivery_info = message.delivery_info or {}
            try:
                backend.claim(
                    task_id, task_name=name, worker=hostname, queue=delivery_info.get("routing_key"),
                    retries=int(headers.get("retries") or 0),
                    receive_count=int(headers.get(RECEIVE_COUNT_HEADER) or 1),
                )
            except StateConflict as exc:
                logger.info("Skipping task %s[%s]: %s", name, task_id, exc)
                message.ack()
                return None
            except Exception as exc:  # DynamoDB unavailable after retries: leave it for later
                logger.error("Could not claim task %s[%s] in DynamoDB (%s); the message is released and "
                             "will be received again", name, task_id, exc)
                channel = _channel_of(message)
                if channel is not None:
                    channel.release([message.delivery_tag])
                    channel.qos.ack(message.delivery_tag)
                    return None
                message.reject(requeue=True)
                return None
            return strategy(message, body, ack, reject, callbacks, **kwargs)

        claim_then_run._sqs_ddb_claims = True  # type: ignore[attr-defined]
        return claim_then_run

    # ---------------------------------------------------------- dead letters

    def _wrap_error_handlers(self, c: Any) -> None:
        original_unknown_task = c.on_unknown_task
        original_unknown_message = c.on_unknown_message
        original_invalid_task = c.on_invalid_task
        original_decode_error = c.on_decode_error

        def on_unknown_task(body: Any, message: Any, exc: Exception) -> Any:
            channel = _channel_of(message)
            if channel is None:
                return original_unknown_task(body, message, exc)
            headers = message.headers or {}
            name = headers.get("task")
            reason = f"unknown task {name!r}: not registered in worker {c.hostname}"
            if headers.get("id"):
                c.app.backend.mark_as_failure(headers["id"], NotRegistered(name))
            channel.dead_letter_delivery(message.delivery_tag, reason)
            return None

        def on_unknown_message(body: Any, message: Any) -> Any:
            channel = _channel_of(message)
            if channel is None:
                return original_unknown_message(body, message)
            channel.dead_letter_delivery(message.delivery_tag, "not a Celery task message (no 'task' header)")
            return None

        def on_invalid_task(body: Any, message: Any, exc: Exception) -> Any:
            channel = _channel_of(message)
            if channel is None:
                return original_invalid_task(body, message, exc)
            channel.dead_letter_delivery(message.delivery_tag, f"invalid task message: {exc!r}"[:900])
            return None

        def on_decode_error(message: Any, exc: Exception) -> Any:
            channel = _channel_of(message)
            if channel is None:
                return original_decode_error(message, exc)
            channel.dead_letter_delivery(message.delivery_tag, f"cannot decode message body: {exc!r}"[:900])
            return None

        c.on_unknown_task = on_unknown_task
        c.on_unknown_message = on_unknown_message
        c.on_invalid_task = on_invalid_task
        c.on_decode_error = on_decode_error

    # ------------------------------------------------------- warm shutdown

    def shutdown(self, c: Any) -> None:
        """Release messages that were received but not started, so others take them now."""
        from celery.worker import state

        unstarted = [r for r in list(state.reserved_requests)
                     if r not in state.active_requests and not r.time_start]
        by_channel: dict[Any, list[str]] = {}
        for request in unstarted:
            channel = _channel_of(request.message)
            if channel is not None:
                by_channel.setdefault(channel, []).append(request.message.delivery_tag)
        for channel, tags in by_channel.items():
            released = channel.release(tags)
            logger.info("Warm shutdown: released %d un-started message(s) for other workers", released)


def uses_this_package(app: Any) -> bool:
    transport = str(app.conf.get("broker_transport") or "")
    backend = str(app.conf.get("result_backend") or "")
    return transport.startswith("celery_sqs_ddb") or backend.startswith("ddb://")


def install(app: Any) -> None:
    """Add the consumer step to ``app`` (idempotent)."""
    steps = app.steps["consumer"]
    if SqsDdbStep not in steps:
        steps.add(SqsDdbStep)


@signals.worker_init.connect(weak=False)
def _on_worker_init(sender: Any = None, **kwargs: Any) -> None:
    app = getattr(sender, "app", None)
    if app is not None and uses_this_package(app):
        install(app)
