################################################################################
# Task definition
################################################################################

output "task_definition_arn" {
  description = "Task definition ARN"
  value       = try(aws_ecs_task_definition.this.arn, null)
}

output "log_group_name" {
  description = "CloudWatch Logs group of beat"
  value       = try(aws_cloudwatch_log_group.this.name, null)
}

################################################################################
# Service
################################################################################

output "service_name" {
  description = "ECS service name (desired count 1; do not attach autoscaling)"
  value       = try(aws_ecs_service.this.name, null)
}

################################################################################
# Roles
################################################################################

output "task_role_arn" {
  description = "Task role ARN (the producer policy: send tasks, no receive)"
  value       = try(aws_iam_role.task.arn, null)
}

output "execution_role_arn" {
  description = "Execution role ARN (image pull, logs, the container's secrets)"
  value       = try(aws_iam_role.execution.arn, null)
}
