"""A real worker that believes it runs on Fargate (fake metadata endpoint + ECS agent)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.fakes.ecs import TASK_ID, FakeEcs
from tests.support.stack import ROOT, effects_of
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def ecs():
    fake = FakeEcs(cpu=1.0)  # not this machine's CPU count, so the worker must have read it
    yield fake
    fake.stop()



def test_metadata_concurrency_and_scale_in_protection(stack, client_app, workers, ecs, tmp_path):
    env = stack.env(**ecs.env(), SQS_DDB_PROTECTION_MINUTES=1, SQS_DDB_PROTECTION_RENEW_SECONDS=2,
                    SQS_DDB_IDLE_GRACE=1, SQS_DDB_HEALTH_FILE=tmp_path / "health")
    # no -c and no -n: both come from ECS
    worker = workers(env, concurrency=0, set_name=False).wait_ready()
    assert "concurrency: 1 (prefork)" in worker.output()  # Limits.CPU = 1 vCPU
    assert "ECS task CPU limit 1.0 vCPU: concurrency 1" in worker.output()
    result = client_app.tasks["tests.effect"].delay("protected", 6)
    assert result.get(timeout=60) == "protected"
    assert stack.item(result.id)["worker"] == f"celery@{TASK_ID}"  # the status index names the task
    wait_until(lambda: any(not c[1]["ProtectionEnabled"] for c in ecs.protection_calls()), 20, "protection off")
    calls = ecs.protection_calls()
    enabled = [c for c in calls if c[1]["ProtectionEnabled"]]
    assert enabled and all(c[1]["ExpiresInMinutes"] == 1 for c in enabled)
    assert len(enabled) >= 2  # renewed while the 6 s task ran (renewal every 2 s in this test)
    first_off = next(t for t, body in calls if not body["ProtectionEnabled"])
    assert first_off >= enabled[-1][0]  # off only after the work ended


def test_agent_errors_do_not_stop_the_worker(stack, client_app, workers, tmp_path):
    fake = FakeEcs(cpu=1.0, fail_first=3)
    try:
        env = stack.env(**fake.env(), SQS_DDB_IDLE_GRACE=1, SQS_DDB_HEALTH_FILE=tmp_path / "health")
        worker = workers(env, concurrency=0, set_name=False).wait_ready()
        assert client_app.tasks["tests.effect"].delay("despite-errors", 5).get(timeout=60) == "despite-errors"
        assert client_app.tasks["tests.add"].delay(1, 1).get(timeout=30) == 2
        assert "scale-in protection on failed" in worker.output()
        assert any(c[1]["ProtectionEnabled"] for c in fake.protection_calls()[3:])  # retried until it worked
        assert worker.process.poll() is None
    finally:
        fake.stop()


def test_sigterm_drains_within_the_stop_timeout(stack_factory, workers, monkeypatch, ecs, tmp_path):
    from tests.support.stack import make_client_app

    effects = tmp_path / "effects.log"
    monkeypatch.setenv("SIDE_EFFECTS", str(effects))
    stack = stack_factory(visibility_timeout=120)
    app = make_client_app(stack, monkeypatch)
    fargate_env = stack.env(**ecs.env(), SIDE_EFFECTS=effects, REMAP_SIGTERM="SIGQUIT", SQS_DDB_STOP_TIMEOUT=20,
                            TEST_PREFETCH=4, SQS_DDB_HEALTH_FILE=tmp_path / "health")
    spot = workers(fargate_env, name="spot", concurrency=1).wait_ready()
    long = app.tasks["tests.effect"].delay("long", 25)  # longer than the 5 s drain window
    wait_until(lambda: "Task tests.effect[" in spot.output(), 30, "long task received")
    time.sleep(1)
    queued = [app.tasks["tests.effect"].delay(f"q{i}") for i in range(3)]
    wait_until(lambda: spot.output().count("Task tests.effect[") >= 4, 30, "queued tasks received by spot")
    spot.signal(signal.SIGTERM)  # Fargate scale-in or Spot interruption
    other = workers(stack.env(SIDE_EFFECTS=effects), name="other", concurrency=2).wait_ready()
    assert [r.get(timeout=60) for r in queued] == ["q0", "q1", "q2"]  # taken over at once
    assert spot.process.wait(40) is not None  # exited before ECS's SIGKILL (stopTimeout 20 s)
    assert long.get(timeout=90) == "long"  # cut off at the deadline, released, finished elsewhere
    for key in ("long", "q0", "q1", "q2"):
        assert len(effects_of(effects, key)) == 1, key  # nothing lost, nothing run twice
    assert stack.item(long.id)["worker"].startswith("other@")
    assert other.process.poll() is None


def test_exit_when_idle_exits_zero_after_the_queue_drains(stack, client_app, workers, tmp_path):
    results = [client_app.tasks["tests.add"].delay(i, i) for i in range(3)]
    worker = workers(stack.env(SQS_DDB_HEALTH_FILE=tmp_path / "health"), extra_args=("--exit-when-idle", "3"))
    worker.wait_ready()
    assert [r.get(timeout=60) for r in results] == [0, 2, 4]
    assert worker.process.wait(60) == 0
    assert "exit when idle" in worker.output()


def healthcheck(env):
    """Both probes: the CLI (imports the app) and the container's (does not); they must agree."""
    run = dict(env=dict(os.environ, PYTHONPATH=str(ROOT), **env), cwd=str(ROOT), capture_output=True, text=True,
               timeout=60)
    cli = subprocess.run([sys.executable, "-m", "celery", "-A", "tests.apps.basic", "sqs-ddb", "healthcheck"], **run)
    probe = subprocess.run([sys.executable, "-m", "celery_sqs_ddb.worker.health"], **run)
    assert (probe.returncode, probe.stdout.split(":")[0]) == (cli.returncode, cli.stdout.split(":")[0]), (cli, probe)
    return cli


def test_healthcheck_follows_the_consumer(stack, workers, tmp_path):
    env = stack.env(SQS_DDB_HEALTH_FILE=tmp_path / "health", SQS_DDB_HEALTH_INTERVAL=0.5)
    before = healthcheck(env)
    assert before.returncode == 1 and "does not exist" in before.stdout
    worker = workers(env).wait_ready()
    alive = healthcheck(env)
    assert alive.returncode == 0 and "healthy" in alive.stdout
    os.kill(worker.process.pid, signal.SIGSTOP)  # a hung worker: the file goes stale
    try:
        time.sleep(3.5)
        stuck = healthcheck(env)
        assert stuck.returncode == 1 and "stuck" in stuck.stdout
    finally:
        os.kill(worker.process.pid, signal.SIGCONT)
    worker.stop()
    after = healthcheck(env)
    assert after.returncode == 1


def test_json_logs_carry_task_fields(stack, client_app, workers, ecs, tmp_path):
    env = stack.env(**ecs.env(), SQS_DDB_HEALTH_FILE=tmp_path / "health")
    worker = workers(env, concurrency=1).wait_ready()
    result = client_app.tasks["tests.add"].delay(3, 4)
    assert result.get(timeout=30) == 7
    wait_until(lambda: result.id in worker.output() and "succeeded" in worker.output(), 10, "success logged")
    entries = []
    for line in worker.output().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    done = [e for e in entries if e.get("task_id") == result.id and e.get("state") == "SUCCESS"]
    assert done, entries[-5:]
    assert done[0]["task_name"] == "tests.add" and 0 <= done[0]["duration"] < 30  # seconds, of this run
    assert done[0]["task_arn"].endswith(TASK_ID) and done[0]["cluster"].endswith("cluster/workers")
