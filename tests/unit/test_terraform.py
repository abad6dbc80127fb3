"""deploy/terraform checked without AWS: parse, conventions, checkov, and agreement with the code."""

from __future__ import annotations

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
MODULE_NAMES = ["queue", "table", "worker", "autoscaling"]
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


def worker_policy_statements() -> dict[str, tuple[set[str], bool]]:
    """Each statement of the worker's task policy: its actions (``local.*`` lists resolved) and
    whether it is conditional (a ``dynamic`` block)."""
    locals_ = blocks(MODULES / "worker", "locals")
    document = unquote(resources(MODULES / "worker", "data")[("aws_iam_policy_document", "task")])
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


def test_worker_role_grants_exactly_the_code_s_actions():
    statements = worker_policy_statements()
    granted = {a for sid, (actions, _) in statements.items() if sid != "Keys" for a in actions}
    # kms:* (sid Keys) only for customer-managed keys: not an API the code calls
    needed = aws.iam_actions(aws.RUNTIME_ACTIONS) | aws.iam_actions(aws.CONTROL_ACTIONS)
    assert needed - granted == set(), f"the code calls actions the role lacks: {needed - granted}"
    assert granted - needed == set(), f"the role grants actions the code never calls: {granted - needed}"


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
    assert '"sqs-ddb", "healthcheck"' in main and "stopTimeout" in main and "REMAP_SIGTERM" in main
    assert "ignore_changes = [desired_count]" in main
    for path in ALL_TF:
        text = path.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{12,}|aws_secret_access_key|secret_key\s*=", text), path


def test_example_wires_all_four_modules():
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
