"""kombu's SQS options users already set apply to this package too: ``sts_role_arn`` is the identity
of our own DynamoDB client (one identity with kombu's SQS client), and per-queue options of
``predefined_queues`` pass through ``broker_settings()``."""

from __future__ import annotations

import json
import os

import boto3
import pytest
from celery import Celery
from moto import mock_aws

from celery_sqs_ddb import broker_settings, schema
from celery_sqs_ddb.exceptions import ConfigurationError

REGION = "eu-west-1"
QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs"


@pytest.fixture
def role_arn():
    with mock_aws():
        iam = boto3.client("iam", region_name=REGION)
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                         "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}]}
        role = iam.create_role(RoleName="celery-jobs", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
        boto3.client("dynamodb", region_name=REGION).create_table(**schema.create_table_request("jobs"))
        yield role["Arn"]


def test_sts_role_arn_is_assumed_by_our_dynamodb_client(role_arn):
    app = Celery("unit", set_as_current=False)
    app.conf.update(broker_settings({"jobs": QUEUE_URL}, region=REGION, sts_role_arn=role_arn))
    app.conf.result_backend = f"ddb://jobs?region={REGION}"
    assert app.conf.broker_transport_options["sts_role_arn"] == role_arn  # kombu's SQS client: the same role
    backend = app.backend
    backend.store_result("t-1", 3, "SUCCESS")
    assert backend.get_task_meta("t-1")["result"] == 3  # the call went through, signed as the role
    credentials = backend.table.client._request_signer._credentials.get_frozen_credentials()
    assert credentials.access_key != os.environ["AWS_ACCESS_KEY_ID"]  # not the environment's keys ...
    assert credentials.access_key.startswith("ASIA") and credentials.token  # ... but STS session credentials


def test_without_sts_role_arn_the_default_chain_signs(role_arn):
    app = Celery("unit", set_as_current=False)
    app.conf.update(broker_settings({"jobs": QUEUE_URL}, region=REGION))
    app.conf.result_backend = f"ddb://jobs?region={REGION}"
    credentials = app.backend.table.client._request_signer._credentials.get_frozen_credentials()
    assert credentials.access_key == os.environ["AWS_ACCESS_KEY_ID"] and not credentials.token


# Per-queue options of kombu's predefined_queues (backoff_policy, access_key_id/secret_access_key).
def test_broker_settings_passes_a_per_queue_backoff_policy():
    policy = {1: 10, 2: 20, 3: 40}
    conf = broker_settings({"jobs": QUEUE_URL}, backoff_policy=policy, backoff_tasks=["tests.add"])
    entry = conf["broker_transport_options"]["predefined_queues"]["jobs"]
    assert entry.get("backoff_policy") == policy and entry.get("backoff_tasks") == ["tests.add"]
    assert "backoff_policy" not in conf


def test_per_queue_credentials_reach_our_own_clients(role_arn):
    from celery_sqs_ddb.config import Settings

    options = {"predefined_queues": {"jobs": {"url": QUEUE_URL, "access_key_id": "AKIDQUEUE",
                                              "secret_access_key": "secret"}}}
    args = Settings.read(None, options).client_args()
    assert "AKIDQUEUE" in json.dumps(args)


def test_queue_options_go_to_their_queue_and_unknown_ones_are_refused():
    conf = broker_settings(["a", "b"], queue_options={"b": {"backoff_policy": {1: 5}}})
    entries = conf["broker_transport_options"]["predefined_queues"]
    assert entries["b"]["backoff_policy"] == {1: 5} and "backoff_policy" not in entries["a"]
    with pytest.raises(ConfigurationError, match="unknown key 'visibility'.*accepted: backoff_policy"):
        broker_settings(["a"], queue_options={"a": {"visibility": 3}})
    with pytest.raises(ConfigurationError, match="names queue 'c'"):
        broker_settings(["a"], queue_options={"c": {}})


def test_two_identities_in_predefined_queues_are_refused():
    with pytest.raises(ConfigurationError, match="2 different credentials .*queues a, b.*one identity"):
        broker_settings(["a", "b"], queue_options={"a": {"access_key_id": "K1", "secret_access_key": "s"},
                                                   "b": {"access_key_id": "K2", "secret_access_key": "s"}})
