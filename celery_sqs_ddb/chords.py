"""Groups and chords on the task table: the saved GroupResult and the chord counter.

A group's item holds its GroupResult (in S3 when over the item budget). A chord header part is
counted on the chord's small counter item (:func:`schema.chord_key`) with a marker on the part's
own item, in one transaction, so a redelivered or retried part never counts twice. The part that
completes the count joins the header and sends the callback, then marks the chord fired.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from celery.backends.base import _create_chord_error_with_cause
from celery.exceptions import ChordError
from celery.result import GroupResult, ResultSet, allow_join_result, result_from_tuple
from celery.utils.log import get_logger
from kombu.utils.objects import cached_property

from . import schema
from .exceptions import ClaimCheckMissing
from .runs import is_ours
from .table import expired, iso, utcnow

if TYPE_CHECKING:  # what the mixin is mixed into (untyped libraries: Any)
    from celery.backends.base import BaseBackend as _Base
else:
    _Base = object

logger = get_logger(__name__)


class Chords(_Base):
    """Mixin for the result backend (uses its ``table``, ``encode``, ``_store_big``, ``_load_big``)."""

    table: Any
    app: Any

    def _save_group(self, group_id: str, result: GroupResult) -> GroupResult:
        attr, value = self._store_big(str(group_id), schema.GROUP_RESULT, self.encode(result.as_tuple()))
        self.table.update(str(group_id), {schema.KIND: schema.KIND_GROUP, attr: value,
                                          schema.UPDATED_AT: iso(utcnow()), schema.EXPIRES_AT: self.table.expires_at()})
        return result

    def _restore_group(self, group_id: str) -> dict[str, Any] | None:
        item = self.table.get(str(group_id))
        if not item or expired(item):
            return None
        raw = self._load_big(item, schema.GROUP_RESULT)
        return None if raw is None else {"result": result_from_tuple(self._decode_value(raw), self.app)}

    def _delete_group(self, group_id: str) -> None:
        self.table.delete(str(group_id))

    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> None:
        """Save the header group; its parts are counted on the group item."""
        self.ensure_chords_allowed()
        header = self.app.GroupResult(*header_result_args)
        header.save(backend=self)
        # A header of plain tasks completes with one part per result: Celery's set_chord_size(), which
        # follows in this thread, then has nothing to add (no write).
        plain = all(not isinstance(r, ResultSet) for r in header.results)
        self._chord_saved.last = (str(header.id), len(header.results)) if plain else None

    @cached_property
    def _chord_saved(self) -> threading.local:
        return threading.local()

    def set_chord_size(self, group_id: str, chord_size: int) -> None:
        """Celery's count of the parts that complete chord ``group_id``, set as its header is sent: a
        chain that ends in a group counts each task of that group, so it can differ from the saved
        header's length. Kept on the group item (one UpdateItem), unless it is that length."""
        if getattr(self._chord_saved, "last", None) == (str(group_id), int(chord_size)):
            return
        self.table.set_chord_size(str(group_id), int(chord_size))

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> None:
        """Count a finished header part once; the part that completes the count sends the callback.

        A part is counted atomically with a marker on its own item, so a redelivered or retried
        part never counts twice, and a part whose count was lost in a crash is counted by its
        redelivery (the claim refuses to run it again and calls this). Sending the callback twice
        (two last parts at once, or a crash before the group is marked) runs it once: its task id
        is fixed and the claim refuses a duplicate.
        """
        from celery.canvas import maybe_signature

        gid = request.group
        if not gid:
            return
        callback = maybe_signature(request.chord, app=self.app)
        # The count is on a small item of its own (schema.chord_key); one strong read of it after
        # the count. AWS errors here propagate: the part is deferred and tried again.
        self.table.count_chord_part(gid, str(request.id))
        counter = self.table.get(schema.chord_key(gid)) or {}
        size = counter.get(schema.CHORD_SIZE)
        if size is None:
            size = request.chord.get("chord_size")
        count, fired = int(counter.get(schema.CHORD_COUNT, 0)), counter.get(schema.CHORD_FIRED)
        if fired or (size is not None and count < int(size)):
            return
        try:  # the saved header: read by the part that completes the count (and to size a plain header)
            deps = GroupResult.restore(gid, backend=self)
        except Exception as exc:  # a header that cannot be restored is reported on the chord, as Celery does
            if is_ours(exc) and not isinstance(exc, ClaimCheckMissing):
                raise  # an S3 or DynamoDB outage: deferred like the count
            logger.exception("Chord %r raised: %r", gid, exc)
            return self.chord_error_from_stack(callback, ChordError(f"Cannot restore group: {exc!r}"))
        if deps is None:
            return self.chord_error_from_stack(callback, ChordError(f"GroupResult {gid} no longer exists"))
        if size is None:
            size = len(deps)
        if count < int(size):
            return
        try:
            with allow_join_result():
                ret = deps.join_native(timeout=self.app.conf.result_chord_join_timeout, propagate=True)
        except Exception as exc:  # the chord's error path, as in Celery's key-value backends
            try:
                culprit = next(deps._failed_join_report())
                reason = f"Dependency {culprit.id} raised {exc!r}"
            except StopIteration:
                reason = repr(exc)
            logger.exception("Chord %r raised: %r", gid, reason)
            self.chord_error_from_stack(callback, _create_chord_error_with_cause(reason, exc))
        else:
            try:
                self.app.amqp._retry_publish(callback.delay, ret)
            except Exception as exc:  # publish failure is reported on the chord
                logger.exception("Chord %r raised: %r", gid, exc)
                self.chord_error_from_stack(callback, _create_chord_error_with_cause(f"Callback error: {exc!r}", exc))
        self.table.mark_chord_fired(gid)
