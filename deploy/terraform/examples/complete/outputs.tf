output "celery_settings" {
  description = "What to put into the Celery app (see README: Connect a Celery app)"
  value = {
    broker_settings = "celery_sqs_ddb.broker_settings({\"${module.queue.queue_name}\": \"${module.queue.queue_url}\"}, region=\"${var.region}\", dead_letter_queue=\"${module.queue.dead_letter_queue_url}\", s3_bucket=\"${module.table.payload_bucket_name}\", visibility_timeout=60, remote_control=True, control_topic_arn=\"${module.queue.control_topic_arn}\")"
    result_backend  = "ddb://${module.table.table_name}?region=${var.region}"
  }
}

output "queue_url" {
  description = "Jobs queue URL"
  value       = module.queue.queue_url
}

output "table_name" {
  description = "Results table"
  value       = module.table.table_name
}

output "log_group_name" {
  description = "Worker logs (CloudWatch Logs Insights: fields task_id, state, duration)"
  value       = module.worker.log_group_name
}

output "producer_policy_json" {
  description = "IAM policy of the web side (send tasks, read results, inspect), as JSON"
  value       = module.producer.policy_json
}

output "producer_policy_arn" {
  description = "Managed policy to attach to the web app's role"
  value       = module.producer.policy_arn
}
