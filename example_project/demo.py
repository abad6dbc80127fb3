"""``make demo``: the whole system on this machine, with a local moto server as AWS.

Starts a moto server (the embedded default AWS), creates the queue, dead-letter queue, table
and bucket through the package's CLI, starts a worker and the web app (gunicorn), submits a few
jobs, prints the URL and the job board's counts, and stops everything on Ctrl-C.
``DEMO_FLOWER=1`` also starts Flower on port 5555 (remote control and task events are on).

Against real AWS: set ``DEMO_AWS=1`` plus ``AWS_REGION`` (and ``DEMO_QUEUE``, ``DEMO_TABLE``,
``DEMO_BUCKET`` if you want other names); credentials come from your usual AWS profile. The
resources are created if missing (you pay for what you use: on-demand table, SQS requests).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".demo"
APP = "example_project.make_celery"  # Flask's Celery pattern: the worker's entry point
WEB = ["gunicorn", "-c", "python:example_project.gunicorn_conf", "example_project:create_app()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_environment(endpoint: str | None) -> dict[str, str]:
    """The environment every demo process shares (docker-compose.yml uses the same)."""
    env = {
        "AWS_REGION": os.environ.get("AWS_REGION", "eu-west-1"),
        "DEMO_QUEUE": os.environ.get("DEMO_QUEUE", "digits-jobs.fifo"),
        "DEMO_DLQ": os.environ.get("DEMO_DLQ", "digits-jobs-dlq.fifo"),
        "DEMO_TABLE": os.environ.get("DEMO_TABLE", "digits-results"),
        "DEMO_BUCKET": os.environ.get("DEMO_BUCKET", "digits-payloads"),
        "SQS_DDB_REMOTE_CONTROL": "true",  # celery inspect/control over SNS (README: Remote control)
        "SQS_DDB_EVENTS": "true",  # task events over SNS, for Flower (workers run with -E)
    }
    if endpoint:
        env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                   DEMO_WAIT_SECONDS="2")
    return env


def services(flower: bool = False) -> dict[str, list[str]]:
    """The long-running processes, by the names docker-compose.yml gives them (Flower: optional,
    ``DEMO_FLOWER=1 make demo`` or ``docker compose --profile flower up``)."""
    out = {
        "worker": ["celery", "-A", APP, "worker", "--loglevel", "INFO", "--concurrency", "2", "-E"],
        "web": WEB,
    }
    if flower:
        out["flower"] = flower_command()
    return out


def flower_command(port: int = 5555) -> list[str]:
    """Flower over this package's remote control and events (both on in the demo environment)."""
    return ["celery", "-A", APP, "flower", f"--port={port}"]


def setup_commands() -> list[list[str]]:
    """Create the AWS resources (idempotent), through the package's CLI."""
    return [
        ["celery", "-A", APP, "sqs-ddb", "create-table"],
        ["celery", "-A", APP, "sqs-ddb", "create-queue", "${DEMO_QUEUE}", "--dead-letter", "${DEMO_DLQ}"],
        ["celery", "-A", APP, "sqs-ddb", "create-bucket", "${DEMO_BUCKET}"],
    ]


def _expand(command: list[str], env: dict[str, str]) -> list[str]:
    """Fill ``${NAME}`` from ``env`` and run celery/python with this interpreter."""
    out = [string.Template(part).safe_substitute(env) for part in command]
    if out[0] == "celery":
        return [sys.executable, "-m", "celery", *out[1:]]
    if out[0] == "python":
        return [sys.executable, *out[1:]]
    if out[0] == "gunicorn":
        return [sys.executable, "-m", "gunicorn", *out[1:]]
    return out


def wait_http(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the process serving it exited ({process.returncode}); see {STATE}/*.log")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:.0f} s") from None
            time.sleep(pause)
            pause = min(pause * 1.5, 0.5)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` or a CI timeout stops as cleanly as Ctrl-C
    STATE.mkdir(exist_ok=True)
    processes: list[tuple[str, subprocess.Popen]] = []
    use_aws = os.environ.get("DEMO_AWS") == "1"

    def start(name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(STATE / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(command, env=env, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        processes.append((name, proc))
        return proc

    def stop_all(*_: Any) -> None:
        # A second Ctrl-C or SIGTERM must not abort the cleanup: the children run in sessions of
        # their own (no terminal signal reaches them), so an aborted stop would leave them running.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for _, proc in reversed(processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in reversed(processes):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            print(f"stopped {name}")

    try:
        endpoint = None
        if not use_aws:
            port = free_port()
            endpoint = f"http://127.0.0.1:{port}"
            moto = start("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                         dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing"))
            wait_http(f"{endpoint}/moto-api/", 30, moto)
            print(f"moto server (local AWS) on {endpoint}")
        env = dict(os.environ, PYTHONPATH=str(ROOT), **base_environment(endpoint))
        for command in setup_commands():
            done = subprocess.run(_expand(command, env), env=env, cwd=str(ROOT), capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stdout + done.stderr, file=sys.stderr)
                raise RuntimeError(f"{' '.join(command)} failed")
            print("  " + done.stdout.strip().splitlines()[-1])
        web_port = int(os.environ.get("DEMO_WEB_PORT") or free_port())
        env["DEMO_WEB_PORT"] = str(web_port)
        flower = os.environ.get("DEMO_FLOWER") == "1"
        for name, command in services(flower).items():
            start(name, _expand(command, env), env)
        url = f"http://127.0.0.1:{web_port}"
        wait_http(f"{url}/healthz", 60, dict(processes)["web"])
        print(f"worker started (log: {STATE / 'worker.log'})")
        submit_jobs(url)
        print(f"\nOpen {url} (submit digits) and {url}/jobs (job board)"
              + (", Flower on http://127.0.0.1:5555" if flower else "") + ". Ctrl-C stops everything.")
        while all(proc.poll() is None for _, proc in processes):
            time.sleep(5)
            print("job board:", json.loads(urllib.request.urlopen(f"{url}/api/counts").read()))
        failed = [name for name, proc in processes if proc.poll() is not None]
        print(f"stopped unexpectedly: {', '.join(failed)}; see {STATE}/*.log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping …")
        return 0
    finally:
        stop_all()


def submit_jobs(url: str) -> None:
    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(request).read())

    samples = json.loads(urllib.request.urlopen(f"{url}/api/samples").read())
    for sample in samples[:3]:
        job = post("/api/predict", {"image": sample["image"]})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = json.loads(urllib.request.urlopen(f"{url}/api/jobs/{job['task_id']}").read())
            if state["state"] in ("SUCCESS", "FAILURE"):
                break
            time.sleep(0.1)
        print(f"  predict(digit {sample['label']}) -> {state.get('result') or state.get('error')}")
    workers = json.loads(urllib.request.urlopen(f"{url}/api/workers").read())
    print(f"  inspect ping (remote control over SNS -> SQS): {', '.join(workers['workers']) or 'no answer'}")
    batch = post("/api/batch", {"count": 20, "bad": 2, "long": True})
    print(f"  submit_many: {len(batch['task_ids'])} jobs (2 invalid on purpose) + 1 long job with progress")
    time.sleep(2)
    print("job board:", json.loads(urllib.request.urlopen(f"{url}/api/counts").read()))


if __name__ == "__main__":
    raise SystemExit(main())
