"""Chaos and bad input: throttling/5xx on a seeded fraction of AWS calls, kill -9 of workers,
SIGTERM during long tasks, deleted resources and wrong credentials. Nothing may be lost.

Small sizes run in `make test`; `make chaos` runs CHAOS_TASKS=300 and prints the report
table (tasks, faults injected, completed, lost, duplicated) from test-artifacts/chaos.json.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from celery_sqs_ddb import submit_many
from celery_sqs_ddb.exceptions import AccessDenied
from tests.fakes.moto_server import ARTIFACTS
from tests.support.stack import make_client_app
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

TASKS = int(os.environ.get("CHAOS_TASKS", "40"))
REPORT = ARTIFACTS / "chaos.json"


def report(scenario: str, tasks: int, faults: int, completed: int, lost: int, duplicated: int) -> None:
    rows = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    rows[scenario] = {"tasks": tasks, "faults injected": faults, "completed": completed, "lost": lost,
                      "duplicated": duplicated}
    REPORT.write_text(json.dumps(rows, indent=2))


def executions(path: Path) -> Counter[str]:
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(line.split()[0] for line in lines)



@pytest.fixture
def faults(moto_server):
    yield moto_server
    moto_server.faults(0)


def test_ten_percent_throttling_and_5xx_lose_nothing(stack_factory, workers, monkeypatch, effects, faults):
    stack = stack_factory(visibility_timeout=20)
    app = make_client_app(stack, monkeypatch)
    for name in ("a", "b"):
        workers(stack.env(SIDE_EFFECTS=effects), name=name, concurrency=2).wait_ready()
    faults.reset_counts()
    faults.faults(0.10, seed=7)
    group = submit_many(app.tasks["tests.effect"], [(f"t{i}",) for i in range(TASKS)], progress=False)
    values = group.join(timeout=300)
    injected = json.loads(__import__("urllib.request").request.urlopen(f"{faults.url}/__counts").read())["faults"]
    faults.faults(0)
    assert values == [f"t{i}" for i in range(TASKS)]  # every task completed with its own result
    runs = executions(effects)
    duplicated = sum(n - 1 for n in runs.values() if n > 1)
    lost = TASKS - len(runs)
    assert injected >= 10  # faults really happened
    assert lost == 0
    assert duplicated == 0, runs.most_common(3)  # no task ran (and finished) twice
    for r in group.results:
        assert stack.item(r.id)["status"] == "SUCCESS"
    report("10% throttling/5xx", TASKS, injected, len(runs), lost, duplicated)


def test_kill_9_at_random_points_then_restart(stack_factory, workers, monkeypatch, effects):
    stack = stack_factory(visibility_timeout=3)
    app = make_client_app(stack, monkeypatch)
    env = stack.env(SIDE_EFFECTS=effects)
    group = submit_many(app.tasks["tests.effect"], [(f"k{i}", 0.05) for i in range(TASKS)], progress=False)
    rng = random.Random(11)
    kills = 0
    victim = workers(env, name="victim0", concurrency=2).wait_ready()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(executions(effects)) < TASKS * 0.7 and kills < 4:
        time.sleep(rng.uniform(0.3, 1.5))
        victim.signal(signal.SIGKILL)
        victim.process.wait(10)
        kills += 1
        victim = workers(env, name=f"victim{kills}", concurrency=2).wait_ready()
    values = group.join(timeout=300)
    assert values == [f"k{i}" for i in range(TASKS)]
    runs = executions(effects)
    lost = TASKS - len(runs)
    duplicated = sum(n - 1 for n in runs.values() if n > 1)
    assert kills >= 1 and lost == 0
    # At-least-once: a kill between a task's side effect and its SUCCESS write (a few ms) may
    # repeat that one task; the claim write stops every other redelivery from running again.
    assert duplicated <= kills, runs.most_common(3)
    report("kill -9 and restart", TASKS, kills, len(runs), lost, duplicated)


def test_sigterm_during_long_tasks_releases_and_finishes_elsewhere(stack_factory, workers, monkeypatch, effects):
    stack = stack_factory(visibility_timeout=60)
    app = make_client_app(stack, monkeypatch)
    env = stack.env(SIDE_EFFECTS=effects, REMAP_SIGTERM="SIGQUIT", SQS_DDB_STOP_TIMEOUT=18)
    first = workers(env, name="first", concurrency=2).wait_ready()
    results = [app.tasks["tests.effect"].delay(f"s{i}", 8) for i in range(4)]
    wait_until(lambda: first.output().count("Task tests.effect[") >= 2, 30, "two long tasks running")
    first.signal(signal.SIGTERM)
    workers(env, name="second", concurrency=2).wait_ready()
    assert [r.get(timeout=120) for r in results] == [f"s{i}" for i in range(4)]
    # it exits once its running tasks are done, not after the whole 100 s soft-shutdown window
    assert first.process.wait(40) is not None
    assert "Soft shutdown: the running tasks finished" in first.output()
    runs = executions(effects)
    assert all(runs[f"s{i}"] == 1 for i in range(4)), runs
    report("SIGTERM during long tasks", 4, 1, len(runs), 4 - len(runs), sum(n - 1 for n in runs.values()))


def test_sigterm_drain_ends_when_ignore_result_tasks_finish_and_acks_them(stack_factory, workers, monkeypatch,
                                                                          effects):
    """ignore_result tasks write nothing to the table: the drain learns they finished from the
    pool itself, acks them and exits, instead of waiting out the 100 s window and handing their
    messages to another worker."""
    stack = stack_factory(visibility_timeout=60)
    app = make_client_app(stack, monkeypatch)
    env = stack.env(SIDE_EFFECTS=effects, REMAP_SIGTERM="SIGQUIT")
    first = workers(env, name="first", concurrency=2).wait_ready()
    for i in range(2):
        app.tasks["tests.effect"].apply_async((f"quiet{i}", 4), ignore_result=True)
    wait_until(lambda: first.output().count("Task tests.effect[") >= 2, 30, "two long tasks running")
    first.signal(signal.SIGTERM)
    second = workers(env, name="second", concurrency=1).wait_ready()
    assert first.process.wait(40) is not None  # not after worker_soft_shutdown_timeout (100 s)
    assert "Soft shutdown: the running tasks finished" in first.output()
    attributes = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
    time.sleep(2)  # the second worker had the chance to receive a released message
    runs = executions(effects)
    assert runs == Counter({"quiet0": 1, "quiet1": 1}), runs
    assert "Task tests.effect[" not in second.output()


def test_deleted_table_mid_run_is_a_clear_error_and_loses_nothing(stack, client_app, workers, effects):
    from celery_sqs_ddb import schema

    worker = workers(stack.env(SIDE_EFFECTS=effects), concurrency=1).wait_ready()
    assert client_app.tasks["tests.add"].delay(1, 1).get(timeout=30) == 2
    stack.ddb.delete_table(TableName=stack.table)
    pending = [client_app.tasks["tests.effect"].delay(f"d{i}") for i in range(3)]
    wait_until(lambda: f"DynamoDB table '{stack.table}'" in worker.output(), 60, "clear error in the worker log")
    assert "does not exist" in worker.output()
    stack.ddb.create_table(**schema.create_table_request(stack.table))
    assert [r.get(timeout=120) for r in pending] == ["d0", "d1", "d2"]  # released, retried, done
    assert worker.process.poll() is None
    report("table deleted mid-run", 3, 1, len(executions(effects)), 0, 0)


def test_deleted_queue_mid_run_is_logged_clearly_and_the_worker_survives(stack, client_app, workers):
    worker = workers(stack.env(), concurrency=1).wait_ready()
    assert client_app.tasks["tests.add"].delay(2, 2).get(timeout=30) == 4
    stack.sqs.delete_queue(QueueUrl=stack.queue_url)
    wait_until(lambda: "NonExistentQueue" in worker.output() or "QueueDoesNotExist" in worker.output()
               or "does not exist" in worker.output(), 60, "the missing queue in the worker log")
    time.sleep(3)
    assert worker.process.poll() is None  # it keeps trying (a recreated queue is picked up again)


def test_wrong_credentials_give_a_clear_error(stack, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "WRONGKEY")
    app = make_client_app(stack, monkeypatch)
    with pytest.raises(AccessDenied, match=r"not allowed to call dynamodb:GetItem on DynamoDB table .*"
                                           r"UnrecognizedClientException"):
        app.AsyncResult("any-id").state  # noqa: B018
    with pytest.raises(Exception, match="UnrecognizedClientException|security token"):
        app.tasks["tests.add"].delay(1, 2)
    attrs = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "0"

