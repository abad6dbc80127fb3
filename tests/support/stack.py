"""A moto-backed deployment for one test: table, queue + DLQ, bucket; the test app configured for it;
real ``celery`` subprocesses (workers and the CLI)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from celery_sqs_ddb import schema
from celery_sqs_ddb.table import item_to_python
from tests.fakes.moto_server import ARTIFACTS, MotoServer
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
REGION = "eu-west-1"


class Stack:
    """One table, one queue (+ DLQ) and one bucket, with unique names, on the moto server."""

    def __init__(self, server: MotoServer, fifo: bool = False, visibility_timeout: int = 30,
                 bucket: bool = True, max_receive_count: int = 4) -> None:
        self.server = server
        self.endpoint = server.url
        suffix = uuid.uuid4().hex[:8]
        self.table = f"results-{suffix}"
        ext = ".fifo" if fifo else ""
        self.queue = f"q-{suffix}{ext}"
        self.dlq = f"dlq-{suffix}{ext}"
        self.bucket = f"payloads-{suffix}" if bucket else None
        self.visibility_timeout = visibility_timeout
        self.ddb = boto3.client("dynamodb", region_name=REGION, endpoint_url=server.direct_url)
        self.sqs = boto3.client("sqs", region_name=REGION, endpoint_url=server.direct_url)
        self.s3 = boto3.client("s3", region_name=REGION, endpoint_url=server.direct_url)
        self.ddb.create_table(**schema.create_table_request(self.table))
        self.ddb.update_time_to_live(TableName=self.table, TimeToLiveSpecification={
            "Enabled": True, "AttributeName": schema.TTL_ATTRIBUTE})
        base = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if fifo else {}
        self.dlq_url = self.sqs.create_queue(QueueName=self.dlq, Attributes=base)["QueueUrl"]
        dlq_arn = self.sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        self.queue_url = self.sqs.create_queue(QueueName=self.queue, Attributes=dict(
            base, VisibilityTimeout=str(visibility_timeout),
            RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}),
        ))["QueueUrl"]
        if self.bucket:
            self.s3.create_bucket(Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": REGION})

    def env(self, **extra: Any) -> dict[str, str]:
        env = {
            "TEST_ENDPOINT": self.endpoint,
            "TEST_TABLE": self.table,
            "TEST_QUEUE": self.queue,
            "TEST_QUEUE_URL": self.queue_url.replace(self.server.direct_url, self.endpoint),
            "TEST_DLQ_URL": self.dlq_url.replace(self.server.direct_url, self.endpoint),
            "TEST_VT": str(self.visibility_timeout),
        }
        if self.bucket:
            env["TEST_BUCKET"] = self.bucket
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def item(self, task_id: str) -> dict[str, Any] | None:
        found = self.ddb.get_item(TableName=self.table, Key={"task_id": {"S": task_id}}, ConsistentRead=True)
        return item_to_python(found["Item"]) if "Item" in found else None

    def dlq_messages(self, wait: float = 1) -> list[dict[str, Any]]:
        return self.sqs.receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=int(wait),
                                        MessageAttributeNames=["All"]).get("Messages", [])


class Worker:
    """A real ``celery -A tests.apps.basic worker`` subprocess with its own log file."""

    def __init__(self, env: dict[str, str], name: str, concurrency: int = 2, extra_args: tuple[str, ...] = (),
                 app: str = "tests.apps.basic", set_name: bool = True) -> None:
        self.name = name
        self.log_path = ARTIFACTS / f"worker-{name}-{uuid.uuid4().hex[:6]}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **{k: str(v) for k, v in env.items()}}
        args = [sys.executable, "-m", "celery", "-A", app, "worker", "-l", "info"]
        if concurrency:  # 0: no -c, let the worker decide (e.g. from the ECS task's CPU)
            args += ["-c", str(concurrency)]
        if set_name:
            args += ["-n", f"{name}@%h"]
        self.process = subprocess.Popen(
            [*args, "--without-heartbeat", "--without-gossip", "--without-mingle", *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT, env=full_env, cwd=str(ROOT),
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 60) -> Worker:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"worker {self.name} exited {self.process.returncode}:\n{self.output()}")
            return " ready." in self.output()

        wait_until(ready, timeout, f"worker {self.name} ready:\n{self.output()[-3000:]}")
        return self

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig) if sig == signal.SIGKILL else self.process.send_signal(sig)

    def stop(self, timeout: float = 30) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.log.close()
        return self.process.returncode


def celery_command(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``celery -A tests.apps.basic ARGS`` as a subprocess with ``env`` (the real CLI)."""
    return subprocess.run([sys.executable, "-m", "celery", "-A", "tests.apps.basic", *args],
                          env=dict(os.environ, PYTHONPATH=str(ROOT), **env), cwd=str(ROOT),
                          capture_output=True, text=True, timeout=timeout)


def effects_of(path: Path, key: str) -> list[str]:
    """The side-effect lines ``key`` recorded: lines equal to it or starting with ``key + " "``."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [x for x in lines if x == key or x.startswith(key + " ")]


def make_client_app(stack: Stack, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> Any:
    """The test app (``tests.apps.basic``) configured for ``stack`` in this (client) process."""
    for key, value in stack.env(**extra).items():
        monkeypatch.setenv(key, value)
    from tests.apps.basic import make_app

    return make_app()
