"""The benchmark's Celery app, in two flavours chosen by BENCH_FLAVOR:

- ``stock``: kombu's SQS transport + Celery's ``dynamodb://`` backend, tuned as a performance-minded
  user would: 1 s long polls, ``polling_interval`` 0.1 s, prefetch from BENCH_PREFETCH (the client
  side uses ``get(interval=0.05)`` for latency, see run.py);
- ``sqs_ddb``: ``celery_sqs_ddb.broker_settings(...)`` + ``ddb://``, the package's defaults except
  the prefetch (BENCH_PREFETCH) and the claim mode (BENCH_CLAIM: ``strict`` or ``redelivery``).

Both use the same queue URL, JSON, acks_late and the same tasks.
"""

from __future__ import annotations

import os
import time

from celery import Celery

import celery_sqs_ddb

#: Stock Celery as tuned for the comparison (documented in docs/benchmarks.md).
STOCK_WAIT_TIME_SECONDS = 1
STOCK_POLLING_INTERVAL = 0.1


def make_app() -> Celery:
    env = os.environ
    flavor = env.get("BENCH_FLAVOR", "sqs_ddb")
    endpoint = env.get("BENCH_ENDPOINT", "http://127.0.0.1:1")
    region = env.get("AWS_REGION", "eu-west-1")
    queue, url = env.get("BENCH_QUEUE", "bench"), env.get("BENCH_QUEUE_URL", "")
    table = env.get("BENCH_TABLE", "bench")
    prefetch = int(env.get("BENCH_PREFETCH", "4"))
    app = Celery(f"bench-{flavor}", set_as_current=False)
    if flavor == "stock":
        host = endpoint.split("://", 1)[1]
        app.conf.update(
            broker_url=f"sqs://testing:testing@{host}",
            broker_transport_options={
                "region": region, "is_secure": False, "wait_time_seconds": STOCK_WAIT_TIME_SECONDS,
                "polling_interval": STOCK_POLLING_INTERVAL, "predefined_queues": {queue: {"url": url}},
                "visibility_timeout": 60},
            result_backend=f"dynamodb://testing:testing@{host}/{table}?read=5&write=5",
            task_default_queue=queue, task_acks_late=True, task_reject_on_worker_lost=True,
            worker_prefetch_multiplier=prefetch, task_serializer="json", result_serializer="json",
            accept_content=["json"], broker_connection_retry_on_startup=True,
        )
    else:
        extra = {"claim": env["BENCH_CLAIM"]} if env.get("BENCH_CLAIM") else {}
        app.conf.update(celery_sqs_ddb.broker_settings({queue: url}, region=region, endpoint_url=endpoint,
                                                       prefetch_multiplier=prefetch, **extra))
        app.conf.result_backend = f"ddb://{table}?region={region}&endpoint_url={endpoint}"

    @app.task(name="bench.noop", shared=False)
    def noop(i: int) -> int:
        return i

    @app.task(name="bench.stamp", shared=False, bind=True)
    def stamp(self: object, i: int) -> list[object]:
        """A trivial task that says where and when it ran: [worker, start, end, i]."""
        start = time.time()
        return [self.request.hostname, start, time.time(), i]  # type: ignore[attr-defined]

    @app.task(name="bench.sleep", shared=False)
    def sleep(seconds: float) -> list[float]:
        start = time.time()
        time.sleep(seconds)
        return [start, time.time()]

    return app


app = make_app()
