################################################################################
# Policy
################################################################################

output "policy_json" {
  description = "The policy document (JSON), for an inline role policy or another tool"
  value       = data.aws_iam_policy_document.this.json
}

output "policy_arn" {
  description = "ARN of the managed policy (null with create_policy = false)"
  value       = try(aws_iam_policy.this[0].arn, null)
}

################################################################################
# Attachments
################################################################################

output "attached_role_names" {
  description = "Roles the policy is attached to"
  value       = sort(keys(aws_iam_role_policy_attachment.this))
}
