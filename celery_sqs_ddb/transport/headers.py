"""Names the transport adds to messages, and SQS limits it works within."""

from __future__ import annotations

#: Task header: SQS's ApproximateReceiveCount of this delivery (1 = first).
RECEIVE_COUNT_HEADER = "sqs_receive_count"
#: Task header: the SQS MessageId of this delivery (the claim tells duplicates from redeliveries).
MESSAGE_ID_HEADER = "sqs_message_id"
#: Body of a message whose real body is in S3: ``{"sqs_ddb_claim_check": "s3://bucket/key"}``.
CLAIM_CHECK_KEY = "sqs_ddb_claim_check"
#: Message attributes of a message moved to the dead-letter queue.
REASON_ATTRIBUTE = "sqs_ddb_reason"
SOURCE_ATTRIBUTE = "sqs_ddb_source_queue"
#: Entries per SQS batch call, and the total size of one SendMessageBatch.
BATCH = 10
MAX_BATCH_BYTES = 1_048_576 - 16_384
#: SQS caps a message's visibility at 12 hours from its receipt.
MAX_VISIBILITY_SECONDS = 12 * 3600
#: ChangeMessageVisibility failures that mean the receipt is gone (deleted, or received again).
GONE_CODES = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue"})
