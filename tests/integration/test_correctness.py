"""Issue 16 (correctness) end to end: moto server subprocess, real workers and the real CLI.
Chord parts counted once across a killed worker, the S3 claim-check with one setting, missing
and untrusted claim-checks as poison, large results read without a bucket, CLI errors."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from celery import chord

import celery_sqs_ddb
from celery_sqs_ddb import schema, states
from celery_sqs_ddb.transport.headers import CLAIM_CHECK_KEY, REASON_ATTRIBUTE
from tests.support.stack import REGION, celery_command, make_client_app
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def dead_letters(stack: Any, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    wait_until(lambda: found.extend(stack.dlq_messages()) or len(found) >= count, timeout,
               f"{count} message(s) in the DLQ")
    return found


def reason(message: dict[str, Any]) -> str:
    return message["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"]


def queue_drained(stack: Any) -> bool:
    attrs = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["All"])["Attributes"]
    return attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def message_objects(stack: Any) -> list[str]:
    listed = stack.s3.list_objects_v2(Bucket=stack.bucket, Prefix="celery/messages/")
    return [o["Key"] for o in listed.get("Contents", [])]


# --------------------------------------------------------------------------- 2. chords


def test_chord_part_whose_count_died_with_its_worker_is_counted_on_redelivery(stack_factory, workers, monkeypatch,
                                                                             moto_server):
    """A part's result is written, its count fails (injected), the worker is killed: the redelivered
    message's claim is refused (final) and counts it; the callback runs exactly once."""
    stack = stack_factory(visibility_timeout=4)
    app = make_client_app(stack, monkeypatch)
    env = stack.env(TEST_PREFETCH=4)
    add, tsum = app.tasks["tests.add"], app.tasks["tests.tsum"]
    moto_server.reset_counts()
    moto_server.inject("dynamodb:TransactWriteItems", "AccessDenied", 120)
    try:
        victim = workers(env, name="victim", concurrency=2).wait_ready()
        header = [add.s(1, 1), add.s(2, 2)]
        result = chord(header, tsum.s()).apply_async()
        part_ids = [r.id for r in result.parent.results]

        def parts_written_counts_refused() -> bool:
            written = all((stack.item(p) or {}).get("status") == states.SUCCESS for p in part_ids)
            return written and moto_server.injected().get("dynamodb:TransactWriteItems", 0) >= 2

        wait_until(parts_written_counts_refused, 60, f"both parts SUCCESS, both counts refused:\n{victim.output()}")
        victim.signal(signal.SIGKILL)
        victim.process.wait(10)
    finally:
        moto_server.clear_injections()
    assert (stack.item(schema.chord_key(result.parent.id)) or {}).get("chord_count") is None  # nothing counted yet
    survivor = workers(env, name="survivor", concurrency=2).wait_ready()
    assert result.get(timeout=60) == 6
    item = stack.item(schema.chord_key(result.parent.id))
    assert item["chord_count"] == 2 and item["chord_fired"] is True
    line = f"Task tests.tsum[{result.id}] succeeded"
    wait_until(lambda: line in survivor.output(), 10, "the callback's success logged")  # logged after the write
    assert (victim.output() + survivor.output()).count(line) == 1, "the callback ran more than once"
    assert "Skipping task tests.add" in survivor.output()  # the parts were not run again


def test_revoked_chord_part_is_counted_and_the_chord_fails(stack, client_app, workers):
    add, tsum = client_app.tasks["tests.add"], client_app.tasks["tests.tsum"]
    revoked_id = str(uuid.uuid4())
    assert celery_sqs_ddb.revoke(client_app, revoked_id) == 1
    result = chord([add.s(1, 1), add.s(2, 2).set(task_id=revoked_id)], tsum.s()).apply_async()
    worker = workers(stack.env()).wait_ready()
    wait_until(lambda: result.state == states.FAILURE, 40, f"chord callback FAILURE:\n{worker.output()}")
    assert "revoked" in repr(result.result).lower()
    assert stack.item(schema.chord_key(result.parent.id))["chord_count"] == 2


# --------------------------------------------------------------------------- 3-6. S3 claim-check


def test_one_s3_bucket_setting_carries_a_1_4_mb_argument_through_s3(stack, client_app, workers):
    options = client_app.conf.broker_transport_options
    assert "s3_bucket" not in options and options["sqs_ddb"]["s3_bucket"] == stack.bucket  # broker_settings only
    data = "q" * 1_400_000
    result = client_app.tasks["tests.echo_len"].delay(data)
    (key,) = message_objects(stack)  # the message went to S3, the queue holds a pointer
    (message,) = stack.sqs.receive_message(QueueUrl=stack.queue_url, VisibilityTimeout=0)["Messages"]
    assert json.loads(message["Body"]) == {CLAIM_CHECK_KEY: f"s3://{stack.bucket}/{key}"}
    workers(stack.env()).wait_ready()
    assert result.get(timeout=60) == 1_400_000
    wait_until(lambda: not message_objects(stack), 20, "claim-check object deleted after the ack")


def test_missing_claim_check_object_dead_letters_only_its_message(stack_factory, workers, monkeypatch):
    stack = stack_factory(visibility_timeout=60)
    app = make_client_app(stack, monkeypatch)
    before = [app.tasks["tests.add"].delay(i, 1) for i in range(2)]
    lost = app.tasks["tests.echo_len"].delay("m" * 1_100_000)
    after = [app.tasks["tests.add"].delay(i, 2) for i in range(2)]
    (key,) = message_objects(stack)
    stack.s3.delete_object(Bucket=stack.bucket, Key=key)  # expired by a lifecycle rule, deleted by hand
    # one receive takes all five (prefetch 2 x 10 > 5)
    worker = workers(stack.env(TEST_PREFETCH=10)).wait_ready()
    assert [r.get(timeout=30) for r in before + after] == [1, 2, 2, 3]
    (dead,) = dead_letters(stack, 1)
    assert reason(dead).startswith(f"claim-check failed: S3 object s3://{stack.bucket}/{key} no longer exists")
    assert json.loads(dead["Body"]) == {CLAIM_CHECK_KEY: f"s3://{stack.bucket}/{key}"}
    assert lost.state == states.PENDING  # never ran
    wait_until(lambda: queue_drained(stack), 10, "nothing left on the queue (not redelivered)")
    assert worker.process.poll() is None


def test_fifo_group_goes_on_after_its_first_message_is_dead_lettered(stack_factory, workers, monkeypatch):
    """The group's first message is dead-lettered on receipt (its claim-check is gone): the group's
    next message, received in the same batch and held for the group, runs."""
    stack = stack_factory(fifo=True, visibility_timeout=60)
    app = make_client_app(stack, monkeypatch)
    lost = app.tasks["tests.echo_len"].apply_async(("f" * 1_100_000,), message_group_id="user-7")
    follower = app.tasks["tests.add"].apply_async((20, 22), message_group_id="user-7")
    (key,) = message_objects(stack)
    stack.s3.delete_object(Bucket=stack.bucket, Key=key)
    worker = workers(stack.env(TEST_PREFETCH=10)).wait_ready()
    assert follower.get(timeout=30) == 42, worker.output()[-3000:]
    (dead,) = dead_letters(stack, 1)
    assert "no longer exists" in reason(dead) and lost.state == states.PENDING


def test_untrusted_claim_check_pointers_are_poison_and_nothing_there_is_read_or_deleted(stack, client_app,
                                                                                      workers):
    other = f"other-{uuid.uuid4().hex[:8]}"
    stack.s3.create_bucket(Bucket=other, CreateBucketConfiguration={"LocationConstraint": REGION})
    stack.s3.put_object(Bucket=other, Key="celery/messages/evil", Body=b"{}")
    stack.s3.put_object(Bucket=stack.bucket, Key="secrets/evil", Body=b"{}")
    pointers = [f"s3://{other}/celery/messages/evil", f"s3://{stack.bucket}/secrets/evil",
                f"s3://{stack.bucket}/celery/messages/../../secrets/evil"]
    for pointer in pointers:
        stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps({CLAIM_CHECK_KEY: pointer}))
    good = client_app.tasks["tests.add"].delay(40, 2)
    counts_before = stack.server.counts()
    workers(stack.env(TEST_PREFETCH=10)).wait_ready()
    assert good.get(timeout=30) == 42
    found = dead_letters(stack, 3)
    by_pointer = {json.loads(m["Body"])[CLAIM_CHECK_KEY]: reason(m) for m in found}
    assert set(by_pointer) == set(pointers)
    for pointer, text in by_pointer.items():
        assert text == (f"claim-check failed: claim-check pointer {pointer!r} is outside "
                        f"s3://{stack.bucket}/celery/messages/ (sqs_ddb_s3_bucket, sqs_ddb_s3_prefix); not read")
    assert stack.s3.get_object(Bucket=other, Key="celery/messages/evil")["Body"].read() == b"{}"
    assert stack.s3.get_object(Bucket=stack.bucket, Key="secrets/evil")["Body"].read() == b"{}"
    counts = stack.server.counts()
    for method in ("GET", "DELETE"):  # the worker made no S3 call at all (no claim-check of its own)
        assert counts.get(f"s3:{method}", 0) == counts_before.get(f"s3:{method}", 0)


def test_large_result_is_read_by_a_client_without_a_bucket(stack, workers, monkeypatch):
    client = make_client_app(stack, monkeypatch, TEST_BUCKET="")
    assert client.backend.settings.s3_bucket is None
    workers(stack.env()).wait_ready()  # the worker has the bucket
    result = client.tasks["tests.big_result"].delay(400_000)
    assert result.get(timeout=60) == "x" * 400_000
    assert stack.item(result.id)["result_s3"].startswith(f"s3://{stack.bucket}/celery/results/")
    assert client.backend.get_task_meta(result.id, cache=False)["result"] == "x" * 400_000


# --------------------------------------------------------------------------- 1, 8. the CLI


def sqs_ddb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return celery_command(env, "sqs-ddb", *args, timeout=90)


def test_cli_jobs_cursor_and_all_reach_every_job(stack, monkeypatch):
    monkeypatch.setenv("SQS_DDB_STATUS_SHARDS", "7")
    app = make_client_app(stack, monkeypatch)
    ids = [str(uuid.uuid4()) for _ in range(34)]
    for start in range(0, 34, 5):  # a few different updated_at values, ties inside each batch
        app.backend.queue_rows((t, "tests.add", "celery") for t in ids[start:start + 5])
    env = stack.env(SQS_DDB_STATUS_SHARDS="7")
    every = sqs_ddb(env, "jobs", "--status", "QUEUED", "--limit", "4", "--all", "--json")
    assert every.returncode == 0, every.stderr
    listed = [json.loads(line)["task_id"] for line in every.stdout.splitlines()]
    assert sorted(listed) == sorted(ids) and len(listed) == 34
    paged: list[str] = []
    cursor: list[str] = []
    for _ in range(5):
        page = sqs_ddb(env, "jobs", "--status", "QUEUED", "--limit", "10", *cursor)
        assert page.returncode == 0, page.stderr
        paged += [line.split()[0] for line in page.stdout.splitlines() if "tests.add" in line]
        found = re.search(r"next page: --cursor '([^']+)'", page.stdout)
        if found is None:
            break
        cursor = ["--cursor", found.group(1)]
    assert paged == listed  # the same order, every job once


def assert_one_clear_line(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 1, (done.args, output)
    assert "Traceback" not in output, output
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("Error: "), (done.args, output)
    for text in expected:
        assert text in errors[0], (text, errors[0])


def run_all(calls: list[tuple[dict[str, str], tuple[str, ...]]]) -> list[subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(lambda call: sqs_ddb(call[0], *call[1]), calls))


COMMANDS = [("doctor",), ("jobs",), ("create-table",), ("create-queue", "q-new"), ("create-bucket", "b-new"),
            ("cleanup",), ("status", "some-id"), ("healthcheck",)]


def test_cli_configuration_errors_are_one_clear_line_and_status_1(stack):
    """A setting the commands read (here broker_transport_options['sqs_ddb']) that is invalid.
    (An invalid SQS_DDB_* variable already fails broker_settings() while ``-A`` imports the app,
    before any command runs: Celery prints that traceback.)"""
    env = stack.env(TEST_TRANSPORT_OPTIONS=json.dumps({"sqs_ddb": {"status_shards": 0}}))
    for done in run_all([(env, c) for c in COMMANDS]):
        assert_one_clear_line(done, "sqs_ddb_status_shards=0 is out of range; accepted: 1..64")


def test_cli_aws_and_value_errors_are_one_clear_line_and_status_1(stack, moto_server):
    env = stack.env()
    missing = stack.env(TEST_TABLE="no-such-table")
    first = run_all([
        (missing, ("jobs",)),
        (env, ("jobs", "--since", "yesterday")),
        (env, ("jobs", "--cursor", "not-a-cursor")),
    ])
    assert_one_clear_line(first[0], "DynamoDB table 'no-such-table'", "does not exist", "create-table")
    assert_one_clear_line(first[1], "Invalid value for '--since': 'yesterday' is not an ISO-8601 time")
    assert_one_clear_line(first[2], "'not-a-cursor' is not one returned by a listing")
    remote = stack.env(TEST_TRANSPORT_OPTIONS=json.dumps({"sqs_ddb": {"remote_control": True}}))
    for action in ("dynamodb:Query", "dynamodb:CreateTable", "dynamodb:GetItem", "sqs:CreateQueue",
                   "sqs:ListQueues", "s3:PUT", "dynamodb:DescribeTable"):
        moto_server.inject(action, "AccessDenied", 60)
    try:
        denied = run_all([
            (env, ("jobs",)),
            (stack.env(TEST_TABLE=f"t-{uuid.uuid4().hex[:6]}"), ("create-table",)),
            (env, ("status", "some-id")),
            (env, ("create-queue", f"q-{uuid.uuid4().hex[:6]}")),
            (remote, ("cleanup",)),
            (env, ("create-bucket", f"b-{uuid.uuid4().hex[:6]}")),
            (env, ("doctor",)),
        ])
    finally:
        moto_server.clear_injections()
    assert_one_clear_line(denied[0], "not allowed to call dynamodb:Query")
    assert_one_clear_line(denied[1], "not allowed to call dynamodb:CreateTable")
    assert_one_clear_line(denied[2], "not allowed to call dynamodb:GetItem")
    assert_one_clear_line(denied[3], "AccessDenied")
    assert_one_clear_line(denied[4], "AccessDenied")
    assert_one_clear_line(denied[5], "CreateBucket")
    doctor = denied[6]  # a report: one line per check, FAIL for the refused one, status 1
    assert doctor.returncode == 1 and "Traceback" not in doctor.stdout + doctor.stderr
    assert f"FAIL  table {stack.table}: not allowed to call dynamodb:DescribeTable" in doctor.stdout
