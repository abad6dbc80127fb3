"""The benchmark's Celery app, in two flavours chosen by BENCH_FLAVOR:

- ``stock``: kombu's SQS transport + Celery's ``dynamodb://`` backend, as documented by Celery;
- ``sqs_ddb``: ``celery_sqs_ddb.broker_settings(...)`` + ``ddb://``.

Both use the same queue URL, JSON, acks_late and prefetch settings, and the same tasks.
"""

from __future__ import annotations

import os
import time

from celery import Celery

import celery_sqs_ddb


def make_app() -> Celery:
    env = os.environ
    flavor = env.get("BENCH_FLAVOR", "sqs_ddb")
    endpoint = env.get("BENCH_ENDPOINT", "http://127.0.0.1:1")
    region = env.get("AWS_REGION", "eu-west-1")
    queue, url = env.get("BENCH_QUEUE", "bench"), env.get("BENCH_QUEUE_URL", "")
    table = env.get("BENCH_TABLE", "bench")
    prefetch = int(env.get("BENCH_PREFETCH", "1"))
    wait = int(env.get("BENCH_WAIT", "20"))
    app = Celery(f"bench-{flavor}")
    if flavor == "stock":
        host = endpoint.split("://", 1)[1]
        app.conf.update(
            broker_url=f"sqs://testing:testing@{host}",
            broker_transport_options={"region": region, "is_secure": False, "wait_time_seconds": wait,
                                      "predefined_queues": {queue: {"url": url}}, "visibility_timeout": 60},
            result_backend=f"dynamodb://testing:testing@{host}/{table}?read=5&write=5",
            task_default_queue=queue, task_acks_late=True, task_reject_on_worker_lost=True,
            worker_prefetch_multiplier=prefetch, task_serializer="json", result_serializer="json",
            accept_content=["json"], broker_connection_retry_on_startup=True,
        )
    else:
        app.conf.update(celery_sqs_ddb.broker_settings({queue: url}, region=region, endpoint_url=endpoint,
                                                       prefetch_multiplier=prefetch, wait_time_seconds=wait))
        app.conf.result_backend = f"ddb://{table}?region={region}&endpoint_url={endpoint}"

    @app.task(name="bench.noop", shared=False)
    def noop(i: int) -> int:
        return i

    @app.task(name="bench.sleep", shared=False)
    def sleep(seconds: float) -> list[float]:
        start = time.time()
        time.sleep(seconds)
        return [start, time.time()]

    return app


app = make_app()
