"""Flask web app: submit digits, watch predictions, and a live job board from the status index.

Pages: ``/`` (submit a digit or a batch), ``/jobs`` (job board), ``/jobs/<id>`` (one job).
JSON API (documented in README.md): ``GET /api/samples``, ``POST /api/predict``,
``POST /api/batch``, ``GET /api/jobs``, ``GET /api/jobs/<id>``, ``GET /api/counts``,
``GET /api/workers`` (``inspect ping`` over SNS -> SQS; 503 with the reason when remote control
is off).
Run: ``python -m example_project.web`` (port ``DEMO_WEB_PORT``, default 8000).
"""

from __future__ import annotations

import io
import os
from typing import Any

from celery import states
from flask import Flask, jsonify, render_template_string, request
from werkzeug.exceptions import HTTPException

from celery_sqs_ddb import jobs as list_jobs
from celery_sqs_ddb import submit_many
from celery_sqs_ddb.exceptions import ConfigurationError
from example_project import tasks

MAX_UPLOAD_BYTES = 256 * 1024
MAX_BATCH = 500
BOARD_STATES = ("QUEUED", "STARTED", "SUCCESS", "FAILURE")


def create_app() -> Flask:
    web = Flask(__name__)
    web.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_BYTES
    celery = tasks.app
    backend = celery.backend

    class BadRequest(Exception):
        pass

    @web.errorhandler(BadRequest)
    def bad_request(exc: BadRequest) -> Any:
        return jsonify(error=str(exc)), 400

    @web.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        messages = {413: f"upload too large: at most {MAX_UPLOAD_BYTES // 1024} KB"}
        return jsonify(error=messages.get(exc.code, exc.description)), exc.code

    @web.errorhandler(Exception)
    def internal_error(exc: Exception) -> Any:
        web.logger.exception("request failed")
        return jsonify(error="internal error; see the server log"), 500  # never a stack trace

    # ------------------------------------------------------------------ API

    @web.get("/api/samples")
    def api_samples() -> Any:
        return jsonify(tasks.samples(10))

    @web.post("/api/predict")
    def api_predict() -> Any:
        if "file" in request.files:
            image = image_from_upload(request.files["file"].read())
        else:
            body = request.get_json(silent=True)
            if not isinstance(body, dict) or "image" not in body:
                raise BadRequest('send JSON {"image": [64 numbers 0..16]} or a multipart "file" (PNG/JPEG)')
            image = body["image"]
            if not body.get("skip_validation"):
                try:
                    tasks.validate(image)
                except ValueError as exc:
                    raise BadRequest(str(exc)) from None
        result = tasks.predict.delay(image)
        return jsonify(task_id=result.id, url=f"/api/jobs/{result.id}"), 202

    def image_from_upload(data: bytes) -> list[int]:
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            picture = Image.open(io.BytesIO(data))
            picture.load()
        except (UnidentifiedImageError, OSError):
            raise BadRequest("the upload is not an image (PNG, JPEG or GIF)") from None
        if picture.width * picture.height > 1024 * 1024:
            raise BadRequest("image too large: at most 1024x1024 pixels")
        gray = ImageOps.invert(picture.convert("L")).resize((8, 8), Image.Resampling.BOX)
        return [round(v / 255 * tasks.MAX_PIXEL) for v in gray.tobytes()]

    @web.post("/api/batch")
    def api_batch() -> Any:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise BadRequest('send JSON {"count": N, "bad": K} or {"images": [...]}, optionally "long": true')
        if "images" in body:
            images = body["images"]
            if not isinstance(images, list) or not images:
                raise BadRequest('"images" must be a non-empty list of images')
        else:
            count, bad = body.get("count", 10), body.get("bad", 0)
            if not isinstance(count, int) or not isinstance(bad, int) or count < 0 or bad < 0:
                raise BadRequest('"count" and "bad" must be non-negative integers')
            images = [s["image"] for s in tasks.samples(min(count, 100))] * (count // 100 + 1)
            images = images[:count] + [[1, 2, 3]] * bad  # bad ones fail in the worker, on purpose
        if len(images) > MAX_BATCH:
            raise BadRequest(f"at most {MAX_BATCH} images per batch, got {len(images)}")
        answer: dict[str, Any] = {}
        if body.get("long"):
            long_job = tasks.predict_batch.delay([s["image"] for s in tasks.samples(20, 100)])
            answer["long_task_id"] = long_job.id
        if images:
            group = submit_many(tasks.predict, [(image,) for image in images], progress=False)
            answer.update(group_id=group.id, task_ids=[r.id for r in group.results])
        return jsonify(answer), 202

    def describe(task_id: str, item: dict[str, Any] | None) -> dict[str, Any]:
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

    @web.get("/api/jobs/<task_id>")
    def api_job(task_id: str) -> Any:
        if len(task_id) > 64 or not all(c.isalnum() or c == "-" for c in task_id):
            return jsonify(error="not a job id"), 404
        if not backend.task_result_exists(task_id):
            return jsonify(error=f"unknown job id {task_id}"), 404
        return jsonify(describe(task_id, None))

    @web.get("/api/jobs")
    def api_jobs() -> Any:
        status = request.args.get("status", "STARTED").upper()
        try:
            limit = int(request.args.get("limit", "20"))
        except ValueError:
            raise BadRequest("limit must be an integer") from None
        if not 1 <= limit <= 100:
            raise BadRequest("limit must be 1..100")
        try:
            found, cursor = list_jobs(celery, status, limit=limit, cursor=request.args.get("cursor") or None)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        details = backend.batch_get([j["task_id"] for j in found]) if status in ("STARTED", "FAILURE") else {}
        out = []
        for job in found:
            entry = dict(job)
            if job["task_id"] in details:
                entry.update(describe(job["task_id"], details[job["task_id"]]))
                entry["status"] = job["status"]
            out.append(entry)
        return jsonify(jobs=out, next=cursor)

    @web.get("/api/counts")
    def api_counts() -> Any:
        counts = {}
        for status in BOARD_STATES:
            found, cursor = list_jobs(celery, status, limit=1000)
            counts[status] = f"{len(found)}+" if cursor else len(found)
        return jsonify(counts)

    @web.get("/api/workers")
    def api_workers() -> Any:
        try:
            timeout = float(request.args.get("timeout", 2))
        except ValueError:
            raise BadRequest("timeout must be a number of seconds") from None
        if not 0.1 <= timeout <= 10:
            raise BadRequest(f"timeout must be 0.1 to 10 seconds, got {timeout}")
        try:  # a broadcast waits its whole timeout for answers
            replies = celery.control.inspect(timeout=timeout).ping() or {}
        except ConfigurationError as exc:
            return jsonify(error=str(exc)), 503
        return jsonify(workers=sorted(replies))

    # ------------------------------------------------------------------ pages

    @web.get("/")
    def index() -> str:
        return render_template_string(PAGE, title="Digits", body=SUBMIT_BODY)

    @web.get("/jobs")
    def board() -> str:
        return render_template_string(PAGE, title="Job board", body=BOARD_BODY)

    @web.get("/jobs/<task_id>")
    def detail(task_id: str) -> str:
        return render_template_string(PAGE, title="Job", body=DETAIL_BODY.replace("TASK_ID", task_id))

    return web


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }} · celery_sqs_ddb</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1c2330; }
 header { background: #232f3e; color: #fff; padding: .8rem 1.5rem; display: flex; gap: 1.5rem; align-items: center; }
 header a { color: #ffb84d; text-decoration: none; font-weight: 600; }
 main { padding: 1.2rem 1.5rem; }
 .card { background: #fff; border-radius: 8px; padding: 1rem 1.2rem; margin-bottom: 1rem; box-shadow: 0 1px 3px #0002; }
 .samples { display: flex; gap: .6rem; flex-wrap: wrap; }
 .sample { display: grid; grid-template-columns: repeat(8, 7px); grid-gap: 0; padding: 4px; border: 2px solid #ccd;
           border-radius: 6px; cursor: pointer; background: #fff; }
 .sample:hover { border-color: #ff9900; }
 .px { width: 7px; height: 7px; }
 .board { display: grid; grid-template-columns: repeat(4, 1fr); gap: 1rem; }
 table { width: 100%; border-collapse: collapse; font-size: .85rem; }
 td, th { text-align: left; padding: .25rem .3rem; border-bottom: 1px solid #eee; vertical-align: top; }
 .err { color: #b00020; } .ok { color: #0a7d32; } code { font-size: .8rem; }
 progress { width: 100%; }
 button { background: #ff9900; border: 0; padding: .45rem .9rem; border-radius: 5px; font-weight: 600; cursor: pointer; }
 input[type=number] { width: 5rem; }
 .count { font-size: 1.6rem; font-weight: 700; }
</style></head>
<body><header><strong>celery_sqs_ddb</strong><a href="/">Submit</a><a href="/jobs">Job board</a></header>
<main>{{ body|safe }}</main></body></html>"""

SUBMIT_BODY = """
<div class="card"><h2>Classify a digit</h2>
<p>Click a sample (8&times;8 pixels): the page calls <code>predict.delay(image)</code> and polls
<code>/api/jobs/&lt;id&gt;</code>, which reads <code>AsyncResult</code>.</p>
<div id="samples" class="samples"></div>
<p>Or upload a small image: <input type="file" id="upload" accept="image/*"></p>
<p id="prediction">&nbsp;</p></div>
<div class="card"><h2>Submit a batch</h2>
<form id="batch-form">
 <label>jobs <input type="number" id="batch-count" value="20" min="0" max="500"></label>
 <label>of which invalid <input type="number" id="batch-bad" value="2" min="0" max="100"></label>
 <label><input type="checkbox" id="batch-long" checked> plus one long batch job with progress</label>
 <button type="submit">Submit with submit_many</button>
</form><p id="batch-status">&nbsp;</p></div>
<script>
function tile(image, label) {
  const d = document.createElement('div'); d.className = 'sample'; d.dataset.label = label;
  for (const v of image) { const p = document.createElement('div'); p.className = 'px';
    const c = 255 - Math.round(v / 16 * 255); p.style.background = `rgb(${c},${c},${c})`; d.appendChild(p); }
  return d;
}
async function poll(id) {
  const out = document.getElementById('prediction');
  for (let i = 0; i < 600; i++) {
    const r = await fetch('/api/jobs/' + id); const j = await r.json();
    if (j.state === 'SUCCESS') { out.innerHTML = `Prediction: <strong class="ok" id="digit">${j.result.digit}</strong>
      (confidence ${j.result.confidence}) · <a href="/jobs/${id}">job ${id.slice(0, 8)}</a>`; return; }
    if (j.state === 'FAILURE') { out.innerHTML = `<span class="err">${j.error}</span>`; return; }
    out.textContent = 'waiting… ' + (j.state || ''); await new Promise(r => setTimeout(r, 150));
  }
}
async function submit(body, isFile) {
  const r = await fetch('/api/predict', isFile ? {method: 'POST', body}
    : {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  const j = await r.json();
  if (!r.ok) { document.getElementById('prediction').innerHTML = `<span class="err">${j.error}</span>`; return; }
  poll(j.task_id);
}
fetch('/api/samples').then(r => r.json()).then(list => {
  const box = document.getElementById('samples');
  for (const s of list) { const t = tile(s.image, s.label); t.onclick = () => submit({image: s.image}); box.appendChild(t); }
});
document.getElementById('upload').onchange = e => { const f = new FormData(); f.append('file', e.target.files[0]); submit(f, true); };
document.getElementById('batch-form').onsubmit = async e => {
  e.preventDefault();
  const body = {count: +document.getElementById('batch-count').value, bad: +document.getElementById('batch-bad').value,
                long: document.getElementById('batch-long').checked};
  const r = await fetch('/api/batch', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  const j = await r.json();
  document.getElementById('batch-status').innerHTML = r.ok
    ? `submitted ${(j.task_ids || []).length} jobs${j.long_task_id ? ' + 1 long job' : ''} · <a href="/jobs">watch the job board</a>`
    : `<span class="err">${j.error}</span>`;
};
</script>"""

BOARD_BODY = """
<div class="card" style="display:flex; gap:2.5rem" id="counts"></div>
<p>Workers (<code>inspect ping</code>): <span id="workers">asking…</span></p>
<div class="board">
 <div class="card"><h3>Queued</h3><table id="board-QUEUED"></table><button data-more="QUEUED">older</button></div>
 <div class="card"><h3>Running</h3><table id="board-STARTED"></table><button data-more="STARTED">older</button></div>
 <div class="card"><h3>Succeeded</h3><table id="board-SUCCESS"></table><button data-more="SUCCESS">older</button></div>
 <div class="card"><h3>Failed</h3><table id="board-FAILURE"></table><button data-more="FAILURE">older</button></div>
</div>
<script>
const cursors = {}, pages = {QUEUED: [null], STARTED: [null], SUCCESS: [null], FAILURE: [null]};
function row(s, j) {
  const id = `<a href="/jobs/${j.task_id}"><code>${j.task_id.slice(0, 8)}</code></a>`;
  const name = (j.task_name || '').replace('digits.', '');
  if (s === 'STARTED') { const p = j.progress; return `<tr class="job" data-id="${j.task_id}"><td>${id}</td><td>${name}</td>
    <td>${p ? `<progress max="${p.total}" value="${p.done}"></progress> ${p.done}/${p.total}` : 'running'}</td></tr>`; }
  if (s === 'FAILURE') return `<tr class="job" data-id="${j.task_id}"><td>${id}</td><td class="err">${j.error || ''}</td></tr>`;
  return `<tr class="job" data-id="${j.task_id}"><td>${id}</td><td>${name}</td><td>${j.updated_at.slice(11, 19)}</td></tr>`;
}
async function refresh() {
  const c = await (await fetch('/api/counts')).json();
  document.getElementById('counts').innerHTML = Object.entries(c).map(([k, v]) =>
    `<div><div class="count" id="count-${k}">${v}</div>${k.toLowerCase()}</div>`).join('');
  for (const s of Object.keys(pages)) {
    const cur = pages[s][pages[s].length - 1];
    const j = await (await fetch(`/api/jobs?status=${s}&limit=15` + (cur ? `&cursor=${encodeURIComponent(cur)}` : ''))).json();
    cursors[s] = j.next; document.getElementById('board-' + s).innerHTML = j.jobs.map(x => row(s, x)).join('');
  }
}
document.querySelectorAll('[data-more]').forEach(b => b.onclick = () => {
  const s = b.dataset.more; if (cursors[s]) { pages[s].push(cursors[s]); refresh(); } });
async function workers() {
  const r = await fetch('/api/workers'); const j = await r.json();
  document.getElementById('workers').innerHTML = r.ok ? (j.workers.join(', ') || 'none answered')
    : `<span class="err">${j.error}</span>`;
}
refresh(); setInterval(refresh, 1000); workers(); setInterval(workers, 10000);
</script>"""

DETAIL_BODY = """
<div class="card"><h2>Job <code>TASK_ID</code></h2><pre id="job">loading…</pre></div>
<script>
async function load() { const r = await fetch('/api/jobs/TASK_ID');
  document.getElementById('job').textContent = JSON.stringify(await r.json(), null, 2); }
load(); setInterval(load, 1000);
</script>"""


def main() -> None:
    port = int(os.environ.get("DEMO_WEB_PORT", "8000"))
    create_app().run(host=os.environ.get("DEMO_WEB_HOST", "127.0.0.1"), port=port, threaded=True)


if __name__ == "__main__":
    main()
