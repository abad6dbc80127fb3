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
"""

from __future__ import annotations

import http.client
import json
import random
import re
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return

            def _control(self) -> bool:
                parsed = urllib.parse.urlparse(self.path)
                if parsed.path == "/__counts":
                    with proxy.lock:
                        body = json.dumps({"counts": dict(proxy.counts), "faults": proxy.faults_injected,
                                           "injected": dict(proxy.injected)}).encode()
                    self._reply(200, "application/json", body)
                    return True
                if parsed.path == "/__reset":
                    with proxy.lock:
                        proxy.counts.clear()
                        proxy.faults_injected = 0
                        proxy.injected.clear()
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
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

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
