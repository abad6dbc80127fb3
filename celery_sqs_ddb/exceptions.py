"""Errors raised by celery_sqs_ddb, each naming the setting, resource and AWS action involved."""

from __future__ import annotations

from typing import Any

from celery.exceptions import Reject
from kombu.exceptions import EncodeError


class SqsDdbError(Exception):
    """Base class of every error this package raises."""


class ConfigurationError(SqsDdbError, ValueError):
    """A ``sqs_ddb_*`` setting, transport option or ``ddb://`` URL is invalid."""


class TableNotFound(SqsDdbError):
    """The DynamoDB results table does not exist."""


class QueueNotFound(SqsDdbError):
    """An SQS queue named in the settings does not exist."""


class AccessDenied(SqsDdbError):
    """The credentials in use may not call an AWS action on a resource."""


class AwsCallFailed(SqsDdbError):
    """An AWS call failed for a reason other than a missing resource or permission."""


class StateConflict(SqsDdbError):
    """A conditional state write was refused; ``item`` is the task's current state."""

    def __init__(self, message: str, item: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.item = item or {}


class ResultTooLarge(EncodeError, SqsDdbError):
    """A result or traceback is over the item limit and no S3 bucket is configured."""


class PayloadTooLarge(SqsDdbError):
    """A task message is over the SQS size limit and no S3 bucket is configured."""


class ClaimCheckMissing(SqsDdbError):
    """A message points to an S3 object that no longer exists."""


class UntrustedPointer(ClaimCheckMissing):
    """A message points outside the configured claim-check bucket and prefix."""


class ClaimDeferred(Reject, SqsDdbError):
    """A claim or result write failed on our side (DynamoDB/S3 after retries): the task waits.

    A ``Reject(requeue=True)``, so a worker without this package's Request gives the message back."""

    def __init__(self, reason: str | None = None, requeue: bool = True) -> None:
        super().__init__(reason, requeue)

    def __str__(self) -> str:
        return str(self.reason)


class PickleRefused(ConfigurationError):
    """Pickle is configured as a serializer but ``sqs_ddb_allow_pickle`` is off."""
