################################################################################
# Table
################################################################################

variable "name" {
  description = "DynamoDB table name (the TABLE of result_backend = \"ddb://TABLE?region=R\")"
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{3,255}$", var.name))
    error_message = "DynamoDB table names are 3-255 characters of A-Z a-z 0-9 _ - ."
  }
}

variable "deletion_protection" {
  description = "Refuse to delete the table"
  type        = bool
  default     = true
}

variable "point_in_time_recovery" {
  description = "Continuous backups (point-in-time recovery)"
  type        = bool
  default     = true
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for encryption at rest; null uses the AWS-owned key (encryption stays on)"
  type        = string
  default     = null
}

################################################################################
# Payload bucket
################################################################################

variable "create_payload_bucket" {
  description = "Create the S3 bucket for large task arguments and results (sqs_ddb_s3_bucket)"
  type        = bool
  default     = true
}

variable "payload_bucket_name" {
  description = "Bucket name; null derives it from the table name"
  type        = string
  default     = null
}

variable "payload_expiry_days" {
  description = "Delete payload objects after this many days: at least the queue's plus the DLQ's retention, so a waiting message keeps its claim-check body"
  type        = number
  default     = 18 # outlives the queue (4 days) and its dead-letter queue (14 days): a held message keeps its body

  validation {
    condition     = var.payload_expiry_days >= 1
    error_message = "S3 lifecycle expiration is at least 1 day."
  }
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
  default     = {}
}
