data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  create_cluster = var.cluster_arn == null
  cluster_arn    = local.create_cluster ? aws_ecs_cluster.this[0].arn : var.cluster_arn
  cluster_name   = element(split("/", local.cluster_arn), length(split("/", local.cluster_arn)) - 1)
  uses_ec2       = length([for s in var.capacity_provider_strategy : s if !contains(["FARGATE", "FARGATE_SPOT"], s.capacity_provider)]) > 0
  command        = coalesce(var.command, ["celery", "-A", var.app, "worker", "--loglevel", "INFO"])

  # The AWS actions celery_sqs_ddb calls at run time (celery_sqs_ddb.aws.RUNTIME_ACTIONS, as IAM
  # actions: SQS batch calls are authorized by their single-message actions). A test keeps these
  # equal to the code's list, both ways.
  sqs_actions = [
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:ReceiveMessage",
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
    "s3:DeleteObject",
    "s3:GetObject",
    "s3:PutObject",
  ]
  s3_missing_is_404_actions = [
    "s3:ListBucket",
  ]
  ecs_actions = [
    "ecs:UpdateTaskProtection",
  ]
  # Remote control and events (celery_sqs_ddb.aws.CONTROL_ACTIONS), granted only with the queue
  # module's topics: each worker creates, subscribes and deletes its own <name>-ctl-* queue.
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

  # Secret environment variables: the execution role may read exactly these (a Secrets Manager
  # valueFrom may end in :json-key:version-stage:version-id; IAM wants the secret's own ARN).
  ssm_parameter_arns = [for arn in values(var.secrets) : arn if length(regexall("^arn:[^:]+:ssm:", arn)) > 0]
  secret_arns        = distinct([for arn in values(var.secrets) : join(":", slice(split(":", arn), 0, 7)) if length(regexall("^arn:[^:]+:secretsmanager:", arn)) > 0])

  environment = merge({
    # Celery's time-limited soft shutdown answers SIGQUIT; ECS sends SIGTERM.
    REMAP_SIGTERM        = "SIGQUIT"
    SQS_DDB_STOP_TIMEOUT = tostring(var.stop_timeout)
  }, var.environment)
}

################################################################################
# Cluster
################################################################################

resource "aws_ecs_cluster" "this" {
  count = local.create_cluster ? 1 : 0

  name = var.name

  # RunningTaskCount (ECS/ContainerInsights) is the denominator of the backlog-per-task metric.
  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = var.tags
}

################################################################################
# Task definition
################################################################################

resource "aws_cloudwatch_log_group" "this" {
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn

  tags = var.tags
}

resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  requires_compatibilities = local.uses_ec2 ? ["EC2"] : ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([{
    name                   = "worker"
    image                  = var.image
    essential              = true
    command                = local.command
    stopTimeout            = var.stop_timeout
    readonlyRootFilesystem = true
    environment            = [for k, v in local.environment : { name = k, value = v }]
    secrets                = length(var.secrets) > 0 ? [for k, v in var.secrets : { name = k, valueFrom = v }] : null
    mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
    linuxParameters        = { initProcessEnabled = true }
    resourceRequirements   = var.gpu_count > 0 ? [{ type = "GPU", value = tostring(var.gpu_count) }] : null
    healthCheck = {
      command     = ["CMD", "python", "-m", "celery_sqs_ddb.worker.health"] # the app is not imported
      interval    = 30
      timeout     = 10
      retries     = 3
      startPeriod = 60
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.this.name
        awslogs-region        = data.aws_region.current.name
        awslogs-stream-prefix = "worker"
      }
    }
  }])

  tags = var.tags
}

################################################################################
# Service
################################################################################

resource "aws_ecs_service" "this" {
  name                   = var.name
  cluster                = local.cluster_arn
  task_definition        = aws_ecs_task_definition.this.arn
  desired_count          = var.desired_count
  enable_execute_command = false
  propagate_tags         = "SERVICE"

  dynamic "capacity_provider_strategy" {
    for_each = var.capacity_provider_strategy
    content {
      capacity_provider = capacity_provider_strategy.value.capacity_provider
      weight            = capacity_provider_strategy.value.weight
      base              = capacity_provider_strategy.value.base
    }
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = var.security_group_ids
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  lifecycle {
    ignore_changes = [desired_count]
  }

  tags = var.tags
}

################################################################################
# Task role: exactly the calls the code makes, on this deployment's resources
################################################################################

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${data.aws_partition.current.partition}:ecs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:*"]
    }
  }
}

data "aws_iam_policy_document" "task" {
  statement {
    sid       = "Queues"
    actions   = local.sqs_actions
    resources = concat(var.queue_arns, var.dead_letter_queue_arns)
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

  # Not an API the code calls: with s3:ListBucket, S3 answers GetObject of a deleted or expired
  # claim-check object with 404 NoSuchKey (the message is dead-lettered with its reason) instead of
  # 403 AccessDenied (which reads as a permission error of the role and is not dead-lettered).
  dynamic "statement" {
    for_each = var.payload_bucket_arn == null ? [] : [var.payload_bucket_arn]
    content {
      sid       = "PayloadsMissingIs404"
      actions   = local.s3_missing_is_404_actions
      resources = [statement.value]
    }
  }

  statement {
    sid       = "ScaleInProtection"
    actions   = local.ecs_actions
    resources = ["arn:${data.aws_partition.current.partition}:ecs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:task/${local.cluster_name}/*"]
  }

  dynamic "statement" {
    for_each = var.control_queue_prefix == null ? [] : [local.control_queues_arn]
    content {
      sid       = "ControlQueues"
      actions   = concat(local.sqs_actions, local.control_sqs_actions)
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

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.assume.json

  tags = var.tags
}

resource "aws_iam_role_policy" "task" {
  name   = "celery-sqs-ddb"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

################################################################################
# Execution role: image pull, logs, the container's secrets
################################################################################

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.assume.json

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "secrets" {
  count = length(var.secrets) > 0 ? 1 : 0

  dynamic "statement" {
    for_each = length(local.ssm_parameter_arns) == 0 ? [] : [1]
    content {
      sid       = "SsmParameters"
      actions   = ["ssm:GetParameters"]
      resources = local.ssm_parameter_arns
    }
  }

  dynamic "statement" {
    for_each = length(local.secret_arns) == 0 ? [] : [1]
    content {
      sid       = "SecretsManager"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = local.secret_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.secrets_kms_key_arns) == 0 ? [] : [1]
    content {
      sid       = "SecretKeys"
      actions   = ["kms:Decrypt"]
      resources = var.secrets_kms_key_arns
    }
  }
}

resource "aws_iam_role_policy" "secrets" {
  count = length(var.secrets) > 0 ? 1 : 0

  name   = "container-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.secrets[0].json
}
