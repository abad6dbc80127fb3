"""Remote control over SNS -> SQS with real workers: inspect, control, revoke with terminate,
per-worker queues cleaned up on shutdown and after a kill, events, and none of it when off."""

from __future__ import annotations

import json
import signal
import socket
import threading
import uuid
from typing import Any

import boto3
import pytest

from celery_sqs_ddb.exceptions import ConfigurationError
from tests.support.stack import REGION, celery_command, make_client_app
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

HOST = socket.gethostname()
KEEPALIVE, STALE_AFTER = 1, 4


def control_env(stack: Any, options: dict[str, Any] | None = None, **env: Any) -> dict[str, str]:
    opts = {"remote_control": True, "control_keepalive": KEEPALIVE, "control_stale_after": STALE_AFTER,
            **(options or {})}
    return stack.env(TEST_TRANSPORT_OPTIONS=json.dumps({"sqs_ddb": opts}), **env)


def control_queues(stack: Any) -> list[str]:
    prefix = stack.queue.removesuffix(".fifo") + "-ctl-"
    urls = stack.sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
    return sorted(url.rsplit("/", 1)[-1] for url in urls)


def sns(stack: Any) -> Any:
    return boto3.client("sns", region_name=REGION, endpoint_url=stack.server.direct_url)


def subscriptions(stack: Any, kind: str = "control") -> list[str]:
    """Queue names subscribed to the stack's control (or events) topic."""
    name = f"{stack.queue.removesuffix('.fifo')}-{kind}"
    topics = [t["TopicArn"] for t in sns(stack).list_topics()["Topics"] if t["TopicArn"].endswith(":" + name)]
    if not topics:
        return []
    subs = sns(stack).list_subscriptions_by_topic(TopicArn=topics[0])["Subscriptions"]
    return sorted(s["Endpoint"].rsplit(":", 1)[-1] for s in subs)



def test_inspect_control_revoke_and_shutdown_with_two_workers(stack_factory, workers, monkeypatch, effects,
                                                               tmp_path):
    stack = stack_factory()
    env = control_env(stack, SIDE_EFFECTS=str(effects))
    app = make_client_app(stack, monkeypatch, TEST_TRANSPORT_OPTIONS=env["TEST_TRANSPORT_OPTIONS"])
    w1, w2 = workers(env, "w1"), workers(env, "w2")
    w1.wait_ready(), w2.wait_ready()
    names = {f"w1@{HOST}", f"w2@{HOST}"}
    assert control_queues(stack) == sorted(f"{stack.queue}-ctl-worker-{n.replace('@', '-')}" for n in names)
    assert subscriptions(stack) == control_queues(stack)

    # inspect ping, through the real CLI: both workers answer by hostname
    # (with destinations a call returns once they all replied; without, it waits the whole timeout)
    ping = celery_command(env, "inspect", "ping", "--json", "--timeout", "10", "--destination", ",".join(sorted(names)))
    assert ping.returncode == 0, ping.stderr
    assert json.loads(ping.stdout.strip().splitlines()[-1]) == {n: {"ok": "pong"} for n in names}

    # inspect active: a running task with its id
    marker = tmp_path / "started"
    running = app.tasks["tests.slow_effect"].delay(str(marker), "slow", 60)
    wait_until(marker.exists, 60, "the long task started")
    inspect = app.control.inspect(timeout=10, destination=sorted(names))
    active = inspect.active()
    assert set(active) == names
    assert [t["id"] for tasks in active.values() for t in tasks] == [running.id]
    assert [t["name"] for tasks in active.values() for t in tasks] == ["tests.slow_effect"]

    # inspect registered: the task names; stats, reserved and query_task answer too
    registered = inspect.registered()
    assert set(registered) == names and all("tests.add" in tasks for tasks in registered.values())
    stats = inspect.stats()
    assert sorted(stats) == sorted(names) and sum(s["total"].get("tests.slow_effect", 0) for s in stats.values()) == 1
    assert set(inspect.reserved()) == names
    query = inspect.query_task(running.id)
    assert [state for found in query.values() for state, _ in found.values()] == ["active"]

    # control pool_grow, and add_consumer: an existing queue is consumed, a missing one refused
    w1_name = f"w1@{HOST}"
    assert app.control.pool_grow(1, reply=True, timeout=10, destination=[w1_name]) == [
        {w1_name: {"ok": "pool will grow"}}]
    extra = stack.sqs.create_queue(QueueName=f"{stack.queue}-extra")["QueueUrl"]
    assert extra
    added = app.control.add_consumer(f"{stack.queue}-extra", reply=True, timeout=10, destination=[w1_name])
    assert added == [{w1_name: {"ok": f"add consumer {stack.queue}-extra"}}]
    wait_until(lambda: f"{stack.queue}-extra" in [q["name"] for q in inspect.active_queues()[w1_name]], 30,
               "w1 consumes the added queue")
    refused = app.control.add_consumer("no-such-queue", reply=True, timeout=10, destination=[w1_name])
    assert "no-such-queue" in refused[0][w1_name]["error"] and "does not exist" in refused[0][w1_name]["error"]
    assert w1.process.poll() is None and inspect.ping() == {n: {"ok": "pong"} for n in names}

    # control rate_limit: both acknowledge, and the new rate is what they report
    replies = app.control.rate_limit("tests.tsum", "7/m", reply=True, timeout=10, destination=sorted(names))
    assert sorted(r for reply in replies for r in reply) == sorted(names)
    assert all("ok" in body for reply in replies for body in reply.values())
    limits = inspect.registered("rate_limit")
    assert all("tests.tsum [rate_limit=7/m]" in tasks for tasks in limits.values()), limits

    # revoke(terminate=True) stops the running task; other tasks go on
    others = [app.tasks["tests.add"].delay(i, i) for i in range(3)]
    running.revoke(terminate=True)
    assert wait_until(lambda: stack.item(running.id)["status"] == "REVOKED", 30, "REVOKED in the table")
    assert [r.get(timeout=60) for r in others] == [0, 2, 4]
    wait_until(lambda: not any(inspect.active().values()), 30, "nothing running")
    assert app.tasks["tests.add"].delay(20, 22).get(timeout=60) == 42
    assert "slow" not in (effects.read_text() if effects.exists() else "")  # the side effect never happened
    assert running.state == "REVOKED"

    # control shutdown stops one worker cleanly; its queue and subscription go with it
    app.control.shutdown(destination=[f"w2@{HOST}"])
    assert w2.process.wait(60) == 0
    assert control_queues(stack) == [f"{stack.queue}-ctl-worker-w1-{HOST}"]
    assert subscriptions(stack) == control_queues(stack)
    assert app.control.inspect(timeout=3).ping() == {f"w1@{HOST}": {"ok": "pong"}}  # only w1 answers a broadcast

    # a normal (warm) shutdown leaves nothing behind: no worker or reply queue, no subscription
    assert w1.stop() == 0
    assert control_queues(stack) == []
    assert subscriptions(stack) == []
    logs = w1.output() + w2.output()
    assert "Unrecoverable" not in logs and "ReceiveMessage on" not in logs and "Traceback" not in logs


def test_a_killed_worker_s_queue_is_removed_by_worker_start_and_by_cleanup(stack_factory, workers):
    stack = stack_factory()
    env = control_env(stack)
    w1 = workers(env, "w1").wait_ready()
    mailbox = f"{stack.queue}-ctl-worker-w1-{HOST}"
    assert control_queues(stack) == [mailbox]
    w1.signal(signal.SIGKILL)
    w1.process.wait(30)
    assert control_queues(stack) == [mailbox]  # nothing cleaned it up

    # a worker starting later removes it once stale (its own stays)
    wait_until(lambda: f"would remove queue {mailbox}" in celery_command(env, "sqs-ddb", "cleanup", "--dry-run").stdout,
               STALE_AFTER * 5, "the killed worker's queue goes stale")
    w2 = workers(env, "w2").wait_ready()
    wait_until(lambda: control_queues(stack) == [f"{stack.queue}-ctl-worker-w2-{HOST}"], 30,
               "worker start removed the stale queue")
    assert subscriptions(stack) == control_queues(stack)
    wait_until(lambda: "Removed 1 stale remote-control queue(s)" in w2.output(), 10, "the sweep's log line")

    # `sqs-ddb cleanup` removes a killed worker's queue and subscription, and keeps live ones
    w3 = workers(env, "w3").wait_ready()
    w2.signal(signal.SIGKILL)
    w2.process.wait(30)
    fresh = celery_command(env, "sqs-ddb", "cleanup", "--stale-after", "60")
    assert fresh.returncode == 0, fresh.stderr
    assert "removed 0 queue(s)" in fresh.stdout and "kept 2 live queue(s)" in fresh.stdout  # not stale yet
    wait_until(lambda: f"would remove queue {stack.queue}-ctl-worker-w2-{HOST}" in celery_command(
        env, "sqs-ddb", "cleanup", "--dry-run").stdout,
               STALE_AFTER * 5, "the second killed worker's queue goes stale")
    doctor = celery_command(env, "sqs-ddb", "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"ok    control queues {stack.queue}-ctl-*: 1 live, 1 stale (run sqs-ddb cleanup)" in doctor.stdout
    assert "ok    control topic: no ARN configured (sqs_ddb_control_topic_arn)" in doctor.stdout
    result = celery_command(env, "sqs-ddb", "cleanup")
    assert result.returncode == 0, result.stderr
    assert f"removed queue {stack.queue}-ctl-worker-w2-{HOST}" in result.stdout
    assert control_queues(stack) == [f"{stack.queue}-ctl-worker-w3-{HOST}"]  # alive: kept by its keepalive
    assert subscriptions(stack) == control_queues(stack)
    assert w3.stop() == 0
    assert control_queues(stack) == [] and subscriptions(stack) == []


def test_task_events_reach_an_event_receiver_through_sns(stack_factory, workers, monkeypatch, moto_server):
    stack = stack_factory()
    env = control_env(stack, {"remote_control": False, "events": True})
    app = make_client_app(stack, monkeypatch, TEST_TRANSPORT_OPTIONS=env["TEST_TRANSPORT_OPTIONS"])
    workers(env, "w1", extra_args=("-E",)).wait_ready()
    seen: list[dict[str, Any]] = []
    receivers: list[Any] = []
    errors: list[BaseException] = []

    def capture() -> None:
        try:
            with app.connection_for_read() as conn:
                receiver = app.events.Receiver(conn, handlers={"*": seen.append})
                receivers.append(receiver)
                receiver.capture(limit=None, timeout=None, wakeup=False)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    wait_until(lambda: any(q.startswith(f"{stack.queue}-ctl-events-") for q in control_queues(stack)), 30,
               "the receiver's queue exists")
    wait_until(lambda: subscriptions(stack, "events"), 30, "the receiver's queue is subscribed")
    result = app.tasks["tests.add"].delay(1, 2)
    assert result.get(timeout=60) == 3
    wait_until(lambda: {"task-received", "task-started", "task-succeeded"} <= {
        e["type"] for e in seen if e.get("uuid") == result.id}, 30, f"task events arrived: {seen}")
    succeeded = next(e for e in seen if e["type"] == "task-succeeded" and e["uuid"] == result.id)
    assert succeeded["hostname"] == f"w1@{HOST}" and succeeded["result"] == "3"

    # the cost: task events are batched per event-loop turn, at most one SNS publish per event
    moto_server.reset_counts()
    batch = [app.tasks["tests.add"].delay(i, i) for i in range(10)]
    assert [r.get(timeout=60) for r in batch] == [2 * i for i in range(10)]
    wait_until(lambda: sum(e["type"] == "task-succeeded" for e in seen) >= 11, 30, "all events arrived")
    publishes = moto_server.counts().get("sns:Publish", 0)
    assert 1 <= publishes <= 3 * len(batch), publishes
    receivers[0].should_stop = True
    thread.join(30)
    assert not errors, errors
    assert not thread.is_alive()
    assert control_queues(stack) == []  # the receiver's queue is deleted when it stops
    assert subscriptions(stack, "events") == []


def test_remote_control_off_makes_no_sns_call_and_says_how_to_enable_it(stack, workers, monkeypatch, moto_server):
    app = make_client_app(stack, monkeypatch)
    moto_server.reset_counts()
    worker = workers(stack.env(), "w1").wait_ready()
    assert app.tasks["tests.add"].delay(2, 3).get(timeout=60) == 5
    revoked = str(uuid.uuid4())
    app.control.revoke(revoked)  # still works: written to the table, honoured by every claim
    assert stack.item(revoked)["status"] == "REVOKED"
    with pytest.raises(ConfigurationError, match="remote_control=True"):
        app.control.inspect(timeout=1).ping()
    cli = celery_command(stack.env(), "inspect", "ping")
    assert cli.returncode != 0
    assert "Remote control is off for this SQS broker" in cli.stdout + cli.stderr
    counts = moto_server.counts()
    assert not [k for k in counts if k.startswith("sns:")], counts
    assert counts.get("sqs:SendMessage", 0) >= 1 and counts.get("sqs:CreateQueue", 0) == 0
    assert control_queues(stack) == []
    assert worker.stop() == 0


def test_inspect_answers_within_celery_s_default_one_second_on_a_warm_worker(stack_factory, workers, monkeypatch):
    stack = stack_factory()
    env = control_env(stack)
    app = make_client_app(stack, monkeypatch, TEST_TRANSPORT_OPTIONS=env["TEST_TRANSPORT_OPTIONS"])
    workers(env, "w1").wait_ready()
    name = f"w1@{HOST}"
    wait_until(lambda: app.control.inspect(timeout=5).ping(), 30, "the worker answers")  # warm: queues exist
    inspect = app.control.inspect()  # Celery's default timeout: 1 s
    for method in ("ping", "stats", "report", "revoked", "registered", "active", "scheduled", "conf"):
        replies = getattr(inspect, method)()
        assert replies is not None and name in replies, method
    assert "software -> celery:" in inspect.report()[name]["ok"]
