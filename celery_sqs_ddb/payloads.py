"""S3 claim-check: large task messages, results and tracebacks live in S3, the item or
message keeps a pointer ``s3://bucket/key``, and readers fetch it transparently.

Messages come from the queue, so a message's pointer is trusted only inside the configured
bucket and prefix (:meth:`PayloadStore.check`); anything else is a poison message. A result's
pointer comes from our own table item, so a reader without ``sqs_ddb_s3_bucket`` follows it
(:meth:`PayloadStore.for_pointer`) instead of reading ``None``.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from . import aws
from .config import Settings
from .exceptions import ClaimCheckMissing, UntrustedPointer

POINTER_PREFIX = "s3://"
#: S3's answers for a key that does not exist (404, NoSuchKey). Without s3:ListBucket on the bucket
#: S3 answers 403 AccessDenied instead, which stays a permission error (the worker role grants it).
_MISSING = ("NoSuchKey", "404", "NotFound")


class PayloadStore:
    """Put, get and delete payloads under ``prefix`` in one bucket (SSE on by default)."""

    def __init__(self, bucket: str, prefix: str, client_args: dict[str, Any]) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client_args = client_args

    @classmethod
    def for_settings(cls, settings: Settings, kind: str) -> PayloadStore:
        """The store of ``kind`` (``messages/`` or ``results/``) in ``sqs_ddb_s3_bucket``."""
        return cls(str(settings.s3_bucket), settings.s3_prefix + kind, settings.client_args())

    @classmethod
    def for_pointer(cls, settings: Settings, pointer: str) -> PayloadStore:
        """A store that can read ``pointer``'s bucket (a result written by a worker configured with
        a bucket, read by a client that is not)."""
        bucket, _ = split_pointer(pointer)
        return cls(bucket, "", settings.client_args())

    @property
    def client(self) -> Any:
        return aws.client("s3", **self._client_args)

    def put(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store ``data`` under ``prefix + name``; return the pointer."""
        key = f"{self.prefix}{name}"
        with aws.translated("s3", "PutObject", f"S3 bucket '{self.bucket}'", setting="sqs_ddb_s3_bucket"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
                                   ServerSideEncryption="AES256")
        return f"{POINTER_PREFIX}{self.bucket}/{key}"

    def check(self, pointer: str) -> None:
        """Refuse a pointer outside this store's bucket and prefix (:class:`UntrustedPointer`)."""
        bucket, key = split_pointer(pointer)
        if bucket != self.bucket or not key.startswith(self.prefix) or ".." in key.split("/"):
            raise UntrustedPointer(
                f"claim-check pointer {pointer!r} is outside s3://{self.bucket}/{self.prefix} "
                "(sqs_ddb_s3_bucket, sqs_ddb_s3_prefix); not read")

    def get(self, pointer: str) -> bytes:
        """Fetch a payload; a missing object raises :class:`ClaimCheckMissing`."""
        bucket, key = split_pointer(pointer)
        try:
            with aws.translated("s3", "GetObject", f"S3 bucket '{bucket}'", setting="sqs_ddb_s3_bucket"):
                return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if aws.error_code(exc) in _MISSING:
                raise ClaimCheckMissing(f"S3 object {pointer} no longer exists (deleted or expired)") from exc
            raise

    def delete(self, pointer: str) -> None:
        """Delete a payload (a missing object is not an error)."""
        bucket, key = split_pointer(pointer)
        with aws.translated("s3", "DeleteObject", f"S3 bucket '{bucket}'", setting="sqs_ddb_s3_bucket"):
            self.client.delete_object(Bucket=bucket, Key=key)


def split_pointer(pointer: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    if not isinstance(pointer, str) or not pointer.startswith(POINTER_PREFIX) \
            or "/" not in pointer[len(POINTER_PREFIX):]:
        raise UntrustedPointer(f"{pointer!r} is not an s3://bucket/key pointer")
    bucket, key = pointer[len(POINTER_PREFIX):].split("/", 1)
    return bucket, key
