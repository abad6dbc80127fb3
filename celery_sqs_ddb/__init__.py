"""celery_sqs_ddb: Celery on AWS with SQS as the broker and DynamoDB as the result backend.

Adopting it changes two settings::

    app.conf.update(celery_sqs_ddb.broker_settings(["celery"], region="eu-west-1"))
    app.conf.result_backend = "ddb://my-results?region=eu-west-1"
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import broker_settings, configure, jobs, revoke  # noqa: E402
from .submit import batched, submit_many  # noqa: E402

__all__ = ["__version__", "batched", "broker_settings", "configure", "jobs", "revoke", "submit_many"]
