"""The worker's entry point, as in Flask's Celery pattern: ``celery -A example_project.make_celery worker``."""

from example_project import create_app

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
