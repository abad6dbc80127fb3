"""``celery -A app sqs-ddb ...`` as a user runs it: a subprocess against the moto server."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from tests.support.stack import celery_command

pytestmark = pytest.mark.integration


def celery(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return celery_command(env, "sqs-ddb", *args)


def test_create_table_then_doctor_passes(stack):
    env = stack.env(TEST_TABLE=f"fresh-{uuid.uuid4().hex[:6]}")
    created = celery(env, "create-table")
    assert created.returncode == 0, created.stderr
    assert "ACTIVE, index status-index, TTL on expires_at" in created.stdout
    again = celery(env, "create-table")  # idempotent
    assert again.returncode == 0 and "already exists" in again.stdout
    doctor = celery(env, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "ok    table" in doctor.stdout and f"ok    queue {stack.queue}" in doctor.stdout
    assert "all checks passed" in doctor.stdout


def test_doctor_fails_clearly_on_a_missing_table_and_queue(stack):
    env = stack.env(TEST_TABLE="missing-table", TEST_QUEUE_URL=stack.queue_url + "-gone")
    doctor = celery(env, "doctor")
    assert doctor.returncode == 1
    assert ("FAIL  table missing-table: DynamoDB table 'missing-table' (sqs_ddb_table) does not exist; "
            'run "celery -A app sqs-ddb create-table"') in doctor.stdout
    assert f"FAIL  queue {stack.queue}" in doctor.stdout
    assert "Traceback" not in doctor.stdout + doctor.stderr


def test_doctor_reports_a_table_without_the_status_index(stack):
    name = f"plain-{uuid.uuid4().hex[:6]}"
    stack.ddb.create_table(TableName=name, KeySchema=[{"AttributeName": "task_id", "KeyType": "HASH"}],
                           AttributeDefinitions=[{"AttributeName": "task_id", "AttributeType": "S"}],
                           BillingMode="PAY_PER_REQUEST")
    doctor = celery(stack.env(TEST_TABLE=name), "doctor")
    assert doctor.returncode == 1 and "status index 'status-index' is missing" in doctor.stdout


def test_create_queue_with_dead_letter_queue(stack):
    name = f"made-{uuid.uuid4().hex[:6]}.fifo"
    made = celery(stack.env(), "create-queue", name, "--dead-letter", f"dl-{name}", "--visibility-timeout", "45")
    assert made.returncode == 0, made.stderr
    url = stack.sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attrs = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["FifoQueue"] == "true" and attrs["VisibilityTimeout"] == "45"
    assert attrs["ReceiveMessageWaitTimeSeconds"] == "20" and attrs["SqsManagedSseEnabled"] == "true"
    assert f"dl-{name}" in attrs["RedrivePolicy"]
    bad = celery(stack.env(), "create-queue", name, "--dead-letter", "plain-dlq")
    assert bad.returncode == 2 and "must be FIFO too" in bad.stderr


def test_jobs_lists_by_status(stack, client_app, workers):
    workers(stack.env()).wait_ready()
    ids = [client_app.tasks["tests.add"].delay(i, i) for i in range(3)]
    assert [r.get(timeout=30) for r in ids] == [0, 2, 4]
    listed = celery(stack.env(), "jobs", "--status", "SUCCESS")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines() if "tests.add" in line]
    assert sorted(row[0] for row in rows) == sorted(r.id for r in ids)
    # Newest first by the time each finished (worker processes finish in any order), ties by id.
    order = [(row[2], row[0]) for row in rows]
    assert order == sorted(order, reverse=True)
    assert "3 job(s)" in listed.stdout
    status = celery(stack.env(), "status", ids[0].id)
    assert '"status": "SUCCESS"' in status.stdout and '"result": 0' in status.stdout
