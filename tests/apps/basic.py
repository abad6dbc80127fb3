"""The Celery app the integration tests run: ordinary tasks, configured from TEST_* env vars."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import Celery
from celery.exceptions import Reject

import celery_sqs_ddb


def make_app() -> Celery:
    env = os.environ
    endpoint = env.get("TEST_ENDPOINT", "http://127.0.0.1:1")
    region = env.get("AWS_REGION", "eu-west-1")
    queue = env.get("TEST_QUEUE", "q-unset")
    app = Celery("basic", set_as_current=True)
    app.conf.update(celery_sqs_ddb.broker_settings(
        {queue: env.get("TEST_QUEUE_URL", f"{endpoint}/123456789012/{queue}")},
        region=region,
        endpoint_url=endpoint,
        visibility_timeout=int(env.get("TEST_VT", "30")),
        dead_letter_queue=env.get("TEST_DLQ_URL") or None,
        s3_bucket=env.get("TEST_BUCKET") or None,
        wait_time_seconds=int(env.get("TEST_WAIT", "1")),
    ))
    app.conf.result_backend = f"ddb://{env.get('TEST_TABLE', 'unset')}?region={region}&endpoint_url={endpoint}"
    app.conf.result_extended = True
    app.conf.worker_prefetch_multiplier = int(env.get("TEST_PREFETCH", "1"))
    if env.get("TEST_TRACK_STARTED"):
        app.conf.task_track_started = env["TEST_TRACK_STARTED"] == "1"
    if env.get("TEST_RESULT_EXPIRES"):
        app.conf.result_expires = int(env["TEST_RESULT_EXPIRES"])
    if env.get("TEST_TRANSPORT_OPTIONS"):
        import json

        extra = json.loads(env["TEST_TRANSPORT_OPTIONS"])
        options = app.conf.broker_transport_options
        options["sqs_ddb"] = {**options.get("sqs_ddb", {}), **extra.pop("sqs_ddb", {})}
        options.update(extra)
    register(app)
    celery_sqs_ddb.configure(app)  # the one documented line: adds --exit-when-idle
    return app


def record(key: str) -> None:
    """Append one line per execution to SIDE_EFFECTS (counts how often a task body ran)."""
    path = os.environ.get("SIDE_EFFECTS")
    if path:
        with open(path, "a") as fh:
            fh.write(f"{key} {os.getpid()} {time.time():.3f}\n")


def register(app: Celery) -> None:
    @app.task(shared=False, name="tests.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(shared=False, name="tests.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    @app.task(shared=False, name="tests.fail")
    def fail(message: str = "boom") -> None:
        raise ValueError(message)

    @app.task(shared=False, name="tests.effect")
    def effect(key: str, seconds: float = 0.0) -> str:
        started = time.time()
        if seconds:
            time.sleep(seconds)
        record(f"{key} start={started:.3f}")
        return key

    @app.task(shared=False, name="tests.timed")
    def timed(key: str, seconds: float) -> list[float]:
        start = time.time()
        time.sleep(seconds)
        end = time.time()
        record(key)
        return [start, end]

    @app.task(shared=False, bind=True, name="tests.retry_once", max_retries=3, default_retry_delay=0)
    def retry_once(self: Any, key: str) -> int:
        record(key)
        if self.request.retries < 1:
            raise self.retry(countdown=0)
        return self.request.retries

    @app.task(shared=False, bind=True, name="tests.progress")
    def progress(self: Any, steps: int, pause: float) -> int:
        for i in range(steps):
            self.update_state(state="PROGRESS", meta={"done": i + 1, "total": steps})
            time.sleep(pause)
        return steps

    @app.task(shared=False, name="tests.big_result")
    def big_result(size: int) -> str:
        return "x" * size

    @app.task(shared=False, name="tests.unserializable")
    def unserializable() -> Any:
        return object()

    @app.task(shared=False, name="tests.echo_len")
    def echo_len(data: str) -> int:
        return len(data)

    @app.task(shared=False, bind=True, name="tests.redelivered")
    def redelivered(self: Any, key: str) -> bool:
        record(key)
        if not self.request.delivery_info.get("redelivered"):
            raise Reject("try again", requeue=True)
        return True

    @app.task(shared=False, name="tests.slow_effect")
    def slow_effect(marker: str, key: str, seconds: float) -> str:
        Path(marker).write_text("started")
        time.sleep(seconds)
        record(key)  # the side effect: only if the task ran to the end
        return key

    @app.task(shared=False, name="tests.wait_for_file")
    def wait_for_file(marker: str, release: str, key: str) -> str:
        """Say it started (``marker``), then block until ``release`` exists."""
        Path(marker).write_text("started")
        while not Path(release).exists():
            time.sleep(0.05)
        record(key)
        return key

    @app.task(shared=False, bind=True, name="tests.replace_with")
    def replace_with(self: Any, depth: int, key: str) -> Any:
        """Replace itself ``depth`` times, then return the nesting levels seen (Celery's
        record_replaced_task_nesting)."""
        record(f"{key}-{self.request.replaced_task_nesting or 0}")
        if depth > 0:
            raise self.replace(replace_with.si(depth - 1, key))
        return self.request.replaced_task_nesting or 0

    @app.task(shared=False, ignore_result=True, name="tests.quiet")
    def quiet(key: str) -> None:
        record(key)

    @app.task(shared=False, bind=True, name="tests.retry_later", max_retries=3)
    def retry_later(self: Any, key: str, countdown: float = 5) -> int:
        record(f"{key}-{self.request.retries}")
        if self.request.retries < 1:
            raise self.retry(countdown=countdown)
        return self.request.retries

    @app.task(shared=False, name="tests.sleep_marker")
    def sleep_marker(marker: str, seconds: float) -> str:
        Path(marker).write_text("started")
        time.sleep(seconds)
        return "done"


app = make_app()
