################################################################################
# Queue
################################################################################

variable "name" {
  description = "Queue name without the .fifo suffix (added when fifo = true)"
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,75}$", var.name))
    error_message = "SQS names are 1-80 characters of A-Z a-z 0-9 - _ (75 before the .fifo suffix)."
  }
}

variable "fifo" {
  description = "FIFO queue (celery_sqs_ddb gives each task its own message group, so FIFO still runs in parallel)"
  type        = bool
  default     = true
}

variable "high_throughput_fifo" {
  description = "FIFO high-throughput mode: deduplication_scope = messageGroup, fifo_throughput_limit = perMessageGroupId"
  type        = bool
  default     = true
}

variable "visibility_timeout_seconds" {
  description = "Visibility timeout; short is fine because the worker's heartbeat extends it while a task runs (must equal broker_settings(visibility_timeout=...))"
  type        = number
  default     = 60

  validation {
    condition     = var.visibility_timeout_seconds >= 0 && var.visibility_timeout_seconds <= 43200
    error_message = "SQS visibility timeout is 0 to 43200 seconds (12 hours)."
  }
}

variable "message_retention_seconds" {
  description = "How long an unprocessed message is kept"
  type        = number
  default     = 345600

  validation {
    condition     = var.message_retention_seconds >= 60 && var.message_retention_seconds <= 1209600
    error_message = "SQS retention is 60 to 1209600 seconds (14 days)."
  }
}

variable "receive_wait_time_seconds" {
  description = "Long polling wait (the worker asks for 20 s too)"
  type        = number
  default     = 20

  validation {
    condition     = var.receive_wait_time_seconds >= 0 && var.receive_wait_time_seconds <= 20
    error_message = "SQS long polling waits 0 to 20 seconds."
  }
}

variable "max_receive_count" {
  description = "Receives before SQS moves a message to the dead-letter queue"
  type        = number
  default     = 4

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000
    error_message = "maxReceiveCount is 1 to 1000."
  }
}

variable "kms_master_key_id" {
  description = "KMS key for SSE; null uses SQS-managed encryption (SSE-SQS)"
  type        = string
  default     = null
}

variable "alarm_actions" {
  description = "SNS topic ARNs notified by the DLQ-depth and oldest-message alarms"
  type        = list(string)
  default     = []
}

variable "oldest_message_alarm_seconds" {
  description = "Alarm when the oldest message on the queue is older than this"
  type        = number
  default     = 900
}

variable "remote_control" {
  description = "Create the SNS topic of celery inspect/control and broadcast revoke (celery_sqs_ddb remote control; one SQS queue per worker)"
  type        = bool
  default     = false
}

variable "events" {
  description = "Create the SNS topic of task events (celery events, Flower; one SQS queue per monitor)"
  type        = bool
  default     = false
}

variable "topic_kms_master_key_id" {
  description = "KMS key of the SNS topics (encryption at rest); the AWS-managed SNS key by default"
  type        = string
  default     = "alias/aws/sns"
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
  default     = {}
}
