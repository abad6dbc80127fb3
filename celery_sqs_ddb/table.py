"""The task table: every read and conditional write of the typed items, in one place.

Writes follow one pattern (named condition fragments joined into one expression, every
attribute through ``ExpressionAttributeNames`` from :mod:`~celery_sqs_ddb.schema`,
``ReturnValuesOnConditionCheckFailure=ALL_OLD``): a refused write returns the current item at
no extra read. Each state write increments the item's version (:data:`schema.VERSION`), which
readers use to never go back to an older state after an eventually consistent read.

Request units (items under 1 KB; the index rows carry the keys and ``INDEX_PROJECTION``):

============================  ======================================================
write                         units
============================  ======================================================
claim, STARTED published      1 + 1 index (enters; 2 if it leaves QUEUED or RETRY)
claim, STARTED not published  1 (touches no index attribute)
RETRY / final state           1 + 1 index (enters) or 2 (moves from another state)
PROGRESS (custom state)       1 (status and meta only: no index key or projection)
QUEUED row                    1 + 1 index
revoke before start           1 + 1 (or 2)
============================  ======================================================
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from . import aws, schema, states
from .config import Settings
from .exceptions import StateConflict
from .waiting import backoff_intervals

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """Fixed-width ISO-8601 UTC (sortable as a string: the index sort key)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Condition:
    """A condition expression built from named fragments, with its names and values."""

    expression: str
    names: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)

    def __and__(self, other: Condition) -> Condition:
        return Condition(f"({self.expression}) AND ({other.expression})", {**self.names, **other.names},
                         {**self.values, **other.values})


_STATUS = {"#st": schema.STATUS}
#: The task has no final state yet (first final state wins).
NOT_FINAL = Condition("attribute_not_exists(#st) OR NOT (#st IN (:success, :failure, :revoked))", _STATUS,
                      {":success": states.SUCCESS, ":failure": states.FAILURE, ":revoked": states.REVOKED})
#: No item yet: only a QUEUED row may be written.
NEW_ITEM = Condition("attribute_not_exists(#st)", _STATUS)
#: Not started: no attempt holds it and its state is one a revoke may replace.
NOT_STARTED = Condition(
    "attribute_not_exists(#cb) AND (attribute_not_exists(#st) OR #st IN (:pending, :queued, :retry, :received, "
    ":rejected))", {**_STATUS, "#cb": schema.CLAIMED_BY},
    {":pending": states.PENDING, ":queued": states.QUEUED, ":retry": states.RETRY, ":received": "RECEIVED",
     ":rejected": "REJECTED"})

#: Celery's own STARTED write (``task_track_started`` without the claim, ``mark_as_started``).
NOT_RUNNING_YET = Condition("attribute_not_exists(#st) OR #st IN (:pending, :queued, :retry)", _STATUS,
                            {":pending": states.PENDING, ":queued": states.QUEUED, ":retry": states.RETRY})


def attempt_at_most(key: int) -> Condition:
    """No newer attempt than ``key`` has claimed or retried the task."""
    return Condition("attribute_not_exists(#ck) OR #ck <= :ck", {"#ck": schema.CLAIM_KEY}, {":ck": key})


def claimable_by(key: int, message_id: str | None) -> Condition:
    """No newer attempt holds the task, and the same attempt only through the same SQS message
    (our own retry of a claim); a duplicate message of the task is refused."""
    if not message_id:
        return attempt_at_most(key)
    return Condition("attribute_not_exists(#ck) OR #ck < :ck OR (#ck = :ck AND #cm = :cm)",
                     {"#ck": schema.CLAIM_KEY, "#cm": schema.CLAIM_MESSAGE}, {":ck": key, ":cm": message_id})


# --------------------------------------------------------------------------- the table


class TaskTable:
    """The typed task items of one table (see :mod:`celery_sqs_ddb.schema`)."""

    def __init__(self, settings: Settings, expires: float | None = None) -> None:
        self.settings = settings
        self.name = settings.require_table()
        self.expires = expires

    @property
    def client(self) -> Any:
        return aws.client("dynamodb", **{**self.settings.client_args(), "region": self.settings.require_region()})

    def where(self) -> str:
        return f"DynamoDB table '{self.name}' (sqs_ddb_table, region {self.settings.region})"

    def call(self, action: str, method: str, **params: Any) -> Any:
        """One DynamoDB call; missing table or permission become one clear error."""
        with aws.translated("dynamodb", action, self.where(), hint='run "celery -A app sqs-ddb create-table"'):
            return getattr(self.client, method)(**params)

    # ------------------------------------------------------------------ attributes

    def expires_at(self) -> int | None:
        """The TTL attribute's value for an item written now (None: no TTL)."""
        if self.settings.ttl and self.expires:
            return int(time.time() + self.expires)
        return None

    def indexed(self, state: str, task_id: str, now: str) -> dict[str, Any]:
        """The attributes that place a task in the status index under ``state``."""
        shown = states.index_state(state)
        return {schema.STATUS: state, schema.STATUS_SHARD: schema.status_shard(shown, task_id,
                                                                               self.settings.status_shards),
                schema.UPDATED_AT: now}

    # ------------------------------------------------------------------ writes

    def update(self, task_id: str, sets: Mapping[str, Any], condition: Condition | None = None,
               removes: Iterable[str] = (), keep: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """One UpdateItem (version incremented); None if written, the current item if refused.

        ``keep`` attributes are set only where the item has none (``if_not_exists``), so writing
        them does not change an index row that already holds them.
        """
        names: dict[str, str] = {"#v": schema.VERSION}
        values: dict[str, Any] = {":one": {"N": "1"}}
        assignments = []
        for i, (attr, value) in enumerate(sets.items()):
            if value is not None:
                names[f"#a{i}"], values[f":a{i}"] = attr, _serializer.serialize(value)
                assignments.append(f"#a{i} = :a{i}")
        for i, (attr, value) in enumerate((keep or {}).items()):
            if value is not None:
                names[f"#k{i}"], values[f":k{i}"] = attr, _serializer.serialize(value)
                assignments.append(f"#k{i} = if_not_exists(#k{i}, :k{i})")
        expression = ("SET " + ", ".join(assignments) + " " if assignments else "") + "ADD #v :one"
        dropped = [attr for attr in removes if attr not in sets]
        for i, attr in enumerate(dropped):
            names[f"#r{i}"] = attr
        if dropped:
            expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(dropped)))
        params: dict[str, Any] = {"TableName": self.name, "Key": {schema.TASK_ID: {"S": task_id}},
                                  "UpdateExpression": expression}
        if condition is not None:
            names.update(condition.names)
            values.update({k: _serializer.serialize(v) for k, v in condition.values.items()})
            params["ConditionExpression"] = condition.expression
            params["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        params["ExpressionAttributeNames"] = names
        params["ExpressionAttributeValues"] = values
        try:
            self.call("UpdateItem", "update_item", **params)
        except ClientError as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                found: dict[str, Any] = exc.response.get("Item") or {}
                return item_to_python(found)
            raise
        return None

    def claim(self, task_id: str, *, attempt: int, message_id: str | None, worker: str | None,
              task_name: str | None, queue: str | None, retries: int, publish_started: bool) -> None:
        """Record that ``attempt`` runs the task now; raise :class:`StateConflict` if it must not run.

        Refused when the task is final (SUCCESS, FAILURE, REVOKED), a newer attempt holds it, or
        another message of the same attempt does (a duplicate publish). The same message may claim
        again (a claim retried after an error). With ``publish_started`` the task shows as STARTED
        (status index); without, the claim touches no indexed attribute (1 write unit, no index write).
        """
        now = iso(utcnow())
        sets: dict[str, Any] = {schema.CLAIM_KEY: attempt, schema.CLAIM_MESSAGE: message_id,
                                schema.CLAIMED_BY: worker or "?", schema.STARTED_AT: now}
        keep: dict[str, Any] = {schema.EXPIRES_AT: self.expires_at()}
        if publish_started:
            sets.update({**self.indexed(states.STARTED, task_id, now), schema.TASK_NAME: task_name,
                         schema.WORKER: worker, schema.QUEUE: queue, schema.RETRIES: retries,
                         schema.EXPIRES_AT: self.expires_at()})
            keep = {}
        current = self.update(task_id, sets, NOT_FINAL & claimable_by(attempt, message_id), keep=keep)
        if current is not None:
            raise StateConflict(
                f"task {task_id} is {current.get(schema.STATUS) or states.PENDING}"
                f"{_holder(current)}, so attempt {_attempt_text(attempt)} does not run", current)

    def revoke(self, task_ids: Iterable[str], sets: Mapping[str, Any]) -> list[str]:
        """Write REVOKED for tasks that have not started and are not final; returns those revoked."""
        revoked = []
        for task_id in dict.fromkeys(str(t) for t in task_ids):
            now = iso(utcnow())
            values = {**sets, **self.indexed(states.REVOKED, task_id, now), schema.DATE_DONE: now,
                      schema.EXPIRES_AT: self.expires_at()}
            if self.update(task_id, values, NOT_FINAL & NOT_STARTED) is None:
                revoked.append(task_id)
        return revoked

    def queue_rows(self, rows: Iterable[tuple[str, str, str | None]]) -> None:
        """QUEUED rows ``(task_id, task_name, queue)`` with BatchWriteItem, 25 a call, retried until written."""
        now = iso(utcnow())
        requests = []
        for task_id, task_name, queue in rows:
            item = {schema.TASK_ID: task_id, **self.indexed(states.QUEUED, task_id, now), schema.CREATED_AT: now,
                    schema.TASK_NAME: task_name, schema.QUEUE: queue, schema.EXPIRES_AT: self.expires_at(),
                    schema.VERSION: 1}
            requests.append({"PutRequest": {"Item": {k: _serializer.serialize(v) for k, v in item.items()
                                                      if v is not None}}})
        for start in range(0, len(requests), 25):
            pending: dict[str, Any] = {self.name: requests[start:start + 25]}
            pauses = backoff_intervals(0.05, 2.0, 2.0)
            while pending:
                pending = self.call("BatchWriteItem", "batch_write_item", RequestItems=pending).get(
                    "UnprocessedItems") or {}
                if pending:
                    time.sleep(next(pauses))

    def delete(self, task_id: str) -> None:
        self.call("DeleteItem", "delete_item", TableName=self.name, Key={schema.TASK_ID: {"S": task_id}})

    def count_chord_part(self, group_id: str, part_id: str) -> bool:
        """Count a finished header part on its chord's counter item, once: the part's marker and
        the counter change in one transaction. False if the part was counted before."""
        part = {"Update": {
            "TableName": self.name, "Key": {schema.TASK_ID: {"S": part_id}},
            "UpdateExpression": "SET #c = :g", "ConditionExpression": "attribute_not_exists(#c)",
            "ExpressionAttributeNames": {"#c": schema.CHORD_COUNTED},
            "ExpressionAttributeValues": {":g": {"S": group_id}},
        }}
        names, values, sets = self._counter_item()
        names["#n"], values[":one"] = schema.CHORD_COUNT, {"N": "1"}
        counter = {"Update": {
            "TableName": self.name, "Key": {schema.TASK_ID: {"S": schema.chord_key(group_id)}},
            "UpdateExpression": f"SET {sets} ADD #n :one",
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
        }}
        try:
            self.call("TransactWriteItems", "transact_write_items", TransactItems=[part, counter])
        except ClientError as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
            if aws.error_code(exc) == "TransactionCanceledException" and reasons[:1] == ["ConditionalCheckFailed"]:
                return False
            raise
        return True

    def _counter_item(self) -> tuple[dict[str, str], dict[str, Any], str]:
        """Names, values and SET clauses that make a chord counter item what it is (its kind, its
        TTL) when an update creates it."""
        names = {"#kind": schema.KIND}
        values: dict[str, Any] = {":kind": {"S": schema.KIND_CHORD}}
        sets = "#kind = :kind"
        expires = self.expires_at()
        if expires is not None:
            names["#exp"], values[":exp"] = schema.EXPIRES_AT, {"N": str(expires)}
            sets += ", #exp = if_not_exists(#exp, :exp)"
        return names, values, sets

    def set_chord_size(self, group_id: str, size: int) -> None:
        names, values, sets = self._counter_item()
        names["#s"], values[":n"] = schema.CHORD_SIZE, {"N": str(int(size))}
        self.call("UpdateItem", "update_item", TableName=self.name,
                  Key={schema.TASK_ID: {"S": schema.chord_key(group_id)}}, UpdateExpression=f"SET {sets}, #s = :n",
                  ExpressionAttributeNames=names, ExpressionAttributeValues=values)

    def mark_chord_fired(self, group_id: str) -> None:
        self.call("UpdateItem", "update_item", TableName=self.name,
                  Key={schema.TASK_ID: {"S": schema.chord_key(group_id)}}, UpdateExpression="SET #f = :t",
                  ExpressionAttributeNames={"#f": schema.CHORD_FIRED},
                  ExpressionAttributeValues={":t": {"BOOL": True}})

    # ------------------------------------------------------------------ reads

    def get(self, task_id: str, consistent: bool = True) -> dict[str, Any] | None:
        """One item (None if missing); strongly consistent unless ``consistent=False`` (half the units)."""
        response = self.call("GetItem", "get_item", TableName=self.name, Key={schema.TASK_ID: {"S": task_id}},
                             ConsistentRead=consistent)
        item = response.get("Item")
        return item_to_python(item) if item else None

    def batch_get(self, keys: Iterable[str], consistent: bool = True) -> dict[str, dict[str, Any]]:
        """BatchGetItem, 100 keys a call, unprocessed keys retried with backoff."""
        keys = list(dict.fromkeys(str(k) for k in keys))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 100):
            window = keys[start:start + 100]
            request: dict[str, Any] = {self.name: {"Keys": [{schema.TASK_ID: {"S": k}} for k in window],
                                                   "ConsistentRead": consistent}}
            pauses = backoff_intervals(0.02, 2.0, 1.0)
            while request:
                response = self.call("BatchGetItem", "batch_get_item", RequestItems=request)
                for raw in response.get("Responses", {}).get(self.name, []):
                    item = item_to_python(raw)
                    found[item[schema.TASK_ID]] = item
                request = response.get("UnprocessedKeys") or {}
                if request:
                    time.sleep(next(pauses))
        return found

    def list_jobs(self, status: str, since: datetime | str | None = None, limit: int = 50,
                  cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Jobs in ``status``, newest first across every shard, and the cursor of the next page.

        Each shard is read lazily in pages and merged; the cursor is the last row's
        ``updated_at|task_id`` and rows at or after it are skipped inside the shard's stream, so
        following the cursor reaches every job exactly once. The index is eventually consistent
        (a GSI always is): a job that just changed state may show in its old state briefly.
        """
        status = status.upper()
        if status == states.PROGRESS:
            status = states.STARTED
        if status not in states.INDEXED:
            raise ValueError(f"status {status!r} is not listed by the index; accepted: {', '.join(states.INDEXED)}")
        if isinstance(since, datetime):
            since = iso(since.astimezone(timezone.utc))
        after: tuple[str, str] | None = None
        if cursor:
            upper, sep, cursor_id = cursor.partition("|")
            if not sep or not upper:
                raise ValueError(f"cursor {cursor!r} is not one returned by a listing (updated_at|task_id)")
            after = (upper, cursor_id)
        streams = [self._shard_rows(f"{status}#{shard}", since, after, limit + 1)
                   for shard in range(self.settings.status_shards)]
        merged = heapq.merge(*streams, key=lambda j: (j["updated_at"], j["task_id"]), reverse=True)
        jobs = [job for _, job in zip(range(limit + 1), merged, strict=False)]
        if len(jobs) <= limit:
            return jobs, None
        jobs = jobs[:limit]
        return jobs, f"{jobs[-1]['updated_at']}|{jobs[-1]['task_id']}"

    def _shard_rows(self, shard_key: str, since: str | None, after: tuple[str, str] | None,
                    page: int) -> Iterator[dict[str, Any]]:
        names = {"#k": schema.STATUS_SHARD, "#t": schema.UPDATED_AT}
        values: dict[str, Any] = {":k": {"S": shard_key}}
        condition = "#k = :k"
        if since and after:
            condition += " AND #t BETWEEN :lo AND :hi"
            values[":lo"], values[":hi"] = {"S": since}, {"S": after[0]}
        elif since:
            condition += " AND #t >= :lo"
            values[":lo"] = {"S": since}
        elif after:
            condition += " AND #t <= :hi"
            values[":hi"] = {"S": after[0]}
        else:
            del names["#t"]
        params: dict[str, Any] = {
            "TableName": self.name, "IndexName": schema.STATUS_INDEX, "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values, "ScanIndexForward": False,
            "Limit": page,
        }
        # Rows with the same updated_at (QUEUED rows written in one batch) come in an order DynamoDB
        # does not define: they are held until the time changes and yielded by task id, descending,
        # the order the merge and the cursor assume.
        ties: list[dict[str, Any]] = []
        while True:
            response = self.call("Query", "query", **params)
            for raw in response.get("Items", []):
                item = item_to_python(raw)
                if expired(item) or (after and (item[schema.UPDATED_AT], item[schema.TASK_ID]) >= after):
                    continue
                if ties and ties[0]["updated_at"] != item[schema.UPDATED_AT]:
                    yield from sorted(ties, key=lambda j: j["task_id"], reverse=True)
                    ties = []
                ties.append({"task_id": item[schema.TASK_ID], "status": item[schema.STATUS_SHARD].split("#", 1)[0],
                             "updated_at": item[schema.UPDATED_AT], "task_name": item.get(schema.TASK_NAME),
                             "worker": item.get(schema.WORKER)})
            if "LastEvaluatedKey" not in response:
                yield from sorted(ties, key=lambda j: j["task_id"], reverse=True)
                return
            params["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def item_to_python(item: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as plain Python values (numbers as int or float)."""
    out = {}
    for key, value in item.items():
        decoded = _deserializer.deserialize(value)
        if hasattr(decoded, "as_integer_ratio") and not isinstance(decoded, (int, float)):
            decoded = int(decoded) if decoded == int(decoded) else float(decoded)
        out[key] = decoded
    return out


def expired(item: Mapping[str, Any]) -> bool:
    """Past its TTL (DynamoDB deletes expired items only within about 48 h: reads filter them)."""
    expires_at = item.get(schema.EXPIRES_AT)
    return expires_at is not None and expires_at < time.time()


def running(item: Mapping[str, Any]) -> bool:
    """An attempt holds the task (it has started and not yet retried or finished)."""
    return schema.CLAIMED_BY in item and not states.is_terminal(item.get(schema.STATUS))


def _attempt_text(key: int) -> str:
    nesting, retries, receives = schema.attempt_of(key)
    return f"{retries}/{receives}" + (f" (replacement {nesting})" if nesting else "")


def _holder(item: Mapping[str, Any]) -> str:
    if schema.CLAIM_KEY not in item:
        return ""
    who = f" on {item[schema.CLAIMED_BY]}" if schema.CLAIMED_BY in item else ""
    return f", held by attempt {_attempt_text(item[schema.CLAIM_KEY])}{who}"
