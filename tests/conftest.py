"""Shared fixtures: clean AWS environment, one moto server subprocess (behind a counting proxy) for
integration tests, real celery workers. Helpers the tests import live in tests/support/."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.moto_server import ARTIFACTS, MotoServer
from tests.support.stack import REGION, Stack, Worker, make_client_app


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real AWS credentials or ECS variables leak into tests (as httpx's clean_environ)."""
    for key in list(os.environ):
        if key.startswith(("AWS_", "ECS_", "SQS_DDB_")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file ``tests.apps.basic`` tasks append one line to per execution (SIDE_EFFECTS)."""
    path = tmp_path / "effects.log"
    monkeypatch.setenv("SIDE_EFFECTS", str(path))
    return path


@pytest.fixture
def ddb_app() -> Iterator[Any]:
    """A Celery app whose result backend is a fresh ``jobs`` table on in-process moto (unit tests)."""
    import boto3
    from celery import Celery
    from moto import mock_aws

    from celery_sqs_ddb import schema

    with mock_aws():
        boto3.client("dynamodb", region_name=REGION).create_table(**schema.create_table_request("jobs"))
        app = Celery("unit", set_as_current=False)
        app.conf.result_backend = f"ddb://jobs?region={REGION}"
        yield app


# --------------------------------------------------------------------------- moto server


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    ARTIFACTS.mkdir(exist_ok=True)
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def stack_factory(moto_server: MotoServer) -> Callable[..., Stack]:
    def make(**kwargs: Any) -> Stack:
        return Stack(moto_server, **kwargs)

    return make


@pytest.fixture
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    return stack_factory()


# --------------------------------------------------------------------------- workers


@pytest.fixture
def workers() -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(env: dict[str, str], name: str | None = None, **kwargs: Any) -> Worker:
        worker = Worker(env, name or f"w{len(started) + 1}", **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
        try:
            os.killpg(worker.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def client_app(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The test app, configured for ``stack``, in this (client) process."""
    return make_client_app(stack, monkeypatch)
