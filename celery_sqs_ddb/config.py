"""Settings of celery_sqs_ddb: each defined once (default, validator, doc), read by one reader.

Where a setting can be given, lowest precedence first:

1. the environment, as the upper-case key (``SQS_DDB_EXIT_WHEN_IDLE=300`` in a task definition);
2. ``broker_transport_options["sqs_ddb"]``: what :func:`celery_sqs_ddb.broker_settings` writes
   (``broker_settings([...], s3_bucket="b", claim="redelivery")``);
3. ``sqs_ddb_<name>`` keys of ``app.conf`` (Celery style; Django: ``CELERY_SQS_DDB_<NAME>``);
4. query parameters of the result backend URL ``ddb://TABLE?region=R&endpoint_url=U``.

The SQS transport has no app: it sees only 1 and 2. Settings it reads are marked *broker*
below; with this package's transport, giving one of those as an ``sqs_ddb_*`` key is an error
that says where it belongs (with another broker, the backend reads it from the key).
The same setting given twice with different values (2 and 3) is an error too. Credentials
never appear here: boto3's credential chain (IAM role, environment, profile) is used, or the
role of kombu's ``sts_role_arn`` transport option, for every client of this package.

:func:`settings_table` renders the table of every setting; the README's table is tested to be it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlparse

from .exceptions import ConfigurationError, PickleRefused

PREFIX = "sqs_ddb_"
SECTION = "sqs_ddb"  #: the key of this package's section in broker_transport_options
RETRY_MODES = ("standard", "adaptive")
CLAIM_MODES = ("strict", "redelivery", "off")
SQS_MAX_MESSAGE_BYTES = 1_048_576
#: Content types that run code when decoded: the names kombu registers pickle under.
PICKLE_NAMES = ("pickle", "application/x-python-serialize")

Convert = Callable[[str, Any], Any]


# --------------------------------------------------------------------------- validators


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{key}={value!r} is not a boolean; accepted: true/false, 1/0, yes/no, on/off")


def _number(kind: type, low: float, high: float) -> Convert:
    word = "an integer" if kind is int else "a number"

    def convert(key: str, value: Any) -> Any:
        if isinstance(value, bool):
            raise ConfigurationError(f"{key}={value!r} is not {word}; accepted: {low}..{high}")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{key}={value!r} is not {word}; accepted: {low}..{high}") from None
        if not low <= number <= high:
            raise ConfigurationError(f"{key}={value!r} is out of range; accepted: {low}..{high}")
        return number

    return convert


def _int(low: int, high: int) -> Convert:
    return _number(int, low, high)


def _float(low: float, high: float) -> Convert:
    return _number(float, low, high)


def _optional(convert: Convert) -> Convert:
    def optional(key: str, value: Any) -> Any:
        return None if value in (None, "") else convert(key, value)

    return optional


def _choice(*accepted: str) -> Convert:
    def convert(key: str, value: Any) -> str:
        if value not in accepted:
            raise ConfigurationError(f"{key}={value!r} is not accepted; accepted values: {', '.join(accepted)}")
        return str(value)

    return convert


def _text(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{key}={value!r} must be a string")
    return value


def _pattern(regex: str, accepted: str) -> Convert:
    def convert(key: str, value: Any) -> str | None:
        text = _text(key, value)
        if text is not None and not re.fullmatch(regex, text):
            raise ConfigurationError(f"{key}={value!r} is not accepted; accepted: {accepted}")
        return text

    return convert


def _prefix(key: str, value: Any) -> str:
    text = "" if value is None else str(value)
    if text and not text.endswith("/"):
        raise ConfigurationError(f"{key}={value!r} must end with '/' (an S3 key prefix such as 'celery/')")
    return text


_namespace = _pattern(r"[A-Za-z0-9_-]{1,40}", "1 to 40 letters, digits, '-' or '_'")
_topic_arn = _pattern(r"arn:aws[\w-]*:sns:[\w-]+:\d{12}:[\w-]{1,256}",
                      "an SNS topic ARN arn:aws:sns:REGION:ACCOUNT:NAME")
_role_arn = _pattern(r"arn:aws[\w-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}",
                     "an IAM role ARN arn:aws:iam::ACCOUNT:role/NAME")


# --------------------------------------------------------------------------- definitions


def setting(default: Any, convert: Convert, doc: str, *, broker: bool = False, shown: str | None = None) -> Any:
    """One setting: its default, validator and one-line doc. ``broker``: the transport reads it."""
    return dataclasses.field(default=default, metadata={"convert": convert, "doc": doc, "broker": broker,
                                                        "shown": shown})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting of the package; field ``x`` is the setting ``sqs_ddb_x``. Build with :meth:`read`."""

    # where things are
    table: str | None = setting(None, _text, "DynamoDB table of one item per task", shown="from URL")
    region: str | None = setting(None, _text, "AWS region of the table, bucket, queues and topics",
                                 shown="AWS_REGION")
    endpoint_url: str | None = setting(None, _text, "endpoint override for every AWS client (moto, LocalStack)",
                                       broker=True)
    retry_mode: str = setting("standard", _choice(*RETRY_MODES), "botocore retry mode of every AWS call",
                              broker=True)
    max_attempts: int = setting(5, _int(1, 20), "botocore attempts per AWS call (throttling, 5xx)", broker=True)
    sts_role_arn: str | None = setting(None, _role_arn, "IAM role every client of the package assumes "
                                       "(kombu's sts_role_arn, for SQS too)", broker=True)
    # results
    status_shards: int = setting(4, _int(1, 64), "write shards of the status index")
    ttl: bool = setting(True, _bool, "set the TTL attribute from result_expires")
    result_s3_threshold: int = setting(350_000, _int(1_024, 380_000),
                                       "result/traceback bytes above which S3 is used")
    summary_chars: int = setting(200, _int(0, 2_000), "length of the args/kwargs summary (result_extended)")
    poll_max_interval: float = setting(1.0, _float(0.05, 30.0), "longest pause of get()/join() polling (s)")
    track_queued: bool = setting(False, _bool, "write a QUEUED row when a task is sent (delay(), submit_many)")
    claim: str = setting("strict", _choice(*CLAIM_MODES),
                         "strict: claim each run; redelivery: only redeliveries and retries; off: never")
    allow_pickle: bool = setting(False, _bool, "accept pickle in serializer and accept_content settings")
    # large payloads (S3 claim-check)
    s3_bucket: str | None = setting(None, _text, "bucket for messages and results over the thresholds",
                                    broker=True)
    s3_prefix: str = setting("celery/", _prefix, "key prefix inside that bucket", broker=True)
    payload_s3_threshold: int = setting(1_000_000, _int(1_024, SQS_MAX_MESSAGE_BYTES - 16_384),
                                        "message bytes above which S3 is used", broker=True)
    # the transport's own work
    ack_flush_interval: float = setting(0.5, _float(0.0, 10.0), "longest wait before batched deletes (s)",
                                        broker=True)
    heartbeat: bool = setting(True, _bool, "extend the visibility of held messages while tasks run",
                              broker=True)
    # Fargate / any container
    stop_timeout: int = setting(120, _int(2, 120), "ECS stopTimeout the worker drains within (s)")
    protection_minutes: int = setting(30, _int(1, 2_880), "ExpiresInMinutes of ECS task scale-in protection")
    protection_renew_seconds: float | None = setting(None, _optional(_float(1.0, 172_800.0)),
                                                     "renew protection this often", shown="half the expiry")
    idle_grace: float = setting(30.0, _float(0.0, 86_400.0), "idle seconds before protection is removed")
    exit_when_idle: float | None = setting(None, _optional(_float(0.0, 604_800.0)),
                                           "exit 0 after this many idle seconds (batch jobs)")
    health_file: str = setting("/tmp/celery-sqs-ddb.health", lambda k, v: _text(k, v) or "/tmp/celery-sqs-ddb.health",
                               "file the consumer loop touches; sqs-ddb healthcheck reads it")
    health_interval: float = setting(10.0, _float(0.1, 3_600.0), "seconds between touches (stale after 6)")
    json_logs: bool | None = setting(None, _optional(_bool), "JSON log lines; None: on ECS only")
    # remote control and events over SNS
    remote_control: bool = setting(False, _bool, "celery inspect/control and broadcast revoke over SNS",
                                   broker=True)
    events: bool = setting(False, _bool, "task events (celery events, Flower) over SNS", broker=True)
    control_namespace: str | None = setting(None, _namespace, "prefix of the control topics and queues",
                                            broker=True, shown="first queue")
    control_topic_arn: str | None = setting(None, _topic_arn, "SNS topic of broadcasts (None: created by name)",
                                            broker=True)
    events_topic_arn: str | None = setting(None, _topic_arn, "SNS topic of events (None: created by name)",
                                           broker=True)
    control_keepalive: float = setting(60.0, _float(0.5, 3_600.0), "seconds between keepalive tags of a "
                                       "process's control queues", broker=True)
    control_stale_after: float = setting(600.0, _float(2.0, 604_800.0), "control queues not tagged this long "
                                         "are removed by sqs-ddb cleanup", broker=True)
    #: Not a setting: the one set of static credentials the ``predefined_queues`` entries give
    #: (kombu's per-queue ``access_key_id``/``secret_access_key``/``session_token``), so this
    #: package's own clients act as the same identity as the queues' (see :func:`queue_credentials`).
    credentials: tuple[str, str | None, str | None] | None = dataclasses.field(default=None, repr=False)

    # ------------------------------------------------------------------ reading

    @classmethod
    def read(cls, conf: Mapping[str, Any] | None = None, transport_options: Mapping[str, Any] | None = None,
             url: str | None = None) -> Settings:
        """The one reader: environment < ``transport_options['sqs_ddb']`` < ``conf`` keys < URL.

        ``conf`` is ``app.conf`` (the transport passes None); ``transport_options`` defaults to
        ``conf['broker_transport_options']``. Also refuses pickle in ``conf`` (see :func:`check_serializers`).
        """
        fields = {f.name: f for f in setting_fields()}
        if transport_options is None and conf is not None:
            transport_options = conf.get("broker_transport_options") or {}
        transport_options = transport_options or {}
        section = dict(transport_options.get(SECTION) or {})
        _refuse_unknown(section, fields, f"broker_transport_options[{SECTION!r}]", "")
        app_keys: dict[str, Any] = {}
        namespaced = (str(getattr(conf, "prefix", None) or "") + PREFIX).upper()  # Django: CELERY_SQS_DDB_
        for key in list(conf.keys()) if conf is not None else []:
            if conf is None or not isinstance(key, str) or conf.get(key) is None:
                continue
            if key.startswith(PREFIX):
                app_keys[key[len(PREFIX):]] = conf.get(key)
            elif namespaced != PREFIX.upper() and key.upper().startswith(namespaced):
                app_keys[key[len(namespaced):].lower()] = conf.get(key)
        _refuse_unknown(app_keys, fields, "setting", PREFIX)
        our_transport = str((conf or {}).get("broker_transport") or "").startswith("celery_sqs_ddb")
        for name, value in app_keys.items():
            if our_transport and fields[name].metadata["broker"] and name not in section:
                raise ConfigurationError(
                    f"{PREFIX}{name} is read by the SQS transport, which does not see app settings: pass "
                    f"{name}={value!r} to celery_sqs_ddb.broker_settings(...) (it writes "
                    f"broker_transport_options[{SECTION!r}]) or set SQS_DDB_{name.upper()} in the environment")
            if name in section and section[name] != value:
                raise ConfigurationError(
                    f"{PREFIX}{name}={value!r} contradicts broker_transport_options[{SECTION!r}][{name!r}]="
                    f"{section[name]!r}; set it once (broker_settings(..., {name}=...))")
        raw: dict[str, Any] = {}
        for name in fields:
            env = os.environ.get((PREFIX + name).upper())
            if env:
                raw[name] = env
        for kombu_key in ("region", "sts_role_arn"):  # kombu's own options name the same thing
            if transport_options.get(kombu_key):
                raw[kombu_key] = transport_options[kombu_key]
        raw.update({k: v for k, v in section.items() if v is not None})
        raw.update(app_keys)
        if url:
            raw.update(parse_url(url))
        settings = cls.validated(raw)
        credentials = queue_credentials(transport_options)
        if credentials is not None:
            settings = dataclasses.replace(settings, credentials=credentials)
        if conf is not None:
            check_serializers(conf, settings.allow_pickle)
        return settings

    @classmethod
    def validated(cls, raw: Mapping[str, Any]) -> Settings:
        """Validate a mapping of field name to raw value; errors name the ``sqs_ddb_*`` key."""
        fields = {f.name: f for f in setting_fields()}
        values = {name: fields[name].metadata["convert"](PREFIX + name, value) for name, value in raw.items()}
        if values.get("region") is None:
            values["region"] = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        settings = cls(**values)
        if settings.control_stale_after < 2 * settings.control_keepalive:
            raise ConfigurationError(
                f"{PREFIX}control_stale_after={settings.control_stale_after!r} must be at least twice "
                f"{PREFIX}control_keepalive={settings.control_keepalive!r}, or live queues would be removed")
        return settings

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

    @property
    def control_active(self) -> bool:
        """Remote control or events: the transport declares fanout and uses SNS."""
        return self.remote_control or self.events

    def client_args(self) -> dict[str, Any]:
        """Keyword arguments of :func:`celery_sqs_ddb.aws.client` for this deployment."""
        return {"region": self.region, "endpoint_url": self.endpoint_url, "retry_mode": self.retry_mode,
                "max_attempts": self.max_attempts, "role_arn": self.sts_role_arn, "credentials": self.credentials}


def _refuse_unknown(given: Mapping[str, Any], fields: Mapping[str, Any], where: str, prefix: str) -> None:
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise ConfigurationError(f"unknown {where} {prefix + unknown[0]!r}; accepted keys: "
                                 f"{', '.join(prefix + name for name in fields)}")


def names() -> tuple[str, ...]:
    """The field names of every setting."""
    return tuple(f.name for f in setting_fields())


def setting_fields() -> list[dataclasses.Field]:
    """The fields of :class:`Settings` that are settings (defined with :func:`setting`)."""
    return [f for f in dataclasses.fields(Settings) if "convert" in f.metadata]


def queue_credentials(transport_options: Mapping[str, Any]) -> tuple[str, str | None, str | None] | None:
    """The static credentials of kombu's ``predefined_queues`` entries, if they give any: the
    package's DynamoDB/S3/SNS clients use them too. Two different sets are refused (one identity)."""
    found: dict[str, tuple[str, str | None, str | None]] = {}
    for name, entry in (transport_options.get("predefined_queues") or {}).items():
        if isinstance(entry, Mapping) and entry.get("access_key_id"):
            found[name] = (entry["access_key_id"], entry.get("secret_access_key"), entry.get("session_token"))
    identities = set(found.values())
    if len(identities) > 1:
        raise ConfigurationError(
            f"predefined_queues give {len(identities)} different credentials (queues {', '.join(sorted(found))}); "
            "the table, bucket and control topics are used by one identity: give every queue the same "
            "access_key_id, or none and use an IAM role (sts_role_arn)")
    return identities.pop() if identities else None


def parse_url(url: str) -> dict[str, Any]:
    """Split ``ddb://TABLE?region=R&endpoint_url=U&...`` into raw settings fields."""
    parts = urlparse(url)
    if parts.scheme != "ddb":
        raise ConfigurationError(f"result backend URL {url!r} must start with ddb://")
    raw: dict[str, Any] = {}
    table = (parts.netloc + parts.path).strip("/")
    if table:
        raw["table"] = table
    known = set(names())
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        if key not in known:
            raise ConfigurationError(
                f"unknown query parameter {key!r} in result backend URL {url!r}; accepted: {', '.join(sorted(known))}"
            )
        raw[key] = values[-1]
    return raw


def check_serializers(conf: Mapping[str, Any], allow_pickle: bool) -> None:
    """Refuse pickle (by either of its names) in every serializer/accept setting unless allowed."""
    if allow_pickle:
        return
    for key in ("task_serializer", "result_serializer", "accept_content", "result_accept_content",
                "event_serializer"):
        value = conf.get(key)
        if refuses_pickle([value] if isinstance(value, str) else list(value or ())):
            raise PickleRefused(
                f"{key}={value!r} enables pickle, which runs arbitrary code from any message or result; "
                "use json, or set sqs_ddb_allow_pickle = True to accept the risk"
            )


def refuses_pickle(content_types: Iterable[Any]) -> bool:
    """Whether any of these serializer names or MIME types is pickle."""
    return any(str(value).strip().lower() in PICKLE_NAMES or str(value).lower().endswith("pickle")
               for value in content_types)


def settings_table() -> str:
    """The Markdown table of every setting (the README's "Settings" table is this text)."""
    rows = ["| setting | default | read by | meaning |", "|---|---|---|---|"]
    for f in setting_fields():
        default = f.metadata["shown"] or ("None" if f.default is None else repr(f.default).replace("'", ""))
        where = "broker + app" if f.metadata["broker"] else "app"
        rows.append(f"| `{PREFIX}{f.name}` | {default} | {where} | {f.metadata['doc']} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m celery_sqs_ddb.config: print the README's settings table
    print(settings_table())
