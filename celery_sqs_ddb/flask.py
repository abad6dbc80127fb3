"""Flask: ``celery_init_app`` from Flask's "Background Tasks with Celery", on this package.

``app.py``::

    import celery_sqs_ddb
    from celery_sqs_ddb.flask import celery_init_app

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config.from_mapping(CELERY={
            **celery_sqs_ddb.broker_settings(["jobs.fifo"], region="eu-west-1"),
            "result_backend": "ddb://jobs-results?region=eu-west-1",
        })
        celery_init_app(app)
        return app

``make_celery.py`` (the worker's ``-A``)::

    from app import create_app

    flask_app = create_app()
    celery_app = flask_app.extensions["celery"]

Tasks are ``@shared_task``; each runs inside ``app.app_context()`` (``current_app`` works). This
module imports Flask only for type checking.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import Celery, Task

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from flask import Flask


def celery_init_app(app: Flask, config_key: str = "CELERY") -> Celery:
    """A Celery app named after ``app``, configured from ``app.config[config_key]`` (a dict of Celery
    settings: :func:`celery_sqs_ddb.broker_settings` plus ``result_backend``), whose tasks run in an
    application context; stored as ``app.extensions["celery"]`` and made the default app, so
    ``@shared_task`` binds to it. ``celery worker --exit-when-idle`` is added (:func:`configure`)."""
    from .api import configure

    conf = app.config.get(config_key)
    if not isinstance(conf, dict):
        raise ConfigurationError(
            f"app.config[{config_key!r}] is {conf!r}; set it to the Celery settings, e.g. "
            f"{{**celery_sqs_ddb.broker_settings(['jobs.fifo']), 'result_backend': 'ddb://TABLE?region=R'}}")

    class FlaskTask(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(conf)
    celery_app.set_default()
    configure(celery_app)
    app.extensions["celery"] = celery_app
    return celery_app
