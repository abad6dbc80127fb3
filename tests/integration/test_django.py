"""A real Django project (tests/django_project) on the moto stack: settings from
``celery_sqs_ddb.django.celery_settings``, Celery's own ``proj/celery.py``, ``@shared_task``;
``manage.py shell`` sends and waits, a real ``celery -A proj worker`` runs the tasks, and the
read-only job board answers through Django's test client."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import textwrap
from typing import Any

import boto3
import pytest

from celery_sqs_ddb import aws
from tests.support.stack import REGION, ROOT, Stack

pytestmark = pytest.mark.integration

PROJECT = ROOT / "tests" / "django_project"


def django_env(stack: Stack) -> dict[str, str]:
    return stack.env(PYTHONPATH=f"{PROJECT}{os.pathsep}{ROOT}", DJANGO_SETTINGS_MODULE="proj.settings")


def manage_shell(env: dict[str, str], code: str, timeout: float = 90) -> dict[str, Any]:
    """``python manage.py shell -c CODE`` in the project; CODE prints one JSON line prefixed ``OUT ``."""
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", textwrap.dedent(code)],
                          env={**os.environ, **env}, cwd=str(PROJECT), capture_output=True, text=True,
                          timeout=timeout)
    lines = [line[4:] for line in done.stdout.splitlines() if line.startswith("OUT ")]
    assert done.returncode == 0 and lines, f"manage.py shell failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(lines[-1])


def test_django_project_delay_get_through_a_real_worker_and_job_board(stack: Stack, workers) -> None:
    env = django_env(stack)
    worker = workers(env, name="django", app="proj", concurrency=1).wait_ready()
    out = manage_shell(env, """
        import json
        from django.test import Client
        from demoapp.tasks import add, greeting
        from proj.celery import app

        added = add.delay(2, 3)
        value = added.get(timeout=60)
        greeted = greeting.delay().get(timeout=60)
        client = Client()
        page = lambda url: (lambda r: [r.status_code, r.content.decode()])(client.get(url))
        print("OUT " + json.dumps({
            "value": value, "id": added.id, "greeting": greeted,
            "transport": app.conf.broker_transport, "consumer": app.conf.worker_consumer,
            "staff_only": page("/jobs/?status=SUCCESS")[0],
            "listing": page("/public-jobs/?status=SUCCESS"),
            "detail": page(f"/public-jobs/{added.id}/"),
            "unknown": page("/public-jobs/no-such-job/")[0],
            "bad_state": page("/public-jobs/?status=NOPE")[0],
            "first": page("/paged-jobs/?status=SUCCESS"),
        }))
    """)
    assert out["value"] == 5
    assert out["greeting"] == "hello from Django settings"  # the worker runs inside the Django project
    assert out["transport"] == "celery_sqs_ddb.transport:Transport"  # CELERY_* names reached the app
    assert out["consumer"] == "celery_sqs_ddb.worker:Consumer"
    item = stack.item(out["id"])
    assert item["status"] == "SUCCESS" and item["task_name"] == "demoapp.tasks.add"
    assert item["worker"].startswith("django@")
    assert out["staff_only"] == 403  # anonymous users do not see the board
    status, listing = out["listing"]
    assert status == 200 and f'href="{out["id"]}/"' in listing and "demoapp.tasks.add" in listing
    status, detail = out["detail"]
    assert status == 200 and "SUCCESS" in detail and "<td>5</td>" in detail
    assert out["unknown"] == 404
    assert out["bad_state"] == 400
    status, first = out["first"]  # one a page, newest first: greeting's job, then add's behind "next"
    assert status == 200 and "demoapp.tasks.greeting" in first and "demoapp.tasks.add" not in first
    (next_link,) = re.findall(r'rel="next" href="([^"]+)"', first)
    second = manage_shell(env, f"""
        import json
        from django.test import Client
        response = Client().get("/paged-jobs/" + {html.unescape(next_link)!r})
        print("OUT " + json.dumps([response.status_code, response.content.decode()]))
    """)
    assert second[0] == 200 and "demoapp.tasks.add" in second[1] and 'rel="next"' not in second[1]
    assert "demoapp.tasks.add" in worker.output()  # autodiscover_tasks registered it in the worker


def test_web_process_calls_only_producer_actions(stack: Stack) -> None:
    """What a Django process does (send, submit_many, large arguments to S3, list, read, revoke)
    calls only ``aws.PRODUCER_ACTIONS``: what the Terraform producer policy grants."""
    env = django_env(stack)
    stack.server.reset_counts()
    out = manage_shell(env, """
        import json
        import celery_sqs_ddb
        from demoapp.tasks import add, echo_len
        from proj.celery import app

        sent = add.delay(1, 2)
        big = echo_len.delay("x" * 1_100_000)  # over the SQS limit: the claim-check goes to S3
        group = celery_sqs_ddb.submit_many(add, [(i, i) for i in range(12)], progress=False, track_queued=True)
        listed, _ = celery_sqs_ddb.jobs(app, "QUEUED", limit=5)
        revoked = celery_sqs_ddb.revoke(app, [sent.id])
        print("OUT " + json.dumps({"state": sent.state, "group_ready": group.ready(), "listed": len(listed),
                                   "revoked": revoked, "big": big.state}))
    """)
    assert out["state"] == "REVOKED" and out["revoked"] == 1
    assert out["listed"] == 5 and out["group_ready"] is False
    s3_verbs = {"s3:PUT": "s3:PutObject", "s3:GET": "s3:GetObject", "s3:DELETE": "s3:DeleteObject"}
    counted = {s3_verbs.get(key, key) for key, count in stack.server.counts().items() if count and "#" not in key}
    assert {"sqs:SendMessage", "sqs:SendMessageBatch", "s3:PutObject", "dynamodb:Query",
            "dynamodb:BatchWriteItem"} <= counted
    allowed = {f"{service}:{action}" for service, actions in aws.PRODUCER_ACTIONS.items() for action in actions}
    assert counted - allowed == set(), f"the web process called actions the producer policy lacks: {counted - allowed}"


def test_web_process_with_remote_control_calls_only_producer_and_control_actions(stack: Stack) -> None:
    """``inspect``/``control`` from the web side (remote control on through the environment, the
    topic from Terraform) stays within what the producer policy grants when its topics are wired in."""
    sns = boto3.client("sns", region_name=REGION, endpoint_url=stack.server.direct_url)
    topic = sns.create_topic(Name=f"{stack.queue}-control")["TopicArn"]
    env = {**django_env(stack), "SQS_DDB_REMOTE_CONTROL": "true", "SQS_DDB_CONTROL_TOPIC_ARN": topic}
    stack.server.reset_counts()
    out = manage_shell(env, """
        import json
        from demoapp.tasks import add
        from proj.celery import app

        sent = add.delay(1, 2)
        replies = app.control.ping(timeout=1)  # no worker runs: nobody answers
        print("OUT " + json.dumps({"replies": replies, "state": sent.state}))
    """)
    assert out == {"replies": [], "state": "PENDING"}
    counted = {key for key, count in stack.server.counts().items() if count and "#" not in key}
    assert {"sns:Publish", "sqs:CreateQueue", "sqs:DeleteQueue"} <= counted  # a reply queue came and went
    allowed = {f"{service}:{action}" for table in (aws.PRODUCER_ACTIONS, aws.CONTROL_ACTIONS,
                                                   aws.PRODUCER_CONTROL_ACTIONS)
               for service, actions in table.items() for action in actions}
    assert counted - allowed == set(), f"inspect from the web side needs more: {counted - allowed}"
