"""DynamoDBBackend against in-process moto: typed items, conditional writes, reads, listing."""

from __future__ import annotations

import itertools
import time

import boto3
import pytest
from botocore.stub import Stubber
from celery import Celery
from celery.exceptions import TimeoutError
from moto import mock_aws

from celery_sqs_ddb import schema, states
from celery_sqs_ddb.backend import DynamoDBBackend
from celery_sqs_ddb.exceptions import AccessDenied, ResultTooLarge, StateConflict, TableNotFound

REGION = "eu-west-1"


@pytest.fixture
def aws():
    with mock_aws():
        yield


def make_app(table="jobs", **conf):
    app = Celery("unit", set_as_current=False)
    app.conf.result_backend = f"ddb://{table}?region={REGION}"
    app.conf.result_extended = True
    app.conf.update(conf)
    return app


@pytest.fixture
def backend(aws):
    boto3.client("dynamodb", region_name=REGION).create_table(**schema.create_table_request("jobs"))
    return make_app().backend


class Request:
    """The attributes of a task request the backend reads."""

    def __init__(self, task_id="t", retries=0, group=None, chord=None):
        self.id = task_id
        self.task = "tests.add"
        self.hostname = "celery@host"
        self.retries = retries
        self.args, self.kwargs = (1, 2), {}
        self.argsrepr, self.kwargsrepr = "(1, 2)", "{}"
        self.delivery_info = {"routing_key": "celery"}
        self.group = group
        self.parent_id = None
        self.children = []
        self.chord = chord


def raw_item(task_id):
    found = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName="jobs", Key={"task_id": {"S": task_id}}, ConsistentRead=True)
    return found.get("Item")


def test_entry_point_and_typed_item(backend):
    assert isinstance(backend, DynamoDBBackend)
    backend.store_result("abc", 42, states.SUCCESS, request=Request("abc"))
    item = raw_item("abc")
    assert item["task_id"] == {"S": "abc"}  # plain string, not "b'celery-task-meta-abc'"
    assert item["status"] == {"S": "SUCCESS"}
    assert item["status_shard"] == {"S": f"SUCCESS#{schema.shard_of('abc', 4)}"}
    assert item["task_name"] == {"S": "tests.add"} and item["worker"] == {"S": "celery@host"}
    assert item["args"] == {"S": "(1, 2)"} and item["queue"] == {"S": "celery"}
    meta = backend.get_task_meta("abc")
    assert meta["status"] == "SUCCESS" and meta["result"] == 42 and meta["name"] == "tests.add"


def test_missing_task_is_pending(backend):
    assert backend.get_task_meta("nope") == {"status": "PENDING", "result": None}


def test_first_terminal_state_wins(backend):
    backend.store_result("t", "first", states.SUCCESS, request=Request("t"))
    backend.store_result("t", ValueError("late duplicate"), states.FAILURE, request=Request("t"))
    backend.store_result("t", {"done": 1}, "PROGRESS")
    backend.store_result("t", "second", states.SUCCESS, request=Request("t"))
    meta = backend.get_task_meta("t", cache=False)
    assert (meta["status"], meta["result"]) == ("SUCCESS", "first")


def put_state(task_id, state, claim=(0, 0, 1), message="m1", running=True):
    """An item as another process left it: ``claim`` (nesting, retries, receives) holds it."""
    item = {"task_id": {"S": task_id}}
    if state:
        item["status"] = {"S": state}
    if claim:
        item["claim_key"] = {"N": str(schema.attempt_key(*claim))}
        item["claim_msg"] = {"S": message}
        if running:
            item["claimed_by"] = {"S": "other@host"}
    boto3.client("dynamodb", region_name=REGION).put_item(TableName="jobs", Item=item)


ALL = [None, "QUEUED", "STARTED", "PROGRESS", "RETRY", "SUCCESS", "FAILURE", "REVOKED"]


@pytest.mark.parametrize(("current", "new"), list(itertools.product(ALL, ["PROGRESS", "RETRY", "SUCCESS",
                                                                          "FAILURE"])))
def test_conditional_writes_follow_states_allowed(backend, current, new):
    task_id = f"{current}-{new}"
    if current:
        put_state(task_id, current, claim=None)
    value = ValueError("x") if new in ("FAILURE", "RETRY") else {"v": 1}
    backend.store_result(task_id, value, new, request=Request(task_id, retries=0))
    item = raw_item(task_id) or {}
    written = "result" in item  # put_state() stores no result; only an accepted write does
    assert written is states.allowed(current, new), (current, new, item.get("status"))
    if written:
        assert item["status"]["S"] == new


MAX = schema.MAX_RECEIVES


@pytest.mark.parametrize(
    ("current", "holder", "attempt", "message", "ok"),
    [
        (None, None, (0, 0, 1), "m1", True),
        ("QUEUED", None, (0, 0, 1), "m1", True),
        ("STARTED", (0, 0, 1), (0, 0, 1), "m1", True),    # the same message again: our own retried claim
        ("STARTED", (0, 0, 1), (0, 0, 1), "m2", False),   # another message of the same attempt: a duplicate
        ("STARTED", (0, 0, 1), (0, 0, 2), "m1", True),    # redelivered after the holder's visibility ran out
        ("PROGRESS", (0, 0, 2), (0, 0, 1), "m1", False),  # an older delivery
        ("RETRY", (0, 0, MAX), (0, 0, 3), "m1", False),   # the retried attempt's message again
        ("RETRY", (0, 0, MAX), (0, 1, 1), "m2", True),    # the retry's own message
        ("STARTED", (0, 1, 1), (0, 0, 5), "m1", False),   # an attempt before the retry
        ("STARTED", (0, 0, 1), (1, 0, 1), "m2", True),    # Task.replace(): same id, a new attempt
        ("SUCCESS", (0, 0, 1), (0, 0, 2), "m1", False),
        ("FAILURE", (0, 0, 1), (0, 1, 1), "m2", False),
        ("REVOKED", None, (0, 0, 1), "m1", False),
    ],
)
def test_claim(backend, current, holder, attempt, message, ok):
    if current or holder:
        put_state("c", current, holder, running=current not in (None, "QUEUED", "RETRY"))
    claim = {"attempt": schema.attempt_key(*attempt), "message_id": message, "worker": "w@h", "task_name": "tests.add",
             "queue": "q", "retries": attempt[1]}
    if ok:
        backend.claim("c", **claim)
        item = raw_item("c")
        assert item["status"]["S"] == "STARTED" and item["worker"]["S"] == "w@h" and item["claimed_by"]["S"] == "w@h"
        assert item["status_shard"]["S"].startswith("STARTED#")
        assert schema.attempt_of(int(item["claim_key"]["N"])) == attempt
    else:
        with pytest.raises(StateConflict) as info:
            backend.claim("c", **claim)
        assert info.value.item.get("status") == current  # ALL_OLD: the current item, no extra read


def test_claim_without_publishing_started_touches_no_indexed_attribute(backend):
    backend.queue_rows([("q", "tests.add", "celery")])
    before = raw_item("q")
    backend.claim("q", attempt=schema.attempt_key(0, 0, 1), worker="w@h", publish_started=False)
    after = raw_item("q")
    for key in (schema.STATUS, schema.STATUS_SHARD, schema.UPDATED_AT, *schema.INDEX_PROJECTION):
        assert after.get(key) == before.get(key), key
    assert after["claimed_by"] == {"S": "w@h"}
    backend.claim("fresh", attempt=schema.attempt_key(0, 0, 1), worker="w@h", publish_started=False)
    assert "status" not in raw_item("fresh")
    assert backend.get_task_meta("fresh")["status"] == "PENDING"  # never a phantom STARTED


def test_revoke_writes_only_tasks_that_have_not_started(backend):
    backend.store_result("done", 1, states.SUCCESS, request=Request("done"))
    put_state("running", "STARTED", (0, 0, 1))
    put_state("running-quietly", None, (0, 0, 1))  # claimed with task_track_started off
    put_state("waiting-retry", "RETRY", (0, 0, MAX), running=False)
    assert backend.revoke(["queued-later", "done", "running", "running-quietly", "waiting-retry"]) == 2
    assert backend.get_task_meta("queued-later")["status"] == "REVOKED"
    assert backend.get_task_meta("waiting-retry")["status"] == "REVOKED"
    assert backend.get_task_meta("done", cache=False)["status"] == "SUCCESS"
    assert raw_item("running")["status"]["S"] == "STARTED"
    assert "status" not in raw_item("running-quietly")
    with pytest.raises(StateConflict):
        backend.claim("queued-later", attempt=schema.attempt_key(0, 0, 1), worker="w")


def test_mark_as_revoked_from_outside_leaves_a_running_task_alone(backend):
    """Celery's worker marks a revoked id REVOKED unless another worker started it (its state
    stays that worker's); with a request, the worker's own revoke of its task is written."""
    put_state("elsewhere", "STARTED", (0, 0, 1))
    backend.mark_as_revoked("elsewhere", "revoked")
    assert raw_item("elsewhere")["status"]["S"] == "STARTED"
    backend.mark_as_revoked("elsewhere", "terminated", request=Request("elsewhere"))
    assert raw_item("elsewhere")["status"]["S"] == "REVOKED"


def test_progress_does_not_touch_index_keys(backend):
    backend.claim("p", attempt=schema.attempt_key(0, 0, 1), task_name="tests.add", worker="w", queue="q")
    before = raw_item("p")
    backend.store_result("p", {"done": 3}, "PROGRESS")
    after = raw_item("p")
    assert after["status"] == {"S": "PROGRESS"}
    for key in (schema.STATUS_SHARD, schema.UPDATED_AT, *schema.INDEX_PROJECTION):
        assert after.get(key) == before.get(key), key
    assert backend.get_task_meta("p")["result"] == {"done": 3}


def test_retry_from_an_older_attempt_does_not_overwrite_the_newer_claim(backend):
    backend.claim("r", attempt=schema.attempt_key(0, 1, 1), task_name="t", worker="w", queue="q", retries=1)
    backend.store_result("r", ValueError("old"), states.RETRY, request=Request("r", retries=0))
    assert raw_item("r")["status"]["S"] == "STARTED"
    backend.store_result("r", ValueError("new"), states.RETRY, request=Request("r", retries=1))
    item = raw_item("r")
    assert item["status"]["S"] == "RETRY" and "claimed_by" not in item  # the attempt is over
    with pytest.raises(StateConflict):  # its message again (a lost delete) does not run
        backend.claim("r", attempt=schema.attempt_key(0, 1, 2), worker="w")
    backend.claim("r", attempt=schema.attempt_key(0, 2, 1), worker="w")  # the retry's message does


def test_ttl_from_result_expires_and_expired_reads_as_missing(aws):
    boto3.client("dynamodb", region_name=REGION).create_table(**schema.create_table_request("jobs"))
    backend = make_app(result_expires=100).backend
    backend.store_result("e", 1, states.SUCCESS, request=Request("e"))
    assert abs(int(raw_item("e")["expires_at"]["N"]) - (time.time() + 100)) < 5
    boto3.client("dynamodb", region_name=REGION).update_item(
        TableName="jobs", Key={"task_id": {"S": "e"}}, UpdateExpression="SET expires_at = :p",
        ExpressionAttributeValues={":p": {"N": str(int(time.time()) - 1)}})
    assert backend.get_task_meta("e", cache=False)["status"] == "PENDING"
    assert not backend.task_result_exists("e")


def test_ttl_can_be_disabled(aws):
    boto3.client("dynamodb", region_name=REGION).create_table(**schema.create_table_request("jobs"))
    backend = make_app(sqs_ddb_ttl=False).backend
    backend.store_result("n", 1, states.SUCCESS, request=Request("n"))
    assert "expires_at" not in raw_item("n")


def test_batch_get_reads_100_keys_a_call(backend):
    ids = [f"id-{i}" for i in range(250)]
    backend.queue_rows((i, "tests.add", "q") for i in ids)
    calls = []
    backend.client.meta.events.register("before-call.dynamodb.BatchGetItem", lambda **kw: calls.append(1))
    found = backend.batch_get(ids)
    assert len(found) == 250 and len(calls) == 3


def test_get_many_yields_ready_results_and_times_out_with_a_deadline(backend):
    backend.store_result("a", 1, states.SUCCESS, request=Request("a"))
    backend.queue_rows([("b", "tests.add", "q")])
    got = {}
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        for task_id, meta in backend.get_many(["a", "b"], timeout=0.3):
            got[task_id] = meta["result"]
    assert got == {"a": 1}
    assert time.monotonic() - start < 2


def test_wait_for_polls_adaptively_with_eventually_consistent_reads(backend, monkeypatch):
    pauses, reads = [], []
    monkeypatch.setattr(time, "sleep", lambda s: pauses.append(s))
    done = {"task_id": "w", "status": "SUCCESS", "result": "7", "v": 3}
    answers = iter([None] * 20 + [done])

    def get(task_id, consistent=True):
        reads.append(consistent)
        return next(answers)

    monkeypatch.setattr(backend.table, "get", get)
    assert backend.wait_for("w")["result"] == 7
    assert len(pauses) == 20
    assert not any(reads)  # polls read eventually consistent: half the read units
    assert pauses[0] <= 0.02  # first re-check within tens of ms
    assert all(b >= a for a, b in zip(pauses, pauses[1:], strict=False))  # backing off ...
    assert pauses[-1] == 1.0  # ... to about 1 s
    assert 0.5 not in pauses  # never Celery's fixed 0.5 s


def test_a_stale_read_never_moves_the_state_backwards(backend):
    """An eventually consistent read may return an older version: the newest seen one wins."""
    newer = {"task_id": "s", "status": "STARTED", "v": 5}
    older = {"task_id": "s", "status": "PENDING", "v": 2}
    assert backend._newest("s", newer)["status"] == "STARTED"
    assert backend._newest("s", older)["status"] == "STARTED"
    assert backend._newest("s", {"task_id": "s", "status": "SUCCESS", "result": "1", "v": 6})["status"] == "SUCCESS"


def test_wait_for_reads_strongly_once_before_timing_out(backend, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    backend.store_result("late", 5, states.SUCCESS, request=Request("late"))
    real_get = backend.table.get
    monkeypatch.setattr(backend.table, "get", lambda task_id, consistent=True: real_get(task_id) if consistent
                        else None)  # a lagging replica
    assert backend.wait_for("late", timeout=0.01)["result"] == 5


def test_listing_newest_first_across_shards_with_pagination(backend):
    ids = []
    for i in range(9):
        ids.append(f"job-{i}")
        backend.store_result(ids[-1], i, states.SUCCESS, request=Request(ids[-1]))
        time.sleep(0.002)
    shards = {schema.shard_of(i, 4) for i in ids}
    assert len(shards) > 1  # the test really spans shards
    page, cursor = backend.list_jobs("SUCCESS", limit=4)
    assert [j["task_id"] for j in page] == ids[::-1][:4]
    page2, cursor2 = backend.list_jobs("SUCCESS", limit=4, cursor=cursor)
    page3, cursor3 = backend.list_jobs("SUCCESS", limit=4, cursor=cursor2)
    assert [j["task_id"] for j in page + page2 + page3] == ids[::-1]
    assert cursor3 is None
    assert page[0]["task_name"] == "tests.add" and page[0]["status"] == "SUCCESS"
    with pytest.raises(ValueError, match="accepted: QUEUED, STARTED"):
        backend.list_jobs("DONE")


def test_queued_rows_show_in_the_index(backend):
    backend.queue_rows([("q1", "tests.add", "celery"), ("q2", "tests.add", "celery")])
    assert {j["task_id"] for j in backend.list_jobs("QUEUED")[0]} == {"q1", "q2"}
    backend.claim("q1", attempt=schema.attempt_key(0, 0, 1), task_name="tests.add", worker="w", queue="celery")
    assert {j["task_id"] for j in backend.list_jobs("QUEUED")[0]} == {"q2"}
    assert {j["task_id"] for j in backend.list_jobs("STARTED")[0]} == {"q1"}


def test_oversized_result_without_bucket_fails_clearly(backend):
    with pytest.raises(ResultTooLarge, match="set sqs_ddb_s3_bucket"):
        backend.store_result("big", "x" * 400_000, states.SUCCESS, request=Request("big"))
    assert raw_item("big") is None


def test_oversized_result_with_bucket_goes_to_s3(aws):
    boto3.client("dynamodb", region_name=REGION).create_table(**schema.create_table_request("jobs"))
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket="payloads", CreateBucketConfiguration={"LocationConstraint": REGION})
    backend = make_app(sqs_ddb_s3_bucket="payloads").backend
    backend.store_result("big", "y" * 400_000, states.SUCCESS, request=Request("big"))
    pointer = raw_item("big")["result_s3"]["S"]
    assert pointer.startswith("s3://payloads/celery/results/big/")
    assert backend.get_task_meta("big")["result"] == "y" * 400_000


def test_unserializable_result_names_the_serializer(backend):
    from kombu.exceptions import EncodeError

    with pytest.raises(EncodeError, match="result_serializer='json'"):
        backend.store_result("u", object(), states.SUCCESS, request=Request("u"))


def test_forget_and_groups(backend):
    app = backend.app
    backend.store_result("g1", 1, states.SUCCESS, request=Request("g1"))
    gr = app.GroupResult("grp", [app.AsyncResult("g1")])
    gr.save(backend=backend)
    restored = app.GroupResult.restore("grp", backend=backend)
    assert [r.id for r in restored.results] == ["g1"]
    assert "status_shard" not in raw_item("grp")  # groups stay out of the status index
    backend.forget("g1")
    assert raw_item("g1") is None


def test_missing_table_names_table_setting_region_and_fix(aws):
    backend = make_app(table="absent").backend
    with pytest.raises(TableNotFound) as info:
        backend.get_task_meta("x")
    assert str(info.value) == ("DynamoDB table 'absent' (sqs_ddb_table, region eu-west-1) does not exist; "
                               'run "celery -A app sqs-ddb create-table"')


def test_missing_permission_names_the_action(backend):
    with Stubber(backend.client) as stub:
        stub.add_client_error("get_item", service_error_code="AccessDeniedException",
                              service_message="User is not authorized", http_status_code=400)
        with pytest.raises(AccessDenied, match=r"not allowed to call dynamodb:GetItem on DynamoDB table 'jobs'"):
            backend.get_task_meta("x")


@pytest.mark.parametrize(("code", "status", "retry"), [
    ("ProvisionedThroughputExceededException", 400, True),
    ("ThrottlingException", 400, True),
    ("InternalServerError", 500, True),
    ("ServiceUnavailable", 503, True),
    ("ValidationException", 400, False),
    ("ConditionalCheckFailedException", 400, False),
])
def test_exception_safe_to_retry(backend, code, status, retry):
    from botocore.exceptions import ClientError

    exc = ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                      "UpdateItem")
    assert backend.exception_safe_to_retry(exc) is retry


def test_throttled_write_is_retried_by_celery_and_lands(backend):
    backend.always_retry = True  # result_backend_always_retry, set by broker_settings()
    backend.base_sleep_between_retries_ms = 1
    with Stubber(backend.client) as stub:
        for _ in range(2):
            stub.add_client_error("update_item", service_error_code="ThrottlingException",
                                  service_message="Rate exceeded", http_status_code=400)
        stub.add_response("update_item", {})
        backend.store_result("th", 1, states.SUCCESS, request=Request("th"))
        stub.assert_no_pending_responses()  # two throttled attempts, then the write landed


def test_client_retry_configuration(aws):
    backend = make_app(sqs_ddb_retry_mode="adaptive", sqs_ddb_max_attempts=7).backend
    retries = backend.client.meta.config.retries
    assert retries["mode"] == "adaptive" and retries["total_max_attempts"] == 7


def test_huge_traceback_without_bucket_is_truncated_not_lost(backend):
    backend.store_result("tb", ValueError("deep"), states.FAILURE, traceback="x" * 500_000 + "\nValueError: deep",
                         request=Request("tb"))
    meta = backend.get_task_meta("tb")
    assert meta["status"] == "FAILURE" and isinstance(meta["result"], ValueError)
    assert meta["traceback"].startswith("... (traceback truncated; set sqs_ddb_s3_bucket")
    assert meta["traceback"].endswith("ValueError: deep") and len(meta["traceback"]) < 360_000


def test_waiting_on_a_large_group_reads_one_window_per_poll(backend, monkeypatch):
    ids = [f"w-{i}" for i in range(250)]
    backend.queue_rows((i, "tests.add", "q") for i in ids)
    for task_id in ids[:150]:
        backend.store_result(task_id, 1, states.SUCCESS, request=Request(task_id))
    keys_per_call = []
    backend.client.meta.events.register(
        "provide-client-params.dynamodb.BatchGetItem",
        lambda params, **kw: keys_per_call.append(len(params["RequestItems"]["jobs"]["Keys"])))
    monkeypatch.setattr(time, "sleep", lambda s: None)
    got = [task_id for task_id, _ in backend.get_many(ids, max_iterations=3)]
    assert got == ids[:150]  # the ready ones come back, in order
    # oldest first; after a window that was all ready the next is 100 (never all 250 at once), and
    # it follows what the last round found: twice its 40 ready, then 10 after a round with none
    assert keys_per_call == [10, 100, 100, 80, 10], keys_per_call


def test_a_straggler_is_read_less_and_less_often(backend, monkeypatch):
    backend.queue_rows([("slow", "tests.add", "q")])
    reads = []
    backend.client.meta.events.register(
        "provide-client-params.dynamodb.BatchGetItem",
        lambda params, **kw: reads.append(len(params["RequestItems"]["jobs"]["Keys"])))
    pauses = []
    monkeypatch.setattr(time, "sleep", pauses.append)
    assert list(backend.get_many(["slow"], max_iterations=64)) == []
    assert 6 <= len(reads) <= 10, reads  # rounds 0-2, then every 2, 4, 8, 16, 32 rounds: not 64 reads
    assert max(pauses) <= backend.settings.poll_max_interval


def item_bytes(item: dict) -> int:
    """DynamoDB's item size: attribute names plus values (numbers ~ digits/2 + 1)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        (kind, raw), = value.items()
        if kind in ("S",):
            size += len(raw.encode())
        elif kind == "N":
            size += len(raw.lstrip("-").replace(".", "")) // 2 + 1
        elif kind == "B":
            size += len(raw)
        elif kind == "BOOL":
            size += 1
        else:
            size += len(repr(raw))
    return size


def test_a_finished_task_item_stays_under_one_write_unit(backend):
    """The common case bills 1 WRU per write: a finished add(1, 2) with result_extended is < 1 KB,
    and its index row carries only the projected fields."""
    backend.claim("small", attempt=schema.attempt_key(0, 0, 1), message_id="m" * 36, worker="celery@ip-10-0-1-17",
                  task_name="tests.add", queue="celery")
    backend.store_result("small", 3, states.SUCCESS, request=Request("small"))
    item = raw_item("small")
    assert item["status"]["S"] == "SUCCESS"
    assert item_bytes(item) < 1024, (item_bytes(item), item)  # measured 308 bytes
    index_row = {k: v for k, v in item.items()
                 if k in (*schema.INDEX_PROJECTION, "task_id", schema.STATUS_SHARD, schema.UPDATED_AT)}
    assert item_bytes(index_row) < 300, index_row


def test_get_raises_a_failed_parent_s_error_before_the_child_s_own(backend):
    """Celery's result consumers look at the parents once the result is in: a chord whose header
    failed raises the header's exception, not the ChordError stored on the body."""
    import threading

    from celery.exceptions import ChordError
    from celery.result import AsyncResult

    def fail_both() -> None:  # as a worker does: the part's own failure first, then the chord's
        time.sleep(0.1)
        backend.mark_as_failure("header-part", KeyError("the header's own error"))
        backend.mark_as_failure("body", ChordError("Dependency header-part raised KeyError"))

    body = AsyncResult("body", backend=backend, app=backend.app, parent=AsyncResult("header-part", backend=backend,
                                                                                      app=backend.app))
    worker = threading.Thread(target=fail_both)
    worker.start()
    with pytest.raises(KeyError, match="the header's own error"):
        body.get(timeout=5)  # both pending when it starts
    worker.join()
    assert isinstance(AsyncResult("body", backend=backend, app=backend.app).get(timeout=5, propagate=False),
                      ChordError)  # without a failed parent: the child's own error
