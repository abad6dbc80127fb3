################################################################################
# Target
################################################################################

output "target_backlog_per_task" {
  description = "Backlog per task that target tracking holds: floor(acceptable_latency_seconds / seconds_per_job)"
  value       = local.target_backlog_per_task
}

output "resource_id" {
  description = "Application Auto Scaling resource id of the service"
  value       = try(aws_appautoscaling_target.this.resource_id, null)
}

################################################################################
# Policies
################################################################################

output "policy_arns" {
  description = "Scaling policy ARNs (backlog, from_zero, to_zero)"
  value = {
    backlog   = try(aws_appautoscaling_policy.backlog.arn, null)
    from_zero = try(aws_appautoscaling_policy.from_zero.arn, null)
    to_zero   = try(aws_appautoscaling_policy.to_zero.arn, null)
  }
}
