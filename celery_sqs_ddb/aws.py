"""boto3 clients with botocore retry modes, the list of AWS actions the code calls, and
translation of AWS errors into one clear message.

``RUNTIME_ACTIONS`` is what a worker or a web process calls; the Terraform worker role is
tested to grant exactly these. ``CONTROL_ACTIONS`` are called in addition only with remote
control or events on (:mod:`celery_sqs_ddb.control`: per-process queues, their subscriptions,
the broadcast topics); the worker role grants them, scoped to the control queues and topics,
only when the queue module's topics are wired in. ``ADMIN_ACTIONS`` are called only by the
``sqs-ddb`` CLI (create-table, create-queue, doctor) or `celery purge` run by an operator, or to create the
topics by name where no ARN is configured (local development).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from .exceptions import AccessDenied, AwsCallFailed, QueueNotFound, TableNotFound

RUNTIME_ACTIONS: dict[str, frozenset[str]] = {
    "dynamodb": frozenset({
        "GetItem", "UpdateItem", "DeleteItem", "BatchGetItem", "BatchWriteItem", "Query", "TransactWriteItems",
    }),
    "sqs": frozenset({
        "SendMessage", "SendMessageBatch", "ReceiveMessage", "DeleteMessage", "DeleteMessageBatch",
        "ChangeMessageVisibility", "ChangeMessageVisibilityBatch", "GetQueueAttributes", "GetQueueUrl",
    }),
    "s3": frozenset({"PutObject", "GetObject", "DeleteObject"}),
    # Not a boto3 call: the ECS agent's task-protection endpoint (celery_sqs_ddb.worker.ecs), which
    # ECS authorizes as ecs:UpdateTaskProtection with the task role.
    "ecs": frozenset({"UpdateTaskProtection"}),
}

#: What a process that only sends tasks and reads results calls (a Django/Flask web app, ``celery
#: beat``, a script with ``submit_many``): publish (and resolve queue names), the table's reads,
#: its QUEUED rows and revoke, claim-check objects up and results down. No receive, no visibility,
#: no delete, no ECS. With remote control on (``inspect``/``control`` from the web side) add
#: ``CONTROL_ACTIONS`` and the reply-queue calls ``PRODUCER_CONTROL_ACTIONS``. The Terraform producer
#: module grants exactly these; an integration test counts a Django process's calls against them.
PRODUCER_ACTIONS: dict[str, frozenset[str]] = {
    "dynamodb": frozenset({"GetItem", "UpdateItem", "BatchGetItem", "BatchWriteItem", "Query", "DeleteItem",
                           "TransactWriteItems"}),
    # GetQueueAttributes: kombu declares the queue on the first publish (its message count)
    "sqs": frozenset({"SendMessage", "SendMessageBatch", "GetQueueUrl", "GetQueueAttributes"}),
    "s3": frozenset({"PutObject", "GetObject"}),
}

#: A client's reply queue of ``inspect``/``control`` is read and emptied like a worker's queue.
PRODUCER_CONTROL_ACTIONS: dict[str, frozenset[str]] = {
    "sqs": frozenset({"ReceiveMessage", "DeleteMessage", "DeleteMessageBatch"}),
}

CONTROL_ACTIONS: dict[str, frozenset[str]] = {
    # on the control queues (<namespace>-ctl-*), besides the message calls of RUNTIME_ACTIONS
    "sqs": frozenset({"CreateQueue", "DeleteQueue", "SetQueueAttributes", "TagQueue", "ListQueueTags",
                      "ListQueues"}),
    "sns": frozenset({"Publish", "Subscribe", "Unsubscribe", "ListSubscriptionsByTopic"}),
}

ADMIN_ACTIONS: dict[str, frozenset[str]] = {
    "dynamodb": frozenset({"CreateTable", "DescribeTable", "UpdateTimeToLive", "DescribeTimeToLive"}),
    "sqs": frozenset({"CreateQueue", "PurgeQueue"}),  # PurgeQueue: `celery purge`, control.purge()
    "s3": frozenset({"CreateBucket", "HeadBucket"}),
    "sts": frozenset({"GetCallerIdentity"}),
    "sns": frozenset({"CreateTopic"}),
}

#: SQS batch calls are authorized by the single-message IAM action.
_IAM_ACTION = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
    "TransactWriteItems": "UpdateItem",  # a transaction is authorized by the actions inside it
}


def iam_actions(actions: dict[str, frozenset[str]] = RUNTIME_ACTIONS) -> set[str]:
    """IAM actions (``service:Action``) that authorize the given API calls."""
    return {f"{service}:{_IAM_ACTION.get(action, action)}" for service, names in actions.items() for action in names}


#: Error codes that mean "try again later": botocore retries them first, then Celery's
#: result_backend_always_retry does (see DynamoDBBackend.exception_safe_to_retry).
RETRYABLE_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "ServiceUnavailable", "InternalFailure", "Throttling",
    "TransactionConflictException", "SlowDown", "RequestThrottled", "ServiceUnavailableException",
})
#: SQS's "no such queue" (query protocol, JSON protocol)
MISSING_QUEUE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
ACCESS_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId",
    "ExpiredTokenException", "SignatureDoesNotMatch", "MissingAuthenticationToken",
    "InvalidSignatureException", "UnauthorizedOperation",
})

_local = threading.local()


def client(service: str, region: str | None, endpoint_url: str | None = None,
           retry_mode: str = "standard", max_attempts: int = 5, read_timeout: float = 30.0,
           role_arn: str | None = None, credentials: tuple[str, str | None, str | None] | None = None) -> Any:
    """A boto3 client per (thread, process, service, region, endpoint, retry policy, role).

    Credentials come from boto3's chain (IAM role, environment, profile), never from code; with
    ``role_arn`` (kombu's ``sts_role_arn``) they are that role's, assumed through STS and
    refreshed by botocore before they expire, so SQS and this package's own clients act as one
    identity. ``credentials`` (access key id, secret, session token) are the static ones a user gave
    kombu's ``predefined_queues``, used the same way.
    """
    identity = (os.environ.get("AWS_PROFILE"), os.environ.get("AWS_ACCESS_KEY_ID"))  # env switches creds
    key = (os.getpid(), service, region, endpoint_url, retry_mode, max_attempts, read_timeout, identity, role_arn,
           credentials)
    cache = getattr(_local, "clients", None)
    if cache is None:
        cache = _local.clients = {}
    found = cache.get(key)
    if found is None:
        config = Config(
            retries={"mode": retry_mode, "total_max_attempts": max_attempts},
            connect_timeout=5,
            read_timeout=read_timeout,
            max_pool_connections=32,
        )
        try:
            found = session(region, endpoint_url, role_arn, credentials).client(
                service, region_name=region, endpoint_url=endpoint_url, config=config)
        except NoRegionError:
            raise AwsCallFailed(
                f"no AWS region for {service}: set ?region=R in the ddb:// URL, sqs_ddb_region or AWS_REGION"
            ) from None
        cache[key] = found
    return found


def session(region: str | None, endpoint_url: str | None = None, role_arn: str | None = None,
            credentials: tuple[str, str | None, str | None] | None = None) -> Any:
    """A boto3 session: the default credential chain (or the given static ``credentials``), or
    ``role_arn`` assumed with them (refreshable)."""
    key_id, secret, token = credentials or (None, None, None)
    found = boto3.session.Session(region_name=region, aws_access_key_id=key_id, aws_secret_access_key=secret,
                                  aws_session_token=token)
    if not role_arn:
        return found
    core = found._session  # botocore's session: where boto3 keeps the credentials it signs with

    def sts_client(*args: Any, **kwargs: Any) -> Any:
        return core.create_client(*args, **{**kwargs, "endpoint_url": endpoint_url or kwargs.get("endpoint_url")})

    fetcher = AssumeRoleCredentialFetcher(client_creator=sts_client, source_credentials=core.get_credentials(),
                                          role_arn=role_arn, extra_args={"RoleSessionName": "celery-sqs-ddb"})
    assumed = DeferredRefreshableCredentials(refresh_using=fetcher.fetch_credentials, method="assume-role")
    core._credentials = assumed
    return found


def queue_url(sqs: Any, name: str, region: str | None = None) -> str:
    """GetQueueUrl for a queue name, with the one clear error when it does not exist."""
    where = f"SQS queue '{name}'" + (f" (region {region})" if region else "")
    with translated("sqs", "GetQueueUrl", where, hint='run "celery -A app sqs-ddb create-queue"'):
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError ('' for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_retryable(exc: BaseException) -> bool:
    """Throttling, 5xx and connection errors: safe to try again."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in RETRYABLE_CODES or status >= 500
    return isinstance(exc, BotoCoreError) and not isinstance(exc, NoCredentialsError)


@contextlib.contextmanager
def translated(service: str, action: str, resource: str, *, setting: str = "", hint: str = "") -> Iterator[None]:
    """Turn a missing resource or permission into one clear error naming action and resource.

    Throttling and 5xx errors pass through unchanged so the retry machinery sees them.
    """
    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "")
        where = f"{resource}" + (f" ({setting})" if setting else "")
        if code in ("ResourceNotFoundException", "NoSuchBucket") and service == "dynamodb":
            raise TableNotFound(f"{where} does not exist{'; ' + hint if hint else ''}") from exc
        if code in MISSING_QUEUE_CODES:
            raise QueueNotFound(f"{where} does not exist{'; ' + hint if hint else ''}") from exc
        if code in ACCESS_CODES:
            raise AccessDenied(
                f"not allowed to call {service}:{action} on {where}: {code}: {message}. "
                f"Grant {service}:{action} to the task role (deploy/terraform/modules/worker)"
            ) from exc
        raise
    except NoCredentialsError as exc:
        raise AccessDenied(
            f"no AWS credentials found for {service}:{action} on {resource}; "
            "use an IAM role, AWS_PROFILE or the AWS_* environment variables"
        ) from exc
