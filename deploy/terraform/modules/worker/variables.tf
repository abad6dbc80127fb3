################################################################################
# Cluster
################################################################################

variable "name" {
  description = "Name of the service, task family and roles"
  type        = string
}

variable "cluster_arn" {
  description = "Existing ECS cluster ARN; null creates one"
  type        = string
  default     = null
}

################################################################################
# Task definition
################################################################################

variable "image" {
  description = "Container image with the Celery app and celery_sqs_ddb installed"
  type        = string
}

variable "app" {
  description = "The -A argument of celery (module holding the Celery app)"
  type        = string
  default     = "example_project.tasks"
}

variable "command" {
  description = "Container command; null runs `celery -A <app> worker --loglevel INFO` (concurrency from the task CPU)"
  type        = list(string)
  default     = null
}

variable "cpu" {
  description = "Task CPU units (1024 = 1 vCPU); the worker runs one process per vCPU"
  type        = number
  default     = 1024
}

variable "memory" {
  description = "Task memory (MiB)"
  type        = number
  default     = 2048
}

variable "gpu_count" {
  description = "GPUs per task (needs an EC2 capacity provider with GPU instances; Fargate has no GPUs)"
  type        = number
  default     = 0

  validation {
    condition     = var.gpu_count >= 0 && var.gpu_count <= 8
    error_message = "gpu_count is 0 to 8."
  }
}

variable "stop_timeout" {
  description = "Seconds between SIGTERM and SIGKILL; the worker drains within it (sqs_ddb_stop_timeout)"
  type        = number
  default     = 120

  validation {
    condition     = var.stop_timeout >= 2 && var.stop_timeout <= 120
    error_message = "ECS stopTimeout is 2 to 120 seconds."
  }
}

variable "environment" {
  description = "Extra environment variables of the container (no secrets: use `secrets`; AWS access comes from the task role)"
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
  description = "CloudWatch Logs retention of the worker's JSON logs"
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

variable "desired_count" {
  description = "Initial task count; autoscaling owns it afterwards (ignored on later applies)"
  type        = number
  default     = 0
}

variable "capacity_provider_strategy" {
  description = "Capacity providers: FARGATE, FARGATE_SPOT, or an EC2 capacity provider name (GPU)"
  type = list(object({
    capacity_provider = string
    weight            = number
    base              = optional(number, 0)
  }))
  default = [{ capacity_provider = "FARGATE", weight = 1, base = 0 }]
}

variable "subnet_ids" {
  description = "Private subnets of the tasks (they need a route to SQS/DynamoDB/S3: NAT or VPC endpoints)"
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups of the tasks (egress to AWS APIs only; the worker listens on no port)"
  type        = list(string)
}

################################################################################
# Permissions (the resources the worker may touch)
################################################################################

variable "queue_arns" {
  description = "Queues the worker consumes and publishes to"
  type        = list(string)
}

variable "dead_letter_queue_arns" {
  description = "Dead-letter queues poison messages are moved to"
  type        = list(string)
  default     = []
}

variable "table_arn" {
  description = "Results table ARN"
  type        = string
}

variable "payload_bucket_arn" {
  description = "Bucket for large payloads; null grants no S3 access"
  type        = string
  default     = null
}

variable "control_queue_prefix" {
  description = "The queue module's control_queue_prefix: lets the worker create and delete its own remote-control queue; null grants nothing"
  type        = string
  default     = null
}

variable "control_topic_arns" {
  description = "The queue module's control/events topic ARNs (remote control, task events)"
  type        = list(string)
  default     = []
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
