"""Fargate-aware worker: ECS metadata, CPU-sized concurrency, scale-in protection, drain,
exit-when-idle, a health file and JSON logs.

Active only when ``ECS_CONTAINER_METADATA_URI_V4`` is set (on ECS), except the health file,
``sqs_ddb_exit_when_idle`` and ``sqs_ddb_json_logs = True``, which work anywhere.

- Hostname: ``celery@<task id>`` unless ``-n`` was given, so the status index's ``worker``
  attribute names the Fargate task that ran each job.
- Concurrency: without ``-c``/``worker_concurrency``, one process per vCPU of the task's CPU
  limit (``Limits.CPU`` of the task metadata), at least 1.
- Scale-in protection: while any task runs, ``PUT $ECS_AGENT_URI/task-protection/v1/state``
  with ``ProtectionEnabled`` and ``ExpiresInMinutes`` (``sqs_ddb_protection_minutes``),
  renewed at half the expiry; removed after ``sqs_ddb_idle_grace`` idle seconds. Agent errors
  are logged and retried on the next tick; they never stop the worker.
- Drain: on ECS, ``worker_soft_shutdown_timeout`` is set to ``sqs_ddb_stop_timeout`` minus a
  15 s margin, so after SIGTERM (remapped to Celery's SIGQUIT soft shutdown by
  ``REMAP_SIGTERM=SIGQUIT``) running tasks finish or are cut off before ECS's SIGKILL, and
  every message not finished is made visible again at once (see ``worker.SqsDdbStep``). The
  wait ends when the running tasks are done (:func:`wait_for_running_tasks`), and an idle
  worker does not wait at all.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from celery import bootsteps, signals
from celery.utils.log import get_logger

from .config import Settings

logger = get_logger(__name__)

METADATA_ENV = "ECS_CONTAINER_METADATA_URI_V4"
AGENT_ENV = "ECS_AGENT_URI"
PROTECTION_PATH = "/task-protection/v1/state"  # ECS authorizes it as ecs:UpdateTaskProtection
DRAIN_MARGIN_SECONDS = 15


def on_ecs() -> bool:
    return bool(os.environ.get(METADATA_ENV))


def _http_json(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 3.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (ECS agent URL from env)
        text = response.read().decode() or "null"
        return json.loads(text)


class TaskMetadata:
    """What the task metadata endpoint v4 says about this task (fetched once)."""

    def __init__(self, task: dict[str, Any], container: dict[str, Any]) -> None:
        self.task_arn: str = task.get("TaskARN", "")
        self.task_id: str = self.task_arn.rsplit("/", 1)[-1]
        self.cluster: str = task.get("Cluster", "")
        self.availability_zone: str = task.get("AvailabilityZone", "")
        self.launch_type: str = task.get("LaunchType", "")
        limits = task.get("Limits") or {}
        self.cpu: float | None = limits.get("CPU")
        self.memory: int | None = limits.get("Memory")
        self.container_name: str = container.get("Name", "")

    @classmethod
    def fetch(cls) -> TaskMetadata:
        base = os.environ[METADATA_ENV].rstrip("/")
        return cls(_http_json("GET", f"{base}/task"), _http_json("GET", base))

    def concurrency(self) -> int:
        """One worker process per vCPU of the task's CPU limit, at least one."""
        return max(1, math.floor(self.cpu or 1))

    def fields(self) -> dict[str, Any]:
        return {"task_arn": self.task_arn, "cluster": self.cluster, "availability_zone": self.availability_zone,
                "launch_type": self.launch_type}


_metadata: TaskMetadata | None = None


def metadata() -> TaskMetadata | None:
    """This task's metadata on ECS (None elsewhere or when the endpoint fails)."""
    global _metadata
    if _metadata is None and on_ecs():
        try:
            _metadata = TaskMetadata.fetch()
        except (OSError, ValueError) as exc:
            logger.warning("Could not read ECS task metadata from %s: %s", os.environ.get(METADATA_ENV), exc)
            return None
    return _metadata


# --------------------------------------------------------------------------- worker setup


#: Decisions taken before logging is set up; logged when the consumer starts.
_notes: list[str] = []


def wait_for_running_tasks(worker: Any) -> None:
    """Celery's soft shutdown, ended as soon as the running tasks are done.

    Celery sleeps the whole ``worker_soft_shutdown_timeout`` once a task runs, even if it ends a
    second later: its event loop, which would notice, is stopped in the signal handler. The pool
    processes write each result to the table, so here the wait ends once every running task is
    in a ready state there (SUCCESS, FAILURE, REVOKED), or at the end of the window. A task that
    stores no result (``ignore_result``) keeps Celery's behaviour: the whole window.
    """
    from celery import states as celery_states
    from celery.worker import state

    from .backend import DynamoDBBackend, backoff_intervals

    timeout = float(worker.app.conf.worker_soft_shutdown_timeout or 0)
    ids = [request.id for request in list(state.active_requests)]
    if timeout <= 0 or not ids:
        return
    logger.warning("Soft shutdown: waiting up to %.0f s for %d running task(s)", timeout, len(ids))
    backend = worker.app.backend
    deadline = time.monotonic() + timeout
    pauses = backoff_intervals(0.1, 1.5, 1.0)
    while (remaining := deadline - time.monotonic()) > 0:
        if isinstance(backend, DynamoDBBackend):
            try:
                items = backend.batch_get(ids)
            except Exception as exc:  # the table unreachable: keep waiting, as Celery would
                logger.warning("Soft shutdown: could not read the running tasks' states (%s)", exc)
            else:
                if all((items.get(i) or {}).get("status") in celery_states.READY_STATES for i in ids):
                    logger.info("Soft shutdown: the running tasks finished")
                    return
        time.sleep(min(next(pauses), remaining))
    logger.warning("Soft shutdown: %.0f s passed; unfinished tasks are released for another worker", timeout)


@signals.celeryd_init.connect(weak=False)
def _on_celeryd_init(sender: str | None = None, instance: Any = None, conf: Any = None,
                     options: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """Before the worker reads its settings: hostname, concurrency and drain timeout from ECS."""
    from .worker import uses_this_package

    if instance is None or not uses_this_package(instance.app):
        return
    settings = Settings.from_app(instance.app)
    _setup_json_logs(settings)
    instance.wait_for_soft_shutdown = lambda: wait_for_running_tasks(instance)
    meta = metadata()
    if meta is None:
        return
    from celery.utils.nodenames import default_nodename

    if instance.hostname == default_nodename(None) and meta.task_id:
        instance.hostname = f"celery@{meta.task_id}"
        _notes.append(f"ECS task {meta.task_arn}: worker hostname {instance.hostname}")
    if not (options or {}).get("concurrency") and not conf.get("worker_concurrency"):
        conf.worker_concurrency = meta.concurrency()
        _notes.append(f"ECS task CPU limit {meta.cpu} vCPU: concurrency {conf.worker_concurrency} "
                      "(one process per vCPU)")
    conf.worker_soft_shutdown_timeout = max(1.0, settings.stop_timeout - DRAIN_MARGIN_SECONDS)


class FargateStep(bootsteps.StartStopStep):
    """Consumer step: scale-in protection, exit-when-idle and the health file."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, exit_when_idle: float | None = None, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.settings = Settings.from_app(c.app)
        self.exit_when_idle = exit_when_idle if exit_when_idle is not None else self.settings.exit_when_idle
        self.agent = os.environ.get(AGENT_ENV) if on_ecs() else None
        self.protected_until = 0.0
        self.last_busy = time.monotonic()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.health_tref: Any = None
        while _notes:
            logger.info(_notes.pop(0))

    # health file: touched from the event loop, so a hung loop makes it stale

    def start(self, c: Any) -> None:
        self.last_busy = time.monotonic()
        self._touch()
        self.health_tref = c.timer.call_repeatedly(self.settings.health_interval, self._touch)
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="sqs-ddb-fargate", daemon=True)
            self.thread.start()

    def _touch(self) -> None:
        path = Path(self.settings.health_file)
        try:
            path.touch()
        except OSError as exc:
            logger.warning("Could not touch health file %s: %s", path, exc)

    def stop(self, c: Any) -> None:
        if self.health_tref is not None:
            self.health_tref.cancel()
            self.health_tref = None
        try:
            Path(self.settings.health_file).unlink()
        except FileNotFoundError:
            pass

    def shutdown(self, c: Any) -> None:
        self.stop(c)
        self.stopping.set()
        if self.protected_until:
            self._protect(False)

    # protection and idleness: a thread, so a busy event loop cannot delay them

    def _busy(self) -> bool:
        from celery.worker import state

        return bool(state.active_requests or state.reserved_requests)

    def _run(self) -> None:
        tick = 1.0
        while not self.stopping.wait(tick):
            now = time.monotonic()
            busy = self._busy()
            if busy:
                self.last_busy = now
            if self.agent:
                self._protection_tick(busy, now)
            if self.exit_when_idle is not None and not busy and now - self.last_busy >= self.exit_when_idle:
                from celery.worker import state

                logger.info("Idle for %.0f s (exit when idle): stopping the worker", now - self.last_busy)
                state.should_stop = 0  # the consumer loop raises WorkerShutdown(0): exit status 0
                return

    def _protection_tick(self, busy: bool, now: float) -> None:
        expiry = self.settings.protection_minutes * 60
        renew = self.settings.protection_renew_seconds or expiry / 2
        if busy and now >= self.protected_until - expiry + renew:
            if self._protect(True):
                self.protected_until = now + expiry
        elif not busy and self.protected_until and now - self.last_busy >= self.settings.idle_grace:
            if self._protect(False):
                self.protected_until = 0.0

    def _protect(self, enabled: bool) -> bool:
        body: dict[str, Any] = {"ProtectionEnabled": enabled}
        if enabled:
            body["ExpiresInMinutes"] = self.settings.protection_minutes
        try:
            answer = _http_json("PUT", f"{self.agent}{PROTECTION_PATH}", body)
        except (OSError, ValueError) as exc:
            logger.warning("ECS task scale-in protection %s failed (%s); retrying in a second",
                           "on" if enabled else "off", exc)
            return False
        if isinstance(answer, dict) and answer.get("failure"):
            logger.warning("ECS agent refused scale-in protection %s: %s", "on" if enabled else "off",
                           answer["failure"])
            return False
        logger.info("ECS task scale-in protection %s%s", "on" if enabled else "off",
                    f" for {self.settings.protection_minutes} min" if enabled else "")
        return True


# --------------------------------------------------------------------------- JSON logs


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the ECS task and the Celery task it belongs to."""

    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        from celery._state import get_current_task

        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        meta = _metadata
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


def _json_logs_wanted(settings: Settings) -> bool:
    return settings.json_logs if settings.json_logs is not None else on_ecs()


_json_settings: Settings | None = None


def _setup_json_logs(settings: Settings) -> None:
    global _json_settings
    if _json_logs_wanted(settings):
        _json_settings = settings


@signals.after_setup_logger.connect(weak=False)
@signals.after_setup_task_logger.connect(weak=False)
def _on_setup_logger(logger: logging.Logger | None = None, **kwargs: Any) -> None:
    if _json_settings is None or logger is None:
        return
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())


def healthy(settings: Settings, now: float | None = None) -> tuple[bool, str]:
    """Whether the health file is fresh (touched within 6 intervals)."""
    path = Path(settings.health_file)
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except FileNotFoundError:
        return False, f"{path} does not exist: the worker's consumer is not running"
    limit = settings.health_interval * 6
    if age > limit:
        return False, f"{path} is {age:.0f} s old (limit {limit:.0f} s): the consumer loop is stuck"
    return True, f"{path} touched {age:.1f} s ago"
