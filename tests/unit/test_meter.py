"""The metering proxy bills what AWS would: DynamoDB write/read request units (table and index
apart) and SQS requests, against a real moto server subprocess (the session's ``moto_server``)."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from celery_sqs_ddb import schema
from tests.fakes.aws_proxy import item_size, number_size, read_units, write_units
from tests.fakes.moto_server import MotoServer

REGION = "eu-west-1"


@pytest.fixture
def table(moto_server: MotoServer) -> str:
    """A table with the package's layout (status index, INCLUDE projection), created around the proxy."""
    name = f"meter-{uuid.uuid4().hex[:8]}"
    direct = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_server.direct_url)
    direct.create_table(**schema.create_table_request(name))
    return name


@pytest.fixture
def ddb(moto_server: MotoServer) -> Any:
    return boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_server.url)


def billed(server: MotoServer) -> dict[str, float]:
    units = server.units()
    assert "meter:errors" not in units, units
    return units


def row(task_id: str, status: str = "QUEUED", **extra: str) -> dict[str, Any]:
    item = {schema.TASK_ID: {"S": task_id}, schema.STATUS: {"S": status},
            schema.STATUS_SHARD: {"S": f"{status}#0"}, schema.UPDATED_AT: {"S": "2026-12-02T18:00:00Z"},
            schema.TASK_NAME: {"S": "tasks.add"}}
    item.update({k: {"S": v} for k, v in extra.items()})
    return item


def test_item_size_follows_dynamodb_rules() -> None:
    assert item_size({"ab": {"S": "xyz"}}) == 5
    assert item_size({"n": {"N": "12345"}}) == 1 + 4  # 5 digits: 3 bytes + 1
    assert number_size("-0.00120") == 2
    assert item_size({"b": {"BOOL": True}, "z": {"NULL": True}}) == 4
    assert item_size({"l": {"L": [{"S": "ab"}, {"N": "1"}]}}) == 1 + 3 + (1 + 2) + (1 + 2)
    assert item_size({"m": {"M": {"k": {"S": "v"}}}}) == 1 + 3 + 1 + 1 + 1
    assert write_units(0) == 1 and write_units(1024) == 1 and write_units(1025) == 2
    assert read_units(4096, True) == 1 and read_units(4097, False) == 1.0 and read_units(1, False) == 0.5


def test_put_enters_the_index_and_bills_by_kilobyte(moto_server: MotoServer, ddb: Any, table: str) -> None:
    moto_server.reset_counts()
    ddb.put_item(TableName=table, Item=row("a"))
    ddb.put_item(TableName=table, Item=row("b", result="x" * 1500))  # 2 KB on the table, index row small
    units = billed(moto_server)
    assert units["ddb:WRU:table"] == 1 + 2
    assert units["ddb:WRU:index"] == 2 and units["ddb:index_writes"] == 2
    assert units["ddb:WRU"] == 5 == units["ddb:WRU:PutItem"]
    assert moto_server.counts()["dynamodb:PutItem"] == 2  # the meter's own reads are not counted


def test_update_bills_index_moves_projected_changes_and_nothing_else(moto_server: MotoServer, ddb: Any,
                                                                   table: str) -> None:
    ddb.put_item(TableName=table, Item=row("t"))

    def update(expression: str, values: dict[str, Any], **extra: Any) -> dict[str, float]:
        moto_server.reset_counts()
        if values:
            extra["ExpressionAttributeValues"] = values
        answer = ddb.update_item(TableName=table, Key={schema.TASK_ID: {"S": "t"}}, UpdateExpression=expression,
                                 **extra)
        units = billed(moto_server)
        units["answer_has_attributes"] = "Attributes" in answer
        return units

    moved = update("SET status_shard = :s, #st = :st", {":s": {"S": "STARTED#0"}, ":st": {"S": "STARTED"}},
                   ExpressionAttributeNames={"#st": "status"})
    assert (moved["ddb:WRU:table"], moved["ddb:WRU:index"], moved["ddb:index_writes"]) == (1, 2, 2)
    assert moved["answer_has_attributes"] is False  # the meter's ALL_NEW is not what the client asked for
    projected = update("SET task_name = :n", {":n": {"S": "tasks.other"}})
    assert (projected["ddb:WRU:table"], projected["ddb:WRU:index"]) == (1, 1)
    unindexed = update("SET #r = :r", {":r": {"S": "y" * 2100}}, ExpressionAttributeNames={"#r": "result"})
    assert (unindexed["ddb:WRU:table"], unindexed["ddb:WRU:index"]) == (3, 0)  # the larger image: 3 KB
    shrunk = update("REMOVE #r", {}, ExpressionAttributeNames={"#r": "result"})
    assert shrunk["ddb:WRU:table"] == 3  # the item before was 3 KB
    asked = update("SET worker = :w", {":w": {"S": "w1"}}, ReturnValues="ALL_NEW")
    assert asked["answer_has_attributes"] is True and asked["ddb:WRU:index"] == 1  # worker is projected
    left = update("REMOVE status_shard", {})
    assert (left["ddb:WRU:table"], left["ddb:WRU:index"], left["ddb:index_writes"]) == (1, 1, 1)
    outside = update("SET task_name = :n", {":n": {"S": "tasks.third"}})
    assert outside["ddb:WRU:index"] == 0  # not in the (sparse) index before or after


def test_refused_conditional_write_bills_the_table_only(moto_server: MotoServer, ddb: Any, table: str) -> None:
    ddb.put_item(TableName=table, Item=row("c", "SUCCESS"))
    moto_server.reset_counts()
    with pytest.raises(ClientError) as refused:
        ddb.update_item(TableName=table, Key={schema.TASK_ID: {"S": "c"}},
                        UpdateExpression="SET status_shard = :s", ConditionExpression="#st <> :done",
                        ExpressionAttributeNames={"#st": "status"},
                        ExpressionAttributeValues={":s": {"S": "STARTED#0"}, ":done": {"S": "SUCCESS"}},
                        ReturnValuesOnConditionCheckFailure="ALL_OLD")
    assert refused.value.response["Item"][schema.STATUS] == {"S": "SUCCESS"}
    units = billed(moto_server)
    assert units["ddb:WRU"] == 1 and units.get("ddb:WRU:index", 0) == 0 and units["ddb:refused_writes"] == 1


def test_reads_bill_by_size_and_consistency(moto_server: MotoServer, ddb: Any, table: str) -> None:
    ddb.put_item(TableName=table, Item=row("r1"))
    ddb.put_item(TableName=table, Item=row("r2", result="z" * 5000))  # 2 x 4 KB
    moto_server.reset_counts()
    ddb.get_item(TableName=table, Key={schema.TASK_ID: {"S": "r1"}})
    assert billed(moto_server)["ddb:RRU"] == 0.5
    ddb.get_item(TableName=table, Key={schema.TASK_ID: {"S": "r2"}}, ConsistentRead=True)
    assert billed(moto_server)["ddb:RRU"] == 0.5 + 2
    ddb.get_item(TableName=table, Key={schema.TASK_ID: {"S": "missing"}}, ConsistentRead=True)
    assert billed(moto_server)["ddb:RRU"] == 0.5 + 2 + 1
    moto_server.reset_counts()
    keys = [{schema.TASK_ID: {"S": k}} for k in ("r1", "r2", "missing")]
    ddb.batch_get_item(RequestItems={table: {"Keys": keys, "ConsistentRead": False}})
    units = billed(moto_server)
    assert units["ddb:RRU"] == units["ddb:RRU:BatchGetItem"] == 0.5 + 1 + 0.5  # per item, rounded each
    moto_server.reset_counts()
    ddb.query(TableName=table, IndexName=schema.STATUS_INDEX, KeyConditionExpression="status_shard = :s",
              ExpressionAttributeValues={":s": {"S": "QUEUED#0"}})
    assert billed(moto_server)["ddb:RRU:Query"] == 0.5  # two small index rows: under 4 KB together


def test_table_seen_non_empty_reads_unknown_items_once(moto_server: MotoServer, ddb: Any, table: str) -> None:
    direct = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_server.direct_url)
    other = f"{table}-b"
    direct.create_table(**schema.create_table_request(other))
    direct.put_item(TableName=other, Item=row("old", "STARTED"))  # written around the proxy
    moto_server.reset_counts()
    ddb.update_item(TableName=other, Key={schema.TASK_ID: {"S": "old"}}, UpdateExpression="SET status_shard = :s",
                    ExpressionAttributeValues={":s": {"S": "SUCCESS#0"}})
    assert billed(moto_server)["ddb:WRU:index"] == 2  # it was in the index: a move, not an entry
    assert moto_server.counts() == {"dynamodb:UpdateItem": 1}


def test_batch_write_and_transaction(moto_server: MotoServer, ddb: Any, table: str) -> None:
    moto_server.reset_counts()
    ddb.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": row(f"b{i}")}} for i in range(3)]})
    units = billed(moto_server)
    assert (units["ddb:WRU:table"], units["ddb:WRU:index"]) == (3, 3)
    moto_server.reset_counts()
    ddb.transact_write_items(TransactItems=[{"Update": {
        "TableName": table, "Key": {schema.TASK_ID: {"S": "b0"}}, "UpdateExpression": "SET chord_counted = :g",
        "ExpressionAttributeValues": {":g": {"S": "g1"}}}}])
    units = billed(moto_server)
    assert (units["ddb:WRU:table"], units["ddb:WRU:index"]) == (2, 0)  # transactions bill twice


def test_sqs_requests_are_64_kib_chunks(moto_server: MotoServer) -> None:
    direct = boto3.client("sqs", region_name=REGION, endpoint_url=moto_server.direct_url)
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto_server.url)
    url = direct.create_queue(QueueName=f"meter-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    fifo = direct.create_queue(QueueName=f"meter-{uuid.uuid4().hex[:8]}.fifo",
                               Attributes={"FifoQueue": "true"})["QueueUrl"]
    moto_server.reset_counts()
    sqs.send_message(QueueUrl=url, MessageBody="x" * 100_000)  # 2 chunks
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "small"} for i in range(10)])
    units = billed(moto_server)
    assert units["sqs:requests:SendMessage"] == 2 and units["sqs:requests:SendMessageBatch"] == 1
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                                    for i, m in enumerate(got)])
    units = billed(moto_server)
    big = any(len(m["Body"]) == 100_000 for m in got)
    assert units["sqs:requests:ReceiveMessage"] == (2 if big else 1)
    assert units["sqs:requests:DeleteMessageBatch"] == 1
    assert units["sqs:requests"] == 2 + 1 + units["sqs:requests:ReceiveMessage"] + 1
    sqs.send_message(QueueUrl=fifo, MessageBody="f", MessageGroupId="g", MessageDeduplicationId="d")
    assert billed(moto_server)["sqs:fifo_requests"] == 1
