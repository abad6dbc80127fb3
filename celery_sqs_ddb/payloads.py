"""S3 claim-check: large task messages, results and tracebacks live in S3, the item or
message keeps a pointer ``s3://bucket/key``, and readers fetch it transparently."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from . import aws
from .exceptions import ClaimCheckMissing

POINTER_PREFIX = "s3://"


class PayloadStore:
    """Put, get and delete payloads under ``prefix`` in one bucket (SSE on by default)."""

    def __init__(self, bucket: str, prefix: str, region: str | None, endpoint_url: str | None,
                 retry_mode: str = "standard", max_attempts: int = 5) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client_args = (region, endpoint_url, retry_mode, max_attempts)

    @property
    def client(self) -> Any:
        region, endpoint_url, retry_mode, max_attempts = self._client_args
        return aws.client("s3", region, endpoint_url, retry_mode, max_attempts)

    def put(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store ``data`` under ``prefix + name``; return the pointer."""
        key = f"{self.prefix}{name}"
        with aws.translated("s3", "PutObject", f"S3 bucket '{self.bucket}'", setting="sqs_ddb_s3_bucket"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
                                   ServerSideEncryption="AES256")
        return f"{POINTER_PREFIX}{self.bucket}/{key}"

    def get(self, pointer: str) -> bytes:
        """Fetch a payload; a missing object raises :class:`ClaimCheckMissing`."""
        bucket, key = split_pointer(pointer)
        try:
            with aws.translated("s3", "GetObject", f"S3 bucket '{bucket}'", setting="sqs_ddb_s3_bucket"):
                return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if aws.error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise ClaimCheckMissing(f"S3 object {pointer} no longer exists (deleted or expired)") from exc
            raise

    def delete(self, pointer: str) -> None:
        """Delete a payload (a missing object is not an error)."""
        bucket, key = split_pointer(pointer)
        with aws.translated("s3", "DeleteObject", f"S3 bucket '{bucket}'", setting="sqs_ddb_s3_bucket"):
            self.client.delete_object(Bucket=bucket, Key=key)


def split_pointer(pointer: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    if not pointer.startswith(POINTER_PREFIX) or "/" not in pointer[len(POINTER_PREFIX):]:
        raise ClaimCheckMissing(f"{pointer!r} is not an s3://bucket/key pointer")
    bucket, key = pointer[len(POINTER_PREFIX):].split("/", 1)
    return bucket, key
