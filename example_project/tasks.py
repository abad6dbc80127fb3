"""Digits classifier tasks: ordinary Celery tasks running real inference with scikit-learn.

The model is trained on the 8x8 digits data set that ships with scikit-learn (no download),
once per machine, and cached in ``example_project/.model``. Configuration comes from the
environment so the same image runs under ``make demo``, docker-compose and ECS:

- ``AWS_REGION`` (default eu-west-1) and, locally, ``AWS_ENDPOINT_URL`` (the moto server);
- ``DEMO_QUEUE`` / ``DEMO_QUEUE_URL``, ``DEMO_DLQ`` / ``DEMO_DLQ_URL``: the SQS queue and its
  dead-letter queue (names are resolved to URLs once per process);
- ``DEMO_TABLE``: the DynamoDB results table; ``DEMO_BUCKET``: the payload bucket (optional).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery

import celery_sqs_ddb

MODEL_DIR = Path(os.environ.get("DEMO_MODEL_DIR", Path(__file__).resolve().parent / ".model"))
PIXELS = 64
MAX_PIXEL = 16


def make_app() -> Celery:
    env = os.environ
    region = env.get("AWS_REGION", "eu-west-1")
    endpoint = env.get("AWS_ENDPOINT_URL") or None
    queue = env.get("DEMO_QUEUE", "digits-jobs.fifo")
    queues: Any = {queue: env["DEMO_QUEUE_URL"]} if env.get("DEMO_QUEUE_URL") else [queue]
    app = Celery("example_project")
    app.conf.update(celery_sqs_ddb.broker_settings(
        queues, region=region, endpoint_url=endpoint,
        dead_letter_queue=env.get("DEMO_DLQ_URL") or env.get("DEMO_DLQ") or None,
        s3_bucket=env.get("DEMO_BUCKET") or None,
        visibility_timeout=int(env.get("DEMO_VISIBILITY_TIMEOUT", "60")),
        wait_time_seconds=int(env.get("DEMO_WAIT_SECONDS", "20")),
    ))
    query = f"region={region}" + (f"&endpoint_url={endpoint}" if endpoint else "")
    app.conf.result_backend = f"ddb://{env.get('DEMO_TABLE', 'digits-results')}?{query}"
    app.conf.result_extended = True
    app.conf.result_expires = int(env.get("DEMO_RESULT_EXPIRES", str(2 * 86400)))
    # The job board lists queued jobs, and the web API tells a queued job from an unknown id:
    # one QUEUED row per delay() (one more write per task; submit_many writes them in batches).
    app.conf.sqs_ddb_track_queued = True
    celery_sqs_ddb.configure(app)
    return app


app = make_app()

_model = None
_model_lock = threading.Lock()


def train(seed: int = 0) -> tuple[Any, float]:
    """Fit the classifier on 75 % of the digits; return (model, accuracy on the held-out 25 %)."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.25, random_state=seed, stratify=digits.target)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5)).fit(x_train, y_train)
    return model, float(model.score(x_test, y_test))


def model() -> Any:
    """The cached classifier (trained on first use, then loaded from MODEL_DIR)."""
    global _model
    with _model_lock:
        if _model is None:
            import joblib

            path = MODEL_DIR / "digits-logreg.joblib"
            if path.exists():
                _model = joblib.load(path)
            else:
                _model, _ = train()
                MODEL_DIR.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                joblib.dump(_model, tmp)
                tmp.replace(path)
    return _model


def validate(image: Any) -> list[float]:
    """An image is 64 numbers (8x8, row by row) from 0 to 16; anything else is a clear error."""
    if not isinstance(image, (list, tuple)):
        raise ValueError(f"image must be a list of {PIXELS} numbers (8x8 pixels), got {type(image).__name__}")
    if len(image) != PIXELS:
        raise ValueError(f"image must have {PIXELS} pixel values (8x8), got {len(image)}")
    values = []
    for i, value in enumerate(image):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_PIXEL:
            raise ValueError(f"pixel {i} is {value!r}; pixels are numbers from 0 to {MAX_PIXEL}")
        values.append(float(value))
    return values


def _predict(values: list[float]) -> dict[str, Any]:
    clf = model()
    probabilities = clf.predict_proba([values])[0]
    digit = int(clf.classes_[probabilities.argmax()])
    return {"digit": digit, "confidence": round(float(probabilities.max()), 4)}


@app.task(name="digits.predict", shared=False)  # one app per process: not a shared task
def predict(image: list[float]) -> dict[str, Any]:
    """Classify one 8x8 digit (milliseconds). Bad input fails with a clear ValueError."""
    return _predict(validate(image))


@app.task(bind=True, name="digits.predict_batch", shared=False)
def predict_batch(self: Any, images: list[list[float]], seconds_per_image: float = 0.25) -> list[dict[str, Any]]:
    """Classify many digits, reporting PROGRESS ({done, total}) as it goes."""
    checked = [validate(image) for image in images]
    out = []
    for i, values in enumerate(checked):
        out.append(_predict(values))
        self.update_state(state="PROGRESS", meta={"done": i + 1, "total": len(checked)})
        time.sleep(seconds_per_image)  # stands in for a heavier model
    return out


def samples(count: int = 10, offset: int = 0) -> list[dict[str, Any]]:
    """Sample digits from the data set (for the web page and the demo)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    picks = range(offset, offset + count)
    return [{"label": int(digits.target[i]), "image": [int(v) for v in digits.data[i]]} for i in picks]
