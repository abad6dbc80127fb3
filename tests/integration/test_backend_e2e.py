"""Result backend end to end: moto server subprocess + real celery worker subprocesses."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from celery import chain, chord, group
from celery.exceptions import ChordError

from celery_sqs_ddb import jobs, states
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def running(stack, client_app, workers, tmp_path, monkeypatch):
    """A stack, the client app and one worker with concurrency 2."""
    effects = tmp_path / "effects.log"
    monkeypatch.setenv("SIDE_EFFECTS", str(effects))
    worker = workers(stack.env(SIDE_EFFECTS=effects), concurrency=2).wait_ready()
    return stack, client_app, worker, effects


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_delay_get_round_trip_stores_a_typed_item(running):
    stack, app, worker, _ = running
    result = app.tasks["tests.add"].delay(2, 3)
    assert result.get(timeout=30) == 5
    item = stack.item(result.id)
    assert item["task_id"] == result.id  # a plain string key, never b'...'
    assert item["status"] == "SUCCESS"
    assert item["status_shard"].startswith("SUCCESS#")
    assert item["task_name"] == "tests.add"
    assert item["worker"].startswith("w1@")
    assert item["args"] == "(2, 3)"
    assert item["expires_at"] > time.time()
    assert result.date_done is not None


def test_failure_carries_traceback_and_propagates(running):
    _, app, _, _ = running
    result = app.tasks["tests.fail"].delay("bad input")
    with pytest.raises(ValueError, match="bad input"):
        result.get(timeout=30)
    assert result.state == "FAILURE"
    assert "ValueError: bad input" in result.traceback
    assert isinstance(result.get(timeout=5, propagate=False), ValueError)


def test_retry_then_success(running):
    _, app, _, effects = running
    result = app.tasks["tests.retry_once"].delay("r1")
    assert result.get(timeout=30) == 1
    assert len([x for x in lines(effects) if x.startswith("r1")]) == 2  # first try + one retry


def test_progress_is_visible_from_the_client(running):
    stack, app, _, _ = running
    result = app.tasks["tests.progress"].delay(8, 0.4)
    seen = wait_until(lambda: result.state == "PROGRESS" and result.info, 20, "PROGRESS state")
    assert seen["total"] == 8 and 1 <= seen["done"] <= 8
    # PROGRESS keeps the index entry under STARTED (no index write per update)
    assert stack.item(result.id)["status_shard"].startswith("STARTED#")
    assert result.get(timeout=30) == 8


def test_group_chain_and_chord(running):
    _, app, _, _ = running
    add, tsum = app.tasks["tests.add"], app.tasks["tests.tsum"]
    g = group(add.s(i, i) for i in range(10)).apply_async()
    assert g.get(timeout=60) == [2 * i for i in range(10)]
    c = chain(add.s(1, 2), add.s(10), add.s(100)).apply_async()
    assert c.get(timeout=60) == 113
    ch = chord((add.s(i, 1) for i in range(6)), tsum.s()).apply_async()
    assert ch.get(timeout=60) == sum(i + 1 for i in range(6))


def test_nested_chord_and_failing_chord_part(running):
    _, app, _, _ = running
    add, tsum, fail = app.tasks["tests.add"], app.tasks["tests.tsum"], app.tasks["tests.fail"]
    inner = chord((add.s(i, i) for i in range(3)), tsum.s())
    outer = chord([inner, add.s(100, 0)], tsum.s()).apply_async()
    assert outer.get(timeout=90) == (0 + 2 + 4) + 100
    broken = chord([add.s(1, 1), fail.s("part failed")], tsum.s()).apply_async()
    with pytest.raises(ValueError, match="part failed"):
        broken.get(timeout=60)  # Celery raises the failing header part's error first
    wait_until(lambda: broken.state == "FAILURE", 30, "chord body marked FAILURE")
    assert isinstance(broken.result, ChordError) and "part failed" in str(broken.result)


def test_listing_by_status_newest_first(running):
    stack, app, _, _ = running
    add = app.tasks["tests.add"]
    ids = []
    for i in range(5):
        ids.append(add.delay(i, i).id)
        app.AsyncResult(ids[-1]).get(timeout=30)
    failed = app.tasks["tests.fail"].delay("listed")
    failed.get(timeout=30, propagate=False)
    found = wait_until(lambda: (lambda j: j if len(j) >= 5 else None)(jobs(app, "SUCCESS", limit=50)[0]),
                       10, "5 successes in the index")
    assert [j["task_id"] for j in found][:5] == list(reversed(ids))
    assert all(j["status"] == "SUCCESS" and j["task_name"] == "tests.add" for j in found)
    page1, cursor = jobs(app, "SUCCESS", limit=2)
    page2, _ = jobs(app, "SUCCESS", limit=2, cursor=cursor)
    assert [j["task_id"] for j in page1 + page2] == list(reversed(ids))[:4]
    assert [j["task_id"] for j in jobs(app, "FAILURE")[0]] == [failed.id]


def test_revoke_before_start_means_never_runs(running, workers):
    stack, app, worker, effects = running
    worker.stop()
    result = app.tasks["tests.effect"].delay("revoked-one")
    result.revoke()  # no broadcast on SQS: written to DynamoDB as REVOKED
    assert stack.item(result.id)["status"] == "REVOKED"
    workers(stack.env(SIDE_EFFECTS=effects), name="late").wait_ready()
    ok = app.tasks["tests.effect"].delay("after")
    assert ok.get(timeout=30) == "after"
    assert result.state == "REVOKED"
    assert not [x for x in lines(effects) if x.startswith("revoked-one")]


def test_message_redelivered_after_success_does_not_run_again(running):
    stack, app, worker, effects = running
    result = app.tasks["tests.effect"].delay("once")
    assert result.get(timeout=30) == "once"
    # Send the very same task message again, as SQS would after a lost delete.
    again = app.tasks["tests.effect"].apply_async(("once",), task_id=result.id)
    marker = app.tasks["tests.add"].delay(1, 1)
    assert marker.get(timeout=30) == 2
    wait_until(lambda: "Skipping task tests.effect" in worker.output(), 20, "duplicate skipped")
    assert again.state == "SUCCESS"
    assert len([x for x in lines(effects) if x.startswith("once")]) == 1


def test_large_result_round_trips_through_s3(running):
    stack, app, _, _ = running
    result = app.tasks["tests.big_result"].delay(500_000)
    assert result.get(timeout=30) == "x" * 500_000
    item = stack.item(result.id)
    assert "result" not in item and item["result_s3"].startswith(f"s3://{stack.bucket}/")


def test_unserializable_result_fails_with_clear_error(running):
    _, app, worker, _ = running
    result = app.tasks["tests.unserializable"].delay()
    with pytest.raises(Exception, match="cannot be serialized"):
        result.get(timeout=30)
    assert result.state == "FAILURE"
    marker = app.tasks["tests.add"].delay(2, 2)
    assert marker.get(timeout=30) == 4  # the worker lives on


def test_expired_result_reads_as_pending(stack, workers, monkeypatch):
    from tests.support.stack import make_client_app

    app = make_client_app(stack, monkeypatch, TEST_RESULT_EXPIRES=5)
    workers(stack.env(TEST_RESULT_EXPIRES=5)).wait_ready()
    result = app.tasks["tests.add"].delay(1, 2)
    assert result.get(timeout=30) == 3
    stored = stack.item(result.id)
    assert stored["status"] == "SUCCESS"  # still in the table (TTL deletes lazily) ...
    time.sleep(max(0.0, stored["expires_at"] - time.time()) + 1.1)
    assert stack.item(result.id)["status"] == "SUCCESS"
    fresh = app.AsyncResult(result.id)
    assert fresh.state == states.PENDING  # ... but reads treat it as missing


def test_missing_table_is_a_clear_error(stack, monkeypatch):
    from celery_sqs_ddb.exceptions import TableNotFound
    from tests.support.stack import make_client_app

    app = make_client_app(stack, monkeypatch, TEST_TABLE="no-such-table")
    with pytest.raises(TableNotFound, match=r"DynamoDB table 'no-such-table' \(sqs_ddb_table, region eu-west-1\) "
                                            r"does not exist; run \"celery -A app sqs-ddb create-table\""):
        app.AsyncResult("some-id").state  # noqa: B018


def test_group_of_100_reads_through_batch_get(running, moto_server):
    stack, app, _, _ = running
    add = app.tasks["tests.add"]
    g = group(add.s(i, 1) for i in range(100)).apply_async()

    def all_done() -> bool:  # read directly from moto, not through the counting proxy
        return all((stack.item(r.id) or {}).get("status") == "SUCCESS" for r in g.results)

    wait_until(all_done, 90, "all 100 tasks done", interval=0.5)
    moto_server.reset_counts()
    assert g.get(timeout=60) == [i + 1 for i in range(100)]
    counts = moto_server.counts()
    assert counts.get("dynamodb:GetItem", 0) == 0, counts
    # a first window of 10, all ready, then the other 90 in one call; each item read once
    assert counts.get("dynamodb:BatchGetItem", 0) == 2, counts
    assert counts.get("dynamodb:BatchGetItem#items", 0) == 100, counts
