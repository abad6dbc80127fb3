data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  cluster_name = element(split("/", var.cluster_arn), length(split("/", var.cluster_arn)) - 1)
  # The schedule file lives on the writable /tmp (the root filesystem is read-only); beat writes
  # no pid file unless detached.
  command     = coalesce(var.command, ["celery", "-A", var.app, "beat", "--loglevel", "INFO", "--schedule", "/tmp/celerybeat-schedule"])
  environment = var.environment

  # Secret environment variables: the execution role may read exactly these (a Secrets Manager
  # valueFrom may end in :json-key:version-stage:version-id; IAM wants the secret's own ARN).
  ssm_parameter_arns = [for arn in values(var.secrets) : arn if length(regexall("^arn:[^:]+:ssm:", arn)) > 0]
  secret_arns        = distinct([for arn in values(var.secrets) : join(":", slice(split(":", arn), 0, 7)) if length(regexall("^arn:[^:]+:secretsmanager:", arn)) > 0])
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
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([{
    name                   = "beat"
    image                  = var.image
    essential              = true
    command                = local.command
    stopTimeout            = var.stop_timeout
    readonlyRootFilesystem = true
    environment            = [for k, v in local.environment : { name = k, value = v }]
    secrets                = length(var.secrets) > 0 ? [for k, v in var.secrets : { name = k, valueFrom = v }] : null
    mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
    linuxParameters        = { initProcessEnabled = true }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.this.name
        awslogs-region        = data.aws_region.current.name
        awslogs-stream-prefix = "beat"
      }
    }
  }])

  tags = var.tags
}

################################################################################
# Service: exactly one beat, never two (no autoscaling; a deployment stops the old
# task before it starts the new one, so no tick is sent twice)
################################################################################

resource "aws_ecs_service" "this" {
  name                               = var.name
  cluster                            = var.cluster_arn
  task_definition                    = aws_ecs_task_definition.this.arn
  desired_count                      = 1
  deployment_maximum_percent         = 100
  deployment_minimum_healthy_percent = 0
  launch_type                        = "FARGATE"
  enable_execute_command             = false
  propagate_tags                     = "SERVICE"

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = var.security_group_ids
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  tags = var.tags
}

################################################################################
# Task role: a producer (send tasks), nothing else
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

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.assume.json

  tags = var.tags
}

module "producer" {
  source = "../producer"

  name               = "${var.name}-producer"
  queue_arns         = var.queue_arns
  table_arn          = var.table_arn
  payload_bucket_arn = var.payload_bucket_arn
  kms_key_arns       = var.kms_key_arns
  role_names         = [aws_iam_role.task.name]

  tags = var.tags
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
