"""A Flask app with Celery exactly as Flask's "Background Tasks with Celery" (``celery_init_app``),
configured for the test's moto stack from TEST_* variables; ``celery -A tests.apps.flask_app worker``."""

from __future__ import annotations

import os

from celery import shared_task
from flask import Flask, current_app

import celery_sqs_ddb
from celery_sqs_ddb.flask import celery_init_app


def create_app() -> Flask:
    env = os.environ
    endpoint = env.get("TEST_ENDPOINT", "http://127.0.0.1:1")
    region = env.get("AWS_REGION", "eu-west-1")
    queue = env.get("TEST_QUEUE", "q-unset")
    app = Flask("flask_app")
    app.config.from_mapping(GREETING="hello from Flask config", CELERY={
        **celery_sqs_ddb.broker_settings({queue: env.get("TEST_QUEUE_URL", f"{endpoint}/123456789012/{queue}")},
                                         region=region, endpoint_url=endpoint, wait_time_seconds=1),
        "result_backend": f"ddb://{env.get('TEST_TABLE', 'unset')}?region={region}&endpoint_url={endpoint}",
    })
    celery_init_app(app)
    return app


@shared_task(name="flask.greeting")
def greeting(name: str) -> str:
    """Reads the Flask config: the task runs inside the application context."""
    return f"{current_app.config['GREETING']}, {name}"


flask_app = create_app()
celery_app = flask_app.extensions["celery"]
