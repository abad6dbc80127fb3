"""Celery result backend over a typed DynamoDB table with a status index.

``result_backend = "ddb://TABLE?region=R"`` selects it (entry point ``celery.result_backends``).

AWS actions it uses (the worker role in ``deploy/terraform`` grants exactly these, see
``celery_sqs_ddb.aws.RUNTIME_ACTIONS``): dynamodb:GetItem (consistent single reads),
dynamodb:BatchGetItem (groups, 100 keys a call), dynamodb:UpdateItem (every state write,
conditional), dynamodb:DeleteItem (forget), dynamodb:Query (listing by status),
dynamodb:BatchWriteItem (bulk QUEUED rows), s3:PutObject/GetObject/DeleteObject (large results).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from celery import states as celery_states
from celery.backends.base import BaseBackend, _create_chord_error_with_cause
from celery.exceptions import ChordError, TimeoutError
from celery.result import GroupResult, allow_join_result, result_from_tuple
from celery.utils.log import get_logger
from kombu.exceptions import EncodeError
from kombu.utils.objects import cached_property

from . import aws, schema, states
from .config import Settings
from .exceptions import ResultTooLarge, StateConflict
from .payloads import PayloadStore

logger = get_logger(__name__)

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

#: Conditions are named fragments joined into one expression (names via schema).
_NOT_TERMINAL = "(attribute_not_exists(#status) OR NOT (#status IN (:success, :failure, :revoked)))"
_TERMINAL_VALUES = {":success": states.SUCCESS, ":failure": states.FAILURE, ":revoked": states.REVOKED}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """Fixed-width ISO-8601 UTC (sortable as a string: the index sort key)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def backoff_intervals(first: float = 0.02, factor: float = 1.5, ceiling: float = 1.0) -> Iterator[float]:
    """Polling pauses: tens of ms first, growing to ``ceiling`` (about 1 s)."""
    pause = first
    while True:
        yield pause
        pause = min(ceiling, pause * factor)


class DynamoDBBackend(BaseBackend):
    """Result backend: one item per task, conditional state writes, a sharded status index."""

    supports_autoexpire = True
    supports_native_join = True
    persistent = True

    def __init__(self, app: Any = None, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, url=url, **kwargs)
        self.settings = Settings.from_app(self.app, url)
        self.table_name = self.settings.require_table()

    # ------------------------------------------------------------------ clients

    @property
    def client(self) -> Any:
        s = self.settings
        return aws.client("dynamodb", s.require_region(), s.endpoint_url, s.retry_mode, s.max_attempts)

    @cached_property
    def payloads(self) -> PayloadStore | None:
        s = self.settings
        if not s.s3_bucket:
            return None
        return PayloadStore(s.s3_bucket, s.s3_prefix + "results/", s.region, s.endpoint_url,
                            s.retry_mode, s.max_attempts)

    def _where(self) -> str:
        return f"DynamoDB table '{self.table_name}' (sqs_ddb_table, region {self.settings.region})"

    def _call(self, action: str, method: str, **params: Any) -> Any:
        hint = 'run "celery -A app sqs-ddb create-table"'
        with aws.translated("dynamodb", action, self._where(), hint=hint):
            return getattr(self.client, method)(**params)

    def exception_safe_to_retry(self, exc: BaseException) -> bool:
        """Throttling and 5xx left over after botocore's own retries (result_backend_always_retry)."""
        return aws.is_retryable(exc)

    # ------------------------------------------------------------ value coding

    def _encode_value(self, value: Any) -> str | bytes:
        return self.encode(value)

    def _decode_value(self, raw: Any) -> Any:
        if isinstance(raw, Binary):
            raw = raw.value
        return self.decode(raw)

    def _store_big(self, task_id: str, field: str, data: str | bytes, budget: int | None = None) -> tuple[str, Any]:
        """Return (attribute, value): inline, or an S3 pointer if over the threshold (or ``budget``)."""
        size = len(data.encode("utf-8") if isinstance(data, str) else data)
        limit = self.settings.result_s3_threshold if budget is None else min(budget, self.settings.result_s3_threshold)
        if size <= limit:
            return field, data
        if self.payloads is None:
            raise ResultTooLarge(
                f"the {field} of task {task_id} is {size} bytes, over sqs_ddb_result_s3_threshold="
                f"{self.settings.result_s3_threshold} (DynamoDB items hold at most 400 KB); "
                "set sqs_ddb_s3_bucket to store large results in S3"
            )
        body = data.encode("utf-8") if isinstance(data, str) else data
        return f"{field}_s3", self.payloads.put(f"{task_id}/{field}", body, self.content_type)

    def _indexed(self, state: str, task_id: str, now: str) -> dict[str, Any]:
        """The attributes that place a task in the status index: status, its shard, updated_at."""
        return {schema.STATUS: state,
                schema.STATUS_SHARD: schema.status_shard(state, task_id, self.settings.status_shards),
                schema.UPDATED_AT: now}

    def _expires_at(self) -> int | None:
        if self.settings.ttl and self.expires:
            return int(time.time() + self.expires)
        return None

    # ---------------------------------------------------------------- writes

    def _update(self, task_id: str, sets: dict[str, Any], condition: str | None,
                values: dict[str, Any] | None = None, removes: Iterable[str] = (),
                names: dict[str, str] | None = None) -> dict[str, Any] | None:
        """One conditional UpdateItem. Returns None on success; the current item if refused."""
        names = {"#status": schema.STATUS, **(names or {})}
        names = {k: v for k, v in names.items() if condition and k in condition}
        expr_values: dict[str, Any] = {}
        assignments = []
        for i, (attr, value) in enumerate(sets.items()):
            if value is None:
                continue
            names[f"#a{i}"] = attr
            expr_values[f":v{i}"] = _serializer.serialize(value)
            assignments.append(f"#a{i} = :v{i}")
        expression = "SET " + ", ".join(assignments)
        remove_names = []
        for j, attr in enumerate(removes):
            names[f"#r{j}"] = attr
            remove_names.append(f"#r{j}")
        if remove_names:
            expression += " REMOVE " + ", ".join(remove_names)
        for key, value in (values or {}).items():
            expr_values[key] = _serializer.serialize(value)
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": {schema.TASK_ID: {"S": task_id}},
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": expr_values,
        }
        if condition:
            params["ConditionExpression"] = condition
            params["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            self._call("UpdateItem", "update_item", **params)
        except ClientError as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                return _item_to_python(exc.response.get("Item") or {})
            raise
        return None

    def _request_fields(self, request: Any) -> dict[str, Any]:
        """Listing metadata from a task request (task name, queue, worker, retries, summaries)."""
        if request is None:
            return {}
        delivery_info = getattr(request, "delivery_info", None) or {}
        fields = {
            schema.TASK_NAME: getattr(request, "task", None),
            schema.WORKER: getattr(request, "hostname", None),
            schema.QUEUE: delivery_info.get("routing_key"),
            schema.RETRIES: getattr(request, "retries", None),
            schema.GROUP_ID: getattr(request, "group", None),
            schema.PARENT_ID: getattr(request, "parent_id", None),
        }
        if self.app.conf.find_value_for_key("extended", "result"):
            n = self.settings.summary_chars
            args = getattr(request, "argsrepr", None) or repr(getattr(request, "args", None) or ())
            kwargs = getattr(request, "kwargsrepr", None) or repr(getattr(request, "kwargs", None) or {})
            fields[schema.ARGS] = args[:n]
            fields[schema.KWARGS] = kwargs[:n]
        return fields

    def _store_result(self, task_id: str, result: Any, state: str, traceback: str | None = None,
                      request: Any = None, **kwargs: Any) -> Any:
        task_id = str(task_id)
        now = utcnow()
        if state in states.TERMINAL or state == states.RETRY:
            sets = self._request_fields(request)
            try:
                encoded = self._encode_value(result)
            except EncodeError as exc:
                raise EncodeError(
                    f"result of task {task_id} cannot be serialized with result_serializer="
                    f"{self.serializer!r}: {exc}") from exc
            attr, value = self._store_big(task_id, schema.RESULT, encoded)
            sets[attr] = value
            removes = [schema.RESULT if attr != schema.RESULT else schema.RESULT_S3]
            if traceback:
                # result and traceback share one item: together they stay under the threshold
                used = len(value) if attr == schema.RESULT else 0
                budget = max(1_024, self.settings.result_s3_threshold - used)
                if self.payloads is None and len(traceback.encode("utf-8")) > budget:
                    # without a bucket a failure must still be recorded: keep the traceback's end
                    traceback = "... (traceback truncated; set sqs_ddb_s3_bucket to keep it whole)\n" + \
                        traceback.encode("utf-8")[-(budget - 100):].decode("utf-8", "ignore")
                tb_attr, tb_value = self._store_big(task_id, schema.TRACEBACK, traceback, budget)
                sets[tb_attr] = tb_value
            children = self.current_task_children(request)
            if children:
                sets[schema.CHILDREN] = self._encode_value(children)
            sets.update({
                **self._indexed(state, task_id, iso(now)),
                schema.EXPIRES_AT: self._expires_at(),
            })
            values = dict(_TERMINAL_VALUES)
            condition = _NOT_TERMINAL
            if state in states.TERMINAL:
                sets[schema.DATE_DONE] = iso(now)
            else:
                # A RETRY from an older attempt must not overwrite the newer attempt's claim.
                condition += " AND (attribute_not_exists(#cr) OR #cr <= :retries)"
                values[":retries"] = int(getattr(request, "retries", 0) or 0)
            current = self._update(task_id, sets, condition, values, removes, {"#cr": schema.CLAIM_RETRIES})
            if current is not None:
                logger.info("Ignored %s for task %s: it is already %s (first terminal state wins)",
                            state, task_id, current.get(schema.STATUS))
            return result
        if state == states.STARTED:
            # Written by task_track_started / mark_as_started; the worker's claim usually did it.
            sets = self._request_fields(request)
            sets.update({
                **self._indexed(state, task_id, iso(now)),
                schema.STARTED_AT: iso(now),
                schema.EXPIRES_AT: self._expires_at(),
            })
            condition = "attribute_not_exists(#status) OR #status IN (:pending, :queued, :retry)"
            values = {":pending": states.PENDING, ":queued": states.QUEUED, ":retry": states.RETRY}
            self._update(task_id, sets, condition, values)
            return result
        if state == states.PENDING:
            return result
        # PROGRESS and other custom states: update status and meta only; the index keys and
        # projected attributes stay as they are, so this write costs no index write.
        attr, value = self._store_big(task_id, schema.RESULT, self._encode_value(result))
        sets = {schema.STATUS: state, attr: value}
        current = self._update(task_id, sets, _NOT_TERMINAL, dict(_TERMINAL_VALUES))
        if current is not None:
            logger.debug("Ignored %s for task %s: already %s", state, task_id, current.get(schema.STATUS))
        return result

    def claim(self, task_id: str, *, task_name: str | None, worker: str | None, queue: str | None,
              retries: int = 0, receive_count: int = 1) -> None:
        """Mark a task STARTED before it runs; raise :class:`StateConflict` if it must not run.

        Allowed when the task has no item, is PENDING/QUEUED, is RETRY with an older retry
        count, or is running under an older attempt (lower retries, or same retries and a lower
        SQS receive count: the earlier holder's message timed out). Refused when terminal
        (SUCCESS/FAILURE/REVOKED) or when another delivery of the same attempt holds it.
        """
        now = iso(utcnow())
        sets = {
            **self._indexed(states.STARTED, task_id, now),
            schema.STARTED_AT: now,
            schema.TASK_NAME: task_name,
            schema.WORKER: worker,
            schema.QUEUE: queue,
            schema.RETRIES: retries,
            schema.CLAIM_RETRIES: retries,
            schema.CLAIM_RECEIVES: receive_count,
            schema.EXPIRES_AT: self._expires_at(),
        }
        condition = (
            "attribute_not_exists(#status) OR #status IN (:pending, :queued)"
            " OR (#status = :retry AND (attribute_not_exists(#cr) OR #cr < :retries))"
            " OR (NOT (#status IN (:success, :failure, :revoked, :retry, :pending, :queued))"
            " AND (attribute_not_exists(#cr) OR #cr < :retries OR (#cr = :retries AND #cc < :receives)))"
        )
        values = dict(_TERMINAL_VALUES)
        values.update({":pending": states.PENDING, ":queued": states.QUEUED, ":retry": states.RETRY,
                       ":retries": retries, ":receives": receive_count})
        current = self._update(task_id, sets, condition, values, (),
                               {"#cr": schema.CLAIM_RETRIES, "#cc": schema.CLAIM_RECEIVES})
        if current is not None:
            raise StateConflict(
                f"task {task_id} is {current.get(schema.STATUS)} (attempt {current.get(schema.CLAIM_RETRIES)}/"
                f"{current.get(schema.CLAIM_RECEIVES)}), not claimable by attempt {retries}/{receive_count}",
                current,
            )

    def revoke(self, task_ids: str | Iterable[str], reason: str = "revoked") -> int:
        """Write REVOKED for tasks not yet terminal (creating the item if needed); returns how many.

        This is the reliable revoke: a worker's claim refuses a REVOKED task, whether the task
        is queued now or its message reaches a worker that starts later.
        """
        ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
        count = 0
        for task_id in ids:
            now = iso(utcnow())
            sets = {
                **self._indexed(states.REVOKED, task_id, now),
                schema.DATE_DONE: now,
                schema.RESULT: self._encode_value(self.prepare_exception(
                    _revoked_error(reason))),
                schema.EXPIRES_AT: self._expires_at(),
            }
            if self._update(task_id, sets, _NOT_TERMINAL, dict(_TERMINAL_VALUES)) is None:
                count += 1
        return count

    def queue_rows(self, rows: Iterable[tuple[str, str, str | None]]) -> None:
        """Write QUEUED rows (task_id, task_name, queue) with BatchWriteItem, 25 a call.

        Unprocessed items are retried with backoff until written; nothing is dropped.
        """
        now = iso(utcnow())
        expires_at = self._expires_at()
        requests = []
        for task_id, task_name, queue in rows:
            item = {
                schema.TASK_ID: task_id,
                **self._indexed(states.QUEUED, task_id, now),
                schema.CREATED_AT: now,
                schema.TASK_NAME: task_name,
                schema.QUEUE: queue,
            }
            if expires_at:
                item[schema.EXPIRES_AT] = expires_at
            requests.append({"PutRequest": {"Item": {k: _serializer.serialize(v) for k, v in item.items()
                                                      if v is not None}}})
        for start in range(0, len(requests), 25):
            pending = {self.table_name: requests[start:start + 25]}
            pauses = backoff_intervals(0.05, 2.0, 2.0)
            while pending:
                response = self._call("BatchWriteItem", "batch_write_item", RequestItems=pending)
                pending = response.get("UnprocessedItems") or {}
                if pending:
                    time.sleep(next(pauses))

    def on_task_call(self, producer: Any, task_id: str) -> dict[str, Any]:
        """With ``sqs_ddb_track_queued``, write a QUEUED row when a task is sent."""
        if self.settings.track_queued:
            now = iso(utcnow())
            sets = {
                **self._indexed(states.QUEUED, task_id, now),
                schema.CREATED_AT: now,
                schema.EXPIRES_AT: self._expires_at(),
            }
            self._update(task_id, sets, "attribute_not_exists(#status)")
        return {}

    # ----------------------------------------------------------------- reads

    def _meta_from_item(self, item: dict[str, Any]) -> dict[str, Any]:
        status = item.get(schema.STATUS) or states.PENDING
        if _expired(item):
            return {"status": states.PENDING, "result": None}
        if schema.RESULT_S3 in item and self.payloads is not None:
            raw_result = self.payloads.get(item[schema.RESULT_S3])
        else:
            raw_result = item.get(schema.RESULT)
        result = self._decode_value(raw_result) if raw_result is not None else None
        if schema.TRACEBACK_S3 in item and self.payloads is not None:
            traceback = self.payloads.get(item[schema.TRACEBACK_S3]).decode("utf-8")
        else:
            traceback = item.get(schema.TRACEBACK)
        children = item.get(schema.CHILDREN)
        meta = {
            "task_id": item.get(schema.TASK_ID),
            "status": status,
            "result": result,
            "traceback": traceback,
            "children": self._decode_value(children) if children else [],
            "date_done": item.get(schema.DATE_DONE),
            "group_id": item.get(schema.GROUP_ID),
            "parent_id": item.get(schema.PARENT_ID),
            "name": item.get(schema.TASK_NAME),
            "args": item.get(schema.ARGS),
            "kwargs": item.get(schema.KWARGS),
            "worker": item.get(schema.WORKER),
            "retries": int(item[schema.RETRIES]) if schema.RETRIES in item else None,
            "queue": item.get(schema.QUEUE),
        }
        return self.meta_from_decoded(meta)

    def _get_item(self, key: str) -> dict[str, Any] | None:
        response = self._call("GetItem", "get_item", TableName=self.table_name,
                              Key={schema.TASK_ID: {"S": key}}, ConsistentRead=True)
        item = response.get("Item")
        return _item_to_python(item) if item else None

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        item = self._get_item(str(task_id))
        if not item:
            return {"status": states.PENDING, "result": None}
        return self._meta_from_item(item)

    def task_result_exists(self, task_id: str) -> bool:
        item = self._get_item(str(task_id))
        return bool(item) and not _expired(item)

    def batch_get(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Strongly consistent BatchGetItem, 100 keys a call, unprocessed keys retried."""
        keys = list(dict.fromkeys(str(k) for k in keys))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 100):
            request = {self.table_name: {
                "Keys": [{schema.TASK_ID: {"S": k}} for k in keys[start:start + 100]],
                "ConsistentRead": True,
            }}
            pauses = backoff_intervals(0.02, 2.0, 1.0)
            while request:
                response = self._call("BatchGetItem", "batch_get_item", RequestItems=request)
                for raw in response.get("Responses", {}).get(self.table_name, []):
                    item = _item_to_python(raw)
                    found[item[schema.TASK_ID]] = item
                request = response.get("UnprocessedKeys") or {}
                if request:
                    time.sleep(next(pauses))
        return found

    def get_many(self, task_ids: Iterable[str], timeout: float | None = None, interval: float | None = 0.5,
                 no_ack: bool = True, on_message: Any = None, on_interval: Any = None,
                 max_iterations: int | None = None, READY_STATES: frozenset = celery_states.READY_STATES,
                 ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield (task_id, meta) as tasks become ready, reading through BatchGetItem.

        Polls adaptively (tens of ms first, then up to ``sqs_ddb_poll_max_interval``);
        Celery's fixed ``interval`` is not used as a pause.
        """
        pending = []
        for task_id in dict.fromkeys(str(t) for t in task_ids):
            cached = self._cache.get(task_id)
            if cached is not None and cached["status"] in READY_STATES:
                yield task_id, cached
            else:
                pending.append(task_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        pauses = backoff_intervals(ceiling=self.settings.poll_max_interval)
        iterations = 0
        while pending:
            # One BatchGetItem of at most 100 pending ids per round: a large group is not re-read
            # whole on every poll (read units and latency stay flat as the group grows).
            window = pending[:100]
            items = self.batch_get(window)
            ready = []
            for task_id in window:
                item = items.get(task_id)
                meta = self._meta_from_item(item) if item else None
                if meta is not None and meta["status"] in READY_STATES:
                    ready.append(task_id)
                    self._cache[task_id] = meta
                    if on_message is not None:
                        on_message(meta)
                    yield task_id, meta
            done = set(ready)
            pending = [t for t in pending if t not in done]
            if not pending:
                break
            if len(ready) == len(window):
                continue  # the whole window was ready: read the next one at once
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"Operation timed out ({timeout})")
            if on_interval:
                on_interval()
            self._pause(next(pauses), deadline)
            iterations += 1
            if max_iterations and iterations >= max_iterations:
                break

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5,
                 no_ack: bool = True, on_interval: Any = None) -> dict[str, Any]:
        """Block until the task is ready, polling adaptively (first re-check after ~20 ms)."""
        self._ensure_not_eager()
        deadline = None if timeout is None else time.monotonic() + timeout
        pauses = backoff_intervals(ceiling=self.settings.poll_max_interval)
        while True:
            meta = self.get_task_meta(task_id)
            if meta["status"] in celery_states.READY_STATES:
                return meta
            if on_interval:
                on_interval()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("The operation timed out.")
            self._pause(next(pauses), deadline)

    @staticmethod
    def _pause(pause: float, deadline: float | None) -> None:
        if deadline is not None:
            pause = max(0.0, min(pause, deadline - time.monotonic()))
        time.sleep(pause)

    def _forget(self, task_id: str) -> None:
        self._call("DeleteItem", "delete_item", TableName=self.table_name, Key={schema.TASK_ID: {"S": str(task_id)}})

    # ------------------------------------------------------------ listing

    def list_jobs(self, status: str, since: datetime | str | None = None, limit: int = 50,
                  cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Jobs in ``status``, newest first, across all shards; returns (jobs, next cursor).

        ``status`` is one of QUEUED, STARTED (includes PROGRESS and custom states), RETRY,
        SUCCESS, FAILURE, REVOKED. The index is eventually consistent (a GSI never is strongly
        consistent), so a job that just changed state may show in its old state briefly.
        """
        status = status.upper()
        if status == states.PROGRESS:
            status = states.STARTED
        if status not in states.INDEXED:
            raise ValueError(f"status {status!r} is not listed by the index; accepted: {', '.join(states.INDEXED)}")
        if isinstance(since, datetime):
            since = iso(since.astimezone(timezone.utc))
        upper = None
        if cursor:
            upper, _, cursor_id = cursor.partition("|")
        streams = []
        for shard in range(self.settings.status_shards):
            streams.append(self._query_shard(f"{status}#{shard}", since, upper, limit + 1))
        merged = heapq.merge(*streams, key=lambda j: (j["updated_at"], j["task_id"]), reverse=True)
        jobs: list[dict[str, Any]] = []
        for job in merged:
            if cursor and (job["updated_at"], job["task_id"]) >= (upper, cursor_id):
                continue
            jobs.append(job)
            if len(jobs) > limit:
                break
        next_cursor = None
        if len(jobs) > limit:
            jobs = jobs[:limit]
            next_cursor = f"{jobs[-1]['updated_at']}|{jobs[-1]['task_id']}"
        return jobs, next_cursor

    def _query_shard(self, shard_key: str, since: str | None, upper: str | None, limit: int) -> list[dict[str, Any]]:
        names = {"#k": schema.STATUS_SHARD, "#t": schema.UPDATED_AT}
        values: dict[str, Any] = {":k": {"S": shard_key}}
        condition = "#k = :k"
        if since and upper:
            condition += " AND #t BETWEEN :lo AND :hi"
            values[":lo"], values[":hi"] = {"S": since}, {"S": upper}
        elif since:
            condition += " AND #t >= :lo"
            values[":lo"] = {"S": since}
        elif upper:
            condition += " AND #t <= :hi"
            values[":hi"] = {"S": upper}
        if "#t" not in condition:
            del names["#t"]
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {
            "TableName": self.table_name, "IndexName": schema.STATUS_INDEX,
            "KeyConditionExpression": condition, "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values, "ScanIndexForward": False, "Limit": limit,
        }
        while len(out) < limit:
            response = self._call("Query", "query", **params)
            for raw in response.get("Items", []):
                item = _item_to_python(raw)
                if _expired(item):
                    continue
                out.append({
                    "task_id": item[schema.TASK_ID],
                    "status": item[schema.STATUS_SHARD].split("#", 1)[0],
                    "updated_at": item[schema.UPDATED_AT],
                    "task_name": item.get(schema.TASK_NAME),
                    "worker": item.get(schema.WORKER),
                })
            if "LastEvaluatedKey" not in response:
                break
            params["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return out

    # ------------------------------------------------------- groups and chords

    def _save_group(self, group_id: str, result: GroupResult) -> GroupResult:
        sets = {
            schema.KIND: schema.KIND_GROUP,
            schema.GROUP_RESULT: self._encode_value(result.as_tuple()),
            schema.UPDATED_AT: iso(utcnow()),
            schema.EXPIRES_AT: self._expires_at(),
        }
        self._update(str(group_id), sets, None)
        return result

    def _restore_group(self, group_id: str) -> dict[str, Any] | None:
        item = self._get_item(str(group_id))
        if not item or schema.GROUP_RESULT not in item or _expired(item):
            return None
        return {"result": result_from_tuple(self._decode_value(item[schema.GROUP_RESULT]), self.app)}

    def _delete_group(self, group_id: str) -> None:
        self._forget(group_id)

    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> None:
        """Save the header group; its parts count down on the group item (atomic ADD)."""
        self.ensure_chords_allowed()
        header_result = self.app.GroupResult(*header_result_args)
        header_result.save(backend=self)

    def _incr_chord(self, group_id: str) -> int:
        response = self._call(
            "UpdateItem", "update_item", TableName=self.table_name,
            Key={schema.TASK_ID: {"S": group_id}}, UpdateExpression="ADD #c :one",
            ExpressionAttributeNames={"#c": schema.CHORD_COUNT},
            ExpressionAttributeValues={":one": {"N": "1"}}, ReturnValues="UPDATED_NEW",
        )
        return int(response["Attributes"][schema.CHORD_COUNT]["N"])

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> None:
        """Count a finished header part; the part that makes the count whole runs the callback once."""
        app = self.app
        gid = request.group
        if not gid:
            return
        from celery.canvas import maybe_signature

        callback = maybe_signature(request.chord, app=app)
        try:
            deps = GroupResult.restore(gid, backend=self)
        except Exception as exc:  # a read error is reported on the chord, as Celery does
            logger.exception("Chord %r raised: %r", gid, exc)
            return self.chord_error_from_stack(callback, ChordError(f"Cannot restore group: {exc!r}"))
        if deps is None:
            return self.chord_error_from_stack(callback, ChordError(f"GroupResult {gid} no longer exists"))
        count = self._incr_chord(gid)
        size = request.chord.get("chord_size")
        if size is None:
            size = len(deps)
        if count > size:
            logger.warning("Chord counter incremented too many times for %r", gid)
            return
        if count < size:
            return
        try:
            with allow_join_result():
                ret = deps.join_native(timeout=app.conf.result_chord_join_timeout, propagate=True)
        except Exception as exc:  # the chord's error path, as in Celery's key-value backends
            try:
                culprit = next(deps._failed_join_report())
                reason = f"Dependency {culprit.id} raised {exc!r}"
            except StopIteration:
                reason = repr(exc)
            logger.exception("Chord %r raised: %r", gid, reason)
            self.chord_error_from_stack(callback, _create_chord_error_with_cause(reason, exc))
        else:
            try:
                app.amqp._retry_publish(callback.delay, ret)
            except Exception as exc:  # publish failure is reported on the chord
                logger.exception("Chord %r raised: %r", gid, exc)
                self.chord_error_from_stack(
                    callback, _create_chord_error_with_cause(f"Callback error: {exc!r}", exc))
        finally:
            deps.delete()

    def __reduce__(self, args: tuple = (), kwargs: dict | None = None) -> Any:
        return super().__reduce__(args, {"url": self.url, **(kwargs or {})})


def _revoked_error(reason: str) -> BaseException:
    from celery.exceptions import TaskRevokedError

    return TaskRevokedError(reason)


def _item_to_python(item: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in item.items():
        decoded = _deserializer.deserialize(value)
        if hasattr(decoded, "as_integer_ratio") and not isinstance(decoded, (int, float)):
            decoded = int(decoded) if decoded == int(decoded) else float(decoded)
        out[key] = decoded
    return out


def _expired(item: dict[str, Any]) -> bool:
    expires_at = item.get(schema.EXPIRES_AT)
    return expires_at is not None and expires_at < time.time()


__all__ = ["DynamoDBBackend"]
