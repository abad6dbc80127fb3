"""SQS transport end to end: FIFO parallelism and ordering, idempotent publish, heartbeat,
crash recovery, warm-shutdown release, claim-check, dead letters, API calls per task."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from celery_sqs_ddb import schema, submit_many
from celery_sqs_ddb.exceptions import PayloadTooLarge
from tests.support.stack import effects_of, make_client_app
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration




def overlap_seconds(intervals: list[tuple[float, float]]) -> float:
    """Total time during which at least two intervals run at once."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running, last, total = 0, None, 0.0
    for moment, delta in events:
        if running >= 2 and last is not None:
            total += moment - last
        running += delta
        last = moment
    return total


def test_fifo_runs_tasks_in_parallel_across_workers(stack_factory, workers, monkeypatch, effects):
    stack = stack_factory(fifo=True)
    app = make_client_app(stack, monkeypatch)
    started = [workers(stack.env(SIDE_EFFECTS=effects), name=name, concurrency=1) for name in ("a", "b")]
    for worker in started:
        worker.wait_ready()
    results = [app.tasks["tests.timed"].delay(f"f{i}", 0.5) for i in range(20)]
    spans = [tuple(r.get(timeout=120)) for r in results]
    serialized = 20 * 0.5
    busy = max(e for _, e in spans) - min(s for s, _ in spans)
    # Stock kombu puts every FIFO message in group "default": one at a time, zero overlap.
    assert overlap_seconds(spans) > 0.6 * busy, (overlap_seconds(spans), busy)
    assert busy < 0.8 * serialized


def test_per_key_ordering_and_different_keys_overlap(stack_factory, workers, monkeypatch, effects):
    stack = stack_factory(fifo=True)
    app = make_client_app(stack, monkeypatch)
    # One worker with two processes and prefetch 4: a receive can return several messages of one
    # group (SQS does that); the transport must still run them one after another. (Two workers
    # would test moto, not us: moto's long poll keeps a stale list of in-flight groups.)
    workers(stack.env(SIDE_EFFECTS=effects, TEST_PREFETCH=2), name="a", concurrency=2).wait_ready()
    timed = app.tasks["tests.timed"]
    user1 = [timed.apply_async((f"u1-{i}", 0.3), message_group_id="user-1") for i in range(4)]
    user2 = [timed.apply_async((f"u2-{i}", 0.3), message_group_id="user-2") for i in range(4)]
    spans1 = [tuple(r.get(timeout=120)) for r in user1]
    spans2 = [tuple(r.get(timeout=120)) for r in user2]
    for spans in (spans1, spans2):
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end  # same key: strictly one after another, in publish order
    assert overlap_seconds(spans1 + spans2) > 0  # different keys run at the same time


def test_publishing_the_same_task_id_twice_runs_once(stack_factory, workers, monkeypatch, effects):
    stack = stack_factory(fifo=True)
    app = make_client_app(stack, monkeypatch)
    task_id = str(uuid.uuid4())
    effect = app.tasks["tests.effect"]
    effect.apply_async(("dup",), task_id=task_id)
    effect.apply_async(("dup",), task_id=task_id)  # a retried publish: SQS deduplicates it
    attrs = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "1"
    workers(stack.env(SIDE_EFFECTS=effects)).wait_ready()
    assert app.AsyncResult(task_id).get(timeout=60) == "dup"
    assert len(effects_of(effects, "dup")) == 1


def test_long_task_outlives_a_short_visibility_timeout_and_runs_once(stack_factory, workers, monkeypatch, effects):
    stack = stack_factory(visibility_timeout=5)
    app = make_client_app(stack, monkeypatch)
    a = workers(stack.env(SIDE_EFFECTS=effects), name="a", concurrency=1).wait_ready()
    b = workers(stack.env(SIDE_EFFECTS=effects), name="b", concurrency=1).wait_ready()
    result = app.tasks["tests.effect"].delay("long", 16)
    assert result.get(timeout=90) == "long"
    time.sleep(2)
    assert len(effects_of(effects, "long")) == 1
    assert "Skipping" not in a.output() + b.output()  # never even redelivered
    extended = stack.server.counts().get("sqs:ChangeMessageVisibilityBatch", 0)
    assert extended >= 3  # ~every 2.5 s during 16 s


def test_kill_9_mid_task_recovers_on_another_worker(stack_factory, workers, monkeypatch, effects, tmp_path):
    stack = stack_factory(visibility_timeout=4)
    app = make_client_app(stack, monkeypatch)
    victim = workers(stack.env(SIDE_EFFECTS=effects), name="victim", concurrency=1).wait_ready()
    marker = tmp_path / "started"
    result = app.tasks["tests.sleep_marker"].delay(str(marker), 6)
    wait_until(marker.exists, 30, "task started on the victim")
    victim.signal(signal.SIGKILL)
    marker.unlink()
    survivor = workers(stack.env(SIDE_EFFECTS=effects), name="survivor", concurrency=1).wait_ready()
    assert result.get(timeout=90) == "done"
    assert marker.exists()  # ran again, on the survivor
    item = stack.item(result.id)
    assert item["worker"].startswith("survivor@") and schema.attempt_of(item["claim_key"])[2] == 2
    assert "survivor" in survivor.name


def test_warm_shutdown_releases_unstarted_messages_at_once(stack_factory, workers, monkeypatch, effects, tmp_path):
    stack = stack_factory(visibility_timeout=120)
    app = make_client_app(stack, monkeypatch)
    env = stack.env(SIDE_EFFECTS=effects, TEST_PREFETCH=4)
    first = workers(env, name="first", concurrency=1).wait_ready()
    marker = tmp_path / "running"
    long = app.tasks["tests.sleep_marker"].delay(str(marker), 4)
    wait_until(marker.exists, 30, "long task running")
    queued = [app.tasks["tests.effect"].delay(f"q{i}") for i in range(3)]
    wait_until(lambda: first.output().count("Task tests.effect[") >= 3, 30, "3 messages received by first")
    first.signal(signal.SIGTERM)
    second = workers(env, name="second", concurrency=1).wait_ready()
    started = time.monotonic()
    assert [r.get(timeout=60) for r in queued] == ["q0", "q1", "q2"]
    assert time.monotonic() - started < 60  # long before the 120 s visibility timeout
    assert long.get(timeout=60) == "done"  # the running task finished during the warm shutdown
    for i in range(3):
        assert len(effects_of(effects, f"q{i}")) == 1
    assert all(stack.item(r.id)["worker"].startswith("second@") for r in queued)
    assert "released 3 un-started message(s)" in first.output()
    first.process.wait(30)
    assert second.process.poll() is None


def test_large_arguments_round_trip_through_s3(stack, client_app, workers):
    workers(stack.env()).wait_ready()
    data = "z" * (1_200_000)
    result = client_app.tasks["tests.echo_len"].delay(data)
    assert result.get(timeout=60) == 1_200_000
    wait_until(lambda: not stack.s3.list_objects_v2(Bucket=stack.bucket, Prefix="celery/messages/").get("KeyCount"),
               20, "claim-check object deleted after the ack")


def test_large_arguments_without_bucket_fail_before_enqueueing(stack_factory, monkeypatch):
    stack = stack_factory(bucket=False)
    app = make_client_app(stack, monkeypatch)
    with pytest.raises(PayloadTooLarge, match=r"pass s3_bucket=\.\.\. to celery_sqs_ddb\.broker_settings\(\)"):
        app.tasks["tests.echo_len"].delay("z" * 1_200_000)
    attrs = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_poison_messages_go_to_the_dlq_with_a_reason(stack, client_app, workers):
    worker = workers(stack.env()).wait_ready()
    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody="{not json at all")
    unknown = client_app.send_task("tests.no_such_task", args=(1,))
    after = client_app.tasks["tests.add"].delay(20, 22)
    assert after.get(timeout=30) == 42  # the worker keeps going
    with pytest.raises(Exception, match="no_such_task"):
        unknown.get(timeout=30)
    found = []
    wait_until(lambda: found.extend(stack.dlq_messages()) or len(found) >= 2, 30, "2 messages in the DLQ")
    reasons = sorted(m["MessageAttributes"]["sqs_ddb_reason"]["StringValue"] for m in found)
    assert reasons[0].startswith("body is not a kombu/Celery message")
    assert reasons[1].startswith("unknown task 'tests.no_such_task'")
    assert worker.process.poll() is None

    def queue_empty() -> bool:  # acks are batched: the last delete lands within a flush interval
        attrs = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["All"])["Attributes"]
        return attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"

    wait_until(queue_empty, 10, "nothing left on the queue, visible or in flight")


def test_redelivered_flag_from_receive_count(stack_factory, workers, monkeypatch, effects):
    stack = stack_factory(visibility_timeout=2)
    app = make_client_app(stack, monkeypatch)
    workers(stack.env(SIDE_EFFECTS=effects)).wait_ready()
    assert app.tasks["tests.redelivered"].delay("rd").get(timeout=60) is True
    assert len(effects_of(effects, "rd")) == 2  # first delivery rejected, the redelivery saw the flag


def test_api_calls_per_task_for_submit_many_and_join(stack, client_app, workers, moto_server):
    # Short tasks: prefetch 4 x 4 processes; SQS's default 20 s long poll (idle polls are not per task).
    workers(stack.env(TEST_PREFETCH=4, TEST_WAIT=20), concurrency=4).wait_ready()
    warm = client_app.tasks["tests.add"].delay(0, 0)
    warm.get(timeout=30)
    time.sleep(1.5)
    moto_server.reset_counts()
    group = submit_many(client_app.tasks["tests.add"], [(i, i) for i in range(200)], progress=False)
    assert group.join(timeout=120) == [2 * i for i in range(200)]
    time.sleep(1.5)  # let the last batched deletes flush
    counts, units = moto_server.counts(), moto_server.units()
    (Path(__file__).parents[2] / "test-artifacts" / "calls_submit_many_200.json").write_text(
        json.dumps({"counts": counts, "units": units}))
    assert units["ddb:RRU"] / 200 <= 1.5, units  # join reads: eventually consistent, oldest first (measured 0.7)
    # claim: 1 table + 1 index put; result: 1 table + index move (delete + put): 5 WRU, no QUEUED rows
    assert units["ddb:WRU:table"] == 400 and units["ddb:WRU"] <= 1000, units
    per_task = sum(v for k, v in counts.items() if "#" not in k) / 200  # "#items": entries, not calls
    assert counts.get("sqs:SendMessageBatch", 0) == 20, counts
    assert counts.get("sqs:SendMessage", 0) == 0, counts
    assert counts.get("dynamodb:BatchWriteItem", 0) == 0, counts  # no QUEUED rows unless sqs_ddb_track_queued
    assert counts.get("sqs:DeleteMessage", 0) == 0, counts
    assert counts.get("dynamodb:GetItem", 0) == 0, counts  # join reads through BatchGetItem
    # Measured 2.42 with the default strict claim (claim + result write are 2.0 of it): receives
    # and deletes ten at a time, join reads oldest-first; the budget is 2.5.
    assert counts.get("sqs:DeleteMessageBatch", 0) <= 30, counts
    assert per_task <= 2.5, counts


def test_a_group_sent_inside_batched_uses_send_message_batch_and_fires_publish_signals(stack, client_app, workers,
                                                                                      moto_server):
    from celery import chord, group
    from celery.signals import after_task_publish, before_task_publish

    from celery_sqs_ddb import batched

    workers(stack.env(TEST_PREFETCH=4), concurrency=2).wait_ready()
    add = client_app.tasks["tests.add"]
    published: list[tuple[str, str]] = []

    def on_before(headers: Any = None, **kwargs: Any) -> None:
        published.append(("before", headers["id"]))

    def on_after(headers: Any = None, **kwargs: Any) -> None:
        published.append(("after", headers["id"]))

    before_task_publish.connect(on_before, weak=False)
    after_task_publish.connect(on_after, weak=False)
    try:
        moto_server.reset_counts()
        with batched(client_app):
            result = group(add.s(i, i) for i in range(25)).apply_async()
            calls = moto_server.counts()
            assert calls.get("sqs:SendMessage", 0) == 0 and calls.get("sqs:SendMessageBatch", 0) == 0, calls
        counts = moto_server.counts()
    finally:
        before_task_publish.disconnect(on_before)
        after_task_publish.disconnect(on_after)
    assert counts.get("sqs:SendMessageBatch", 0) == 3 and counts.get("sqs:SendMessage", 0) == 0, counts
    ids = [r.id for r in result.results]
    assert sorted(i for kind, i in published if kind == "before") == sorted(ids)  # Sentry/OTel hooks still fire
    assert sorted(i for kind, i in published if kind == "after") == sorted(ids)
    assert result.get(timeout=60) == [2 * i for i in range(25)]
    with batched(client_app):
        total = chord(add.s(i, 1) for i in range(12))(client_app.tasks["tests.tsum"].s())
    assert total.get(timeout=60) == sum(i + 1 for i in range(12))


def test_purge_twice_within_a_minute_deletes_what_it_can_receive(stack, client_app):
    for i in range(3):
        client_app.tasks["tests.add"].delay(i, i)
    assert client_app.control.purge() >= 3  # SQS PurgeQueue
    for i in range(4):
        client_app.tasks["tests.add"].delay(i, i)
    assert client_app.control.purge() == 4  # within 60 s: PurgeQueueInProgress, so receive + delete
    attrs = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "0"
