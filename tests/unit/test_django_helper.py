"""``celery_sqs_ddb.django.celery_settings``: broker_settings() under Django's CELERY_ names, read back
by Celery's ``config_from_object(..., namespace="CELERY")`` as the same settings."""

from __future__ import annotations

import types

import pytest
from celery import Celery

from celery_sqs_ddb import broker_settings
from celery_sqs_ddb.config import Settings
from celery_sqs_ddb.django import celery_settings

URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs.fifo"
BACKEND = "ddb://jobs-results?region=eu-west-1"


def django_settings(**values: object) -> types.SimpleNamespace:
    return types.SimpleNamespace(**values)  # what django.conf:settings looks like to Celery


def test_namespaced_names_round_trip_to_broker_settings():
    plain = broker_settings({"jobs.fifo": URL}, region="eu-west-1", s3_bucket="payloads")
    named = celery_settings({"jobs.fifo": URL}, result_backend=BACKEND, region="eu-west-1", s3_bucket="payloads")
    assert set(named) == {f"CELERY_{key.upper()}" for key in plain} | {"CELERY_RESULT_BACKEND"}
    app = Celery("django", set_as_current=False)
    app.config_from_object(django_settings(**named), namespace="CELERY")
    for key, value in plain.items():
        assert app.conf[key] == value, key
    assert app.conf.result_backend == BACKEND
    assert Settings.read(app.conf).s3_bucket == "payloads"  # the package's own settings reach the reader


def test_other_namespace_and_none():
    assert "PROJ_BROKER_URL" in celery_settings(["jobs"], namespace="PROJ")
    bare = celery_settings(["jobs"], namespace="")
    assert bare["BROKER_URL"] == "sqs://" and "CELERY_BROKER_URL" not in bare


def test_bad_arguments_fail_in_settings_py_naming_them():
    with pytest.raises(ValueError, match="fifo=True but FIFO queue names end in '.fifo'"):
        celery_settings(["jobs"], fifo=True)


def test_a_namespaced_package_setting_is_read_or_refused():
    app = Celery("django", set_as_current=False)
    app.config_from_object(django_settings(CELERY_SQS_DDB_TTL=False, CELERY_RESULT_BACKEND=BACKEND),
                           namespace="CELERY")
    try:
        ttl = Settings.read(app.conf).ttl
    except ValueError:
        return  # refused with an error: fine too
    assert ttl is False
