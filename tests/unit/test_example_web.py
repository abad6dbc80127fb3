"""The example project: the model really infers, and the web API validates input (in-process moto)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import uuid

import boto3
import pytest
import yaml
from moto import mock_aws

from celery_sqs_ddb import schema
from example_project import create_app
from tests.support.stack import ROOT

REGION = "eu-west-1"


def test_model_accuracy_on_held_out_digits():
    from example_project.tasks import train

    _, accuracy = train()
    assert accuracy > 0.9


@pytest.mark.parametrize(("image", "message"), [
    ([1] * 63, "image must have 64 pixel values (8x8), got 63"),
    ("not a list", "image must be a list of 64 numbers (8x8 pixels), got str"),
    ([0] * 63 + [17], "pixel 63 is 17; pixels are numbers from 0 to 16"),
    ([0] * 63 + [True], "pixel 63 is True"),
])
def test_validation_messages(image, message):
    from example_project.tasks import validate

    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(image)


@pytest.fixture
def client(monkeypatch, tmp_path):
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="jobs.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
        boto3.client("dynamodb", region_name=REGION).create_table(**schema.create_table_request("results"))
        for key, value in {"DEMO_QUEUE": "jobs.fifo", "DEMO_QUEUE_URL": url, "DEMO_TABLE": "results",
                           "DEMO_BUCKET": ""}.items():
            monkeypatch.setenv(key, value)
        import example_project.tasks

        monkeypatch.setattr(example_project.tasks, "MODEL_DIR", tmp_path)
        app = create_app()
        app.testing = False  # the real error handlers, as users see them
        yield app.test_client(), sqs, url


def queued(sqs, url) -> int:
    return int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
        "Attributes"]["ApproximateNumberOfMessages"])


def test_predict_validates_before_enqueueing(client):
    http, sqs, url = client
    bad = http.post("/api/predict", json={"image": [1] * 63})
    assert bad.status_code == 400 and bad.json == {"error": "image must have 64 pixel values (8x8), got 63"}
    missing = http.post("/api/predict", data="nope", content_type="text/plain")
    assert missing.status_code == 400 and '{"image": [64 numbers 0..16]}' in missing.json["error"]
    assert queued(sqs, url) == 0
    ok = http.post("/api/predict", json={"image": [0] * 64})
    assert ok.status_code == 202 and queued(sqs, url) == 1
    job = http.get(ok.json["url"])
    assert job.status_code == 200 and job.json["state"] == "QUEUED"  # known at once: a QUEUED row


def test_uploads(client):
    from PIL import Image

    http, sqs, url = client
    buffer = io.BytesIO()
    Image.new("L", (32, 32), color=255).save(buffer, format="PNG")
    ok = http.post("/api/predict", data={"file": (io.BytesIO(buffer.getvalue()), "seven.png")})
    assert ok.status_code == 202
    garbage = http.post("/api/predict", data={"file": (io.BytesIO(b"not an image"), "x.png")})
    assert garbage.status_code == 400 and garbage.json["error"] == "the upload is not an image (PNG, JPEG or GIF)"
    huge = http.post("/api/predict", data={"file": (io.BytesIO(b"0" * 300_000), "big.png")})
    assert huge.status_code == 413 and huge.json == {"error": "upload too large: at most 256 KB"}
    assert queued(sqs, url) == 1


def test_unknown_job_and_bad_listing_requests(client):
    http, _, _ = client
    unknown = http.get(f"/api/jobs/{uuid.uuid4()}")
    assert unknown.status_code == 404 and unknown.json["error"].startswith("unknown job id")
    assert http.get("/api/jobs/..%2F..%2Fetc").status_code == 404
    bad_status = http.get("/api/jobs?status=DONE")
    assert bad_status.status_code == 400 and "accepted: QUEUED, STARTED" in bad_status.json["error"]
    assert http.get("/api/jobs?limit=0").status_code == 400
    too_many = http.post("/api/batch", json={"count": 1000})
    assert too_many.status_code == 400 and too_many.json["error"] == "at most 500 images per batch, got 1000"
    assert http.post("/api/batch", json={"count": -1}).status_code == 400


def test_batch_and_counts(client):
    http, sqs, url = client
    batch = http.post("/api/batch", json={"count": 12, "bad": 3})
    assert batch.status_code == 202 and len(batch.json["task_ids"]) == 15
    assert queued(sqs, url) == 15
    assert http.get("/api/counts").json["QUEUED"] == 15
    listed = http.get("/api/jobs?status=QUEUED&limit=10")
    assert len(listed.json["jobs"]) == 10 and listed.json["next"]


def test_internal_errors_show_no_stack_trace(client, monkeypatch):
    import example_project.tasks

    http, _, _ = client

    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(example_project.tasks, "samples", explode)
    response = http.get("/api/samples")
    assert response.status_code == 500
    assert response.json == {"error": "internal error; see the server log"}
    assert b"secret" not in response.data and b"Traceback" not in response.data


def test_workers_endpoint_says_when_remote_control_is_off_and_checks_its_timeout(client):
    http, _, _ = client
    off = http.get("/api/workers?timeout=0.1")
    assert off.status_code == 503 and "Remote control is off" in off.json["error"]
    assert http.get("/api/workers?timeout=soon").json == {"error": "timeout must be a number of seconds"}
    assert http.get("/api/workers?timeout=60").status_code == 400


def test_workers_endpoint_with_remote_control_and_no_worker_lists_none(client, monkeypatch):
    http, _, _ = client
    monkeypatch.setenv("SQS_DDB_REMOTE_CONTROL", "true")
    response = http.get("/api/workers?timeout=0.2")
    assert response.status_code == 200 and response.json == {"workers": []}
    sqs = boto3.client("sqs", region_name=REGION)
    assert [u for u in sqs.list_queues().get("QueueUrls", []) if "-ctl-" in u] == []  # its reply queue is gone


def test_huge_batch_counts_are_refused_fast_without_building_a_list(client):
    import tracemalloc

    http, sqs, url = client
    tracemalloc.start()
    try:
        started = time.monotonic()
        for body in ({"count": 10**9}, {"count": 0, "bad": 10**9}, {"count": 400, "bad": 101}, {"count": 10**100}):
            response = http.post("/api/batch", json=body)
            assert response.status_code == 400, body
            assert response.json["error"].startswith("at most 500 images per batch, got ")
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 2, elapsed  # the old code spent minutes (and gigabytes) on count=10**9
    assert peak < 5_000_000, peak
    assert http.post("/api/batch", json={"count": True}).status_code == 400
    assert http.post("/api/batch", json={"images": [[0] * 64] * 501}).json == {
        "error": "at most 500 images per batch, got 501"}
    assert queued(sqs, url) == 0


HUGE_UPLOAD = """
import io, json, resource, sys, time
from PIL import Image
from example_project.views import BadRequest, image_from_upload

data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
try:
    image_from_upload(data)
    error = None
except BadRequest as exc:
    error = str(exc)
elapsed = time.monotonic() - started
grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"bytes": len(data), "error": error, "seconds": elapsed, "grown_kb": grown_kb}))
"""


def test_huge_upload_is_refused_from_its_header_before_decoding(client, tmp_path):
    """An 8000x8000 PNG is ~190 KB (under the upload limit) and 192 MB decoded: refused, flat memory.

    Checked in a fresh process, so its peak RSS is not hidden by what this test process already
    used (the picture is drawn here, the child only reads the file)."""
    from PIL import Image

    http, _, _ = client
    path = tmp_path / "huge.png"
    Image.new("RGB", (8000, 8000), color=(255, 255, 255)).save(path, format="PNG", optimize=True)
    done = subprocess.run([sys.executable, "-c", HUGE_UPLOAD, str(path)], capture_output=True, text=True,
                          timeout=120, cwd=str(ROOT))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["bytes"] < 256 * 1024
    assert report["error"] == "image too large: at most 1024x1024 pixels"
    assert report["grown_kb"] < 20_000, report  # decoding it first grew the peak by ~190 000 KB
    assert report["seconds"] < 0.5, report
    # and through the API, with the same message
    response = http.post("/api/predict", data={"file": (io.BytesIO(path.read_bytes()), "huge.png")})
    assert response.status_code == 400 and response.json == {"error": "image too large: at most 1024x1024 pixels"}


def test_pages_escape_markup_and_send_a_content_security_policy(client):
    http, _, _ = client
    markup = "<img src=x onerror=alert(1)>"
    page = http.get(f"/jobs/{markup}")
    assert page.status_code == 404
    html = page.get_data(as_text=True)
    assert markup not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "object-src 'none'" in csp
    for path in ("/", "/jobs", f"/jobs/{uuid.uuid4()}"):
        response = http.get(path)
        assert response.status_code == 200, path
        body = response.get_data(as_text=True)
        assert "<script>" not in body and "innerHTML" not in body  # scripts only from /static
        assert response.headers["Content-Security-Policy"] == csp
    scripts = "".join(p.read_text() for p in (ROOT / "example_project" / "static").glob("*.js"))
    assert "innerHTML" not in scripts and "insertAdjacentHTML" not in scripts and "textContent" in scripts
    assert http.get("/static/board.js").status_code == 200


def test_board_is_shared_by_every_tab_until_its_cache_expires(client):
    http, _, _ = client
    assert http.post("/api/batch", json={"count": 3}).status_code == 202
    first = http.get("/api/board").json
    assert first["counts"] == {"QUEUED": 3, "STARTED": 0, "SUCCESS": 0, "FAILURE": 0}
    assert len(first["columns"]["QUEUED"]["jobs"]) == 3 and first["refresh_seconds"] >= 1
    assert http.post("/api/batch", json={"count": 2}).status_code == 202
    assert http.get("/api/board").json == first  # cached: no DynamoDB read for this tab
    assert http.get("/api/counts").json["QUEUED"] == 3


def test_counts_are_capped(client):
    http, _, _ = client
    http.application.config.update(COUNTS_CACHE_SECONDS=0, BOARD_CACHE_SECONDS=0)
    assert http.post("/api/batch", json={"count": 101}).status_code == 202
    assert http.get("/api/counts").json["QUEUED"] == "100+"
    assert len(http.get("/api/board").json["columns"]["QUEUED"]["jobs"]) == 15


def test_the_worker_finds_the_celery_app_both_ways():
    """Flask's pattern (`celery -A example_project.make_celery`) and the Terraform module's default
    (`celery -A example_project.tasks`) name the same configured app with the digits tasks."""
    from celery.app.utils import find_app

    via_tasks = find_app("example_project.tasks")
    via_make_celery = find_app("example_project.make_celery")
    assert via_tasks is via_make_celery
    assert {"digits.predict", "digits.predict_batch"} <= set(via_tasks.tasks)
    assert via_tasks.conf.result_backend.startswith("ddb://")
    assert "FlaskTask" in [cls.__name__ for cls in type(via_tasks.tasks["digits.predict"]).__mro__]


def test_healthcheck_probe_reads_the_health_file_with_the_standard_library_only(tmp_path):
    probe = ROOT / "example_project" / "healthcheck.py"
    health = tmp_path / "health"
    env = {"PATH": os.environ["PATH"], "SQS_DDB_HEALTH_FILE": str(health), "SQS_DDB_HEALTH_INTERVAL": "10"}

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-X", "importtime", str(probe)], env=env, capture_output=True,
                              text=True, timeout=30)

    missing = run()
    assert missing.returncode == 1 and "does not exist" in missing.stdout
    health.touch()
    fresh = run()
    assert fresh.returncode == 0 and fresh.stdout.startswith("healthy:")
    imported = {line.rsplit("|", 1)[-1].strip() for line in fresh.stderr.splitlines() if "|" in line}
    assert not {"celery", "example_project", "sklearn", "flask", "boto3"} & imported
    os.utime(health, (time.time() - 61, time.time() - 61))
    stale = run()
    assert stale.returncode == 1 and "61 s old (limit 60 s)" in stale.stdout


def test_docker_compose_and_dockerfile_structure():
    """`docker compose config` cannot run here (no compose plugin, no daemon): the structure is
    checked instead, against what `make demo` runs and what the production image must be."""
    from example_project import demo

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"moto", "setup", "worker", "web", "flower"}
    for name, service in services.items():
        assert isinstance(service["command"], list) and service.get("image"), name
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services and condition["condition"] in (
                "service_started", "service_healthy", "service_completed_successfully"), name
    assert services["flower"]["profiles"] == ["flower"]  # optional: `docker compose --profile flower up`
    assert services["flower"]["command"] == demo.flower_command()
    assert services["moto"]["build"]["target"] == "dev"
    for name in ("setup", "worker", "web", "flower"):
        assert services[name]["build"]["target"] == "runtime", name
        assert services[name]["read_only"] is True and services[name]["tmpfs"] == ["/tmp"], name
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)$", dockerfile, re.M)
    assert stages == ["build", "runtime", "dev"]
    runtime = dockerfile.split(" AS runtime")[1].split(" AS dev")[0]
    assert "moto" not in runtime and "USER 10001" in runtime
    assert "DEMO_MODEL_DIR=/opt/model" in runtime and "COPY --from=build /opt/model /opt/model" in runtime
    assert 'CMD ["python", "/app/example_project/healthcheck.py"]' in runtime
    assert "requirements.txt" in dockerfile
    pins = [line for line in (ROOT / "example_project" / "requirements.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][\w.+-]*", line) for line in pins), pins
    assert not [line for line in pins if line.lower().startswith("moto")]
