################################################################################
# Queue
################################################################################

locals {
  suffix   = var.fifo ? ".fifo" : ""
  name     = "${var.name}${local.suffix}"
  dlq_name = "${var.name}-dlq${local.suffix}"
  sse_sqs  = var.kms_master_key_id == null

  # Remote control and events (celery_sqs_ddb.control): topics named <name>-control/-events; each
  # worker creates its own queue <name>-ctl-* at start and deletes it when it stops.
  control_queue_prefix = "${var.name}-ctl-"
  topics = merge(
    var.remote_control ? { control = "${var.name}-control" } : {},
    var.events ? { events = "${var.name}-events" } : {},
  )
}

resource "aws_sqs_queue" "this" {
  name                        = local.name
  fifo_queue                  = var.fifo
  content_based_deduplication = false
  deduplication_scope         = var.fifo && var.high_throughput_fifo ? "messageGroup" : null
  fifo_throughput_limit       = var.fifo && var.high_throughput_fifo ? "perMessageGroupId" : null
  visibility_timeout_seconds  = var.visibility_timeout_seconds
  message_retention_seconds   = var.message_retention_seconds
  receive_wait_time_seconds   = var.receive_wait_time_seconds
  max_message_size            = 1048576
  sqs_managed_sse_enabled     = local.sse_sqs ? true : null
  kms_master_key_id           = var.kms_master_key_id

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq.arn
    maxReceiveCount     = var.max_receive_count
  })

  tags = var.tags
}

################################################################################
# Dead-letter queue
################################################################################

resource "aws_sqs_queue" "dlq" {
  name                      = local.dlq_name
  fifo_queue                = var.fifo
  message_retention_seconds = 1209600
  receive_wait_time_seconds = var.receive_wait_time_seconds
  sqs_managed_sse_enabled   = local.sse_sqs ? true : null
  kms_master_key_id         = var.kms_master_key_id

  tags = var.tags
}

resource "aws_sqs_queue_redrive_allow_policy" "dlq" {
  queue_url = aws_sqs_queue.dlq.id

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.this.arn]
  })
}

################################################################################
# Remote control and events: SNS topics (broadcast) for per-worker SQS queues
################################################################################

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

resource "aws_sns_topic" "broadcast" {
  for_each = local.topics

  name              = each.value
  kms_master_key_id = var.topic_kms_master_key_id

  tags = var.tags

  lifecycle {
    precondition {
      condition     = length(var.name) <= 40
      error_message = "With remote_control or events, name is the control namespace (sqs_ddb_control_namespace): at most 40 characters, so worker queue names stay within SQS's 80."
    }
  }
}

# Who may use the topics: principals of this account (their IAM policies decide), and only SQS
# queues of this account named <name>-ctl-* may subscribe. Each worker's queue policy lets the
# topic deliver (set by the worker on the queue it creates, as the queue does not exist here).
data "aws_iam_policy_document" "topic" {
  for_each = local.topics

  statement {
    sid       = "ThisAccount"
    actions   = ["sns:Publish", "sns:Subscribe", "sns:Unsubscribe", "sns:ListSubscriptionsByTopic", "sns:GetTopicAttributes"]
    resources = [aws_sns_topic.broadcast[each.key].arn]

    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid       = "OnlyControlQueuesSubscribe"
    effect    = "Deny"
    actions   = ["sns:Subscribe"]
    resources = [aws_sns_topic.broadcast[each.key].arn]

    principals {
      type        = "AWS"
      identifiers = ["*"]
    }

    condition {
      test     = "StringNotEquals"
      variable = "sns:Protocol"
      values   = ["sqs"]
    }
  }

  statement {
    sid       = "OnlyThisAccountsControlQueues"
    effect    = "Deny"
    actions   = ["sns:Subscribe"]
    resources = [aws_sns_topic.broadcast[each.key].arn]

    principals {
      type        = "AWS"
      identifiers = ["*"]
    }

    condition {
      test     = "ArnNotLike"
      variable = "sns:Endpoint"
      values   = ["arn:${data.aws_partition.current.partition}:sqs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:${local.control_queue_prefix}*"]
    }
  }
}

resource "aws_sns_topic_policy" "broadcast" {
  for_each = local.topics

  arn    = aws_sns_topic.broadcast[each.key].arn
  policy = data.aws_iam_policy_document.topic[each.key].json
}

################################################################################
# Alarms
################################################################################

resource "aws_cloudwatch_metric_alarm" "dlq_depth" {
  alarm_name          = "${var.name}-dlq-not-empty"
  alarm_description   = "Messages in ${local.dlq_name}: poison messages or tasks that failed ${var.max_receive_count} deliveries"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dlq.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "oldest_message" {
  alarm_name          = "${var.name}-oldest-message"
  alarm_description   = "The oldest message on ${local.name} waited longer than ${var.oldest_message_alarm_seconds} s: workers are missing or too few"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = aws_sqs_queue.this.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  threshold           = var.oldest_message_alarm_seconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions

  tags = var.tags
}
