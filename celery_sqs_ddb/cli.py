"""``celery -A app sqs-ddb ...``: create the table and queues, check a deployment, list jobs."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import click
from botocore.exceptions import BotoCoreError, ClientError
from celery.bin.base import CeleryCommand, handle_preload_options

from . import aws, schema
from .config import Settings
from .exceptions import SqsDdbError


def _settings(app: Any) -> Settings:
    backend_url = app.conf.result_backend if str(app.conf.result_backend or "").startswith("ddb://") else None
    return Settings.read(app.conf, url=backend_url)


def _client(app: Any, service: str) -> Any:
    s = _settings(app)
    return aws.client(service, **{**s.client_args(), "region": s.require_region()})


def clear_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Configuration and AWS errors end the command with one clear line and exit status 1."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (SqsDdbError, ClientError, BotoCoreError) as exc:
            raise click.ClickException(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc

    return run


class Command(CeleryCommand):
    """An ``sqs-ddb`` command: a bad option value (``--since yesterday``) is one line and exit
    status 1, like every other configuration error, instead of click's usage text and status 2."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.BadParameter as exc:
            raise click.ClickException(exc.format_message()) from exc


def _iso(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO-8601 time such as 2026-12-01T10:00:00Z") from None
    from .table import iso

    return iso(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))


@click.group(name="sqs-ddb")
@click.pass_context
@handle_preload_options
def sqs_ddb(ctx: click.Context) -> None:
    """SQS + DynamoDB tools: create-table, create-queue, create-bucket, doctor, jobs, status, cleanup."""


@sqs_ddb.command(name="create-table", cls=Command)
@click.option("--wait/--no-wait", default=True, help="Wait until the table is ACTIVE.")
@click.pass_context
@clear_errors
def create_table(ctx: click.Context, wait: bool) -> None:
    """Create the results table (on-demand, status index, TTL, encryption at rest)."""
    app = ctx.obj.app
    table = _settings(app).require_table()
    ddb = _client(app, "dynamodb")
    try:
        with aws.translated("dynamodb", "CreateTable", f"DynamoDB table '{table}'"):
            ddb.create_table(**schema.create_table_request(table))
        ctx.obj.echo(f"creating DynamoDB table {table} ...")
    except ClientError as exc:
        if aws.error_code(exc) != "ResourceInUseException":
            raise click.ClickException(str(exc)) from exc
        ctx.obj.echo(f"DynamoDB table {table} already exists")
    except SqsDdbError as exc:
        raise click.ClickException(str(exc)) from exc
    if wait:
        ddb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 300})
    ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={
        "Enabled": True, "AttributeName": schema.TTL_ATTRIBUTE}) if not _ttl_enabled(ddb, table) else None
    ctx.obj.echo(f"table {table}: ACTIVE, index {schema.STATUS_INDEX}, TTL on {schema.TTL_ATTRIBUTE}")


def _ttl_enabled(ddb: Any, table: str) -> bool:
    desc = ddb.describe_time_to_live(TableName=table).get("TimeToLiveDescription", {})
    return desc.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") and desc.get("AttributeName") == schema.TTL_ATTRIBUTE


@sqs_ddb.command(name="create-queue", cls=Command)
@click.argument("name")
@click.option("--dead-letter", "dead_letter", default=None, help="Dead-letter queue name (created too).")
@click.option("--visibility-timeout", default=60, show_default=True, type=click.IntRange(0, 43200))
@click.option("--max-receive-count", default=4, show_default=True, type=click.IntRange(1, 1000))
@click.pass_context
@clear_errors
def create_queue(ctx: click.Context, name: str, dead_letter: str | None, visibility_timeout: int,
                 max_receive_count: int) -> None:
    """Create an SQS queue (FIFO if NAME ends in .fifo) with SSE, long polling and a DLQ."""
    sqs = _client(ctx.obj.app, "sqs")
    fifo = name.endswith(".fifo")
    base = {"SqsManagedSseEnabled": "true", "MessageRetentionPeriod": "1209600"}
    if fifo:
        base["FifoQueue"] = "true"
    attributes = dict(base, VisibilityTimeout=str(visibility_timeout), ReceiveMessageWaitTimeSeconds="20")
    if dead_letter:
        if fifo != dead_letter.endswith(".fifo"):
            raise click.UsageError("the dead-letter queue of a FIFO queue must be FIFO too (and vice versa)")
        dlq_url = sqs.create_queue(QueueName=dead_letter, Attributes=base)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dlq_arn,
                                                  "maxReceiveCount": str(max_receive_count)})
        ctx.obj.echo(f"dead-letter queue {dead_letter}: {dlq_url}")
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    ctx.obj.echo(f"queue {name}: {url}")


@sqs_ddb.command(name="create-bucket", cls=Command)
@click.argument("name", required=False)
@click.pass_context
@clear_errors
def create_bucket(ctx: click.Context, name: str | None) -> None:
    """Create the S3 bucket for large payloads (default: sqs_ddb_s3_bucket)."""
    s = _settings(ctx.obj.app)
    name = name or s.s3_bucket
    if not name:
        raise click.UsageError("give a bucket name or set sqs_ddb_s3_bucket")
    s3 = _client(ctx.obj.app, "s3")
    params: dict[str, Any] = {"Bucket": name}
    if s.region and s.region != "us-east-1":
        params["CreateBucketConfiguration"] = {"LocationConstraint": s.region}
    try:
        s3.create_bucket(**params)
    except ClientError as exc:
        if aws.error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise click.ClickException(str(exc)) from exc
    ctx.obj.echo(f"bucket {name}: ready")


@sqs_ddb.command(cls=Command)
@click.pass_context
@clear_errors
def doctor(ctx: click.Context) -> None:
    """Check credentials, table schema, index, TTL, queues and bucket; exit 1 on any problem."""
    app = ctx.obj.app
    problems = 0

    def check(label: str, fn: Any) -> None:
        nonlocal problems
        try:
            detail = fn()
            ctx.obj.echo(f"ok    {label}{': ' + detail if detail else ''}")
        except (SqsDdbError, ClientError, BotoCoreError, ValueError, KeyError) as exc:
            problems += 1
            ctx.obj.echo(f"FAIL  {label}: {exc}")

    try:
        s = _settings(app)
    except SqsDdbError as exc:
        raise click.ClickException(str(exc)) from exc
    check("credentials", lambda: _client(app, "sts").get_caller_identity()["Arn"])
    check(f"table {s.table}", lambda: _check_table(app, s))
    options = app.conf.broker_transport_options or {}
    for name, entry in (options.get("predefined_queues") or {}).items():
        check(f"queue {name}", lambda name=name, entry=entry: _check_queue(app, entry.get("url") or name))
        if entry.get("dead_letter_url"):
            check(f"dead-letter queue of {name}", lambda entry=entry: _check_queue(app, entry["dead_letter_url"]))
    if s.s3_bucket:
        check(f"bucket {s.s3_bucket}", lambda: _client(app, "s3").head_bucket(Bucket=s.s3_bucket) and "")
    from .control import KIND_CONTROL, KIND_EVENTS, ControlPlane

    plane = ControlPlane.for_app(app)
    for kind, enabled in ((KIND_CONTROL, plane.options.remote_control), (KIND_EVENTS, plane.options.events)):
        if enabled:
            check(f"{kind} topic", lambda kind=kind: _check_topic(plane, kind))
    if plane.options.active:
        check(f"control queues {plane.options.queue_prefix}*", lambda: _check_control_queues(plane))
    if problems:
        ctx.obj.echo(f"{problems} problem(s) found")
        sys.exit(1)
    ctx.obj.echo("all checks passed")


def _check_table(app: Any, s: Settings) -> str:
    table = s.require_table()
    ddb = _client(app, "dynamodb")
    with aws.translated("dynamodb", "DescribeTable", f"DynamoDB table '{table}' (sqs_ddb_table)",
                        hint='run "celery -A app sqs-ddb create-table"'):
        desc = ddb.describe_table(TableName=table)["Table"]
    if desc["KeySchema"] != schema.KEY_SCHEMA:
        raise ValueError(f"key schema {desc['KeySchema']} differs from {schema.KEY_SCHEMA}")
    indexes = {i["IndexName"]: i for i in desc.get("GlobalSecondaryIndexes", [])}
    index = indexes.get(schema.STATUS_INDEX)
    if index is None:
        raise ValueError(f"status index {schema.STATUS_INDEX!r} is missing")
    if index["KeySchema"] != schema.INDEX_KEY_SCHEMA:
        raise ValueError(f"index key schema {index['KeySchema']} differs from {schema.INDEX_KEY_SCHEMA}")
    if not _ttl_enabled(ddb, table):
        raise ValueError(f"TTL is not enabled on {schema.TTL_ATTRIBUTE!r}; run create-table again")
    return f"{desc['TableStatus']}, index {schema.STATUS_INDEX}, TTL on {schema.TTL_ATTRIBUTE}"


def _check_topic(plane: Any, kind: str) -> str:
    arn = plane.topic_arn(kind, create=False)
    if arn is None:
        return (f"no ARN configured (sqs_ddb_{kind}_topic_arn): created as {plane.options.topic_name(kind)} "
                "on first use (local development; in production use the Terraform queue module's topic)")
    with aws.translated("sns", "ListSubscriptionsByTopic", f"SNS topic {arn}", setting=f"sqs_ddb_{kind}_topic_arn"):
        subscriptions = plane.sns.list_subscriptions_by_topic(TopicArn=arn).get("Subscriptions", [])
    return f"{arn}, {len(subscriptions)} subscribed queue(s)"


def _check_control_queues(plane: Any) -> str:
    report = plane.sweep(dry_run=True)
    stale = f", {len(report.queues_removed)} stale (run sqs-ddb cleanup)" if report.queues_removed else ""
    return f"{len(report.queues_kept)} live{stale}"


def _check_queue(app: Any, url: str) -> str:
    sqs = _client(app, "sqs")
    if "://" not in url:  # a name: resolve it as the worker will
        url = aws.queue_url(sqs, url)
    with aws.translated("sqs", "GetQueueAttributes", f"SQS queue {url}"):
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return (f"{attrs.get('ApproximateNumberOfMessages', '?')} visible, "
            f"{attrs.get('ApproximateNumberOfMessagesNotVisible', '?')} in flight")


@sqs_ddb.command(cls=Command)
@click.option("--status", default="STARTED", show_default=True,
              type=click.Choice(["QUEUED", "STARTED", "PROGRESS", "RETRY", "SUCCESS", "FAILURE", "REVOKED"],
                                case_sensitive=False))
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--since", default=None, callback=_iso, help="ISO-8601 UTC lower bound of updated_at.")
@click.option("--cursor", default=None, help="Continue after this cursor (printed at the end of a page).")
@click.option("--all", "every", is_flag=True, help="Follow the cursor to the last page.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@click.pass_context
@clear_errors
def jobs(ctx: click.Context, status: str, limit: int, since: str | None, cursor: str | None, every: bool,
         as_json: bool) -> None:
    """List jobs in a state from the status index, newest first (a page, or --all)."""
    from .api import jobs as list_jobs

    if not as_json:
        ctx.obj.echo(f"{'task_id':<36}  {'status':<8}  {'updated_at':<27}  {'task':<30}  worker")
    count = 0
    while True:
        try:
            found, cursor = list_jobs(ctx.obj.app, status, since=since, limit=limit, cursor=cursor)
        except ValueError as exc:  # a status or cursor the listing does not accept
            raise click.ClickException(str(exc)) from exc
        count += len(found)
        for job in found:
            if as_json:
                ctx.obj.echo(json.dumps(job))
            else:
                ctx.obj.echo(f"{job['task_id']:<36}  {job['status']:<8}  {job['updated_at']:<27}  "
                             f"{(job.get('task_name') or ''):<30}  {job.get('worker') or ''}")
        if not (every and cursor):
            break
    if not as_json:
        ctx.obj.echo(f"{count} job(s)" + (f"; next page: --cursor '{cursor}'" if cursor else ""))


@sqs_ddb.command(cls=Command)
@click.pass_context
@clear_errors
def healthcheck(ctx: click.Context) -> None:
    """Exit 0 while the worker's consumer loop runs (health file fresh), 1 otherwise.

    For the container ``healthCheck`` of the ECS task definition.
    """
    from .worker.health import healthy

    ok, detail = healthy(_settings(ctx.obj.app))
    ctx.obj.echo(("healthy: " if ok else "unhealthy: ") + detail)
    sys.exit(0 if ok else 1)


@sqs_ddb.command(cls=Command)
@click.argument("task_id")
@click.pass_context
@clear_errors
def status(ctx: click.Context, task_id: str) -> None:
    """Print one task's state, result or error."""
    result = ctx.obj.app.AsyncResult(task_id)
    meta = result.backend.get_task_meta(task_id, cache=False)
    out = {k: (repr(v) if isinstance(v, BaseException) else v) for k, v in meta.items()}
    ctx.obj.echo(json.dumps(out, default=str, indent=2))


@sqs_ddb.command(cls=Command)
@click.option("--stale-after", type=click.FloatRange(0, None), default=None, metavar="SECONDS",
              help="Remove control queues not refreshed for this long (default: sqs_ddb_control_stale_after).")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.pass_context
@clear_errors
def cleanup(ctx: click.Context, stale_after: float | None, dry_run: bool) -> None:
    """Remove remote-control queues and SNS subscriptions of workers and clients that died.

    Each worker deletes its own queue when it stops; this finds those of workers killed
    without a shutdown (SIGKILL, OOM) by their stale keepalive tag. Workers also run it when
    they start. Live queues are refreshed every sqs_ddb_control_keepalive seconds and kept.
    """
    from .control import ControlPlane

    plane = ControlPlane.for_app(ctx.obj.app)
    if not plane.options.active:
        raise click.UsageError("remote control and events are off (sqs_ddb_remote_control, sqs_ddb_events): "
                               "there is nothing to clean up")
    try:
        report = plane.sweep(stale_after, dry_run=dry_run)
    except (SqsDdbError, ClientError, BotoCoreError) as exc:
        raise click.ClickException(str(exc)) from exc
    verb = "would remove" if dry_run else "removed"
    for name in report.queues_removed:
        ctx.obj.echo(f"{verb} queue {name}")
    for arn in report.subscriptions_removed:
        ctx.obj.echo(f"{verb} subscription {arn}")
    ctx.obj.echo(f"{verb} {len(report.queues_removed)} queue(s) and {len(report.subscriptions_removed)} "
                 f"subscription(s); kept {len(report.queues_kept)} live queue(s) under {plane.options.queue_prefix}")
