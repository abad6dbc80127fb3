################################################################################
# Target
################################################################################

locals {
  resource_id = "service/${var.cluster_name}/${var.service_name}"
  # Jobs one task can hold in backlog and still start each within the acceptable latency.
  target_backlog_per_task = max(1, floor(var.acceptable_latency_seconds / var.seconds_per_job))
}

resource "aws_appautoscaling_target" "this" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = local.resource_id
  min_capacity       = var.min_capacity
  max_capacity       = var.max_capacity
}

################################################################################
# Backlog per task (target tracking)
# (visible + in-flight messages) / running tasks, tracked at target_backlog_per_task.
################################################################################

resource "aws_appautoscaling_policy" "backlog" {
  name               = "${var.service_name}-backlog-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension
  resource_id        = aws_appautoscaling_target.this.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = local.target_backlog_per_task
    scale_out_cooldown = var.scale_out_cooldown
    scale_in_cooldown  = var.scale_in_cooldown

    customized_metric_specification {
      metrics {
        id          = "visible"
        return_data = false

        metric_stat {
          stat = "Sum"

          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesVisible"

            dimensions {
              name  = "QueueName"
              value = var.queue_name
            }
          }
        }
      }

      metrics {
        id          = "inflight"
        return_data = false

        metric_stat {
          stat = "Sum"

          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesNotVisible"

            dimensions {
              name  = "QueueName"
              value = var.queue_name
            }
          }
        }
      }

      metrics {
        id          = "tasks"
        return_data = false

        metric_stat {
          stat = "Average"

          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "RunningTaskCount"

            dimensions {
              name  = "ClusterName"
              value = var.cluster_name
            }

            dimensions {
              name  = "ServiceName"
              value = var.service_name
            }
          }
        }
      }

      metrics {
        id          = "backlog_per_task"
        label       = "(visible + in-flight) / running tasks"
        expression  = "(visible + inflight) / tasks"
        return_data = true
      }
    }
  }
}

################################################################################
# From zero: jobs waiting and no task running
################################################################################

resource "aws_appautoscaling_policy" "from_zero" {
  name               = "${var.service_name}-from-zero"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension
  resource_id        = aws_appautoscaling_target.this.resource_id

  step_scaling_policy_configuration {
    adjustment_type         = "ExactCapacity"
    cooldown                = var.scale_out_cooldown
    metric_aggregation_type = "Maximum"

    step_adjustment {
      metric_interval_lower_bound = 0
      scaling_adjustment          = var.from_zero_capacity
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "from_zero" {
  alarm_name          = "${var.service_name}-jobs-waiting-no-workers"
  alarm_description   = "Messages on ${var.queue_name} and no running task: start ${var.from_zero_capacity}"
  comparison_operator = "GreaterThanOrEqualToThreshold"
  evaluation_periods  = 1
  threshold           = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_appautoscaling_policy.from_zero.arn]

  metric_query {
    id          = "waiting_without_workers"
    expression  = "IF(FILL(tasks, 0) == 0 AND visible > 0, 1, 0)"
    return_data = true
  }

  metric_query {
    id = "visible"

    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesVisible"
      period      = 60
      stat        = "Maximum"
      dimensions  = { QueueName = var.queue_name }
    }
  }

  metric_query {
    id = "tasks"

    metric {
      namespace   = "ECS/ContainerInsights"
      metric_name = "RunningTaskCount"
      period      = 60
      stat        = "Average"
      dimensions  = { ClusterName = var.cluster_name, ServiceName = var.service_name }
    }
  }

  tags = var.tags
}

################################################################################
# To zero: the queue has been empty (nothing visible, nothing in flight) for a while
################################################################################

resource "aws_appautoscaling_policy" "to_zero" {
  name               = "${var.service_name}-to-zero"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension
  resource_id        = aws_appautoscaling_target.this.resource_id

  step_scaling_policy_configuration {
    adjustment_type         = "ExactCapacity"
    cooldown                = var.scale_in_cooldown
    metric_aggregation_type = "Maximum"

    step_adjustment {
      metric_interval_upper_bound = 0
      scaling_adjustment          = var.min_capacity
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "to_zero" {
  alarm_name          = "${var.service_name}-queue-idle"
  alarm_description   = "${var.queue_name} empty for ${var.idle_minutes_to_zero} min: scale to ${var.min_capacity}"
  comparison_operator = "LessThanOrEqualToThreshold"
  evaluation_periods  = var.idle_minutes_to_zero
  threshold           = 0
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_appautoscaling_policy.to_zero.arn]

  metric_query {
    id          = "backlog"
    expression  = "visible + inflight"
    return_data = true
  }

  metric_query {
    id = "visible"

    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesVisible"
      period      = 60
      stat        = "Maximum"
      dimensions  = { QueueName = var.queue_name }
    }
  }

  metric_query {
    id = "inflight"

    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesNotVisible"
      period      = 60
      stat        = "Maximum"
      dimensions  = { QueueName = var.queue_name }
    }
  }

  tags = var.tags
}
