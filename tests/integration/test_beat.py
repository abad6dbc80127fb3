"""``celery beat`` through this transport, FIFO and standard: every tick is sent once and runs once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_sqs_ddb import jobs
from tests.fakes.moto_server import ARTIFACTS
from tests.support.stack import ROOT, Stack, effects_of, make_client_app
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SENT = "Scheduler: Sending due task tick (tests.effect)"


class Beat:
    """A real ``celery -A tests.apps.beat beat`` subprocess with its own schedule file and log."""

    def __init__(self, env: dict[str, str], schedule: Path) -> None:
        self.log_path = ARTIFACTS / f"beat-{uuid.uuid4().hex[:6]}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.apps.beat", "beat", "-l", "info", "-s", str(schedule),
             "--max-interval", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            cwd=str(ROOT), start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text()

    def sent(self) -> int:
        return self.output().count(SENT)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.log.close()
        return self.process.returncode


@pytest.fixture
def beats() -> Iterator[list[Beat]]:
    started: list[Beat] = []
    yield started
    for beat in started:
        beat.stop()


@pytest.mark.parametrize("fifo", [True, False], ids=["fifo", "standard"])
def test_beat_sends_each_tick_once_and_it_runs_once(fifo, stack_factory, workers, beats, monkeypatch, effects,
                                                    tmp_path):
    stack: Stack = stack_factory(fifo=fifo)
    env = stack.env(SIDE_EFFECTS=effects, TEST_BEAT_EVERY=1)
    workers(env, name="ticks", concurrency=1).wait_ready()
    beat = Beat(env, tmp_path / "celerybeat-schedule")
    beats.append(beat)

    def ran_three() -> bool:
        assert beat.process.poll() is None, f"beat exited {beat.process.returncode}:\n{beat.output()}"
        return len(effects_of(effects, "tick")) >= 3

    wait_until(ran_three, 45, f"three ticks ran:\n{beat.output()[-3000:]}")
    assert beat.stop() == 0  # warm exit on SIGTERM
    sent = beat.sent()
    assert sent >= 3
    wait_until(lambda: len(effects_of(effects, "tick")) >= sent, 30, "every sent tick ran")
    app = make_client_app(stack, monkeypatch)

    def succeeded() -> list[dict] | None:
        found = [j for j in jobs(app, "SUCCESS", limit=100)[0] if j.get("task_name") == "tests.effect"]
        return found if len(found) >= sent else None

    done = wait_until(succeeded, 15, "every tick's row in the status index")
    assert len(done) == sent == len({j["task_id"] for j in done})  # one task per tick, each its own id
    assert len(effects_of(effects, "tick")) == sent  # ... and each ran exactly once
    assert "ERROR" not in beat.output() and "Traceback" not in beat.output()
