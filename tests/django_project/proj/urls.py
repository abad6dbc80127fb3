"""The read-only job board twice: as shipped (staff only) and opened to everyone (for the test)."""

from django.urls import include, path

from celery_sqs_ddb.django import job_urls

from .celery import app

urlpatterns = [
    path("jobs/", include(job_urls(app))),
    path("public-jobs/", include(job_urls(app, allow=lambda request: True), namespace="public")),
]
