"""Settings of celery_sqs_ddb: one frozen object, read once from ``app.conf`` and the URL.

Result backend URL::

    result_backend = "ddb://TABLE?region=eu-west-1&endpoint_url=http://127.0.0.1:5000"

``TABLE`` may also come from ``sqs_ddb_table``; query parameters win over settings.
Credentials never appear here: boto3's credential chain (IAM role, env, profile) is used.

Settings (Celery-style lower-case keys, all optional; each can also come from the environment
as the upper-case name, e.g. ``SQS_DDB_EXIT_WHEN_IDLE=300``, when ``app.conf`` does not set it):

==================================  ===========  =====================================================
key                                 default      meaning
==================================  ===========  =====================================================
``sqs_ddb_table``                   (URL)        DynamoDB table holding one item per task
``sqs_ddb_region``                  boto3 chain  AWS region of the table, bucket and queues
``sqs_ddb_endpoint_url``            None         endpoint override (moto server, LocalStack)
``sqs_ddb_status_shards``           4            write shards of the status index (1..64)
``sqs_ddb_ttl``                     True         set the TTL attribute from ``result_expires``
``sqs_ddb_s3_bucket``               None         bucket for results/messages over the thresholds
``sqs_ddb_s3_prefix``               "celery/"    key prefix inside that bucket
``sqs_ddb_result_s3_threshold``     350000       result/traceback bytes above which S3 is used
``sqs_ddb_retry_mode``              "standard"   botocore retry mode: standard or adaptive
``sqs_ddb_max_attempts``            5            botocore attempts per AWS call (1..20)
``sqs_ddb_poll_max_interval``       1.0          longest pause of ``get()``/``join()`` polling (s)
``sqs_ddb_claim``                   "strict"     "strict": conditional STARTED claim before each
                                                 run; "off": no claim (cheaper, no duplicate guard)
``sqs_ddb_track_queued``            False        write a QUEUED row when a task is sent
``sqs_ddb_summary_chars``           200          length of the args/kwargs summary kept for listing
``sqs_ddb_allow_pickle``            False        allow pickle in accept_content/serializers
``sqs_ddb_stop_timeout``            120          ECS stopTimeout the worker drains within (s)
``sqs_ddb_protection_minutes``      30           ExpiresInMinutes of ECS scale-in protection (renewed
                                                 at half while tasks run; 1..2880)
``sqs_ddb_protection_renew_seconds`` None       renew protection this often (default: half the expiry)
``sqs_ddb_idle_grace``              30           idle seconds before scale-in protection is removed
``sqs_ddb_exit_when_idle``          None         exit 0 after this many idle seconds (batch jobs)
``sqs_ddb_health_file``             "/tmp/       file the worker touches while its consumer loop
                                    celery-sqs-  runs; ``sqs-ddb healthcheck`` reads it
                                    ddb.health"
``sqs_ddb_health_interval``         10           seconds between touches; stale after 6 intervals
``sqs_ddb_json_logs``               None         JSON log lines: None = on ECS only, True, False
``sqs_ddb_remote_control``          False        ``celery inspect``/``control`` and broadcast revoke
                                                 over SNS -> one SQS queue per worker
``sqs_ddb_events``                  False        task events (``celery events``, Flower) over SNS
``sqs_ddb_control_namespace``       first queue  prefix of the control topics and queues
``sqs_ddb_control_topic_arn``       None         SNS topic of the broadcasts (None: created as
                                                 ``<namespace>-control``, for local development)
``sqs_ddb_events_topic_arn``        None         SNS topic of the events (None: ``<namespace>-events``)
``sqs_ddb_control_keepalive``       60           seconds between "still here" tags on a process's
                                                 control queues
``sqs_ddb_control_stale_after``     600          control queues not tagged for this long are
                                                 removed by ``sqs-ddb cleanup`` and worker start
==================================  ===========  =====================================================
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlparse

from .exceptions import ConfigurationError, PickleRefused

PREFIX = "sqs_ddb_"
RETRY_MODES = ("standard", "adaptive")
CLAIM_MODES = ("strict", "off")
SQS_MAX_MESSAGE_BYTES = 1_048_576
DDB_MAX_ITEM_BYTES = 400_000


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{key}={value!r} is not a boolean; accepted: true/false, 1/0, yes/no, on/off")


def _int(low: int, high: int) -> Callable[[str, Any], int]:
    def convert(key: str, value: Any) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{key}={value!r} is not an integer; accepted: {low}..{high}") from None
        if not low <= number <= high:
            raise ConfigurationError(f"{key}={value!r} is out of range; accepted: {low}..{high}")
        return number

    return convert


def _float(low: float, high: float) -> Callable[[str, Any], float]:
    def convert(key: str, value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{key}={value!r} is not a number; accepted: {low}..{high}") from None
        if not low <= number <= high:
            raise ConfigurationError(f"{key}={value!r} is out of range; accepted: {low}..{high}")
        return number

    return convert


def _choice(*accepted: str) -> Callable[[str, Any], str]:
    def convert(key: str, value: Any) -> str:
        if value not in accepted:
            raise ConfigurationError(f"{key}={value!r} is not accepted; accepted values: {', '.join(accepted)}")
        return value

    return convert


def _text(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{key}={value!r} must be a string")
    return value


def _namespace(key: str, value: Any) -> str | None:
    text = _text(key, value)
    if text is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", text):
        raise ConfigurationError(f"{key}={value!r} is not accepted; accepted: 1 to 40 letters, digits, '-' or '_'")
    return text


def _topic_arn(key: str, value: Any) -> str | None:
    text = _text(key, value)
    if text is not None and not re.fullmatch(r"arn:aws[\w-]*:sns:[\w-]+:\d{12}:[\w-]{1,256}", text):
        raise ConfigurationError(f"{key}={value!r} is not an SNS topic ARN; accepted: arn:aws:sns:REGION:ACCOUNT:NAME")
    return text


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated settings; build with :meth:`from_app`. Field ``x`` is the setting ``sqs_ddb_x``."""

    table: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    status_shards: int = 4
    ttl: bool = True
    s3_bucket: str | None = None
    s3_prefix: str = "celery/"
    result_s3_threshold: int = 350_000
    retry_mode: str = "standard"
    max_attempts: int = 5
    poll_max_interval: float = 1.0
    claim: str = "strict"
    track_queued: bool = False
    summary_chars: int = 200
    allow_pickle: bool = False
    stop_timeout: int = 120
    protection_minutes: int = 30
    protection_renew_seconds: float | None = None
    idle_grace: float = 30.0
    exit_when_idle: float | None = None
    health_file: str = "/tmp/celery-sqs-ddb.health"
    health_interval: float = 10.0
    json_logs: bool | None = None
    remote_control: bool = False
    events: bool = False
    control_namespace: str | None = None
    control_topic_arn: str | None = None
    events_topic_arn: str | None = None
    control_keepalive: float = 60.0
    control_stale_after: float = 600.0

    @classmethod
    def from_app(cls, app: Any, url: str | None = None) -> Settings:
        """Read every ``sqs_ddb_*`` key of ``app.conf`` (and the ``ddb://`` URL) once."""
        return cls.from_conf(app.conf, url)

    @classmethod
    def from_conf(cls, conf: Any, url: str | None = None) -> Settings:
        """As :meth:`from_app`, from a settings mapping (``{}``: the ``SQS_DDB_*`` environment only)."""
        raw: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            key = PREFIX + field.name
            value = conf.get(key)
            if value is None:
                value = os.environ.get(key.upper()) or None  # e.g. SQS_DDB_STOP_TIMEOUT in a task definition
            if value is not None:
                raw[field.name] = value
        unknown = sorted(k for k in conf.keys() if isinstance(k, str) and k.startswith(PREFIX)
                         and k[len(PREFIX):] not in {f.name for f in dataclasses.fields(cls)})
        if unknown:
            names = ", ".join(PREFIX + f.name for f in dataclasses.fields(cls))
            raise ConfigurationError(f"unknown setting {unknown[0]!r}; accepted keys: {names}")
        if url:
            raw.update(parse_url(url))
        settings = cls.validated(raw)
        check_serializers(conf, settings.allow_pickle)
        return settings

    @classmethod
    def validated(cls, raw: dict[str, Any]) -> Settings:
        """Validate a mapping of field name to raw value; errors name the ``sqs_ddb_*`` key."""
        converters: dict[str, Callable[[str, Any], Any]] = {
            "table": _text,
            "region": _text,
            "endpoint_url": _text,
            "status_shards": _int(1, 64),
            "ttl": _bool,
            "s3_bucket": _text,
            "s3_prefix": lambda k, v: "" if v is None else str(v),
            "result_s3_threshold": _int(1_024, 380_000),
            "retry_mode": _choice(*RETRY_MODES),
            "max_attempts": _int(1, 20),
            "poll_max_interval": _float(0.05, 30.0),
            "claim": _choice(*CLAIM_MODES),
            "track_queued": _bool,
            "summary_chars": _int(0, 2_000),
            "allow_pickle": _bool,
            "stop_timeout": _int(2, 120),
            "protection_minutes": _int(1, 2_880),
            "protection_renew_seconds": lambda k, v: None if v in (None, "") else _float(1.0, 172_800.0)(k, v),
            "idle_grace": _float(0.0, 86_400.0),
            "exit_when_idle": lambda k, v: None if v in (None, "") else _float(0.0, 604_800.0)(k, v),
            "health_file": lambda k, v: _text(k, v) or "/tmp/celery-sqs-ddb.health",
            "health_interval": _float(0.1, 3_600.0),
            "json_logs": lambda k, v: None if v in (None, "") else _bool(k, v),
            "remote_control": _bool,
            "events": _bool,
            "control_namespace": _namespace,
            "control_topic_arn": _topic_arn,
            "events_topic_arn": _topic_arn,
            "control_keepalive": _float(0.5, 3_600.0),
            "control_stale_after": _float(2.0, 604_800.0),
        }
        values = {name: converters[name](PREFIX + name, value) for name, value in raw.items()}
        keepalive = values.get("control_keepalive", cls.control_keepalive)
        if values.get("control_stale_after", cls.control_stale_after) < 2 * keepalive:
            raise ConfigurationError(
                f"{PREFIX}control_stale_after={values.get('control_stale_after', cls.control_stale_after)!r} must be "
                f"at least twice {PREFIX}control_keepalive={keepalive!r}, or live queues would be removed")
        if values.get("region") is None:
            values["region"] = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return cls(**values)

    def require_table(self) -> str:
        """The table name, or a clear error naming the setting and the URL form."""
        if not self.table:
            raise ConfigurationError(
                "no DynamoDB table configured: set result_backend = 'ddb://TABLE?region=R' "
                "or the sqs_ddb_table setting"
            )
        return self.table

    def require_region(self) -> str:
        """The region, or a clear error naming where it can be set."""
        if not self.region:
            raise ConfigurationError(
                "no AWS region configured: add ?region=R to the ddb:// URL, set sqs_ddb_region, "
                "or export AWS_REGION"
            )
        return self.region


def parse_url(url: str) -> dict[str, Any]:
    """Split ``ddb://TABLE?region=R&endpoint_url=U&...`` into raw settings fields."""
    parts = urlparse(url)
    if parts.scheme != "ddb":
        raise ConfigurationError(f"result backend URL {url!r} must start with ddb://")
    raw: dict[str, Any] = {}
    table = (parts.netloc + parts.path).strip("/")
    if table:
        raw["table"] = table
    known = {f.name for f in dataclasses.fields(Settings)}
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        if key not in known:
            raise ConfigurationError(
                f"unknown query parameter {key!r} in result backend URL {url!r}; accepted: {', '.join(sorted(known))}"
            )
        raw[key] = values[-1]
    return raw


def check_serializers(conf: Any, allow_pickle: bool) -> None:
    """Refuse pickle anywhere in the (result) serializer/accept settings unless allowed."""
    if allow_pickle:
        return
    # remote control uses task_serializer/accept_content; events their own serializer
    for key in ("task_serializer", "result_serializer", "accept_content", "result_accept_content", "event_serializer"):
        value = conf.get(key)
        values = [value] if isinstance(value, str) else list(value or ())
        if any(str(v).endswith("pickle") for v in values):
            raise PickleRefused(
                f"{key}={value!r} enables pickle, which runs arbitrary code from any message or result; "
                "use json, or set sqs_ddb_allow_pickle = True to accept the risk"
            )


@dataclasses.dataclass(frozen=True)
class TransportOptions:
    """The SQS transport's own options (``broker_transport_options``), validated once."""

    s3_bucket: str | None = None
    s3_prefix: str = "celery/"
    payload_s3_threshold: int = 1_000_000
    ack_flush_interval: float = 0.2
    heartbeat: bool = True
    region: str | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TransportOptions:
        """Read our keys from ``broker_transport_options``; errors name the option."""
        def opt(name: str) -> str:
            return f"broker_transport_options[{name!r}]"

        values: dict[str, Any] = {}
        if options.get("s3_bucket") is not None:
            values["s3_bucket"] = _text(opt("s3_bucket"), options["s3_bucket"])
        if options.get("s3_prefix") is not None:
            values["s3_prefix"] = str(options["s3_prefix"])
        if options.get("payload_s3_threshold") is not None:
            values["payload_s3_threshold"] = _int(1_024, SQS_MAX_MESSAGE_BYTES - 16_384)(
                opt("payload_s3_threshold"), options["payload_s3_threshold"])
        if options.get("ack_flush_interval") is not None:
            values["ack_flush_interval"] = _float(0.0, 10.0)(opt("ack_flush_interval"), options["ack_flush_interval"])
        if options.get("heartbeat") is not None:
            values["heartbeat"] = _bool(opt("heartbeat"), options["heartbeat"])
        values["region"] = options.get("region")
        return cls(**values)
