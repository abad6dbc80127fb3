"""Issue 16 (correctness) without workers, against the moto server: listing pager, chord counting,
pickle guard, fetched message attributes, groups over the item budget, untrusted pointers."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from celery import states as celery_states

import celery_sqs_ddb
from celery_sqs_ddb import schema, states
from celery_sqs_ddb.exceptions import AccessDenied, PickleRefused, ResultTooLarge, UntrustedPointer
from celery_sqs_ddb.payloads import PayloadStore
from celery_sqs_ddb.table import item_to_python
from tests.support.stack import make_client_app


class Request:
    """The attributes of a task request the backend reads."""

    def __init__(self, task_id: str, group: str | None = None, chord: Any = None) -> None:
        self.id = task_id
        self.task = "tests.add"
        self.hostname = "celery@host"
        self.retries = 0
        self.args, self.kwargs = (1, 2), {}
        self.argsrepr, self.kwargsrepr = "(1, 2)", "{}"
        self.delivery_info = {"routing_key": "celery"}
        self.group = group
        self.parent_id = None
        self.children: list[Any] = []
        self.chord = chord


def direct_app(stack: Any, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> Any:
    """The test app for ``stack`` talking to moto directly (the counting proxy costs ~45 ms a call)."""
    return make_client_app(stack, monkeypatch, TEST_ENDPOINT=stack.server.direct_url, **extra)


def index_rows(stack: Any, status: str) -> list[tuple[str, str]]:
    """(updated_at, task_id) of every row of ``status`` in the index, straight from a scan."""
    rows, params = [], {"TableName": stack.table}
    while True:
        page = stack.ddb.scan(**params)
        for raw in page["Items"]:
            item = item_to_python(raw)
            if str(item.get(schema.STATUS_SHARD, "")).startswith(status + "#"):
                rows.append((item[schema.UPDATED_AT], item[schema.TASK_ID]))
        if "LastEvaluatedKey" not in page:
            return rows
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# --------------------------------------------------------------------------- 1. listing pager


@pytest.mark.parametrize("shards", [1, 2, 7, 64])
def test_jobs_pager_reaches_every_job_exactly_once_newest_first(stack, monkeypatch, shards):
    app = direct_app(stack, monkeypatch)
    app.conf.sqs_ddb_status_shards = shards
    backend = app.backend
    assert backend.settings.status_shards == shards
    # QUEUED rows written in bulk share their updated_at (25 a BatchWriteItem): ties the cursor
    # must break by task id; SUCCESS rows each have their own time.
    queued = [f"q-{uuid.uuid4().hex[:10]}" for _ in range(34)]
    backend.queue_rows((task_id, "tests.add", "celery") for task_id in queued)
    done = [f"s-{i:02d}-{uuid.uuid4().hex[:6]}" for i in range(34)]
    for task_id in done:
        backend.store_result(task_id, 1, states.SUCCESS, request=Request(task_id))
    for status, ids in (("QUEUED", queued), ("SUCCESS", done)):
        if shards > 1:
            assert len({schema.shard_of(t, shards) for t in ids}) > 1  # really spans shards
        seen: list[dict[str, Any]] = []
        cursor = None
        pages = 0
        while True:
            page, cursor = celery_sqs_ddb.jobs(app, status=status, limit=4, cursor=cursor)
            pages += 1
            assert len(page) <= 4
            seen.extend(page)
            if cursor is None:
                break
            assert pages < 20, "the cursor does not advance"
        listed = [j["task_id"] for j in seen]
        assert sorted(listed) == sorted(ids), f"missing {set(ids) - set(listed)}, extra {set(listed) - set(ids)}"
        assert len(listed) == len(set(listed)), "a job was listed twice"
        expected = sorted(index_rows(stack, status), reverse=True)  # newest first, ties by task id
        assert [(j["updated_at"], j["task_id"]) for j in seen] == expected
        assert pages == 9  # 34 jobs by 4: 8 full pages and one of 2
    # newest first: the SUCCESS rows were written in order
    first, _ = celery_sqs_ddb.jobs(app, status="SUCCESS", limit=3)
    assert [j["task_id"] for j in first] == done[::-1][:3]


def test_jobs_pager_orders_ties_inside_one_shard_by_task_id(stack, monkeypatch):
    """DynamoDB does not document the order of index rows with equal sort keys: the pager must not
    rely on it (moto orders them by the table key, so the Query answer is reversed here)."""
    app = direct_app(stack, monkeypatch)
    app.conf.sqs_ddb_status_shards = 1
    backend = app.backend
    ids = [f"tie-{i:02d}" for i in range(10)]
    backend.queue_rows((task_id, "tests.add", "celery") for task_id in ids)
    client = backend.table.client
    real_query = client.query

    def query_with_ties_reversed(**params: Any) -> Any:
        response = real_query(**params)
        response["Items"] = response["Items"][::-1]  # same updated_at: any order is DynamoDB's right
        return response

    monkeypatch.setattr(client, "query", query_with_ties_reversed)
    seen, cursor = [], None
    while True:
        page, cursor = celery_sqs_ddb.jobs(app, status="QUEUED", limit=3, cursor=cursor)
        seen.extend(j["task_id"] for j in page)
        if cursor is None:
            break
    assert seen == ids[::-1]


# --------------------------------------------------------------------------- 2. chord counting


@pytest.fixture
def chord_app(stack, monkeypatch):
    """The test app on the moto server; callbacks the backend sends are recorded, not published."""
    app = direct_app(stack, monkeypatch)
    sent: list[tuple[Any, ...]] = []
    monkeypatch.setattr(app.amqp, "_retry_publish", lambda send, *args, **kwargs: sent.append(args))
    app.sent_callbacks = sent
    return app


def make_chord(app: Any, parts: int) -> tuple[str, list[str], dict[str, Any]]:
    """A saved header group of ``parts`` finished parts (values 1..n) and its callback's request dict."""
    gid = f"grp-{uuid.uuid4().hex[:8]}"
    ids = [f"{gid}-part{i}" for i in range(parts)]
    callback = app.tasks["tests.tsum"].s().set(task_id=f"{gid}-callback")
    chord = dict(callback, chord_size=parts)
    for i, task_id in enumerate(ids):
        app.backend.store_result(task_id, i + 1, states.SUCCESS, request=Request(task_id, gid))
    app.GroupResult(gid, [app.AsyncResult(t) for t in ids]).save(backend=app.backend)
    return gid, ids, chord


def test_chord_part_returned_twice_is_counted_once(chord_app):
    app, backend = chord_app, chord_app.backend
    gid, ids, chord = make_chord(app, 3)
    backend.on_chord_part_return(Request(ids[0], gid, chord), states.SUCCESS, 1)
    backend.on_chord_part_return(Request(ids[0], gid, chord), states.SUCCESS, 1)  # a duplicate delivery
    backend.on_chord_part_return(Request(ids[1], gid, chord), states.SUCCESS, 2)
    assert app.sent_callbacks == []  # 2 of 3 parts: a counter counting calls would have fired
    assert int(backend.table.get(schema.chord_key(gid))[schema.CHORD_COUNT]) == 2
    backend.on_chord_part_return(Request(ids[2], gid, chord), states.SUCCESS, 3)
    assert app.sent_callbacks == [([1, 2, 3],)]
    backend.on_chord_part_return(Request(ids[2], gid, chord), states.SUCCESS, 3)  # the last part again
    backend.on_chord_part_return(Request(ids[1], gid, chord), states.SUCCESS, 2)
    assert app.sent_callbacks == [([1, 2, 3],)]  # fired once
    assert backend.table.get(schema.chord_key(gid))[schema.CHORD_FIRED] is True


def test_chord_whose_header_chain_ends_in_a_group_waits_for_every_task_of_that_group(chord_app):
    """chord(group(chain(a, group(b, c))), body): the saved header has one result (the inner group),
    but b and c each return a part. Celery says so with set_chord_size(gid, 2) as it sends them
    (celery 5.7 puts no chord_size in the request): the body must wait for both."""
    app, backend = chord_app, chord_app.backend
    gid = f"grp-{uuid.uuid4().hex[:8]}"
    inner = app.GroupResult(f"{gid}-inner", [app.AsyncResult(f"{gid}-b"), app.AsyncResult(f"{gid}-c")])
    backend.apply_chord((gid, [inner]), body=None)
    chord = dict(app.tasks["tests.tsum"].s().set(task_id=f"{gid}-callback"))  # no chord_size
    backend.set_chord_size(gid, 2)
    for i, part in enumerate((f"{gid}-b", f"{gid}-c")):
        backend.store_result(part, i + 1, states.SUCCESS, request=Request(part, gid))
    backend.on_chord_part_return(Request(f"{gid}-b", gid, chord), states.SUCCESS, 1)
    assert app.sent_callbacks == []  # len(header) == 1 would have fired here, and joined a group not done
    backend.on_chord_part_return(Request(f"{gid}-c", gid, chord), states.SUCCESS, 2)
    assert app.sent_callbacks == [([[1, 2]],)]


def test_set_chord_size_of_a_plain_header_writes_nothing(chord_app, monkeypatch):
    """A header of plain tasks is counted by its saved length: Celery's set_chord_size() right after
    apply_chord() in the same thread costs no write; a size that differs is written."""
    backend = chord_app.backend
    writes: list[tuple[str, int]] = []
    monkeypatch.setattr(backend.table, "set_chord_size", lambda gid, size: writes.append((gid, size)))
    gid = f"grp-{uuid.uuid4().hex[:8]}"
    backend.apply_chord((gid, [chord_app.AsyncResult(f"{gid}-{i}") for i in range(3)]), body=None)
    backend.set_chord_size(gid, 3)
    assert writes == []
    backend.set_chord_size(gid, 4)
    assert writes == [(gid, 4)]


def test_count_chord_part_is_true_once_per_part(chord_app):
    table = chord_app.backend.table
    gid, ids, _ = make_chord(chord_app, 2)
    assert table.count_chord_part(gid, ids[0]) is True
    assert table.count_chord_part(gid, ids[0]) is False
    assert table.count_chord_part(gid, ids[1]) is True
    assert int(table.get(schema.chord_key(gid))[schema.CHORD_COUNT]) == 2
    assert table.get(ids[0])[schema.CHORD_COUNTED] == gid


def test_refused_chord_part_is_counted_when_revoked(chord_app):
    """A header part revoked from the table is refused by the worker's claim, and still counted:
    the chord ends (with a ChordError on its callback) instead of waiting forever."""
    from celery_sqs_ddb.worker.claim import Claimer

    app, backend = chord_app, chord_app.backend
    gid, ids, chord = make_chord(app, 2)
    revoked = f"{gid}-part-revoked"
    app.GroupResult(gid, [app.AsyncResult(ids[0]), app.AsyncResult(revoked)]).save(backend=backend)
    backend.on_chord_part_return(Request(ids[0], gid, chord), states.SUCCESS, 1)
    assert celery_sqs_ddb.revoke(app, revoked) == 1
    run = run_refused(app, Claimer(backend), revoked, gid, chord)
    assert run.info.state == celery_states.IGNORED  # the body did not run
    assert int(backend.table.get(schema.chord_key(gid))[schema.CHORD_COUNT]) == 2
    assert app.sent_callbacks == []  # a revoked part fails the chord instead of calling it
    callback = backend.get_task_meta(f"{gid}-callback", cache=False)
    assert callback["status"] == states.FAILURE and "revoked" in repr(callback["result"]).lower()


def test_part_whose_count_was_lost_is_counted_when_redelivered(chord_app):
    """The unit-level version of a worker killed between a part's result write and its count: the
    result is SUCCESS, the count never happened; the redelivered message's claim is refused
    (final) and the refusal counts the part, which completes the chord."""
    from celery_sqs_ddb.worker.claim import Claimer

    app, backend = chord_app, chord_app.backend
    gid, ids, chord = make_chord(app, 2)
    backend.on_chord_part_return(Request(ids[0], gid, chord), states.SUCCESS, 1)
    # ids[1]: result written by make_chord, never counted (the worker died here)
    assert int(backend.table.get(schema.chord_key(gid))[schema.CHORD_COUNT]) == 1
    claimer = Claimer(backend)
    run_refused(app, claimer, ids[1], gid, chord)
    assert app.sent_callbacks == [([1, 2],)]
    run_refused(app, claimer, ids[1], gid, chord, receives=3)  # and again: no second callback
    assert app.sent_callbacks == [([1, 2],)]
    assert int(backend.table.get(schema.chord_key(gid))[schema.CHORD_COUNT]) == 2


def run_refused(app: Any, claimer: Any, task_id: str, gid: str, chord: dict[str, Any], receives: int = 2) -> Any:
    """The worker's claimed run of a redelivered header part, whose body must not run."""
    task = app.tasks["tests.add"]

    def body(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the task body ran")

    request = {"id": task_id, "task": task.name, "group": gid, "chord": chord, "hostname": "celery@w",
               "sqs_receive_count": receives, "sqs_message_id": f"m-{receives}",
               "delivery_info": {"routing_key": "celery"}}
    return claimer.run(task, body, task_id, (1, 2), {}, request)


# --------------------------------------------------------------------------- 5. untrusted pointers (store)


@pytest.mark.parametrize("pointer", [
    "s3://other-bucket/celery/messages/x",
    "s3://payloads/elsewhere/x",
    "s3://payloads/celery/messages/../results/x",
    "s3://payloads/celery/messagesX",
    "https://payloads/celery/messages/x",
    "s3://payloads",
])
def test_pointer_outside_the_bucket_and_prefix_is_untrusted(pointer):
    store = PayloadStore("payloads", "celery/messages/", {"region": "eu-west-1"})
    with pytest.raises(UntrustedPointer):
        store.check(pointer)
    store.check("s3://payloads/celery/messages/abc")


# --------------------------------------------------------------------------- 7. pickle guard


@pytest.mark.parametrize("key, value", [
    ("accept_content", ["application/x-python-serialize"]),
    ("accept_content", ["json", "pickle"]),
    ("result_accept_content", ["application/x-python-serialize"]),
    ("task_serializer", "pickle"),
    ("result_serializer", "pickle"),
])
def test_pickle_is_refused_naming_the_setting(stack, monkeypatch, key, value):
    app = direct_app(stack, monkeypatch)
    app.conf[key] = value
    with pytest.raises(PickleRefused, match=rf"^{key}=.*sqs_ddb_allow_pickle"):
        app.backend  # noqa: B018  (the backend reads the settings)
    with pytest.raises(PickleRefused, match=rf"^{key}="):
        app.tasks["tests.add"].delay(1, 2)  # nothing is sent with it


def test_pickle_is_accepted_with_sqs_ddb_allow_pickle(stack, monkeypatch):
    app = direct_app(stack, monkeypatch)
    app.conf.update(accept_content=["json", "application/x-python-serialize"], task_serializer="pickle",
                    result_accept_content=["pickle"], sqs_ddb_allow_pickle=True)
    assert app.backend.settings.allow_pickle is True


# --------------------------------------------------------------------------- 9. fetched attributes


@pytest.mark.parametrize("fetch", [
    None,
    "All",
    ["SentTimestamp"],
    ["All"],
    ["all"],
    {"MessageSystemAttributeNames": ["SenderId"], "MessageAttributeNames": ["trace_id"]},
    {"MessageSystemAttributeNames": ["ALL"], "MessageAttributeNames": ["ALL"]},
])
def test_user_fetch_message_attributes_keep_what_the_transport_needs(stack_factory, monkeypatch, fetch):
    stack = stack_factory(fifo=True)
    app = direct_app(stack, monkeypatch)
    if fetch is not None:
        app.conf.broker_transport_options["fetch_message_attributes"] = fetch
    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody="{}", MessageGroupId="user-7",
                           MessageDeduplicationId="d1",
                           MessageAttributes={"trace_id": {"DataType": "String", "StringValue": "t-1"}})
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        wanted = channel.get_message_attributes
    system = wanted["MessageSystemAttributeNames"]
    if system != ["All"]:
        assert {"ApproximateReceiveCount", "MessageGroupId"} <= set(system)
    if isinstance(fetch, list) and fetch != ["All"] and fetch != ["all"]:
        assert set(fetch) <= set(system)  # the user's own names are kept
    if isinstance(fetch, dict):
        assert "SenderId" in system or system == ["All"]
        assert wanted["MessageAttributeNames"] in (["trace_id"], ["All"])
    # what SQS answers the transport's receive with: the FIFO group guard needs MessageGroupId
    (message,) = stack.sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=1,
                                          MessageSystemAttributeNames=system,
                                          MessageAttributeNames=wanted["MessageAttributeNames"] or [])["Messages"]
    assert message["Attributes"]["MessageGroupId"] == "user-7"
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    if isinstance(fetch, dict):
        assert message["MessageAttributes"]["trace_id"]["StringValue"] == "t-1"


# --------------------------------------------------------------------------- 10. groups over the item budget


def big_group(app: Any, size: int) -> Any:
    gid = f"big-{uuid.uuid4().hex[:8]}"
    return app.GroupResult(gid, [app.AsyncResult(f"{gid}-{i:06d}-{uuid.uuid4()}") for i in range(size)])


def test_group_result_over_the_item_budget_goes_to_s3(stack, monkeypatch):
    app = direct_app(stack, monkeypatch)
    group = big_group(app, 6_000)
    assert len(app.backend.encode(group.as_tuple())) > app.backend.settings.result_s3_threshold
    group.save(backend=app.backend)
    item = stack.item(group.id)
    assert schema.GROUP_RESULT not in item
    assert item[schema.GROUP_RESULT + "_s3"].startswith(f"s3://{stack.bucket}/celery/results/{group.id}/")
    restored = app.GroupResult.restore(group.id, backend=app.backend)
    assert [r.id for r in restored.results] == [r.id for r in group.results]


def test_group_result_over_the_item_budget_without_bucket_fails_naming_the_limit(stack, monkeypatch):
    app = direct_app(stack, monkeypatch, TEST_BUCKET="")
    group = big_group(app, 6_000)
    with pytest.raises(ResultTooLarge, match=r"over sqs_ddb_result_s3_threshold=350000.*set sqs_ddb_s3_bucket"):
        group.save(backend=app.backend)
    assert stack.item(group.id) is None


def test_children_over_the_item_budget_go_to_s3(stack, monkeypatch):
    app = direct_app(stack, monkeypatch)
    backend = app.backend
    children = big_group(app, 6_000)
    request = Request("parent")
    request.children = [children]
    backend.store_result("parent", 7, states.SUCCESS, request=request)
    item = stack.item("parent")
    assert schema.CHILDREN not in item and item[schema.CHILDREN + "_s3"].startswith(f"s3://{stack.bucket}/")
    meta = backend.get_task_meta("parent", cache=False)
    assert meta["result"] == 7 and len(json.dumps(meta["children"])) > 350_000


def test_result_and_children_together_over_the_item_limit_are_stored(stack, monkeypatch):
    """Each under the threshold, together over DynamoDB's 400 KB item limit."""
    app = direct_app(stack, monkeypatch)
    backend = app.backend
    request = Request("both")
    request.children = [big_group(app, 4_000)]
    assert len(backend.encode(backend.current_task_children(request))) > 200_000
    backend.store_result("both", "r" * 300_000, states.SUCCESS, request=request)
    meta = backend.get_task_meta("both", cache=False)
    assert meta["status"] == states.SUCCESS and meta["result"] == "r" * 300_000



# --------------------------------------------------------------------------- 4. claim-checks S3 will not give


def receive_all(stack: Any, count: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while len(messages) < count:
        messages += stack.sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                              MessageSystemAttributeNames=["All"]).get("Messages", [])
    return messages


@pytest.mark.parametrize("failure", ["S3 500 after retries", "403 (a role without s3:ListBucket)"])
def test_claim_check_s3_will_not_give_holds_only_that_message(stack, monkeypatch, moto_server, failure, caplog):
    """Not the message's fault (an S3 outage, a 403): it is not dead-lettered and the rest of its
    receive batch is delivered; it comes back after CLAIM_CHECK_RETRY_SECONDS."""
    from botocore.exceptions import ClientError as BotoClientError

    from celery_sqs_ddb.transport.channel import CLAIM_CHECK_RETRY_SECONDS

    monkeypatch.setenv("SQS_DDB_MAX_ATTEMPTS", "1")  # no botocore retries of the refused GetObject
    app = make_client_app(stack, monkeypatch)  # through the counting proxy, which can refuse calls
    big = app.tasks["tests.echo_len"].delay("b" * 1_100_000)
    small = [app.tasks["tests.add"].delay(i, i) for i in range(2)]
    raw = receive_all(stack, 3)
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        if failure.startswith("403"):
            def refused(**kwargs: Any) -> Any:
                raise BotoClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                                       "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject")

            monkeypatch.setattr(channel.payloads.client, "get_object", refused)
        else:
            moto_server.inject("s3:GET", "InternalServerError", 30)
        try:
            delivered = channel._messages_to_python(raw, stack.queue)
        finally:
            moto_server.clear_injections()
            channel.housekeeper.stop()
    assert sorted(d["headers"]["id"] for d in delivered) == sorted(r.id for r in small)
    assert big.id not in {d["headers"]["id"] for d in delivered}
    assert f"received again in {CLAIM_CHECK_RETRY_SECONDS} s" in caplog.text
    assert stack.dlq_messages(wait=0) == []  # not the message's fault: not dead-lettered
    attrs = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "3"  # the claim-check waits, in flight
    assert stack.s3.list_objects_v2(Bucket=stack.bucket, Prefix="celery/messages/")["KeyCount"] == 1  # kept


def test_refused_part_whose_count_fails_is_deferred_not_dropped(chord_app, monkeypatch):
    from celery_sqs_ddb.exceptions import ClaimDeferred
    from celery_sqs_ddb.worker.claim import Claimer

    app, backend = chord_app, chord_app.backend
    gid, ids, chord = make_chord(app, 2)

    def outage(group_id: str, part_id: str) -> bool:
        raise AccessDenied("not allowed to call dynamodb:TransactWriteItems (a test outage)")

    monkeypatch.setattr(backend.table, "count_chord_part", outage)
    run = run_refused(app, Claimer(backend), ids[1], gid, chord)
    assert isinstance(run.info.retval, ClaimDeferred)  # held by the worker and tried again later


def test_a_chord_part_counts_and_reads_a_small_item_not_its_group(chord_app, monkeypatch):
    """The count lives on an item of its own: an update is billed by the item's size, and the group's
    item holds the saved header (56 KB for 1,000 parts). A part that does not complete the chord
    reads only the counter; the part that completes it reads the header too. A part of a group whose
    item is gone ends the chord with a ChordError."""
    from celery.exceptions import ChordError

    backend = chord_app.backend
    gid, ids, chord = make_chord(chord_app, 2)
    reads: list[str] = []
    real_get = backend.table.get
    monkeypatch.setattr(backend.table, "get", lambda task_id, consistent=True: reads.append(task_id)
                        or real_get(task_id, consistent))
    backend.on_chord_part_return(Request(ids[0], group=gid, chord=chord), states.SUCCESS, 1)
    assert reads == [schema.chord_key(gid)]
    counter = real_get(schema.chord_key(gid))
    assert counter[schema.CHORD_COUNT] == 1 and counter[schema.KIND] == schema.KIND_CHORD
    assert schema.EXPIRES_AT in counter  # it goes with the TTL like every item
    assert schema.CHORD_COUNT not in real_get(gid)  # the group's item is not rewritten

    errors: list[BaseException] = []
    monkeypatch.setattr(backend, "chord_error_from_stack", lambda callback, exc: errors.append(exc))
    backend.table.delete(gid)
    reads.clear()
    backend.on_chord_part_return(Request(ids[1], group=gid, chord=chord), states.SUCCESS, 2)
    assert reads == [schema.chord_key(gid), gid]
    assert [type(e) for e in errors] == [ChordError] and "no longer exists" in str(errors[0])
