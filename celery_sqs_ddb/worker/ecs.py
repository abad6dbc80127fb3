"""What a worker knows about the ECS task it runs in, and ECS task scale-in protection.

Active only when ``ECS_CONTAINER_METADATA_URI_V4`` is set. The task metadata (fetched once)
names the worker (``celery@<task id>``, so the status index shows which task ran a job) and
sizes the pool (one process per vCPU of ``Limits.CPU``, unless ``-c``/``worker_concurrency``).
Scale-in protection (``PUT $ECS_AGENT_URI/task-protection/v1/state``, authorized as
``ecs:UpdateTaskProtection``) is on while any task runs and renewed, and off after
``sqs_ddb_idle_grace`` idle seconds; agent errors are logged and retried, never fatal.
"""

from __future__ import annotations

import json
import math
import os
import urllib.request
from typing import Any

from celery.utils.log import get_logger

from ..config import Settings

logger = get_logger(__name__)

METADATA_ENV = "ECS_CONTAINER_METADATA_URI_V4"
AGENT_ENV = "ECS_AGENT_URI"
PROTECTION_PATH = "/task-protection/v1/state"


def on_ecs() -> bool:
    return bool(os.environ.get(METADATA_ENV))


def http_json(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 3.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (ECS agent URL from env)
        return json.loads(response.read().decode() or "null")


class TaskMetadata:
    """What the task metadata endpoint v4 says about this task."""

    def __init__(self, task: dict[str, Any], container: dict[str, Any]) -> None:
        self.task_arn: str = task.get("TaskARN", "")
        self.task_id: str = self.task_arn.rsplit("/", 1)[-1]
        self.cluster: str = task.get("Cluster", "")
        self.availability_zone: str = task.get("AvailabilityZone", "")
        self.launch_type: str = task.get("LaunchType", "")
        limits = task.get("Limits") or {}
        self.cpu: float | None = limits.get("CPU")
        self.container_name: str = container.get("Name", "")

    @classmethod
    def fetch(cls) -> TaskMetadata:
        base = os.environ[METADATA_ENV].rstrip("/")
        return cls(http_json("GET", f"{base}/task"), http_json("GET", base))

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


def adjust_worker(controller: Any, settings: Settings) -> list[str]:
    """Before the pool starts: hostname and pool size from the task metadata; returns what changed.

    Celery has fixed both from ``-n``/``-c`` (or their defaults) when its consumer is built, so
    this changes the worker controller and its pool's start arguments, before any process forks.
    """
    meta = metadata()
    if meta is None:
        return []
    from celery.utils.nodenames import default_nodename

    notes = []
    pool = controller.pool
    if controller.hostname == default_nodename(None) and meta.task_id:
        controller.hostname = f"celery@{meta.task_id}"
        if "initargs" in getattr(pool, "options", {}):
            pool.options["initargs"] = (controller.app, controller.hostname)
        from celery.app import trace

        trace.setup_worker_optimizations(controller.app, controller.hostname)  # the name tasks run under
        notes.append(f"ECS task {meta.task_arn}: worker hostname {controller.hostname}")
    explicit = controller.options.get("concurrency") or controller.app.conf.worker_concurrency
    if not explicit and hasattr(pool, "limit") and not controller.autoscale:
        controller.concurrency = controller.min_concurrency = pool.limit = meta.concurrency()
        notes.append(f"ECS task CPU limit {meta.cpu} vCPU: concurrency {controller.concurrency} "
                     "(one process per vCPU)")
    return notes


class Protection:
    """ECS task scale-in protection: on while busy (renewed), off after ``idle_grace``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.agent = os.environ.get(AGENT_ENV) if on_ecs() else None
        self.protected_until = 0.0

    def tick(self, busy: bool, now: float, last_busy: float) -> None:
        if not self.agent:
            return
        expiry = self.settings.protection_minutes * 60
        renew = self.settings.protection_renew_seconds or expiry / 2
        if busy and now >= self.protected_until - expiry + renew:
            if self.set(True):
                self.protected_until = now + expiry
        elif not busy and self.protected_until and now - last_busy >= self.settings.idle_grace:
            if self.set(False):
                self.protected_until = 0.0

    def off(self) -> None:
        if self.agent and self.protected_until:
            self.set(False)

    def set(self, enabled: bool) -> bool:
        body: dict[str, Any] = {"ProtectionEnabled": enabled}
        if enabled:
            body["ExpiresInMinutes"] = self.settings.protection_minutes
        try:
            answer = http_json("PUT", f"{self.agent}{PROTECTION_PATH}", body)
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
