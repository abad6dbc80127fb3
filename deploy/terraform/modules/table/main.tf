################################################################################
# Table
# Layout mirrors celery_sqs_ddb/schema.py (tests/unit/test_terraform.py checks it).
################################################################################

resource "aws_dynamodb_table" "this" {
  #checkov:skip=CKV_AWS_119: encryption at rest is always on; a customer-managed key is opt-in (var.kms_key_arn) because it adds KMS cost per request
  name                        = var.name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "task_id"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "task_id"
    type = "S"
  }

  attribute {
    name = "status_shard"
    type = "S"
  }

  attribute {
    name = "updated_at"
    type = "S"
  }

  global_secondary_index {
    name               = "status-index"
    hash_key           = "status_shard"
    range_key          = "updated_at"
    projection_type    = "INCLUDE"
    non_key_attributes = ["task_name", "worker", "expires_at"]
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = var.point_in_time_recovery
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }

  tags = var.tags
}

################################################################################
# Payload bucket
################################################################################

locals {
  bucket_name = coalesce(var.payload_bucket_name, "${var.name}-payloads")
}

resource "aws_s3_bucket" "payloads" {
  #checkov:skip=CKV_AWS_18: access logs of short-lived claim-check objects add cost and no audit value; enable at the account level if required
  #checkov:skip=CKV_AWS_144: payloads expire within days and are recreated by re-running tasks; cross-region replication is not worth its cost
  #checkov:skip=CKV_AWS_145: SSE-S3 is on; a customer-managed key is the caller's choice (bucket policy below denies unencrypted puts)
  #checkov:skip=CKV2_AWS_62: nothing consumes events of claim-check objects
  #checkov:skip=CKV_AWS_21: objects are written once and deleted after the ack or by the lifecycle rule; versioning would keep every payload
  count = var.create_payload_bucket ? 1 : 0

  bucket = local.bucket_name
  tags   = var.tags
}

resource "aws_s3_bucket_public_access_block" "payloads" {
  count = var.create_payload_bucket ? 1 : 0

  bucket                  = aws_s3_bucket.payloads[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "payloads" {
  count = var.create_payload_bucket ? 1 : 0

  bucket = aws_s3_bucket.payloads[0].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "payloads" {
  count = var.create_payload_bucket ? 1 : 0

  bucket = aws_s3_bucket.payloads[0].id

  rule {
    id     = "expire-payloads"
    status = "Enabled"

    filter {}

    expiration {
      days = var.payload_expiry_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "payloads" {
  count = var.create_payload_bucket ? 1 : 0

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.payloads[0].arn,
      "${aws_s3_bucket.payloads[0].arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "payloads" {
  count = var.create_payload_bucket ? 1 : 0

  bucket = aws_s3_bucket.payloads[0].id
  policy = data.aws_iam_policy_document.payloads[0].json
}
