"""Django: the ``CELERY_``-namespaced settings, and a read-only job board over the status index.

``settings.py``::

    from celery_sqs_ddb.django import celery_settings

    globals().update(celery_settings(["jobs.fifo"], result_backend="ddb://jobs-results?region=eu-west-1",
                                     region="eu-west-1", dead_letter_queue="jobs-dlq.fifo"))

``proj/celery.py`` is Celery's own Django recipe, unchanged::

    app = Celery("proj")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.autodiscover_tasks()

``urls.py`` (optional; staff only unless ``allow`` says otherwise; no model, no migration)::

    from celery_sqs_ddb.django import job_urls
    from proj.celery import app as celery_app

    urlpatterns = [path("jobs/", include(job_urls(celery_app)))]

This module imports Django only inside :func:`job_urls`, so ``settings.py`` can import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from . import states
from .api import broker_settings

NAMESPACE = "CELERY"


def celery_settings(queues: Iterable[str] | Mapping[str, str], *, result_backend: str | None = None,
                    namespace: str = NAMESPACE, **broker_kwargs: Any) -> dict[str, Any]:
    """:func:`celery_sqs_ddb.broker_settings` (and ``result_backend``) as Django settings names,
    ``CELERY_BROKER_URL``, ``CELERY_BROKER_TRANSPORT_OPTIONS``, ..., for
    ``app.config_from_object("django.conf:settings", namespace=namespace)``.

    Keyword arguments are those of :func:`~celery_sqs_ddb.broker_settings`; settings of this package
    (``s3_bucket=...``) go into ``CELERY_BROKER_TRANSPORT_OPTIONS["sqs_ddb"]``, where both the
    transport and the backend read them (``CELERY_SQS_DDB_*`` names are not read under a namespace).
    """
    conf = broker_settings(queues, **broker_kwargs)
    if result_backend is not None:
        conf["result_backend"] = result_backend
    prefix = f"{namespace}_" if namespace else ""
    return {f"{prefix}{key.upper()}": value for key, value in conf.items()}


def _is_staff(request: Any) -> bool:
    user = getattr(request, "user", None)
    return bool(getattr(user, "is_active", False) and getattr(user, "is_staff", False))


def job_urls(app: Any, *, allow: Callable[[Any], bool] = _is_staff, page_size: int = 50) -> tuple[list[Any], str]:
    """URL patterns of a read-only job board: ``""`` lists jobs by state from the status index,
    newest first (``?status=FAILURE&cursor=...``), each linking to ``"<task_id>/"``, one job's state,
    task, worker, result or error. ``allow(request)`` guards both (default: active staff users);
    a refused request gets 403. Nothing is written: revoking stays in code or the CLI."""
    from django.core.exceptions import PermissionDenied
    from django.http import Http404, HttpResponse
    from django.urls import path
    from django.utils.html import format_html, format_html_join

    from .api import jobs

    def guarded(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        def checked(request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
            if not allow(request):
                raise PermissionDenied("the job board is for staff users")
            return view(request, *args, **kwargs)

        return checked

    def page(title: str, body: str) -> HttpResponse:
        return HttpResponse(format_html(
            "<!doctype html><html><head><title>{}</title></head><body><h1>{}</h1>{}</body></html>", title, title,
            body))

    def job_list(request: Any) -> HttpResponse:
        status = request.GET.get("status", states.STARTED).upper()
        try:
            found, cursor = jobs(app, status, limit=page_size, cursor=request.GET.get("cursor") or None)
        except ValueError as exc:
            return HttpResponse(str(exc), status=400, content_type="text/plain")
        tabs = format_html_join(" ", '<a href="?status={}">{}</a>', ((s, s) for s in states.INDEXED))
        rows = format_html_join("", '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>', (
            (f"{quote(job['task_id'])}/", job["task_id"], job.get("task_name") or "",
             job.get("worker") or "", job.get("updated_at") or "") for job in found))
        more = format_html('<p><a rel="next" href="?status={}&amp;cursor={}">next</a></p>', status, cursor) \
            if cursor else ""
        return page(f"{status} jobs", format_html(
            "<nav>{}</nav><table><tr><th>task id</th><th>task</th><th>worker</th><th>updated</th></tr>{}</table>{}",
            tabs, rows, more))

    def job_detail(request: Any, task_id: str) -> HttpResponse:
        if len(task_id) > 255 or not task_id.isprintable() or not app.backend.task_result_exists(task_id):
            raise Http404(f"unknown job id {task_id}")
        result = app.AsyncResult(task_id)
        state, info = result.state, result.info
        if state == states.SUCCESS:
            outcome = ("result", repr(info))
        elif state in (states.FAILURE, states.REVOKED):
            outcome = ("error", f"{type(info).__name__}: {info}" if isinstance(info, BaseException) else str(info))
        else:
            outcome = ("progress", repr(info) if info else "")
        fields = [("state", state), ("task", result.name or ""), ("worker", result.worker or ""),
                  ("date done", result.date_done or ""), outcome]
        rows = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", fields)
        return page(f"job {task_id}", format_html('<table>{}</table><p><a href="../?status={}">{} jobs</a></p>',
                                                  rows, _listed_state(state), _listed_state(state)))

    patterns = [path("", guarded(job_list), name="jobs"), path("<str:task_id>/", guarded(job_detail), name="job")]
    return patterns, "celery_sqs_ddb_jobs"  # include() takes (patterns, app_name)


def _listed_state(state: str) -> str:
    return states.STARTED if state == states.PROGRESS else state if state in states.INDEXED else states.STARTED
