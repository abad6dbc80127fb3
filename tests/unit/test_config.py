"""Settings parsing and validation: every bad value names its key and the accepted values."""

from __future__ import annotations

import pytest
from celery import Celery

from celery_sqs_ddb import broker_settings
from celery_sqs_ddb.config import Settings, TransportOptions, parse_url
from celery_sqs_ddb.exceptions import ConfigurationError, PickleRefused


def app_with(**conf):
    app = Celery("cfg", set_as_current=False)
    app.conf.update(conf)
    return app


def test_url_gives_table_region_and_endpoint():
    s = Settings.from_app(app_with(), "ddb://jobs?region=eu-west-1&endpoint_url=http://127.0.0.1:5000")
    assert (s.table, s.region, s.endpoint_url) == ("jobs", "eu-west-1", "http://127.0.0.1:5000")


def test_url_query_wins_over_settings_and_settings_fill_the_rest():
    app = app_with(sqs_ddb_table="other", sqs_ddb_status_shards=8, sqs_ddb_region="us-east-1")
    s = Settings.from_app(app, "ddb://jobs?region=eu-west-1")
    assert (s.table, s.region, s.status_shards) == ("jobs", "eu-west-1", 8)


def test_region_falls_back_to_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert Settings.from_app(app_with(), "ddb://t").region == "ap-south-1"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("sqs_ddb_status_shards", 0, r"sqs_ddb_status_shards=0 is out of range; accepted: 1\.\.64"),
        ("sqs_ddb_status_shards", "many", r"sqs_ddb_status_shards='many' is not an integer; accepted: 1\.\.64"),
        ("sqs_ddb_ttl", "maybe", r"sqs_ddb_ttl='maybe' is not a boolean"),
        ("sqs_ddb_retry_mode", "legacy", r"sqs_ddb_retry_mode='legacy' is not accepted; accepted values: "
                                         r"standard, adaptive"),
        ("sqs_ddb_max_attempts", 50, r"sqs_ddb_max_attempts=50 is out of range; accepted: 1\.\.20"),
        ("sqs_ddb_claim", "sometimes", r"sqs_ddb_claim='sometimes' is not accepted; accepted values: strict, off"),
        ("sqs_ddb_result_s3_threshold", 500_000, r"sqs_ddb_result_s3_threshold=500000 is out of range"),
        ("sqs_ddb_poll_max_interval", "x", r"sqs_ddb_poll_max_interval='x' is not a number"),
        ("sqs_ddb_s3_bucket", 12, r"sqs_ddb_s3_bucket=12 must be a string"),
        ("sqs_ddb_tabel", "typo", r"unknown setting 'sqs_ddb_tabel'; accepted keys: sqs_ddb_table"),
    ],
)
def test_bad_settings_name_the_key_and_accepted_values(key, value, message):
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_app(app_with(**{key: value}), "ddb://t?region=eu-west-1")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("dynamodb://t", r"must start with ddb://"),
        ("ddb://t?regoin=eu-west-1", r"unknown query parameter 'regoin'"),
        ("ddb://t?status_shards=100", r"sqs_ddb_status_shards='100' is out of range"),
    ],
)
def test_bad_urls(url, message):
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_app(app_with(), url)


def test_missing_table_and_region_errors_say_where_to_set_them(monkeypatch):
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    s = Settings.validated({})
    with pytest.raises(ConfigurationError, match="sqs_ddb_table"):
        s.require_table()
    with pytest.raises(ConfigurationError, match="sqs_ddb_region"):
        s.require_region()


def test_url_parts():
    assert parse_url("ddb://my-table") == {"table": "my-table"}


@pytest.mark.parametrize(
    "conf",
    [
        {"task_serializer": "pickle"},
        {"result_serializer": "pickle"},
        {"accept_content": ["json", "pickle"]},
        {"result_accept_content": ["application/x-python-serialize", "pickle"]},
        {"event_serializer": "pickle"},  # task events travel over SNS with events on
    ],
)
def test_pickle_is_refused_unless_allowed(conf):
    with pytest.raises(PickleRefused, match="pickle"):
        Settings.from_app(app_with(**conf), "ddb://t")
    assert Settings.from_app(app_with(sqs_ddb_allow_pickle=True, **conf), "ddb://t").allow_pickle


def test_backend_refuses_pickle_through_the_entry_point():
    app = app_with(result_serializer="pickle", result_backend="ddb://t?region=eu-west-1")
    with pytest.raises(PickleRefused):
        app.backend  # noqa: B018


def test_broker_settings_with_urls_makes_no_aws_call():
    conf = broker_settings({"jobs.fifo": "https://sqs.eu-west-1.amazonaws.com/1/jobs.fifo"}, fifo=True,
                           region="eu-west-1", visibility_timeout=30,
                           dead_letter_queue="https://sqs.eu-west-1.amazonaws.com/1/dlq.fifo", s3_bucket="b")
    options = conf["broker_transport_options"]
    assert conf["broker_transport"] == "celery_sqs_ddb.transport:Transport"
    assert options["predefined_queues"] == {"jobs.fifo": {
        "url": "https://sqs.eu-west-1.amazonaws.com/1/jobs.fifo",
        "dead_letter_url": "https://sqs.eu-west-1.amazonaws.com/1/dlq.fifo"}}
    assert options["wait_time_seconds"] == 20 and options["visibility_timeout"] == 30
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["sqs_ddb_s3_bucket"] == "b" and options["s3_bucket"] == "b"
    assert conf["task_default_queue"] == "jobs.fifo"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"queues": ["jobs"], "fifo": True}, r"fifo=True but FIFO queue names end in '.fifo'"),
        ({"queues": ["jobs.fifo"], "fifo": False}, r"ends in '.fifo' but fifo=False"),
        ({"queues": []}, r"needs at least one queue"),
        ({"queues": {"q": "u"}, "visibility_timeout": 50_000}, r"visibility_timeout=50000 is out of range"),
        ({"queues": {"q": "u"}, "wait_time_seconds": 21}, r"wait_time_seconds=21 is out of range"),
    ],
)
def test_broker_settings_validation(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        broker_settings(**kwargs)


def test_transport_options_validation():
    assert TransportOptions.from_options({"s3_bucket": "b", "heartbeat": "off"}).heartbeat is False
    with pytest.raises(ConfigurationError, match=r"broker_transport_options\['payload_s3_threshold'\]"):
        TransportOptions.from_options({"payload_s3_threshold": 5_000_000})
