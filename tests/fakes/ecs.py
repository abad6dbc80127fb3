"""A fake ECS agent + task metadata endpoint v4 on loopback, recording task-protection calls."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TASK_ID = "0123456789abcdef0123456789abcdef"


class FakeEcs:
    def __init__(self, cpu: float = 2.0, fail_first: int = 0) -> None:
        self.cpu = cpu
        self.fail_first = fail_first
        self.calls: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/v4/meta/task":
                    return self._json(200, {
                        "Cluster": "arn:aws:ecs:eu-west-1:123456789012:cluster/workers",
                        "TaskARN": f"arn:aws:ecs:eu-west-1:123456789012:task/workers/{TASK_ID}",
                        "Family": "worker", "Revision": "3", "LaunchType": "FARGATE",
                        "AvailabilityZone": "eu-west-1b", "Limits": {"CPU": fake.cpu, "Memory": 4096},
                    })
                if self.path == "/v4/meta":
                    return self._json(200, {"Name": "worker", "DockerId": "abc"})
                return self._json(404, {"error": self.path})

            def do_PUT(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/agent/task-protection/v1/state":
                    return self._json(404, {"error": self.path})
                with fake.lock:
                    fake.calls.append((time.time(), body))
                    failing = len(fake.calls) <= fake.fail_first
                if failing:
                    return self._json(500, {"error": {"Code": "ServerException", "Message": "injected"}})
                return self._json(200, {"protection": {"ProtectionEnabled": body["ProtectionEnabled"],
                                                       "TaskArn": f"task/{TASK_ID}"}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def env(self) -> dict[str, str]:
        return {"ECS_CONTAINER_METADATA_URI_V4": f"{self.url}/v4/meta", "ECS_AGENT_URI": f"{self.url}/agent"}

    def protection_calls(self) -> list[tuple[float, dict[str, Any]]]:
        with self.lock:
            return list(self.calls)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
