"""Gunicorn settings of the web app (image, docker-compose and ``make demo``):
``gunicorn -c python:example_project.gunicorn_conf "example_project:create_app()"``.

Threads, not processes: requests mostly wait on AWS, and one process means one job board cache
shared by every open tab. ``DEMO_WEB_HOST`` / ``DEMO_WEB_PORT`` choose the address (127.0.0.1:8000).
"""

import os

bind = f"{os.environ.get('DEMO_WEB_HOST', '127.0.0.1')}:{os.environ.get('DEMO_WEB_PORT', '8000')}"
workers = int(os.environ.get("WEB_WORKERS", "1"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "8"))
timeout = 30
graceful_timeout = 10
accesslog = "-"
worker_tmp_dir = os.environ.get("WEB_TMP_DIR") or None  # /dev/shm in the image (read-only root file system)
control_socket_disable = True  # gunicorn's control socket would live under $HOME: none in the image (read-only)
