"""``revoke`` broadcasts reach the table too: the revoke that works without remote control.

``AsyncResult.revoke()`` and ``app.control.revoke(ids)`` publish a broadcast. Here, as it is
published, the ids are also written REVOKED to the current app's ``ddb://`` table (for tasks that
have not started, as Celery's worker does with the broadcast): every worker's claim honours it,
also for messages not received yet and workers that start later. A running task is stopped only
by ``revoke(terminate=True)`` with remote control on.
"""

from __future__ import annotations

from typing import Any

from celery.utils.log import get_logger
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

logger = get_logger(__name__)


def broadcast_body(channel: Any, message: dict[str, Any]) -> dict[str, Any]:
    """The decoded body of a broadcast being published (empty if unreadable)."""
    try:
        props = message.get("properties") or {}
        body = loads(bytes_to_str(channel.decode_body(message["body"], props.get("body_encoding"))))
    except (ValueError, TypeError, KeyError):
        return {}
    return body if isinstance(body, dict) else {}


def on_broadcast(channel: Any, body: dict[str, Any]) -> str | None:
    """Handle a broadcast being published (its decoded body); returns its method name."""
    method = body.get("method")
    if method == "revoke":
        revoke_in_table((body.get("arguments") or {}).get("task_id"), channel.control.remote_control)
    return method


def revoke_in_table(task_ids: Any, remote_control: bool) -> None:
    from celery import _state

    from ..backend import DynamoDBBackend

    app = _state.get_current_app() if (_state._tls.current_app or _state.default_app) else None
    backend = getattr(app, "backend", None)
    if isinstance(backend, DynamoDBBackend) and task_ids:
        backend.revoke(task_ids)
    elif not remote_control:
        logger.warning("revoke(%r) has no effect: it needs result_backend = 'ddb://TABLE' or remote control",
                       task_ids)
