"""The DynamoDB table layout: the single source of truth for attribute names, keys and index.

``deploy/terraform/modules/table`` is tested against this module, and ``create-table``
builds the table from :func:`create_table_request`.

One item per task (partition key ``task_id``, a plain string). The status index is a
sparse global secondary index keyed by ``status_shard`` (``"<STATUS>#<n>"``, n in
0..shards-1, so one status is not one hot partition) and ``updated_at`` (ISO-8601 UTC),
projecting only what listing needs. Group and chord items share the table, keyed by the
group id, and stay out of the index.
"""

from __future__ import annotations

import zlib
from typing import Any

TASK_ID = "task_id"
STATUS = "status"
STATUS_SHARD = "status_shard"
UPDATED_AT = "updated_at"
TASK_NAME = "task_name"
QUEUE = "queue"
WORKER = "worker"
RETRIES = "retries"
CREATED_AT = "created_at"
STARTED_AT = "started_at"
DATE_DONE = "date_done"
RESULT = "result"
RESULT_S3 = "result_s3"
TRACEBACK = "traceback"
TRACEBACK_S3 = "traceback_s3"
CONTENT_TYPE = "content_type"
CHILDREN = "children"
GROUP_ID = "group_id"
PARENT_ID = "parent_id"
ARGS = "args"
KWARGS = "kwargs"
EXPIRES_AT = "expires_at"
#: The attempt that holds or last held the task (see :func:`attempt_key`): a claim needs a key
#: at least this high, so an older delivery never runs after a newer one started.
CLAIM_KEY = "claim_key"
#: The SQS message id of the delivery that holds the claim: another message with the same task id
#: and attempt (a duplicate publish) is refused, a redelivery of this one (higher key) takes over.
CLAIM_MESSAGE = "claim_msg"
#: The worker running the task's current attempt; removed by its RETRY or final write. A revoke
#: from outside leaves a task that has it alone (it is running: use terminate=True).
CLAIMED_BY = "claimed_by"
#: Incremented by every state write: a reader never reports an item older than one it saw.
VERSION = "v"
KIND = "kind"
GROUP_RESULT = "group_result"
#: On the chord's counter item (:func:`chord_key`): the parts that complete the chord (Celery's
#: ``set_chord_size``: a chain ending in a group counts each task of that group), when it differs
#: from the saved header's length.
CHORD_SIZE = "chord_size"
#: On the chord's counter item: the header parts counted so far.
CHORD_COUNT = "chord_count"
#: On a chord header part's item: the chord it was counted in (counted once, atomically with the count).
CHORD_COUNTED = "chord_counted"
#: On the chord's counter item: the callback was sent.
CHORD_FIRED = "chord_fired"

KIND_GROUP = "group"
KIND_CHORD = "chord"


def chord_key(group_id: str) -> str:
    """The key of the item that counts a chord's finished header parts.

    It is not the group's own item: that one holds the saved header (about 56 KB for 1,000 parts),
    and DynamoDB bills an update by the item's size, so counting there would cost each part
    ~110 write units (55 KB, doubled in a transaction) instead of 4.
    """
    return f"{group_id}#chord"

STATUS_INDEX = "status-index"
#: Attributes copied into the index (besides the table and index keys). Kept small: every
#: byte here is paid again on each index write.
INDEX_PROJECTION = (TASK_NAME, WORKER, EXPIRES_AT)
TTL_ATTRIBUTE = EXPIRES_AT

KEY_SCHEMA = [{"AttributeName": TASK_ID, "KeyType": "HASH"}]
INDEX_KEY_SCHEMA = [
    {"AttributeName": STATUS_SHARD, "KeyType": "HASH"},
    {"AttributeName": UPDATED_AT, "KeyType": "RANGE"},
]
ATTRIBUTE_DEFINITIONS = [
    {"AttributeName": TASK_ID, "AttributeType": "S"},
    {"AttributeName": STATUS_SHARD, "AttributeType": "S"},
    {"AttributeName": UPDATED_AT, "AttributeType": "S"},
]


#: Each part of an attempt key gets six decimal digits (receive counts and retries above that saturate).
_PART = 1_000_000
MAX_RECEIVES = _PART - 1


def attempt_key(nesting: int, retries: int, receives: int) -> int:
    """One number ordering deliveries of a task: replacement nesting, then retries, then SQS receives.

    ``Task.replace()`` sends the same id with a higher ``replaced_task_nesting`` (a new attempt),
    ``self.retry()`` a higher ``retries``; a redelivery of one message has a higher receive count.
    """
    return (_clamp(nesting) * _PART + _clamp(retries)) * _PART + _clamp(receives)


def _clamp(number: int) -> int:
    return max(0, min(int(number or 0), MAX_RECEIVES))


def attempt_of(key: int) -> tuple[int, int, int]:
    """The (nesting, retries, receives) of an :func:`attempt_key`."""
    rest, receives = divmod(int(key), _PART)
    nesting, retries = divmod(rest, _PART)
    return nesting, retries, receives


def shard_of(task_id: str, shards: int) -> int:
    """Stable shard number of a task id (crc32, so every process agrees)."""
    return zlib.crc32(task_id.encode("utf-8")) % shards


def status_shard(status: str, task_id: str, shards: int) -> str:
    """The index partition key of a task in a status."""
    return f"{status}#{shard_of(task_id, shards)}"


def create_table_request(table: str) -> dict[str, Any]:
    """Arguments of DynamoDB CreateTable: on-demand, status index, encryption at rest."""
    return {
        "TableName": table,
        "KeySchema": KEY_SCHEMA,
        "AttributeDefinitions": ATTRIBUTE_DEFINITIONS,
        "BillingMode": "PAY_PER_REQUEST",
        "GlobalSecondaryIndexes": [
            {
                "IndexName": STATUS_INDEX,
                "KeySchema": INDEX_KEY_SCHEMA,
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(INDEX_PROJECTION)},
            }
        ],
        "SSESpecification": {"Enabled": True},
    }
