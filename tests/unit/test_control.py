"""Remote control plane with in-process moto: names, settings, queues, subscriptions, sweep."""

from __future__ import annotations

import base64
import gc
import json
import time

import boto3
import pytest
from botocore.stub import Stubber
from celery import Celery
from kombu import Connection
from moto import mock_aws

import celery_sqs_ddb
from celery_sqs_ddb.config import Settings
from celery_sqs_ddb.control import ControlOptions, ControlPlane, queue_name
from celery_sqs_ddb.control.names import TAG_OWNER, TAG_ROLE, TAG_SEEN, TAG_SUBSCRIPTION
from celery_sqs_ddb.exceptions import AccessDenied, ConfigurationError
from celery_sqs_ddb.transport import Channel

REGION = "eu-west-1"
OPTIONS = ControlOptions(remote_control=True, events=True, namespace="jobs", keepalive=1, stale_after=10)


# ------------------------------------------------------------------ names


@pytest.mark.parametrize(("kombu_name", "role", "name"), [
    ("celery@3f2a.celery.pidbox", "worker", "jobs-ctl-worker-celery-3f2a"),
    ("w1@ip-10-0-0-1.ec2.internal.celery.pidbox", "worker", "jobs-ctl-worker-w1-ip-10-0-0-1-ec2-internal"),
    ("5b0c-11.reply.celery.pidbox", "reply", "jobs-ctl-reply-5b0c-11"),
    ("celeryev.0f1e", "events", "jobs-ctl-events-0f1e"),
])
def test_control_queue_names_are_recognizable(kombu_name, role, name):
    queue = OPTIONS.queue_for(kombu_name)
    assert (queue.role, queue.name) == (role, name)


def test_task_queues_are_not_control_queues():
    assert OPTIONS.queue_for("jobs.fifo") is None
    assert OPTIONS.queue_for("celery") is None


def test_long_hostnames_fit_sqs_s_80_characters_and_stay_distinct():
    a = queue_name("jobs-ctl-worker-", "celery@" + "a" * 100 + "1")
    b = queue_name("jobs-ctl-worker-", "celery@" + "a" * 100 + "2")
    assert len(a) == len(b) == 80 and a != b
    assert a.startswith("jobs-ctl-worker-celery-aaaa")
    assert all(c.isalnum() or c in "-_" for c in a)


# ------------------------------------------------------------------ settings


def options_of(app_conf: dict | None = None, **broker_kwargs) -> ControlOptions:
    app = Celery("t", set_as_current=False)
    app.conf.update(celery_sqs_ddb.broker_settings(["jobs.fifo"], **broker_kwargs), **(app_conf or {}))
    transport_options = app.conf.broker_transport_options
    return ControlOptions.from_settings(Settings.read(app.conf), transport_options["predefined_queues"])


def test_options_come_from_the_one_settings_reader(monkeypatch):
    assert options_of().active is False  # off by default
    monkeypatch.setenv("SQS_DDB_REMOTE_CONTROL", "true")
    monkeypatch.setenv("SQS_DDB_CONTROL_KEEPALIVE", "5")
    resolved = options_of(control_keepalive=7, events=False)
    assert resolved.remote_control is True  # environment
    assert resolved.keepalive == 7  # broker_settings over the environment
    assert resolved.events is False
    assert resolved.namespace == "jobs"  # the first queue, without .fifo


def test_broker_settings_for_events_turn_on_worker_events():
    conf = celery_sqs_ddb.broker_settings(["jobs"], remote_control=True, events=True,
                                          control_topic_arn="arn:aws:sns:eu-west-1:123456789012:jobs-control")
    assert conf["worker_send_task_events"] is True
    assert conf["broker_transport_options"]["sqs_ddb"] == {
        "remote_control": True, "events": True, "control_topic_arn": "arn:aws:sns:eu-west-1:123456789012:jobs-control"}


@pytest.mark.parametrize(("raw", "message"), [
    ({"control_topic_arn": "jobs-control"}, "sqs_ddb_control_topic_arn='jobs-control' is not accepted; accepted: "
                                            "an SNS topic ARN"),
    ({"control_namespace": "jobs.fifo"}, "sqs_ddb_control_namespace='jobs.fifo' is not accepted"),
    ({"remote_control": "maybe"}, "sqs_ddb_remote_control='maybe' is not a boolean"),
    ({"control_keepalive": 60, "control_stale_after": 90}, "must be at least twice sqs_ddb_control_keepalive"),
    ({"control_stale_after": 90}, "must be at least twice sqs_ddb_control_keepalive=60.0"),  # with the default
    ({"topic": "x"}, "unknown broker_transport_options['sqs_ddb'] 'topic'"),
])
def test_bad_options_name_the_setting(raw, message):
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Settings.read(None, {"sqs_ddb": raw})


def test_the_transport_offers_fanout_only_with_remote_control():
    def fanout(**kwargs):
        options = celery_sqs_ddb.broker_settings({"jobs": "https://sqs.eu-west-1.amazonaws.com/1/jobs"},
                                                 region=REGION, **kwargs)["broker_transport_options"]
        with Connection("sqs://", transport="celery_sqs_ddb.transport:Transport",
                        transport_options=options) as conn:
            return conn.supports_exchange_type("fanout")

    assert fanout() is False
    assert fanout(events=True) is False  # events alone start no remote-control consumer
    assert fanout(remote_control=True) is True


# ------------------------------------------------------------------ queues and topics


@pytest.fixture
def plane():
    with mock_aws():
        yield ControlPlane(OPTIONS, {"region": REGION})


def test_queues_are_encrypted_short_lived_and_tagged(plane):
    queue = OPTIONS.queue_for("w1@host.celery.pidbox")
    url = plane.ensure_queue(queue)
    attrs = plane.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["SqsManagedSseEnabled"] == "true" and attrs["MessageRetentionPeriod"] == "60"
    tags = plane.sqs.list_queue_tags(QueueUrl=url)["Tags"]
    assert tags[TAG_ROLE] == "worker" and tags[TAG_OWNER] == "w1@host"
    assert abs(float(tags[TAG_SEEN]) - time.time()) < 5
    assert plane.ensure_queue(queue) == url  # a restarted worker reuses its queue


def test_a_subscribed_queue_receives_broadcasts_raw(plane):
    url = plane.ensure_queue(OPTIONS.queue_for("w1@host.celery.pidbox"))
    subscription = plane.subscribe(url, "control")
    topic = plane.topic_arn("control")
    assert topic.endswith(":jobs-control")
    attrs = plane.sns.get_topic_attributes(TopicArn=topic)["Attributes"]
    assert attrs["KmsMasterKeyId"] == "alias/aws/sns"  # encrypted at rest
    policy = json.loads(plane.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])[
        "Attributes"]["Policy"])
    assert policy["Statement"][0]["Condition"] == {"ArnEquals": {"aws:SourceArn": topic}}
    assert plane.sqs.list_queue_tags(QueueUrl=url)["Tags"][TAG_SUBSCRIPTION] == subscription
    plane.sns.publish(TopicArn=topic, Message='{"method": "ping"}')
    body = plane.sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"]
    assert json.loads(body) == {"method": "ping"}  # raw delivery: the kombu message itself


def test_configured_topics_are_used_as_given_and_never_created():
    with mock_aws():
        arn = "arn:aws:sns:eu-west-1:123456789012:made-by-terraform"
        plane = ControlPlane(ControlOptions(remote_control=True, namespace="jobs", control_topic_arn=arn),
                             {"region": REGION})
        assert plane.topic_arn("control") == arn
        assert plane.sns.list_topics()["Topics"] == []


def test_sweep_removes_stale_queues_and_orphan_subscriptions_and_keeps_live_ones(plane):
    live = plane.ensure_queue(OPTIONS.queue_for("live@host.celery.pidbox"))
    dead = plane.ensure_queue(OPTIONS.queue_for("dead@host.celery.pidbox"))
    plane.subscribe(live, "control")
    plane.subscribe(dead, "control")
    orphan = plane.ensure_queue(OPTIONS.queue_for("gone@host.celery.pidbox"))
    orphan_subscription = plane.subscribe(orphan, "control")
    plane.sqs.delete_queue(QueueUrl=orphan)  # deleted without unsubscribing
    plane.sqs.tag_queue(QueueUrl=dead, Tags={TAG_SEEN: str(int(time.time()) - 60)})
    unrelated = plane.sqs.create_queue(QueueName="jobs-other")["QueueUrl"]

    preview = plane.sweep(dry_run=True)
    assert preview.queues_removed == ["jobs-ctl-worker-dead-host"]
    assert len(plane.sqs.list_queues(QueueNamePrefix="jobs-ctl-")["QueueUrls"]) == 2  # nothing removed

    report = plane.sweep()
    assert report.queues_removed == ["jobs-ctl-worker-dead-host"]
    assert report.queues_kept == ["jobs-ctl-worker-live-host"]
    assert orphan_subscription in report.subscriptions_removed and len(report.subscriptions_removed) == 2
    assert plane.sqs.list_queues(QueueNamePrefix="jobs-")["QueueUrls"] == [live, unrelated]
    endpoints = [s["Endpoint"] for s in plane.sns.list_subscriptions()["Subscriptions"]]
    assert [e.rsplit(":", 1)[-1] for e in endpoints] == ["jobs-ctl-worker-live-host"]


def test_missing_permission_names_the_action_and_the_setting(plane):
    queue = OPTIONS.queue_for("w1@host.celery.pidbox")
    with Stubber(plane.sqs) as stub:
        stub.add_client_error("get_queue_url", "QueueDoesNotExist", http_status_code=400)
        stub.add_client_error("create_queue", "AccessDenied", "not authorized", http_status_code=403)
        with pytest.raises(AccessDenied, match=r"sqs:CreateQueue on SQS queue 'jobs-ctl-worker-w1-host' "
                                               r"\(sqs_ddb_remote_control\)"):
            plane.ensure_queue(queue)


def test_inspect_without_remote_control_says_how_to_enable_it():
    with mock_aws():
        url = boto3.client("sqs", region_name=REGION).create_queue(QueueName="jobs")["QueueUrl"]
        app = Celery("t", set_as_current=False)
        app.conf.update(celery_sqs_ddb.broker_settings({"jobs": url}, region=REGION))
        with pytest.raises(ConfigurationError, match=r"broker_settings\(\.\.\., remote_control=True\)"):
            app.control.inspect(timeout=0.1).ping()


def test_owner_keeps_its_queues_fresh_recreates_a_deleted_one_and_deletes_them_when_it_stops():
    from celery_sqs_ddb.control import OwnedQueues

    with mock_aws():
        options = ControlOptions(remote_control=True, namespace="jobs", keepalive=0.5, stale_after=5)
        plane = ControlPlane(options, {"region": REGION})
        owned = OwnedQueues()
        queue = options.queue_for("w1@host.celery.pidbox")
        url = plane.ensure_queue(queue)
        owned.add(plane, queue, url)
        owned.subscribed(url, plane.subscribe(url, "control"))
        plane.sqs.tag_queue(QueueUrl=url, Tags={TAG_SEEN: "0"})

        def seen() -> float:
            try:
                return float(plane.sqs.list_queue_tags(QueueUrl=url)["Tags"].get(TAG_SEEN, 0))
            except plane.sqs.exceptions.QueueDoesNotExist:
                return 0.0

        deadline = time.monotonic() + 10
        while seen() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert seen() > 0  # refreshed by the keepalive thread

        plane.sqs.delete_queue(QueueUrl=url)  # a cleanup that ran during an outage
        deadline = time.monotonic() + 10
        while plane.lookup(queue.name) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert plane.lookup(queue.name) == url  # recreated, same URL
        deadline = time.monotonic() + 10  # subscribed again: the subscription tag is written last
        while TAG_SUBSCRIPTION not in plane.sqs.list_queue_tags(QueueUrl=url).get("Tags", {}) and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        policy = plane.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"]
        assert "sns.amazonaws.com" in policy  # with the topic's permission

        assert owned.release_all() == 1
        assert plane.sqs.list_queues(QueueNamePrefix="jobs-ctl-").get("QueueUrls", []) == []
        assert plane.sns.list_subscriptions()["Subscriptions"] == []
        deadline = time.monotonic() + 5
        while owned.thread is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert owned.thread is None  # nothing left to keep alive: the thread ended


def test_each_call_gets_a_reply_queue_of_its_own_even_when_kombu_repeats_the_name(monkeypatch):
    """kombu names the reply queue after an oid that repeats (in 5.7: ``id()`` of a short-lived copy);
    SQS refuses a name deleted less than 60 s ago, so the queue is named by the call's ticket, and
    a worker's reply (which carries the ticket) reaches it."""
    from kombu.pidbox import Mailbox

    monkeypatch.setattr(Mailbox, "oid", property(lambda self: "0id-repeats"))
    created, deleted = [], []
    real_ensure, real_delete = ControlPlane.ensure_queue, ControlPlane.delete
    with mock_aws():
        url = boto3.client("sqs", region_name=REGION).create_queue(QueueName="jobs")["QueueUrl"]
        app = Celery("t", set_as_current=False)
        app.conf.update(celery_sqs_ddb.broker_settings({"jobs": url}, region=REGION, remote_control=True))
        worker_side = app.connection_for_write()

        def ensure(plane, queue):
            found = real_ensure(plane, queue)
            if queue.role == "reply":
                assert queue.name not in deleted, f"{queue.name} created again after its deletion"
                created.append(queue.name)
                # what a worker does when the broadcast reaches it: reply by the ticket
                app.control.mailbox(worker_side)._publish_reply(
                    {"w1@host": {"ok": "pong"}}, "reply.celery.pidbox", "0id-repeats", queue.owner)
            return found

        def delete(plane, queue_url, subscription=None):
            deleted.append(queue_url.rsplit("/", 1)[-1])
            return real_delete(plane, queue_url, subscription)

        monkeypatch.setattr(ControlPlane, "ensure_queue", ensure)
        monkeypatch.setattr(ControlPlane, "delete", delete)
        for _ in range(3):
            assert app.control.inspect(timeout=2, destination=["w1@host"]).ping() == {"w1@host": {"ok": "pong"}}
        worker_side.release()
        # no channel keeps a finished call's queue (kombu publishes on pooled channels that live on)
        channels = [o for o in gc.get_objects() if isinstance(o, Channel) and o.connection is not None]
        assert channels and not [name for c in channels for name in c._queue_cache if "-ctl-reply-" in name]
    assert len(set(created)) == 3 and all("0id-repeats" not in name for name in created)
    assert deleted == created  # each call's queue is gone when the call returns


def test_a_reply_to_a_queue_not_found_is_retried_on_the_event_loop_not_by_sleeping(monkeypatch):
    """A late reply (the client gave up and deleted its queue) must not block a worker's consumer:
    the lookups that wait for a just-created queue to become visible are hub timers."""
    from celery_sqs_ddb.control import channel as control_channel

    class Hub:
        def __init__(self) -> None:
            self.later: list[tuple[float, object, tuple]] = []

        def call_later(self, delay: float, fun: object, *args: object) -> None:
            self.later.append((delay, fun, args))

    with mock_aws():
        url = boto3.client("sqs", region_name=REGION).create_queue(QueueName="jobs")["QueueUrl"]
        app = Celery("t", set_as_current=False)
        app.conf.update(celery_sqs_ddb.broker_settings({"jobs": url}, region=REGION, remote_control=True))
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            hub = channel.hub = Hub()
            monkeypatch.setattr(control_channel.time, "sleep", lambda seconds: pytest.fail("slept on the loop"))
            message = channel.prepare_message(json.dumps({"w1@host": {"ok": "pong"}}), 0, "application/json",
                                              "utf-8", {"ticket": "no-such-ticket"}, {})
            channel.basic_publish(message, "reply.celery.pidbox", "some-oid")  # as kombu's Mailbox does
            assert [delay for delay, _, _ in hub.later] == [0.2]
            _, fun, args = hub.later.pop()
            fun(*args)  # still missing: one more try, later
            assert [delay for delay, _, _ in hub.later] == [0.4]
            queue = channel.control.reply_queue("some-oid.reply.celery.pidbox", "no-such-ticket")
            reply_url = boto3.client("sqs", region_name=REGION).create_queue(QueueName=queue.name)["QueueUrl"]
            _, fun, args = hub.later.pop()
            fun(*args)  # visible now: delivered, nothing more scheduled
            assert hub.later == []
            body = boto3.client("sqs", region_name=REGION).receive_message(QueueUrl=reply_url)["Messages"][0]["Body"]
            sent = json.loads(body)
            assert sent["headers"]["ticket"] == "no-such-ticket"
            assert json.loads(base64.b64decode(sent["body"])) == {"w1@host": {"ok": "pong"}}
