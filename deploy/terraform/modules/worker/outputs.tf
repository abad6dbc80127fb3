################################################################################
# Cluster
################################################################################

output "cluster_arn" {
  description = "ECS cluster ARN"
  value       = local.cluster_arn
}

output "cluster_name" {
  description = "ECS cluster name (for autoscaling)"
  value       = local.cluster_name
}

################################################################################
# Service
################################################################################

output "service_name" {
  description = "ECS service name (for autoscaling)"
  value       = try(aws_ecs_service.this.name, null)
}

output "task_definition_arn" {
  description = "Task definition ARN"
  value       = try(aws_ecs_task_definition.this.arn, null)
}

################################################################################
# Roles
################################################################################

output "task_role_arn" {
  description = "Task role ARN (the worker's AWS identity; no static keys)"
  value       = try(aws_iam_role.task.arn, null)
}

output "execution_role_arn" {
  description = "Execution role ARN (image pull, logs, the container's secrets)"
  value       = try(aws_iam_role.execution.arn, null)
}

output "log_group_name" {
  description = "CloudWatch Logs group of the worker (one JSON object per line)"
  value       = try(aws_cloudwatch_log_group.this.name, null)
}
