"""A minimal Django project on celery_sqs_ddb; the TEST_* variables are the moto stack of the test
(tests/support/stack.py::Stack.env). A real project writes its queue, table and region here."""

import os

from celery_sqs_ddb.django import celery_settings

SECRET_KEY = "only-for-tests"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost"]
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "demoapp"]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
ROOT_URLCONF = "proj.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
TIME_ZONE = "UTC"
GREETING = "hello from Django settings"

_env = os.environ
_endpoint = _env.get("TEST_ENDPOINT", "http://127.0.0.1:1")
_region = _env.get("AWS_REGION", "eu-west-1")
_queue = _env.get("TEST_QUEUE", "q-unset")

globals().update(celery_settings(
    {_queue: _env.get("TEST_QUEUE_URL", f"{_endpoint}/123456789012/{_queue}")},
    result_backend=f"ddb://{_env.get('TEST_TABLE', 'unset')}?region={_region}&endpoint_url={_endpoint}",
    region=_region,
    endpoint_url=_endpoint,
    dead_letter_queue=_env.get("TEST_DLQ_URL") or None,
    s3_bucket=_env.get("TEST_BUCKET") or None,
    wait_time_seconds=1,
))
CELERY_RESULT_EXTENDED = True
