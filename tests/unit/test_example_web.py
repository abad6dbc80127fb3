"""The example project: the model really infers, and the web API validates input (in-process moto)."""

from __future__ import annotations

import io
import uuid

import boto3
import pytest
from moto import mock_aws

from celery_sqs_ddb import schema
from example_project import create_app

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
