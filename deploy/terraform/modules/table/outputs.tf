################################################################################
# Table
################################################################################

output "table_name" {
  description = "Table name: result_backend = \"ddb://<table_name>?region=<region>\""
  value       = try(aws_dynamodb_table.this.name, null)
}

output "table_arn" {
  description = "Table ARN (the worker role gets the index too: <arn>/index/*)"
  value       = try(aws_dynamodb_table.this.arn, null)
}

################################################################################
# Payload bucket
################################################################################

output "payload_bucket_name" {
  description = "Bucket for sqs_ddb_s3_bucket / broker_settings(s3_bucket=...)"
  value       = try(aws_s3_bucket.payloads[0].id, null)
}

output "payload_bucket_arn" {
  description = "Bucket ARN"
  value       = try(aws_s3_bucket.payloads[0].arn, null)
}
