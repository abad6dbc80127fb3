"""``celery beat`` on the test app: ``tests.effect("tick")`` every TEST_BEAT_EVERY seconds."""

from __future__ import annotations

import os

from tests.apps.basic import make_app

app = make_app()
app.conf.beat_schedule = {
    "tick": {"task": "tests.effect", "schedule": float(os.environ.get("TEST_BEAT_EVERY", "1")), "args": ("tick",)},
}
