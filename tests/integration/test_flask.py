"""Flask's Celery pattern (``celery_sqs_ddb.flask.celery_init_app``) with a real worker on moto."""

from __future__ import annotations

import pytest
from celery import _state as celery_state

from tests.support.stack import Stack

pytestmark = pytest.mark.integration


def test_flask_task_runs_in_the_app_context_through_a_real_worker(stack: Stack, workers, monkeypatch) -> None:
    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)
    # celery_init_app makes its app the default and current one: give other tests theirs back after
    monkeypatch.setattr(celery_state, "default_app", celery_state.default_app)
    monkeypatch.setattr(celery_state._tls, "current_app", celery_state._tls.current_app)
    from tests.apps.flask_app import create_app, greeting

    flask_app = create_app()  # this (web) process: configured from the same TEST_* variables
    celery_app = flask_app.extensions["celery"]
    assert celery_app.conf.broker_transport == "celery_sqs_ddb.transport:Transport"
    assert greeting._get_app() is celery_app  # @shared_task binds to the app celery_init_app made
    workers(stack.env(), name="flask", app="tests.apps.flask_app", concurrency=1).wait_ready()
    with flask_app.test_request_context():  # a view would call .delay() like this
        result = greeting.delay("Ada")
    assert result.get(timeout=60) == "hello from Flask config, Ada"
    assert stack.item(result.id)["status"] == "SUCCESS"


def test_celery_init_app_names_the_missing_config() -> None:
    from flask import Flask

    from celery_sqs_ddb.exceptions import ConfigurationError
    from celery_sqs_ddb.flask import celery_init_app

    with pytest.raises(ConfigurationError, match=r"app.config\['CELERY'\] is None; set it to the Celery settings"):
        celery_init_app(Flask("bare"))
