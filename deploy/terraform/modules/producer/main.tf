data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  # The AWS actions a process that sends tasks and reads results calls (a Django/Flask web app,
  # celery beat, a submit script): celery_sqs_ddb.aws.PRODUCER_ACTIONS as IAM actions (SQS batch
  # calls are authorized by their single-message actions). A test keeps these equal to the code's
  # list, and an integration test counts a Django process's calls against that list.
  sqs_actions = [
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:SendMessage",
  ]
  dynamodb_actions = [
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:Query",
    "dynamodb:UpdateItem",
  ]
  s3_actions = [
    "s3:GetObject",
    "s3:PutObject",
  ]
  # Remote control from this side (celery inspect/control, revoke(terminate=True)): the client
  # creates a reply queue <name>-ctl-reply-*, publishes to the control topic, reads its replies
  # and deletes the queue (celery_sqs_ddb.aws.CONTROL_ACTIONS + PRODUCER_CONTROL_ACTIONS).
  control_reply_actions = [
    "sqs:DeleteMessage",
    "sqs:ReceiveMessage",
  ]
  control_sqs_actions = [
    "sqs:CreateQueue",
    "sqs:DeleteQueue",
    "sqs:ListQueueTags",
    "sqs:SetQueueAttributes",
    "sqs:TagQueue",
  ]
  control_list_actions = [
    "sqs:ListQueues",
  ]
  control_sns_actions = [
    "sns:ListSubscriptionsByTopic",
    "sns:Publish",
    "sns:Subscribe",
    "sns:Unsubscribe",
  ]
  control_queues_arn = "arn:${data.aws_partition.current.partition}:sqs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:${coalesce(var.control_queue_prefix, "-")}*"
}

################################################################################
# Policy: exactly the calls a producer makes, on this deployment's resources
################################################################################

data "aws_iam_policy_document" "this" {
  statement {
    sid       = "Queues"
    actions   = local.sqs_actions
    resources = var.queue_arns
  }

  statement {
    sid       = "Results"
    actions   = local.dynamodb_actions
    resources = [var.table_arn, "${var.table_arn}/index/*"]
  }

  dynamic "statement" {
    for_each = var.payload_bucket_arn == null ? [] : [var.payload_bucket_arn]
    content {
      sid       = "Payloads"
      actions   = local.s3_actions
      resources = ["${statement.value}/*"]
    }
  }

  # Not a call the code makes: with s3:ListBucket S3 answers a missing (expired) large result
  # with 404 NoSuchKey, which the client reports as such, instead of 403.
  dynamic "statement" {
    for_each = var.payload_bucket_arn == null ? [] : [var.payload_bucket_arn]
    content {
      sid       = "PayloadsMissingIs404"
      actions   = ["s3:ListBucket"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.control_queue_prefix == null ? [] : [local.control_queues_arn]
    content {
      sid       = "ControlQueues"
      actions   = concat(local.sqs_actions, local.control_reply_actions, local.control_sqs_actions)
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.control_queue_prefix == null ? [] : [1]
    content {
      sid       = "FindStaleControlQueues"
      actions   = local.control_list_actions
      resources = ["*"] # ListQueues has no resource-level permission; it only lists names
    }
  }

  dynamic "statement" {
    for_each = length(var.control_topic_arns) == 0 ? [] : [1]
    content {
      sid       = "ControlTopics"
      actions   = local.control_sns_actions
      resources = var.control_topic_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.kms_key_arns) == 0 ? [] : [1]
    content {
      sid       = "Keys"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = var.kms_key_arns
    }
  }
}

resource "aws_iam_policy" "this" {
  count = var.create_policy ? 1 : 0

  name        = var.name
  description = "celery_sqs_ddb producer: send tasks, read results (web app, celery beat)"
  policy      = data.aws_iam_policy_document.this.json

  tags = var.tags
}

################################################################################
# Attachments: the roles of the web app, beat, scripts
################################################################################

resource "aws_iam_role_policy_attachment" "this" {
  for_each = var.create_policy ? toset(var.role_names) : toset([])

  role       = each.value
  policy_arn = aws_iam_policy.this[0].arn
}
