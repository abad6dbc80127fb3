"""Digits classifier tasks: ordinary Celery tasks running real inference with scikit-learn.

Tasks are ``@shared_task`` as in Flask's Celery pattern: they belong to whichever Celery app is
current, here the one ``example_project.celery_init_app`` builds. The model is trained on the 8x8
digits data set that ships with scikit-learn (no download), once per machine, and cached in
``DEMO_MODEL_DIR`` (default ``example_project/.model``; the image bakes it into ``/opt/model``,
outside the ``/tmp`` volume of the Terraform worker).

``celery -A example_project.tasks worker`` (the Terraform worker module's default ``app``) works
too: this module's ``app`` attribute is the Celery app of ``example_project.make_celery``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from celery import shared_task

MODEL_DIR = Path(os.environ.get("DEMO_MODEL_DIR", Path(__file__).resolve().parent / ".model"))
PIXELS = 64
MAX_PIXEL = 16


def __getattr__(name: str) -> Any:
    """``app``: the Celery app, created on first use (``celery -A example_project.tasks``)."""
    if name == "app":
        from example_project.make_celery import celery_app

        return celery_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def model_path(directory: Path | None = None) -> Path:
    return (directory or MODEL_DIR) / "digits-logreg.joblib"


def bake(directory: Path | None = None) -> Path:
    """Train and save the model (the image runs this at build time: ``python -m example_project.tasks``)."""
    import joblib

    path = model_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    trained, accuracy = train()
    tmp = path.with_suffix(".tmp")
    joblib.dump(trained, tmp)
    tmp.replace(path)
    print(f"model saved to {path} (held-out accuracy {accuracy:.3f})")
    return path


def model() -> Any:
    """The cached classifier (loaded from MODEL_DIR; trained and saved there on first use if missing)."""
    global _model
    with _model_lock:
        if _model is None:
            import joblib

            path = model_path()
            if not path.exists():
                bake()
            _model = joblib.load(path)
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


@shared_task(name="digits.predict")
def predict(image: list[float]) -> dict[str, Any]:
    """Classify one 8x8 digit (milliseconds). Bad input fails with a clear ValueError."""
    return _predict(validate(image))


@shared_task(bind=True, name="digits.predict_batch")
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


if __name__ == "__main__":
    bake()
