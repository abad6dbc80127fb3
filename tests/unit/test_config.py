"""Settings parsing and validation: every bad value names its key and the accepted values."""

from __future__ import annotations

import pytest
from celery import Celery

from celery_sqs_ddb import broker_settings
from celery_sqs_ddb.config import SECTION, Settings, parse_url, settings_table
from celery_sqs_ddb.exceptions import ConfigurationError, PickleRefused


def app_with(**conf):
    app = Celery("cfg", set_as_current=False)
    app.conf.update(conf)
    return app


def read(app, url=None):
    return Settings.read(app.conf, url=url)


def test_url_gives_table_region_and_endpoint():
    s = read(app_with(), "ddb://jobs?region=eu-west-1&endpoint_url=http://127.0.0.1:5000")
    assert (s.table, s.region, s.endpoint_url) == ("jobs", "eu-west-1", "http://127.0.0.1:5000")


def test_url_query_wins_over_settings_and_settings_fill_the_rest():
    app = app_with(sqs_ddb_table="other", sqs_ddb_status_shards=8, sqs_ddb_region="us-east-1")
    s = read(app, "ddb://jobs?region=eu-west-1")
    assert (s.table, s.region, s.status_shards) == ("jobs", "eu-west-1", 8)


def test_region_falls_back_to_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert read(app_with(), "ddb://t").region == "ap-south-1"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("sqs_ddb_status_shards", 0, r"sqs_ddb_status_shards=0 is out of range; accepted: 1\.\.64"),
        ("sqs_ddb_status_shards", "many", r"sqs_ddb_status_shards='many' is not an integer; accepted: 1\.\.64"),
        ("sqs_ddb_ttl", "maybe", r"sqs_ddb_ttl='maybe' is not a boolean"),
        ("sqs_ddb_retry_mode", "legacy", r"sqs_ddb_retry_mode='legacy' is not accepted; accepted values: "
                                         r"standard, adaptive"),
        ("sqs_ddb_max_attempts", 50, r"sqs_ddb_max_attempts=50 is out of range; accepted: 1\.\.20"),
        ("sqs_ddb_claim", "sometimes", r"sqs_ddb_claim='sometimes' is not accepted; accepted values: strict, "
                                       r"redelivery, off"),
        ("sqs_ddb_result_s3_threshold", 500_000, r"sqs_ddb_result_s3_threshold=500000 is out of range"),
        ("sqs_ddb_poll_max_interval", "x", r"sqs_ddb_poll_max_interval='x' is not a number"),
        ("sqs_ddb_control_topic_arn", 12, r"sqs_ddb_control_topic_arn=12 must be a string"),
        ("sqs_ddb_status_shards", True, r"sqs_ddb_status_shards=True is not an integer"),
        ("sqs_ddb_tabel", "typo", r"unknown setting 'sqs_ddb_tabel'; accepted keys: sqs_ddb_table"),
    ],
)
def test_bad_settings_name_the_key_and_accepted_values(key, value, message):
    with pytest.raises(ConfigurationError, match=message):
        read(app_with(**{key: value}), "ddb://t?region=eu-west-1")


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
        read(app_with(), url)


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
        {"accept_content": ["json", "application/x-python-serialize"]},  # pickle by its MIME name alone
        {"task_serializer": "application/x-python-serialize"},
        {"event_serializer": "pickle"},  # task events travel over SNS with events on
    ],
)
def test_pickle_is_refused_unless_allowed(conf):
    with pytest.raises(PickleRefused, match="pickle"):
        read(app_with(**conf), "ddb://t")
    assert read(app_with(sqs_ddb_allow_pickle=True, **conf), "ddb://t").allow_pickle


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
    assert conf["worker_consumer"] == "celery_sqs_ddb.worker:Consumer"  # how a worker gets the steps
    assert options["predefined_queues"] == {"jobs.fifo": {
        "url": "https://sqs.eu-west-1.amazonaws.com/1/jobs.fifo",
        "dead_letter_url": "https://sqs.eu-west-1.amazonaws.com/1/dlq.fifo"}}
    assert options["wait_time_seconds"] == 20 and options["visibility_timeout"] == 30
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"] and conf["task_track_started"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert options[SECTION] == {"region": "eu-west-1", "s3_bucket": "b"}  # one section, read by all
    assert not any(key.startswith("sqs_ddb_") for key in conf)
    assert options["region"] == "eu-west-1"  # kombu's own option too
    assert conf["task_default_queue"] == "jobs.fifo"


def test_one_reader_sees_the_section_the_app_keys_and_the_url_in_that_order(monkeypatch):
    monkeypatch.setenv("SQS_DDB_STATUS_SHARDS", "2")
    monkeypatch.setenv("SQS_DDB_CLAIM", "off")
    app = app_with(**broker_settings(["q"], claim="redelivery", s3_bucket="b", ttl=False),
                   sqs_ddb_summary_chars=10, sqs_ddb_ttl=False)
    s = read(app, "ddb://t?status_shards=8")
    assert (s.status_shards, s.claim, s.s3_bucket, s.summary_chars, s.ttl) == (8, "redelivery", "b", 10, False)
    transport = Settings.read(None, app.conf.broker_transport_options)  # the transport: no app
    assert (transport.s3_bucket, transport.claim, transport.status_shards) == ("b", "redelivery", 2)


def test_a_broker_setting_given_only_to_the_app_says_where_it_belongs():
    app = app_with(**broker_settings(["q"]), sqs_ddb_s3_bucket="b")
    with pytest.raises(ConfigurationError, match=r"sqs_ddb_s3_bucket is read by the SQS transport, which does not "
                                                  r"see app settings: pass s3_bucket='b' to celery_sqs_ddb\."
                                                  r"broker_settings"):
        read(app)
    assert read(app_with(sqs_ddb_s3_bucket="b")).s3_bucket == "b"  # another broker: the backend reads the key


def test_the_same_setting_twice_with_different_values_is_refused():
    app = app_with(**broker_settings(["q"], claim="off"), sqs_ddb_claim="strict")
    with pytest.raises(ConfigurationError, match=r"sqs_ddb_claim='strict' contradicts "
                                                  r"broker_transport_options\['sqs_ddb'\]\['claim'\]='off'"):
        read(app)


def test_broker_settings_validates_package_settings_by_name():
    with pytest.raises(ConfigurationError, match=r"sqs_ddb_payload_s3_threshold=5000000 is out of range"):
        broker_settings(["q"], payload_s3_threshold=5_000_000)
    assert broker_settings(["q"], task_routes={"a": "q"})["task_routes"] == {"a": "q"}  # a Celery key


def test_readme_settings_table_is_the_one_generated_from_the_definitions():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert settings_table() in readme, "README settings table is stale: python -m celery_sqs_ddb.config"


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


def test_transport_options_are_validated_with_the_settings():
    assert Settings.read(None, {SECTION: {"s3_bucket": "b", "heartbeat": "off"}}).heartbeat is False
    with pytest.raises(ConfigurationError, match=r"sqs_ddb_payload_s3_threshold=5000000 is out of range"):
        Settings.read(None, {SECTION: {"payload_s3_threshold": 5_000_000}})
    with pytest.raises(ConfigurationError, match=r"unknown broker_transport_options\['sqs_ddb'\] 's3bucket'"):
        Settings.read(None, {SECTION: {"s3bucket": "b"}})
