"""The example project: a Flask app and Celery tasks wired the way Flask documents it.

Flask's "Background Tasks with Celery" pattern (https://flask.palletsprojects.com/patterns/celery/):
``create_app()`` is the application factory, its ``CELERY`` config key holds the Celery settings,
``celery_init_app(app)`` builds the Celery app from them and stores it in
``app.extensions["celery"]``, tasks are ``@shared_task`` (``example_project/tasks.py``) and the
worker finds the Celery app through ``example_project/make_celery.py``. The only change for SQS +
DynamoDB is what goes into ``CELERY``: :func:`celery_config` (``broker_settings()`` and the
``ddb://`` result backend).

Configuration comes from the environment so the same image runs under ``make demo``,
docker-compose and ECS:

- ``AWS_REGION`` (default eu-west-1) and, locally, ``AWS_ENDPOINT_URL`` (the moto server);
- ``DEMO_QUEUE`` / ``DEMO_QUEUE_URL``, ``DEMO_DLQ`` / ``DEMO_DLQ_URL``: the SQS queue and its
  dead-letter queue (names are resolved to URLs once per process);
- ``DEMO_TABLE``: the DynamoDB results table; ``DEMO_BUCKET``: the payload bucket (optional);
- ``DEMO_VISIBILITY_TIMEOUT``, ``DEMO_WAIT_SECONDS``, ``DEMO_RESULT_EXPIRES``;
- ``DEMO_BOARD_CACHE_SECONDS`` (2) and ``DEMO_COUNTS_CACHE_SECONDS`` (10): how long the job
  board's listings and counts are shared by every open tab (README: "Job board read cost");
- ``FLASK_*``: any Flask setting (``app.config.from_prefixed_env()``, as in Flask's docs).

Run: ``gunicorn -c python:example_project.gunicorn_conf "example_project:create_app()"`` (the
image and docker-compose do) or ``flask --app example_project run --debug`` while developing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from celery import Celery, Task
from flask import Flask

import celery_sqs_ddb


def celery_config(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The Celery settings of the example, from the environment (the ``CELERY`` config key)."""
    region = env.get("AWS_REGION", "eu-west-1")
    endpoint = env.get("AWS_ENDPOINT_URL") or None
    queue = env.get("DEMO_QUEUE", "digits-jobs.fifo")
    queues: Any = {queue: env["DEMO_QUEUE_URL"]} if env.get("DEMO_QUEUE_URL") else [queue]
    config = celery_sqs_ddb.broker_settings(
        queues, region=region, endpoint_url=endpoint,
        dead_letter_queue=env.get("DEMO_DLQ_URL") or env.get("DEMO_DLQ") or None,
        s3_bucket=env.get("DEMO_BUCKET") or None,
        visibility_timeout=int(env.get("DEMO_VISIBILITY_TIMEOUT", "60")),
        wait_time_seconds=int(env.get("DEMO_WAIT_SECONDS", "20")),
    )
    query = f"region={region}" + (f"&endpoint_url={endpoint}" if endpoint else "")
    config.update(
        result_backend=f"ddb://{env.get('DEMO_TABLE', 'digits-results')}?{query}",
        result_extended=True,
        result_expires=int(env.get("DEMO_RESULT_EXPIRES", str(2 * 86400))),
        # The job board lists queued jobs, and the web API tells a queued job from an unknown id:
        # one QUEUED row per delay() (one more write per task; submit_many writes them in batches).
        sqs_ddb_track_queued=True,
        imports=["example_project.tasks"],
    )
    return config


def celery_init_app(app: Flask) -> Celery:
    """Flask's ``celery_init_app``: a Celery app configured from ``app.config["CELERY"]`` whose
    tasks run inside the Flask app context."""

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_sqs_ddb.configure(celery_app)  # adds `celery worker --exit-when-idle`
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """The Flask application factory (pages, JSON API and the Celery app)."""
    app = Flask(__name__)
    app.config.from_mapping(
        CELERY=celery_config(),
        MAX_CONTENT_LENGTH=256 * 1024,
        BOARD_CACHE_SECONDS=float(os.environ.get("DEMO_BOARD_CACHE_SECONDS", "2")),
        COUNTS_CACHE_SECONDS=float(os.environ.get("DEMO_COUNTS_CACHE_SECONDS", "10")),
    )
    app.config.from_prefixed_env()
    if test_config:
        app.config.from_mapping(test_config)
    celery_init_app(app)

    from . import views

    views.init_app(app)
    return app
