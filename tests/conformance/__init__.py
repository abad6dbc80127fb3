"""``make conformance``: Celery's own ``t/integration`` suite against this package (SQS on moto, ``ddb://``).

``run.py`` downloads the celery sdist of the installed version and runs pytest on its
``t/integration`` files with ``plugin.py`` loaded; ``report.py`` writes ``docs/conformance.md``.
Nothing here is collected by ``pytest tests`` (no ``test_*.py`` files).
"""
