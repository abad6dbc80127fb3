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
