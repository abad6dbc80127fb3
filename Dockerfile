# The worker/web image: the same image runs `celery -A example_project.tasks worker` on ECS
# (deploy/terraform/modules/worker) and the web app in docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DEMO_MODEL_DIR=/tmp/model
RUN useradd --create-home --uid 10001 app
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY celery_sqs_ddb ./celery_sqs_ddb
COPY example_project ./example_project
RUN pip install --no-cache-dir ".[example]" "moto[server]==5.2.5" \
    && python -c "from example_project.tasks import train; train()"
USER app
# Celery's time-limited soft shutdown answers SIGQUIT; ECS and docker stop send SIGTERM.
ENV REMAP_SIGTERM=SIGQUIT
HEALTHCHECK --interval=30s --timeout=10s --retries=3 CMD ["celery", "-A", "example_project.tasks", "sqs-ddb", "healthcheck"]
CMD ["celery", "-A", "example_project.tasks", "worker", "--loglevel", "INFO"]
