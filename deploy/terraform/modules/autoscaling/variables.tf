################################################################################
# Target
################################################################################

variable "cluster_name" {
  description = "ECS cluster of the worker service"
  type        = string
}

variable "service_name" {
  description = "ECS service of the workers"
  type        = string
}

variable "queue_name" {
  description = "SQS queue whose backlog drives scaling"
  type        = string
}

variable "min_capacity" {
  description = "Fewest tasks; 0 lets the service stop when idle"
  type        = number
  default     = 0

  validation {
    condition     = var.min_capacity >= 0
    error_message = "min_capacity is 0 or more."
  }
}

variable "max_capacity" {
  description = "Most tasks"
  type        = number
  default     = 20

  validation {
    condition     = var.max_capacity >= 1 && var.max_capacity <= 5000
    error_message = "max_capacity is 1 to 5000 (ECS tasks per service)."
  }
}

################################################################################
# Backlog per task (target tracking)
################################################################################

variable "acceptable_latency_seconds" {
  description = "How long a job may wait in the queue"
  type        = number
  default     = 300
}

variable "seconds_per_job" {
  description = "Average time one task (all its worker processes) takes per job"
  type        = number
  default     = 10

  validation {
    condition     = var.seconds_per_job > 0
    error_message = "seconds_per_job must be positive."
  }
}

variable "scale_out_cooldown" {
  description = "Seconds after a scale-out before the next"
  type        = number
  default     = 60
}

variable "scale_in_cooldown" {
  description = "Seconds after a scale-in before the next"
  type        = number
  default     = 300
}

################################################################################
# From and to zero (step scaling)
################################################################################

variable "from_zero_capacity" {
  description = "Tasks started when jobs arrive and none run (target tracking has no data at 0 tasks)"
  type        = number
  default     = 1
}

variable "idle_minutes_to_zero" {
  description = "Minutes with an empty queue (no visible, no in-flight messages) before scaling to min_capacity"
  type        = number
  default     = 15

  validation {
    condition     = var.idle_minutes_to_zero >= 1
    error_message = "idle_minutes_to_zero is at least 1."
  }
}

variable "tags" {
  description = "Tags for the alarms"
  type        = map(string)
  default     = {}
}
