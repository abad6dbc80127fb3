################################################################################
# Policy
################################################################################

variable "name" {
  description = "Name of the IAM policy"
  type        = string
}

variable "create_policy" {
  description = "Create the managed policy (and attach it to role_names); false only renders policy_json"
  type        = bool
  default     = true
}

variable "queue_arns" {
  description = "Queues the producer sends to"
  type        = list(string)
}

variable "table_arn" {
  description = "Results table ARN (reads, QUEUED rows, revoke)"
  type        = string
}

variable "payload_bucket_arn" {
  description = "Bucket of large arguments (put) and results (get); null grants no S3 access"
  type        = string
  default     = null
}

variable "control_queue_prefix" {
  description = "The queue module's control_queue_prefix: lets the producer call inspect/control (reply queues); null grants nothing"
  type        = string
  default     = null
}

variable "control_topic_arns" {
  description = "The queue module's control/events topic ARNs (remote control from the web side)"
  type        = list(string)
  default     = []
}

variable "kms_key_arns" {
  description = "Customer-managed KMS keys of the queues/table/bucket, if any"
  type        = list(string)
  default     = []
}

################################################################################
# Attachments
################################################################################

variable "role_names" {
  description = "IAM roles to attach the policy to (the web app's task role, an EC2/Lambda role)"
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
  default     = {}
}
