################################################################################
# Task definition
################################################################################

variable "name" {
  description = "Name of the service, task family and roles"
  type        = string
}

variable "cluster_arn" {
  description = "ECS cluster ARN (the worker module's cluster_arn)"
  type        = string
}

variable "image" {
  description = "Container image with the Celery app (and its beat_schedule) and celery_sqs_ddb installed"
  type        = string
}

variable "app" {
  description = "The -A argument of celery (module holding the Celery app)"
  type        = string
  default     = "example_project.tasks"
}

variable "command" {
  description = "Container command; null runs `celery -A <app> beat --loglevel INFO --schedule /tmp/celerybeat-schedule`"
  type        = list(string)
  default     = null
}

variable "cpu" {
  description = "Task CPU units (beat only sends messages: the smallest Fargate size is enough)"
  type        = number
  default     = 256
}

variable "memory" {
  description = "Task memory (MiB)"
  type        = number
  default     = 512
}

variable "stop_timeout" {
  description = "Seconds between SIGTERM and SIGKILL (beat saves its schedule and exits at once)"
  type        = number
  default     = 30

  validation {
    condition     = var.stop_timeout >= 2 && var.stop_timeout <= 120
    error_message = "ECS stopTimeout is 2 to 120 seconds."
  }
}

variable "environment" {
  description = "Environment variables of the container (the same settings as the workers'; no secrets: use `secrets`)"
  type        = map(string)
  default     = {}
}

variable "secrets" {
  description = "Secret environment variables: name => ARN of an SSM parameter or a Secrets Manager secret (optionally with :json-key::); the execution role may read exactly these"
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for arn in values(var.secrets) : can(regex("^arn:aws[a-z-]*:(ssm|secretsmanager):", arn))])
    error_message = "Each secret is the ARN of an SSM parameter (arn:aws:ssm:...) or a Secrets Manager secret (arn:aws:secretsmanager:...)."
  }
}

variable "secrets_kms_key_arns" {
  description = "Customer-managed KMS keys of the secrets, if any (the execution role decrypts with them)"
  type        = list(string)
  default     = []
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention of beat's logs"
  type        = number
  default     = 365
}

variable "log_kms_key_arn" {
  description = "KMS key for the log group; null uses CloudWatch Logs' default encryption"
  type        = string
  default     = null
}

################################################################################
# Service
################################################################################

variable "subnet_ids" {
  description = "Private subnets of the task (it needs a route to SQS/DynamoDB/S3: NAT or VPC endpoints)"
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups of the task (egress to AWS APIs only; beat listens on no port)"
  type        = list(string)
}

################################################################################
# Permissions (the producer module's policy on the task role)
################################################################################

variable "queue_arns" {
  description = "Queues the scheduled tasks are sent to"
  type        = list(string)
}

variable "table_arn" {
  description = "Results table ARN (QUEUED rows when sqs_ddb_track_queued is on)"
  type        = string
}

variable "payload_bucket_arn" {
  description = "Bucket for large arguments; null grants no S3 access"
  type        = string
  default     = null
}

variable "kms_key_arns" {
  description = "Customer-managed KMS keys of the queues/table/bucket, if any"
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
  default     = {}
}
