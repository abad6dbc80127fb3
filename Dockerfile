# syntax=docker/dockerfile:1
# The image of example_project: the worker (default command; what deploy/terraform/modules/worker
# runs on ECS), the web app (gunicorn) and Flower, all from the `runtime` stage.
#   build   - pinned dependencies (example_project/requirements.txt) into /opt/venv, model baked into /opt/model
#   runtime - the production image (default target): no compiler, no moto, non-root, model outside /tmp
#             (the Terraform worker mounts a volume on /tmp and a read-only root file system)
#   dev     - runtime + the moto server: docker-compose.yml's local AWS (`--target dev`)
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY example_project/requirements.txt ./requirements.txt
RUN pip install --require-virtualenv -r requirements.txt
COPY setup.cfg pyproject.toml README.md ./
COPY celery_sqs_ddb ./celery_sqs_ddb
RUN pip install --require-virtualenv --no-deps . && pip check
COPY example_project ./example_project
RUN DEMO_MODEL_DIR=/opt/model python -m example_project.tasks

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH PYTHONPATH=/app \
    DEMO_MODEL_DIR=/opt/model DEMO_WEB_HOST=0.0.0.0 WEB_TMP_DIR=/dev/shm
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/model /opt/model
WORKDIR /app
COPY example_project ./example_project
USER 10001:10001
# Celery's time-limited soft shutdown answers SIGQUIT; ECS and docker stop send SIGTERM.
ENV REMAP_SIGTERM=SIGQUIT
# A stat of the health file the worker's consumer loop touches, standard library only (no app import).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/app/example_project/healthcheck.py"]
EXPOSE 8000 5555
CMD ["celery", "-A", "example_project.make_celery", "worker", "--loglevel", "INFO"]

FROM runtime AS dev
USER root
RUN pip install --no-cache-dir --require-virtualenv -c /app/example_project/requirements.txt "moto[server]==5.2.5"
USER 10001:10001
CMD ["python", "-m", "moto.server", "-H", "0.0.0.0", "-p", "5000"]
