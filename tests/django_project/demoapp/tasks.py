"""Tasks as Celery's Django guide writes them: ``@shared_task`` in an installed app's tasks.py."""

from celery import shared_task
from django.conf import settings


@shared_task
def add(x: int, y: int) -> int:
    return x + y


@shared_task
def greeting() -> str:
    """Reads a Django setting: the worker runs inside the configured Django project."""
    return settings.GREETING


@shared_task
def echo_len(data: str) -> int:
    return len(data)
