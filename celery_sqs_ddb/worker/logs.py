"""JSON log lines for CloudWatch Logs Insights (``task_arn``, ``task_id``, ``task_name``, ``state``,
``duration``): ``sqs_ddb_json_logs`` (None: on ECS only).

Only formatters Celery itself set up are replaced: a worker whose logging the user configured
(a ``setup_logging`` receiver, ``worker_hijack_root_logger = False``, or handlers with formatters
of their own) keeps it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery.app.log import TaskFormatter
from celery.utils.log import ColorFormatter

from ..config import Settings
from . import ecs


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the ECS task and the Celery task it belongs to."""

    converter = time.gmtime  # type: ignore[assignment]

    def format(self, record: logging.LogRecord) -> str:
        from celery._state import get_current_task

        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        meta = ecs._metadata
        if meta is not None:
            entry.update(meta.fields())
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            if data.get("id"):
                entry["task_id"] = data["id"]
            if data.get("name"):
                entry["task_name"] = data["name"]
            if data.get("runtime") is not None:
                entry["duration"] = round(float(data["runtime"]), 6)
            entry["state"] = _state_of(record)
        task = get_current_task()
        if task is not None and "task_id" not in entry and task.request.id:
            entry["task_id"] = task.request.id
            entry["task_name"] = task.name
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _state_of(record: logging.LogRecord) -> str | None:
    from celery.app import trace

    mapping = {trace.LOG_SUCCESS: "SUCCESS", trace.LOG_FAILURE: "FAILURE", trace.LOG_RETRY: "RETRY",
               trace.LOG_INTERNAL_ERROR: "FAILURE", trace.LOG_IGNORED: "IGNORED", trace.LOG_REJECTED: "REJECTED",
               trace.LOG_RECEIVED: "RECEIVED"}
    return mapping.get(record.msg)


def wanted(settings: Settings) -> bool:
    return settings.json_logs if settings.json_logs is not None else ecs.on_ecs()


#: The formatter classes Celery's own logging setup installs.
CELERY_FORMATTERS = (ColorFormatter, TaskFormatter)


def use_json_logs(app: Any, settings: Settings) -> int:
    """Give every handler Celery set up a :class:`JsonFormatter`; returns how many were changed."""
    from celery import signals

    if not wanted(settings) or not app.conf.worker_hijack_root_logger or signals.setup_logging.receivers:
        return 0  # the user configures logging
    changed = 0
    loggers = [logging.getLogger(), logging.getLogger("celery.task")]
    for logger in loggers:
        for handler in logger.handlers:
            if type(handler.formatter) in CELERY_FORMATTERS or handler.formatter is None:
                handler.setFormatter(JsonFormatter())
                changed += 1
    return changed
