variable "region" {
  description = "AWS region of everything"
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Prefix of every resource name"
  type        = string
  default     = "digits"
}

variable "image" {
  description = "Worker image built from the repository's Dockerfile (pushed to ECR)"
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the worker tasks"
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups for the worker tasks (egress only)"
  type        = list(string)
}

variable "use_spot" {
  description = "Run most tasks on FARGATE_SPOT (interruptions are drained like scale-in)"
  type        = bool
  default     = true
}

variable "beat" {
  description = "Run one celery beat service (the app's beat_schedule) next to the workers"
  type        = bool
  default     = false
}

variable "web_role_names" {
  description = "IAM roles of the web app to attach the producer policy to"
  type        = list(string)
  default     = []
}
