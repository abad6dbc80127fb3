"""The worker side: installed for one app when its worker builds its consumer.

``broker_settings()`` sets ``worker_consumer = "celery_sqs_ddb.worker:Consumer"``, Celery's
setting for the consumer class: that is how a worker with the two settings gets this package's
steps, with nothing done at import. :func:`install` adds, for that app:

- :class:`~.steps.SqsDdbStep`: the claim in front of each task's tracer (pool processes too, through
  ``worker_process_init``), deferred runs held (:mod:`.deferral`), dead letters, warm shutdown;
- :class:`~.steps.LifecycleStep`: health file, ECS scale-in protection, exit when idle;
- on ECS: hostname and pool size from the task metadata (:mod:`.ecs`), Celery's soft shutdown
  ended when the running tasks are done (:mod:`.drain`) within ``sqs_ddb_stop_timeout``;
- JSON logs where wanted (:mod:`.logs`) and the remote-control cleanup receivers (:mod:`.hooks`).
"""

from __future__ import annotations

from typing import Any

from celery.utils.log import get_logger
from celery.worker.consumer import Consumer as CeleryConsumer

from ..config import Settings
from . import drain, ecs, hooks, logs
from .steps import LifecycleStep, SqsDdbStep

logger = get_logger(__name__)

CONSUMER = "celery_sqs_ddb.worker:Consumer"


def uses_this_package(app: Any) -> bool:
    transport = str(app.conf.get("broker_transport") or "")
    backend = str(app.conf.get("result_backend") or "")
    return transport.startswith("celery_sqs_ddb") or backend.startswith("ddb://")


def install(app: Any, controller: Any = None) -> list[str]:
    """Add this package's consumer steps and receivers to ``app`` (idempotent); with the worker's
    ``controller``, also its ECS and drain adjustments. Returns notes to log once logging runs."""
    steps = app.steps["consumer"]
    for step in (SqsDdbStep, LifecycleStep):
        if step not in steps:
            steps.add(step)
    hooks.connect(app)
    if controller is None:
        return []
    settings = Settings.read(app.conf)
    notes = ecs.adjust_worker(controller, settings)
    if ecs.on_ecs():
        app.conf.worker_soft_shutdown_timeout = max(1.0, settings.stop_timeout - drain.MARGIN_SECONDS)
    controller.wait_for_soft_shutdown = lambda: drain.wait_for_running_tasks(controller)
    if logs.use_json_logs(app, settings):
        notes.append("JSON log lines (sqs_ddb_json_logs)")
    return notes


class Consumer(CeleryConsumer):
    """Celery's consumer, built after :func:`install` (``worker_consumer`` points here)."""

    def __init__(self, on_task_request: Any, *args: Any, **kwargs: Any) -> None:
        app, controller = kwargs.get("app"), kwargs.get("controller")
        notes = install(app, controller) if app is not None else []
        if controller is not None:
            kwargs["hostname"] = controller.hostname
            if not controller.autoscale:  # the pool may have been resized from the task's CPU
                kwargs["initial_prefetch_count"] = controller.concurrency * controller.prefetch_multiplier
        super().__init__(on_task_request, *args, **kwargs)
        for note in notes:
            logger.info(note)


def add_worker_options(app: Any) -> None:
    """``celery worker --exit-when-idle SECONDS`` (a worker option of this app)."""
    import click

    options = app.user_options["worker"]
    if not any("--exit-when-idle" in getattr(o, "opts", ()) for o in options):
        options.add(click.Option(
            ["--exit-when-idle"], type=float, default=None, metavar="SECONDS",
            help="Exit with status 0 once nothing ran and the queue stayed empty for SECONDS "
                 "(batch jobs; setting sqs_ddb_exit_when_idle)."))


__all__ = ["CONSUMER", "Consumer", "add_worker_options", "install", "uses_this_package"]
