"""Public helpers: the broker settings a deployment wants, listing and revoking jobs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from .exceptions import ConfigurationError


def broker_settings(
    queues: Iterable[str] | Mapping[str, str],
    *,
    fifo: bool | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
    visibility_timeout: int = 60,
    dead_letter_queue: str | None = None,
    s3_bucket: str | None = None,
    wait_time_seconds: int = 20,
    soft_shutdown_timeout: float = 100.0,
    prefetch_multiplier: int = 1,
    retry_attempts: int = 8,
    remote_control: bool | None = None,
    events: bool | None = None,
    control_topic_arn: str | None = None,
    events_topic_arn: str | None = None,
    control_namespace: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Celery settings for SQS in production, for ``app.conf.update(...)``.

    ``queues`` are queue names (each process resolves them to URLs once, with GetQueueUrl, when
    it first connects) or a mapping of name to URL. This function makes no AWS call. The first
    queue is the default queue. FIFO queues end in
    ``.fifo``; ``fifo=True`` checks that they all do. ``dead_letter_queue`` (name or URL) is
    where poison messages go. ``s3_bucket`` enables the claim-check for large messages and
    results. ``prefetch_multiplier`` stays 1 for long tasks (a held message blocks no other
    worker); raise it for many short tasks so one ReceiveMessage returns up to 10.
    ``retry_attempts`` is botocore's attempts per SQS call (standard retry mode).
    ``remote_control=True`` makes ``celery inspect``/``control`` and broadcast revoke work through
    SNS (one SQS queue per worker); ``events=True`` sends task events (``celery events``, Flower)
    the same way and turns on ``worker_send_task_events``. In production pass the topics Terraform
    made (``control_topic_arn``, ``events_topic_arn``); without them the topics are created by name
    (``<control_namespace>-control``/``-events``, namespace = first queue name). Unset, these
    follow the ``sqs_ddb_*`` settings and ``SQS_DDB_*`` environment. Keys given in ``overrides``
    replace the computed ones.
    """
    names = list(queues.keys() if isinstance(queues, Mapping) else queues)
    if not names:
        raise ConfigurationError("broker_settings(queues=...) needs at least one queue name")
    for name in names:
        if fifo is True and not name.endswith(".fifo"):
            raise ConfigurationError(f"queue {name!r}: fifo=True but FIFO queue names end in '.fifo'")
        if fifo is False and name.endswith(".fifo"):
            raise ConfigurationError(f"queue {name!r} ends in '.fifo' but fifo=False")
    if not 0 <= int(visibility_timeout) <= 43_200:
        raise ConfigurationError(f"visibility_timeout={visibility_timeout!r} is out of range; accepted: 0..43200")
    if not 0 <= int(wait_time_seconds) <= 20:
        raise ConfigurationError(f"wait_time_seconds={wait_time_seconds!r} is out of range; accepted: 0..20")

    urls = dict(queues) if isinstance(queues, Mapping) else {}
    predefined = {}
    for name in names:
        # A name without a URL is resolved once per worker/client process by the transport
        # (GetQueueUrl), not here: importing settings makes no AWS call.
        entry: dict[str, Any] = {"url": urls.get(name) or None}
        if dead_letter_queue:
            entry["dead_letter_url"] = dead_letter_queue
        predefined[name] = entry

    transport_options: dict[str, Any] = {
        "predefined_queues": predefined,
        "visibility_timeout": int(visibility_timeout),
        "wait_time_seconds": int(wait_time_seconds),
        "polling_interval": 0,
        "sqs_base64_encoding": False,
        # botocore's standard retry mode (throttling, 5xx, connection errors) for every SQS call
        "client-config": {"retries": {"mode": "standard", "total_max_attempts": int(retry_attempts)}},
    }
    if region:
        transport_options["region"] = region
    if endpoint_url:
        transport_options["endpoint_url"] = endpoint_url
    if s3_bucket:
        transport_options["s3_bucket"] = s3_bucket
    control = {"remote_control": remote_control, "events": events, "control_topic_arn": control_topic_arn,
               "events_topic_arn": events_topic_arn, "control_namespace": control_namespace}
    control = {key: value for key, value in control.items() if value is not None}
    if control:
        from .config import Settings
        from .control import ControlOptions

        ControlOptions.resolve({"remote_control": control}, Settings())  # errors now, naming the argument
        transport_options["remote_control"] = control
    settings: dict[str, Any] = {
        "broker_url": "sqs://",
        "broker_transport": "celery_sqs_ddb.transport:Transport",
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": names[0],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": int(prefetch_multiplier),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "worker_soft_shutdown_timeout": float(soft_shutdown_timeout),
        "result_backend_always_retry": True,
        "result_backend_max_retries": 10,
    }
    if region:
        settings["sqs_ddb_region"] = region
    if endpoint_url:
        settings["sqs_ddb_endpoint_url"] = endpoint_url
    if s3_bucket:
        settings["sqs_ddb_s3_bucket"] = s3_bucket
    if events:
        settings["worker_send_task_events"] = True
    settings.update(overrides)
    return settings


def configure(app: Any, **broker_kwargs: Any) -> Any:
    """Apply :func:`broker_settings` (if queues are given), install the worker steps now and
    add ``celery worker --exit-when-idle SECONDS``.

    The steps are also installed automatically when a worker starts with this package's
    backend or transport; this call is needed only for the ``--exit-when-idle`` flag (the
    ``sqs_ddb_exit_when_idle`` setting works without it).
    """
    from .worker import add_worker_options, install

    if broker_kwargs:
        app.conf.update(broker_settings(**broker_kwargs))
    install(app)
    add_worker_options(app)
    return app


def _backend(app: Any) -> Any:
    from .backend import DynamoDBBackend

    backend = app.backend
    if not isinstance(backend, DynamoDBBackend):
        raise ConfigurationError(
            f"result_backend is {app.conf.result_backend!r}; listing and revoke need result_backend = 'ddb://TABLE'")
    return backend


def jobs(app: Any, status: str = "STARTED", *, since: datetime | str | None = None, limit: int = 50,
         cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Jobs in a state from the status index, newest first: ``(jobs, next_cursor)``."""
    return _backend(app).list_jobs(status, since=since, limit=limit, cursor=cursor)


def revoke(app: Any, task_ids: str | Iterable[str]) -> int:
    """Write REVOKED for tasks not yet finished; their messages are skipped when received."""
    return _backend(app).revoke(task_ids)
