"""Worker bootstep: the claim write before each task, dead-lettering of unknown or invalid
task messages, and release of un-started messages on warm shutdown.

Installed automatically when a worker starts with this package's backend or transport
(through Celery's ``worker_init`` signal, which runs before the consumer is built), or
explicitly with :func:`celery_sqs_ddb.configure`. With remote control on
(:mod:`celery_sqs_ddb.control`), the ``worker_ready`` signal sweeps stale control queues in the
background and ``worker_shutdown`` deletes this worker's own; ``control add_consumer`` checks
that the SQS queue exists before Celery adds a consumer for it.
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
    """Consumer step: claim each task (conditional STARTED) before it reaches the pool; dead-letter
    unknown or invalid messages; hand back un-started messages on warm shutdown."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.backend = None
        self.received: dict[str, Any] = {}  # delivery tag -> message handed to Celery, until acked
        self._wrap_error_handlers(c)

    # ---------------------------------------------------------------- claim

    def start(self, c: Any) -> None:
        from .backend import DynamoDBBackend

        backend = c.app.backend
        if isinstance(backend, DynamoDBBackend) and backend.settings.claim != "off":
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
            if backend is None or not task_id or headers.get("eta"):
                # ETA tasks wait in the worker's timer; they are claimed by no one (documented).
                self._remember(message)
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
                    return None
                message.reject(requeue=True)
                return None
            self._remember(message)
            return strategy(message, body, ack, reject, callbacks, **kwargs)

        claim_then_run._sqs_ddb_claims = True  # type: ignore[attr-defined]
        return claim_then_run

    def _remember(self, message: Any) -> None:
        for tag in [t for t, m in self.received.items() if m.acknowledged]:
            del self.received[tag]
        self.received[message.delivery_tag] = message

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

    def stop(self, c: Any) -> None:
        """At the start of a warm shutdown, hand back messages received but not started.

        Without this they stay hidden until the running tasks finish and the connection closes,
        and kombu then hides them for another ``wait_time_seconds``. (The consumer's on_close
        has already dropped them from Celery's reserved set and semaphore, so the pool will not
        start them; this step keeps its own list.)
        """
        from celery.worker import state

        running = {r.id for r in list(state.active_requests)}
        by_channel: dict[Any, list[Any]] = {}
        for message in list(self.received.values()):
            if message.acknowledged or (message.headers or {}).get("id") in running:
                continue
            channel = _channel_of(message)
            if channel is not None:
                by_channel.setdefault(channel, []).append(message)
        self.received.clear()
        for channel, messages in by_channel.items():
            released = channel.release([m.delivery_tag for m in messages])
            logger.info("Warm shutdown: released %d un-started message(s) for other workers", released)

    shutdown = stop


def uses_this_package(app: Any) -> bool:
    transport = str(app.conf.get("broker_transport") or "")
    backend = str(app.conf.get("result_backend") or "")
    return transport.startswith("celery_sqs_ddb") or backend.startswith("ddb://")


def install(app: Any) -> None:
    """Add the consumer steps to ``app`` (idempotent)."""
    from .fargate import FargateStep

    steps = app.steps["consumer"]
    for step in (SqsDdbStep, FargateStep):
        if step not in steps:
            steps.add(step)


def add_worker_options(app: Any) -> None:
    """``celery worker --exit-when-idle SECONDS`` (a worker option of this app)."""
    import click

    options = app.user_options["worker"]
    if not any("--exit-when-idle" in getattr(o, "opts", ()) for o in options):
        options.add(click.Option(
            ["--exit-when-idle"], type=float, default=None, metavar="SECONDS",
            help="Exit with status 0 once nothing ran and the queue stayed empty for SECONDS "
                 "(batch jobs; setting sqs_ddb_exit_when_idle)."))


def _checked_add_consumer(original: Callable[..., Any]) -> Callable[..., Any]:
    """``celery control add_consumer QUEUE`` on SQS: the queue must exist (it is added to
    ``predefined_queues``); a missing one is answered with an error instead of Celery adding a
    consumer that fails later in the event loop and stops the worker."""

    def add_consumer(state: Any, queue: str, exchange: str | None = None, exchange_type: str | None = None,
                     routing_key: str | None = None, **options: Any) -> Any:
        channel = getattr(getattr(state.consumer, "task_consumer", None), "channel", None)
        from .exceptions import SqsDdbError
        from .transport import Channel

        if isinstance(channel, Channel):
            try:
                channel.ensure_known_queue(queue)
            except SqsDdbError as exc:
                logger.error("add_consumer %s refused: %s", queue, exc)
                return {"error": f"add consumer {queue}: {exc}"}
        return original(state, queue, exchange, exchange_type, routing_key, **options)

    add_consumer.__doc__ = original.__doc__
    add_consumer._sqs_ddb_checked = True  # type: ignore[attr-defined]
    return add_consumer


def _install_control_commands() -> None:
    from celery.worker.control import Panel

    original = Panel.data.get("add_consumer")
    if original is not None and not getattr(original, "_sqs_ddb_checked", False):
        Panel.data["add_consumer"] = _checked_add_consumer(original)


_install_control_commands()


@signals.worker_init.connect(weak=False)
def _on_worker_init(sender: Any = None, **kwargs: Any) -> None:
    app = getattr(sender, "app", None)
    if app is not None and uses_this_package(app):
        install(app)


@signals.worker_ready.connect(weak=False)
def _on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    """Remove control queues of workers that died without cleaning up (in the background)."""
    app = getattr(sender, "app", None)
    if app is None or not uses_this_package(app):
        return
    transport = getattr(getattr(sender, "connection", None), "transport", None)
    options = getattr(transport, "control", None)
    if options is None or not options.active:
        return
    import threading

    from .control import OWNED, ControlPlane

    def sweep() -> None:
        try:
            report = ControlPlane.for_app(app).sweep(keep=OWNED.urls())
        except Exception as exc:  # a cleanup problem must not affect the worker; it is logged
            logger.warning("Cleanup of stale remote-control queues failed: %s", exc)
            return
        if report.queues_removed or report.subscriptions_removed:
            logger.info("Removed %d stale remote-control queue(s) and %d subscription(s): %s",
                        len(report.queues_removed), len(report.subscriptions_removed),
                        ", ".join(report.queues_removed))

    threading.Thread(target=sweep, name="sqs-ddb-control-sweep", daemon=True).start()


@signals.worker_shutdown.connect(weak=False)
def _on_worker_shutdown(sender: Any = None, **kwargs: Any) -> None:
    """Delete this worker's mailbox queue (and its SNS subscription) as it stops."""
    from .control import OWNED

    released = OWNED.release_all()
    if released:
        logger.info("Deleted %d remote-control queue(s) of this worker", released)
