"""pytest plugin loaded into a run of celery's ``t/integration`` (``pytest -p tests.conformance.plugin``).

- Starts a fresh moto server (used directly, not through its counting proxy), creates the
  ``celery`` queue (+ DLQ) and the results table, and writes the app's settings, as a user would set them
  (:func:`celery_sqs_ddb.broker_settings` + ``ddb://``), to ``integration-tests-config.json`` in the
  sdist's root: the file celery's ``t/integration/conftest.py::celery_config`` reads its overrides from.
- Caps every test's pytest-timeout (celery marks its tests ``timeout(300)``) and marks the tests of
  :data:`tests.conformance.run.EXPECTED` as expected failures, with their reasons.
- Appends one JSON line per event (collected ids, test start, phase report) to ``$CONFORMANCE_EVENTS``,
  flushed at once, so the runner knows which test was running if the process has to be killed.
- Celery's test helper ``Manager.wait_until_idle`` (the ``manager`` fixture's teardown) purges the
  queue, then waits until the worker has no active task. SQS allows one PurgeQueue per queue per 60 s,
  so the purge fails with PurgeQueueInProgress on nearly every call and the wait for idle is skipped,
  and a test's leftover tasks run into the next test. The helper is replaced by the same steps with
  that one error tolerated (:func:`wait_until_idle`); nothing of celery or this package is patched.
- After a test timed out, or after a failed test when the session worker no longer runs a
  ``celery.ping`` task within :data:`HEALTH_TIMEOUT` s (a wedged pool), stops the session: the runner
  goes on with the remaining tests in a new process (fresh moto server, fresh worker), so one hung
  test or wedged worker cannot fail the tests after it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

REGION = "eu-west-1"
QUEUE = "celery"  #: celery's conftest fails any test whose app has another queue
DLQ = "celery-dlq"
TABLE = "celery-results"
TIMEOUT_MESSAGE = "from pytest-timeout"
HEALTH_TIMEOUT = 30.0


def celery_settings(endpoint: str, queue_url: str, dlq_url: str) -> dict[str, Any]:
    """The settings a user of this package writes: broker_settings() and a ddb:// result backend."""
    import celery_sqs_ddb

    conf = celery_sqs_ddb.broker_settings(
        {QUEUE: queue_url},
        region=REGION,
        endpoint_url=endpoint,
        dead_letter_queue=dlq_url,
        remote_control=True,  # celery inspect / control (test_inspect.py, revoke)
        # Celery's suite runs with Celery's default task_track_started=False (test_retry expects
        # PENDING -> RETRY); broker_settings() turns it on for the status index's running list.
        track_started=False,
    )
    conf["result_backend"] = f"ddb://{TABLE}?region={REGION}&endpoint_url={endpoint}"
    return conf


def create_resources(direct_url: str, endpoint: str) -> tuple[str, str]:
    """The queue, its DLQ and the table on the moto server; returns (queue URL, DLQ URL) via the proxy."""
    import boto3

    from celery_sqs_ddb import schema

    ddb = boto3.client("dynamodb", region_name=REGION, endpoint_url=direct_url)
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=direct_url)
    ddb.create_table(**schema.create_table_request(TABLE))
    ddb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={
        "Enabled": True, "AttributeName": schema.TTL_ATTRIBUTE})
    dlq_url = sqs.create_queue(QueueName=DLQ)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(QueueName=QUEUE, Attributes={
        "VisibilityTimeout": "60",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "10"}),
    })["QueueUrl"]
    return queue_url.replace(direct_url, endpoint), dlq_url.replace(direct_url, endpoint)


def wait_until_idle(self: Any) -> None:
    """Celery 5.7's ``ManagerMixin.wait_until_idle``, going on to the wait for idle when SQS refuses
    a second PurgeQueue within 60 s (the queue was purged less than a minute ago)."""
    from botocore.exceptions import ClientError
    from kombu.exceptions import ContentDisallowed

    control = self.app.control
    with self.app.connection() as connection:
        try:
            while control.purge(connection=connection):
                pass
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in PURGE_IN_PROGRESS:
                raise
        inspect = control.inspect()
        inspect.connection = connection
        while True:
            try:
                count = sum(len(t) for t in inspect.active().values())
            except ContentDisallowed:
                break
            if count == 0:
                break


PURGE_IN_PROGRESS = ("AWS.SimpleQueueService.PurgeQueueInProgress", "PurgeQueueInProgress")


class Recorder:
    def __init__(self, path: str | None) -> None:
        self.file = open(path, "a") if path else None  # noqa: SIM115

    def write(self, **event: Any) -> None:
        if self.file:
            self.file.write(json.dumps(dict(event, time=time.time())) + "\n")
            self.file.flush()


_state: dict[str, Any] = {}


def pytest_configure(config: pytest.Config) -> None:
    _state["recorder"] = Recorder(os.environ.get("CONFORMANCE_EVENTS"))
    if config.option.collectonly:
        return
    for key in list(os.environ):
        if key.startswith(("AWS_", "ECS_", "SQS_DDB_")):
            del os.environ[key]
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION=REGION,
                      AWS_DEFAULT_REGION=REGION, AWS_EC2_METADATA_DISABLED="true")
    from celery.contrib.testing.manager import ManagerMixin

    from tests.fakes.moto_server import MotoServer

    ManagerMixin.wait_until_idle = wait_until_idle

    server = MotoServer()
    _state["server"] = server
    # moto directly, not through the counting proxy: the proxy adds ~40 ms to every call (and its
    # threads run in this process, beside the worker), which no test here needs
    queue_url, dlq_url = create_resources(server.direct_url, server.direct_url)
    settings = celery_settings(server.direct_url, queue_url, dlq_url)
    (Path(config.rootpath) / "integration-tests-config.json").write_text(json.dumps(settings, indent=2))
    _state["recorder"].write(event="configured", settings=settings)


def pytest_unconfigure(config: pytest.Config) -> None:
    server = _state.pop("server", None)
    if server is not None:
        server.stop()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from tests.conformance.run import EXPECTED

    timeout = float(os.environ.get("CONFORMANCE_TIMEOUT", "120"))
    for item in items:
        # closest marker wins: this one is placed before celery's timeout(300)
        item.add_marker(pytest.mark.timeout(timeout, method="signal"), append=False)
        reason = EXPECTED.get(item.nodeid)
        if reason:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False), append=False)


def pytest_collection_finish(session: pytest.Session) -> None:
    _state["recorder"].write(event="collected", nodeids=[item.nodeid for item in session.items])


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:  # a file that cannot even be imported is a result too
        _state["recorder"].write(event="report", nodeid=report.nodeid, when="collect", outcome="failed",
                                 duration=0.0, longrepr=str(report.longrepr), skip_reason=None, wasxfail=None)


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    _state["recorder"].write(event="start", nodeid=nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    reason = None
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
    text = None
    if report.failed:
        text = str(report.longrepr)
    _state["recorder"].write(event="report", nodeid=report.nodeid, when=report.when, outcome=report.outcome,
                             duration=report.duration, longrepr=text, skip_reason=reason,
                             wasxfail=getattr(report, "wasxfail", None))
    if report.failed:
        _state.setdefault("failed", set()).add(report.nodeid)
    if report.failed and text and TIMEOUT_MESSAGE in text:
        _state["recorder"].write(event="restart", nodeid=report.nodeid, reason="the test timed out")
        _stop("conformance: a test timed out; the runner goes on in a new process")
    elif report.when == "teardown" and report.nodeid in _state.get("failed", ()) \
            and not getattr(_state.get("session"), "shouldstop", False) and not worker_healthy():
        reason = f"the worker ran no celery.ping within {HEALTH_TIMEOUT:.0f} s after this test failed"
        _state["recorder"].write(event="restart", nodeid=report.nodeid, reason=reason)
        _stop(f"conformance: {reason}; the runner goes on in a new process")


def pytest_sessionstart(session: pytest.Session) -> None:
    _state["session"] = session
    from celery.contrib.testing.worker import test_worker_started

    test_worker_started.connect(_worker_started, weak=False)


def _worker_started(sender: Any = None, **kwargs: Any) -> None:
    _state["session_app"] = sender


def worker_healthy() -> bool:
    """Whether the session worker still runs a task (``celery.ping``) within HEALTH_TIMEOUT s."""
    app = _state.get("session_app")
    if app is None:
        return True
    from celery.result import allow_join_result

    try:
        with allow_join_result():
            return app.send_task("celery.ping").get(timeout=HEALTH_TIMEOUT) == "pong"
    except Exception:  # noqa: BLE001 - any failure means the worker cannot be trusted
        return False


def _stop(reason: str) -> None:
    session = _state.get("session")
    if session is not None:
        session.shouldstop = reason


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    _state["recorder"].write(event="finish", nodeid=nodeid)
