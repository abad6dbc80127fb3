"""deploy/terraform checked without AWS: parse, conventions, checkov, and agreement with the code."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from celery_sqs_ddb import aws, schema
from celery_sqs_ddb.api import broker_settings
from deploy import simulate_autoscaling as sim
from deploy.hcl import MODULES, TERRAFORM, blocks, load, render_readme, resources, unquote

ROOT = TERRAFORM.parent.parent
MODULE_NAMES = ["queue", "table", "worker", "autoscaling", "producer", "beat"]
ALL_TF = sorted(TERRAFORM.rglob("*.tf"))


def test_every_tf_file_parses():
    assert len(ALL_TF) >= 20
    for path in ALL_TF:
        assert isinstance(load(path), dict), path


@pytest.mark.parametrize("module", MODULE_NAMES)
def test_module_layout_and_documented_interface(module):
    directory = MODULES / module
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
        assert (directory / name).exists(), f"{module}/{name}"
    for name, body in blocks(directory, "variable").items():
        assert body.get("description"), f"variable {module}.{name} has no description"
        assert body.get("type"), f"variable {module}.{name} has no type"
    outputs = blocks(directory, "output")
    assert outputs
    for name, body in outputs.items():
        assert body.get("description"), f"output {module}.{name} has no description"
    versions = (directory / "versions.tf").read_text()
    assert re.search(r'version\s*=\s*">= [0-9.]+, < [0-9.]+"', versions), "provider range must be pinned"
    assert (directory / "README.md").read_text() == render_readme(directory / "README.md", directory), (
        f"{module}/README.md inputs/outputs are stale: run python -m deploy.hcl")


def test_terraform_fmt():
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("terraform CLI not installed: `terraform fmt -check` skipped (python-hcl2 still parses every file)")
    result = subprocess.run([binary, "fmt", "-check", "-recursive", str(TERRAFORM)], capture_output=True, text=True)
    assert result.returncode == 0, f"not formatted: {result.stdout}"


def checkov_binary() -> str:
    candidates = [os.environ.get("CHECKOV"), str(ROOT / ".venv-checkov" / "bin" / "checkov"), shutil.which("checkov")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("checkov is not installed: `make test` installs it into .venv-checkov")


def test_checkov_passes_with_justified_skips_only():
    result = subprocess.run(
        [checkov_binary(), "-d", str(TERRAFORM), "--framework", "terraform", "--compact", "--quiet",
         "--download-external-modules", "false", "--skip-download", "-o", "cli"],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, BC_SKIP_MAPPING="TRUE"),
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    for path in ALL_TF:
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                assert re.search(r"checkov:skip=CKV2?_AWS_\d+: \S.{20,}", line), f"unjustified skip: {line.strip()}"


def table():
    return resources(MODULES / "table")[("aws_dynamodb_table", "this")]


def test_table_module_matches_schema():
    body = unquote(table())
    assert body["hash_key"] == schema.KEY_SCHEMA[0]["AttributeName"]
    assert body["billing_mode"] == "PAY_PER_REQUEST"
    assert [{"AttributeName": a["name"], "AttributeType": a["type"]} for a in body["attribute"]] == \
        schema.ATTRIBUTE_DEFINITIONS
    (index,) = body["global_secondary_index"]
    assert index["name"] == schema.STATUS_INDEX
    assert [index["hash_key"], index["range_key"]] == [k["AttributeName"] for k in schema.INDEX_KEY_SCHEMA]
    assert index["projection_type"] == "INCLUDE"
    assert index["non_key_attributes"] == list(schema.INDEX_PROJECTION)
    assert body["ttl"][0] == {"attribute_name": schema.TTL_ATTRIBUTE, "enabled": True}
    assert body["server_side_encryption"][0]["enabled"] is True
    assert blocks(MODULES / "table", "variable")["point_in_time_recovery"]["default"] is True
    request = schema.create_table_request("t")
    assert request["GlobalSecondaryIndexes"][0]["Projection"]["NonKeyAttributes"] == index["non_key_attributes"]


def test_queue_module_matches_broker_settings():
    variables = {k: v.get("default") for k, v in blocks(MODULES / "queue", "variable").items()}
    conf = broker_settings({"jobs.fifo": "https://sqs.eu-west-1.amazonaws.com/1/jobs.fifo"}, region="eu-west-1")
    options = conf["broker_transport_options"]
    assert variables["receive_wait_time_seconds"] == options["wait_time_seconds"] == 20
    assert variables["visibility_timeout_seconds"] == options["visibility_timeout"]
    assert variables["max_receive_count"] == 4
    assert variables["fifo"] is True
    queues = resources(MODULES / "queue")
    main, dlq = unquote(queues[("aws_sqs_queue", "this")]), unquote(queues[("aws_sqs_queue", "dlq")])
    assert "deadLetterTargetArn" in main["redrive_policy"] and "var.max_receive_count" in main["redrive_policy"]
    assert main["fifo_queue"] == dlq["fifo_queue"] == "${var.fifo}"  # a FIFO queue needs a FIFO DLQ
    assert main["content_based_deduplication"] is False  # MessageDeduplicationId = task id
    assert "sqs_managed_sse_enabled" in main and "kms_master_key_id" in main
    assert "messageGroup" in main["deduplication_scope"] and "perMessageGroupId" in main["fifo_throughput_limit"]
    assert ("aws_cloudwatch_metric_alarm", "dlq_depth") in queues
    assert ("aws_cloudwatch_metric_alarm", "oldest_message") in queues


def policy_statements(module: str, document_name: str) -> dict[str, tuple[set[str], bool]]:
    """Each statement of a module's policy document: its actions (``local.*`` lists resolved) and
    whether it is conditional (a ``dynamic`` block)."""
    locals_ = blocks(MODULES / module, "locals")
    document = unquote(resources(MODULES / module, "data")[("aws_iam_policy_document", document_name)])
    statements = [(statement, False) for statement in document.get("statement", [])]
    for dynamic in document.get("dynamic", []):
        for body in dynamic.values():
            statements.extend((content, True) for content in body["content"])
    out = {}
    for statement, conditional in statements:
        ref = statement["actions"]
        names = re.findall(r"local\.(\w+)", ref) if isinstance(ref, str) else []
        actions = {a for name in names for a in locals_[name]} if names else set(ref)
        out[statement["sid"]] = (actions, conditional)
    return out


def worker_policy_statements() -> dict[str, tuple[set[str], bool]]:
    return policy_statements("worker", "task")


def test_worker_role_grants_exactly_the_code_s_actions():
    statements = worker_policy_statements()
    # kms:* (sid Keys) only for customer-managed keys, s3:ListBucket (sid PayloadsMissingIs404) only
    # for S3's answer to a missing object: not APIs the code calls
    granted = {a for sid, (actions, _) in statements.items() if sid not in ("Keys", "PayloadsMissingIs404")
               for a in actions}
    needed = aws.iam_actions(aws.RUNTIME_ACTIONS) | aws.iam_actions(aws.CONTROL_ACTIONS)
    assert needed - granted == set(), f"the code calls actions the role lacks: {needed - granted}"
    assert granted - needed == set(), f"the role grants actions the code never calls: {granted - needed}"


def test_worker_role_may_list_the_payload_bucket_so_a_missing_claim_check_is_404():
    """Without s3:ListBucket S3 answers GetObject of a missing key with 403 AccessDenied, which the
    transport treats as a permission error (not dead-lettered) instead of a missing claim-check."""
    statements = worker_policy_statements()
    assert statements["PayloadsMissingIs404"] == ({"s3:ListBucket"}, True)  # only with a payload bucket
    document = unquote(resources(MODULES / "worker", "data")[("aws_iam_policy_document", "task")])
    (listing,) = [d["statement"]["content"] for d in document["dynamic"]
                  if d["statement"]["content"][0]["sid"] == "PayloadsMissingIs404"]
    assert listing[0]["resources"] == ["${statement.value}"]  # the bucket ARN, not its objects
    (objects,) = [d["statement"]["content"] for d in document["dynamic"]
                  if d["statement"]["content"][0]["sid"] == "Payloads"]
    assert objects[0]["resources"] == ["${statement.value}/*"]


def test_remote_control_permissions_exist_only_with_the_topics_and_only_on_control_queues():
    statements = worker_policy_statements()
    control = {sid: value for sid, value in statements.items() if "Control" in sid}
    assert set(control) == {"ControlQueues", "FindStaleControlQueues", "ControlTopics"}
    assert all(conditional for _, conditional in control.values())  # granted only when wired in
    assert {a for actions, _ in control.values() for a in actions} >= aws.iam_actions(aws.CONTROL_ACTIONS)
    elsewhere = {a for sid, (actions, _) in statements.items() if sid not in control for a in actions}
    assert not elsewhere & aws.iam_actions(aws.CONTROL_ACTIONS)
    worker = (MODULES / "worker" / "main.tf").read_text()
    assert 'var.control_queue_prefix, "-")}*"' in worker  # scoped to <name>-ctl-* queues


def test_queue_module_topics_match_the_code_s_names_and_are_encrypted():
    from celery_sqs_ddb.control import ControlOptions

    queue = MODULES / "queue"
    locals_ = blocks(queue, "locals")
    options = ControlOptions(namespace="${var.name}")
    assert locals_["control_queue_prefix"] == options.queue_prefix
    text = (queue / "main.tf").read_text()
    for kind in ("control", "events"):
        assert f'{kind} = "{options.topic_name(kind)}"' in text
    assert "length(var.name) <= 40" in text  # the namespace limit of sqs_ddb_control_namespace
    from celery_sqs_ddb.config import Settings

    Settings.read(None, {"sqs_ddb": {"control_namespace": "n" * 40}})
    with pytest.raises(ValueError, match="1 to 40"):
        Settings.read(None, {"sqs_ddb": {"control_namespace": "n" * 41}})
    topic = unquote(resources(queue)[("aws_sns_topic", "broadcast")])
    assert topic["kms_master_key_id"] == "${var.topic_kms_master_key_id}"
    assert blocks(queue, "variable")["topic_kms_master_key_id"]["default"] == "alias/aws/sns"
    assert blocks(queue, "variable")["remote_control"]["default"] is False  # off by default
    policy = unquote(resources(queue, "data")[("aws_iam_policy_document", "topic")])
    denies = {s["sid"]: s["condition"][0] for s in policy["statement"] if s.get("effect") == "Deny"}
    assert denies["OnlyControlQueuesSubscribe"]["values"] == ["sqs"]
    assert denies["OnlyThisAccountsControlQueues"]["values"][0].endswith(":${local.control_queue_prefix}*")
    environment = (queue / "outputs.tf").read_text()
    for key in ("SQS_DDB_REMOTE_CONTROL", "SQS_DDB_CONTROL_TOPIC_ARN", "SQS_DDB_EVENTS", "SQS_DDB_EVENTS_TOPIC_ARN",
                "SQS_DDB_CONTROL_NAMESPACE"):
        assert key in environment


def test_worker_module_drains_checks_health_and_has_no_static_keys():
    variables = blocks(MODULES / "worker", "variable")
    assert variables["stop_timeout"]["default"] == 120
    main = (MODULES / "worker" / "main.tf").read_text()
    assert '"-m", "celery_sqs_ddb.worker.health"' in main and "stopTimeout" in main and "REMAP_SIGTERM" in main
    assert "ignore_changes = [desired_count]" in main
    for path in ALL_TF:
        text = path.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{12,}|aws_secret_access_key|secret_key\s*=", text), path


def test_payload_expiry_outlives_queue_and_dead_letter_retention():
    expiry_days = blocks(MODULES / "table", "variable")["payload_expiry_days"]["default"]
    queue_seconds = blocks(MODULES / "queue", "variable")["message_retention_seconds"]["default"]
    dlq_seconds = unquote(resources(MODULES / "queue")[("aws_sqs_queue", "dlq")])["message_retention_seconds"]
    assert expiry_days * 86_400 >= queue_seconds + int(dlq_seconds)


def test_producer_policy_grants_exactly_the_producer_actions():
    statements = policy_statements("producer", "this")
    always = {a for actions, conditional in statements.values() if not conditional for a in actions}
    without_s3 = {k: v for k, v in aws.PRODUCER_ACTIONS.items() if k != "s3"}
    assert always == aws.iam_actions(without_s3)  # send + read, nothing a worker does
    assert statements["Payloads"] == (aws.iam_actions({"s3": aws.PRODUCER_ACTIONS["s3"]}), True)  # with a bucket
    assert not always & {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                         "ecs:UpdateTaskProtection"}
    assert statements["PayloadsMissingIs404"] == ({"s3:ListBucket"}, True)  # only with a payload bucket
    granted = {a for sid, (actions, _) in statements.items() if sid not in ("Keys", "PayloadsMissingIs404")
               for a in actions}
    needed = aws.iam_actions(aws.PRODUCER_ACTIONS) | aws.iam_actions(aws.CONTROL_ACTIONS) | aws.iam_actions(
        aws.PRODUCER_CONTROL_ACTIONS)
    assert granted == needed, (needed - granted, granted - needed)
    control = {sid for sid in statements if "Control" in sid}
    assert control == {"ControlQueues", "FindStaleControlQueues", "ControlTopics"}
    assert all(statements[sid][1] for sid in control | {"Payloads", "PayloadsMissingIs404"})  # topics / bucket
    assert statements["ControlQueues"][0] >= aws.iam_actions(aws.PRODUCER_CONTROL_ACTIONS)  # reply queues
    main = (MODULES / "producer" / "main.tf").read_text()
    assert 'var.control_queue_prefix, "-")}*"' in main  # scoped to <name>-ctl-* queues
    outputs = blocks(MODULES / "producer", "output")
    assert outputs["policy_json"]["value"] == "${data.aws_iam_policy_document.this.json}"
    attach = unquote(resources(MODULES / "producer")[("aws_iam_role_policy_attachment", "this")])
    assert "var.role_names" in attach["for_each"]


def test_beat_is_one_service_that_never_runs_twice_and_only_sends():
    beat = MODULES / "beat"
    service = unquote(resources(beat)[("aws_ecs_service", "this")])
    assert service["desired_count"] == 1 and "desired_count" not in blocks(beat, "variable")
    assert service["deployment_maximum_percent"] == 100  # the old beat stops before the new one starts
    assert service["deployment_minimum_healthy_percent"] == 0
    assert "lifecycle" not in service and "capacity_provider_strategy" not in service  # no Spot, no autoscaler
    main = (beat / "main.tf").read_text()
    assert '"beat", "--loglevel", "INFO", "--schedule", "/tmp/celerybeat-schedule"' in main
    assert "readonlyRootFilesystem = true" in main and 'containerPath = "/tmp"' in main
    (producer,) = blocks(beat, "module").values()
    assert producer["source"] == "../producer" and producer["role_names"] == ["${aws_iam_role.task.name}"]
    assert "UpdateTaskProtection" not in main and "aws_iam_role_policy\" \"task\"" not in main
    for block in load(TERRAFORM / "examples" / "complete" / "main.tf")["module"]:
        for name, body in unquote(block).items():
            if name == "autoscaling":
                assert "beat" not in json.dumps(body)  # nobody scales the beat service


SECRETS = {
    "DB_PASSWORD": "arn:aws:ssm:eu-west-1:123456789012:parameter/app/db-password",
    "API_TOKEN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:api-AbCdEf:token::",
    "API_USER": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:api-AbCdEf:user::",
}


@pytest.mark.parametrize("module", ["worker", "beat"])
def test_container_secrets_and_exactly_their_execution_role_permissions(module):
    directory = MODULES / module
    main = (directory / "main.tf").read_text()
    assert "secrets                = length(var.secrets) > 0 ? [for k, v in var.secrets : " \
           "{ name = k, valueFrom = v }] : null" in main
    statements = policy_statements(module, "secrets")
    assert statements == {"SsmParameters": ({"ssm:GetParameters"}, True),
                          "SecretsManager": ({"secretsmanager:GetSecretValue"}, True),
                          "SecretKeys": ({"kms:Decrypt"}, True)}
    document = unquote(resources(directory, "data")[("aws_iam_policy_document", "secrets")])
    assert document["count"] == "${length(var.secrets) > 0 ? 1 : 0}"  # no secrets: no policy at all
    attached = unquote(resources(directory)[("aws_iam_role_policy", "secrets")])
    assert attached["role"] == "${aws_iam_role.execution.id}"  # ECS reads secrets with the execution role
    assert blocks(directory, "variable")["secrets"]["default"] == {}


def terraform_console(tf: str, expression: str, tmp_path: Path, **variables: object) -> subprocess.CompletedProcess:
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("terraform CLI not installed: the secrets expressions are not evaluated")
    (tmp_path / "main.tf").write_text(tf)
    args = [binary, "console"] + [f"-var={k}={json.dumps(v)}" for k, v in variables.items()]
    return subprocess.run(args, input=expression, capture_output=True, text=True, cwd=tmp_path, timeout=120)


@pytest.mark.parametrize("module", ["worker", "beat"])
def test_secret_arns_evaluate_to_the_resources_iam_wants(module, tmp_path):
    """The module's own expressions, evaluated by ``terraform console`` (no provider needed)."""
    locals_ = blocks(MODULES / module, "locals")
    variable = blocks(MODULES / module, "variable")["secrets"]
    condition = variable["validation"][0]["condition"][2:-1]
    tf = ('variable "secrets" {\n  type = map(string)\n  validation {\n'
          f'    condition     = {condition}\n    error_message = "bad secret"\n  }}\n}}\n'
          f'locals {{\n  ssm_parameter_arns = {locals_["ssm_parameter_arns"][2:-1]}\n'
          f'  secret_arns = {locals_["secret_arns"][2:-1]}\n}}\n')
    done = terraform_console(tf, "jsonencode([sort(local.ssm_parameter_arns), sort(local.secret_arns)])\n", tmp_path,
                             secrets=SECRETS)
    assert done.returncode == 0, done.stderr
    ssm, secrets = json.loads(json.loads(done.stdout.strip().splitlines()[-1]))
    assert ssm == [SECRETS["DB_PASSWORD"]]
    assert secrets == ["arn:aws:secretsmanager:eu-west-1:123456789012:secret:api-AbCdEf"]  # json keys cut off
    refused = terraform_console(tf, "local.secret_arns\n", tmp_path, secrets={"X": "plain-text-password"})
    assert refused.returncode != 0 and "bad secret" in refused.stderr + refused.stdout


def test_example_wires_all_modules():
    modules = {}
    for block in load(TERRAFORM / "examples" / "complete" / "main.tf")["module"]:
        modules.update(unquote(block))
    assert {name: body["source"] for name, body in modules.items()} == {
        name: f"../../modules/{name}" for name in MODULE_NAMES}


# ------------------------------------------------------------------ autoscaling simulator

@pytest.fixture(scope="module")
def policy():
    return sim.Policy.from_hcl()


def test_policy_is_read_from_the_hcl(policy):
    assert policy.max_capacity == 20 and policy.min_capacity == 0  # examples/complete overrides
    assert policy.target == 60  # floor(120 s acceptable latency / 2 s per job)


def test_burst_scales_out_within_max_drains_in_predicted_time_and_returns_to_zero(policy):
    run = sim.simulate(policy, sim.burst(10_000), 180)
    assert max(run.running) == policy.max_capacity  # scales out under the burst ...
    assert max(run.desired) <= policy.max_capacity  # ... never beyond max
    assert run.done == pytest.approx(10_000)
    assert run.drained_at is not None
    assert run.drained_at <= sim.predicted_drain_minutes(policy, 10_000)
    assert run.running[-1] == policy.min_capacity == 0  # back to zero when idle


def test_steady_trickle_keeps_up_without_overshooting(policy):
    run = sim.simulate(policy, sim.trickle(2, 60), 180)
    needed = 2 * policy.seconds_per_job  # jobs/s x s/job
    steady = run.running[30:60]
    assert min(steady) >= needed and max(steady) <= 2 * needed
    assert max(run.backlog[30:60]) / (min(steady) * 60 / policy.seconds_per_job) * 60 <= \
        policy.acceptable_latency_seconds  # queue wait stays within the acceptable latency
    assert run.running[-1] == 0


def test_idle_stays_at_zero(policy):
    run = sim.simulate(policy, sim.idle(), 60)
    assert set(run.running) == {0}
