"""Public helpers: the broker settings a deployment wants, listing and revoking jobs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from .exceptions import ConfigurationError

#: kombu's SQS options that belong to one queue's ``predefined_queues`` entry.
QUEUE_OPTIONS = ("backoff_policy", "backoff_tasks", "access_key_id", "secret_access_key", "session_token")


def broker_settings(
    queues: Iterable[str] | Mapping[str, str],
    *,
    fifo: bool | None = None,
    visibility_timeout: int = 60,
    dead_letter_queue: str | None = None,
    wait_time_seconds: int = 20,
    soft_shutdown_timeout: float = 100.0,
    prefetch_multiplier: int = 1,
    track_started: bool = True,
    queue_options: Mapping[str, Mapping[str, Any]] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Celery settings for SQS + this package in production, for ``app.conf.update(...)``.

    ``queues`` are queue names (each process resolves them to URLs once, with GetQueueUrl, when
    it first connects) or a mapping of name to URL; the first is the default queue. This function
    makes no AWS call. FIFO queues end in ``.fifo``; ``fifo=True`` checks that they all do.
    ``dead_letter_queue`` (name or URL) is where poison messages go. ``prefetch_multiplier`` stays 1
    for long tasks (a held message blocks no other worker); raise it for many short tasks so one
    ReceiveMessage returns up to 10. ``track_started`` is Celery's ``task_track_started``: STARTED
    rows, the "which jobs are running?" list (the claim writes them, no extra write).

    kombu's per-queue options (``backoff_policy``, ``backoff_tasks``, and the static
    ``access_key_id``/``secret_access_key``/``session_token`` kombu allows) go into each queue's
    ``predefined_queues`` entry: as keywords for every queue, or by queue in
    ``queue_options={"jobs": {"backoff_policy": {...}}}``. Static credentials, if given, are used
    by this package's own clients too (one identity); an IAM role is better.

    Any other keyword is a setting of this package by its name without the prefix
    (``region="eu-west-1"``, ``endpoint_url=...``, ``s3_bucket="b"``, ``remote_control=True``,
    ``claim="redelivery"``; see :mod:`celery_sqs_ddb.config`), written to
    ``broker_transport_options["sqs_ddb"]`` where the transport and the backend both read it; or a
    Celery setting (``task_routes=...``), which replaces the computed one.
    """
    from .config import SECTION, Settings, names, queue_credentials

    queue_names = list(queues.keys() if isinstance(queues, Mapping) else queues)
    if not queue_names:
        raise ConfigurationError("broker_settings(queues=...) needs at least one queue name")
    for name in queue_names:
        if fifo is True and not name.endswith(".fifo"):
            raise ConfigurationError(f"queue {name!r}: fifo=True but FIFO queue names end in '.fifo'")
        if fifo is False and name.endswith(".fifo"):
            raise ConfigurationError(f"queue {name!r} ends in '.fifo' but fifo=False")
    if not 0 <= int(visibility_timeout) <= 43_200:
        raise ConfigurationError(f"visibility_timeout={visibility_timeout!r} is out of range; accepted: 0..43200")
    if not 0 <= int(wait_time_seconds) <= 20:
        raise ConfigurationError(f"wait_time_seconds={wait_time_seconds!r} is out of range; accepted: 0..20")
    known = set(names())
    every_queue = {k: options.pop(k) for k in list(options) if k in QUEUE_OPTIONS}
    for name, extra in (queue_options or {}).items():
        if name not in queue_names:
            raise ConfigurationError(f"queue_options names queue {name!r}, which is not in queues={queue_names!r}")
        unknown = sorted(set(extra) - set(QUEUE_OPTIONS))
        if unknown:
            raise ConfigurationError(f"queue_options[{name!r}] has unknown key {unknown[0]!r}; accepted: "
                                     f"{', '.join(QUEUE_OPTIONS)}")
    section = {k: v for k, v in options.items() if k in known and v is not None}
    overrides = {k: v for k, v in options.items() if k not in known}
    settings = Settings.read(None, {SECTION: section})  # errors now, naming the argument

    urls = dict(queues) if isinstance(queues, Mapping) else {}
    predefined = {}
    for name in queue_names:
        # A name without a URL is resolved once per worker/client process by the transport.
        entry: dict[str, Any] = {"url": urls.get(name) or None}
        if dead_letter_queue:
            entry["dead_letter_url"] = dead_letter_queue
        entry.update(every_queue)
        entry.update((queue_options or {}).get(name) or {})
        predefined[name] = entry
    queue_credentials({"predefined_queues": predefined})  # one identity, or the error now
    transport_options: dict[str, Any] = {
        "predefined_queues": predefined,
        "visibility_timeout": int(visibility_timeout),
        "wait_time_seconds": int(wait_time_seconds),
        "polling_interval": 0,
        "sqs_base64_encoding": False,
        # one retry policy for every AWS call of the deployment (kombu's SQS client included)
        "client-config": {"retries": {"mode": settings.retry_mode, "total_max_attempts": settings.max_attempts}},
        SECTION: section,
    }
    if settings.region:
        transport_options["region"] = settings.region  # kombu's own SQS client
    if settings.sts_role_arn:
        transport_options["sts_role_arn"] = settings.sts_role_arn
    result: dict[str, Any] = {
        "broker_url": "sqs://",
        "broker_transport": "celery_sqs_ddb.transport:Transport",
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "worker_consumer": "celery_sqs_ddb.worker:Consumer",
        "task_default_queue": queue_names[0],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": bool(track_started),
        "worker_prefetch_multiplier": int(prefetch_multiplier),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "worker_soft_shutdown_timeout": float(soft_shutdown_timeout),
        "result_backend_always_retry": True,
        "result_backend_max_retries": 10,
    }
    if settings.events:
        result["worker_send_task_events"] = True
    result.update(overrides)
    return result


def configure(app: Any, **broker_kwargs: Any) -> Any:
    """Apply :func:`broker_settings` (if queues are given) and add ``celery worker --exit-when-idle
    SECONDS`` to ``app``'s worker command (the ``sqs_ddb_exit_when_idle`` setting works without it)."""
    from .worker import add_worker_options

    if broker_kwargs:
        app.conf.update(broker_settings(**broker_kwargs))
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
    """Write REVOKED for tasks that have not started; their messages are skipped when received.
    Returns how many were revoked (a running or finished task is left as it is)."""
    return _backend(app).revoke(task_ids)
