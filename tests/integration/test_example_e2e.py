"""The example project as a user sees it: moto server + real worker + web app, driven in
headless Chromium; and docker-compose.yml checked against what `make demo` starts."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from example_project import demo
from tests.fakes.moto_server import ARTIFACTS, free_port
from tests.support.stack import ROOT, Worker
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

HOST = socket.gethostname()
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    return path


@pytest.fixture
def example_stack(moto_server, tmp_path):
    """Queue + DLQ + table + bucket created with the package's CLI, as `make demo` does."""
    suffix = os.urandom(3).hex()
    env = dict(os.environ, PYTHONPATH=str(ROOT), **demo.base_environment(moto_server.url))
    env.update(DEMO_QUEUE=f"digits-{suffix}.fifo", DEMO_DLQ=f"digits-dlq-{suffix}.fifo",
               DEMO_TABLE=f"digits-{suffix}", DEMO_BUCKET=f"digits-{suffix}", DEMO_MODEL_DIR=str(tmp_path / "model"),
               DEMO_WAIT_SECONDS="1", SQS_DDB_HEALTH_FILE=str(tmp_path / "health"))
    for command in demo.setup_commands():
        done = subprocess.run(demo._expand(command, env), env=env, cwd=str(ROOT), capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    return env


@pytest.fixture
def web(example_stack):
    port = free_port()
    env = dict(example_stack, DEMO_WEB_PORT=str(port))
    log = open(ARTIFACTS / "example-web.log", "w")  # noqa: SIM115
    process = subprocess.Popen([sys.executable, "-m", "example_project.web"], env=env, cwd=str(ROOT),
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    demo.wait_http(f"{url}/api/samples", 60, process)
    yield url
    process.terminate()
    process.wait(10)
    log.close()


def test_browser_submit_predict_batch_progress_and_job_board(example_stack, web):
    from playwright.sync_api import expect, sync_playwright

    worker = Worker(example_stack, "example", concurrency=2, app="example_project.tasks").wait_ready(90)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(web)
            first = page.locator("#samples .sample").first
            expect(first).to_be_visible(timeout=20_000)
            label = first.get_attribute("data-label")
            first.click()
            expect(page.locator("#digit")).to_have_text(label, timeout=60_000)  # predict.delay() -> get

            page.fill("#batch-count", "12")
            page.fill("#batch-bad", "2")
            page.check("#batch-long")
            page.click("#batch-form button")
            expect(page.locator("#batch-status")).to_contain_text("submitted 14 jobs + 1 long job", timeout=30_000)

            page.goto(f"{web}/jobs")
            expect(page.locator("#workers")).to_have_text(f"example@{HOST}", timeout=30_000)  # inspect ping
            bar = page.locator("#board-STARTED progress")
            expect(bar).to_be_visible(timeout=60_000)
            seen = {int(bar.first.get_attribute("value"))}
            wait_until(lambda: seen.add(int(bar.first.get_attribute("value") or 0)) or len(seen) >= 2, 30,
                       "the progress bar moves")
            page.screenshot(path=str(ARTIFACTS / "job-board-running.png"), full_page=True)
            expect(page.locator("#board-FAILURE .job")).to_have_count(2, timeout=60_000)
            expect(page.locator("#board-FAILURE")).to_contain_text("image must have 64 pixel values (8x8), got 3")
            wait_until(lambda: page.locator("#board-SUCCESS .job").count() >= 13, 90, "13+ jobs succeeded")
            expect(page.locator("#board-STARTED .job")).to_have_count(0, timeout=60_000)  # the long job finished
            expect(page.locator("#count-SUCCESS")).to_have_text("14", timeout=30_000)  # 1 + 12 + the long one
            page.screenshot(path=str(ARTIFACTS / "job-board.png"), full_page=True)

            job_id = page.locator("#board-FAILURE .job").first.get_attribute("data-id")
            page.goto(f"{web}/jobs/{job_id}")
            expect(page.locator("#job")).to_contain_text('"state": "FAILURE"', timeout=20_000)
            browser.close()
    finally:
        worker.stop()
    assert (ARTIFACTS / "job-board.png").stat().st_size > 10_000


def test_docker_compose_matches_make_demo():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"moto", "setup", "worker", "web"}
    assert services["moto"]["command"][:3] == ["python", "-m", "moto.server"]
    expected_env = demo.base_environment("http://moto:5000")
    for name in ("setup", "worker", "web"):
        env = services[name]["environment"]
        for key, value in expected_env.items():
            assert str(env[key]) == value, (name, key)
    for name, command in demo.services(8000).items():
        assert services[name]["command"] == command, name
    setup_script = services["setup"]["command"][-1]
    for command in demo.setup_commands():
        assert " ".join(command).replace("${", "$${") in setup_script
    assert services["web"]["environment"]["DEMO_WEB_PORT"] == "8000"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["celery", "-A", "example_project.tasks", "worker"' in dockerfile
    assert "sqs-ddb\", \"healthcheck\"" in dockerfile and "REMAP_SIGTERM=SIGQUIT" in dockerfile
    worker_tf = (ROOT / "deploy" / "terraform" / "modules" / "worker" / "variables.tf").read_text()
    assert '"example_project.tasks"' in worker_tf  # the image the Terraform worker module deploys


def test_demo_environment_is_what_the_example_app_reads():
    source = Path(demo.__file__).with_name("tasks.py").read_text()
    for key in demo.base_environment("http://x"):
        if key.startswith("DEMO_"):
            assert f'"{key}"' in source or f"'{key}'" in source, key
