################################################################################
# Queue, table, worker and autoscaling for example_project (digits classifier)
################################################################################

module "queue" {
  source = "../../modules/queue"

  name                       = "${var.name}-jobs"
  fifo                       = true
  visibility_timeout_seconds = 60
  remote_control             = true # celery inspect/control, revoke(terminate=True)
}

module "table" {
  source = "../../modules/table"

  name                = "${var.name}-results"
  payload_expiry_days = 18
}

module "worker" {
  source = "../../modules/worker"

  name               = "${var.name}-worker"
  image              = var.image
  app                = "example_project.tasks"
  cpu                = 2048
  memory             = 4096
  subnet_ids         = var.subnet_ids
  security_group_ids = var.security_group_ids

  queue_arns             = [module.queue.queue_arn]
  dead_letter_queue_arns = [module.queue.dead_letter_queue_arn]
  table_arn              = module.table.table_arn
  payload_bucket_arn     = module.table.payload_bucket_arn
  control_queue_prefix   = module.queue.control_queue_prefix
  control_topic_arns     = compact([module.queue.control_topic_arn, module.queue.events_topic_arn])

  capacity_provider_strategy = var.use_spot ? [
    { capacity_provider = "FARGATE", weight = 1, base = 1 },
    { capacity_provider = "FARGATE_SPOT", weight = 3, base = 0 },
  ] : [{ capacity_provider = "FARGATE", weight = 1, base = 0 }]

  environment = merge(module.queue.control_environment, {
    AWS_REGION        = var.region
    DEMO_QUEUE        = module.queue.queue_name
    DEMO_QUEUE_URL    = module.queue.queue_url
    DEMO_DLQ_URL      = module.queue.dead_letter_queue_url
    DEMO_TABLE        = module.table.table_name
    DEMO_BUCKET       = module.table.payload_bucket_name
    SQS_DDB_JSON_LOGS = "true"
  })
}

module "producer" {
  source = "../../modules/producer"

  # The web app's policy (send, read results, inspect): attach it to its role, or use policy_json.
  name                 = "${var.name}-web"
  queue_arns           = [module.queue.queue_arn]
  table_arn            = module.table.table_arn
  payload_bucket_arn   = module.table.payload_bucket_arn
  control_queue_prefix = module.queue.control_queue_prefix
  control_topic_arns   = compact([module.queue.control_topic_arn, module.queue.events_topic_arn])
  role_names           = var.web_role_names
}

module "beat" {
  source = "../../modules/beat"
  count  = var.beat ? 1 : 0

  name               = "${var.name}-beat"
  cluster_arn        = module.worker.cluster_arn
  image              = var.image
  app                = "example_project.tasks"
  subnet_ids         = var.subnet_ids
  security_group_ids = var.security_group_ids
  queue_arns         = [module.queue.queue_arn]
  table_arn          = module.table.table_arn
  payload_bucket_arn = module.table.payload_bucket_arn
  environment = {
    AWS_REGION     = var.region
    DEMO_QUEUE     = module.queue.queue_name
    DEMO_QUEUE_URL = module.queue.queue_url
    DEMO_TABLE     = module.table.table_name
    DEMO_BUCKET    = module.table.payload_bucket_name
  }
}

module "autoscaling" {
  source = "../../modules/autoscaling"

  cluster_name               = module.worker.cluster_name
  service_name               = module.worker.service_name
  queue_name                 = module.queue.queue_name
  min_capacity               = 0
  max_capacity               = 20
  acceptable_latency_seconds = 120
  seconds_per_job            = 2
}
