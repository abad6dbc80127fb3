"""Pages and JSON API of the example: submit digits, watch predictions, a live job board.

Pages (Jinja templates in ``templates/``, autoescaped; scripts in ``static/`` build the DOM with
``textContent``, and a Content-Security-Policy allows scripts from this origin only):
``/`` (submit a digit or a batch), ``/jobs`` (job board), ``/jobs/<id>`` (one job).
JSON API (documented in README.md): ``GET /healthz``, ``GET /api/samples``, ``POST /api/predict``,
``POST /api/batch``, ``GET /api/jobs``, ``GET /api/jobs/<id>``, ``GET /api/board``,
``GET /api/counts``, ``GET /api/workers`` (``inspect ping`` over SNS -> SQS; 503 with the reason
when remote control is off).
"""

from __future__ import annotations

import io
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from celery import Celery, states
from flask import Blueprint, Flask, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from celery_sqs_ddb import jobs as list_jobs
from celery_sqs_ddb import submit_many
from celery_sqs_ddb.exceptions import ConfigurationError
from example_project import tasks

MAX_BATCH = 500
MAX_UPLOAD_PIXELS = 1024 * 1024
BOARD_STATES = ("QUEUED", "STARTED", "SUCCESS", "FAILURE")
BOARD_ROWS = 15
COUNT_CAP = 100  # counts above it show as "100+": a count reads every index row it counts
FINISHED_KEPT = 1000  # described finished jobs kept in memory (their error never changes)
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")

bp = Blueprint("digits", __name__)
_finished_lock = threading.Lock()


class BadRequest(Exception):
    """A request the API answers with 400 and this message."""


class TTLCache:
    """Values shared by every request of this process for ``ttl`` seconds; one computation at a
    time per key (ten tabs refreshing at once cost one set of reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._values: dict[str, tuple[float, Any]] = {}

    def get(self, key: str, ttl: float, compute: Callable[[], Any]) -> Any:
        with self._lock:
            key_lock = self._locks.setdefault(key, threading.Lock())
        with key_lock:
            found = self._values.get(key)
            if found is not None and time.monotonic() - found[0] < ttl:
                return found[1]
            value = compute()
            self._values[key] = (time.monotonic(), value)
            return value


def celery() -> Celery:
    return current_app.extensions["celery"]


# ---------------------------------------------------------------------- input checks


def image_from_upload(data: bytes) -> list[int]:
    """An uploaded picture as 64 pixel values; its size is checked from the header, before decoding."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            picture = Image.open(io.BytesIO(data))  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadRequest("image too large: at most 1024x1024 pixels") from None
    except (UnidentifiedImageError, OSError):
        raise BadRequest("the upload is not an image (PNG, JPEG or GIF)") from None
    if picture.width * picture.height > MAX_UPLOAD_PIXELS:
        raise BadRequest("image too large: at most 1024x1024 pixels")
    try:
        picture.load()
    except OSError:
        raise BadRequest("the upload is not an image (PNG, JPEG or GIF)") from None
    gray = ImageOps.invert(picture.convert("L")).resize((8, 8), Image.Resampling.BOX)
    return [round(v / 255 * tasks.MAX_PIXEL) for v in gray.tobytes()]


def batch_images(body: Any) -> list[Any]:
    """The images of a ``/api/batch`` body; sizes are checked before any list is built."""
    if not isinstance(body, dict):
        raise BadRequest('send JSON {"count": N, "bad": K} or {"images": [...]}, optionally "long": true')
    if "images" in body:
        images = body["images"]
        if not isinstance(images, list) or not images:
            raise BadRequest('"images" must be a non-empty list of images')
        if len(images) > MAX_BATCH:
            raise BadRequest(f"at most {MAX_BATCH} images per batch, got {len(images)}")
        return images  # not validated here on purpose: invalid images fail in the worker (the board shows why)
    count, bad = body.get("count", 10), body.get("bad", 0)
    if (not isinstance(count, int) or not isinstance(bad, int) or isinstance(count, bool)
            or isinstance(bad, bool) or count < 0 or bad < 0):
        raise BadRequest('"count" and "bad" must be non-negative integers')
    if count + bad > MAX_BATCH:
        raise BadRequest(f"at most {MAX_BATCH} images per batch, got {count + bad}")
    pool = [s["image"] for s in tasks.samples(min(count, 100))]
    return [pool[i % len(pool)] for i in range(count)] + [[1, 2, 3]] * bad  # bad ones fail in the worker


# ---------------------------------------------------------------------- job state


def describe(task_id: str, item: dict[str, Any] | None) -> dict[str, Any]:
    backend = celery().backend
    meta = backend._meta_from_item(item) if item else backend.get_task_meta(task_id, cache=False)
    state = meta["status"]
    out: dict[str, Any] = {"task_id": task_id, "state": state, "task_name": meta.get("name"),
                           "worker": meta.get("worker"), "date_done": meta.get("date_done")}
    result = meta.get("result")
    if state == states.SUCCESS:
        out["result"] = result
    elif state in (states.FAILURE, states.REVOKED):
        out["error"] = f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else str(result)
    elif state == "PROGRESS" and isinstance(result, dict):
        out["progress"] = result
    return out


def listing(status: str, limit: int, cursor: str | None) -> dict[str, Any]:
    """One page of jobs in ``status``; running and failed jobs with their progress or error."""
    try:
        found, next_cursor = list_jobs(celery(), status, limit=limit, cursor=cursor)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    described: dict[str, dict[str, Any]] = {}
    if status in ("STARTED", "FAILURE") and found:
        # A failure's error never changes: read once, then kept (FINISHED); progress is read each time.
        finished = current_app.extensions["board_finished"]
        with _finished_lock:
            described = {j["task_id"]: finished[j["task_id"]] for j in found if j["task_id"] in finished}
        missing = [j["task_id"] for j in found if j["task_id"] not in described]
        items = celery().backend.batch_get(missing, consistent=False) if missing else {}
        for task_id, item in items.items():
            described[task_id] = describe(task_id, item)
        with _finished_lock:
            finished.update((k, v) for k, v in described.items() if v["state"] in states.READY_STATES)
            while len(finished) > FINISHED_KEPT:
                finished.pop(next(iter(finished)))
    out = []
    for job in found:
        entry = dict(job)
        if job["task_id"] in described:
            entry.update(described[job["task_id"]])
            entry["status"] = job["status"]
        out.append(entry)
    return {"jobs": out, "next": next_cursor}


def counts() -> dict[str, int | str]:
    """Jobs per board state, up to COUNT_CAP each ("100+" above), shared for COUNTS_CACHE_SECONDS."""
    def compute() -> dict[str, int | str]:
        out: dict[str, int | str] = {}
        for status in BOARD_STATES:
            found, cursor = list_jobs(celery(), status, limit=COUNT_CAP)
            out[status] = f"{COUNT_CAP}+" if cursor else len(found)
        return out

    return current_app.extensions["board_cache"].get("counts", current_app.config["COUNTS_CACHE_SECONDS"], compute)


def board() -> dict[str, Any]:
    """The job board's first pages and counts, shared for BOARD_CACHE_SECONDS by every open tab."""
    def compute() -> dict[str, Any]:
        return {"columns": {s: listing(s, BOARD_ROWS, None) for s in BOARD_STATES}}

    config = current_app.config
    shared = current_app.extensions["board_cache"].get("board", config["BOARD_CACHE_SECONDS"], compute)
    return dict(shared, counts=counts(), refresh_seconds=max(config["BOARD_CACHE_SECONDS"], 1.0))


# ---------------------------------------------------------------------- API


@bp.get("/healthz")
def healthz() -> Any:
    """Liveness of the web process (no AWS call): the compose health check."""
    return jsonify(ok=True)


@bp.get("/api/samples")
def api_samples() -> Any:
    return jsonify(tasks.samples(10))


@bp.post("/api/predict")
def api_predict() -> Any:
    if "file" in request.files:
        image = image_from_upload(request.files["file"].read())
    else:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or "image" not in body:
            raise BadRequest('send JSON {"image": [64 numbers 0..16]} or a multipart "file" (PNG/JPEG)')
        image = body["image"]
        if not body.get("skip_validation"):  # skipped: the worker fails the job with the reason
            try:
                tasks.validate(image)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
    result = tasks.predict.delay(image)
    return jsonify(task_id=result.id, url=f"/api/jobs/{result.id}"), 202


@bp.post("/api/batch")
def api_batch() -> Any:
    body = request.get_json(silent=True)
    images = batch_images(body)
    answer: dict[str, Any] = {}
    if body.get("long"):
        long_job = tasks.predict_batch.delay([s["image"] for s in tasks.samples(20, 100)])
        answer["long_task_id"] = long_job.id
    if images:
        group = submit_many(tasks.predict, [(image,) for image in images], progress=False)
        answer.update(group_id=group.id, task_ids=[r.id for r in group.results])
    return jsonify(answer), 202


def valid_task_id(task_id: str) -> bool:
    return len(task_id) <= 64 and all(c.isalnum() or c == "-" for c in task_id)


@bp.get("/api/jobs/<task_id>")
def api_job(task_id: str) -> Any:
    if not valid_task_id(task_id):
        return jsonify(error="not a job id"), 404
    if not celery().backend.task_result_exists(task_id):
        return jsonify(error=f"unknown job id {task_id}"), 404
    return jsonify(describe(task_id, None))


@bp.get("/api/jobs")
def api_jobs() -> Any:
    status = request.args.get("status", "STARTED").upper()
    try:
        limit = int(request.args.get("limit", "20"))
    except ValueError:
        raise BadRequest("limit must be an integer") from None
    if not 1 <= limit <= 100:
        raise BadRequest("limit must be 1..100")
    return jsonify(listing(status, limit, request.args.get("cursor") or None))


@bp.get("/api/board")
def api_board() -> Any:
    return jsonify(board())


@bp.get("/api/counts")
def api_counts() -> Any:
    return jsonify(counts())


@bp.get("/api/workers")
def api_workers() -> Any:
    try:
        timeout = float(request.args.get("timeout", 2))
    except ValueError:
        raise BadRequest("timeout must be a number of seconds") from None
    if not 0.1 <= timeout <= 10:
        raise BadRequest(f"timeout must be 0.1 to 10 seconds, got {timeout}")
    try:  # a broadcast waits its whole timeout for answers
        replies = celery().control.inspect(timeout=timeout).ping() or {}
    except ConfigurationError as exc:
        return jsonify(error=str(exc)), 503
    return jsonify(workers=sorted(replies))


# ---------------------------------------------------------------------- pages


@bp.get("/")
def index() -> str:
    return render_template("index.html", max_batch=MAX_BATCH)


@bp.get("/jobs")
def jobs_page() -> str:
    return render_template("board.html", states=BOARD_STATES)


@bp.get("/jobs/<task_id>")
def job_page(task_id: str) -> tuple[str, int]:
    valid = valid_task_id(task_id)
    return render_template("job.html", task_id=task_id, valid=valid), 200 if valid else 404


# ---------------------------------------------------------------------- wiring


def init_app(app: Flask) -> None:
    """Register the blueprint, the JSON error handlers, the security headers and the board cache."""
    app.extensions["board_cache"] = TTLCache()
    app.extensions["board_finished"] = {}
    app.register_blueprint(bp)
    limit_kb = app.config["MAX_CONTENT_LENGTH"] // 1024

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest) -> Any:
        return jsonify(error=str(exc)), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        messages = {413: f"upload too large: at most {limit_kb} KB"}
        return jsonify(error=messages.get(exc.code, exc.description)), exc.code

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Any:
        app.logger.exception("request failed")
        return jsonify(error="internal error; see the server log"), 500  # never a stack trace

    @app.after_request
    def security_headers(response: Any) -> Any:
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response
