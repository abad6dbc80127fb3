"""The claim wrapper around Celery's real tracer (in-process moto): a result write that fails for
our reasons is written again, and the task body does not run twice."""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError
from celery.app.trace import build_tracer

from celery_sqs_ddb import schema
from celery_sqs_ddb.exceptions import ClaimDeferred
from celery_sqs_ddb.worker import claim as claim_module
from celery_sqs_ddb.worker.claim import Claimer

# Celery's tracer reports the failed write as an internal error (a RuntimeWarning), as in a worker.
pytestmark = pytest.mark.filterwarnings("ignore:Exception raised outside body:RuntimeWarning")


@pytest.fixture
def app(ddb_app):
    ddb_app.conf.task_track_started = True
    return ddb_app


def run_once(app, failures: int, monkeypatch):
    """Run a task whose SUCCESS write fails ``failures`` times with AccessDenied."""
    ran = []

    @app.task(name="tests.once", shared=False)
    def once():
        ran.append(1)
        return 42

    backend = app.backend
    real_update = backend.table.update
    left = {"n": failures}

    def update(task_id, sets, *args, **kwargs):
        if sets.get(schema.STATUS) == "SUCCESS" and left["n"] > 0:
            left["n"] -= 1
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}},
                              "UpdateItem")
        return real_update(task_id, sets, *args, **kwargs)

    monkeypatch.setattr(backend.table, "update", update)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    app.conf.result_backend_max_retries = 0
    trace = build_tracer(once.name, once, app=app, eager=False, propagate=False)
    request = {"id": "t-1", "hostname": "w@h", "delivery_info": {"routing_key": "q"}, "sqs_message_id": "m1",
               "sqs_receive_count": 1}
    outcome = Claimer(backend).run(once, trace, "t-1", (), {}, request)
    return ran, outcome, backend


def test_a_failed_result_write_is_written_again_and_the_body_runs_once(app, monkeypatch):
    ran, outcome, backend = run_once(app, failures=3, monkeypatch=monkeypatch)
    assert ran == [1]  # the body ran once
    assert outcome.retval == 42 and outcome.info is None  # the worker acks it as a success
    assert backend.table.get("t-1", consistent=True)[schema.STATUS] == "SUCCESS"


def test_past_the_rewrite_budget_the_run_is_deferred(app, monkeypatch):
    monkeypatch.setattr(claim_module, "REWRITE_BUDGET", 0.0)
    ran, outcome, backend = run_once(app, failures=100, monkeypatch=monkeypatch)
    assert ran == [1]
    assert isinstance(outcome.info.retval, ClaimDeferred) and "not authorized" in str(outcome.info.retval)
    assert backend.table.get("t-1", consistent=True)[schema.STATUS] == "STARTED"  # not lost: redelivered later
