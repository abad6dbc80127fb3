"""The example project as a user sees it: moto server + real worker + web app, driven in
headless Chromium; and docker-compose.yml checked against what `make demo` starts."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
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
               DEMO_WAIT_SECONDS="1", SQS_DDB_HEALTH_FILE=str(tmp_path / "health"),
               DEMO_BOARD_CACHE_SECONDS="1")  # the board refreshes every second: the long job runs ~5 s
    for command in demo.setup_commands():
        done = subprocess.run(demo._expand(command, env), env=env, cwd=str(ROOT), capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    return env


def start_service(name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
    log = open(ARTIFACTS / f"example-{name}.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(demo._expand(command, env), env=env, cwd=str(ROOT), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop_service(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(10)


@pytest.fixture
def web(example_stack):
    """The web app as the image runs it: gunicorn with the example's config."""
    port = free_port()
    env = dict(example_stack, DEMO_WEB_PORT=str(port))
    process = start_service("web", demo.services()["web"], env)
    url = f"http://127.0.0.1:{port}"
    try:
        demo.wait_http(f"{url}/healthz", 60, process)
        yield url
    finally:
        stop_service(process)


XSS = "<img src=x onerror=window.__xss=1>"
RECORD_CSP = ("window.__csp = []; document.addEventListener('securitypolicyviolation', "
              "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")

PROGRESS = "() => { const bar = document.querySelector('#board-STARTED progress'); return bar ? +bar.value : null; }"
SET_VISIBILITY = """state => {
  Object.defineProperty(document, 'visibilityState', {value: state, configurable: true});
  document.dispatchEvent(new Event('visibilitychange'));
}"""


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 202
        return json.loads(response.read())


def test_browser_submit_batch_progress_job_board_xss_and_flower(example_stack, web, moto_server):
    from playwright.sync_api import expect, sync_playwright

    flower_port = free_port()
    flower = start_service("flower", [*demo.flower_command(flower_port), "--address=127.0.0.1"], example_stack)
    worker = Worker(example_stack, "example", concurrency=2, app="example_project.tasks", extra_args=("-E",))
    try:
        demo.wait_http(f"http://127.0.0.1:{flower_port}/healthcheck", 60, flower)
        worker.wait_ready(90)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.add_init_script(RECORD_CSP)
            page.goto(web)
            first = page.locator("#samples .sample").first
            expect(first).to_be_visible(timeout=20_000)
            label = first.get_attribute("data-label")
            first.click()
            expect(page.locator("#digit")).to_have_text(label, timeout=60_000)  # predict.delay() -> get

            # Stored XSS attempts: error texts a caller chooses, through /api/batch and skip_validation.
            batch_xss = post(f"{web}/api/batch", {"images": [[XSS] + [0] * 63]})["task_ids"][0]
            predict_xss = post(f"{web}/api/predict", {"image": [0] * 5 + [XSS] + [0] * 58,
                                                      "skip_validation": True})["task_id"]
            page.fill("#batch-count", "12")
            page.fill("#batch-bad", "2")
            page.check("#batch-long")
            page.click("#batch-form button")
            expect(page.locator("#batch-status")).to_contain_text("submitted 14 jobs + 1 long job", timeout=30_000)
            page.evaluate("id => poll(id)", predict_xss)  # the submit page's own failure display
            expect(page.locator("#prediction")).to_have_text(
                f"ValueError: pixel 5 is '{XSS}'; pixels are numbers from 0 to 16", timeout=60_000)

            page.goto(f"{web}/jobs")
            expect(page.locator("#workers")).to_have_text(f"example@{HOST}", timeout=30_000)  # inspect ping
            bar = page.locator("#board-STARTED progress")
            expect(bar).to_be_visible(timeout=60_000)
            seen: set[int | None] = set()
            wait_until(lambda: seen.add(page.evaluate(PROGRESS)) or len(seen - {None}) >= 2, 30,
                       f"the progress bar moves (seen {seen})")
            page.screenshot(path=str(ARTIFACTS / "job-board-running.png"), full_page=True)
            expect(page.locator("#board-FAILURE .job")).to_have_count(4, timeout=60_000)  # 2 bad + 2 XSS
            failures = page.locator("#board-FAILURE")
            expect(failures).to_contain_text("image must have 64 pixel values (8x8), got 3")
            expect(failures.locator(f"[data-id='{batch_xss}'] td.err")).to_have_text(
                f"ValueError: pixel 0 is '{XSS}'; pixels are numbers from 0 to 16")
            wait_until(lambda: page.locator("#board-SUCCESS .job").count() >= 13, 90, "13+ jobs succeeded")
            expect(page.locator("#board-STARTED .job")).to_have_count(0, timeout=60_000)  # the long job finished
            expect(page.locator("#count-SUCCESS")).to_have_text("14", timeout=30_000)  # 1 + 12 + the long one
            expect(page.locator("#count-FAILURE")).to_have_text("4")
            assert page.locator("img").count() == 0  # the markup stayed text
            assert page.evaluate("window.__xss") is None
            page.screenshot(path=str(ARTIFACTS / "job-board.png"), full_page=True)

            # The board's reads while one tab stays open: one /api/board per refresh, shared cache.
            moto_server.reset_counts()
            before = int(page.evaluate("document.body.dataset.refreshes"))
            wait_until(lambda: int(page.evaluate("document.body.dataset.refreshes")) >= before + 5, 30,
                       "five board refreshes")
            refreshes = int(page.evaluate("document.body.dataset.refreshes")) - before
            calls = moto_server.counts()
            queries = calls.get("dynamodb:Query", 0)
            (ARTIFACTS / "job-board-reads.json").write_text(json.dumps({"refreshes": refreshes, "calls": calls}))
            # 16 Query a refresh (4 states x 4 shards) + 16 more per counts refresh (every 10 s);
            # no BatchGetItem: no job runs and failures are described once.
            assert queries <= 16 * refreshes + 16 * (refreshes // 5 + 1), calls
            assert calls.get("dynamodb:BatchGetItem", 0) == 0, calls

            # A hidden tab schedules no refresh; shown again, it refreshes at once.
            page.evaluate(SET_VISIBILITY, "hidden")
            wait_until(lambda: page.evaluate("timer === null && !inFlight"), 10,
                       "no refresh scheduled or running while hidden")
            hidden_at = int(page.evaluate("document.body.dataset.refreshes"))
            page.evaluate(SET_VISIBILITY, "visible")
            wait_until(lambda: int(page.evaluate("document.body.dataset.refreshes")) > hidden_at, 10,
                       "a refresh as soon as the tab is visible again")

            # Reflected XSS attempt: markup in the job page's path is shown as text.
            page.goto(f"{web}/jobs/{urllib.parse.quote(XSS)}")
            expect(page.locator("#job-id")).to_have_text(XSS)
            assert page.locator("img").count() == 0 and page.evaluate("window.__xss") is None

            page.goto(f"{web}/jobs/{batch_xss}")
            expect(page.locator("#job")).to_contain_text('"state": "FAILURE"', timeout=20_000)
            expect(page.locator("#job")).to_contain_text(XSS)
            assert page.locator("img").count() == 0 and page.evaluate("window.__xss") is None
            assert page.evaluate("window.__csp") == []  # our own pages run under the policy unharmed

            # Flower (remote control + events over SNS): the tasks it saw, for the README.
            page.goto(f"http://127.0.0.1:{flower_port}/tasks")
            expect(page.locator("#tasks-table")).to_contain_text("digits.predict_batch", timeout=30_000)
            expect(page.locator("#tasks-table")).to_contain_text("FAILURE")
            page.screenshot(path=str(ARTIFACTS / "flower.png"))
            browser.close()
    finally:
        worker.stop()
        stop_service(flower)
    assert (ARTIFACTS / "job-board.png").stat().st_size > 10_000
    assert (ARTIFACTS / "flower.png").stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOTS"):  # UPDATE_SCREENSHOTS=1 make test: refresh the README's pictures
        for name in ("flower.png", "job-board.png"):
            shutil.copyfile(ARTIFACTS / name, ROOT / "docs" / name)


def item_bytes(item: dict) -> int:
    """DynamoDB's size of an item: attribute names plus values (strings by UTF-8 bytes, numbers
    about one byte per two digits plus one)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        (kind, raw), = value.items()
        size += len(raw.encode()) if kind == "S" else (len(raw.lstrip("-").replace(".", "")) + 1) // 2 + 1
    return size


def test_job_board_read_cost_per_refresh(example_stack, web, moto_server):
    """What an open job board costs in DynamoDB reads (the README's "Job board read cost"): calls
    through the counting proxy, read units from the rows each Query returns."""
    import boto3

    from celery_sqs_ddb import schema

    def get(path: str) -> dict:
        with urllib.request.urlopen(f"{web}{path}") as response:
            return json.loads(response.read())

    assert len(post(f"{web}/api/batch", {"count": 120})["task_ids"]) == 120  # no worker: all stay QUEUED
    moto_server.reset_counts()
    assert get("/api/counts") == {"QUEUED": "100+", "STARTED": 0, "SUCCESS": 0, "FAILURE": 0}
    counts_calls = moto_server.counts()
    moto_server.reset_counts()
    board = get("/api/board")
    board_calls = moto_server.counts()
    assert len(board["columns"]["QUEUED"]["jobs"]) == 15 and board["counts"]["QUEUED"] == "100+"
    moto_server.reset_counts()
    for _ in range(10):  # ten more tabs within the cache's lifetime
        assert get("/api/board")["columns"] == board["columns"]
    shared_calls = moto_server.counts()

    # Read units: replay each Query the listing made (4 shards per state, Limit = rows + 1).
    dynamodb = boto3.client("dynamodb", region_name=example_stack["AWS_REGION"], endpoint_url=moto_server.direct_url)

    def units(limit: int) -> tuple[float, int]:
        total, rows = 0.0, 0
        for status in views_states():
            for shard in range(4):
                items = dynamodb.query(
                    TableName=example_stack["DEMO_TABLE"], IndexName=schema.STATUS_INDEX, Limit=limit + 1,
                    KeyConditionExpression="#k = :k", ExpressionAttributeNames={"#k": schema.STATUS_SHARD},
                    ExpressionAttributeValues={":k": {"S": f"{status}#{shard}"}}, ScanIndexForward=False)["Items"]
                size = sum(item_bytes(item) for item in items)
                total += max(1, -(-size // 4096)) * 0.5  # eventually consistent: 0.5 per 4 KB, at least 0.5
                rows += len(items)
                row_bytes.extend(item_bytes(item) for item in items)
        return total, rows

    row_bytes: list[int] = []
    counts_units, counts_rows = units(100)
    board_units, board_rows = units(15)
    report = {"counts_calls": counts_calls, "board_calls": board_calls, "shared_calls": shared_calls,
              "counts_units": counts_units, "counts_rows": counts_rows, "board_units": board_units,
              "board_rows": board_rows, "index_row_bytes": max(row_bytes)}
    (ARTIFACTS / "job-board-cost.json").write_text(json.dumps(report, indent=1))
    assert counts_calls == {"dynamodb:Query": 16}, report  # 4 states x 4 shards, up to 101 rows each
    # the same, up to 16 rows each; counts were cached. A shard whose page ends inside a run of rows
    # written in one batch (the same updated_at) reads one more page to order them exactly.
    assert set(board_calls) == {"dynamodb:Query"} and 16 <= board_calls["dynamodb:Query"] <= 20, report
    assert shared_calls == {}, report  # every other tab within the cache's lifetime reads nothing
    assert max(row_bytes) < 300 and board_units == 8.0, report  # a 16-row page fits one 4 KB read unit
    readme = (ROOT / "README.md").read_text()  # the numbers the README states are these
    assert f"index rows are\n{max(row_bytes)} bytes" in readme, report
    assert f"| {board_units:g} (each page fits one 4 KB unit) |" in readme, report
    assert 8 < counts_units <= 10 and "| 9 to 10 with 120 queued jobs, at most 32 |" in readme, report


def views_states() -> tuple[str, ...]:
    from example_project.views import BOARD_STATES

    return BOARD_STATES


def test_docker_compose_matches_make_demo():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"moto", "setup", "worker", "web", "flower"}
    assert services["moto"]["command"][:3] == ["python", "-m", "moto.server"]
    expected_env = demo.base_environment("http://moto:5000")
    for name in ("setup", "worker", "web", "flower"):
        env = services[name]["environment"]
        for key, value in expected_env.items():
            assert str(env[key]) == value, (name, key)
    for name, command in demo.services(flower=True).items():
        assert services[name]["command"] == command, name
    setup_script = services["setup"]["command"][-1]
    for command in demo.setup_commands():
        assert " ".join(command).replace("${", "$${") in setup_script
    assert services["web"]["environment"]["DEMO_WEB_PORT"] == "8000"
    assert services["web"]["command"][0] == "gunicorn"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["celery", "-A", "example_project.make_celery", "worker"' in dockerfile
    assert "example_project/healthcheck.py" in dockerfile and "REMAP_SIGTERM=SIGQUIT" in dockerfile
    worker_tf = (ROOT / "deploy" / "terraform" / "modules" / "worker" / "variables.tf").read_text()
    assert '"example_project.tasks"' in worker_tf  # the Terraform default; tasks.app is the same app


def test_demo_environment_is_what_the_example_app_reads():
    source = Path(demo.__file__).with_name("__init__.py").read_text()
    for key in demo.base_environment("http://x"):
        if key.startswith("DEMO_"):
            assert f'"{key}"' in source or f"'{key}'" in source, key
