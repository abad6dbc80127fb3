"""A counting (and optionally fault-injecting) reverse proxy in front of moto server.

Counts AWS calls by service and action: JSON-protocol calls by their X-Amz-Target header
(``DynamoDB_20120810.GetItem``, ``AmazonSQS.SendMessage``), query-protocol calls (SNS) by the
``Action`` parameter and the service of the signature's credential scope, and S3 calls by HTTP
method. ``GET /__counts`` returns the counts, ``POST /__reset`` clears them,
``POST /__faults?rate=0.1&seed=1`` turns on seeded fault injection (half throttling errors, half
500s, on DynamoDB and SQS calls). ``POST /__inject?action=dynamodb:UpdateItem&error=AccessDenied&seconds=10``
makes every call of that action fail with that error for that long (``error`` is one of
``ERRORS``; ``POST /__inject?clear=1`` ends every rule at once); ``GET /__counts`` reports the
calls refused so under ``injected``. Requests signed with the access key ``WRONGKEY`` are refused
as AWS refuses bad credentials.

It also meters what AWS would bill (:class:`Meter`): DynamoDB write request units (item size in
1 KB steps, the larger of before and after, plus one write per index row put or deleted: an index
key change is a delete and a put), read request units (4 KB steps, half for eventually consistent
reads; BatchGetItem per item, Query by the size read) and SQS requests (each 64 KiB chunk of a
payload; a batch is one call). ``GET /__counts`` reports them under ``units``: ``ddb:WRU``
(``ddb:WRU:table`` + ``ddb:WRU:index``), ``ddb:RRU``, ``sqs:requests`` (``sqs:fifo_requests`` of
them on FIFO queues), and the same per action (``ddb:WRU:UpdateItem``, ``sqs:requests:ReceiveMessage``).
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import random
import re
import socket
import threading
import time
import urllib.parse
import zlib
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

THROTTLE_BODY = {
    "dynamodb": (400, "application/x-amz-json-1.0",
                 '{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate exceeded"}'),
    "sqs": (400, "application/x-amz-json-1.0",
            '{"__type":"com.amazonaws.sqs#ThrottlingException","message":"Rate exceeded"}'),
}

#: Errors ``/__inject`` can answer with: (HTTP status, error type) as DynamoDB's and SQS's JSON
#: protocol spell them.
ERRORS = {
    "AccessDenied": (400, "com.amazon.coral.service#AccessDeniedException",
                     "User is not authorized to perform this action (injected)"),
    "ResourceNotFound": (400, "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException",
                         "Requested resource not found (injected)"),
    "InternalServerError": (500, "com.amazonaws.dynamodb.v20120810#InternalServerError",
                            "Internal server error (injected)"),
    "Throttling": (400, "com.amazonaws.dynamodb.v20120810#ThrottlingException", "Rate exceeded (injected)"),
}


class Proxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.fault_rate = 0.0
        self.faults_injected = 0
        self.random = random.Random(0)
        self.rules: list[tuple[str, str, float]] = []  # (action, error, until monotonic)
        self.injected: Counter[str] = Counter()
        self.local = threading.local()  # the region of the call being metered (for the meter's own reads)
        self.meter = Meter(self.upstream_json)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # headers and body go out in two writes: without this, Nagle's algorithm and the
                # client's delayed ACK add ~40 ms to every answer
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: object) -> None:
                return

            def _control(self) -> bool:
                parsed = urllib.parse.urlparse(self.path)
                if parsed.path == "/__counts":
                    with proxy.lock:
                        counts = {"counts": dict(proxy.counts), "faults": proxy.faults_injected,
                                  "injected": dict(proxy.injected)}
                    body = json.dumps({**counts, "units": proxy.meter.snapshot()}).encode()
                    self._reply(200, "application/json", body)
                    return True
                if parsed.path == "/__reset":
                    with proxy.lock:
                        proxy.counts.clear()
                        proxy.faults_injected = 0
                        proxy.injected.clear()
                    proxy.meter.reset()
                    self._reply(200, "application/json", b"{}")
                    return True
                if parsed.path == "/__faults":
                    query = urllib.parse.parse_qs(parsed.query)
                    with proxy.lock:
                        proxy.fault_rate = float(query.get("rate", ["0"])[0])
                        proxy.random = random.Random(int(query.get("seed", ["0"])[0]))
                    self._reply(200, "application/json", b"{}")
                    return True
                if parsed.path == "/__inject":
                    query = {k: v[0] for k, v in urllib.parse.parse_qs(parsed.query).items()}
                    with proxy.lock:
                        if query.get("clear"):
                            proxy.rules.clear()
                        else:
                            if query["error"] not in ERRORS:
                                self._reply(400, "text/plain", f"error: one of {sorted(ERRORS)}".encode())
                                return True
                            proxy.rules.append((query["action"], query["error"],
                                                time.monotonic() + float(query.get("seconds", "3600"))))
                    self._reply(200, "application/json", b"{}")
                    return True
                return False

            def _reply(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self) -> None:
                if self._control():
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                key, service = proxy.classify(self.command, self.path, self.headers, body)
                if "Credential=WRONGKEY" in (self.headers.get("Authorization") or ""):
                    with proxy.lock:
                        proxy.counts[key] += 1
                    return self._reply(400, "application/x-amz-json-1.0",
                                       b'{"__type":"UnrecognizedClientException",'
                                       b'"message":"The security token included in the request is invalid."}')
                items = proxy.batch_items(key, body)
                rule = proxy.rule_for(key)
                if rule is not None:
                    with proxy.lock:
                        proxy.counts[key] += 1
                        proxy.injected[key] += 1
                    status, kind, text = ERRORS[rule]
                    return self._reply(status, "application/x-amz-json-1.0",
                                       json.dumps({"__type": kind, "message": text}).encode())
                with proxy.lock:
                    proxy.counts[key] += 1
                    if items:
                        proxy.counts[f"{key}#items"] += items
                    inject = service in THROTTLE_BODY and proxy.fault_rate and proxy.random.random() < proxy.fault_rate
                    if inject:
                        proxy.faults_injected += 1
                        which = proxy.random.random()
                if inject:
                    if which < 0.5:
                        status, ctype, text = THROTTLE_BODY[service]
                        self._reply(status, ctype, text.encode())
                    else:
                        self._reply(500, "application/x-amz-json-1.0",
                                    b'{"__type":"InternalFailure","message":"injected 500"}')
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                status, answer_headers, data = proxy.metered(key, service, self.command, self.path, headers, body)
                self.send_response(status)
                for name, value in answer_headers:
                    if name.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _forward_quietly(self) -> None:
                try:
                    self._forward()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away (a worker stopping mid long poll)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward_quietly

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def upstream(self, method: str, path: str, headers: dict[str, str],
                 body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """One request to moto: (status, headers, body), on a kept-alive connection of this thread
        (a new one, and one more try, if moto closed it before answering)."""
        for attempt in (1, 2):
            conn = getattr(self.local, "conn", None)
            reused = conn is not None
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                if response.will_close:
                    conn.close()
                    self.local.conn = None
                return response.status, response.getheaders(), data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                self.local.conn = None
                if not reused or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def upstream_json(self, action: str, request: dict[str, Any]) -> dict[str, Any]:
        """A DynamoDB call of the meter's own, straight to moto (not counted, not billed)."""
        region = getattr(self.local, "region", "us-east-1")
        status, _, data = self.upstream("POST", "/", {
            "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": f"DynamoDB_20120810.{action}",
            "Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/dynamodb/aws4_request, "
                             "SignedHeaders=host, Signature=0"}, json.dumps(request).encode())
        answer = json.loads(data or b"{}")
        if status != 200:
            raise RuntimeError(f"meter: {action} answered {status}: {answer}")
        return answer

    def metered(self, key: str, service: str, method: str, path: str, headers: dict[str, str],
                body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """Forward one call to moto, billing it (:class:`Meter`) when it is a JSON-protocol
        DynamoDB or SQS call; the answer the client gets is moto's (less what the meter asked for)."""
        action = key.partition(":")[2]
        json_call = "X-Amz-Target" in headers or "x-amz-target" in {k.lower() for k in headers}
        if service not in ("dynamodb", "sqs"):
            return self.upstream(method, path, headers, body)
        try:
            request = json.loads(body or b"{}") if json_call else None
        except ValueError:
            request = None
        if not isinstance(request, dict):
            answer_status, answer_headers, data = self.upstream(method, path, headers, body)
            if service == "sqs" and answer_status == 200:
                self.meter.sqs_call(action, None, None)
            return answer_status, answer_headers, data
        if service == "sqs":
            answer_status, answer_headers, data = self.upstream(method, path, headers, body)
            if answer_status == 200:
                try:
                    answer = json.loads(data or b"{}")
                except ValueError:
                    answer = None
                self.meter.sqs_call(action, request, answer)
            return answer_status, answer_headers, data
        scope = re.search(r"Credential=[^/]+/\d+/([^/]+)/", headers.get("Authorization", ""))
        self.local.region = scope.group(1) if scope else "us-east-1"
        reply: dict[str, Any] = {}

        def send(sent: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
            sent_headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
            sent_body = body if sent is request else json.dumps(sent).encode()
            reply["status"], reply["headers"], reply["data"] = self.upstream(method, path, sent_headers, sent_body)
            try:
                reply["answer"] = json.loads(reply["data"] or b"{}")
            except ValueError:
                reply["answer"] = None
            return reply["status"], reply["answer"]

        try:
            self.meter.ddb_call(action, request, send)
        except Exception as exc:  # never let the meter break a call: count the error, forward unbilled
            self.meter.add(meter__errors=1)
            self.meter.last_error = repr(exc)
            if not reply:
                send(request)
        data = reply["data"]
        answer_headers = reply["headers"]
        if reply.get("answer") is not None and reply["answer"].pop("__meter_changed__", False):
            data = json.dumps(reply["answer"]).encode()
            answer_headers = [(k, str(zlib.crc32(data) & 0xFFFFFFFF) if k.lower() == "x-amz-crc32" else v)
                              for k, v in answer_headers]
        return reply["status"], answer_headers, data

    def rule_for(self, key: str) -> str | None:
        """The error of the first live ``/__inject`` rule for this action (None: forward it)."""
        now = time.monotonic()
        with self.lock:
            self.rules = [rule for rule in self.rules if rule[2] > now]
            return next((error for action, error, _ in self.rules if action == key), None)

    @staticmethod
    def batch_items(key: str, body: bytes) -> int:
        """Keys read or items written by one DynamoDB/SQS batch call (for request-unit costs)."""
        if key not in ("dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "sqs:SendMessageBatch",
                       "sqs:DeleteMessageBatch", "sqs:ChangeMessageVisibilityBatch"):
            return 0
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return 0
        if "Entries" in payload:
            return len(payload["Entries"])
        total = 0
        for request in (payload.get("RequestItems") or {}).values():
            total += len(request["Keys"]) if isinstance(request, dict) else len(request)
        return total

    @staticmethod
    def classify(method: str, path: str, headers: object, body: bytes) -> tuple[str, str]:
        target = headers.get("X-Amz-Target")  # type: ignore[attr-defined]
        if target:
            prefix, _, action = target.partition(".")
            service = "dynamodb" if prefix.startswith("DynamoDB") else "sqs" if "SQS" in prefix else prefix.lower()
            return f"{service}:{action}", service
        auth = headers.get("Authorization", "")  # type: ignore[attr-defined]
        scope = re.search(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/", auth)  # the credential scope names the service
        if body and b"Action=" in body:  # query protocol (SNS, STS, older SQS)
            action = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action", ["?"])[0]
            service = scope.group(1) if scope else "sqs"
            return f"{service}:{action}", service
        service = "s3" if "/s3/" in auth else "sts" if "/sts/" in auth else "other"
        return f"{service}:{method}", service

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------- metering

KIB = 1024
SQS_CHUNK = 64 * KIB
#: DynamoDB actions the meter bills (everything else, e.g. DescribeTable, is free in on-demand).
DDB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")
DDB_READS = ("GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems")


def value_size(value: dict[str, Any]) -> int:
    """Bytes DynamoDB counts for one attribute value (its documented item-size rules)."""
    kind, data = next(iter(value.items()))
    if kind == "S":
        return len(data.encode("utf-8"))
    if kind == "N":
        return number_size(data)
    if kind == "B":
        return len(base64.b64decode(data))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode("utf-8")) for s in data)
    if kind == "NS":
        return sum(number_size(s) for s in data)
    if kind == "BS":
        return sum(len(base64.b64decode(b)) for b in data)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in data)
    if kind == "M":
        return 3 + sum(1 + len(k.encode("utf-8")) + value_size(v) for k, v in data.items())
    return len(json.dumps(data))


def number_size(text: str) -> int:
    """About one byte per two significant digits, plus one."""
    digits = text.lstrip("-+").split("e")[0].split("E")[0].replace(".", "").strip("0") or "0"
    return (len(digits) + 1) // 2 + 1


def item_size(item: dict[str, Any] | None) -> int:
    """Item size: attribute names (UTF-8) plus their values."""
    return sum(len(name.encode("utf-8")) + value_size(value) for name, value in (item or {}).items())


def write_units(size: int) -> int:
    return max(1, math.ceil(size / KIB))


def read_units(size: int, consistent: bool) -> float:
    return max(1, math.ceil(size / (4 * KIB))) * (1.0 if consistent else 0.5)


class TableInfo:
    """A table's primary key and its global secondary indexes (keys and projection)."""

    def __init__(self, description: dict[str, Any]) -> None:
        self.key = [k["AttributeName"] for k in description.get("KeySchema", [])]
        self.indexes: list[tuple[str, list[str], str, list[str]]] = []
        for index in description.get("GlobalSecondaryIndexes") or []:
            projection = index.get("Projection") or {}
            self.indexes.append((index["IndexName"], [k["AttributeName"] for k in index["KeySchema"]],
                                 projection.get("ProjectionType", "ALL"), projection.get("NonKeyAttributes") or []))
        self.complete = not description.get("ItemCount")  # empty when first seen: every write is seen

    def key_of(self, item: dict[str, Any]) -> str:
        return json.dumps([item.get(k) for k in self.key], sort_keys=True)

    def entry(self, index: tuple[str, list[str], str, list[str]], item: dict[str, Any] | None) -> dict[str, Any] | None:
        """The item's row in the index (None: not in that sparse index)."""
        _, keys, projection, extra = index
        if not item or any(k not in item for k in keys):
            return None
        if projection == "ALL":
            return dict(item)
        names = set(self.key) | set(keys) | (set(extra) if projection == "INCLUDE" else set())
        return {k: v for k, v in item.items() if k in names}

    def index_writes(self, before: dict[str, Any] | None, after: dict[str, Any] | None) -> tuple[int, int]:
        """(index write operations, index write units) of turning ``before`` into ``after``: a put when
        the item enters an index, a delete when it leaves, both when an index key changes, one
        write when only projected attributes change."""
        ops = units = 0
        for index in self.indexes:
            old, new = self.entry(index, before), self.entry(index, after)
            keys = index[1]
            if old is None and new is None or old == new:
                continue
            if old is not None and (new is None or any(old[k] != new[k] for k in keys)):
                ops, units = ops + 1, units + write_units(item_size(old))  # delete the old row
            if new is not None:
                ops, units = ops + 1, units + write_units(item_size(new))  # put the new row
        return ops, units


class Meter:
    """What AWS would bill for the calls going through the proxy: DynamoDB read and write request
    units (the write units of the table and of its indexes apart) and SQS requests (64 KiB chunks).

    Writes are metered from the item before and after: the meter keeps the last image of every
    item written through the proxy (an UpdateItem is forwarded with ``ReturnValues=ALL_NEW``, and
    the attributes the client did not ask for are taken out of the answer), so index writes are
    exact, not guessed from the UpdateExpression. A table first seen non-empty has its unknown
    items read once from moto directly (not counted). Writes made around the proxy are not seen.
    """

    def __init__(self, upstream: Callable[[str, dict[str, Any]], dict[str, Any]]) -> None:
        self.upstream = upstream  # (action, request) -> response, straight to moto, not counted
        self.units: dict[str, float] = {}
        self.lock = threading.Lock()
        self.tables: dict[str, TableInfo] = {}
        self.items: dict[tuple[str, str], dict[str, Any] | None] = {}
        self.key_locks: dict[tuple[str, str], threading.Lock] = {}
        self.last_error = ""

    def reset(self) -> None:
        with self.lock:
            self.units.clear()

    def snapshot(self) -> dict[str, float]:
        with self.lock:
            return {k: (int(v) if float(v).is_integer() else v) for k, v in sorted(self.units.items())}

    def add(self, **amounts: float) -> None:
        with self.lock:
            for key, amount in amounts.items():
                name = key.replace("__", ":")
                self.units[name] = self.units.get(name, 0) + amount

    # -- tables and items

    def table(self, name: str) -> TableInfo:
        with self.lock:
            info = self.tables.get(name)
        if info is None:
            try:
                info = TableInfo(self.upstream("DescribeTable", {"TableName": name})["Table"])
            except Exception:  # a table that does not exist: no index, nothing known
                info = TableInfo({"KeySchema": [], "ItemCount": 1})
            with self.lock:
                info = self.tables.setdefault(name, info)
        return info

    def forget_table(self, name: str) -> None:
        with self.lock:
            self.tables.pop(name, None)
            for key in [k for k in self.items if k[0] == name]:
                del self.items[key]

    def before(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        info = self.table(table)
        ident = (table, info.key_of(key))
        with self.lock:
            if ident in self.items:
                return self.items[ident]
        if info.complete:
            return None
        found = self.upstream("GetItem", {"TableName": table, "Key": key, "ConsistentRead": True}).get("Item")
        self.remember(table, key, found)
        return found

    def remember(self, table: str, key: dict[str, Any], item: dict[str, Any] | None) -> None:
        ident = (table, self.table(table).key_of(key))
        with self.lock:
            self.items[ident] = item

    def locks_for(self, keys: list[tuple[str, dict[str, Any]]]) -> list[threading.Lock]:
        """One lock per item written, in a stable order (a write's before/after is not interleaved)."""
        idents = sorted({(t, self.table(t).key_of(k)) for t, k in keys})
        with self.lock:
            return [self.key_locks.setdefault(i, threading.Lock()) for i in idents]

    # -- one call

    def ddb_call(self, action: str, request: dict[str, Any],
                 send: Callable[[dict[str, Any]], tuple[int, dict[str, Any] | None]]) -> None:
        """Forward one DynamoDB call through ``send`` (request -> (status, answer JSON)) and bill it."""
        if action == "CreateTable" or action == "DeleteTable":
            send(request)
            self.forget_table(request.get("TableName", ""))
            return
        if action in DDB_READS:
            status, answer = send(request)
            if status == 200 and answer is not None:
                self.bill_read(action, request, answer)
            return
        if action not in DDB_WRITES:
            send(request)
            return
        writes = self.writes_of(action, request)
        locks = self.locks_for([(t, k) for t, k, _ in writes])
        for lock in locks:
            lock.acquire()
        try:
            befores = [self.before(t, k) for t, k, _ in writes]
            forced = action == "UpdateItem" and request.get("ReturnValues", "NONE") == "NONE"
            if forced:
                request = dict(request, ReturnValues="ALL_NEW")
            status, answer = send(request)
            if status != 200 or answer is None:
                self.bill_refused(action, request, writes, befores, answer)
                return
            factor = 2 if action == "TransactWriteItems" else 1
            for (table, key, after), before in zip(writes, befores, strict=True):
                if after is _UPDATED:
                    if action == "UpdateItem" and request.get("ReturnValues") == "ALL_NEW":
                        after = answer.get("Attributes")
                    else:
                        after = self.upstream("GetItem", {"TableName": table, "Key": key,
                                                          "ConsistentRead": True}).get("Item")
                self.remember(table, key, after)
                info = self.table(table)
                wru = write_units(max(item_size(before), item_size(after))) * factor
                ops, index_wru = info.index_writes(before, after)
                self.add(**{"ddb__WRU": wru + index_wru * factor, "ddb__WRU__table": wru,
                            "ddb__WRU__index": index_wru * factor, "ddb__index_writes": ops * factor,
                            f"ddb__WRU__{action}": wru + index_wru * factor})
            if forced:
                answer.pop("Attributes", None)
                answer["__meter_changed__"] = True  # the proxy re-encodes the answer
        finally:
            for lock in reversed(locks):
                lock.release()

    @staticmethod
    def writes_of(action: str, request: dict[str, Any]) -> list[tuple[str, dict[str, Any], Any]]:
        """(table, key, item after or _UPDATED or None for a delete) of each item a write touches."""
        if action == "PutItem":
            return [(request["TableName"], request["Item"], request["Item"])]
        if action == "UpdateItem":
            return [(request["TableName"], request["Key"], _UPDATED)]
        if action == "DeleteItem":
            return [(request["TableName"], request["Key"], None)]
        writes: list[tuple[str, dict[str, Any], Any]] = []
        if action == "BatchWriteItem":
            for table, entries in (request.get("RequestItems") or {}).items():
                for entry in entries:
                    if "PutRequest" in entry:
                        writes.append((table, entry["PutRequest"]["Item"], entry["PutRequest"]["Item"]))
                    else:
                        writes.append((table, entry["DeleteRequest"]["Key"], None))
            return writes
        for entry in request.get("TransactItems") or []:  # TransactWriteItems
            (kind, body), = entry.items()
            if kind == "Put":
                writes.append((body["TableName"], body["Item"], body["Item"]))
            elif kind == "Update":
                writes.append((body["TableName"], body["Key"], _UPDATED))
            elif kind == "Delete":
                writes.append((body["TableName"], body["Key"], None))
            # ConditionCheck: billed as a read; ignored here
        return writes

    def bill_refused(self, action: str, request: dict[str, Any], writes: list[tuple[str, dict[str, Any], Any]],
                     befores: list[dict[str, Any] | None], answer: dict[str, Any] | None) -> None:
        """A refused conditional write still consumes write units (the item's size, at least 1) on
        the table and none in the index; throttled or failed calls are not billed."""
        kind = str((answer or {}).get("__type", ""))
        if "ConditionalCheckFailed" not in kind and "TransactionCanceled" not in kind:
            return
        if action in ("PutItem", "UpdateItem", "DeleteItem") and (answer or {}).get("Item") is not None:
            self.remember(writes[0][0], writes[0][1], answer["Item"])  # type: ignore[index]
        wru = sum(write_units(item_size(b)) for b in befores) * (2 if action == "TransactWriteItems" else 1)
        self.add(**{"ddb__WRU": wru, "ddb__WRU__table": wru, f"ddb__WRU__{action}": wru,
                    "ddb__refused_writes": len(writes)})

    def bill_read(self, action: str, request: dict[str, Any], answer: dict[str, Any]) -> None:
        rru = 0.0
        if action == "GetItem":
            rru = read_units(item_size(answer.get("Item")), bool(request.get("ConsistentRead")))
        elif action == "BatchGetItem":  # each key read on its own (rounded per item); unprocessed not billed
            for table, spec in (request.get("RequestItems") or {}).items():
                info = self.table(table)
                found = {info.key_of(i): i for i in (answer.get("Responses") or {}).get(table, [])}
                unprocessed = {info.key_of(k) for k in
                               ((answer.get("UnprocessedKeys") or {}).get(table) or {}).get("Keys", [])}
                for key in spec.get("Keys", []):
                    ident = info.key_of(key)
                    if ident not in unprocessed:
                        rru += read_units(item_size(found.get(ident)), bool(spec.get("ConsistentRead")))
        elif action in ("Query", "Scan"):  # the items read (before any filter), summed, then rounded
            items = answer.get("Items") or []
            sizes = [item_size(i) for i in items]
            skipped = max(0, int(answer.get("ScannedCount", len(items))) - len(items))
            total = sum(sizes) + skipped * (sum(sizes) // len(sizes) if sizes else 100)
            rru = read_units(total, bool(request.get("ConsistentRead")))
        elif action == "TransactGetItems":
            rru = sum(2 * read_units(item_size(r.get("Item")), True) for r in answer.get("Responses") or [])
        self.add(**{"ddb__RRU": rru, f"ddb__RRU__{action}": rru})

    def sqs_call(self, action: str, request: dict[str, Any] | None, answer: dict[str, Any] | None) -> None:
        """SQS bills each 64 KiB chunk of a call's payload as a request (a batch is one call)."""
        payload = 0
        if action == "SendMessage" and request:
            payload = message_size(request)
        elif action == "SendMessageBatch" and request:
            payload = sum(message_size(e) for e in request.get("Entries") or [])
        elif action == "ReceiveMessage" and answer:
            payload = sum(message_size(m, body="Body") for m in answer.get("Messages") or [])
        requests = max(1, math.ceil(payload / SQS_CHUNK))
        fifo = ".fifo" in str((request or {}).get("QueueUrl", ""))
        self.add(**{"sqs__requests": requests, f"sqs__requests__{action}": requests,
                    **({"sqs__fifo_requests": requests} if fifo else {})})


class _Updated:
    """Marker: the item after an UpdateItem comes from the answer (or a read after it)."""


_UPDATED: Any = _Updated()


def message_size(message: dict[str, Any], body: str = "MessageBody") -> int:
    """Bytes of an SQS message's payload: body plus message attributes (name, type, value)."""
    size = len(str(message.get(body, "")).encode("utf-8"))
    for name, attribute in (message.get("MessageAttributes") or {}).items():
        size += len(name.encode("utf-8")) + len(str(attribute.get("DataType", "")).encode("utf-8"))
        size += len(str(attribute.get("StringValue", "")).encode("utf-8"))
        size += len(base64.b64decode(attribute["BinaryValue"])) if attribute.get("BinaryValue") else 0
    return size


def main() -> None:
    """``python -m tests.fakes.aws_proxy UPSTREAM_PORT``: the proxy in a process of its own (the
    benchmarks, so the proxy's work does not share a GIL with the client); prints its port."""
    import sys

    proxy = Proxy(int(sys.argv[1]))
    print(proxy.port, flush=True)
    proxy.server.serve_forever()


if __name__ == "__main__":
    main()
