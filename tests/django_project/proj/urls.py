"""The read-only job board as shipped (staff only), opened to everyone, and one job a page (for the test)."""

from django.urls import include, path

from celery_sqs_ddb.django import job_urls

from .celery import app

urlpatterns = [
    path("jobs/", include(job_urls(app))),
    path("public-jobs/", include(job_urls(app, allow=lambda request: True), namespace="public")),
    path("paged-jobs/", include(job_urls(app, allow=lambda request: True, page_size=1), namespace="paged")),
]
