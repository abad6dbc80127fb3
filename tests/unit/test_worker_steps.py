"""Warm shutdown gives back only what no pool process may be running, and its wait ends when the
running tasks are done (in-process moto)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import boto3
import pytest
from billiard.pool import ApplyResult
from celery import Celery
from moto import mock_aws

import celery_sqs_ddb
from celery_sqs_ddb.worker.steps import release_unstarted, running_ids

REGION = "eu-west-1"


@pytest.fixture
def queue():
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        yield sqs, sqs.create_queue(QueueName="jobs", Attributes={"VisibilityTimeout": "60"})["QueueUrl"]


def test_a_task_handed_to_the_prefork_pool_is_not_released_before_the_pool_says_it_started(queue):
    """The shutdown signal handler stops the event loop that reads a child's "started": the task
    handed over just before is running but not in Celery's active_requests. Releasing it made a
    second worker run it while this one did (the SIGTERM chaos test, s1 ran twice)."""
    sqs, url = queue
    app = Celery("t", set_as_current=False)
    app.conf.update(celery_sqs_ddb.broker_settings({"jobs": url}, region=REGION))

    @app.task(name="t.add", shared=False)
    def add(x, y):
        return x + y

    sent = [add.delay(i, i).id for i in range(2)]
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        held = [channel.basic_get("jobs", no_ack=False) for _ in sent]
        assert sorted(m.headers["id"] for m in held) == sorted(sent)
        handed, waiting = held
        jobs: dict = {}
        ApplyResult(jobs, None, correlation_id=handed.headers["id"])  # billiard's own bookkeeping
        consumer = SimpleNamespace(task_consumer=SimpleNamespace(channel=channel),
                                   pool=SimpleNamespace(_pool=SimpleNamespace(_cache=jobs)))

        assert running_ids(consumer) == {handed.headers["id"]}
        assert release_unstarted(consumer) == 1
        visible = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        assert [json.loads(m["Body"])["headers"]["id"] for m in visible] == [waiting.headers["id"]]
        assert [m.headers["id"] for m in channel.unacked().values()] == [handed.headers["id"]]
        # the step's stop releases again after the drain: a given-back receipt is not used twice
        assert release_unstarted(consumer) == 0


def test_drain_without_readable_pool_results_ends_when_the_table_shows_the_tasks_ready(ddb_app, caplog):
    """A pool whose results cannot be read in the signal handler (no prefork result pipes): a
    running task counts as done once the table shows it ready; one never written keeps the wait
    going to the end of the window."""
    from celery_sqs_ddb.worker.drain import PoolResults, wait_for_running_tasks

    jobs: dict = {}
    ApplyResult(jobs, None, correlation_id="done-task")
    ApplyResult(jobs, None, correlation_id="still-running")
    consumer = SimpleNamespace(task_consumer=None, pool=SimpleNamespace(_pool=SimpleNamespace(_cache=jobs)))
    worker = SimpleNamespace(app=ddb_app, consumer=consumer)
    assert PoolResults.of(consumer) is None
    ddb_app.conf.worker_soft_shutdown_timeout = 0.5
    ddb_app.backend.mark_as_done("done-task", 1)

    with caplog.at_level("INFO", logger="celery_sqs_ddb.worker.drain"):
        wait_for_running_tasks(worker)
    assert "passed; unfinished tasks are released" in caplog.text  # still-running held it open

    caplog.clear()
    del jobs[next(k for k, job in jobs.items() if job.correlation_id == "still-running")]
    ddb_app.conf.worker_soft_shutdown_timeout = 30
    with caplog.at_level("INFO", logger="celery_sqs_ddb.worker.drain"):
        wait_for_running_tasks(worker)
    assert "Soft shutdown: the running tasks finished" in caplog.text
