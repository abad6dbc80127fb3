"""Transport message parameters and poison handling with in-process moto (no worker needed)."""

from __future__ import annotations

import json

import boto3
import pytest
from celery import Celery
from moto import mock_aws

import celery_sqs_ddb
from celery_sqs_ddb.exceptions import PayloadTooLarge
from celery_sqs_ddb.transport.headers import CLAIM_CHECK_KEY, REASON_ATTRIBUTE

REGION = "eu-west-1"


@pytest.fixture
def queues():
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        fifo = sqs.create_queue(QueueName="jobs.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
        std = sqs.create_queue(QueueName="jobs")["QueueUrl"]
        dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
        yield sqs, fifo, std, dlq


def app_for(queue_name, url, **kwargs):
    app = Celery("t", set_as_current=False)
    app.conf.update(celery_sqs_ddb.broker_settings({queue_name: url}, region=REGION, **kwargs))

    @app.task(name="t.add", shared=False)
    def add(x, y):
        return x + y

    return app


def receive(sqs, url, count=10):
    return sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=count, MessageSystemAttributeNames=["All"],
                               MessageAttributeNames=["All"]).get("Messages", [])


def test_fifo_group_is_the_task_id_and_dedup_is_id_plus_retries(queues):
    sqs, fifo, _, _ = queues
    app = app_for("jobs.fifo", fifo)
    first = app.tasks["t.add"].delay(1, 2)
    keyed = app.tasks["t.add"].apply_async((3, 4), message_group_id="user-7")
    by_id = {json.loads(m["Body"])["headers"]["id"]: m["Attributes"] for m in receive(sqs, fifo)}
    assert by_id[first.id]["MessageGroupId"] == first.id
    assert by_id[first.id]["MessageDeduplicationId"] == f"{first.id}-0"
    assert by_id[keyed.id]["MessageGroupId"] == "user-7"


def test_same_task_id_twice_is_one_message(queues):
    sqs, fifo, _, _ = queues
    app = app_for("jobs.fifo", fifo)
    app.tasks["t.add"].apply_async((1, 2), task_id="same")
    app.tasks["t.add"].apply_async((1, 2), task_id="same")
    assert len(receive(sqs, fifo)) == 1


def test_bodies_are_plain_json(queues):
    sqs, _, std, _ = queues
    app = app_for("jobs", std)
    app.tasks["t.add"].delay(1, 2)
    (message,) = receive(sqs, std)
    assert json.loads(message["Body"])["headers"]["task"] == "t.add"  # not base64


def test_oversized_message_without_bucket_names_the_setting_and_sends_nothing(queues):
    sqs, _, std, _ = queues
    app = app_for("jobs", std)
    with pytest.raises(PayloadTooLarge, match=r"pass s3_bucket=\.\.\. to celery_sqs_ddb.broker_settings\(\)"):
        app.tasks["t.add"].delay("x" * 1_100_000, 1)
    assert receive(sqs, std) == []


def test_oversized_message_with_bucket_sends_a_pointer(queues):
    sqs, _, std, _ = queues
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket="payloads-b", CreateBucketConfiguration={"LocationConstraint": REGION})
    app = app_for("jobs", std, s3_bucket="payloads-b")
    app.tasks["t.add"].delay("x" * 1_100_000, 1)
    (message,) = receive(sqs, std)
    pointer = json.loads(message["Body"])[CLAIM_CHECK_KEY]
    assert pointer.startswith("s3://payloads-b/celery/messages/")


def test_undecodable_body_goes_to_the_dlq_with_a_reason(queues):
    sqs, _, std, dlq = queues
    app = app_for("jobs", std, dead_letter_queue=dlq)
    sqs.send_message(QueueUrl=std, MessageBody="<<not json>>")
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        raw = receive(sqs, std)
        assert channel._messages_to_python(raw, "jobs") == []  # not delivered to Celery
        channel.housekeeper.stop()
    (dead,) = receive(sqs, dlq)
    assert dead["Body"] == "<<not json>>"
    assert dead["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"].startswith("body is not a kombu/Celery")
    assert receive(sqs, std) == []  # deleted from the source queue, not looping


def test_only_channels_made_on_the_event_loop_s_thread_use_it():
    """kombu hands the process's event loop to every SQS channel; with a worker in the same process
    (Celery's in-process test worker), a client's channel made in another thread would drive the
    worker's loop and curl handles from its own thread. It receives synchronously instead."""
    import threading

    from kombu.asynchronous import Hub, get_event_loop, set_event_loop

    with mock_aws():
        url = boto3.client("sqs", region_name="eu-west-1").create_queue(QueueName="jobs")["QueueUrl"]
        app = Celery("t", set_as_current=False)
        app.conf.update(celery_sqs_ddb.broker_settings({"jobs": url}, region="eu-west-1"))
        previous = get_event_loop()
        hub = set_event_loop(Hub())
        try:
            channels: dict[str, object] = {}

            def worker_thread() -> None:  # what Celery's consumer does in the thread that runs the loop
                conn = app.connection_for_read()
                conn.transport.register_with_event_loop(conn.connection, hub)
                channels["worker"] = conn.default_channel

            thread = threading.Thread(target=worker_thread)
            thread.start()
            thread.join()
            client = app.connection_for_write().default_channel  # this thread: a client of that worker
            assert channels["worker"].hub is hub
            assert client.hub is None
        finally:
            set_event_loop(previous)


@pytest.mark.parametrize(("prefetch", "processes", "held", "polls"), [
    (2, 2, 1, True),     # multiplier 1: a free process is worth a receive at once
    (8, 2, 3, False),    # multiplier 4: 5 free of 8, 3 held (more than one per process): wait
    (8, 2, 2, True),     # 6 free, 2 held: one per process left, receive now
    (8, None, 4, True),  # the pool's size unknown (not a worker): half the window
    (8, None, 5, False),
    (40, 10, 30, True),  # a receive brings at most 10
])
def test_a_receive_waits_for_room_while_every_process_still_has_a_message(prefetch, processes, held, polls):
    from types import SimpleNamespace

    from celery_sqs_ddb.transport.polling import Polling

    class Window:
        prefetch_count = prefetch

        def can_consume_max_estimate(self) -> int:
            return prefetch - held

    channel = Polling()
    channel.qos = Window()
    channel.worker_pool = SimpleNamespace(num_processes=processes) if processes else None
    assert channel._room_worth_a_receive() is polls
