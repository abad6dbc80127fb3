"""``python -m moto.server`` on a free loopback port with the counting (and metering) proxy in
front (shared by the test fixtures and the benchmarks)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """``python -m moto.server`` on a free loopback port, with a counting proxy in front."""

    def __init__(self, proxy_process: bool = False) -> None:
        """``proxy_process``: run the proxy as a subprocess of its own (the benchmarks) instead of a
        thread of this process (the tests)."""
        from tests.fakes.aws_proxy import Proxy

        ARTIFACTS.mkdir(exist_ok=True)
        self.port = free_port()
        self.log = open(ARTIFACTS / "moto_server.log", "w")  # noqa: SIM115
        env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        self.direct_url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited: {(ARTIFACTS / 'moto_server.log').read_text()}")
            try:
                urllib.request.urlopen(f"{self.direct_url}/moto-api/", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start within 30 s") from None
                time.sleep(0.1)
        self.proxy: Proxy | None = None
        self.proxy_process: subprocess.Popen[str] | None = None
        if proxy_process:
            self.proxy_process = subprocess.Popen(
                [sys.executable, "-m", "tests.fakes.aws_proxy", str(self.port)], stdout=subprocess.PIPE,
                stderr=self.log, text=True, cwd=str(Path(__file__).resolve().parents[2]))
            assert self.proxy_process.stdout is not None
            proxy_port = int(self.proxy_process.stdout.readline().strip())
        else:
            self.proxy = Proxy(self.port)
            self.proxy.start()
            proxy_port = self.proxy.port
        self.url = f"http://127.0.0.1:{proxy_port}"

    def counts(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/__counts") as response:
            return json.loads(response.read())["counts"]

    def units(self) -> dict[str, float]:
        """What AWS would bill since the last reset (see :class:`tests.fakes.aws_proxy.Meter`):
        ``ddb:WRU`` (``ddb:WRU:table``, ``ddb:WRU:index``), ``ddb:RRU``, ``sqs:requests``, and per action."""
        with urllib.request.urlopen(f"{self.url}/__counts") as response:
            return json.loads(response.read())["units"]

    def reset_counts(self) -> None:
        """Clears the call counts and the billed units."""
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/__reset", method="POST")).read()

    def faults(self, rate: float, seed: int = 0) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/__faults?rate={rate}&seed={seed}",
                                                      method="POST")).read()

    def inject(self, action: str, error: str, seconds: float) -> None:
        """Fail every ``action`` call (``dynamodb:UpdateItem``) with ``error`` for ``seconds``."""
        query = f"action={action}&error={error}&seconds={seconds}"
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/__inject?{query}", method="POST")).read()

    def clear_injections(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/__inject?clear=1", method="POST")).read()

    def injected(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/__counts") as response:
            return json.loads(response.read())["injected"]

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        if self.proxy_process is not None:
            self.proxy_process.terminate()
            self.proxy_process.wait(10)
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


