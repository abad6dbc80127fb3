"""The one list of AWS actions (celery_sqs_ddb.aws) matches the calls the code makes."""

from __future__ import annotations

import re
from pathlib import Path

import botocore.session
from botocore import xform_name

from celery_sqs_ddb import aws

PACKAGE = Path(aws.__file__).parent

#: Calls made by kombu's SQS Channel code that our Channel inherits (not visible in our source).
INHERITED = {
    "sqs": {"ReceiveMessage", "GetQueueAttributes", "DeleteMessage", "ChangeMessageVisibility", "PurgeQueue"},
    "sns": {"Publish"},  # kombu's SNS fanout publish, through Channel._put_fanout
}


def called_actions() -> dict[str, set[str]]:
    session = botocore.session.get_session()
    source = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    found: dict[str, set[str]] = {}
    for service in ("dynamodb", "sqs", "s3", "sts", "sns"):
        model = session.get_service_model(service)
        for operation in model.operation_names:
            if re.search(rf"\.{xform_name(operation)}\(", source) or re.search(
                    rf"\"{xform_name(operation)}\"", source):
                found.setdefault(service, set()).add(operation)
    for service, actions in INHERITED.items():
        found.setdefault(service, set()).update(actions)
    if "/task-protection/v1/state" in source:  # the ECS agent endpoint, authorized as this action
        found.setdefault("ecs", set()).add("UpdateTaskProtection")
    return found


def listed() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for table in (aws.RUNTIME_ACTIONS, aws.CONTROL_ACTIONS, aws.ADMIN_ACTIONS):
        for service, actions in table.items():
            out.setdefault(service, set()).update(actions)
    return out


def test_every_call_in_the_code_is_listed():
    missing = {s: a - listed().get(s, set()) for s, a in called_actions().items()}
    assert not any(missing.values()), f"AWS calls not in celery_sqs_ddb.aws: {missing}"


def test_every_listed_action_is_called():
    stale = {s: a - called_actions().get(s, set()) for s, a in listed().items()}
    assert not any(stale.values()), f"listed but never called: {stale}"


def test_runtime_and_admin_lists_do_not_overlap():
    for service in aws.RUNTIME_ACTIONS:
        assert not aws.RUNTIME_ACTIONS[service] & aws.ADMIN_ACTIONS.get(service, frozenset())
        assert not aws.RUNTIME_ACTIONS[service] & aws.CONTROL_ACTIONS.get(service, frozenset())


def test_producer_actions_are_runtime_calls_without_the_worker_s_own():
    for table in (aws.PRODUCER_ACTIONS, aws.PRODUCER_CONTROL_ACTIONS):
        for service, actions in table.items():
            assert actions <= aws.RUNTIME_ACTIONS[service], (service, actions - aws.RUNTIME_ACTIONS[service])
    producer = aws.iam_actions(aws.PRODUCER_ACTIONS)
    # a producer never receives, deletes or extends messages, nor protects an ECS task
    assert not producer & {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                           "ecs:UpdateTaskProtection", "s3:DeleteObject"}
    assert {"sqs:SendMessage", "dynamodb:GetItem", "dynamodb:Query", "s3:PutObject", "s3:GetObject"} <= producer
    # its reply queue of inspect/control is read like a worker's queue, and only then
    assert aws.iam_actions(aws.PRODUCER_CONTROL_ACTIONS) == {"sqs:ReceiveMessage", "sqs:DeleteMessage"}
