################################################################################
# Queue
################################################################################

output "queue_name" {
  description = "Queue name: the key of broker_settings(queues={name: url})"
  value       = try(aws_sqs_queue.this.name, null)
}

output "queue_url" {
  description = "Queue URL: the value of broker_settings(queues={name: url})"
  value       = try(aws_sqs_queue.this.url, null)
}

output "queue_arn" {
  description = "Queue ARN (for the worker role and autoscaling)"
  value       = try(aws_sqs_queue.this.arn, null)
}

################################################################################
# Dead-letter queue
################################################################################

output "dead_letter_queue_name" {
  description = "Dead-letter queue name"
  value       = try(aws_sqs_queue.dlq.name, null)
}

output "dead_letter_queue_url" {
  description = "Dead-letter queue URL: broker_settings(dead_letter_queue=...)"
  value       = try(aws_sqs_queue.dlq.url, null)
}

output "dead_letter_queue_arn" {
  description = "Dead-letter queue ARN"
  value       = try(aws_sqs_queue.dlq.arn, null)
}

################################################################################
# Remote control and events
################################################################################

output "control_topic_arn" {
  description = "SNS topic of remote control: broker_settings(control_topic_arn=...) / SQS_DDB_CONTROL_TOPIC_ARN (null when remote_control = false)"
  value       = try(aws_sns_topic.broadcast["control"].arn, null)
}

output "events_topic_arn" {
  description = "SNS topic of task events: broker_settings(events_topic_arn=...) / SQS_DDB_EVENTS_TOPIC_ARN (null when events = false)"
  value       = try(aws_sns_topic.broadcast["events"].arn, null)
}

output "control_queue_prefix" {
  description = "Name prefix of the per-worker control queues (for the worker module's control_queue_prefix); null when both are off"
  value       = length(local.topics) > 0 ? local.control_queue_prefix : null
}

output "control_environment" {
  description = "Environment for workers and clients (the worker module's environment) that turns remote control/events on with these topics"
  value = merge(
    length(local.topics) > 0 ? { SQS_DDB_CONTROL_NAMESPACE = var.name } : {},
    var.remote_control ? { SQS_DDB_REMOTE_CONTROL = "true", SQS_DDB_CONTROL_TOPIC_ARN = aws_sns_topic.broadcast["control"].arn } : {},
    var.events ? { SQS_DDB_EVENTS = "true", SQS_DDB_EVENTS_TOPIC_ARN = aws_sns_topic.broadcast["events"].arn } : {},
  )
}
