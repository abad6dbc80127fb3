"""Every signal receiver of the package, connected by :func:`connect` for one app (never at import)."""

from __future__ import annotations

import threading
from typing import Any

from celery import signals
from celery.utils.log import get_logger

logger = get_logger(__name__)

_connected: set[int] = set()


def connect(app: Any) -> None:
    """Connect the receivers for ``app`` (idempotent); each ignores other apps' workers."""
    if id(app) in _connected:
        return
    _connected.add(id(app))

    def on_process_init(**kwargs: Any) -> None:
        """A prefork pool process: its tracers were just rebuilt; put the claim in front of them."""
        from celery import current_app

        from ..backend import DynamoDBBackend
        from .claim import Claimer

        if current_app._get_current_object() is not app:
            return
        backend = app.backend
        if isinstance(backend, DynamoDBBackend):
            claimer = Claimer(backend)
            for task in app.tasks.values():
                claimer.wrap(task)

    def on_ready(sender: Any = None, **kwargs: Any) -> None:
        """Remove control queues of workers that died without cleaning up (in the background)."""
        if getattr(sender, "app", None) is not app:
            return
        settings = getattr(getattr(getattr(sender, "connection", None), "transport", None), "settings", None)
        if settings is None or not settings.control_active:
            return
        threading.Thread(target=_sweep, args=(app,), name="sqs-ddb-control-sweep", daemon=True).start()

    def on_shutdown(sender: Any = None, **kwargs: Any) -> None:
        """Delete this worker's mailbox queue (and its SNS subscription) as it stops."""
        from ..control import OWNED

        released = OWNED.release_all()
        if released:
            logger.info("Deleted %d remote-control queue(s) of this worker", released)

    _check_add_consumer()
    signals.worker_process_init.connect(on_process_init, weak=False)
    signals.worker_ready.connect(on_ready, weak=False)
    signals.worker_shutdown.connect(on_shutdown, weak=False)


def _sweep(app: Any) -> None:
    from ..control import OWNED, ControlPlane

    try:
        report = ControlPlane.for_app(app).sweep(keep=OWNED.urls())
    except Exception as exc:  # a cleanup problem must not affect the worker; it is logged
        logger.warning("Cleanup of stale remote-control queues failed: %s", exc)
        return
    if report.queues_removed or report.subscriptions_removed:
        logger.info("Removed %d stale remote-control queue(s) and %d subscription(s): %s",
                    len(report.queues_removed), len(report.subscriptions_removed), ", ".join(report.queues_removed))


def _check_add_consumer() -> None:
    """``celery control add_consumer QUEUE`` on SQS: the queue must exist (it is then added to
    ``predefined_queues``). Celery answers "ok" and adds the consumer later in the event loop,
    where a missing queue stops the worker; checked first, the caller gets an error naming the
    queue and the worker goes on. Installed in a worker of this package (other apps' consumers,
    whose channel is not this package's, pass through)."""
    from celery.worker.control import Panel

    original = Panel.data.get("add_consumer")
    if original is None or getattr(original, "_sqs_ddb_checked", False):
        return

    def add_consumer(state: Any, queue: str, exchange: str | None = None, exchange_type: str | None = None,
                     routing_key: str | None = None, **options: Any) -> Any:
        from ..exceptions import SqsDdbError
        from ..transport import Channel

        channel = getattr(getattr(state.consumer, "task_consumer", None), "channel", None)
        if isinstance(channel, Channel):
            try:
                channel.ensure_known_queue(queue)
            except SqsDdbError as exc:
                logger.error("add_consumer %s refused: %s", queue, exc)
                return {"error": f"add consumer {queue}: {exc}"}
        return original(state, queue, exchange, exchange_type, routing_key, **options)

    add_consumer.__doc__ = original.__doc__
    add_consumer._sqs_ddb_checked = True  # type: ignore[attr-defined]
    Panel.data["add_consumer"] = add_consumer
